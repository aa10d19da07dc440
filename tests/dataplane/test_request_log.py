"""Request logging (logging_config): checked configs, the bounded writer, rotation, formats,
and a live data plane whose captured log replays unchanged as a warmup file."""

from __future__ import annotations

import glob
import json
import shutil
import threading
import time
from pathlib import Path

import grpc
import pytest
import requests
import tensorflow as tf
from google.protobuf import json_format, text_format
from prometheus_client import CollectorRegistry
from tensorflow_serving.apis import (
    predict_pb2,
    prediction_log_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)
from tensorflow_serving.config import model_server_config_pb2

from dataplane.config import ConfigError
from dataplane.manager import ModelManager
from dataplane.options import ServerOptions
from dataplane.request_log import (
    LogSettings,
    RequestLogger,
    logging_answer,
    model_logging,
    models_logging,
)
from dataplane.servable import SessionOptions, load_servable
from dataplane.warmup import read_warmup_logs, warm_up
from tests.dataplane.fakes import FakeLoader


def config_with(logging_text: str, name: str = "m") -> model_server_config_pb2.ModelServerConfig:
    text = (
        f'model_config_list {{ config {{ name: "{name}" base_path: "/models/{name}" '
        f"logging_config {{ {logging_text} }} }} }}"
    )
    return text_format.Parse(text, model_server_config_pb2.ModelServerConfig())


def logging_of(text: str):
    return model_logging(config_with(text).model_config_list.config[0])


def predict_pair(value: float, version: int = 1) -> tuple:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "m"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto([value], dtype=tf.float32))
    response = predict_pb2.PredictResponse()
    response.model_spec.name = "m"
    response.model_spec.version.value = version
    response.outputs["y"].CopyFrom(tf.make_tensor_proto([value / 2 + 2], dtype=tf.float32))
    return request, response


def read_tfrecords(pattern: str) -> list[prediction_log_pb2.PredictionLog]:
    logs = []
    for path in sorted(glob.glob(pattern)):
        for record in tf.data.TFRecordDataset(path):
            logs.append(prediction_log_pb2.PredictionLog.FromString(record.numpy()))
    return logs


@pytest.fixture
def make_logger():
    loggers: list[RequestLogger] = []

    def make(**limits: object) -> tuple[RequestLogger, CollectorRegistry]:
        registry = CollectorRegistry()
        logger = RequestLogger(LogSettings(**limits), registry)  # type: ignore[arg-type]
        loggers.append(logger)
        return logger, registry

    yield make
    for logger in loggers:
        logger.close()


# ---------------------------------------------------------------------------- config


def test_logging_config_is_read_with_tfrecord_as_the_empty_type() -> None:
    settings = logging_of(
        'sampling_config { sampling_rate: 0.25 } log_collector_config { filename_prefix: "/l/p" }'
    )
    assert settings is not None
    assert (settings.rate, settings.kind, settings.filename_prefix) == (0.25, "tfrecord", "/l/p")


def test_no_logging_config_or_a_zero_rate_logs_nothing() -> None:
    plain = model_server_config_pb2.ModelConfig(name="m", base_path="/m")
    assert model_logging(plain) is None
    assert logging_of('log_collector_config { filename_prefix: "/l/p" }') is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            'sampling_config { sampling_rate: 1.5 } log_collector_config { filename_prefix: "/p" }',
            "Model m: logging_config sampling_rate must be in [0, 1], got 1.5",
        ),
        (
            "sampling_config { sampling_rate: 0.5 }",
            "Model m: log_collector_config needs a filename_prefix",
        ),
        (
            'sampling_config { sampling_rate: 0.5 } log_collector_config { type: "kafka" '
            'filename_prefix: "/p" }',
            "Model m: unknown log_collector_config type 'kafka' (supported: tfrecord, jsonl)",
        ),
        (
            "sampling_config { sampling_rate: 0.5 per_task_sampling_configs { dc: 'x' "
            "sampling_rate: 1 } } log_collector_config { filename_prefix: '/p' }",
            "Model m: per_task_sampling_configs is not supported by this server",
        ),
    ],
)
def test_a_logging_config_that_cannot_work_is_refused(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        models_logging(config_with(text))
    assert caught.value.message == message


def test_the_manager_refuses_a_bad_logging_config(make_logger) -> None:
    logger, _ = make_logger()
    manager = ModelManager(ServerOptions(), FakeLoader(), observers=(logger,))
    try:
        bad = config_with(
            'sampling_config { sampling_rate: 2 } log_collector_config { filename_prefix: "/p" }'
        )
        report = manager.apply_config(bad)
        assert report.code.name == "INVALID_ARGUMENT"
        assert "sampling_rate must be in [0, 1], got 2" in report.message
        assert logger.sampled("m") is None
    finally:
        manager.shutdown()


# ---------------------------------------------------------------------------- sampling


def test_sampling_draws_at_the_configured_rate(make_logger) -> None:
    logger, _ = make_logger()
    logger.configure(
        config_with(
            'sampling_config { sampling_rate: 0.01 } log_collector_config { filename_prefix: "/p" }'
        )
    )
    drawn = sum(logger.sampled("m") is not None for _ in range(20_000))
    assert 100 <= drawn <= 320  # expected 200; far outside only with a broken draw
    assert logger.sampled("other") is None
    logger.configure(
        config_with(
            'sampling_config { sampling_rate: 1 } log_collector_config { filename_prefix: "/p" }'
        )
    )
    assert all(logger.sampled("m") is not None for _ in range(1000))


def test_logging_answer_records_only_sampled_successful_answers(
    make_logger, tmp_path: Path
) -> None:
    logger, registry = make_logger()
    prefix = tmp_path / "logs" / "m"
    logger.configure(config_with(logging_text(prefix)))
    request, response = predict_pair(4.0)
    answer = logging_answer(logger, "m", "predict", lambda r: response, lambda r, a: (request, a))
    assert answer("result") is response

    def failing(_result: object) -> object:
        raise ValueError("answer failed")

    broken = logging_answer(logger, "m", "predict", failing, lambda r, a: (request, a))
    with pytest.raises(ValueError):
        broken("result")
    not_logged = lambda r: response  # noqa: E731
    assert (
        logging_answer(logger, "unlogged", "predict", not_logged, lambda r, a: (r, a)) is not_logged
    )
    logger.close()
    logs = read_tfrecords(f"{prefix}.*.tfrecord")
    assert len(logs) == 1
    assert logs[0].predict_log.request == request
    assert logs[0].predict_log.response == response
    assert logs[0].log_metadata.model_spec.version.value == 1
    assert logs[0].log_metadata.sampling_config.sampling_rate == 1.0
    assert logs[0].log_metadata.timestamp_secs > 0
    assert (
        registry.get_sample_value(":modelplane:request_log_records_total", {"model_name": "m"}) == 1
    )


# ---------------------------------------------------------------------------- writer


def logging_text(prefix: Path, rate: float = 1.0, kind: str = "") -> str:
    return (
        f"sampling_config {{ sampling_rate: {rate} }} "
        f'log_collector_config {{ type: "{kind}" filename_prefix: "{prefix}" }}'
    )


def configured(logger: RequestLogger, prefix: Path, kind: str = "", rate: float = 1.0):
    logger.configure(config_with(logging_text(prefix, rate, kind)))
    settings = logger.sampled("m")
    assert settings is not None
    return settings


def test_files_rotate_by_size_and_every_record_survives(make_logger, tmp_path: Path) -> None:
    logger, _ = make_logger(max_file_bytes=300)
    settings = configured(logger, tmp_path / "m")
    for value in range(10):
        logger.record(settings, "predict", lambda v=value: predict_pair(float(v)))
    logger.close()
    files = sorted(glob.glob(f"{tmp_path}/m.*.tfrecord"))
    assert len(files) >= 3
    values = [
        float(tf.make_ndarray(e.predict_log.request.inputs["x"])[0])
        for e in read_tfrecords(f"{tmp_path}/m.*.tfrecord")
    ]
    assert sorted(values) == [float(v) for v in range(10)]


def test_files_rotate_by_age(make_logger, tmp_path: Path) -> None:
    logger, _ = make_logger(max_file_seconds=0)
    settings = configured(logger, tmp_path / "m")
    for value in range(3):
        logger.record(settings, "predict", lambda v=value: predict_pair(float(v)))
    logger.close()
    assert len(glob.glob(f"{tmp_path}/m.*.tfrecord")) == 3


def test_jsonl_lines_parse_as_prediction_logs(make_logger, tmp_path: Path) -> None:
    logger, _ = make_logger()
    settings = configured(logger, tmp_path / "m", kind="jsonl")
    logger.record(settings, "predict", lambda: predict_pair(6.0))
    logger.close()
    (path,) = glob.glob(f"{tmp_path}/m.*.jsonl")
    lines = Path(path).read_text().splitlines()
    assert len(lines) == 1
    entry = json_format.Parse(lines[0], prediction_log_pb2.PredictionLog())
    assert tf.make_ndarray(entry.predict_log.response.outputs["y"]).tolist() == [5.0]
    assert json.loads(lines[0])["logMetadata"]["modelSpec"]["name"] == "m"


def test_a_full_queue_drops_and_counts_without_blocking(make_logger, tmp_path: Path) -> None:
    logger, registry = make_logger(queue_size=1)
    settings = configured(logger, tmp_path / "m")
    writer_busy, release = threading.Event(), threading.Event()

    def slow_build() -> tuple:
        writer_busy.set()
        release.wait(30)
        return predict_pair(1.0)

    logger.record(settings, "predict", slow_build)
    assert writer_busy.wait(30)
    logger.record(settings, "predict", lambda: predict_pair(2.0))  # fills the queue
    for _ in range(5):
        logger.record(settings, "predict", lambda: predict_pair(3.0))  # dropped at once
    dropped = {"model_name": "m", "reason": "queue_full"}
    assert registry.get_sample_value(":modelplane:request_log_dropped_total", dropped) == 5
    release.set()
    logger.close()
    assert len(read_tfrecords(f"{tmp_path}/m.*.tfrecord")) == 2
    logger.record(settings, "predict", lambda: predict_pair(4.0))
    stopped = {"model_name": "m", "reason": "stopped"}
    assert registry.get_sample_value(":modelplane:request_log_dropped_total", stopped) == 1


def test_a_failing_record_is_counted_and_the_writer_goes_on(make_logger, tmp_path: Path) -> None:
    logger, registry = make_logger()
    settings = configured(logger, tmp_path / "m")

    def broken() -> tuple:
        raise RuntimeError("cannot build")

    logger.record(settings, "predict", broken)
    logger.record(settings, "predict", lambda: predict_pair(1.0))
    logger.close()
    failed = {"model_name": "m", "reason": "write_error"}
    assert registry.get_sample_value(":modelplane:request_log_dropped_total", failed) == 1
    assert len(read_tfrecords(f"{tmp_path}/m.*.tfrecord")) == 1


# ---------------------------------------------------------------------------- live


def _serving_config(tmp_path: Path, base_path: str, prefix: Path) -> Path:
    path = tmp_path / "models.config"
    path.write_text(
        f'model_config_list {{ config {{ name: "hpt" base_path: "{base_path}" '
        'model_platform: "tensorflow" logging_config { sampling_config { sampling_rate: 1.0 } '
        f'log_collector_config {{ filename_prefix: "{prefix}" }} }} }} }}'
    )
    return path


def test_live_grpc_and_rest_requests_are_logged_and_replay_as_warmup(
    start_dataplane, saved_models, tmp_path: Path
) -> None:
    prefix = tmp_path / "logs" / "hpt"
    config = _serving_config(tmp_path, saved_models.half_plus_two, prefix)
    dataplane = start_dataplane(f"--model_config_file={config}")
    with grpc.insecure_channel(dataplane.grpc_target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "hpt"
        request.inputs["x"].CopyFrom(tf.make_tensor_proto([1.0, 2.0], dtype=tf.float32))
        assert list(stub.Predict(request, timeout=30).outputs["y"].float_val) == [2.5, 3.0]
        regress = regression_pb2.RegressionRequest()
        regress.model_spec.name = "hpt"
        regress.model_spec.signature_name = "regress_x_to_y"
        example = regress.input.example_list.examples.add()
        example.features.feature["x"].float_list.value.append(4.0)
        assert stub.Regress(regress, timeout=30).result.regressions[0].value == 4.0
        missing = predict_pb2.PredictRequest()
        missing.model_spec.name = "hpt"
        missing.inputs["nope"].CopyFrom(tf.make_tensor_proto([1.0], dtype=tf.float32))
        with pytest.raises(grpc.RpcError):
            stub.Predict(missing, timeout=30)  # failed: not logged
    answer = requests.post(
        f"{dataplane.rest_url}/v1/models/hpt:predict", json={"instances": [6.0]}, timeout=30
    )
    assert answer.json() == {"predictions": [5.0]}
    answer = requests.post(
        f"{dataplane.rest_url}/v1/models/hpt:classify",
        json={"signature_name": "classify_x_to_y", "examples": [{"x": 8.0}]},
        timeout=30,
    )
    assert answer.status_code == 200
    assert dataplane.stop() == 0  # SIGTERM: the drain flushes the log

    (path,) = glob.glob(f"{prefix}.*.tfrecord")
    logs = read_tfrecords(path)
    kinds = [entry.WhichOneof("log_type") for entry in logs]
    assert sorted(kinds) == ["classify_log", "predict_log", "predict_log", "regress_log"]
    grpc_predict = next(e for e in logs if e.predict_log.request == request)
    assert grpc_predict.log_metadata.model_spec.version.value == 123
    rest_predict = next(e for e in logs if e is not grpc_predict and e.HasField("predict_log"))
    assert tf.make_ndarray(rest_predict.predict_log.request.inputs["x"]).tolist() == [6.0]
    assert tf.make_ndarray(rest_predict.predict_log.response.outputs["y"]).tolist() == [5.0]
    rest_classify = next(e for e in logs if e.HasField("classify_log"))
    assert rest_classify.classify_log.request.model_spec.signature_name == "classify_x_to_y"
    scores = rest_classify.classify_log.response.result.classifications[0].classes[0].score
    assert scores == 6.0

    # The captured file, unchanged, is a warmup file for a new copy of the model.
    version_dir = tmp_path / "replayed" / "1"
    shutil.copytree(f"{saved_models.half_plus_two}/123", version_dir)
    (version_dir / "assets.extra").mkdir(exist_ok=True)
    shutil.copy(path, version_dir / "assets.extra" / "tf_serving_warmup_requests")
    assert len(read_warmup_logs(version_dir / "assets.extra" / "tf_serving_warmup_requests")) == 4
    servable = load_servable("replayed", 1, str(version_dir), SessionOptions())
    try:
        assert warm_up(servable, iterations=2) == 4
    finally:
        servable.close()


def test_a_new_config_closes_the_files_it_no_longer_names(make_logger, tmp_path: Path) -> None:
    logger, _ = make_logger()
    settings = configured(logger, tmp_path / "old")
    logger.record(settings, "predict", lambda: predict_pair(1.0))
    moved = configured(logger, tmp_path / "new")
    logger.record(moved, "predict", lambda: predict_pair(2.0))
    old_logs = []
    deadline = time.monotonic() + 30
    while not old_logs and time.monotonic() < deadline:  # the old file is complete once closed
        time.sleep(0.05)
        old_logs = read_tfrecords(f"{tmp_path}/old.*.tfrecord")
    assert len(old_logs) == 1
    logger.close()
    assert len(read_tfrecords(f"{tmp_path}/new.*.tfrecord")) == 1
