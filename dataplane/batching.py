"""Server-side batching: concurrent requests to one signature become one model call.

Every call has a fixed cost of a few hundred microseconds, and an accelerator is only busy
when it gets many rows at once, so throughput comes from merging. `BatchingRunner` plugs into
`InferenceService` as its runner. Requests to the same (servable, signature, output keys)
with compatible inputs share a queue; a pool of batch threads (TF Serving's
SharedBatchScheduler, one pool per distinct parameter set) takes a batch when it is full or
its oldest request has waited `batch_timeout_micros`, concatenates along dimension 0, pads up
to the next allowed size, runs ONE `Signature.run` (TensorFlow places it on a GPU when there
is one) and hands each caller exactly its own rows back.

Compatibility is part of the queue key (input dtypes, and the non-batch dimensions unless
`pad_variable_length_inputs`), so one client's odd shape never fails its batch-mates. A
request that cannot be batched at all (a rank-0 input, inputs of different dimension-0 sizes,
a feed the signature would reject) runs alone, so it gets the same answer and the same error
as without batching.
"""

from __future__ import annotations

import collections
import itertools
import logging
import os
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from google.protobuf import text_format

from dataplane import errors, tracing
from dataplane.errors import Code, ServingError
from dataplane.metrics import ServingMetrics
from dataplane.servable import Servable, Signature
from dataplane.signatures import TensorSpec
from dataplane.supervision import guarded_thread
from modelplane import batching_pb2

log = logging.getLogger(__name__)

PER_MODEL_PARAMS_FILE = "batching_params.pbtxt"

Feeds = Mapping[str, np.ndarray]
Outputs = dict[str, np.ndarray]


@dataclass(frozen=True)
class BatchingConfig:
    """BatchingParameters with TF Serving's defaults filled in (SharedBatchScheduler's)."""

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    thread_pool_name: str = "batch_threads"
    allowed_batch_sizes: tuple[int, ...] = ()
    pad_variable_length_inputs: bool = False
    enable_large_batch_splitting: bool = False
    max_execution_batch_size: int = 0

    def __post_init__(self) -> None:
        for name in ("max_batch_size", "max_enqueued_batches", "num_batch_threads"):
            if getattr(self, name) <= 0:
                raise _invalid(f"{name} must be positive; was {getattr(self, name)}")
        if self.batch_timeout_micros < 0:
            raise _invalid(f"batch_timeout_micros must be >= 0; was {self.batch_timeout_micros}")
        if self.max_execution_batch_size < 0:
            raise _invalid("max_execution_batch_size must be >= 0")
        if self.execution_batch_size > self.max_batch_size:
            raise _invalid(
                f"max_execution_batch_size ({self.execution_batch_size}) must not exceed "
                f"max_batch_size ({self.max_batch_size})"
            )
        self._check_allowed_sizes()

    def _check_allowed_sizes(self) -> None:
        sizes = self.allowed_batch_sizes
        if not sizes:
            return
        if sizes[0] <= 0 or any(b <= a for a, b in itertools.pairwise(sizes)):
            raise _invalid(
                f"allowed_batch_sizes must be positive and increasing; was {list(sizes)}"
            )
        if sizes[-1] != self.execution_batch_size:
            limit = "max_execution_batch_size" if self.splits else "max_batch_size"
            raise _invalid(
                f"Last entry in allowed_batch_sizes must match {limit}; last entry was "
                f"{sizes[-1]}; expected {self.execution_batch_size}"
            )

    @property
    def splits(self) -> bool:
        return self.enable_large_batch_splitting

    @property
    def execution_batch_size(self) -> int:
        """The most rows one model call runs (a request may be larger only when split)."""
        if self.splits and self.max_execution_batch_size:
            return self.max_execution_batch_size
        return self.max_batch_size

    @property
    def timeout_seconds(self) -> float:
        return self.batch_timeout_micros / 1e6

    def padded_size(self, size: int) -> int:
        """The smallest allowed batch size that holds `size` rows."""
        for allowed in self.allowed_batch_sizes:
            if allowed >= size:
                return allowed
        return size

    @classmethod
    def from_proto(cls, params: batching_pb2.BatchingParameters) -> BatchingConfig:
        """Unset wrapper fields keep TF Serving's defaults."""
        values: dict[str, object] = {}
        for name in (
            "max_batch_size",
            "batch_timeout_micros",
            "max_enqueued_batches",
            "num_batch_threads",
            "thread_pool_name",
            "enable_large_batch_splitting",
            "max_execution_batch_size",
        ):
            if params.HasField(name):
                values[name] = getattr(params, name).value
        values["allowed_batch_sizes"] = tuple(params.allowed_batch_sizes)
        values["pad_variable_length_inputs"] = params.pad_variable_length_inputs
        return cls(**values)  # type: ignore[arg-type]


def _invalid(message: str) -> ServingError:
    return errors.invalid_argument(f"Invalid batching parameters: {message}")


def read_batching_config(path: str | Path) -> BatchingConfig:
    """Parse and validate a BatchingParameters text proto; any problem names the file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise errors.invalid_argument(f"Invalid batching parameters file {path}: {exc}") from None
    return parse_batching_config(text, str(path))


def parse_batching_config(text: str, source: str) -> BatchingConfig:
    """A BatchingParameters text proto, validated; `source` names it in the error."""
    try:
        params = text_format.Parse(text, batching_pb2.BatchingParameters())
    except text_format.ParseError as exc:
        raise errors.invalid_argument(f"Invalid batching parameters file {source}: {exc}") from None
    try:
        return BatchingConfig.from_proto(params)
    except ServingError as exc:
        raise errors.invalid_argument(f"{exc.message} (in {source})") from None


def per_model_config(version_dir: str) -> BatchingConfig | None:
    """The version directory's own `batching_params.pbtxt`, if it ships one."""
    path = Path(version_dir, PER_MODEL_PARAMS_FILE)
    return read_batching_config(path) if path.is_file() else None


# --------------------------------------------------------------------------- queue key


def _conforms(spec: TensorSpec, value: np.ndarray) -> bool:
    """Whether `Signature.run` would accept this feed (so a merged batch cannot fail on it)."""
    if spec.is_string:
        if value.dtype.kind not in "OSU":
            return False
    elif value.dtype != spec.np_dtype:
        return False
    shape = spec.shape
    return shape is None or (
        len(shape) == value.ndim
        and all(d is None or d == v for d, v in zip(shape, value.shape, strict=True))
    )


def batch_key(signature: Signature, feeds: Feeds, pad: bool) -> tuple[int, tuple] | None:
    """(rows, compatibility key) of a request, or None when it must run alone.

    Requests with equal keys can be concatenated along dimension 0: same aliases, dtypes
    and ranks, and the same non-batch dimensions unless they will be padded.
    """
    inputs = signature.inputs
    if len(feeds) != len(inputs) or not inputs:
        return None
    rows = -1
    parts = []
    for alias, spec in inputs.items():
        value = feeds.get(alias)
        if value is None or value.ndim == 0 or not _conforms(spec, value):
            return None
        if rows < 0:
            rows = value.shape[0]
        elif value.shape[0] != rows:
            return None
        kind = "string" if spec.is_string else value.dtype.str
        parts.append((alias, kind, value.ndim if pad else value.shape[1:]))
    if rows == 0:
        return None
    return rows, tuple(parts)


# --------------------------------------------------------------------------- merge / split


def _pad_to(value: np.ndarray, dims: Sequence[int]) -> np.ndarray:
    """Pad every non-batch dimension at its end (zeros, or b"" for strings)."""
    widths = [(0, 0)] + [(0, want - have) for have, want in zip(value.shape[1:], dims, strict=True)]
    if not any(after for _, after in widths):
        return value
    fill: object = b"" if value.dtype.kind in "OSU" else 0
    return np.pad(value, widths, constant_values=fill)


def merge_inputs(
    aliases: Sequence[str], parts: Sequence[Feeds], padded_rows: int, pad_lengths: bool
) -> dict[str, np.ndarray]:
    """Concatenate each input over the requests; pad rows by repeating the last request's
    first row (a row we know is valid, as TF Serving does)."""
    rows = sum(len(next(iter(p.values()))) for p in parts)
    merged: dict[str, np.ndarray] = {}
    for alias in aliases:
        values = [p[alias] for p in parts]
        if pad_lengths:
            dims = [max(v.shape[d] for v in values) for d in range(1, values[0].ndim)]
            values = [_pad_to(v, dims) for v in values]
        if padded_rows > rows:
            values.append(np.repeat(values[-1][:1], padded_rows - rows, axis=0))
        merged[alias] = values[0] if len(values) == 1 else np.concatenate(values)
    return merged


def split_outputs(outputs: Feeds, sizes: Sequence[int], padded_rows: int) -> list[Outputs]:
    """Each request's rows of every output (views, no copies)."""
    for key, value in outputs.items():
        if value.ndim == 0 or value.shape[0] != padded_rows:
            raise errors.failed_precondition(
                f"Batched output tensor '{key}' has shape {list(value.shape)}; its 0th "
                f"dimension must equal the batch size {padded_rows}. Only models whose "
                "outputs keep the batch dimension can be served with batching."
            )
    bounds = list(itertools.accumulate(sizes, initial=0))
    return [
        {key: value[start:stop] for key, value in outputs.items()}
        for start, stop in itertools.pairwise(bounds)
    ]


# --------------------------------------------------------------------------- scheduling


class _Task:
    """One request (or one split of a large one, or several coalesced ones) waiting for its
    rows of a batch."""

    __slots__ = ("enqueued", "enqueued_ns", "feeds", "future", "requests", "rows", "trace")

    def __init__(self, feeds: Feeds, rows: int, requests: int = 1) -> None:
        self.feeds = feeds
        self.rows = rows
        self.requests = requests
        self.enqueued = time.monotonic()
        self.future: Future[Outputs] = Future()
        self.trace = tracing.active()  # the request's trace rides along to the batch thread
        self.enqueued_ns = time.time_ns() if self.trace is not None else 0


def _fail(tasks: Sequence[_Task], error: ServingError) -> None:
    for task in tasks:
        task.future.set_exception(error)


def _finished(signature: Signature, feeds: Feeds, output_keys: Sequence[str]) -> Future[Outputs]:
    future: Future[Outputs] = Future()
    trace = tracing.active()
    run = signature.run if trace is None else trace.timed("model", signature.run)
    try:
        future.set_result(run(feeds, output_keys))
    except ServingError as exc:
        future.set_exception(exc)
    return future


def _joined(parts: Sequence[Future[Outputs]]) -> Future[Outputs]:
    """One future for a split request: its chunks' rows concatenated, or the first error."""
    joined: Future[Outputs] = Future()
    pending = [len(parts)]
    lock = threading.Lock()

    def part_done(_part: Future[Outputs]) -> None:
        with lock:
            pending[0] -= 1
            if pending[0]:
                return
        if not joined.set_running_or_notify_cancel():
            return  # the caller went away
        errors_ = [p.exception() for p in parts if p.exception() is not None]
        if errors_:
            joined.set_exception(errors_[0])  # type: ignore[arg-type]
            return
        results = [p.result() for p in parts]
        joined.set_result({k: np.concatenate([r[k] for r in results]) for k in results[0]})

    for part in parts:
        part.add_done_callback(part_done)
    return joined


class _Batch:
    __slots__ = ("rows", "tasks")

    def __init__(self, *tasks: _Task) -> None:
        self.tasks: list[_Task] = list(tasks)
        self.rows = sum(task.rows for task in tasks)


@dataclass(frozen=True, slots=True)
class _Lane:
    """What a batch runs: one servable's signature, for the outputs its requests asked for."""

    servable: Servable
    signature: Signature
    output_keys: tuple[str, ...]


class _Queue:
    """Pending batches of one lane and input layout; the last is open."""

    def __init__(self, lane: _Lane) -> None:
        self.lane = lane
        self.batches: collections.deque[_Batch] = collections.deque([_Batch()])

    def add(self, task: _Task, config: BatchingConfig) -> bool:
        """Append to the open batch, opening a new one when it would overflow.

        True when a batch thread should look again: the queue's first task (a new deadline)
        or a batch that is now ready. Waking a thread for every other task would cost a GIL
        hand-off per request and tell it nothing new.
        """
        open_batch = self.batches[-1]
        if open_batch.rows + task.rows > config.execution_batch_size:
            if len(self.batches) >= config.max_enqueued_batches:
                raise ServingError(
                    Code.UNAVAILABLE,
                    "The batch scheduling queue to which this task was submitted is full",
                )
            open_batch = _Batch()
            self.batches.append(open_batch)
        open_batch.tasks.append(task)
        open_batch.rows += task.rows
        first = len(self.batches) == 1 and len(open_batch.tasks) == 1
        return first or self.ready_at(config) == 0.0

    def ready_at(self, config: BatchingConfig) -> float:
        """When the head batch may run: now if closed or full, else its oldest + timeout."""
        head = self.batches[0]
        if len(self.batches) > 1 or head.rows >= config.execution_batch_size:
            return 0.0
        return head.tasks[0].enqueued + config.timeout_seconds


class BatchScheduler:
    """A pool of batch threads shared by every queue that uses one BatchingConfig."""

    def __init__(self, config: BatchingConfig, metrics: ServingMetrics | None = None) -> None:
        self.config = config
        self._metrics = metrics
        self._queues: dict[tuple, _Queue] = {}
        self._cond = threading.Condition()
        self._closed = False
        self._running = 0  # batches being run, by batch threads or by callers (run_here)
        self._threads = [
            guarded_thread(f"{config.thread_pool_name}-{i}", self._work, daemon=True)
            for i in range(config.num_batch_threads)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, key: tuple, lane: _Lane, task: _Task) -> None:
        """Enqueue at once or raise UNAVAILABLE; never blocks on a full queue."""
        with self._cond:
            if self._closed:
                raise ServingError(Code.UNAVAILABLE, "The batch scheduler is shutting down")
            queue = self._queues.get(key)
            if queue is None:
                queue = self._queues[key] = _Queue(lane)
            if queue.add(task, self.config):
                self._cond.notify()

    def run_here(self, key: tuple, lane: _Lane, task: _Task) -> bool:
        """Run a task that needs to wait for nothing as a batch of its own, in the caller's
        thread, if a batch thread's turn is free; False (nothing done) otherwise.

        A task needs to wait for nothing when the batch would close at once anyway: with
        `batch_timeout_micros` 0 (a batch runs as soon as a thread is free, with what is
        queued) or when it fills a batch alone, and with nothing queued ahead of it for the
        same key. The caller counts as one of `num_batch_threads` while it runs, so as many
        batches run at once as without it. What it saves is a thread hop and the GIL
        hand-offs around it, which on 2 cores cost more than the model call (measured in
        docs/performance.md); a front end's dispatcher blocked meanwhile gathers the next
        calls, which then arrive together."""
        config = self.config
        with self._cond:
            if (
                self._closed
                or key in self._queues
                or self._running >= config.num_batch_threads
                or (config.batch_timeout_micros and task.rows < config.execution_batch_size)
            ):
                return False
            self._running += 1
        try:
            self._run(_Queue(lane), _Batch(task))
        finally:
            self._release_turn()
        return True

    def _release_turn(self) -> None:
        with self._cond:
            self._running -= 1
            if self._queues:  # a batch thread may now take a batch; else waking one is waste
                self._cond.notify()

    def close(self) -> None:
        """Run what is queued, then stop the threads."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join()

    def _work(self) -> None:
        while True:
            with self._cond:
                taken = self._take_ready()
                while taken is None:
                    if self._closed and not self._queues:
                        return
                    self._cond.wait(self._wait_seconds())
                    taken = self._take_ready()
                self._running += 1
            try:
                self._run(*taken)
            finally:
                self._release_turn()

    def _take_ready(self) -> tuple[_Queue, _Batch] | None:
        """The ready head batch of the queue waiting longest (fair across models), if a
        batch's turn is free (a caller may hold one: `run_here`)."""
        if self._running >= self.config.num_batch_threads:
            return None
        now = time.monotonic()
        best: tuple[float, tuple] | None = None
        for key, queue in self._queues.items():
            ready = 0.0 if self._closed else queue.ready_at(self.config)
            if ready <= now:
                oldest = queue.batches[0].tasks[0].enqueued
                if best is None or oldest < best[0]:
                    best = (oldest, key)
        if best is None:
            return None
        queue = self._queues[best[1]]
        batch = queue.batches.popleft()
        if not queue.batches:
            del self._queues[best[1]]  # no idle queue keeps a servable alive
        return queue, batch

    def _wait_seconds(self) -> float | None:
        if not self._queues or self._running >= self.config.num_batch_threads:
            return None  # until notified: a task arrives or a turn is released
        soonest = min(q.ready_at(self.config) for q in self._queues.values())
        return max(soonest - time.monotonic(), 0.0)

    def _run(self, queue: _Queue, batch: _Batch) -> None:
        """One model call for the whole batch; every task gets its rows or the error.

        Tasks whose caller went away (a cancelled gRPC call cancels its future) are dropped
        first; marking the rest running means they can no longer be cancelled mid-batch.
        """
        tasks = [t for t in batch.tasks if t.future.set_running_or_notify_cancel()]
        if not tasks:
            return
        rows = sum(t.rows for t in tasks)
        padded = self.config.padded_size(rows)
        traced = [t for t in tasks if t.trace is not None]
        started = time.time_ns() if traced else 0
        try:
            self._record(queue, tasks, padded, rows)
            merged = merge_inputs(
                tuple(queue.lane.signature.inputs),
                [t.feeds for t in tasks],
                padded,
                self.config.pad_variable_length_inputs,
            )
            called = time.time_ns() if traced else 0
            outputs = queue.lane.signature.run(merged, queue.lane.output_keys)
            returned = time.time_ns() if traced else 0
            results = split_outputs(outputs, [t.rows for t in tasks], padded)
            for task in traced:
                _trace_batch(task, started, called, returned, padded)
        except ServingError as exc:
            _fail(tasks, exc)
        except Exception:
            log.exception("batch of %s failed", queue.lane.servable)
            _fail(tasks, errors.internal())
        else:
            for task, rows in zip(tasks, results, strict=True):
                task.future.set_result(rows)

    def _record(self, queue: _Queue, tasks: Sequence[_Task], padded: int, rows: int) -> None:
        if self._metrics is None:
            return
        now = time.monotonic()
        pool = self.config.thread_pool_name
        waits = [now - task.enqueued for task in tasks for _ in range(task.requests)]
        self._metrics.record_queuing(pool, waits)
        self._metrics.record_batch(queue.lane.servable.name, pool, padded, padded - rows)


def _trace_batch(task: _Task, started: int, called: int, returned: int, padded: int) -> None:
    """The task's queue, batch and model stages (tracing.py)."""
    trace = task.trace
    assert trace is not None
    trace.stage("queue", task.enqueued_ns, started)
    trace.stage("batch", started, time.time_ns(), **{"batch.size": padded})
    trace.stage("model", called, returned)


class BatchingRunner:
    """An `InferenceService` runner that batches; one per process.

    `default` applies to every servable unless `configure` gave it its own parameters
    (`--enable_per_model_batching_parameters`). Schedulers are created per distinct config.
    """

    def __init__(self, default: BatchingConfig, metrics: ServingMetrics | None = None) -> None:
        self._default = default
        self._metrics = metrics
        self._per_servable: weakref.WeakKeyDictionary[Servable, BatchingConfig] = (
            weakref.WeakKeyDictionary()
        )
        self._schedulers: dict[BatchingConfig, BatchScheduler] = {}
        self._lock = threading.Lock()
        self._closed = False

    def configure(self, servable: Servable, config: BatchingConfig) -> None:
        """Give one loaded version its own parameters (forgotten when it is released)."""
        self._per_servable[servable] = config

    def config_for(self, servable: Servable) -> BatchingConfig:
        return self._per_servable.get(servable, self._default)

    def __call__(
        self,
        servable: Servable,
        signature: Signature,
        feeds: Feeds,
        output_keys: Sequence[str],
    ) -> Mapping[str, np.ndarray]:
        """The blocking form: wait in the caller's thread for this request's rows."""
        return self.submit(servable, signature, feeds, output_keys).result()

    def submit(
        self,
        servable: Servable,
        signature: Signature,
        feeds: Feeds,
        output_keys: Sequence[str],
        requests: int = 1,
        run_here: bool = False,
    ) -> Future[Outputs]:
        """Queue the request (split if it exceeds one call); the future gets its own rows.

        `requests` > 1: the feeds are that many requests of equal size, already merged (the
        gRPC front end coalesces what arrives together); they are split only between
        requests, so each one is batched exactly as it would have been alone.
        `run_here`: the caller may run the batch itself when it need not wait for more
        rows (`BatchScheduler.run_here` says when and why); it comes back finished.
        A full queue raises UNAVAILABLE here, at once; an input that cannot be batched runs
        alone, now, and comes back as a finished future.
        """
        config = self.config_for(servable)
        keyed = batch_key(signature, feeds, config.pad_variable_length_inputs)
        if keyed is None:
            return _finished(signature, feeds, output_keys)
        rows, layout = keyed
        lane = _Lane(servable, signature, tuple(output_keys))
        key = (id(servable), signature.key, lane.output_keys, layout)
        scheduler = self._scheduler(config)
        chunks = self._chunks(feeds, rows, config, requests)
        tasks = [_Task(chunk, size, max(1, size * requests // rows)) for chunk, size in chunks]
        alone = len(tasks) == 1
        if run_here and alone and scheduler.run_here(key, lane, tasks[0]):
            return tasks[0].future
        for task in tasks:
            scheduler.submit(key, lane, task)
        if len(tasks) == 1:
            return tasks[0].future
        return _joined([task.future for task in tasks])

    @staticmethod
    def _chunks(
        feeds: Feeds, rows: int, config: BatchingConfig, requests: int
    ) -> list[tuple[Feeds, int]]:
        """The request itself, or its splits when it exceeds one model call; coalesced
        requests are split between requests, as many whole ones per chunk as fit."""
        limit = config.execution_batch_size
        if rows <= limit:
            return [(feeds, rows)]
        size = rows // requests if rows % requests == 0 else rows
        if size <= limit:
            limit = limit // size * size
        elif not config.splits or size > config.max_batch_size:
            raise errors.invalid_argument(
                f"Task size {size} is larger than maximum input batch size "
                f"{config.max_batch_size if config.splits else limit}"
            )
        return [
            ({alias: value[start : start + limit] for alias, value in feeds.items()},
             min(limit, rows - start))
            for start in range(0, rows, limit)
        ]  # fmt: skip

    def _scheduler(self, config: BatchingConfig) -> BatchScheduler:
        scheduler = self._schedulers.get(config)
        if scheduler is None:
            with self._lock:
                if self._closed:  # a late request must not start a fresh pool
                    raise ServingError(Code.UNAVAILABLE, "The batch scheduler is shutting down")
                scheduler = self._schedulers.get(config)
                if scheduler is None:
                    scheduler = BatchScheduler(config, self._metrics)
                    self._schedulers[config] = scheduler
        return scheduler

    def close(self) -> None:
        """Finish queued batches and stop every batch thread (after the servers drained)."""
        with self._lock:
            self._closed = True
            schedulers = list(self._schedulers.values())
            self._schedulers.clear()
        for scheduler in schedulers:
            scheduler.close()
