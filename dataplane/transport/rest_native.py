"""REST over the native transport: hyper's HTTP/1.1 (native/src/rest.rs) feeding one Python
dispatcher thread, behind the same interface as `dataplane.http_server.HttpServer`.

Rust reads and frames requests and refuses on its own what needs no Python (oversize bodies,
slow or idle clients, too many connections or waiting requests, answers past the timeout);
whole requests arrive here in batches, one GIL hand-off for all that queued meanwhile. The
dispatcher runs the handler as the uvloop server's loop thread does: a handler that cannot
answer at once returns a Future, answered from whichever thread completes it. A request whose
client went away (or that timed out) comes back `ended`, and the Future it is waited on by is
cancelled, so a batch drops the caller. `--rest_transport=native` selects it.
"""

from __future__ import annotations

import functools
from concurrent.futures import Future

from dataplane.http_server import (
    ErrorResponder,
    Handler,
    HttpLimits,
    Request,
    Response,
    internal_error,
    settle,
)
from dataplane.supervision import guarded_thread
from dataplane.transport import TlsTuple
from dataplane.transport._native import RestFrontend, RestRequest


class NativeHttpServer:
    """Serves `handler` over HTTP/1.1 from the native transport's threads and one dispatcher."""

    def __init__(
        self,
        handler: Handler,
        *,
        limits: HttpLimits,
        host: str = "0.0.0.0",
        port: int = 0,
        common_headers: tuple[tuple[str, str], ...] = (),
        error_response: ErrorResponder = internal_error,
        tls: TlsTuple | None = None,
        spin_microseconds: int = 0,
    ) -> None:
        """`tls`: serve HTTPS with these PEMs; `spin_microseconds`: how long the dispatcher
        polls for a next request under light load before it sleeps (queue.rs says why)."""
        self.handler = handler
        self.error_response = error_response
        self._common_headers = list(common_headers)
        self._frontend = RestFrontend(
            f"{host}:{port}",
            limits.max_body_bytes,
            limits.request_timeout_s,
            limits.answer_timeout_s,
            limits.idle_timeout_s,
            max(limits.max_connections, 0),
            max(limits.max_pending, 0),
            spin_microseconds,
            tls,
        )
        self._port: int | None = None
        self._stopping = False
        self._waiting: dict[int, Future[Response]] = {}  # answers to come, by request id
        # Per-request errors fail only that request; anything else ending the dispatcher is fatal.
        self._dispatcher = guarded_thread(
            "rest-dispatch", self._dispatch_forever, should_run=lambda: not self._stopping
        )

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("server not started")
        return self._port

    def start(self) -> None:
        """Bind and listen (a port in use raises OSError here); serve on new threads."""
        try:
            self._port = self._frontend.start()
        except RuntimeError as exc:
            raise OSError(str(exc)) from exc
        self._dispatcher.start()

    def stop(self, grace_seconds: float = 5.0) -> None:
        """Stop accepting, let requests under way finish (up to the grace period), close all."""
        self._stopping = True
        self._frontend.shutdown(grace_seconds)
        self._frontend.close()
        if self._dispatcher.is_alive():
            self._dispatcher.join()

    def _dispatch_forever(self) -> None:
        while requests := self._frontend.next_requests():
            for request in requests:
                self._serve(request)

    def _serve(self, request: RestRequest) -> None:
        if request.ended:  # gone or timed out: a request whose answer is waited for drops it
            waiting = self._waiting.pop(request.id, None)
            if waiting is not None:
                waiting.cancel()
            return
        try:
            answer = self.handler(
                Request(
                    request.method,
                    request.path,
                    request.query,
                    dict(request.headers),
                    request.body,
                )
            )
        except Exception as exc:
            answer = self.error_response(exc)
        if not isinstance(answer, Future):
            self._respond(request, answer)
        elif answer.done():
            self._respond(request, settle(answer, self.error_response))
        else:
            self._waiting[request.id] = answer
            answer.add_done_callback(functools.partial(self._answered, request))

    def _answered(self, request: RestRequest, done: Future[Response]) -> None:
        """In the thread that finished the answer (a cancelled one is already answered)."""
        self._waiting.pop(request.id, None)
        if not done.cancelled():
            self._respond(request, settle(done, self.error_response))

    def _respond(self, request: RestRequest, response: Response) -> None:
        headers = [*response.headers, *self._common_headers]
        try:
            request.respond(response.status, response.content_type, headers, response.body)
        except Exception as exc:  # a handler's answer HTTP cannot carry is its bug
            fallback = internal_error(exc)
            request.respond(fallback.status, fallback.content_type, [], fallback.body)
