"""BatchingRunner: merging, padding, splitting back, queue limits and parameter validation."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from tensorflow.core.framework import types_pb2

from dataplane.batching import (
    BatchingConfig,
    BatchingRunner,
    per_model_config,
    read_batching_config,
)
from dataplane.errors import Code, ServingError
from dataplane.metrics import ServingMetrics
from dataplane.servable import Servable, SessionOptions, load_servable
from dataplane.signatures import TensorSpec


class FakeServable:
    """Just enough of a Servable for the runner: a name and weak-referenceability."""

    def __init__(self, name: str = "fake") -> None:
        self.name = name
        self.version = 1


class FakeSignature:
    """`y = 10 * x + row_sum(x)`-ish deterministic model that records every call's shapes.

    `gate`, when set, makes each call wait on it, so tests can hold the batch threads busy.
    """

    key = "serving_default"

    def __init__(
        self, shape: tuple[int | None, ...] = (None, 2), dtype: int = types_pb2.DT_FLOAT
    ) -> None:
        self.inputs = {"x": TensorSpec("x", "x:0", dtype, shape)}
        self.outputs = {"y": TensorSpec("y", "y:0", dtype, shape)}
        self.calls: list[tuple[int, ...]] = []
        self.threads: list[str] = []
        self.gate: threading.Event | None = None
        self.started = threading.Event()
        self.delay = 0.0

    def run(self, feeds: Mapping[str, np.ndarray], output_keys: Sequence[str] = ()) -> dict:
        x = feeds["x"]
        self.calls.append(x.shape)
        self.threads.append(threading.current_thread().name)
        self.started.set()
        if self.gate is not None:
            self.gate.wait(10)
        if self.delay:
            time.sleep(self.delay)
        if x.ndim == 0:
            return {"y": x * 10}
        return {"y": x * 10 + 1}


def expected(x: np.ndarray) -> np.ndarray:
    return x * 10 + 1


def config(**overrides: object) -> BatchingConfig:
    values: dict[str, object] = {"max_batch_size": 64, "num_batch_threads": 1}
    values.update(overrides)
    return BatchingConfig(**values)  # type: ignore[arg-type]


@pytest.fixture
def make_runner() -> Iterator:
    """Runners built by a test are closed after it (their batch threads joined)."""
    runners: list[BatchingRunner] = []

    def make(cfg: BatchingConfig, metrics: ServingMetrics | None = None) -> BatchingRunner:
        runner = BatchingRunner(cfg, metrics)
        runners.append(runner)
        return runner

    yield make
    for runner in runners:
        runner.close()


def run_concurrently(runner: BatchingRunner, servable, signature, inputs: list[np.ndarray]):
    """Submit all inputs at once (a barrier lines the threads up); results in input order."""
    barrier = threading.Barrier(len(inputs))

    def call(x: np.ndarray):
        barrier.wait()
        return runner(servable, signature, {"x": x}, ())

    with ThreadPoolExecutor(len(inputs)) as pool:
        return list(pool.map(call, inputs))


# --------------------------------------------------------------------------- config


def test_text_file_in_tf_serving_format_parses(tmp_path: Path) -> None:
    path = tmp_path / "batching_parameters.txt"
    path.write_text(
        "max_batch_size { value: 128 }\n"
        "batch_timeout_micros { value: 2000 }\n"
        "max_enqueued_batches { value: 7 }\n"
        "num_batch_threads { value: 3 }\n"
        'thread_pool_name { value: "pool" }\n'
        "allowed_batch_sizes: 8\nallowed_batch_sizes: 32\nallowed_batch_sizes: 128\n"
        "pad_variable_length_inputs: true\n"
    )
    assert read_batching_config(path) == BatchingConfig(
        max_batch_size=128,
        batch_timeout_micros=2000,
        max_enqueued_batches=7,
        num_batch_threads=3,
        thread_pool_name="pool",
        allowed_batch_sizes=(8, 32, 128),
        pad_variable_length_inputs=True,
    )


def test_unset_fields_take_tf_serving_defaults(tmp_path: Path) -> None:
    path = tmp_path / "b.txt"
    path.write_text("")
    cfg = read_batching_config(path)
    assert (cfg.max_batch_size, cfg.batch_timeout_micros, cfg.max_enqueued_batches) == (
        1000,
        0,
        10,
    )
    assert cfg.num_batch_threads == (os.cpu_count() or 1)
    assert cfg.allowed_batch_sizes == ()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("max_batch_size { value: 0 }", "max_batch_size must be positive; was 0"),
        ("num_batch_threads { value: -1 }", "num_batch_threads must be positive; was -1"),
        ("batch_timeout_micros { value: -5 }", "batch_timeout_micros must be >= 0"),
        (
            "max_batch_size { value: 16 } allowed_batch_sizes: 4 allowed_batch_sizes: 8",
            "Last entry in allowed_batch_sizes must match max_batch_size; last entry was 8; "
            "expected 16",
        ),
        (
            "max_batch_size { value: 8 } allowed_batch_sizes: 4 allowed_batch_sizes: 2 "
            "allowed_batch_sizes: 8",
            "allowed_batch_sizes must be positive and increasing; was [4, 2, 8]",
        ),
        (
            "max_batch_size { value: 8 } enable_large_batch_splitting { value: true } "
            "max_execution_batch_size { value: 16 }",
            "max_execution_batch_size (16) must not exceed max_batch_size (8)",
        ),
        ("max_batch_size: 5", "Invalid batching parameters file"),
        ("no_such_field { value: 1 }", 'no field named "no_such_field"'),
    ],
)
def test_invalid_parameters_are_a_clear_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "b.txt"
    path.write_text(text)
    with pytest.raises(ServingError) as caught:
        read_batching_config(path)
    assert caught.value.code is Code.INVALID_ARGUMENT
    assert message in caught.value.message
    assert str(path) in caught.value.message


def test_missing_file_is_invalid_argument(tmp_path: Path) -> None:
    with pytest.raises(ServingError) as caught:
        read_batching_config(tmp_path / "absent.txt")
    assert caught.value.code is Code.INVALID_ARGUMENT
    assert "absent.txt" in caught.value.message


def test_per_model_file_is_read_from_the_version_dir(tmp_path: Path) -> None:
    assert per_model_config(str(tmp_path)) is None
    (tmp_path / "batching_params.pbtxt").write_text("max_batch_size { value: 4 }")
    assert per_model_config(str(tmp_path)) == BatchingConfig(max_batch_size=4)


def test_padded_size_rounds_up_to_the_next_allowed_size() -> None:
    cfg = config(max_batch_size=32, allowed_batch_sizes=(4, 8, 32))
    assert [cfg.padded_size(n) for n in (1, 4, 5, 9, 32)] == [4, 4, 8, 32, 32]
    assert config().padded_size(7) == 7


# --------------------------------------------------------------------------- merging


def test_concurrent_requests_merge_into_one_call_and_each_gets_its_rows(make_runner) -> None:
    signature = FakeSignature()
    runner = make_runner(config(batch_timeout_micros=200_000))
    inputs = [np.full((i + 1, 2), i, np.float32) for i in range(6)]  # 21 rows in all
    results = run_concurrently(runner, FakeServable(), signature, inputs)
    assert signature.calls == [(21, 2)]
    for x, result in zip(inputs, results, strict=True):
        np.testing.assert_array_equal(result["y"], expected(x))


def test_batch_closes_when_full_without_waiting_for_the_timeout(make_runner) -> None:
    signature = FakeSignature()
    runner = make_runner(config(max_batch_size=4, batch_timeout_micros=30_000_000))
    inputs = [np.full((1, 2), i, np.float32) for i in range(4)]
    start = time.monotonic()
    results = run_concurrently(runner, FakeServable(), signature, inputs)
    assert time.monotonic() - start < 5
    assert signature.calls == [(4, 2)]
    assert [r["y"][0, 0] for r in results] == [1.0, 11.0, 21.0, 31.0]


def test_requests_that_do_not_fit_open_a_second_batch(make_runner) -> None:
    signature = FakeSignature()
    runner = make_runner(config(max_batch_size=4, batch_timeout_micros=200_000))
    inputs = [np.full((3, 2), i, np.float32) for i in range(2)]
    results = run_concurrently(runner, FakeServable(), signature, inputs)
    assert sorted(signature.calls) == [(3, 2), (3, 2)]
    for x, result in zip(inputs, results, strict=True):
        np.testing.assert_array_equal(result["y"], expected(x))


def test_batch_is_padded_to_the_next_allowed_size_with_a_real_row(make_runner) -> None:
    seen: list[np.ndarray] = []
    signature = FakeSignature()
    original = signature.run
    signature.run = lambda feeds, keys=(): (seen.append(feeds["x"].copy()), original(feeds))[1]
    runner = make_runner(config(max_batch_size=8, allowed_batch_sizes=(4, 8)))
    x = np.array([[1, 2], [3, 4], [5, 6]], np.float32)
    result = runner(FakeServable(), signature, {"x": x}, ())
    np.testing.assert_array_equal(seen[0], [[1, 2], [3, 4], [5, 6], [1, 2]])
    np.testing.assert_array_equal(result["y"], expected(x))


def test_variable_length_inputs_are_padded_when_enabled(make_runner) -> None:
    signature = FakeSignature(shape=(None, None))
    runner = make_runner(config(batch_timeout_micros=200_000, pad_variable_length_inputs=True))
    short = np.array([[1, 2]], np.float32)
    long = np.array([[3, 4, 5, 6]], np.float32)
    results = run_concurrently(runner, FakeServable(), signature, [short, long])
    assert signature.calls == [(2, 4)]
    np.testing.assert_array_equal(results[0]["y"], [[11, 21, 1, 1]])  # zeros padded, then *10+1
    np.testing.assert_array_equal(results[1]["y"], expected(long))


def test_different_shapes_without_padding_run_in_separate_batches(make_runner) -> None:
    signature = FakeSignature(shape=(None, None))
    runner = make_runner(config(batch_timeout_micros=100_000))
    short = np.ones((1, 2), np.float32)
    long = np.ones((2, 3), np.float32)
    results = run_concurrently(runner, FakeServable(), signature, [short, long])
    assert sorted(signature.calls) == [(1, 2), (2, 3)]
    np.testing.assert_array_equal(results[0]["y"], expected(short))
    np.testing.assert_array_equal(results[1]["y"], expected(long))


def test_rank_zero_input_runs_alone(make_runner) -> None:
    signature = FakeSignature(shape=None)
    runner = make_runner(config())
    result = runner(FakeServable(), signature, {"x": np.float32(4)}, ())
    assert signature.calls == [()]
    assert result["y"] == 40


# --------------------------------------------------------------------------- limits


def test_full_queue_answers_unavailable_at_once(make_runner) -> None:
    signature = FakeSignature()
    signature.gate = threading.Event()
    runner = make_runner(config(max_batch_size=1, max_enqueued_batches=1))
    servable = FakeServable()
    one = np.ones((1, 2), np.float32)
    with ThreadPoolExecutor(2) as pool:
        running = pool.submit(runner, servable, signature, {"x": one}, ())
        assert signature.started.wait(5)  # the only batch thread is now busy
        queued = pool.submit(runner, servable, signature, {"x": one * 2}, ())
        time.sleep(0.2)  # let it take the one queue slot
        start = time.monotonic()
        with pytest.raises(ServingError) as caught:
            runner(servable, signature, {"x": one * 3}, ())
        assert time.monotonic() - start < 0.1
        assert (caught.value.code, caught.value.message) == (
            Code.UNAVAILABLE,
            "The batch scheduling queue to which this task was submitted is full",
        )
        signature.gate.set()
        np.testing.assert_array_equal(running.result(5)["y"], expected(one))
        np.testing.assert_array_equal(queued.result(5)["y"], expected(one * 2))


def test_a_batch_that_need_not_wait_runs_in_the_callers_thread(make_runner) -> None:
    signature = FakeSignature()
    runner = make_runner(config(batch_timeout_micros=0))
    x = np.ones((3, 2), np.float32)
    future = runner.submit(FakeServable(), signature, {"x": x}, (), requests=3, run_here=True)
    assert future.done()
    np.testing.assert_array_equal(future.result()["y"], expected(x))
    assert signature.threads == [threading.current_thread().name]


@pytest.mark.parametrize(
    ("timeout", "rows", "here"),
    [(0, 1, True), (200_000, 1, False), (200_000, 4, True)],  # 4 rows fill a batch of 4
)
def test_with_a_timeout_only_a_full_batch_runs_in_the_callers_thread(
    make_runner, timeout: int, rows: int, here: bool
) -> None:
    signature = FakeSignature()
    runner = make_runner(config(batch_timeout_micros=timeout, max_batch_size=4))
    x = np.ones((rows, 2), np.float32)
    result = runner.submit(FakeServable(), signature, {"x": x}, (), run_here=True).result(5)
    np.testing.assert_array_equal(result["y"], expected(x))
    assert (signature.threads == [threading.current_thread().name]) is here


def test_a_caller_running_a_batch_takes_a_batch_threads_turn(make_runner) -> None:
    """With one batch thread, a batch run by a caller and a queued one never run at once."""
    signature = FakeSignature()
    signature.gate = threading.Event()
    runner = make_runner(config(batch_timeout_micros=0, num_batch_threads=1))
    servable, one = FakeServable(), np.ones((1, 2), np.float32)
    with ThreadPoolExecutor(1, thread_name_prefix="caller") as pool:
        here = pool.submit(
            lambda: runner.submit(servable, signature, {"x": one}, (), run_here=True)
        )
        assert signature.started.wait(5)  # the caller is running it, holding the only turn
        queued = runner.submit(servable, signature, {"x": one * 2}, (), run_here=True)
        time.sleep(0.2)
        assert not queued.done() and len(signature.calls) == 1
        signature.gate.set()
        np.testing.assert_array_equal(here.result(5).result(5)["y"], expected(one))
        np.testing.assert_array_equal(queued.result(5)["y"], expected(one * 2))
    assert signature.threads[0].startswith("caller")
    assert signature.threads[1].startswith("batch_threads")


def test_a_cancelled_request_is_dropped_and_the_batch_thread_lives_on(make_runner) -> None:
    """A gRPC client that goes away cancels its future; the others still get their rows."""
    runner = make_runner(config(batch_timeout_micros=200_000, max_batch_size=4))
    servable, signature = FakeServable(), FakeSignature()
    gone = runner.submit(servable, signature, {"x": np.ones((1, 2), np.float32)}, ())
    kept = runner.submit(servable, signature, {"x": np.full((1, 2), 2.0, np.float32)}, ())
    assert gone.cancel()
    np.testing.assert_array_equal(kept.result(5)["y"], expected(np.full((1, 2), 2.0)))
    assert signature.calls == [(1, 2)]  # the cancelled row never reached the model
    later = runner(servable, signature, {"x": np.full((1, 2), 3.0, np.float32)}, ())
    np.testing.assert_array_equal(later["y"], expected(np.full((1, 2), 3.0)))


def test_closed_runner_refuses_new_work(make_runner) -> None:
    runner = make_runner(config())
    runner(FakeServable(), FakeSignature(), {"x": np.ones((1, 2), np.float32)}, ())
    runner.close()
    with pytest.raises(ServingError) as caught:
        runner(FakeServable(), FakeSignature(), {"x": np.ones((1, 2), np.float32)}, ())
    assert (caught.value.code, caught.value.message) == (
        Code.UNAVAILABLE,
        "The batch scheduler is shutting down",
    )


def test_a_closed_runner_starts_no_scheduler_for_a_new_config(make_runner) -> None:
    runner = make_runner(config())
    runner.close()
    with pytest.raises(ServingError) as caught:  # no request ever ran: no scheduler exists
        runner(FakeServable(), FakeSignature(), {"x": np.ones((1, 2), np.float32)}, ())
    assert (caught.value.code, caught.value.message) == (
        Code.UNAVAILABLE,
        "The batch scheduler is shutting down",
    )


def test_request_larger_than_max_batch_size_is_invalid_argument(make_runner) -> None:
    runner = make_runner(config(max_batch_size=4))
    with pytest.raises(ServingError) as caught:
        runner(FakeServable(), FakeSignature(), {"x": np.ones((5, 2), np.float32)}, ())
    assert caught.value.code is Code.INVALID_ARGUMENT
    assert caught.value.message == "Task size 5 is larger than maximum input batch size 4"


def test_large_request_is_split_when_splitting_is_enabled(make_runner) -> None:
    signature = FakeSignature()
    runner = make_runner(
        config(max_batch_size=8, enable_large_batch_splitting=True, max_execution_batch_size=2)
    )
    x = np.arange(10, dtype=np.float32).reshape(5, 2)
    result = runner(FakeServable(), signature, {"x": x}, ())
    assert sorted(signature.calls) == [(1, 2), (2, 2), (2, 2)]
    np.testing.assert_array_equal(result["y"], expected(x))
    with pytest.raises(ServingError) as caught:
        runner(FakeServable(), signature, {"x": np.ones((9, 2), np.float32)}, ())
    assert caught.value.message == "Task size 9 is larger than maximum input batch size 8"


def test_coalesced_requests_are_split_only_between_requests(make_runner) -> None:
    signature = FakeSignature()
    runner = make_runner(config(max_batch_size=5))
    x = np.arange(24, dtype=np.float32).reshape(12, 2)  # 6 coalesced requests of 2 rows
    future = runner.submit(FakeServable(), signature, {"x": x}, (), requests=6)
    np.testing.assert_array_equal(future.result(5)["y"], expected(x))
    assert sorted(signature.calls) == [(4, 2), (4, 2), (4, 2)]  # two whole requests per call


def test_coalesced_requests_each_too_large_fail_as_one_would(make_runner) -> None:
    runner = make_runner(config(max_batch_size=4))
    with pytest.raises(ServingError) as caught:
        runner.submit(FakeServable(), FakeSignature(), {"x": np.ones((10, 2), np.float32)}, (), 2)
    assert caught.value.message == "Task size 5 is larger than maximum input batch size 4"


def test_coalesced_requests_count_as_requests_in_the_queuing_histogram(make_runner) -> None:
    metrics = ServingMetrics()
    runner = make_runner(config(max_batch_size=8), metrics)
    x = np.ones((3, 2), np.float32)
    runner.submit(FakeServable("m"), FakeSignature(), {"x": x}, (), requests=3).result(5)
    queuing = ":tensorflow:serving:batching_session:queuing_latency_count"
    assert queuing + '{thread_pool_name="batch_threads"} 3.0' in metrics.exposition().decode()


def test_a_model_error_reaches_every_request_of_the_batch(make_runner) -> None:
    signature = FakeSignature()

    def fail(feeds, keys=()):
        raise ServingError(Code.INVALID_ARGUMENT, "kernel says no")

    signature.run = fail
    runner = make_runner(config(batch_timeout_micros=100_000))
    barrier = threading.Barrier(3)

    def call(i: int) -> ServingError:
        barrier.wait()
        with pytest.raises(ServingError) as caught:
            runner(FakeServable(), signature, {"x": np.ones((1, 2), np.float32)}, ())
        return caught.value

    with ThreadPoolExecutor(3) as pool:
        failures = list(pool.map(call, range(3)))
    assert {(f.code, f.message) for f in failures} == {(Code.INVALID_ARGUMENT, "kernel says no")}
    assert len(failures) == 3


def test_an_output_without_the_batch_dimension_is_failed_precondition(make_runner) -> None:
    """Its rows cannot be split among the batch's requests, so none gets an answer."""
    signature = FakeSignature()
    signature.run = lambda feeds, keys=(): {"y": feeds["x"].sum()}  # a scalar: rows are lost
    runner = make_runner(config())
    with pytest.raises(ServingError) as caught:
        runner(FakeServable(), signature, {"x": np.ones((3, 2), np.float32)}, ())
    assert (caught.value.code, caught.value.message) == (
        Code.FAILED_PRECONDITION,
        "Batched output tensor 'y' has shape []; its 0th dimension must equal the batch "
        "size 3. Only models whose outputs keep the batch dimension can be served with "
        "batching.",
    )


def test_batches_are_recorded_in_metrics(make_runner) -> None:
    metrics = ServingMetrics()
    runner = make_runner(config(max_batch_size=8, allowed_batch_sizes=(4, 8)), metrics)
    runner(FakeServable("m"), FakeSignature(), {"x": np.ones((3, 2), np.float32)}, ())
    text = metrics.exposition().decode()
    labels = '{model_name="m",thread_pool_name="batch_threads"}'
    assert f":modelplane:batching:batch_size_sum{labels} 4.0" in text
    assert f":modelplane:batching:padding_size_sum{labels} 1.0" in text
    queuing = ":tensorflow:serving:batching_session:queuing_latency_count"
    assert queuing + '{thread_pool_name="batch_threads"} 1.0' in text


# --------------------------------------------------------------------------- a real model


@pytest.fixture(scope="module")
def mlp(saved_models) -> Iterator[Servable]:
    servable = load_servable("mlp", 1, os.path.join(saved_models.mlp, "1"), SessionOptions())
    yield servable
    servable.close()


def test_real_model_batched_results_equal_unbatched_ones(make_runner, mlp: Servable) -> None:
    signature = mlp.signature("serving_default")
    runner = make_runner(config(batch_timeout_micros=100_000, allowed_batch_sizes=(16, 64)))
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal((n, 8), dtype=np.float32) for n in (1, 2, 3, 1, 5)]
    results = run_concurrently(runner, mlp, signature, inputs)
    for x, result in zip(inputs, results, strict=True):
        np.testing.assert_allclose(result["y"], signature.run({"x": x})["y"], rtol=1e-5)
        assert result["y"].shape == (len(x), 4)


def test_real_model_bad_dtype_fails_alone(make_runner, mlp: Servable) -> None:
    signature = mlp.signature("serving_default")
    runner = make_runner(config(batch_timeout_micros=100_000))
    good = np.ones((2, 8), np.float32)
    bad = np.ones((2, 8), np.int32)
    barrier = threading.Barrier(2)

    def call(x: np.ndarray):
        barrier.wait()
        try:
            return runner(mlp, signature, {"x": x}, ())
        except ServingError as exc:
            return exc

    with ThreadPoolExecutor(2) as pool:
        ok, failed = pool.map(call, [good, bad])
    np.testing.assert_allclose(ok["y"], signature.run({"x": good})["y"], rtol=1e-5)
    assert isinstance(failed, ServingError)
    assert failed.code is Code.INVALID_ARGUMENT
    assert "Expects arg[x] to be float but int32 is provided" in failed.message


def test_string_inputs_batch(make_runner, saved_models) -> None:
    path = os.path.join(saved_models.strings, "1")
    servable = load_servable("strings", 1, path, SessionOptions())
    try:
        signature = servable.signature("serving_default")
        runner = make_runner(config(batch_timeout_micros=100_000))
        inputs = [np.array([b"ab", b"c"], object), np.array([b"hello"], object)]
        barrier = threading.Barrier(2)

        def call(x: np.ndarray):
            barrier.wait()
            return runner(servable, signature, {"text": x}, ("length",))

        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(call, inputs))
        assert [r["length"].tolist() for r in results] == [[2, 1], [5]]
    finally:
        servable.close()
