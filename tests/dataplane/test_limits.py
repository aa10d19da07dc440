"""Per-request bounds: counted before anything is allocated, the same on every encoding."""

from __future__ import annotations

import numpy as np
import pytest
from tensorflow.core.example import example_pb2

from dataplane.errors import Code, ServingError
from dataplane.inference import Examples, InferenceService, ModelRef
from dataplane.limits import DEFAULT_MAX_ELEMENTS, RequestLimits
from tests.dataplane.fakes import OneModel


def _refusal(call, *args) -> ServingError:
    with pytest.raises(ServingError) as info:
        call(*args)
    return info.value


def test_default_bound_is_16m_elements_for_requests_and_answers() -> None:
    limits = RequestLimits()
    assert limits.max_request_elements == limits.max_response_elements == 1 << 24
    assert DEFAULT_MAX_ELEMENTS == 16_777_216


def test_request_at_the_bound_passes_and_one_more_is_invalid_argument() -> None:
    limits = RequestLimits(max_request_elements=10)
    limits.check_request(10)
    error = _refusal(limits.check_request, 11)
    assert error.code == Code.INVALID_ARGUMENT
    assert error.message == (
        "Request tensors have 11 elements in total, more than the limit of 10 "
        "(--max_request_elements)"
    )


def test_zero_turns_the_bounds_off() -> None:
    limits = RequestLimits(0, 0)
    limits.check_request(1 << 40)
    limits.check_serialized(1 << 40)
    limits.check_response({"y": np.zeros(5)})


def test_answers_past_the_bound_are_resource_exhausted_per_merged_request() -> None:
    limits = RequestLimits(max_response_elements=4)
    outputs = {"a": np.zeros((2, 2)), "b": np.zeros(1)}
    error = _refusal(limits.check_response, outputs)
    assert error.code == Code.RESOURCE_EXHAUSTED
    assert error.message == (
        "Response tensors have 5 elements in total, more than the limit of 4 "
        "(--max_response_elements)"
    )
    limits.check_response(outputs, requests=2)  # two coalesced requests may hold 8


def _example(**floats: list[float]) -> example_pb2.Example:
    example = example_pb2.Example()
    for name, values in floats.items():
        example.features.feature[name].float_list.value.extend(values)
    return example


def _ints(name: str, count: int) -> example_pb2.Example:
    example = example_pb2.Example()
    example.features.feature[name].int64_list.value.extend([0] * count)
    return example


def test_examples_count_their_values_and_the_context_once_per_example() -> None:
    examples = Examples.from_protos([_ints("x", 1), _ints("x", 1)], _ints("c", 30))
    assert examples.serialized[0] == _ints("x", 1).SerializeToString()
    # 2 examples + 2 own values + 30 context values merged into each of the 2 = 64
    examples.check(RequestLimits(max_request_elements=64))
    error = _refusal(examples.check, RequestLimits(max_request_elements=63))
    assert error.message.startswith("Request tensors have 64 elements in total")


def test_a_large_context_merged_into_many_empty_examples_is_refused_by_its_bytes() -> None:
    context = example_pb2.Example()
    context.features.feature["blob"].bytes_list.value.append(b"\0" * 100_000)
    examples = Examples.from_protos([example_pb2.Example()] * 1000, context)
    merged = len(examples.context) * 1000
    error = _refusal(examples.check, RequestLimits(max_request_elements=1_000_000))
    assert error.code == Code.INVALID_ARGUMENT
    assert error.message == (
        f"Request input expands to {merged} bytes, more than the limit of 8000000 "
        "(8 per --max_request_elements)"
    )


def test_core_refuses_a_classify_batch_past_the_bound_before_running_it(half_plus_two) -> None:
    ran = []

    def runner(servable, signature, feeds, output_keys):
        ran.append(feeds)
        return signature.run(feeds, output_keys)

    service = InferenceService(
        OneModel(half_plus_two),  # type: ignore[arg-type]
        runner=runner,
        limits=RequestLimits(max_request_elements=5),
    )
    small = Examples.from_protos([_example(x=[1.0]), _example(x=[4.0])])
    scores = service.classify(ModelRef("h"), "classify_x_to_y", small).scores
    assert scores.tolist() == [[2.5], [4.0]]
    large = Examples.from_protos([_example(x=[1.0])] * 3)  # 3 examples + 3 values
    error = _refusal(service.regress, ModelRef("h"), "regress_x_to_y", large)
    assert error.code == Code.INVALID_ARGUMENT and len(ran) == 1


def test_core_refuses_to_return_an_answer_past_the_bound(half_plus_two) -> None:
    service = InferenceService(
        OneModel(half_plus_two),  # type: ignore[arg-type]
        limits=RequestLimits(max_response_elements=3),
    )

    def inputs(rows: int):
        return lambda _specs: {"x": np.ones((rows, 1), np.float32)}

    assert service.predict(ModelRef("h"), "", inputs(3)).outputs["y"].shape == (3, 1)
    error = _refusal(service.predict, ModelRef("h"), "", inputs(4))
    assert error.code == Code.RESOURCE_EXHAUSTED
    assert "have 4 elements in total, more than the limit of 3" in error.message
