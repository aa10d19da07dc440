"""Clients cannot inflate the metrics page: request model names that no config lists share
one label value (`__unknown__`), on a live data plane over REST."""

from __future__ import annotations

import random
import string
from collections.abc import Callable
from pathlib import Path

import requests

from dataplane.metrics import UNKNOWN_MODEL
from tests.e2e.test_serving_ops import METRICS_PATH, scrape
from tests.support.processes import DataPlaneProcess

REQUESTS = 2000


def random_name(rng: random.Random) -> str:
    return "".join(rng.choices(string.ascii_letters + string.digits, k=60))


def test_thousands_of_unknown_model_names_leave_the_page_size_unchanged(
    start_dataplane: Callable[..., DataPlaneProcess], saved_models: object, tmp_path: Path
) -> None:
    monitoring = tmp_path / "monitoring.config"
    monitoring.write_text(f'prometheus_config {{ enable: true, path: "{METRICS_PATH}" }}')
    plane = start_dataplane(
        f"--model_base_path={saved_models.half_plus_two}",  # type: ignore[attr-defined]
        "--model_name=hp2",
        f"--monitoring_config_file={monitoring}",
    )
    rng = random.Random(15)
    body = {"instances": [1.0]}
    with requests.Session() as http:

        def predict(name: str) -> requests.Response:
            return http.post(f"{plane.rest_url}/v1/models/{name}:predict", json=body, timeout=30)

        assert predict("hp2").json() == {"predictions": [2.5]}
        assert predict(random_name(rng)).status_code == 404  # creates the shared series once
        before = len(http.get(plane.rest_url + METRICS_PATH, timeout=30).content)
        names = [random_name(rng) for _ in range(REQUESTS)]
        for name in names:
            assert predict(name).status_code == 404
        page = http.get(plane.rest_url + METRICS_PATH, timeout=30).text
    growth = len(page.encode()) - before
    assert growth < 5 * 1024, f"the page grew by {growth} bytes"
    assert not any(name in page for name in names[:50])
    counts = scrape(plane)
    unknown = frozenset({("model_name", UNKNOWN_MODEL), ("status", "NOT_FOUND")})
    served = frozenset({("model_name", "hp2"), ("status", "OK")})
    assert counts[(":tensorflow:serving:request_count", unknown)] == REQUESTS + 1
    assert counts[(":tensorflow:serving:request_count", served)] == 1
