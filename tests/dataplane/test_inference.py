"""The protocol-free core: one plan per request, driven blocking or by callback."""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import pytest

from dataplane.errors import Code, ServingError
from dataplane.inference import InferenceService, ModelRef, run_direct
from dataplane.offload import SLOW_CALL_SECONDS, Offload
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


def gated_runner(threads: list[str], release: threading.Event):
    """Records each call's thread; a call on an offload thread waits for `release`."""

    def run(servable, signature, feeds, output_keys):
        name = threading.current_thread().name
        threads.append(name)
        if name.startswith("offload"):
            assert release.wait(5)
        return run_direct(servable, signature, feeds, output_keys)

    return run


@pytest.mark.parametrize(
    ("typical_seconds", "thread"),
    [(0.00001, "MainThread"), (0.0005, "offload"), (1.0, "offload")],
)
def test_only_calls_shorter_than_a_hand_off_run_inline_while_a_core_is_idle(
    half_plus_two, typical_seconds: float, thread: str
) -> None:
    threads: list[str] = []
    with ThreadPoolExecutor(2, thread_name_prefix="offload") as pool:
        service = InferenceService(
            OneModel(half_plus_two),  # type: ignore[arg-type]
            runner=recording_runner(threads),
            offload=Offload(pool, cores=2),
        )
        half_plus_two.signature("serving_default").typical_seconds = typical_seconds
        pending = service.submit(service.predict_plan(ModelRef("h"), "", x_inputs), answer_y)
        assert pending.result(5) == [[2.5], [3.5]]
    assert threads[0].startswith(thread)


def answer_y(prediction) -> list:
    return prediction.outputs["y"].tolist()


def test_with_every_core_busy_a_short_call_runs_inline_and_a_slow_one_waits_for_a_thread(
    half_plus_two,
) -> None:
    threads: list[str] = []
    release = threading.Event()
    signature = half_plus_two.signature("serving_default")
    with ThreadPoolExecutor(4, thread_name_prefix="offload") as pool:
        offload = Offload(pool, cores=1)
        service = InferenceService(
            OneModel(half_plus_two),  # type: ignore[arg-type]
            runner=gated_runner(threads, release),
            offload=offload,
        )

        def submit(typical_seconds: float):
            signature.typical_seconds = typical_seconds
            return service.submit(service.predict_plan(ModelRef("h"), "", x_inputs), answer_y)

        holding = submit(0.0005)  # takes the one core's thread and waits there
        inline = submit(0.0005)  # no idle core: runs here, at once
        assert inline.done() and inline.result() == [[2.5], [3.5]]
        slow = submit(1.0)  # would stall the dispatcher: a thread even so
        assert not slow.done() and offload.busy == 2
        release.set()
        assert holding.result(5) == slow.result(5) == [[2.5], [3.5]]
    assert [name.split("_")[0] for name in threads] == ["offload", "MainThread", "offload"]
    assert offload.busy == 0


def test_the_single_thread_design_runs_every_call_under_2_ms_inline(half_plus_two) -> None:
    threads: list[str] = []
    with ThreadPoolExecutor(1, thread_name_prefix="offload") as pool:
        service = InferenceService(
            OneModel(half_plus_two),  # type: ignore[arg-type]
            runner=recording_runner(threads),
            offload=Offload(pool, cores=8, inline_seconds=SLOW_CALL_SECONDS),
        )
        signature = half_plus_two.signature("serving_default")
        for typical_seconds in (0.0019, 0.002):
            signature.typical_seconds = typical_seconds
            service.submit(service.predict_plan(ModelRef("h"), "", x_inputs), answer_y).result(5)
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
