"""Traffic read from a real Prometheus server (Debian's `prometheus`) scraping a live data plane."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from controlplane import planes
from controlplane.config import Settings, TrafficSettings
from controlplane.db import Database
from controlplane.traffic import Traffic
from controlplane.traffic_prometheus import PrometheusError, PrometheusTraffic
from tests.support.processes import DataPlaneProcess, ServerProcess, free_port
from tests.support.traffic import (
    METRICS_PATH,
    MODEL,
    UNKNOWN,
    send_traffic,
    start_monitored_plane,
)

pytestmark = pytest.mark.slow
PROMETHEUS = "/usr/bin/prometheus"
WAIT_S = 90.0


@pytest.fixture(scope="module")
def plane(saved_models, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DataPlaneProcess]:
    process = start_monitored_plane(saved_models.half_plus_two, tmp_path_factory.mktemp("plane"))
    yield process
    process.stop()


@pytest.fixture(scope="module")
def prometheus(plane: DataPlaneProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Prometheus scraping `plane` every second; yields its URL."""
    assert Path(PROMETHEUS).exists(), "install it: apt-get install -y prometheus"
    root = tmp_path_factory.mktemp("prometheus")
    config = root / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: modelplane-dataplane\n"
        f"    metrics_path: {METRICS_PATH}\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{plane.rest_port}']}}]\n"
    )
    port = free_port()
    argv = [
        PROMETHEUS,
        f"--config.file={config}",
        f"--storage.tsdb.path={root / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    server = ServerProcess(argv, [port], root / "prometheus.log").start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def settings(settings: Settings, prometheus: str) -> Settings:
    traffic = TrafficSettings(prometheus_url=prometheus, interval_s=1.0, span_s=120.0)
    return dataclasses.replace(settings, traffic=traffic)


def newest(points: list[float | None]) -> float:
    return next((p for p in reversed(points) if p is not None), 0.0)


def wait_for_series(traffic: Traffic, plane: DataPlaneProcess) -> dict:
    """Send traffic until Prometheus' rates show both the model and the errors."""
    deadline = time.monotonic() + WAIT_S
    while True:
        send_traffic(plane, ok=20, missing=4)
        result = traffic.series()
        models = {m["name"]: m for m in result["models"]}
        errors = models.get(UNKNOWN, {}).get("errors_per_s", {}).get("NOT_FOUND", [])
        if MODEL in models and newest(models[MODEL]["requests_per_s"]) > 0 and newest(errors) > 0:
            return result
        assert time.monotonic() < deadline, f"Prometheus never showed the traffic: {result}"
        time.sleep(1)


def test_series_come_from_prometheus_with_planes_named_as_registered(
    db: Database, settings: Settings, plane: DataPlaneProcess
):
    planes.add_plane(db, plane.grpc_target, "test")
    traffic = Traffic(db, settings.traffic)
    traffic.start()  # a no-op: Prometheus scrapes, the control plane does not
    try:
        result = wait_for_series(traffic, plane)
        assert traffic.window.snapshot()[1] == {}
    finally:
        traffic.stop()
    assert result["step_s"] == 2.0 and len(result["timestamps"]) == 60
    half = next(m for m in result["models"] if m["name"] == MODEL)
    assert half["errors_per_s"] == {}
    assert 0 < newest(half["p50_ms"]) <= newest(half["p99_ms"]) < 30_000
    (row,) = result["planes"]
    assert row["address"] == plane.grpc_target  # the instance 127.0.0.1:REST, matched by host
    assert newest(row["requests_per_s"]) > 0
    assert newest(row["errors_per_s"]["NOT_FOUND"]) > 0
    only = traffic.series(model=MODEL)
    assert [m["name"] for m in only["models"]] == [MODEL]


def test_api_answers_502_when_prometheus_does_not(app, api):
    down = PrometheusTraffic(f"http://127.0.0.1:{free_port()}", 2.0, lambda: [])
    with pytest.raises(PrometheusError, match="ConnectionError"):
        down.series(None, 60.0, 2.0)
    app.extensions["modelplane"].traffic.prometheus = down
    response = api("get", "/traffic")
    assert response.status_code == 502
    assert "ConnectionError" in response.get_json()["error"]
