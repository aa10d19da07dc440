"""OpenTelemetry traces of inference requests (off unless --tracing_otlp_endpoint is set).

A traced request gets one server span (`PredictionService/Predict`, ...) whose parent is the
W3C `traceparent` the client sent (gRPC metadata or HTTP header), with one child per stage:
`decode` (request tensors to arrays), `queue` (waiting for a batch), `batch` (the batch's
merge, model call and split), `model` (the model call) and `encode` (the answer built), and
the model name, version and signature that answered as attributes.

Nothing of OpenTelemetry runs while the request is served: the stages only note
`time.time_ns()` pairs on a `RequestTrace`, and the spans are made, with those times, when
the request ends. With tracing off, `Tracing.begin` returns `NO_TRACE`, whose methods hand
their arguments back unchanged. The core reaches the request's trace through `active()`
(a context variable the front end sets around `submit`, so the batcher's task can carry it
to the batch thread).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from contextvars import ContextVar
from typing import Any, TypeVar

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

Result = TypeVar("Result")
Answer = TypeVar("Answer")
Fn = TypeVar("Fn", bound=Callable[..., Any])

# The request being submitted in this thread (see module docstring); None: not traced.
_ACTIVE: ContextVar[RequestTrace | None] = ContextVar("request_trace", default=None)
# The transport call whose handler runs in this thread (the gRPC dispatcher sets it), whose
# `metadata` carries the client's traceparent.
CURRENT_CALL: ContextVar[Any] = ContextVar("current_call", default=None)
_PROPAGATOR = TraceContextTextMapPropagator()


def _sampled(traceparent: str | None, ratio: float) -> bool:
    """The caller's decision (the last byte of a well-formed traceparent: trace-flags, bit 0
    sampled), else a draw at `ratio`."""
    if traceparent is not None and len(traceparent) == 55 and traceparent[52] == "-":
        try:
            return bool(int(traceparent[53:], 16) & 1)
        except ValueError:
            pass
    return random.random() < ratio


def active() -> RequestTrace | None:
    return _ACTIVE.get()


class RequestTrace:
    """One request's stage times and attributes, made into spans when it ends."""

    __slots__ = ("_tracing", "attributes", "carrier", "name", "stages", "start_ns")

    def __init__(self, tracing: Tracing, name: str, carrier: Mapping[str, str]) -> None:
        self._tracing = tracing
        self.name = name
        self.carrier = carrier
        self.start_ns = time.time_ns()
        self.stages: list[tuple[str, int, int, Mapping[str, Any]]] = []
        self.attributes: dict[str, Any] = {}

    def stage(self, name: str, start_ns: int, end_ns: int, **attributes: Any) -> None:
        self.stages.append((name, start_ns, end_ns, attributes))

    def timed(self, name: str, fn: Fn) -> Fn:
        """`fn`, its run recorded as stage `name`."""

        def run(*args: Any) -> Any:
            start = time.time_ns()
            try:
                return fn(*args)
            finally:
                self.stage(name, start, time.time_ns())

        return run  # type: ignore[return-value]

    def answer(self, fn: Callable[[Result], Answer]) -> Callable[[Result], Answer]:
        """The answer function, timed as `encode`; the result names the model that ran."""

        def encode(result: Result) -> Answer:
            resolved = getattr(result, "resolved", None)
            if resolved is not None:
                self.attributes["model.name"] = resolved.name
                self.attributes["model.version"] = resolved.version
                self.attributes["model.signature_name"] = resolved.signature_name
            return self.timed("encode", fn)(result)

        return encode

    def submit(self, submit: Callable[[], Future[Answer]]) -> Future[Answer]:
        """Run `submit` (the core's) with this trace active; the spans follow its answer."""
        token = _ACTIVE.set(self)
        try:
            future = submit()
        finally:
            _ACTIVE.reset(token)
        future.add_done_callback(self._end)
        return future

    def _end(self, done: Future[Any]) -> None:
        error = None if done.cancelled() else done.exception()
        self._tracing.export(self, "cancelled" if done.cancelled() else error)


class _NoTrace:
    """What an untraced request gets: everything passes through unchanged."""

    def timed(self, name: str, fn: Fn) -> Fn:
        return fn

    def answer(self, fn: Callable[[Result], Answer]) -> Callable[[Result], Answer]:
        return fn

    def submit(self, submit: Callable[[], Future[Answer]]) -> Future[Answer]:
        return submit()


NO_TRACE = _NoTrace()
Traced = RequestTrace | _NoTrace  # what a front end threads through one request


class Tracing:
    """The process's tracer; `Tracing.off()` traces nothing at (almost) no cost."""

    def __init__(self, processor: SpanProcessor | None, sample_ratio: float = 1.0) -> None:
        """`sample_ratio`: the share of requests without a `traceparent` that are traced; a
        request with one follows its caller's sampled flag (W3C trace-flags)."""
        self._ratio = sample_ratio
        self._provider: TracerProvider | None = None
        self._tracer: trace.Tracer | None = None
        if processor is not None:
            resource = Resource.create({"service.name": "modelplane-dataplane"})
            self._provider = TracerProvider(resource=resource)
            self._provider.add_span_processor(processor)
            self._tracer = self._provider.get_tracer("dataplane")

    @classmethod
    def off(cls) -> Tracing:
        return cls(None)

    @classmethod
    def to_otlp(cls, endpoint: str, sample_ratio: float = 1.0) -> Tracing:
        """Spans batched to an OTLP/gRPC collector (e.g. `http://otel-collector:4317`)."""
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter: SpanExporter = OTLPSpanExporter(endpoint=endpoint, insecure=True)
        return cls(BatchSpanProcessor(exporter), sample_ratio)

    @property
    def enabled(self) -> bool:
        return self._tracer is not None

    def begin(self, name: str, headers: Iterable[tuple[str, str]] | None) -> Traced:
        """A trace for one request, parented by its `traceparent` (`headers`: lower-case
        name/value pairs); NO_TRACE when tracing is off or the request is not sampled
        (making spans costs tens of microseconds each in the Python SDK: sampling is the
        remedy)."""
        if self._tracer is None:
            return NO_TRACE
        carrier = dict(headers or ())
        if not _sampled(carrier.get("traceparent"), self._ratio):
            return NO_TRACE
        return RequestTrace(self, name, carrier)

    def begin_call(self, name: str) -> Traced:
        """`begin` for the gRPC call the dispatcher is handling in this thread."""
        if self._tracer is None:
            return NO_TRACE
        call = CURRENT_CALL.get()
        return self.begin(name, call.metadata if call is not None else ())

    def export(self, request: RequestTrace, error: BaseException | str | None) -> None:
        assert self._tracer is not None
        parent = _PROPAGATOR.extract(request.carrier)
        span = self._tracer.start_span(
            request.name,
            context=parent,
            kind=SpanKind.SERVER,
            start_time=request.start_ns,
            attributes=request.attributes,
        )
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, str(error)))
        context = trace.set_span_in_context(span)
        end = request.start_ns
        for name, start_ns, end_ns, attributes in request.stages:
            child = self._tracer.start_span(
                name, context=context, start_time=start_ns, attributes=attributes
            )
            child.set_attributes(request.attributes)
            child.end(end_time=end_ns)
            end = max(end, end_ns)
        span.end(end_time=max(end, time.time_ns()))

    def shutdown(self) -> None:
        """Export what is buffered (the SIGTERM drain calls this last)."""
        if self._provider is not None:
            self._provider.shutdown()
