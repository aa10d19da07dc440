"""Traffic of the fleet: one scraper thread per control-plane process reads every registered
data plane's Prometheus metrics into a bounded window (traffic_window.py) that the API and the
UI draw from.

Only TensorFlow Serving's own families are read (`:tensorflow:serving:request_count`,
`:tensorflow:serving:request_latency`), so a stock `tensorflow_model_server` shows up as well
as ours. A plane that does not answer keeps its history and shows its error; nothing here ever
blocks a push, a request or another plane's scrape for longer than one scrape timeout.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from array import array
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests
from prometheus_client.parser import text_string_to_metric_families

from . import planes
from .config import TrafficSettings
from .db import Database
from .revisions import ValidationError
from .traffic_prometheus import PrometheusError, PrometheusTraffic
from .traffic_window import Scrape, Window, series

log = logging.getLogger(__name__)
REQUEST_COUNT = ":tensorflow:serving:request_count"
LATENCY_BUCKET = ":tensorflow:serving:request_latency_bucket"
# a typed counter's samples are named `_total` by the parser whether or not the text did
COUNT_SAMPLES = (REQUEST_COUNT, REQUEST_COUNT + "_total")
SAMPLE_PREFIXES = (*(name + end for name in COUNT_SAMPLES for end in "{ "), LATENCY_BUCKET + "{")
MAX_WORKERS = 8
MAX_POINTS = 240  # per series: enough for a chart, small enough to poll
CACHED_QUERIES = 32  # drawn series kept until the next scrape (every browser polls the same)


__all__ = ["PrometheusError", "ScrapeError", "Traffic", "query"]


class ScrapeError(Exception):
    """A plane's metrics could not be read; the message is shown beside its chart."""


def metrics_url(address: str, settings: TrafficSettings) -> str | None:
    """Where the plane registered as `address` (its gRPC host:port) serves its metrics."""
    explicit = dict(settings.metrics_urls)
    if address in explicit:
        return explicit[address]
    if not settings.metrics_port:
        return None
    host = address.rsplit(":", 1)[0]
    return f"http://{host}:{settings.metrics_port}{settings.metrics_path}"


def fetch(url: str, timeout_s: float, max_bytes: int) -> str:
    """The exposition text, refused past `max_bytes` before more of it is read."""
    try:
        with requests.get(url, timeout=timeout_s, stream=True) as response:
            if response.status_code != 200:
                raise ScrapeError(f"{url} answered HTTP {response.status_code}")
            body = bytearray()
            for chunk in response.iter_content(64 << 10):
                body += chunk
                if len(body) > max_bytes:
                    raise ScrapeError(f"{url} sent more than {max_bytes} bytes of metrics")
            return body.decode("utf-8", errors="replace")
    except requests.RequestException as err:
        raise ScrapeError(f"{url}: {type(err).__name__}") from None


def _our_samples(text: str) -> str:
    """Only the sample lines of the two families read: a plane exports many more (a tenth of
    its lines are these), and the pure-Python parser's time grows with every line."""
    return "\n".join(line for line in text.splitlines() if line.startswith(SAMPLE_PREFIXES))


def parse(text: str, at: float, max_models: int) -> Scrape:
    """The request counters of one exposition; models beyond `max_models` are dropped."""
    try:
        families = list(text_string_to_metric_families(_our_samples(text)))
    except ValueError as err:
        raise ScrapeError(f"unparsable metrics: {err}") from None
    requests_by: dict[tuple[str, str], float] = {}
    buckets: dict[str, dict[float, float]] = defaultdict(lambda: defaultdict(float))
    for family in families:
        for sample in family.samples:
            model = sample.labels.get("model_name", "")
            if sample.name in COUNT_SAMPLES:
                key = (model, sample.labels.get("status", ""))
                requests_by[key] = requests_by.get(key, 0.0) + sample.value
            elif sample.name == LATENCY_BUCKET:
                buckets[model][float(sample.labels["le"])] += sample.value
    models = sorted({m for m, _ in requests_by} | set(buckets))
    kept = set(models[:max_models])
    bounds = tuple(sorted({bound for b in buckets.values() for bound in b}))
    return Scrape(
        at=at,
        requests={k: v for k, v in requests_by.items() if k[0] in kept},
        bounds=bounds,
        latency={
            m: array("d", (b.get(bound, 0.0) for bound in bounds))
            for m, b in buckets.items()
            if m in kept
        },
        dropped_models=len(models) - len(kept),
    )


def query(args: Mapping[str, str]) -> tuple[str | None, float | None]:
    """`model` and `span_s` of a traffic request, checked."""
    span = args.get("span_s")
    try:
        span_s = None if span is None else float(span)
    except ValueError:
        span_s = math.nan
    if span_s is not None and not (math.isfinite(span_s) and span_s > 0):
        raise ValidationError("span_s", "must be a positive number of seconds")
    return args.get("model") or None, span_s


class Traffic:
    """The scraper and its window; `start` runs it every `interval_s` until `stop`. With a
    Prometheus server configured, `series` asks it instead and nothing is scraped."""

    def __init__(
        self, db: Database, settings: TrafficSettings, clock: Callable[[], float] = time.time
    ) -> None:
        self.db = db
        self.settings = settings
        self.window = Window(settings.span_s, settings.interval_s)
        self._clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool = ThreadPoolExecutor(max_workers=MAX_WORKERS, thread_name_prefix="traffic")
        self._drawn: OrderedDict[
            tuple[str | None, float], tuple[tuple[int, float], dict[str, Any]]
        ] = OrderedDict()
        self._drawn_lock = threading.Lock()
        self.prometheus = (
            PrometheusTraffic(settings.prometheus_url, self._timeout_s, self._addresses, clock)
            if settings.prometheus_url
            else None
        )

    @property
    def _timeout_s(self) -> float:
        return max(1.0, min(10.0, self.settings.interval_s / 2))

    def _addresses(self) -> list[str]:
        return [plane.address for plane in planes.list_planes(self.db)]

    def start(self) -> None:
        if self._thread is None and self.prometheus is None:
            self._thread = threading.Thread(target=self._run, name="traffic-scraper", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.scrape_once()
            except Exception:  # the database may be down for a while: try again next tick
                log.exception("traffic scrape failed")
            self._stop.wait(self.settings.interval_s)

    def scrape_once(self) -> None:
        """Scrape every registered plane once, in parallel, and forget removed planes."""
        addresses = self._addresses()
        self.window.retain(addresses)
        list(self._pool.map(self._scrape, addresses))

    def _scrape(self, address: str) -> None:
        url = metrics_url(address, self.settings)
        at = self._clock()
        if url is None:
            self.window.fail(address, "no metrics URL (set MODELPLANE_METRICS_PORT)", at)
            return
        try:
            text = fetch(url, self._timeout_s, self.settings.max_bytes)
            scrape = parse(text, at, self.settings.max_models)
        except ScrapeError as err:
            self.window.fail(address, str(err), at)
            return
        if scrape.dropped_models:
            log.warning("%s: %d models over the traffic limit", address, scrape.dropped_models)
        self.window.add(address, scrape)

    def series(self, model: str | None = None, span_s: float | None = None) -> dict[str, Any]:
        """Chart series for the last `span_s` (at most the window's), optionally one model;
        raises PrometheusError when the configured Prometheus does not answer."""
        span = min(span_s or self.settings.span_s, self.settings.span_s)
        # two scrapes per step at least, so timer jitter never leaves a step empty
        steps = max(2, math.ceil(span / self.settings.interval_s / MAX_POINTS))
        step = self.settings.interval_s * steps
        if self.prometheus is not None:
            return self.prometheus.series(model, span, step)
        return self._drawn_series(model, span, step)

    def _drawn_series(self, model: str | None, span: float, step: float) -> dict[str, Any]:
        """Drawing 100 models' hour takes seconds; redraw only once a scrape changed the
        window or a new step began (so an answer is at most one scrape interval old)."""
        key, now = (model, span), self._clock()
        with self._drawn_lock:
            cached = self._drawn.get(key)
        if cached is not None and cached[0] == (self.window.version, now // step):
            return cached[1]
        version, histories = self.window.snapshot()
        result = series(histories, now, span, step, model)
        with self._drawn_lock:
            self._drawn[key] = ((version, now // step), result)
            self._drawn.move_to_end(key)
            while len(self._drawn) > CACHED_QUERIES:
                self._drawn.popitem(last=False)
        return result
