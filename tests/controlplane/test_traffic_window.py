"""The traffic window: its bounds, and rates and quantiles computed as Prometheus would."""

from __future__ import annotations

import math
from array import array

import pytest

from controlplane.traffic_window import Scrape, Window, quantile, series

INF = math.inf
BOUNDS = (1000.0, 10000.0, INF)


def scrape(at: float, ok: float, not_found: float = 0.0, fast: float = 0.0) -> Scrape:
    """Model "m": `ok` + `not_found` requests so far, `fast` of them under 1 ms, the rest
    under 10 ms."""
    total = ok + not_found
    latency = {"m": array("d", (fast, total, total))}
    return Scrape(at, {("m", "OK"): ok, ("m", "NOT_FOUND"): not_found}, BOUNDS, latency)


def test_window_keeps_one_span_of_scrapes_per_plane():
    window = Window(span_s=60, interval_s=10)
    assert window.capacity == 7
    for i in range(50):
        window.add("a:1", scrape(i * 10.0, i))
    kept = window.snapshot()[1]["a:1"].scrapes
    assert len(kept) == 7
    assert [s.at for s in kept] == [430.0, 440.0, 450.0, 460.0, 470.0, 480.0, 490.0]


def test_window_forgets_unregistered_planes_and_keeps_history_on_failure():
    window = Window(span_s=60, interval_s=10)
    window.add("a:1", scrape(0, 1))
    window.add("b:1", scrape(0, 1))
    window.fail("a:1", "connection refused", at=10)
    window.retain(["a:1"])
    version, snapshot = window.snapshot()
    assert version == 4  # two adds, one failure, one plane forgotten
    assert list(snapshot) == ["a:1"]
    assert snapshot["a:1"].error == "connection refused"
    assert snapshot["a:1"].last_attempt == 10
    assert len(snapshot["a:1"].scrapes) == 1


def test_quantile_interpolates_inside_the_bucket_like_histogram_quantile():
    buckets = {1000.0: 50.0, 10000.0: 50.0, INF: 0.0}
    assert quantile(0.5, buckets) == pytest.approx(1000.0)
    assert quantile(0.99, buckets) == pytest.approx(1000 + 9000 * 49 / 50)
    assert quantile(0.5, {1000.0: 0.0, INF: 4.0}) == 1000.0  # +Inf: the largest finite bound
    assert quantile(0.5, {1000.0: 0.0}) is None


def test_series_rates_quantiles_and_errors_per_model_and_plane():
    histories = Window(span_s=60, interval_s=10)
    # plane a: 100 OK + 10 NOT_FOUND in 10 s, half of the OKs fast; plane b: 50 OK in 10 s
    histories.add("a:1", scrape(100, ok=0))
    histories.add("a:1", scrape(110, ok=100, not_found=10, fast=50))
    histories.add("b:1", scrape(101, ok=0))
    histories.add("b:1", scrape(111, ok=50))
    result = series(histories.snapshot()[1], now=115, span_s=60, step_s=20)
    assert result["timestamps"] == [80, 100, 120]
    (model,) = result["models"]
    assert model["name"] == "m"
    assert model["requests_per_s"] == [None, None, pytest.approx(11 + 5)]
    assert model["errors_per_s"] == {"NOT_FOUND": [None, None, pytest.approx(1.0)]}
    # 50 fast of 160: p50 is in the (1, 10] ms bucket
    assert model["p50_ms"][2] == pytest.approx(1 + 9 * (80 - 50) / 110)
    plane_a, plane_b = result["planes"]
    assert plane_a["address"] == "a:1" and plane_a["requests_per_s"][2] == pytest.approx(11)
    assert plane_b["requests_per_s"][2] == pytest.approx(5)
    assert plane_b["errors_per_s"] == {"NOT_FOUND": [None, None, 0.0]}  # seen, none new


def test_series_treats_a_counter_that_went_down_as_a_restart():
    window = Window(span_s=60, interval_s=10)
    window.add("a:1", scrape(100, ok=500))
    window.add("a:1", scrape(110, ok=20))  # the plane restarted: 20 new requests
    (model,) = series(window.snapshot()[1], now=110, span_s=20, step_s=20)["models"]
    assert model["requests_per_s"][-1] == pytest.approx(2.0)
    assert model["p50_ms"][-1] == pytest.approx(1 + 9 * 0.5)


def test_series_filters_one_model():
    window = Window(span_s=60, interval_s=10)
    window.add("a:1", scrape(100, ok=0))
    window.add("a:1", scrape(110, ok=10))
    result = series(window.snapshot()[1], 110, 20, 20, model="other")
    assert result["models"] == []
    assert result["planes"][0]["requests_per_s"] == [0.0]  # scraped, none for that model
    (model,) = series(window.snapshot()[1], 110, 20, 20, model="m")["models"]
    assert model["requests_per_s"] == [pytest.approx(1.0)]
