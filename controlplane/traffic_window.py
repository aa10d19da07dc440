"""The last hour of every data plane's request counters, and the rates and quantiles drawn from it.

A scrape is a snapshot of cumulative counters (TF Serving's `:tensorflow:serving:request_count`
by model and status, and its `:tensorflow:serving:request_latency` histogram by model), so a
chart point is the difference of two consecutive scrapes of one plane divided by the time
between them, exactly as Prometheus' `rate()` and `histogram_quantile()` would compute it.
Memory is bounded three ways: scrapes per plane (the span over the scrape interval), models per
scrape (the scraper drops the rest and says so), and planes (only registered ones are kept).
"""

from __future__ import annotations

import itertools
import math
import threading
from array import array
from collections import defaultdict, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

OK = "OK"
QUANTILES = (("p50_ms", 0.5), ("p99_ms", 0.99))


@dataclass(frozen=True)
class Scrape:
    """One plane's counters at one instant (`at`, Unix seconds).

    Latency is, per model, the cumulative count at each of `bounds` (upper bounds in
    microseconds, shared by every model) summed over API and entrypoint, packed as doubles:
    an hour of 33-bucket histograms is then about 70 kB per model and plane, not ten times it.
    """

    at: float
    requests: dict[tuple[str, str], float]  # (model, status) -> requests so far
    bounds: tuple[float, ...] = ()
    latency: dict[str, array[float]] = field(default_factory=dict)
    dropped_models: int = 0

    def buckets(self, model: str) -> dict[float, float]:
        """bound -> cumulative count of `model` (empty when it has no histogram)."""
        counts = self.latency.get(model)
        return {} if counts is None else dict(zip(self.bounds, counts, strict=True))


@dataclass
class PlaneHistory:
    """The scrapes of one plane, oldest first, and how its last scrape went."""

    scrapes: deque[Scrape]
    error: str | None = None
    last_attempt: float | None = None


class Window:
    """Bounded per-plane history shared by the scraper thread and the request threads."""

    def __init__(self, span_s: float, interval_s: float) -> None:
        self.span_s = span_s
        self.interval_s = interval_s
        # one more than the span holds, so the oldest interval is still complete
        self.capacity = math.ceil(span_s / interval_s) + 1
        self._planes: dict[str, PlaneHistory] = {}
        self._lock = threading.Lock()
        self.version = 0  # bumped on every change, so readers can cache what they drew

    def _history(self, plane: str) -> PlaneHistory:
        return self._planes.setdefault(plane, PlaneHistory(deque(maxlen=self.capacity)))

    def add(self, plane: str, scrape: Scrape) -> None:
        with self._lock:
            history = self._history(plane)
            history.scrapes.append(scrape)
            history.error, history.last_attempt = None, scrape.at
            self.version += 1

    def fail(self, plane: str, error: str, at: float) -> None:
        """A failed scrape keeps the history: the chart shows a gap, not a lie of zero."""
        with self._lock:
            history = self._history(plane)
            history.error, history.last_attempt = error, at
            self.version += 1

    def retain(self, planes: Iterable[str]) -> None:
        """Forget planes that are no longer registered."""
        keep = set(planes)
        with self._lock:
            for plane in [p for p in self._planes if p not in keep]:
                del self._planes[plane]
                self.version += 1

    def snapshot(self) -> tuple[int, dict[str, PlaneHistory]]:
        """The version and a copy of every plane's history, taken together."""
        with self._lock:
            return self.version, {
                plane: PlaneHistory(deque(h.scrapes), h.error, h.last_attempt)
                for plane, h in self._planes.items()
            }


# -- from scrapes to chart series -------------------------------------------------------------


@dataclass
class Tally:
    """What one group (a model, or a plane) did in one chart step on one plane."""

    seconds: float = 0.0
    statuses: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    buckets: dict[float, float] = field(default_factory=lambda: defaultdict(float))

    def add(self, statuses: dict[str, float], buckets: dict[float, float]) -> None:
        for status, count in statuses.items():
            self.statuses[status] += count
        for bound, count in buckets.items():
            self.buckets[bound] += count


def _increase(before: float, after: float) -> float:
    """A counter that went down was reset by a restart: everything it now holds is new."""
    return after if after < before else after - before


def _model_deltas(
    prev: Scrape, cur: Scrape, model: str | None
) -> Iterator[tuple[str, dict[str, float], dict[float, float]]]:
    """Per model: requests by status and per-bucket (non-cumulative) latency counts."""
    models = {m for m, _ in cur.requests} | set(cur.latency)
    for name in sorted(models if model is None else models & {model}):
        statuses = {
            status: _increase(prev.requests.get((name, status), 0.0), count)
            for (m, status), count in cur.requests.items()
            if m == name
        }
        yield name, statuses, _bucket_deltas(prev.buckets(name), cur.buckets(name))


def _bucket_deltas(before: dict[float, float], after: dict[float, float]) -> dict[float, float]:
    """Per-bucket increases; a histogram whose total went down was reset by a restart."""
    reset = bool(after) and bool(before) and max(after.values()) < max(before.values())
    deltas: dict[float, float] = {}
    previous = 0.0
    for bound, cumulative in sorted(after.items()):
        increase = cumulative if reset else cumulative - before.get(bound, 0.0)
        deltas[bound] = max(increase - previous, 0.0)
        previous = increase
    return deltas


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """`histogram_quantile` over per-bucket counts: linear inside the bucket; the +Inf bucket
    answers with the largest finite bound. None when nothing was observed."""
    total = sum(buckets.values())
    if total <= 0:
        return None
    rank, seen, lower = q * total, 0.0, 0.0
    bounds = sorted(buckets)
    for bound in bounds:
        count = buckets[bound]
        if seen + count >= rank and count > 0:
            if math.isinf(bound):
                return lower
            return lower + (bound - lower) * (rank - seen) / count
        seen += count
        if not math.isinf(bound):
            lower = bound
    return lower


def series(
    histories: dict[str, PlaneHistory],
    now: float,
    span_s: float,
    step_s: float,
    model: str | None = None,
) -> dict[str, Any]:
    """Chart series over the last `span_s`, one point per `step_s`, by model and by plane.

    A step's rate on one plane is its increases over the seconds its intervals cover; groups
    add the planes' rates. Latency quantiles come from the summed bucket increases."""
    steps = max(1, int(span_s // step_s))
    start = (math.floor(now / step_s) - steps + 1) * step_s
    by_model: dict[str, dict[tuple[int, str], Tally]] = defaultdict(lambda: defaultdict(Tally))
    by_plane: dict[str, dict[tuple[int, str], Tally]] = defaultdict(lambda: defaultdict(Tally))
    for plane, history in histories.items():
        by_plane.setdefault(plane, defaultdict(Tally))
        scrapes = list(history.scrapes)
        for prev, cur in itertools.pairwise(scrapes):
            index = int((cur.at - start) // step_s)
            if not 0 <= index < steps or cur.at <= prev.at:
                continue
            plane_tally = by_plane[plane][index, plane]
            plane_tally.seconds += cur.at - prev.at
            for name, statuses, buckets in _model_deltas(prev, cur, model):
                model_tally = by_model[name][index, plane]
                model_tally.seconds += cur.at - prev.at
                model_tally.add(statuses, buckets)
                plane_tally.add(statuses, buckets)
    return {
        "span_s": span_s,
        "step_s": step_s,
        "timestamps": [start + (i + 1) * step_s for i in range(steps)],
        "models": [
            {"name": name, **_draw(tallies, steps)} for name, tallies in sorted(by_model.items())
        ],
        "planes": [
            {
                "address": plane,
                "error": histories[plane].error,
                "last_attempt": histories[plane].last_attempt,
                **_draw(by_plane[plane], steps),
            }
            for plane in sorted(histories)
        ],
    }


def _draw(tallies: dict[tuple[int, str], Tally], steps: int) -> dict[str, Any]:
    """Points per step: requests/s, quantiles in ms and error rates by code (None = no data)."""
    requests: list[float | None] = [None] * steps
    latency: dict[str, list[float | None]] = {key: [None] * steps for key, _ in QUANTILES}
    errors: dict[str, list[float | None]] = {}
    per_step: dict[int, list[Tally]] = defaultdict(list)
    for (index, _plane), tally in tallies.items():
        per_step[index].append(tally)
    for index, plane_tallies in per_step.items():
        requests[index] = sum(sum(t.statuses.values()) / t.seconds for t in plane_tallies)
        for tally in plane_tallies:
            for status, count in tally.statuses.items():
                if status != OK:
                    errors.setdefault(status, [None] * steps)
                    errors[status][index] = (errors[status][index] or 0.0) + count / tally.seconds
        merged: dict[float, float] = defaultdict(float)
        for tally in plane_tallies:
            for bound, count in tally.buckets.items():
                merged[bound] += count
        for key, q in QUANTILES:
            value = quantile(q, merged)
            latency[key][index] = None if value is None else value / 1000.0
    for points in errors.values():  # a step with traffic but none of this code is a zero
        for index in per_step:
            points[index] = points[index] or 0.0
    return {"requests_per_s": requests, **latency, "errors_per_s": dict(sorted(errors.items()))}
