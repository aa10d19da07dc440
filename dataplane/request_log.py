"""Request logging as a ModelConfig's `logging_config` asks for it.

TensorFlow Serving defines the config (a sampling rate and a log collector) but its released
server refuses it ("No request-logger-creator provided"). Here it works: a sampled request and
its successful response become one `PredictionLog`, the record type of warmup files, so a
captured log can be replayed as a model's `assets.extra/tf_serving_warmup_requests` as is.

Requests never wait for the disk. `RequestLogger.record` only draws the sample and enqueues a
closure that builds the protos; one writer thread builds, serializes and writes them. The queue
is bounded: when it is full the record is dropped and counted (`:modelplane:request_log_dropped`),
never blocking the caller. Files rotate by size and age and are named
`<filename_prefix>.<UTC time>.<sequence>.tfrecord` (or `.jsonl` for `type: "jsonl"`). `close`
(on SIGTERM drain) writes what is queued and closes every file.
"""

from __future__ import annotations

import functools
import logging
import os
import queue
import random
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, TypeVar

import tensorflow as tf
from google.protobuf import json_format
from prometheus_client import CollectorRegistry, Counter
from tensorflow_serving.apis import prediction_log_pb2
from tensorflow_serving.config import logging_config_pb2, model_server_config_pb2

from dataplane.config import ConfigError

log = logging.getLogger(__name__)

TFRECORD = "tfrecord"
JSONL = "jsonl"
_EXTENSIONS = {TFRECORD: "tfrecord", JSONL: "jsonl"}
# The PredictionLog field each logged API fills (its request/response pair).
LOG_FIELDS = {
    "predict": "predict_log",
    "classify": "classify_log",
    "regress": "regress_log",
    "multi_inference": "multi_inference_log",
}

Pair = tuple[Any, Any]  # (request proto, response proto)
Result = TypeVar("Result")
Answer = TypeVar("Answer")


@dataclass(frozen=True)
class LogSettings:
    """Process-wide limits of the writer: queued records, file size and age before rotation."""

    queue_size: int = 10_000
    max_file_bytes: int = 64 * 1024 * 1024
    max_file_seconds: float = 3600.0


@dataclass(frozen=True)
class ModelLogging:
    """One model's logging_config, checked: where its records go and how many of them."""

    model: str
    sampling: logging_config_pb2.SamplingConfig
    kind: str
    filename_prefix: str

    @property
    def rate(self) -> float:
        return self.sampling.sampling_rate

    @property
    def destination(self) -> tuple[str, str]:
        return self.kind, self.filename_prefix


def model_logging(model: model_server_config_pb2.ModelConfig) -> ModelLogging | None:
    """The model's logging, None when it logs nothing; a config that cannot work is refused.

    `per_task_sampling_configs` (rates per datacenter/task of Google's deployment) names
    nothing this server knows, so it is refused rather than silently ignored.
    """
    if not model.HasField("logging_config"):
        return None
    config = model.logging_config
    sampling = config.sampling_config
    if not 0.0 <= sampling.sampling_rate <= 1.0:
        raise ConfigError(
            f"Model {model.name}: logging_config sampling_rate must be in [0, 1], "
            f"got {sampling.sampling_rate}"
        )
    if sampling.per_task_sampling_configs:
        raise ConfigError(
            f"Model {model.name}: per_task_sampling_configs is not supported by this server"
        )
    collector = config.log_collector_config
    kind = collector.type or TFRECORD
    if kind not in _EXTENSIONS:
        raise ConfigError(
            f"Model {model.name}: unknown log_collector_config type {collector.type!r} "
            f"(supported: {', '.join(_EXTENSIONS)})"
        )
    if not collector.filename_prefix:
        raise ConfigError(f"Model {model.name}: log_collector_config needs a filename_prefix")
    if sampling.sampling_rate == 0.0:
        return None
    return ModelLogging(model.name, sampling, kind, collector.filename_prefix)


def models_logging(config: model_server_config_pb2.ModelServerConfig) -> dict[str, ModelLogging]:
    """Every model's checked logging; raises ConfigError for the first that cannot work."""
    found = {}
    for model in config.model_config_list.config:
        settings = model_logging(model)
        if settings is not None:
            found[model.name] = settings
    return found


def prediction_log(settings: ModelLogging, api: str, pair: Pair, timestamp: float) -> Any:
    """One PredictionLog: the metadata (the model spec that answered, the sampling config,
    the time) and the request/response pair in the field of its API."""
    request, response = pair
    entry = prediction_log_pb2.PredictionLog()
    metadata = entry.log_metadata
    spec = response.model_spec if hasattr(response, "model_spec") else None
    if spec is not None:
        metadata.model_spec.CopyFrom(spec)
    else:
        metadata.model_spec.name = settings.model
    metadata.sampling_config.CopyFrom(settings.sampling)
    metadata.timestamp_secs = int(timestamp)
    field = getattr(entry, LOG_FIELDS[api])
    field.request.CopyFrom(request)
    field.response.CopyFrom(response)
    return entry


class RotatingFile:
    """The current file of one collector; only the writer thread touches it."""

    def __init__(self, settings: ModelLogging, limits: LogSettings) -> None:
        self._settings = settings
        self._limits = limits
        self._sequence = 0
        self._handle: Any = None
        self._opened = 0.0
        self._bytes = 0
        self.path = ""

    def write(self, entry: Any) -> None:
        if self._handle is not None and self._due():
            self.close()
        if self._handle is None:
            self._open()
        if self._settings.kind == TFRECORD:
            data = entry.SerializeToString()
            self._handle.write(data)
            self._bytes += len(data) + 16  # TFRecord framing: length, two CRCs
        else:
            line = json_format.MessageToJson(entry, indent=None) + "\n"
            self._handle.write(line)
            self._bytes += len(line)

    def _due(self) -> bool:
        return (
            self._bytes >= self._limits.max_file_bytes
            or time.monotonic() - self._opened >= self._limits.max_file_seconds
        )

    def _open(self) -> None:
        prefix = self._settings.filename_prefix
        directory = os.path.dirname(prefix)
        if directory:
            os.makedirs(directory, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        self._sequence += 1
        ext = _EXTENSIONS[self._settings.kind]
        self.path = f"{prefix}.{stamp}.{os.getpid()}.{self._sequence:05d}.{ext}"
        self._handle = (
            tf.io.TFRecordWriter(self.path)
            if self._settings.kind == TFRECORD
            else open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed by close())
        )
        self._opened = time.monotonic()
        self._bytes = 0

    def flush(self) -> None:
        if self._handle is not None:
            self._handle.flush()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


_STOP = object()
_IDLE_SECONDS = 1.0  # how often an idle writer looks for files to close


class RequestLogger:
    """Samples requests per model and writes their logs from one bounded writer thread."""

    def __init__(self, limits: LogSettings, registry: CollectorRegistry) -> None:
        self._limits = limits
        self._models: dict[str, ModelLogging] = {}
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max(1, limits.queue_size))
        self._files: dict[tuple[str, str], RotatingFile] = {}
        self._stopped = False
        self._reconfigured = threading.Event()
        self.written = Counter(
            ":modelplane:request_log_records",
            "Request logs written, by model.",
            ("model_name",),
            registry=registry,
        )
        self.dropped = Counter(
            ":modelplane:request_log_dropped",
            "Request logs not written, by model and reason (queue_full, write_error, stopped).",
            ("model_name", "reason"),
            registry=registry,
        )
        self._thread = threading.Thread(target=self._run, name="request-log", daemon=True)
        self._thread.start()

    def check(self, config: model_server_config_pb2.ModelServerConfig) -> None:
        """Refuse a config whose logging cannot work (the manager asks before applying)."""
        models_logging(config)

    def configure(self, config: model_server_config_pb2.ModelServerConfig) -> None:
        """Take the logging of a config now in force (one atomic swap for the hot path);
        the writer then closes the files of destinations the config no longer names."""
        self._models = models_logging(config)
        self._reconfigured.set()

    def sampled(self, model: str) -> ModelLogging | None:
        """The model's logging if this request is drawn for a log, else None (cheap)."""
        settings = self._models.get(model)
        if settings is None or random.random() >= settings.rate:
            return None
        return settings

    def record(self, settings: ModelLogging, api: str, build: Callable[[], Pair]) -> None:
        """Queue one sampled request; `build` runs later on the writer thread. Never blocks."""
        if self._stopped:
            self.dropped.labels(settings.model, "stopped").inc()
            return
        try:
            self._queue.put_nowait((settings, api, build, time.time()))
        except queue.Full:
            self.dropped.labels(settings.model, "queue_full").inc()

    def close(self, timeout: float = 30.0) -> None:
        """Write everything queued, close every file (the SIGTERM drain calls this last)."""
        if self._stopped:
            return
        self._stopped = True
        self._queue.put(_STOP)
        self._thread.join(timeout)

    def _run(self) -> None:
        """The writer loop: a failing record is logged and counted, never ends the thread."""
        try:
            while True:
                try:
                    item = self._queue.get(timeout=_IDLE_SECONDS)
                except queue.Empty:
                    item = None
                if item is _STOP:
                    break
                if item is not None:
                    self._write(*item)
                if self._reconfigured.is_set():
                    self._reconfigured.clear()
                    self._close_files(keep={s.destination for s in self._models.values()})
                if self._queue.empty():
                    self._flush()
        except BaseException:  # pragma: no cover - only a bug in this loop gets here
            log.critical("Request log writer stopped; further logs are dropped", exc_info=True)
            self._stopped = True
        finally:
            self._close_files()

    def _write(
        self, settings: ModelLogging, api: str, build: Callable[[], Pair], at: float
    ) -> None:
        try:
            entry = prediction_log(settings, api, build(), at)
            target = self._files.get(settings.destination)
            if target is None:
                target = RotatingFile(settings, self._limits)
                self._files[settings.destination] = target
            target.write(entry)
        except Exception:
            log.exception("Cannot write a request log of model %s", settings.model)
            self.dropped.labels(settings.model, "write_error").inc()
            return
        self.written.labels(settings.model).inc()

    def _flush(self) -> None:
        for target in self._files.values():
            try:
                target.flush()
            except Exception:
                log.exception("Cannot flush request log %s", target.path)

    def _close_files(self, keep: Collection[tuple[str, str]] = ()) -> None:
        for destination in [d for d in self._files if d not in keep]:
            target = self._files.pop(destination)
            try:
                target.close()
            except Exception:
                log.exception("Cannot close request log %s", target.path)


def logging_answer(
    logger: RequestLogger | None,
    model: str,
    api: str,
    answer: Callable[[Result], Answer],
    pair: Callable[[Result, Answer], Pair],
) -> Callable[[Result], Answer]:
    """`answer` as is, or, when this request is sampled, `answer` that also records the
    request/response `pair` (built on the writer thread) once it has answered successfully.

    The front ends wrap the answer they give the core, so a logged request costs its caller
    only the draw and an enqueue, and a failed one is never logged (as in TF Serving)."""
    settings = logger.sampled(model) if logger is not None else None
    if settings is None:
        return answer
    recorder = logger

    def answer_and_record(result: Result) -> Answer:
        response = answer(result)
        recorder.record(settings, api, lambda: pair(result, response))  # type: ignore[union-attr]
        return response

    return answer_and_record


def logging_group_answer(
    logger: RequestLogger | None,
    model: str,
    count: int,
    answer: Callable[[Result], list[bytes]],
    pair: Callable[[int, bytes], Pair],
) -> Callable[[Result], list[bytes]]:
    """`logging_answer` for `count` coalesced Predicts answered together as serialized
    responses: each is drawn on its own; `pair(index, serialized)` rebuilds one drawn pair."""
    drawn = []
    if logger is not None:
        drawn = [(i, s) for i in range(count) if (s := logger.sampled(model)) is not None]
    if not drawn:
        return answer
    recorder = logger

    def answer_and_record(result: Result) -> list[bytes]:
        serialized = answer(result)
        for index, settings in drawn:
            build = functools.partial(pair, index, serialized[index])
            recorder.record(settings, "predict", build)  # type: ignore[union-attr]
        return serialized

    return answer_and_record
