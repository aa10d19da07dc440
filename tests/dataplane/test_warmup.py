"""Warmup: replaying all four PredictionLog kinds, and clear failures for malformed files."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    classification_pb2,
    inference_pb2,
    predict_pb2,
    prediction_log_pb2,
    regression_pb2,
)

from dataplane.batching import BatchingConfig, BatchingRunner
from dataplane.errors import Code, ServingError
from dataplane.metrics import ServingMetrics
from dataplane.servable import Servable, SessionOptions, Signature, load_servable
from dataplane.warmup import MAX_RECORDS, PreparedLoader, warm_up, warmup_file
from tests.support.processes import REPO_ROOT

PredictionLog = prediction_log_pb2.PredictionLog


class RecordingRunner:
    """Runs each call directly and remembers which signature it ran."""

    def __init__(self) -> None:
        self.signatures: list[str] = []

    def __call__(
        self,
        servable: Servable,
        signature: Signature,
        feeds: Mapping[str, np.ndarray],
        output_keys: Sequence[str],
    ) -> Mapping[str, np.ndarray]:
        self.signatures.append(signature.key)
        return signature.run(feeds, output_keys)


@pytest.fixture(scope="module")
def half_plus_two_template(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One half_plus_two version dir without warmup data, copied by each test."""
    from examples import builders

    base = tmp_path_factory.mktemp("warmup_template")
    return builders.build_half_plus_two_tf1(str(base / "hp"), 1)


@pytest.fixture
def version_dir(half_plus_two_template: str, tmp_path: Path) -> str:
    path = tmp_path / "hp" / "1"
    shutil.copytree(half_plus_two_template, path)
    return str(path)


@pytest.fixture
def load(version_dir: str) -> Iterator[Callable[[], Servable]]:
    loaded: list[Servable] = []

    def make() -> Servable:
        servable = load_servable("hp", 1, version_dir, SessionOptions())
        loaded.append(servable)
        return servable

    yield make
    for servable in loaded:
        servable.close()


def write_records(version_dir: str, records: Sequence[bytes]) -> Path:
    path = warmup_file(version_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in records:
            writer.write(record)
    return path


def example(x: float) -> tf.train.Example:
    return tf.train.Example(
        features=tf.train.Features(
            feature={"x": tf.train.Feature(float_list=tf.train.FloatList(value=[x]))}
        )
    )


def predict_log(signature: str = "serving_default", alias: str = "x") -> PredictionLog:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "some_other_name"
    request.model_spec.signature_name = signature
    request.inputs[alias].CopyFrom(tf.make_tensor_proto(np.array([[1.0], [2.0]], np.float32)))
    return PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))


def all_kinds() -> list[PredictionLog]:
    classify = classification_pb2.ClassificationRequest()
    classify.model_spec.signature_name = "classify_x_to_y"
    classify.input.example_list.examples.append(example(1.0))
    regress = regression_pb2.RegressionRequest()
    regress.model_spec.signature_name = "regress_x_to_y"
    regress.input.example_list.examples.extend([example(1.0), example(3.0)])
    multi = inference_pb2.MultiInferenceRequest()
    for signature, method in (
        ("classify_x_to_y", "tensorflow/serving/classify"),
        ("regress_x_to_y2", "tensorflow/serving/regress"),
    ):
        task = multi.tasks.add()
        task.model_spec.name = "hp"
        task.model_spec.signature_name = signature
        task.method_name = method
    multi.input.example_list.examples.append(example(4.0))
    return [
        predict_log(),
        PredictionLog(classify_log=prediction_log_pb2.ClassifyLog(request=classify)),
        PredictionLog(regress_log=prediction_log_pb2.RegressLog(request=regress)),
        PredictionLog(multi_inference_log=prediction_log_pb2.MultiInferenceLog(request=multi)),
    ]


def test_all_four_log_kinds_are_replayed_each_iteration(version_dir: str, load) -> None:
    write_records(version_dir, [entry.SerializeToString() for entry in all_kinds()])
    runner = RecordingRunner()
    assert warm_up(load(), iterations=2, runner=runner) == 4
    multi = ["classify_x_to_y", "regress_x_to_y2"]
    assert runner.signatures == [
        *(["serving_default"] * 2),
        *(["classify_x_to_y"] * 2),
        *(["regress_x_to_y"] * 2),
        *(multi * 2),
    ]


def test_builder_warmup_file_replays_through_the_batcher(saved_models) -> None:
    path = os.path.join(saved_models.half_plus_two_warmup, "1")
    servable = load_servable("half_plus_two", 1, path, SessionOptions())
    metrics = ServingMetrics()
    runner = BatchingRunner(BatchingConfig(max_batch_size=8, num_batch_threads=1), metrics)
    try:
        assert warm_up(servable, iterations=3, runner=runner, metrics=metrics) == 3
    finally:
        runner.close()
        servable.close()
    text = metrics.exposition().decode()
    assert (
        f':tensorflow:serving:model_warmup_latency_count{{model_path="{path}",status="OK"}} 1.0'
        in text
    )
    # 3 records x 3 iterations, each one batch (they arrive one at a time)
    labels = '{model_name="half_plus_two",thread_pool_name="batch_threads"}'
    assert f":modelplane:batching:batch_size_count{labels} 9.0" in text


def test_no_warmup_file_is_fine(load) -> None:
    runner = RecordingRunner()
    assert warm_up(load(), iterations=1, runner=runner) == 0
    assert runner.signatures == []


@pytest.mark.parametrize(
    ("records", "code", "message"),
    [
        (None, Code.DATA_LOSS, "Please verify your warmup data is in TFRecord format"),
        ([b"\xff\xff not a proto"], Code.INVALID_ARGUMENT, "Failed to parse warmup record"),
        (
            [PredictionLog(session_run_log=prediction_log_pb2.SessionRunLog()).SerializeToString()],
            Code.UNIMPLEMENTED,
            "Unsupported log_type for warmup: session_run_log",
        ),
        (
            [predict_log(alias="nope").SerializeToString()],
            Code.INVALID_ARGUMENT,
            "input size does not match signature",
        ),
        (
            [predict_log(signature="missing").SerializeToString()],
            Code.FAILED_PRECONDITION,
            'Serving signature key "missing" not found.',
        ),
        (
            [predict_log().SerializeToString()] * (MAX_RECORDS + 1),
            Code.INVALID_ARGUMENT,
            f"Number of warmup records exceeds the maximum ({MAX_RECORDS})",
        ),
    ],
)
def test_malformed_file_fails_with_a_clear_error(
    version_dir: str, load, records: list[bytes] | None, code: Code, message: str
) -> None:
    if records is None:
        path = warmup_file(version_dir)
        path.parent.mkdir(parents=True)
        path.write_bytes(b"this is not a TFRecord file at all, just text")
    else:
        write_records(version_dir, records)
    with pytest.raises(ServingError) as caught:
        warm_up(load(), iterations=1)
    assert caught.value.code is code
    assert message in caught.value.message
    assert f"Warmup of {version_dir} failed" in caught.value.message


def test_prepared_loader_fails_the_load_and_closes_the_version(version_dir: str) -> None:
    write_records(version_dir, [b"garbage"])
    loaded: list[Servable] = []

    def load(name: str, version: int, path: str) -> Servable:
        loaded.append(load_servable(name, version, path, SessionOptions()))
        return loaded[-1]

    metrics = ServingMetrics()
    loader = PreparedLoader(load, metrics=metrics)
    with pytest.raises(ServingError) as caught:
        loader("hp", 1, version_dir)
    assert caught.value.code is Code.INVALID_ARGUMENT
    assert loaded[0].signatures == {}  # closed
    assert ':modelplane:model_load_count{model_name="hp",status="INVALID_ARGUMENT"} 1.0' in (
        metrics.exposition().decode()
    )


def test_prepared_loader_warms_attaches_per_model_batching_and_counts(version_dir: str) -> None:
    write_records(version_dir, [predict_log().SerializeToString()])
    Path(version_dir, "batching_params.pbtxt").write_text(
        "max_batch_size { value: 4 } num_batch_threads { value: 1 }"
    )
    metrics = ServingMetrics()
    runner = BatchingRunner(BatchingConfig(num_batch_threads=1), metrics)
    loader = PreparedLoader(
        lambda n, v, p: load_servable(n, v, p, SessionOptions()),
        runner=runner,
        warmup_iterations=2,
        per_model_batching=True,
        metrics=metrics,
    )
    try:
        servable = loader("hp", 1, version_dir)
        assert runner.config_for(servable) == BatchingConfig(max_batch_size=4, num_batch_threads=1)
        text = metrics.exposition().decode()
        assert ':modelplane:model_load_count{model_name="hp",status="OK"} 1.0' in text
        labels = '{model_name="hp",thread_pool_name="batch_threads"}'
        assert f":modelplane:batching:batch_size_count{labels} 2.0" in text
        servable.close()
        del servable
        assert (
            ':modelplane:model_unload_count{model_name="hp"} 1.0' in metrics.exposition().decode()
        )
    finally:
        runner.close()


def loader_with_wide_sessions(
    loaded: list[Servable], wide_call_seconds: float, metrics: ServingMetrics
) -> PreparedLoader:
    def load(threads: int) -> Callable[[str, int, str], Servable]:
        def run(name: str, version: int, path: str) -> Servable:
            options = SessionOptions(intra_op_parallelism=threads)
            loaded.append(load_servable(name, version, path, options))
            return loaded[-1]

        return run

    return PreparedLoader(
        load(1), metrics=metrics, load_wide=load(3), wide_call_seconds=wide_call_seconds
    )


@pytest.mark.parametrize(("wide_call_seconds", "threads"), [(1e-9, 3), (60.0, 1)])
def test_a_model_with_long_warmup_calls_is_loaded_again_with_intra_op_threads(
    version_dir: str, wide_call_seconds: float, threads: int, caplog: pytest.LogCaptureFixture
) -> None:
    write_records(version_dir, [predict_log().SerializeToString()])
    loaded: list[Servable] = []
    metrics = ServingMetrics()
    loader = loader_with_wide_sessions(loaded, wide_call_seconds, metrics)
    with caplog.at_level("INFO", logger="dataplane.warmup"):
        servable = loader("hp", 1, version_dir)
    assert servable is loaded[-1] and servable.intra_op_threads == threads
    assert len(loaded) == (2 if threads == 3 else 1)
    if threads == 3:
        assert loaded[0].signatures == {}  # the one-thread session is closed
    x = np.array([[1.0], [3.0]], np.float32)
    assert servable.signature("serving_default").run({"x": x})["y"].tolist() == [[2.5], [3.5]]
    assert f':modelplane:intra_op_threads{{model_name="hp"}} {threads}.0' in (
        metrics.exposition().decode()
    )
    assert "hp version 1: warmup calls " in caplog.text
    assert caplog.text.rstrip().endswith(f"{threads} intra-op thread(s)")
    servable.close()


def test_a_model_without_warmup_records_keeps_one_intra_op_thread(
    version_dir: str, caplog: pytest.LogCaptureFixture
) -> None:
    loaded: list[Servable] = []
    loader = loader_with_wide_sessions(loaded, 1e-9, ServingMetrics())
    with caplog.at_level("INFO", logger="dataplane.warmup"):
        servable = loader("hp", 1, version_dir)
    assert loaded == [servable] and servable.intra_op_threads == 1
    assert "hp version 1: no warmup calls: 1 intra-op thread(s)" in caplog.text
    servable.close()


def test_invalid_per_model_batching_fails_the_load(version_dir: str) -> None:
    Path(version_dir, "batching_params.pbtxt").write_text("max_batch_size { value: 0 }")
    runner = BatchingRunner(BatchingConfig(num_batch_threads=1))
    loader = PreparedLoader(
        lambda n, v, p: load_servable(n, v, p, SessionOptions()),
        runner=runner,
        per_model_batching=True,
    )
    with pytest.raises(ServingError) as caught:
        loader("hp", 1, version_dir)
    assert caught.value.code is Code.INVALID_ARGUMENT
    assert "max_batch_size must be positive" in caught.value.message
    assert "batching_params.pbtxt" in caught.value.message
    runner.close()


def test_warmup_disabled_skips_the_file(version_dir: str) -> None:
    write_records(version_dir, [b"garbage"])
    loader = PreparedLoader(lambda n, v, p: load_servable(n, v, p, SessionOptions()), warmup=False)
    servable = loader("hp", 1, version_dir)
    assert servable.version == 1
    servable.close()


def test_warmup_runs_on_the_core_without_the_grpc_layers() -> None:
    """As TF Serving's saved_model_warmup: replay goes to the protocol-free core, so loading
    warmup pulls in neither the gRPC services nor grpcio, nor the REST layer."""
    probe = (
        "import sys, dataplane.warmup; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'grpc' "
        "or m.startswith(('dataplane.grpc', 'dataplane.http', 'dataplane.rest'))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
