"""Traffic charts in a real headless Chromium: a real control plane scraping a real data plane
that a client keeps sending predictions (and a few unknown-model requests) to."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from playwright.sync_api import Page, expect

from tests.support.processes import REPO_ROOT, DataPlaneProcess, start_dataplane
from tests.support.traffic import UNKNOWN
from tests.ui.conftest import ADMIN, PASSWORD, UIControlPlane
from tests.ui.test_ui_browser import shot, sign_in

pytestmark = pytest.mark.browser
MODEL = "traffic_demo"
MONITORING = REPO_ROOT / "deploy" / "dataplane" / "monitoring.config"
METRICS_PATH = "/monitoring/prometheus/metrics"
CHART_TIMEOUT_MS = 60_000
POSITIVE = re.compile(r"^(?!0(\.0*)?$)\d")  # a number above zero
A_LINE = re.compile(r"M[\d.]+ [\d.]+ L")  # a path with at least one segment


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DataPlaneProcess]:
    process = start_dataplane(
        f"--monitoring_config_file={MONITORING}",
        log_dir=tmp_path_factory.mktemp("traffic-ui-plane"),
    )
    yield process
    process.stop()


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, plane: DataPlaneProcess, saved_models
) -> Iterator[UIControlPlane]:
    """The UI's control plane, managing `plane` and scraping it every second."""
    logs = tmp_path_factory.mktemp("traffic-ui-controlplane")
    control = UIControlPlane(f"sqlite:///{logs / 'controlplane.db'}", logs)
    control.env.update(
        MODELPLANE_DATAPLANES=plane.grpc_target,
        MODELPLANE_METRICS_URLS=f"{plane.grpc_target}={plane.rest_url}{METRICS_PATH}",
        MODELPLANE_TRAFFIC_INTERVAL_S="1",
        MODELPLANE_TRAFFIC_SPAN_S="120",
    )
    control.prepare()
    control.create_admin(ADMIN, PASSWORD)
    control.start()
    model = {"name": MODEL, "base_path": saved_models.half_plus_two, "model_platform": "tensorflow"}
    created = requests.post(
        f"{control.url}/api/v1/models",
        json=model,
        headers={"Authorization": f"Bearer {control.token}"},
        timeout=30,
    )
    assert created.status_code == 201, created.text
    yield control
    control.stop()


@pytest.fixture(scope="module")
def client_traffic(server: UIControlPlane, plane: DataPlaneProcess) -> Iterator[None]:
    """A client predicting in a loop (and asking for an unknown model every tenth call) until
    the module ends; yields once the model answers."""
    url = f"{plane.rest_url}/v1/models/{MODEL}:predict"
    deadline = time.monotonic() + 120
    while requests.post(url, json={"instances": [1.0]}, timeout=30).status_code != 200:
        assert time.monotonic() < deadline, "the control plane never loaded the model"
        time.sleep(0.5)
    stop = threading.Event()
    sent = [0]

    def send() -> None:
        while not stop.is_set():
            target = url if sent[0] % 10 else f"{plane.rest_url}/v1/models/unknown:predict"
            requests.post(target, json={"instances": [1.0]}, timeout=30)
            sent[0] += 1
            time.sleep(0.02)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join(timeout=30)


def latest(page: Page, selector: str) -> float:
    """The newest point a chart drew, once it has one above zero."""
    element = page.locator(selector)
    expect(element).to_have_attribute("data-latest", POSITIVE, timeout=CHART_TIMEOUT_MS)
    return float(element.get_attribute("data-latest"))


def test_traffic_page_draws_live_charts_per_model_and_plane(
    page: Page, plane: DataPlaneProcess, client_traffic: None, screenshots: Path
):
    sign_in(page, "/traffic")
    expect(page.get_by_role("heading", name="Traffic", exact=True)).to_be_visible()
    card = f'[data-group="models"] [data-key="{MODEL}"]'
    requests_per_s = latest(page, f'{card} [data-chart="requests"]')
    assert 1 < requests_per_s < 1000
    p50 = latest(page, f'{card} [data-chart="latency"]')
    assert 0 < p50 < 10_000
    path = page.locator(f'{card} [data-chart="requests"] svg path.series')
    expect(path).to_have_attribute("d", A_LINE, timeout=CHART_TIMEOUT_MS)
    unknown = f'[data-group="models"] [data-key="{UNKNOWN}"] [data-chart="errors"]'
    assert latest(page, unknown) > 0
    expect(page.locator(unknown).locator(".legend")).to_contain_text("NOT_FOUND")
    plane_card = f'[data-group="planes"] [data-key="{plane.grpc_target}"]'
    assert latest(page, f'{plane_card} [data-chart="requests"]') > 1
    expect(page.locator(f"{plane_card} .chart-error")).to_be_empty()
    shot(page, screenshots, "traffic")


def test_dashboard_sparkline_and_model_filter(page: Page, client_traffic: None, screenshots: Path):
    sign_in(page, "/")
    sparkline = f'svg[data-sparkline="{MODEL}"]'
    assert latest(page, sparkline) > 1
    shot(page, screenshots, "dashboard-sparklines")
    page.locator(sparkline).click()
    expect(page).to_have_url(re.compile(rf"/traffic\?model={MODEL}$"))
    expect(page.locator('[data-group="models"] [data-key]')).to_have_count(1)
    assert latest(page, f'[data-key="{MODEL}"] [data-chart="requests"]') > 1
