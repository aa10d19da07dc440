"""The gRPC transport on grpcio: the fallback when the native extension is not built.

Same contract as the native module (see `dataplane/transport/__init__.py`): every method is
served by one generic handler that takes raw bytes, so the transport knows nothing of the
services. grpcio runs each call's handler on a thread of its own; that thread queues the call
for the ONE Python dispatcher and then waits for the answer (`finish`, `abort`, or `write`s and
`close_stream`), which it hands back to grpcio. Cancellation, deadlines, message size limits,
TLS and the listening sockets are grpcio's.

Calls are registered as stream-stream whatever their shape: a unary answer is then one message
and an OK status, a server stream several, and the transport reads the one request itself, so a
call that carries none gets the same INTERNAL answer as on the native transport.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import grpc

from dataplane.transport import TlsTuple

# grpcio gives every call a thread of its own from its arrival (before its request message), so
# calls in grpcio's hands are bounded by the threads: the pending bound plus these, so that calls
# beyond the bound get a thread to be refused UNAVAILABLE; past that grpcio itself refuses them
# (RESOURCE_EXHAUSTED) without a thread, so streams that never send their message cannot park
# an unbounded number of threads.
_REFUSING_THREADS = 16
_UNBOUNDED_THREADS = 4096  # the thread bound without a pending bound


class _Finish:
    """The last item of a call's outbox: nothing after it is sent."""

    __slots__ = ("code", "message")

    def __init__(self, code: grpc.StatusCode | None, message: str = "") -> None:
        self.code = code  # None: OK
        self.message = message


_CLOSE = _Finish(None)
_CODES = {code.value[0]: code for code in grpc.StatusCode}


class Call:
    """One call whose request has arrived; its answer goes back through its handler thread."""

    __slots__ = (
        "_cancelled",
        "_deadline",
        "_dispatched",
        "_frontend",
        "_lock",
        "_outbox",
        "_over",
        "client_verified",
        "id",
        "metadata",
        "method",
        "request",
    )

    def __init__(
        self,
        call_id: int,
        method: str,
        request: bytes,
        metadata: list[tuple[str, str]],
        client_verified: bool,
        deadline: float | None,
        frontend: Frontend,
    ) -> None:
        self.id = call_id
        self.method = method
        self.request = request
        self.metadata = metadata
        self.client_verified = client_verified
        self._deadline = deadline
        self._outbox: queue.SimpleQueue[bytes | _Finish] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._over = False  # an answer (or the call's end) has been decided
        self._dispatched = False  # Python has been handed the call
        self._cancelled = False
        self._frontend = frontend

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    @property
    def expired(self) -> bool:
        return self._deadline is not None and time.monotonic() >= self._deadline

    def finish(self, response: bytes) -> bool:
        """Answer a unary call with `response` and OK."""
        with self._lock:
            if self._over:
                return False
            self._over = True
            self._outbox.put(response)
            self._outbox.put(_CLOSE)
        return True

    def abort(self, code: int, message: str) -> bool:
        """End the call with a non-OK status."""
        status = _CODES.get(code, grpc.StatusCode.UNKNOWN)
        return self._end(_Finish(status, message))

    def write(self, message: bytes) -> bool:
        """Queue one message of a server stream."""
        with self._lock:
            if self._over:
                return False
            self._outbox.put(message)
        return True

    def close_stream(self) -> bool:
        """End a server stream with OK once the queued messages are written."""
        return self._end(_CLOSE)

    def _end(self, last: _Finish) -> bool:
        with self._lock:
            if self._over:
                return False
            self._over = True
            self._outbox.put(last)
        return True

    def _ended_by_grpc(self) -> None:
        """grpcio's end-of-call callback: if Python had not answered, the client cancelled,
        the deadline passed or the server stopped; Python hears of it if it holds the call."""
        with self._lock:
            if self._over:
                return
            self._over = True
            self._cancelled = True
            self._outbox.put(_CLOSE)  # wakes the handler thread
            dispatched = self._dispatched
        if dispatched:
            self._frontend._queue_call(self)

    def _take(self) -> None:
        with self._lock:
            self._dispatched = True

    def _answers(self) -> Iterator[bytes | _Finish]:
        """What Python sends, as the handler thread gets it (ends with a _Finish)."""
        while True:
            item = self._outbox.get()
            yield item
            if isinstance(item, _Finish):
                return


class Frontend:
    """A grpcio server whose calls all go to one queue for the Python dispatcher."""

    def __init__(
        self,
        addresses: Sequence[str],
        channel_args: Sequence[tuple[str, int | str]],
        spin_microseconds: int = 0,
        tls: TlsTuple | None = None,
        max_pending_calls: int = 0,
    ) -> None:
        """`spin_microseconds` is accepted for the contract and unused: the dispatcher's wake-up
        is not what a call costs here. `max_pending_calls` > 0 bounds the calls the transport
        holds for Python (queued or not yet answered); more get UNAVAILABLE at once."""
        self._addresses = list(addresses)
        self._channel_args = list(channel_args)
        self._tls = tls
        self._max_pending = max_pending_calls
        self._pending = 0
        self._ids = itertools.count(1)
        self._calls: deque[Call] = deque()
        self._ready = threading.Condition()
        self._closed = False
        self._threads = (
            max_pending_calls + _REFUSING_THREADS if max_pending_calls else _UNBOUNDED_THREADS
        )
        self._pool = ThreadPoolExecutor(max_workers=self._threads, thread_name_prefix="grpcio")
        self._server: grpc.Server | None = None

    def start(self) -> list[int]:
        """Bind every address; returns the bound port of each (unix: addresses too)."""
        server = grpc.server(
            self._pool,
            handlers=(_GenericHandler(self),),
            options=self._channel_args,
            maximum_concurrent_rpcs=self._threads,
        )
        ports = []
        for address in self._addresses:
            try:
                ports.append(self._bind(server, address))
            except RuntimeError as exc:
                server.stop(None)
                raise RuntimeError(f"cannot listen on {address}: {exc}") from None
        server.start()
        self._server = server
        return ports

    def _bind(self, server: grpc.Server, address: str) -> int:
        if self._tls is None:
            return server.add_insecure_port(address)
        key, cert, ca, client_verify = self._tls
        credentials = grpc.ssl_server_credentials(
            [(key, cert)],
            root_certificates=ca if client_verify else None,
            require_client_auth=client_verify,
        )
        return server.add_secure_port(address, credentials)

    def shutdown(self, grace_seconds: float) -> None:
        """Refuse new calls, give in-flight ones `grace_seconds`, then cancel the rest (their
        cancellations reach the dispatcher before this returns)."""
        if self._server is None:
            return
        self._server.stop(grace_seconds).wait()
        self._server = None
        self._pool.shutdown(wait=True)

    def next_calls(self) -> list[Call]:
        """Every queued call (and cancellation), waiting while none is; [] once closed."""
        with self._ready:
            while not self._calls and not self._closed:
                self._ready.wait()
            calls = list(self._calls)
            self._calls.clear()
        for call in calls:
            call._take()
        return calls

    def close(self) -> None:
        """Wake the dispatcher for good: next_calls returns [] once the queue is empty."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()

    def _queue_call(self, call: Call) -> None:
        with self._ready:
            self._calls.append(call)
            self._ready.notify()

    def _admit(self) -> bool:
        with self._ready:
            if self._max_pending and self._pending >= self._max_pending:
                return False
            self._pending += 1
            return True

    def _release(self) -> None:
        with self._ready:
            self._pending -= 1

    def serve(
        self, requests: Iterator[bytes], context: grpc.ServicerContext, method: str
    ) -> Iterator[bytes]:
        """One call, on its grpcio handler thread: queue it, then send what Python answers."""
        request = next(requests, None)
        if request is None:
            context.abort(grpc.StatusCode.INTERNAL, "the call carried no request message")
        if not self._admit():
            context.abort(grpc.StatusCode.UNAVAILABLE, "too many calls pending; try again")
        try:
            call = self._call(method, request, context)
            self._queue_call(call)
            if not context.add_callback(call._ended_by_grpc):
                call._ended_by_grpc()  # over already
            for item in call._answers():
                if isinstance(item, bytes):
                    yield item
                elif item.code is not None:
                    context.abort(item.code, item.message)
        finally:
            self._release()

    def _call(self, method: str, request: bytes, context: grpc.ServicerContext) -> Call:
        remaining = context.time_remaining()
        deadline = None if remaining is None else time.monotonic() + remaining
        metadata = [
            (key, value)
            for key, value in context.invocation_metadata()
            if not key.endswith("-bin") and isinstance(value, str)
        ]
        verified = self._tls is not None and self._tls[3] and _has_peer_certificate(context)
        return Call(next(self._ids), method, request, metadata, verified, deadline, self)


def _has_peer_certificate(context: grpc.ServicerContext) -> bool:
    """With client_verify, grpcio has verified any certificate the peer presented."""
    return bool(context.auth_context().get("x509_pem_cert"))


class _GenericHandler(grpc.GenericRpcHandler):
    """Every method, as raw bytes in and out (no (de)serializer: grpcio passes bytes)."""

    def __init__(self, frontend: Frontend) -> None:
        self._frontend = frontend

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        method = handler_call_details.method
        serve = self._frontend.serve
        return grpc.stream_stream_rpc_method_handler(
            lambda requests, context: serve(requests, context, method)
        )
