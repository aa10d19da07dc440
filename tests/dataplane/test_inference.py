"""The protocol-free core: one plan per request, driven blocking or by callback."""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import pytest

from dataplane.errors import Code, ServingError
from dataplane.inference import InferenceService, ModelRef, run_direct
from tests.dataplane.fakes import OneModel


def recording_runner(threads: list[str]):
    def run(servable, signature, feeds, output_keys):
        threads.append(threading.current_thread().name)
        return run_direct(servable, signature, feeds, output_keys)

    return run


def x_inputs(_specs) -> dict[str, np.ndarray]:
    return {"x": np.array([[1.0], [3.0]], np.float32)}


class HeldRunner:
    """A batcher stand-in: each submitted call waits until the test completes its future."""

    def __init__(self) -> None:
        self.steps: list[Future] = []
        self.run_here: list[bool] = []

    def __call__(self, servable, signature, feeds, output_keys):
        raise AssertionError("a submitting runner is never called directly by submit()")

    def submit(self, servable, signature, feeds, output_keys, requests=1, run_here=False) -> Future:
        self.run_here.append(run_here)
        step: Future = Future()
        self.steps.append(step)
        return step


def test_a_submitted_plan_resumes_in_the_thread_that_finishes_its_call(half_plus_two) -> None:
    runner = HeldRunner()
    manager = OneModel(half_plus_two)
    service = InferenceService(manager, runner=runner)  # type: ignore[arg-type]
    answered_in: list[str] = []

    def answer(prediction) -> list:
        answered_in.append(threading.current_thread().name)
        return prediction.outputs["y"].tolist()

    pending = service.submit(service.predict_plan(ModelRef("h"), "", x_inputs), answer)
    assert not pending.done() and manager.active == 1
    finisher = threading.Thread(
        target=runner.steps[0].set_result, args=({"y": np.array([[7.0]])},), name="batch"
    )
    finisher.start()
    finisher.join()
    assert pending.result(5) == [[7.0]]
    assert answered_in == ["batch"]
    assert manager.active == 0


def test_only_a_front_end_that_runs_ready_batches_offers_to_run_them(half_plus_two) -> None:
    runner = HeldRunner()
    core = InferenceService(OneModel(half_plus_two), runner=runner)  # type: ignore[arg-type]
    for service in (core.via("REST"), core.via("GRPC", runs_ready_batches=True)):
        service.submit(service.predict_plan(ModelRef("h"), "", x_inputs), str)
    assert runner.run_here == [False, True]  # half_plus_two is fast: well under 2 ms


def test_cancelling_a_submitted_plan_cancels_its_call_and_releases_the_lease(
    half_plus_two,
) -> None:
    runner = HeldRunner()
    manager = OneModel(half_plus_two)
    service = InferenceService(manager, runner=runner)  # type: ignore[arg-type]
    pending = service.submit(service.predict_plan(ModelRef("h"), "", x_inputs), str)
    assert pending.cancel()
    assert runner.steps[0].cancelled()  # a batch would now drop this caller
    assert manager.active == 0


def test_a_call_the_runner_cancels_fails_the_request_unavailable(half_plus_two) -> None:
    runner = HeldRunner()
    manager = OneModel(half_plus_two)
    service = InferenceService(manager, runner=runner)  # type: ignore[arg-type]
    pending = service.submit(service.predict_plan(ModelRef("h"), "", x_inputs), str)
    assert runner.steps[0].cancel()  # the batcher dropped the call, not the client
    error = pending.exception(5)
    assert isinstance(error, ServingError)
    assert (error.code, error.message) == (Code.UNAVAILABLE, "the model call was cancelled")
    assert manager.active == 0


def test_blocking_and_submitting_drivers_give_the_same_prediction(half_plus_two) -> None:
    service = InferenceService(OneModel(half_plus_two))  # type: ignore[arg-type]
    ref = ModelRef("h")
    blocking = service.predict(ref, "", x_inputs)
    submitted = service.submit(service.predict_plan(ref, "", x_inputs), lambda p: p).result(5)
    for prediction in (blocking, submitted):
        assert prediction.outputs["y"].tolist() == [[2.5], [3.5]]
        assert (prediction.resolved.version, prediction.resolved.signature_name) == (
            123,
            "serving_default",
        )


def test_fast_calls_run_inline_and_slow_ones_on_the_offload_pool(half_plus_two) -> None:
    threads: list[str] = []
    with ThreadPoolExecutor(1, thread_name_prefix="offload") as pool:
        service = InferenceService(
            OneModel(half_plus_two),  # type: ignore[arg-type]
            runner=recording_runner(threads),
            offload=pool,
        )
        signature = half_plus_two.signature("serving_default")

        def predict_once() -> None:
            service.submit(service.predict_plan(ModelRef("h"), "", x_inputs), str).result(5)

        signature.typical_seconds = 0.0001
        predict_once()
        signature.typical_seconds = 1.0  # a model that would stall the dispatcher for a second
        predict_once()
    assert threads[0] == "MainThread"
    assert threads[1].startswith("offload")


def test_errors_inside_a_plan_reach_the_caller_and_release_the_lease(half_plus_two) -> None:
    manager = OneModel(half_plus_two)
    service = InferenceService(manager)  # type: ignore[arg-type]

    def wrong_dtype(_specs):
        return {"x": np.array([1], np.int64)}

    with pytest.raises(Exception, match="Expects arg"):
        service.submit(service.predict_plan(ModelRef("h"), "", wrong_dtype), str).result(5)
    assert manager.active == 0
