"""Operations on a live data plane: metrics, health, SIGTERM drain, batching over gRPC, warmup.

half_plus_two computes ``y = 0.5x + 2``, so every response says whether its client got its
own row back.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
import requests
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from dataplane import tensors
from tests.support.processes import DataPlaneProcess

METRICS_PATH = "/monitoring/prometheus/metrics"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
FAST = ("--file_system_poll_wait_seconds=1", "--max_num_load_retries=0")

StartFn = Callable[..., DataPlaneProcess]


def predict_request(model: str, x: np.ndarray) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    tensors.fill_tensor_proto(request.inputs["x"], x, as_tensor_content=True)
    return request


def predict(target: str, model: str, x: np.ndarray) -> np.ndarray:
    with grpc.insecure_channel(target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        response = stub.Predict(predict_request(model, x), timeout=30)
    return tensors.to_ndarray(response.outputs["y"])


def health(target: str, service: str = "") -> int:
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status


def scrape(plane: DataPlaneProcess) -> dict[tuple[str, frozenset], float]:
    """The metrics page parsed; counters keyed by their exported name (no `_total`)."""
    response = requests.get(plane.rest_url + METRICS_PATH, timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    parsed = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            name = family.name if family.type == "counter" else sample.name
            parsed[(name, frozenset(sample.labels.items()))] = sample.value
    return parsed


def value(got: dict, name: str, **labels: str) -> float:
    return got[(name, frozenset(labels.items()))]


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.fixture
def monitoring(tmp_path: Path) -> str:
    path = tmp_path / "monitoring.config"
    path.write_text(f'prometheus_config {{ enable: true, path: "{METRICS_PATH}" }}')
    return f"--monitoring_config_file={path}"


def batching_flags(tmp_path: Path, text: str) -> tuple[str, str]:
    path = tmp_path / "batching.config"
    path.write_text(text)
    return "--enable_batching=true", f"--batching_parameters_file={path}"


@pytest.fixture
def hp_warmup(saved_models, tmp_path: Path) -> Path:
    """A private copy of half_plus_two (version 1, with a warmup file)."""
    base = tmp_path / "half_plus_two"
    shutil.copytree(saved_models.half_plus_two_warmup, base)
    return base


# --------------------------------------------------------------------------- metrics


def test_metrics_endpoint_after_requests(
    start_dataplane: StartFn, hp_warmup: Path, monitoring: str, tmp_path: Path
) -> None:
    plane = start_dataplane(
        *FAST,
        "--model_name=half_plus_two",
        f"--model_base_path={hp_warmup}",
        monitoring,
        *batching_flags(tmp_path, "max_batch_size { value: 8 }"),
    )
    for i in range(3):
        np.testing.assert_allclose(
            predict(plane.grpc_target, "half_plus_two", np.array([[2.0 * i]], np.float32)),
            [[i + 2.0]],
        )
    with pytest.raises(grpc.RpcError):
        predict(plane.grpc_target, "absent", np.ones((1, 1), np.float32))
    rest = requests.post(
        f"{plane.rest_url}/v1/models/half_plus_two:predict", json={"instances": [[4.0]]}
    )
    assert rest.json() == {"predictions": [[4.0]]}

    got = scrape(plane)
    assert (
        value(got, ":tensorflow:serving:request_count", model_name="half_plus_two", status="OK")
        == 4
    )
    assert (
        value(
            got, ":tensorflow:serving:request_count", model_name="__unknown__", status="NOT_FOUND"
        )
        == 1  # a name no config lists gets no label value of its own (docs/security.md)
    )
    count = ":modelplane:request_count"
    labels = {"model_name": "half_plus_two", "model_version": "1", "API": "Predict", "status": "OK"}
    assert value(got, count, **labels) == 4
    assert value(got, ":modelplane:request_latency_seconds_count", **labels) == 4
    latency = ":tensorflow:serving:request_latency_count"
    by_protocol = {"model_name": "half_plus_two", "API": "Predict"}
    assert value(got, latency, **by_protocol, entrypoint="GRPC") == 3
    assert value(got, latency, **by_protocol, entrypoint="REST") == 1
    assert value(got, ":modelplane:model_load_count", model_name="half_plus_two", status="OK") == 1
    warm = {"model_path": str(hp_warmup / "1"), "status": "OK"}
    assert value(got, ":tensorflow:serving:model_warmup_latency_count", **warm) == 1
    pool = {"model_name": "half_plus_two", "thread_pool_name": "batch_threads"}
    # 3 warmup records (3+1+2 rows) and 4 one-row requests, one at a time: 7 batches
    assert value(got, ":modelplane:batching:batch_size_count", **pool) == 7
    assert value(got, ":modelplane:batching:batch_size_sum", **pool) == 10
    assert not any(name.endswith("_created") for name, _ in got)


# --------------------------------------------------------------------------- health


def test_health_follows_availability_and_unix_socket(
    start_dataplane: StartFn, saved_models, tmp_path: Path
) -> None:
    base = tmp_path / "late"
    base.mkdir()
    socket_path = tmp_path / "grpc.sock"
    plane = start_dataplane(
        *FAST, "--model_name=late", f"--model_base_path={base}", f"--grpc_socket_path={socket_path}"
    )
    assert health(plane.grpc_target) == NOT_SERVING
    wait_for(lambda: _known(plane, "late"), "model 'late' to be known")
    assert health(plane.grpc_target, "late") == NOT_SERVING

    shutil.copytree(Path(saved_models.half_plus_two) / "123", base / ".incoming")
    os.rename(base / ".incoming", base / "123")
    wait_for(lambda: health(plane.grpc_target, "late") == SERVING, "version 123 to serve")
    assert health(plane.grpc_target) == SERVING
    assert health(f"unix:{socket_path}", "late") == SERVING
    np.testing.assert_allclose(
        predict(f"unix:{socket_path}", "late", np.array([[6.0]], np.float32)), [[5.0]]
    )
    with pytest.raises(grpc.RpcError) as caught:
        health(plane.grpc_target, "never_configured")
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND


def _known(plane: DataPlaneProcess, name: str) -> bool:
    try:
        health(plane.grpc_target, name)
    except grpc.RpcError:
        return False
    return True


# --------------------------------------------------------------------------- SIGTERM drain


@pytest.mark.slow
def test_sigterm_drains_in_flight_requests_and_exits_zero(
    start_dataplane: StartFn, saved_models, tmp_path: Path
) -> None:
    """Requests parked in a 2-second batch window when SIGTERM arrives must all complete."""
    plane = start_dataplane(
        *FAST,
        "--model_name=half_plus_two",
        f"--model_base_path={saved_models.half_plus_two}",
        "--grace_period_seconds=20",
        *batching_flags(
            tmp_path, "max_batch_size { value: 64 } batch_timeout_micros { value: 2000000 }"
        ),
    )
    channel = grpc.insecure_channel(plane.grpc_target)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(), timeout=60)
    assert next(watch).status == SERVING
    session = requests.Session()

    def grpc_call(i: int) -> float:
        x = np.array([[float(i)]], np.float32)
        return float(
            tensors.to_ndarray(
                stub.Predict(predict_request("half_plus_two", x), timeout=60).outputs["y"]
            )[0, 0]
        )

    def rest_call(i: int) -> float:
        url = f"{plane.rest_url}/v1/models/half_plus_two:predict"
        return session.post(url, json={"instances": [[float(i)]]}, timeout=60).json()[
            "predictions"
        ][0][0]

    with ThreadPoolExecutor(12) as pool:
        grpc_results = [pool.submit(grpc_call, i) for i in range(8)]
        rest_results = [pool.submit(rest_call, i) for i in range(8, 12)]
        time.sleep(0.7)  # all 12 are now accepted and waiting in the batch window
        assert not any(f.done() for f in grpc_results + rest_results)
        plane.proc.terminate()
        assert next(watch).status == NOT_SERVING
        assert [f.result(30) for f in grpc_results] == [0.5 * i + 2 for i in range(8)]
        assert [f.result(30) for f in rest_results] == [0.5 * i + 2 for i in range(8, 12)]
    assert plane.proc.wait(30) == 0
    log = plane.log_path.read_text()
    assert "Traceback" not in log
    channel.close()


# --------------------------------------------------------------------------- batching


def test_concurrent_grpc_and_rest_clients_are_batched_and_get_their_own_rows(
    start_dataplane: StartFn, saved_models, monitoring: str, tmp_path: Path
) -> None:
    plane = start_dataplane(
        *FAST,
        "--model_name=half_plus_two",
        f"--model_base_path={saved_models.half_plus_two}",
        monitoring,
        *batching_flags(
            tmp_path,
            "max_batch_size { value: 32 } batch_timeout_micros { value: 200000 } "
            "num_batch_threads { value: 1 } allowed_batch_sizes: 16 allowed_batch_sizes: 32",
        ),
    )
    clients = 24
    barrier = threading.Barrier(clients)
    channel = grpc.insecure_channel(plane.grpc_target)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

    def call(i: int) -> tuple[np.ndarray, np.ndarray]:
        """Every third client speaks REST: its request waits in the same batch queue."""
        rows = np.arange(i % 3 + 1, dtype=np.float32).reshape(-1, 1) + 100 * i
        barrier.wait()
        if i % 3 == 0:
            url = f"{plane.rest_url}/v1/models/half_plus_two:predict"
            answer = requests.post(url, json={"instances": rows.tolist()}, timeout=30)
            return rows, np.array(answer.json()["predictions"], np.float32)
        response = stub.Predict(predict_request("half_plus_two", rows), timeout=30)
        return rows, tensors.to_ndarray(response.outputs["y"])

    with ThreadPoolExecutor(clients) as pool:
        for rows, y in pool.map(call, range(clients)):
            np.testing.assert_allclose(y, 0.5 * rows + 2)
    channel.close()
    got = scrape(plane)
    pool_labels = {"model_name": "half_plus_two", "thread_pool_name": "batch_threads"}
    batches = value(got, ":modelplane:batching:batch_size_count", **pool_labels)
    total_rows = sum(i % 3 + 1 for i in range(clients))  # 48
    assert batches <= 4  # 48 rows in batches of at most 32, not 24 calls
    padded = value(got, ":modelplane:batching:batch_size_sum", **pool_labels)
    padding = value(got, ":modelplane:batching:padding_size_sum", **pool_labels)
    assert padded - padding == total_rows
    assert padded % 16 == 0  # every batch padded to an allowed size
    # gRPC calls taken together may be coalesced into one plan; each still counts as a request
    ok = value(got, ":tensorflow:serving:request_count", model_name="half_plus_two", status="OK")
    assert ok == clients


def test_with_timeout_0_concurrent_clients_each_get_their_rows(
    start_dataplane: StartFn, saved_models, monitoring: str, tmp_path: Path
) -> None:
    """Timeout 0 is where gRPC calls taken together are coalesced and the dispatcher runs the
    batch itself; REST calls queue for the batch threads. Nobody may get another's rows."""
    plane = start_dataplane(
        *FAST,
        "--model_name=half_plus_two",
        f"--model_base_path={saved_models.half_plus_two}",
        monitoring,
        *batching_flags(tmp_path, "max_batch_size { value: 8 } num_batch_threads { value: 2 }"),
    )
    channel = grpc.insecure_channel(plane.grpc_target)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    url = f"{plane.rest_url}/v1/models/half_plus_two:predict"

    def client(i: int) -> None:
        for round_ in range(5):
            rows = np.array([[i * 100.0 + round_], [i * 100.0 + round_ + 0.5]], np.float32)
            if i % 4 == 0:
                answer = requests.post(url, json={"instances": rows.tolist()}, timeout=30)
                y = np.array(answer.json()["predictions"], np.float32)
            else:
                y = tensors.to_ndarray(
                    stub.Predict(predict_request("half_plus_two", rows)).outputs["y"]
                )
            np.testing.assert_allclose(y, 0.5 * rows + 2)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(client, range(16)))
    channel.close()
    got = scrape(plane)
    ok = value(got, ":tensorflow:serving:request_count", model_name="half_plus_two", status="OK")
    assert ok == 16 * 5
    pool_labels = {"model_name": "half_plus_two", "thread_pool_name": "batch_threads"}
    padded = value(got, ":modelplane:batching:batch_size_sum", **pool_labels)
    assert padded == 16 * 5 * 2  # every row ran in some batch, once, without padding


def test_invalid_batching_parameters_stop_the_start(
    start_dataplane: StartFn, saved_models, tmp_path: Path
) -> None:
    with pytest.raises(RuntimeError) as caught:
        start_dataplane(
            "--model_name=half_plus_two",
            f"--model_base_path={saved_models.half_plus_two}",
            *batching_flags(tmp_path, "max_batch_size { value: 8 } allowed_batch_sizes: 4"),
        )
    assert "exited with 255" in str(caught.value)
    assert "Last entry in allowed_batch_sizes must match max_batch_size" in str(caught.value)


# --------------------------------------------------------------------------- warmup


def test_malformed_warmup_file_fails_the_load_clearly(
    start_dataplane: StartFn, hp_warmup: Path
) -> None:
    (hp_warmup / "1" / "assets.extra" / "tf_serving_warmup_requests").write_bytes(b"not TFRecord")
    with pytest.raises(RuntimeError) as caught:
        start_dataplane(*FAST, "--model_name=half_plus_two", f"--model_base_path={hp_warmup}")
    message = str(caught.value)
    assert f"Warmup of {hp_warmup / '1'} failed" in message
    assert "Please verify your warmup data is in TFRecord format" in message
