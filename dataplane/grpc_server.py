"""The gRPC front end: a native transport feeding one Python dispatcher thread.

The native transport (native/, Rust: hyper + h2 + rustls) owns HTTP/2, TLS, deadlines
and flow control on threads that never touch Python. Calls whose request has arrived queue
up; the dispatcher thread takes everything queued at once, decodes each request with the
official message class, runs its handler and writes the answer. One thread, and one GIL
hand-off per wake-up rather than several per call, is what makes a small call cheap: measured
against grpc.aio on this machine it doubles throughput and halves p99 (docs/performance.md).

Handlers are plain functions of the request. A handler that cannot answer at once (a batched or
offloaded model call) returns a Future; the answer is written from the thread that completes
it, and a call the client cancels cancels that Future (so a batch drops the caller). No handler
blocks the dispatcher: a model call runs inline only when it is short (offload.py), a config
reload queues on its own thread and returns a Future (reload_queue.py), and server-streaming
handlers get a `ResponseStream` and write to it from their own thread.

Before a request is decoded, a call whose deadline has passed while it queued is answered
DEADLINE_EXCEEDED, and a call to an `admin` route must carry the admin credential
(admin_auth.py), or it is answered UNAUTHENTICATED.

A route may also *coalesce*: the unary calls to it that one wake-up takes are offered to its
coalescer together, which may answer several with one piece of work (a `Joint`: with
batching, concurrent Predicts to one signature become one plan and one batcher task instead
of one each, which is where the per-request Python cost went). A joint that fails is served
again call by call, so coalescing never changes an answer, only what it costs.
"""

from __future__ import annotations

import enum
import functools
import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from google.protobuf import message_factory
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError, Message

from dataplane.admin_auth import DENIED, OPEN, AdminAuth
from dataplane.errors import INTERNAL_MESSAGE, Code, ServingError
from dataplane.supervision import guarded_thread
from dataplane.tracing import CURRENT_CALL
from dataplane.transport import Call, Frontend, Transport, select_transport

log = logging.getLogger(__name__)

ChannelArgs = Sequence[tuple[str, int | str]]


class Kind(enum.Enum):
    UNARY = "unary"  # answered on the dispatcher, or later through a Future
    STREAM = "stream"  # server streaming: the handler gets a ResponseStream


@dataclass(frozen=True, slots=True)
class Joint:
    """Several requests answered by one piece of work: `members` index the requests handed
    to the coalescer, and `answers` resolves to their serialized responses in that order."""

    members: Sequence[int]
    answers: Future[Sequence[bytes]]


Coalescer = Callable[[Sequence[Message]], Sequence[Joint]]


@dataclass(frozen=True, slots=True)
class Route:
    """How one method path is served."""

    request_type: type[Message]
    handler: Callable[..., Any]
    kind: Kind
    coalesce: Coalescer | None = None  # only for UNARY routes
    admin: bool = False  # needs the admin credential (admin_auth.py) when one is configured


Routes = Mapping[str, Route]


def service_routes(
    service: ServiceDescriptor,
    handlers: Mapping[str, Callable[..., Any]],
    coalescers: Mapping[str, Coalescer] | None = None,
    admin: Collection[str] = (),
) -> dict[str, Route]:
    """Routes for one service of an official proto: request types and streaming kinds come
    from its descriptor, so a handler can only be bound to a method that exists."""
    coalescers = coalescers or {}
    routes: dict[str, Route] = {}
    for name, handler in handlers.items():
        method = service.methods_by_name.get(name)
        if method is None:
            raise ValueError(f"{service.full_name} has no method {name}")
        kind = Kind.STREAM if method.server_streaming else Kind.UNARY
        coalesce = coalescers.get(name)
        if coalesce is not None and kind is not Kind.UNARY:
            raise ValueError(f"{service.full_name}.{name} is not unary; it cannot coalesce")
        request_type = message_factory.GetMessageClass(method.input_type)
        path = f"/{service.full_name}/{name}"
        routes[path] = Route(request_type, handler, kind, coalesce, admin=name in admin)
    return routes


class ResponseStream:
    """The writing end of a server-streaming call."""

    def __init__(self, call: Call) -> None:
        self._call = call

    @property
    def active(self) -> bool:
        """False once the client has gone away or the call was cancelled."""
        return not self._call.cancelled

    def send(self, message: Message) -> bool:
        """Queue one message; False if the call is already over."""
        return self._call.write(message.SerializeToString())

    def close(self) -> None:
        """End the stream with OK once the queued messages are written."""
        self._call.close_stream()


class GrpcServer:
    """Owns the transport and the dispatcher thread."""

    def __init__(
        self,
        routes: Routes,
        channel_args: ChannelArgs,
        spin_microseconds: int = 0,
        transport: Transport | None = None,
        admin_auth: AdminAuth = OPEN,
    ) -> None:
        """`spin_microseconds`: how long the dispatcher polls for a next call, under light
        load, before it sleeps (native/src/queue.rs, CallQueue::take_all says why).
        `transport`: the module serving the calls (--grpc_transport; default: native).
        `admin_auth`: who may call the routes marked `admin` (open by default, as TF Serving)."""
        self._transport = transport or select_transport()
        self._routes = dict(routes)
        self._admin_auth = admin_auth
        self._channel_args = list(channel_args)
        self._spin_microseconds = spin_microseconds
        self._frontend: Frontend | None = None
        self._stopping = False
        # Per-call errors fail only that call; anything else ending the dispatcher is fatal.
        self._dispatcher = guarded_thread(
            "grpc-dispatch", self._dispatch_forever, should_run=lambda: not self._stopping
        )
        self._waiting: dict[int, Future[Message]] = {}  # answers to come, by call id

    def start(self, addresses: Sequence[str]) -> int:
        """Bind every address and start serving; returns the port bound for the last one."""
        self._frontend = self._transport.frontend(
            addresses, self._channel_args, self._spin_microseconds
        )
        ports = self._frontend.start()
        self._dispatcher.start()
        return ports[-1]

    def stop(self, grace_seconds: float) -> None:
        """Refuse new calls, let in-flight ones finish within the grace period, then stop."""
        self._stopping = True
        if self._frontend is not None:
            self._frontend.shutdown(grace_seconds)
            self._frontend.close()
        if self._dispatcher.is_alive():
            self._dispatcher.join()

    def wait(self) -> None:
        """Block until the server has stopped."""
        self._dispatcher.join()

    def _dispatch_forever(self) -> None:
        assert self._frontend is not None
        while calls := self._frontend.next_calls():
            together: dict[str, list[tuple[Call, Message]]] = {}
            for call in calls:
                try:
                    self._take(call, together)
                except Exception as exc:
                    _fail(call, exc)
            for method, received in together.items():
                try:
                    self._answer_together(self._routes[method], received)
                except Exception as exc:  # calls already answered ignore a second answer
                    for call, _ in received:
                        _fail(call, exc)

    def _take(
        self,
        call: Call,
        together: dict[str, list[tuple[Call, Message]]],
    ) -> None:
        """Answer one call now, or keep it with the calls to coalesce."""
        decoded = self._decode(call)
        if decoded is None:
            return
        route, request = decoded
        if route.coalesce is not None:
            together.setdefault(call.method, []).append((call, request))
        else:
            self._answer(call, route, request)

    def _decode(self, call: Call) -> tuple[Route, Message] | None:
        """The call's route and request, or None when it is already dealt with."""
        if call.cancelled:  # gone before we started, or a cancellation of one we hold
            waiting = self._waiting.pop(call.id, None)
            if waiting is not None:
                waiting.cancel()
            return None
        if call.expired:  # its client no longer waits: running it would be wasted work
            call.abort(Code.DEADLINE_EXCEEDED, "Deadline Exceeded")
            return None
        route = self._routes.get(call.method)
        if route is None:
            call.abort(Code.UNIMPLEMENTED, f"Method not found: {call.method}")
            return None
        if route.admin and not self._admin_auth.allows(call.metadata, call.client_verified):
            call.abort(Code.UNAUTHENTICATED, DENIED)
            return None
        try:
            return route, route.request_type.FromString(call.request)
        except DecodeError:
            message = f"cannot parse the request as {route.request_type.DESCRIPTOR.full_name}"
            call.abort(Code.INVALID_ARGUMENT, message)
            return None

    def _answer_together(self, route: Route, received: Sequence[tuple[Call, Message]]) -> None:
        """Offer calls taken together to the route's coalescer; serve the rest one by one.

        Calls in a joint are not registered for cancellation: a client that goes away is
        answered CANCELLED by the transport, and its rows are computed with the others."""
        assert route.coalesce is not None
        joints: Sequence[Joint] = ()
        if len(received) > 1:
            try:
                joints = route.coalesce([request for _, request in received])
            except Exception:
                log.exception("coalescing %d calls failed; serving them one by one", len(received))
        alone = set(range(len(received)))
        for joint in joints:
            members = [received[i] for i in joint.members]
            alone.difference_update(joint.members)
            joint.answers.add_done_callback(functools.partial(self._reply_joint, route, members))
        for index in sorted(alone):
            call, request = received[index]
            self._answer(call, route, request)

    def _reply_joint(
        self,
        route: Route,
        members: Sequence[tuple[Call, Message]],
        done: Future[Sequence[bytes]],
    ) -> None:
        responses = None if done.cancelled() or done.exception() else done.result()
        if responses is None or len(responses) != len(members):
            for call, request in members:  # each gets exactly its own answer or error
                self._answer(call, route, request)
            return
        for (call, _), response in zip(members, responses, strict=True):
            try:
                call.finish(response)
            except Exception as exc:
                _fail(call, exc)

    def _answer(self, call: Call, route: Route, request: Message) -> None:
        """Run the handler with the call as CURRENT_CALL (its metadata, for tracing.py and the
        log lines of request_ids.py), and no longer once the handler returns."""
        token = CURRENT_CALL.set(call)
        try:
            self._run(call, route, request)
        finally:
            CURRENT_CALL.reset(token)

    def _run(self, call: Call, route: Route, request: Message) -> None:
        """Run the handler; whatever goes wrong fails this call only."""
        try:
            if route.kind is Kind.STREAM:
                route.handler(request, ResponseStream(call))
                return
            answer = route.handler(request)
            if not isinstance(answer, Future):
                call.finish(answer.SerializeToString())
                return
        except BaseException as exc:
            _fail(call, exc)
            return
        if answer.done():
            _reply(call, answer)
        else:
            self._waiting[call.id] = answer
            answer.add_done_callback(lambda done: self._reply_later(call, done))

    def _reply_later(self, call: Call, done: Future[Message]) -> None:
        self._waiting.pop(call.id, None)
        _reply(call, done)


def _reply(call: Call, done: Future[Message]) -> None:
    if done.cancelled():  # the transport has already ended the call
        return
    error = done.exception()
    if error is not None:
        _fail(call, error)
        return
    try:  # runs as a future's callback, where an escaping error would leave the call hanging
        call.finish(done.result().SerializeToString())
    except Exception as exc:
        _fail(call, exc)


# grpcio clients refuse status details over 8 KiB at random and over 16 KiB always (as
# trailer metadata); a message that echoes client input (a model name) is cut well below that.
# The limit is on the wire form: grpc-message percent-encodes every byte outside printable
# ASCII (and "%") as three characters.
MAX_STATUS_DETAILS_BYTES = 4096


def status_details(message: str) -> str:
    """`message`, cut (ending "...") where its percent-encoded form would pass
    MAX_STATUS_DETAILS_BYTES."""
    encoded = message.encode()
    if len(encoded) * 3 <= MAX_STATUS_DETAILS_BYTES:
        return message
    size = 0
    for end, byte in enumerate(encoded):
        size += 1 if 0x20 <= byte <= 0x7E and byte != 0x25 else 3
        if size > MAX_STATUS_DETAILS_BYTES - 3:
            return encoded[:end].decode(errors="ignore") + "..."
    return message


def _fail(call: Call, exc: BaseException) -> None:
    """Core errors carry TF Serving's codes; anything else is a bug: INTERNAL with a fixed
    message for the client (the exception's text may hold internals), the traceback logged."""
    if isinstance(exc, ServingError):
        call.abort(exc.code, status_details(exc.message))
        return
    log.error("unexpected error in %s", call.method, exc_info=exc)
    call.abort(Code.INTERNAL, INTERNAL_MESSAGE)
