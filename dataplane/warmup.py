"""Warmup: replay a version's sample requests before it becomes AVAILABLE.

TensorFlow initialises kernels, memory pools and (with batching) per-batch-size state lazily,
so without warmup the first requests after a swap pay for it. As TF Serving does, a version
may ship `assets.extra/tf_serving_warmup_requests`, a TFRecord of `PredictionLog`s (predict,
classify, regress or multi_inference logs, at most 1000); each is replayed
`--num_request_iterations_for_warmup` times against the freshly loaded version through the
same runner (so through the batcher too) that will serve it. A malformed file or a failing
request fails that load, with the reason in GetModelStatus.

`PreparedLoader` is the LoadFn the manager calls: load, attach per-model batching
parameters, warm, record load metrics. Only once it returns is the version AVAILABLE.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import tensorflow as tf
from google.protobuf.message import DecodeError
from tensorflow_serving.apis import prediction_log_pb2

from dataplane import batching, errors, tensors
from dataplane.errors import Code, ServingError
from dataplane.inference import (
    Examples,
    InferenceService,
    InferenceTask,
    ModelRef,
    Runner,
    run_direct,
)
from dataplane.manager import LoadFn
from dataplane.metrics import ServingMetrics
from dataplane.servable import Servable

log = logging.getLogger(__name__)

ASSETS_EXTRA = "assets.extra"
# A model whose warmup calls take this long or longer gets intra-op threads up to the cores.
WIDE_CALL_SECONDS = 0.005
WARMUP_FILE = "tf_serving_warmup_requests"
MAX_RECORDS = 1000  # TF Serving's WarmupConsts::kMaxNumRecords


def warmup_file(version_dir: str) -> Path:
    return Path(version_dir, ASSETS_EXTRA, WARMUP_FILE)


def read_warmup_logs(path: Path) -> list[prediction_log_pb2.PredictionLog]:
    """Every record of a warmup file, parsed; any defect is a ServingError naming the file."""
    logs: list[prediction_log_pb2.PredictionLog] = []
    try:
        for record in tf.data.TFRecordDataset(str(path)):
            if len(logs) >= MAX_RECORDS:
                raise errors.invalid_argument(
                    f"Number of warmup records exceeds the maximum ({MAX_RECORDS}) at {path}"
                )
            logs.append(_parse(record.numpy(), path))
    except tf.errors.OpError as exc:
        raise ServingError(
            Code.DATA_LOSS,
            f"{exc.message} in {path}. Please verify your warmup data is in TFRecord format.",
        ) from None
    return logs


def _parse(record: bytes, path: Path) -> prediction_log_pb2.PredictionLog:
    log_entry = prediction_log_pb2.PredictionLog()
    try:
        log_entry.ParseFromString(record)
    except DecodeError:
        raise errors.invalid_argument(f"Failed to parse warmup record from {path}") from None
    return log_entry


class _OnlyThis:
    """A stand-in manager that leases the version being warmed, whatever a log names.

    Like TF Serving, warmup runs on the version being loaded: the model_spec recorded in a
    log (often another name or version) only contributes its signature_name.
    """

    def __init__(self, servable: Servable) -> None:
        self._servable = servable

    @contextmanager
    def lease(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> Iterator[Servable]:
        yield self._servable


def replay(service: InferenceService, entry: prediction_log_pb2.PredictionLog) -> None:
    """Run one logged request; its result is discarded, its error fails the warmup."""
    kind = entry.WhichOneof("log_type")
    ref = ModelRef("warmup")
    if kind == "predict_log":
        request = entry.predict_log.request
        service.predict(
            ref,
            request.model_spec.signature_name,
            lambda _specs: {a: tensors.to_ndarray(t) for a, t in request.inputs.items()},
            request.output_filter,
        )
    elif kind == "classify_log":
        request = entry.classify_log.request
        service.classify(ref, request.model_spec.signature_name, Examples.from_input(request.input))
    elif kind == "regress_log":
        request = entry.regress_log.request
        service.regress(ref, request.model_spec.signature_name, Examples.from_input(request.input))
    elif kind == "multi_inference_log":
        request = entry.multi_inference_log.request
        tasks = [
            InferenceTask(ref, t.model_spec.signature_name, t.method_name) for t in request.tasks
        ]
        service.multi_inference(tasks, Examples.from_input(request.input))
    else:
        raise ServingError(Code.UNIMPLEMENTED, f"Unsupported log_type for warmup: {kind}")


def warm_up(
    servable: Servable,
    iterations: int,
    runner: Runner = run_direct,
    metrics: ServingMetrics | None = None,
) -> int:
    """Replay the version's warmup file; returns how many records it held (0: no file)."""
    path = warmup_file(servable.path)
    if not path.is_file():
        return 0
    start = time.perf_counter()
    status = Code.OK
    try:
        logs = read_warmup_logs(path)
        service = InferenceService(_OnlyThis(servable), runner)  # type: ignore[arg-type]
        for entry in logs:
            for _ in range(iterations):
                replay(service, entry)
    except ServingError as exc:
        status = exc.code
        raise ServingError(exc.code, f"Warmup of {servable.path} failed: {exc.message}") from None
    finally:
        if metrics is not None:
            metrics.record_warmup(servable.path, status, time.perf_counter() - start)
    log.info(
        "Finished reading warmup data for model at %s. Number of warmup records read: %d. "
        "Elapsed time (microseconds): %d.",
        path,
        len(logs),
        (time.perf_counter() - start) * 1e6,
    )
    return len(logs)


@dataclass(frozen=True)
class PreparedLoader:
    """The manager's LoadFn: a version is returned only once it is loaded *and* warmed."""

    load: LoadFn
    runner: Runner = run_direct
    warmup: bool = True
    warmup_iterations: int = 1
    per_model_batching: bool = False
    metrics: ServingMetrics | None = None
    # Loads the same version with intra-op threads up to the cores; None: keep what `load`
    # gives (an intra-op flag was set, or there is one core).
    load_wide: LoadFn | None = None
    wide_call_seconds: float = WIDE_CALL_SECONDS

    def __call__(self, name: str, version: int, path: str) -> Servable:
        start = time.perf_counter()
        status = Code.OK
        try:
            servable = self._prepared(self.load(name, version, path))
            if self.load_wide is not None:
                servable = self._fitted(servable)
        except ServingError as exc:
            status = exc.code
            raise
        finally:
            if self.metrics is not None:
                self.metrics.record_load(name, status, time.perf_counter() - start)
        if self.metrics is not None:
            weakref.finalize(servable, self.metrics.record_unload, servable.name)
            self.metrics.record_intra_op_threads(servable.name, servable.intra_op_threads)
        return servable

    def _prepared(self, servable: Servable) -> Servable:
        """Attach batching parameters and warm up; a failure closes the servable again."""
        try:
            if self.per_model_batching and isinstance(self.runner, batching.BatchingRunner):
                config = batching.per_model_config(servable.path)
                if config is not None:
                    self.runner.configure(servable, config)
            if self.warmup:
                warm_up(servable, self.warmup_iterations, self.runner, self.metrics)
        except BaseException:
            servable.close()
            raise
        return servable

    def _fitted(self, servable: Servable) -> Servable:
        """The version again with intra-op threads up to the cores when its warmup calls were
        long (at one client such a call would otherwise leave every other core idle), else
        as it is. Short calls, and a model without warmup records, keep one thread: a server
        runs many calls at once, and spreading each op costs more in hand-offs than it saves
        on short ones (docs/performance.md, "Intra-op threads")."""
        assert self.load_wide is not None
        seconds = servable.longest_call_seconds
        chosen = servable
        if seconds and seconds >= self.wide_call_seconds:
            try:
                wide = self.load_wide(servable.name, servable.version, servable.path)
                chosen = self._prepared(wide)
            finally:
                servable.close()
        log.info(
            "%s version %d: %s: %d intra-op thread(s)",
            chosen.name,
            chosen.version,
            f"warmup calls {seconds * 1e3:.2f} ms" if seconds else "no warmup calls",
            chosen.intra_op_threads,
        )
        return chosen
