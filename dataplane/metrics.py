"""Prometheus metrics of one data plane, under TensorFlow Serving's names where it has them.

Operators port dashboards from tensorflow_model_server, so the families TF Serving exports keep
its names, labels and units (microseconds): `:tensorflow:serving:request_count`,
`:tensorflow:serving:request_latency`, `:tensorflow:serving:model_warmup_latency` and
`:tensorflow:serving:batching_session:queuing_latency`. What TF Serving does not export (the
model version and status on every request, loads and unloads, batch sizes) lives under
`:modelplane:` in seconds. Each data plane owns its own registry, so tests and several planes
in one process never share counters.

Label values come from requests only where they are bounded: a model name gets its own value
only if the config in force lists it (or a version of it answered); any other name a client
sends is recorded as `UNKNOWN_MODEL`, so clients cannot grow the page without end.

TF Serving exports counters without prometheus-client's `_total` suffix; `ExactCounter` writes
those lines itself so a query for `:tensorflow:serving:request_count` finds them unchanged.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Sequence
from pathlib import Path

from google.protobuf import text_format
from prometheus_client import (
    CollectorRegistry,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

from dataplane import errors
from dataplane.errors import Code
from modelplane import monitoring_pb2

UNKNOWN_MODEL = "__unknown__"  # the model_name of requests naming no configured model
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DEFAULT_PATH = "/monitoring/prometheus/metrics"  # TF Serving's PrometheusExporter::kPrometheusPath


def exponential_buckets(scale: float, growth: float, count: int) -> tuple[float, ...]:
    """TF Serving's `Buckets::Exponential`, so histograms line up with its dashboards."""
    return tuple(scale * growth**i for i in range(count))


_LATENCY_US = exponential_buckets(10, 1.8, 33)  # 10 us .. ~20 minutes, as TF Serving
_QUEUING_US = exponential_buckets(100, 1.2, 52)  # 100 us .. ~1 second, as TF Serving
_SECONDS = exponential_buckets(0.0001, 2, 22)  # 0.1 ms .. ~3.5 minutes
_BATCH_SIZES = exponential_buckets(1, 2, 14)  # 1 .. 8192


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class ExactCounter:
    """A labelled counter rendered under its exact name (no `_total`), as TF Serving does."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str]) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._values: dict[tuple[str, ...], float] = {}
        self._lock = threading.Lock()

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        with self._lock:
            self._values[labels] = self._values.get(labels, 0.0) + amount

    def value(self, *labels: str) -> float:
        with self._lock:
            return self._values.get(labels, 0.0)

    def render(self) -> str:
        with self._lock:
            items = sorted(self._values.items())
        lines = [f"# HELP {self.name} {self.documentation}", f"# TYPE {self.name} counter"]
        for labels, value in items:
            pairs = ",".join(
                f'{k}="{_escape(v)}"' for k, v in zip(self.labelnames, labels, strict=True)
            )
            lines.append(f"{self.name}{{{pairs}}} {value!r}")
        return "\n".join(lines) + "\n"


class RepeatableHistogram(Histogram):
    """prometheus-client's Histogram that can also record one value for many events at once.

    A coalesced batch answers n requests in one wall time; n `observe` calls (each a scan of
    up to 52 bucket bounds and two locked increments) were a tenth of the batched gRPC
    dispatcher's time. It uses the parent's own `_sum`, `_buckets` and `_upper_bounds`
    (prometheus-client is pinned; a test checks it against `observe`)."""

    def observe_repeated(self, amount: float, count: int = 1) -> None:
        """Same as `count` calls of `observe(amount)`, for the cost of one."""
        self._raise_if_not_observable()
        self._sum.inc(amount * count)
        self._buckets[bisect.bisect_left(self._upper_bounds, amount)].inc(count)


class ServingMetrics:
    """Every instrument the data plane records; one instance per process (or per test)."""

    def __init__(self) -> None:
        disable_created_metrics()  # TF Serving exports no `_created` series; neither do we
        self.registry = CollectorRegistry(auto_describe=True)
        # by (model, version, API, status, entrypoint)
        self._request_histograms: dict[
            tuple[str, ...], tuple[RepeatableHistogram, RepeatableHistogram]
        ] = {}
        self.request_count = ExactCounter(
            ":tensorflow:serving:request_count",
            "The total number of requests.",
            ("model_name", "status"),
        )
        self.version_request_count = ExactCounter(
            ":modelplane:request_count",
            "Requests by model, version, API and final status.",
            ("model_name", "model_version", "API", "status"),
        )
        self.model_load_count = ExactCounter(
            ":modelplane:model_load_count",
            "Model version loads (including warmup) by final status.",
            ("model_name", "status"),
        )
        self.model_unload_count = ExactCounter(
            ":modelplane:model_unload_count", "Model versions unloaded.", ("model_name",)
        )
        self._counters = (
            self.request_count,
            self.version_request_count,
            self.model_load_count,
            self.model_unload_count,
        )
        self.request_latency = self._histogram(
            ":tensorflow:serving:request_latency",
            "Distribution of wall time (in microseconds) for Tensorflow Serving request.",
            ("model_name", "API", "entrypoint"),
            _LATENCY_US,
        )
        self.version_request_latency = self._histogram(
            ":modelplane:request_latency_seconds",
            "Request wall time by model, version, API and final status.",
            ("model_name", "model_version", "API", "status"),
            _SECONDS,
        )
        self.model_load_latency = self._histogram(
            ":modelplane:model_load_latency_seconds",
            "Wall time to load and warm one model version.",
            ("model_name", "status"),
            _SECONDS,
        )
        self.warmup_latency = self._histogram(
            ":tensorflow:serving:model_warmup_latency",
            "Distribution of wall time (in microseconds) for warming up the model.",
            ("model_path", "status"),
            _LATENCY_US,
        )
        self.intra_op_threads = Gauge(
            ":modelplane:intra_op_threads",
            "Threads each op of the model's latest loaded version may use (its warmup calls' "
            "length decides unless --tensorflow_intra_op_parallelism is set).",
            ("model_name",),
            registry=self.registry,
        )
        self.queuing_latency = self._histogram(
            ":tensorflow:serving:batching_session:queuing_latency",
            "Distribution of wall time spent (in microseconds) in queuing",
            ("thread_pool_name",),
            _QUEUING_US,
        )
        self.batch_size = self._histogram(
            ":modelplane:batching:batch_size",
            "Rows per model call made by the batcher, padding included.",
            ("model_name", "thread_pool_name"),
            _BATCH_SIZES,
        )
        self.padding_size = self._histogram(
            ":modelplane:batching:padding_size",
            "Rows of padding added to reach an allowed batch size.",
            ("model_name", "thread_pool_name"),
            (0, *_BATCH_SIZES),
        )

    def _histogram(
        self, name: str, documentation: str, labels: Sequence[str], buckets: Sequence[float]
    ) -> RepeatableHistogram:
        return RepeatableHistogram(
            name, documentation, labels, buckets=buckets, registry=self.registry
        )

    def record_request(
        self,
        model: str,
        version: int | None,
        api: str,
        status: Code,
        seconds: float,
        entrypoint: str = "",
        requests: int = 1,
    ) -> None:
        """Finished inference requests (`requests` > 1: coalesced ones, answered together in
        `seconds`); `version` is None when none was resolved; `entrypoint` is the protocol
        they came by ("GRPC", "REST"; "" from inside)."""
        key = (model, "" if version is None else str(version), api, status.name)
        children = self._request_histograms.get((*key, entrypoint))
        latency_us, latency_s = children or self._request_children(key, entrypoint)
        self.request_count.inc(model, status.name, amount=requests)
        self.version_request_count.inc(*key, amount=requests)
        latency_us.observe_repeated(seconds * 1e6, requests)
        latency_s.observe_repeated(seconds, requests)

    def _request_children(
        self, key: tuple[str, str, str, str], entrypoint: str
    ) -> tuple[RepeatableHistogram, RepeatableHistogram]:
        """Label lookups cost more than the observation; do them once per label set."""
        model, _version, api, _status = key
        children = (
            self.request_latency.labels(model, api, entrypoint),
            self.version_request_latency.labels(*key),
        )
        self._request_histograms[(*key, entrypoint)] = children
        return children

    def record_load(self, model: str, status: Code, seconds: float) -> None:
        self.model_load_count.inc(model, status.name)
        self.model_load_latency.labels(model, status.name).observe(seconds)

    def record_unload(self, model: str) -> None:
        self.model_unload_count.inc(model)

    def record_intra_op_threads(self, model: str, threads: int) -> None:
        """The intra-op threads the model's latest loaded version runs each op on."""
        self.intra_op_threads.labels(model).set(threads)

    def record_warmup(self, model_path: str, status: Code, seconds: float) -> None:
        self.warmup_latency.labels(model_path, status.name).observe(seconds * 1e6)

    def record_batch(self, model: str, thread_pool: str, size: int, padding: int) -> None:
        self.batch_size.labels(model, thread_pool).observe(size)
        self.padding_size.labels(model, thread_pool).observe(padding)

    def record_queuing(self, thread_pool: str, waits_seconds: Sequence[float]) -> None:
        """How long each request of one batch waited for it (one label lookup per batch)."""
        histogram = self.queuing_latency.labels(thread_pool)
        for seconds in waits_seconds:
            histogram.observe_repeated(seconds * 1e6)

    def exposition(self) -> bytes:
        """The Prometheus text format of everything recorded so far."""
        counters = "".join(counter.render() for counter in self._counters)
        return counters.encode() + generate_latest(self.registry)


def read_monitoring_config(path: str) -> monitoring_pb2.MonitoringConfig:
    """Parse `--monitoring_config_file` (TF Serving's MonitoringConfig text format)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise errors.invalid_argument(f"Invalid monitoring config file {path}: {exc}") from None
    return parse_monitoring_config(text, path)


def parse_monitoring_config(text: str, source: str) -> monitoring_pb2.MonitoringConfig:
    """A MonitoringConfig text proto; `source` names it in the error."""
    try:
        return text_format.Parse(text, monitoring_pb2.MonitoringConfig())
    except text_format.ParseError as exc:
        raise errors.invalid_argument(f"Invalid monitoring config file {source}: {exc}") from None


def prometheus_path(config: monitoring_pb2.MonitoringConfig) -> str | None:
    """The HTTP path to serve metrics on, or None when Prometheus export is off."""
    prometheus = config.prometheus_config
    if not prometheus.enable:
        return None
    path = prometheus.path or DEFAULT_PATH
    if not path.startswith("/"):
        raise errors.invalid_argument(f"prometheus_config.path must start with '/': {path!r}")
    return path
