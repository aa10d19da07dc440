"""PredictionService and ModelService over loopback with the official tensorflow-serving-api stubs.

One live data plane per module serves a TF1 graph (half_plus_two: predict, classify and
regress signatures over tf.Example), a Keras 3 export and a DT_STRING model.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from tensorflow.core.example import example_pb2, feature_pb2
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from dataplane import tensors
from dataplane.batching import BatchingConfig, BatchingRunner
from dataplane.errors import ServingError
from dataplane.grpc_service import ModelHandlers, PredictionHandlers, serving_routes
from dataplane.inference import InferenceService
from dataplane.info_service import InfoService
from dataplane.limits import RequestLimits
from dataplane.reload_queue import ReloadQueue
from examples.builders import keras_expected
from tests.dataplane.fakes import OneModel
from tests.support.processes import DataPlaneProcess, start_dataplane

CONFIG = """
model_config_list {{
  config {{ name: "half_plus_two" base_path: "{half_plus_two}" model_platform: "tensorflow" }}
  config {{ name: "keras" base_path: "{keras}" model_platform: "tensorflow" }}
  config {{ name: "strings" base_path: "{strings}" model_platform: "tensorflow" }}
}}
"""


def _start(saved_models, tmp_dir: Path, *flags: str) -> DataPlaneProcess:
    config = tmp_dir / "models.config"
    config.write_text(
        CONFIG.format(
            half_plus_two=saved_models.half_plus_two,
            keras=saved_models.keras,
            strings=saved_models.strings,
        )
    )
    return start_dataplane(f"--model_config_file={config}", *flags, log_dir=tmp_dir)


@pytest.fixture(scope="module")
def server(saved_models, tmp_path_factory) -> Iterator[DataPlaneProcess]:
    process = _start(saved_models, tmp_path_factory.mktemp("grpc"))
    yield process
    process.stop()


@pytest.fixture(scope="module")
def channel(server) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.grpc_target) as ch:
        yield ch


@pytest.fixture(scope="module")
def predict_stub(channel) -> prediction_service_pb2_grpc.PredictionServiceStub:
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture(scope="module")
def model_stub(channel) -> model_service_pb2_grpc.ModelServiceStub:
    return model_service_pb2_grpc.ModelServiceStub(channel)


def float_tensor(values: list[float], shape: list[int]) -> tensor_pb2.TensorProto:
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=values)
    proto.tensor_shape.CopyFrom(
        tensor_shape_pb2.TensorShapeProto(
            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=s) for s in shape]
        )
    )
    return proto


def predict_request(model: str = "half_plus_two", **inputs) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    for alias, proto in (inputs or {"x": float_tensor([1.0, 2.0, 5.0], [3])}).items():
        request.inputs[alias].CopyFrom(proto)
    return request


def example(**features: float) -> example_pb2.Example:
    return example_pb2.Example(
        features=feature_pb2.Features(
            feature={
                k: feature_pb2.Feature(float_list=feature_pb2.FloatList(value=[v]))
                for k, v in features.items()
            }
        )
    )


def assert_rpc_error(call, code: grpc.StatusCode, text: str) -> None:
    with pytest.raises(grpc.RpcError) as info:
        call()
    assert info.value.code() == code, info.value.details()
    assert text in info.value.details()


# ----------------------------------------------------------------------------- Predict


def test_predict_tf1_graph_resolves_latest_version_and_default_signature(predict_stub):
    response = predict_stub.Predict(predict_request(), timeout=10)
    assert list(response.outputs["y"].float_val) == [2.5, 3.0, 4.5]
    assert [d.size for d in response.outputs["y"].tensor_shape.dim] == [3]
    assert response.outputs["y"].dtype == types_pb2.DT_FLOAT
    assert response.model_spec.name == "half_plus_two"
    assert response.model_spec.version.value == 123
    assert response.model_spec.signature_name == "serving_default"


def test_predict_accepts_tensor_content_and_explicit_version(predict_stub):
    values = np.array([[1.0], [3.0]], dtype=np.float32)
    tensor = float_tensor([], [2, 1])
    tensor.tensor_content = values.tobytes()
    request = predict_request(x=tensor)
    request.model_spec.version.value = 123
    response = predict_stub.Predict(request, timeout=10)
    assert list(response.outputs["y"].float_val) == [2.5, 3.5]
    assert [d.size for d in response.outputs["y"].tensor_shape.dim] == [2, 1]


def test_predict_output_filter_and_unknown_filter(predict_stub):
    request = predict_request()
    request.output_filter.append("y")
    assert list(predict_stub.Predict(request, timeout=10).outputs) == ["y"]
    request.output_filter[:] = ["nope"]
    assert_rpc_error(
        lambda: predict_stub.Predict(request, timeout=10),
        grpc.StatusCode.INVALID_ARGUMENT,
        "output tensor alias not found in signature: nope",
    )


def test_predict_keras_export(predict_stub):
    features = [[1.0, 2.0, 3.0], [0.5, -1.0, 2.0]]
    flat = [v for row in features for v in row]
    request = predict_request("keras", features=float_tensor(flat, [2, 3]))
    response = predict_stub.Predict(request, timeout=10)
    expected = keras_expected(np.array(features)).ravel()
    np.testing.assert_allclose(response.outputs["output_0"].float_val, expected, rtol=1e-6)
    assert response.model_spec.version.value == 1


def test_predict_string_model(predict_stub):
    text = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, string_val=[b"ab", b"\xff\x00z"])
    text.tensor_shape.dim.add(size=2)
    response = predict_stub.Predict(predict_request("strings", text=text), timeout=10)
    assert list(response.outputs["length"].int64_val) == [2, 3]
    assert list(response.outputs["upper"].string_val) == [b"AB", b"\xff\x00Z"]


@pytest.mark.parametrize(
    ("mutate", "code", "text"),
    [
        (
            lambda r: r.model_spec.__setattr__("name", "missing"),
            grpc.StatusCode.NOT_FOUND,
            "Servable not found for request: Latest(missing)",
        ),
        (
            lambda r: r.model_spec.version.__setattr__("value", 999),
            grpc.StatusCode.NOT_FOUND,
            "Servable not found for request: Specific(half_plus_two, 999)",
        ),
        (
            lambda r: r.model_spec.__setattr__("version_label", "nope"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "Unrecognized servable version label: nope",
        ),
        (
            lambda r: r.model_spec.__setattr__("signature_name", "bogus"),
            grpc.StatusCode.FAILED_PRECONDITION,
            'Serving signature key "bogus" not found.',
        ),
        (
            lambda r: r.inputs["extra"].CopyFrom(float_tensor([1.0], [1])),
            grpc.StatusCode.INVALID_ARGUMENT,
            "Sent extra: {extra}",
        ),
        (
            lambda r: r.inputs["x"].CopyFrom(
                tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, string_val=[b"a"])
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "Expects arg[x] to be float",
        ),
        (
            lambda r: r.inputs["x"].CopyFrom(float_tensor([1.0, 2.0], [3])),
            grpc.StatusCode.INVALID_ARGUMENT,
            "",
        ),
    ],
    ids=["model", "version", "label", "signature", "alias", "dtype", "element-count"],
)
def test_predict_bad_requests_get_tf_serving_status(predict_stub, mutate, code, text):
    request = predict_request()
    mutate(request)
    assert_rpc_error(lambda: predict_stub.Predict(request, timeout=10), code, text)
    assert list(predict_stub.Predict(predict_request(), timeout=10).outputs["y"].float_val) == [
        2.5,
        3.0,
        4.5,
    ]


# ----------------------------------------------------------------- Classify / Regress


def classification_request(signature: str, *examples_: example_pb2.Example, context=None):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "half_plus_two"
    request.model_spec.signature_name = signature
    if context is None:
        request.input.example_list.examples.extend(examples_)
    else:
        request.input.example_list_with_context.examples.extend(examples_)
        request.input.example_list_with_context.context.CopyFrom(context)
    return request


def test_classify_example_list(predict_stub):
    request = classification_request("classify_x_to_y", example(x=1.0), example(x=4.0))
    response = predict_stub.Classify(request, timeout=10)
    scores = [[c.score for c in row.classes] for row in response.result.classifications]
    assert scores == [[2.5], [4.0]]
    assert response.model_spec.version.value == 123
    assert response.model_spec.signature_name == "classify_x_to_y"


def test_classify_example_list_with_context_merges_features(predict_stub):
    request = classification_request(
        "classify_x_to_y", example(x2=1.0), example(x=10.0), context=example(x=2.0)
    )
    response = predict_stub.Classify(request, timeout=10)
    scores = [row.classes[0].score for row in response.result.classifications]
    assert scores == [3.0, 7.0]


def test_regress_example_list(predict_stub):
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = "half_plus_two"
    request.model_spec.signature_name = "regress_x_to_y2"
    request.input.example_list.examples.extend([example(x=2.0), example(x=0.0)])
    response = predict_stub.Regress(request, timeout=10)
    assert [r.value for r in response.result.regressions] == [4.0, 3.0]
    assert response.model_spec.signature_name == "regress_x_to_y2"


def test_classify_rejects_a_signature_without_its_inputs_and_empty_input(predict_stub):
    # Method names are not checked by default (TF Serving's default), the aliases are.
    request = classification_request("serving_default", example(x=1.0))
    assert_rpc_error(
        lambda: predict_stub.Classify(request, timeout=10),
        grpc.StatusCode.INVALID_ARGUMENT,
        'No classification inputs found in SignatureDef: inputs {\n  key: "x"\n',
    )
    empty = classification_request("classify_x_to_y")
    assert_rpc_error(
        lambda: predict_stub.Classify(empty, timeout=10),
        grpc.StatusCode.INVALID_ARGUMENT,
        "Input is empty",
    )


def test_regress_rejects_a_signature_without_its_outputs(predict_stub):
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = "half_plus_two"
    request.model_spec.signature_name = "classify_x_to_y"
    request.input.example_list.examples.append(example(x=1.0))
    assert_rpc_error(
        lambda: predict_stub.Regress(request, timeout=10),
        grpc.StatusCode.INVALID_ARGUMENT,
        "No regression outputs found in SignatureDef: inputs {",
    )


def multi_inference_request(*tasks: tuple[str, str], model="half_plus_two"):
    request = inference_pb2.MultiInferenceRequest()
    for signature, method in tasks:
        task = request.tasks.add()
        task.model_spec.name = model
        task.model_spec.signature_name = signature
        task.method_name = method
    request.input.example_list.examples.extend([example(x=2.0)])
    return request


def test_multi_inference_runs_classify_and_regress(predict_stub):
    request = multi_inference_request(
        ("classify_x_to_y", "tensorflow/serving/classify"),
        ("regress_x_to_y2", "tensorflow/serving/regress"),
    )
    response = predict_stub.MultiInference(request, timeout=10)
    assert len(response.results) == 2
    assert response.results[0].classification_result.classifications[0].classes[0].score == 3.0
    assert response.results[1].regression_result.regressions[0].value == 4.0
    assert [r.model_spec.signature_name for r in response.results] == [
        "classify_x_to_y",
        "regress_x_to_y2",
    ]


def test_multi_inference_rejects_duplicates_and_unknown_methods(predict_stub):
    duplicate = multi_inference_request(
        ("regress_x_to_y", "tensorflow/serving/regress"),
        ("regress_x_to_y", "tensorflow/serving/regress"),
    )
    assert_rpc_error(
        lambda: predict_stub.MultiInference(duplicate, timeout=10),
        grpc.StatusCode.INVALID_ARGUMENT,
        "Duplicate evaluation of signature: regress_x_to_y",
    )
    unknown = multi_inference_request(("serving_default", "tensorflow/serving/predict"))
    assert_rpc_error(
        lambda: predict_stub.MultiInference(unknown, timeout=10),
        grpc.StatusCode.UNIMPLEMENTED,
        "Unsupported signature method_name: tensorflow/serving/predict",
    )


# ------------------------------------------------------------------ Metadata / Status


def test_get_model_metadata_returns_signature_defs(predict_stub):
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "half_plus_two"
    request.metadata_field.append("signature_def")
    response = predict_stub.GetModelMetadata(request, timeout=10)
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signature_map)
    assert {"serving_default", "classify_x_to_y", "regress_x_to_y"} <= set(
        signature_map.signature_def
    )
    default = signature_map.signature_def["serving_default"]
    assert default.inputs["x"].dtype == types_pb2.DT_FLOAT
    assert default.method_name == "tensorflow/serving/predict"
    assert response.model_spec.version.value == 123


def test_get_model_metadata_needs_a_supported_field(predict_stub):
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "half_plus_two"
    assert_rpc_error(
        lambda: predict_stub.GetModelMetadata(request, timeout=10),
        grpc.StatusCode.INVALID_ARGUMENT,
        "must specify at least one metadata_field",
    )
    request.metadata_field.append("bogus")
    assert_rpc_error(
        lambda: predict_stub.GetModelMetadata(request, timeout=10),
        grpc.StatusCode.INVALID_ARGUMENT,
        "Metadata field bogus is not supported",
    )


def test_get_model_status(model_stub):
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "half_plus_two"
    response = model_stub.GetModelStatus(request, timeout=10)
    [status] = response.model_version_status
    assert status.version == 123
    assert status.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
    assert status.status.error_code == 0
    request.model_spec.name = "missing"
    assert_rpc_error(
        lambda: model_stub.GetModelStatus(request, timeout=10),
        grpc.StatusCode.NOT_FOUND,
        "missing",
    )


def test_server_survives_garbage_bytes(server, predict_stub):
    """A raw, undecodable message is rejected by the framework; the server keeps serving."""
    with grpc.insecure_channel(server.grpc_target) as ch:
        raw = ch.unary_unary("/tensorflow.serving.PredictionService/Predict")
        with pytest.raises(grpc.RpcError) as info:
            raw(b"\xff\xff\xff\xff", timeout=10)
        assert info.value.code() in (
            grpc.StatusCode.UNKNOWN,
            grpc.StatusCode.INTERNAL,
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        assert "PredictRequest" in info.value.details()
    assert server.running
    assert predict_stub.Predict(predict_request(), timeout=10).model_spec.version.value == 123


# ------------------------------------------------------------- tensor_content answers


@pytest.fixture(scope="module")
def tensor_content_server(saved_models, tmp_path_factory) -> Iterator[DataPlaneProcess]:
    process = _start(
        saved_models,
        tmp_path_factory.mktemp("grpc_tc"),
        "--enable_serialization_as_tensor_content=true",
    )
    yield process
    process.stop()


def test_enable_serialization_as_tensor_content(tensor_content_server):
    with grpc.insecure_channel(tensor_content_server.grpc_target) as ch:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)
        output = stub.Predict(predict_request(), timeout=10).outputs["y"]
    assert not output.float_val
    assert np.frombuffer(output.tensor_content, np.float32).tolist() == [2.5, 3.0, 4.5]


# ------------------------------------------------- coalescing (in-process, batching on)


class RecordedRequests:
    """The core's RequestMetrics, kept as a list of (model, version, api, status)."""

    def __init__(self) -> None:
        self.requests: list[tuple] = []

    def record_request(
        self, model, version, api, status, seconds, entrypoint="", requests=1
    ) -> None:
        self.requests.extend([(model, version, api, status.name)] * requests)


def content_request(model: str, rows: list[list[float]], **spec) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    for field, value in spec.items():
        setattr(request.model_spec, field, value)
    array = np.array(rows, np.float32)
    request.inputs["x"].CopyFrom(tf_tensor(array))
    return request


def tf_tensor(array: np.ndarray) -> tensor_pb2.TensorProto:
    proto = tensor_pb2.TensorProto()
    tensors.fill_tensor_proto(proto, array, as_tensor_content=True)
    return proto


@pytest.fixture
def coalescing_handlers(half_plus_two) -> Iterator[tuple[PredictionHandlers, RecordedRequests]]:
    recorded = RecordedRequests()
    runner = BatchingRunner(BatchingConfig(max_batch_size=8, num_batch_threads=1))
    service = InferenceService(OneModel(half_plus_two), runner=runner, metrics=recorded)  # type: ignore[arg-type]
    yield PredictionHandlers(service, tensor_content=False, coalesce=True), recorded
    runner.close()


def test_predicts_differing_only_in_values_are_answered_by_one_plan(coalescing_handlers) -> None:
    handlers, recorded = coalescing_handlers
    requests = [
        content_request("h", [[1.0], [2.0]]),
        content_request("h", [[3.0]]),  # another shape: served alone
        content_request("h", [[5.0], [6.0]]),
        content_request("h", [[7.0], [8.0]], signature_name="serving_default"),  # another spec
        content_request("h", [[9.0], [10.0]]),
    ]
    typed = predict_pb2.PredictRequest()
    typed.model_spec.name = "h"
    typed.inputs["x"].CopyFrom(float_tensor([1.0, 2.0], [2, 1]))  # typed values: alone
    scalars = [predict_pb2.PredictRequest() for _ in range(2)]  # nothing to merge along
    for scalar in scalars:
        scalar.model_spec.name = "h"
        scalar.inputs["x"].CopyFrom(tf_tensor(np.array(1.0, np.float32)))
    joints = handlers.coalesce_predicts([*requests, typed, *scalars])
    assert [list(joint.members) for joint in joints] == [[0, 2, 4]]
    responses = [predict_pb2.PredictResponse.FromString(b) for b in joints[0].answers.result(5)]
    got = [list(r.outputs["y"].float_val) for r in responses]
    assert got == [[2.5, 3.0], [4.5, 5.0], [6.5, 7.0]]  # y = x / 2 + 2, each its own rows
    assert [list(d.size for d in r.outputs["y"].tensor_shape.dim) for r in responses] == [
        [2, 1]
    ] * 3
    spec = responses[0].model_spec
    assert (spec.name, spec.version.value, spec.signature_name) == ("h", 123, "serving_default")
    assert recorded.requests == [("h", 123, "Predict", "OK")] * 3


def test_a_joint_whose_values_do_not_decode_fails_without_counting(coalescing_handlers) -> None:
    handlers, recorded = coalescing_handlers
    good = content_request("h", [[1.0], [2.0]])
    bad = content_request("h", [[1.0], [2.0]])
    bad.inputs["x"].dtype = types_pb2.DT_HALF  # same layout, values the signature refuses
    other = content_request("h", [[3.0], [4.0]])
    other.inputs["x"].dtype = types_pb2.DT_HALF
    joints = handlers.coalesce_predicts([good, bad, other])
    assert [list(joint.members) for joint in joints] == [[1, 2]]
    assert joints[0].answers.exception(5) is not None  # the front end serves each alone
    assert recorded.requests == []


def test_coalesced_requests_past_the_element_bound_fail_as_a_group(half_plus_two) -> None:
    runner = BatchingRunner(BatchingConfig(max_batch_size=8, num_batch_threads=1))
    service = InferenceService(
        OneModel(half_plus_two),  # type: ignore[arg-type]
        runner=runner,
        limits=RequestLimits(max_request_elements=2),
    )
    handlers = PredictionHandlers(service, tensor_content=False, coalesce=True)
    try:
        within = handlers.coalesce_predicts([content_request("h", [[1.0], [2.0]])] * 2)
        assert within[0].answers.exception(5) is None  # 2 each: merged and served
        beyond = handlers.coalesce_predicts([content_request("h", [[1.0], [2.0], [3.0]])] * 2)
        error = beyond[0].answers.exception(5)
        assert isinstance(error, ServingError) and error.message == (
            "Request tensors have 3 elements in total, more than the limit of 2 "
            "(--max_request_elements)"
        )
    finally:
        runner.close()


def test_the_admin_routes_are_the_reload_and_every_modelplane_method(make_manager) -> None:
    manager = make_manager()
    routes = serving_routes(
        PredictionHandlers(InferenceService(manager), tensor_content=False),
        ModelHandlers(manager, ReloadQueue(max_waiting=1)),
        InfoService(manager),
        health=None,
    )
    admin = {path for path, route in routes.items() if route.admin}
    modelplane = {path for path in routes if path.startswith("/modelplane.")}
    assert modelplane == {"/modelplane.DataPlaneInfo/GetInfo"}
    assert admin == {"/tensorflow.serving.ModelService/HandleReloadConfigRequest", *modelplane}
