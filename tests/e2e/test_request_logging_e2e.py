"""End to end: a model's logging_config set through the control plane's API is pushed to a
live data plane, which writes PredictionLog records for the official client's requests; the
records are read back with TensorFlow's TFRecord reader."""

from __future__ import annotations

import glob
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import requests
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2, prediction_service_pb2_grpc

from tests.e2e.conftest import ControlPlaneProcess
from tests.e2e.test_controlplane_e2e import Fleet
from tests.support.processes import start_dataplane

pytestmark = pytest.mark.slow
MODEL = "logged"


@pytest.fixture(scope="module")
def log_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("request-logs")


@pytest.fixture(scope="module")
def fleet(
    saved_models, log_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fleet]:
    logs = tmp_path_factory.mktemp("cp-request-logging")
    plane = start_dataplane(log_dir=logs)
    control = ControlPlaneProcess(f"sqlite:///{logs / 'cp.db'}", [plane.grpc_target], logs)
    control.env["MODELPLANE_REQUEST_LOG_ROOTS"] = str(log_root)
    try:
        control.prepare().start()
        yield Fleet(control, [plane], saved_models.half_plus_two)
    finally:
        control.stop()
        plane.stop()


def predict(target: str, *xs: float) -> list[float]:
    """half_plus_two through the official TF Serving client (tensorflow-serving-api)."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(list(xs), dtype=tf.float32))
    with grpc.insecure_channel(target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        response = stub.Predict(request, timeout=30)
    return list(tf.make_ndarray(response.outputs["y"]).flatten())


def read_prediction_logs(pattern: str) -> list[prediction_log_pb2.PredictionLog]:
    return [
        prediction_log_pb2.PredictionLog.FromString(record.numpy())
        for path in sorted(glob.glob(pattern))
        for record in tf.data.TFRecordDataset(path)
    ]


def test_logging_config_from_the_api_makes_the_plane_write_prediction_logs(
    fleet: Fleet, log_root: Path
):
    prefix = f"{log_root}/{MODEL}/requests"
    body = {
        "name": MODEL,
        "base_path": fleet.base_path,
        "logging_config": {
            "sampling_config": {"sampling_rate": 1.0},
            "log_collector_config": {"type": "", "filename_prefix": prefix},
        },
    }
    outside = {**body, "logging_config": {"log_collector_config": {"filename_prefix": "/tmp/x"}}}
    refused = fleet.api("post", "/models", json=outside)
    assert refused.status_code == 400
    field = "logging_config.log_collector_config.filename_prefix"
    assert refused.json() == {
        "error": f"{field}: must be under one of ['{log_root}']",
        "field": field,
    }
    created = fleet.ok("post", "/models", 201, json=body)
    fleet.wait_in_sync(created["revision"])
    pushed = fleet.ok("get", f"/revisions/{created['revision']}")["model_server_config"]
    assert f'filename_prefix: "{prefix}"' in pushed

    answers = [predict(fleet.planes[0].grpc_target, x, x + 1) for x in (1.0, 3.0, 5.0)]
    assert answers == [[2.5, 3.0], [3.5, 4.0], [4.5, 5.0]]
    rest = requests.post(
        f"{fleet.planes[0].rest_url}/v1/models/{MODEL}:predict",
        json={"instances": [7.0]},
        timeout=30,
    )
    assert rest.json() == {"predictions": [5.5]}
    # SIGTERM drains the writer: what was queued is written and the file closed.
    assert fleet.planes[0].stop() == 0

    logs = read_prediction_logs(f"{prefix}.*.tfrecord")
    assert len(logs) == 4
    inputs = [list(tf.make_ndarray(e.predict_log.request.inputs["x"]).flatten()) for e in logs]
    assert inputs == [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0]]
    outputs = [list(tf.make_ndarray(e.predict_log.response.outputs["y"]).flatten()) for e in logs]
    assert outputs == [[2.5, 3.0], [3.5, 4.0], [4.5, 5.0], [5.5]]
    assert {e.predict_log.response.model_spec.name for e in logs} == {MODEL}
    assert {e.predict_log.response.model_spec.version.value for e in logs} == {123}
