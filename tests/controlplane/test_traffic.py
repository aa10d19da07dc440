"""The traffic scraper against a live data plane serving real requests, and its API endpoint."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator

import pytest

from controlplane import planes
from controlplane.config import Settings, TrafficSettings
from controlplane.db import Database
from controlplane.traffic import ScrapeError, Traffic, fetch, parse
from controlplane.traffic import metrics_url as plane_metrics_url
from tests.support.processes import DataPlaneProcess
from tests.support.traffic import UNKNOWN, metrics_url, send_traffic, start_monitored_plane

OK_REQUESTS = 40
MISSING_REQUESTS = 6


@pytest.fixture(scope="module")
def plane(saved_models, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DataPlaneProcess]:
    process = start_monitored_plane(
        saved_models.half_plus_two, tmp_path_factory.mktemp("traffic-plane")
    )
    yield process
    process.stop()


@pytest.fixture
def settings(settings: Settings, plane: DataPlaneProcess) -> Settings:
    """The suite's settings, scraping `plane` at its REST port every second."""
    urls = ((plane.grpc_target, metrics_url(plane)),)
    traffic = TrafficSettings(metrics_port=0, metrics_urls=urls, interval_s=1.0, span_s=120.0)
    return dataclasses.replace(settings, traffic=traffic)


def last(points: list[float | None]) -> float | None:
    """The newest point with data (a step may end between the scrape and the query)."""
    return next((p for p in reversed(points) if p is not None), None)


def scrape_around_traffic(traffic: Traffic, plane: DataPlaneProcess) -> tuple[float, float]:
    """Scrape, send traffic, scrape: returns the two scrape times."""
    traffic.scrape_once()
    send_traffic(plane, OK_REQUESTS, MISSING_REQUESTS)
    time.sleep(0.5)
    traffic.scrape_once()
    scrapes = traffic.window.snapshot()[1][plane.grpc_target].scrapes
    return scrapes[-2].at, scrapes[-1].at


def test_scraper_turns_live_traffic_into_rates_latency_and_errors(
    db: Database, settings: Settings, plane: DataPlaneProcess
):
    planes.add_plane(db, plane.grpc_target, "test")
    traffic = Traffic(db, settings.traffic)
    try:
        before, after = scrape_around_traffic(traffic, plane)
        result = traffic.series()
    finally:
        traffic.stop()
    seconds = after - before
    models = {m["name"]: m for m in result["models"]}
    half, missing = models["half"], models[UNKNOWN]
    assert last(half["requests_per_s"]) == pytest.approx(OK_REQUESTS / seconds)
    assert half["errors_per_s"] == {}
    assert 0 < last(half["p50_ms"]) <= last(half["p99_ms"]) < 30_000
    assert last(missing["errors_per_s"]["NOT_FOUND"]) == pytest.approx(MISSING_REQUESTS / seconds)
    (row,) = result["planes"]
    assert row["address"] == plane.grpc_target and row["error"] is None
    total = (OK_REQUESTS + MISSING_REQUESTS) / seconds
    assert last(row["requests_per_s"]) == pytest.approx(total)


def test_an_unreachable_plane_shows_its_error_and_keeps_its_history(db: Database):
    planes.add_plane(db, "127.0.0.1:9", "test")
    traffic = Traffic(db, TrafficSettings(metrics_port=9, interval_s=1.0, span_s=60.0))
    try:
        traffic.scrape_once()
        (row,) = traffic.series()["planes"]
    finally:
        traffic.stop()
    assert row["address"] == "127.0.0.1:9"
    assert "http://127.0.0.1:9/monitoring/prometheus/metrics" in row["error"]
    assert all(point is None for point in row["requests_per_s"])


def test_metrics_url_and_the_size_bound(plane: DataPlaneProcess):
    settings = TrafficSettings(metrics_urls=(("a:1", "http://x/m"),))
    assert plane_metrics_url("a:1", settings) == "http://x/m"
    assert plane_metrics_url("10.0.0.7:8500", settings) == (
        "http://10.0.0.7:8501/monitoring/prometheus/metrics"
    )
    assert plane_metrics_url("10.0.0.7:8500", TrafficSettings(metrics_port=0)) is None
    with pytest.raises(ScrapeError, match="more than 100 bytes"):
        fetch(metrics_url(plane), 10, 100)


def test_parse_keeps_at_most_max_models():
    text = "".join(
        f':tensorflow:serving:request_count{{model_name="m{i}",status="OK"}} {i}\n'
        for i in range(5)
    )
    typed = "# TYPE :tensorflow:serving:request_count counter\n"
    scrape = parse(typed + text, at=1.0, max_models=3)
    assert scrape.requests == {("m0", "OK"): 0.0, ("m1", "OK"): 1.0, ("m2", "OK"): 2.0}
    assert scrape.dropped_models == 2
    with pytest.raises(ScrapeError, match="unparsable"):
        parse(':tensorflow:serving:request_count{model_name="a" 1', at=1.0, max_models=3)


def test_traffic_endpoint_serves_the_window_to_a_read_token(app, db, plane, api):
    from controlplane.auth import create_token

    planes.add_plane(db, plane.grpc_target, "test")
    traffic = app.extensions["modelplane"].traffic
    scrape_around_traffic(traffic, plane)
    response = api("get", "/traffic?model=half&span_s=60")
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["span_s"] == 60 and body["step_s"] == 2
    assert len(body["timestamps"]) == 30
    (half,) = body["models"]
    assert half["name"] == "half" and last(half["requests_per_s"]) > 0
    reader = create_token(db, "reader", "read")
    client = app.test_client()
    read = client.get("/api/v1/traffic", headers={"Authorization": f"Bearer {reader}"})
    assert read.status_code == 200
    assert {m["name"] for m in read.get_json()["models"]} == {"half", UNKNOWN}
    assert client.get("/api/v1/traffic").status_code == 401
    bad = api("get", "/traffic?span_s=-5")
    assert bad.status_code == 400 and bad.get_json()["field"] == "span_s"


def test_series_are_redrawn_only_when_a_scrape_or_a_step_changed_them(db: Database):
    now = [1000.0]
    traffic = Traffic(db, TrafficSettings(interval_s=10.0, span_s=600.0), clock=lambda: now[0])
    first = traffic.series()
    assert traffic.series() is first
    traffic.window.fail("a:1", "refused", at=now[0])
    second = traffic.series()
    assert second is not first and second["planes"][0]["error"] == "refused"
    now[0] += 20.0  # the next step: the timestamps move
    assert traffic.series()["timestamps"][-1] == second["timestamps"][-1] + 20.0
    traffic.stop()
