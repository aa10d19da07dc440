"""A data plane that exports its metrics, and real traffic for it: what the traffic tests chart."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
import requests
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from dataplane.metrics import UNKNOWN_MODEL
from tests.support.processes import REPO_ROOT, DataPlaneProcess, start_dataplane

MONITORING = REPO_ROOT / "deploy" / "dataplane" / "monitoring.config"
METRICS_PATH = "/monitoring/prometheus/metrics"
MODEL = "half"
# requests naming no configured model are counted under this name, not the one they sent
UNKNOWN = UNKNOWN_MODEL


def start_monitored_plane(base_path: str, log_dir: Path) -> DataPlaneProcess:
    """half_plus_two served as MODEL, with Prometheus metrics on its REST port."""
    return start_dataplane(
        f"--model_name={MODEL}",
        f"--model_base_path={base_path}",
        f"--monitoring_config_file={MONITORING}",
        log_dir=log_dir,
    )


def metrics_url(plane: DataPlaneProcess) -> str:
    return plane.rest_url + METRICS_PATH


def send_traffic(plane: DataPlaneProcess, ok: int, missing: int) -> None:
    """`ok` predictions over REST, then `missing` NOT_FOUND ones over gRPC with TF Serving's
    own client."""
    for _ in range(ok):
        response = requests.post(
            f"{plane.rest_url}/v1/models/{MODEL}:predict", json={"instances": [1.0]}, timeout=30
        )
        assert response.json() == {"predictions": [2.5]}
    with grpc.insecure_channel(plane.grpc_target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "missing"
        for _ in range(missing):
            with pytest.raises(grpc.RpcError) as caught:
                stub.Predict(request, timeout=30)
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND
