"""Traffic series read from a Prometheus server instead of the control plane's own scrapes.

Where a Prometheus already scrapes the data planes (compose.yaml ships one), the control plane
asks it (`MODELPLANE_PROMETHEUS_URL`) for the same series the window computes, with the same
PromQL a dashboard would use, and gets history that outlives a control-plane restart. The
answer has the shape of `traffic_window.series`, so the API and the UI do not know which
source drew it. Prometheus names a plane by its scrape target (`instance`, the REST port);
an instance is shown under the registered plane on the same host when there is exactly one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import requests

from .traffic_window import OK, QUANTILES

COUNT = ":tensorflow:serving:request_count"
BUCKETS = ":tensorflow:serving:request_latency_bucket"
MIN_RATE_WINDOW_S = 60  # at least four scrapes at Prometheus' usual 15 s
MAX_BYTES = 16 << 20


class PrometheusError(Exception):
    """The Prometheus server did not answer a query; the API shows it as a 502."""


class PrometheusTraffic:
    """`series()` by PromQL range queries against `url` (e.g. http://prometheus:9090)."""

    def __init__(
        self,
        url: str,
        timeout_s: float,
        planes: Callable[[], Sequence[str]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self._planes = planes
        self._clock = clock

    def series(self, model: str | None, span_s: float, step_s: float) -> dict[str, Any]:
        steps = max(1, int(span_s // step_s))
        end = (math.floor(self._clock() / step_s) + 1) * step_s
        timestamps = [end - (steps - 1 - i) * step_s for i in range(steps)]
        window = f"{int(max(2 * step_s, MIN_RATE_WINDOW_S))}s"
        selector = "" if model is None else f'{{model_name="{_quote(model)}"}}'
        query = _Query(self, timestamps, step_s)
        by_group = {
            group: query.group(group, selector, window) for group in ("model_name", "instance")
        }
        planes = _plane_names(self._planes(), by_group["instance"])
        return {
            "span_s": span_s,
            "step_s": step_s,
            "timestamps": timestamps,
            "models": [
                {"name": name, **series}
                for name, series in sorted(by_group["model_name"].items())
                if model is None or name == model
            ],
            "planes": [
                {"address": address, "error": None, "last_attempt": None, **series}
                for address, series in sorted(
                    (planes.get(k, k), v) for k, v in by_group["instance"].items()
                )
            ],
        }

    def range_query(self, promql: str, timestamps: list[float], step_s: float) -> list[Any]:
        """One `query_range` over `timestamps`; its result matrix."""
        params = {"query": promql, "start": timestamps[0], "end": timestamps[-1], "step": step_s}
        try:
            response = requests.get(
                f"{self.url}/api/v1/query_range", params=params, timeout=self.timeout_s
            )
            if len(response.content) > MAX_BYTES:
                raise PrometheusError(f"{self.url} answered more than {MAX_BYTES} bytes")
            body = response.json()
        except (requests.RequestException, ValueError) as err:
            raise PrometheusError(f"{self.url}: {type(err).__name__}") from None
        if body.get("status") != "success":
            raise PrometheusError(f"{self.url}: {body.get('error', response.status_code)}")
        return body["data"]["result"]


class _Query:
    """The four range queries of one grouping (by model, or by plane)."""

    def __init__(self, source: PrometheusTraffic, timestamps: list[float], step_s: float) -> None:
        self.source = source
        self.timestamps = timestamps
        self.step_s = step_s

    def group(self, label: str, selector: str, window: str) -> dict[str, dict[str, Any]]:
        grouped: dict[str, dict[str, Any]] = {}

        def entry(key: str) -> dict[str, Any]:
            empty: list[float | None] = [None] * len(self.timestamps)
            return grouped.setdefault(
                key,
                {
                    "requests_per_s": list(empty),
                    **{name: list(empty) for name, _ in QUANTILES},
                    "errors_per_s": {},
                },
            )

        rate = f"rate({COUNT}{selector}[{window}])"
        for row in self._run(f"sum by ({label}) ({rate})"):
            entry(row["metric"].get(label, ""))["requests_per_s"] = self._points(row)
        for row in self._run(f"sum by ({label}, status) ({rate})"):
            status = row["metric"].get("status", "")
            if status != OK:
                errors = entry(row["metric"].get(label, ""))["errors_per_s"]
                errors[status] = self._points(row)
        buckets = f"sum by ({label}, le) (rate({BUCKETS}{selector}[{window}]))"
        for name, q in QUANTILES:
            for row in self._run(f"histogram_quantile({q}, {buckets}) / 1000"):
                entry(row["metric"].get(label, ""))[name] = self._points(row)
        for series in grouped.values():
            series["errors_per_s"] = dict(sorted(series["errors_per_s"].items()))
        return grouped

    def _run(self, promql: str) -> list[Any]:
        return self.source.range_query(promql, self.timestamps, self.step_s)

    def _points(self, row: dict[str, Any]) -> list[float | None]:
        points: list[float | None] = [None] * len(self.timestamps)
        for at, value in row.get("values", []):
            index = round((float(at) - self.timestamps[0]) / self.step_s)
            number = float(value)
            if 0 <= index < len(points) and math.isfinite(number):
                points[index] = number
        return points


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _plane_names(addresses: Sequence[str], instances: dict[str, Any]) -> dict[str, str]:
    """instance -> registered plane address, matched by host when exactly one plane has it."""
    by_host: dict[str, list[str]] = {}
    for address in addresses:
        by_host.setdefault(address.rsplit(":", 1)[0], []).append(address)
    names = {}
    for instance in instances:
        matches = by_host.get(instance.rsplit(":", 1)[0], [])
        if len(matches) == 1:
            names[instance] = matches[0]
    return names
