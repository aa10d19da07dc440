"""A lean HTTP/1.1 server for the REST API: the protocol only, no routing or JSON semantics.

Why our own server: a REST Predict on a trivial model costs microseconds inside TensorFlow, so
every ~0.1 ms of server overhead shows in the ratio to the raw call. Framework stacks (ASGI +
middleware) and per-request thread hand-offs are where the Python peer spends 1.5-2 ms.

Design, the same as the gRPC front end's: ONE thread runs a uvloop event loop that reads every
connection, parses requests with bytes operations, calls the handler and writes the answer.
A handler that cannot answer at once (a batched model call, or one slow enough to go to the
offload pool) returns a Future; its answer is written when it completes, and a client that
goes away cancels it. One thread means no GIL ping-pong between connection threads: measured
against the previous thread-per-connection server, throughput at 32 clients went up ~3x
(docs/performance.md). Handlers therefore must not block.

Keep-alive, pipelining (a connection's requests are answered strictly in order), Content-Length
and chunked bodies, `Expect: 100-continue`, HEAD, HTTP/1.0 and a graceful drain are handled
here, and every bound a client could push on (`HttpLimits`: body size, read and answer
deadlines, idle time, connections, answers waited for); framings that another parser could read
differently are refused rather than guessed at. Nothing a client sends can raise out of the
loop. docs/security.md lists each limit and its answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from ssl import SSLContext

import orjson
import uvloop

from dataplane.errors import INTERNAL_MESSAGE
from dataplane.supervision import guarded_thread

log = logging.getLogger(__name__)

MAX_HEADER_BYTES = 64 * 1024
_SMALL_BODY = 64 * 1024  # bodies up to this size are sent in the same buffer as the head
_PAUSE_BYTES = 256 * 1024  # buffered input beyond which reading pauses while a request runs
_LINGER_SECONDS = 1.0  # how long to drain an unread body before closing after an error
_TICK_SECONDS = 0.1  # how often deadlines are checked
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 5.6.2: methods, field names
_MAX_LENGTH_DIGITS = 18  # any Content-Length this long is over every body limit
_OVERLOADED = "Too many requests are waiting for a model (--rest_api_max_pending_requests={})"
_TIMED_OUT = "Request timed out: no answer within {} ms (--rest_api_timeout_in_ms)"


@dataclass(slots=True)
class Request:
    """One parsed request. `headers` has lower-cased names; repeated headers are joined."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes


@dataclass(slots=True)
class Response:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


Handler = Callable[[Request], "Response | Future[Response]"]
ErrorResponder = Callable[[BaseException], Response]


class ProtocolError(Exception):
    """A request that cannot be read as HTTP/1.1; answered with `status` and closed."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def json_error(status: int, message: str) -> Response:
    """The REST API's error shape, `{"error": "..."}`, also used for protocol errors."""
    return Response(status, orjson.dumps({"error": message}))


def internal_error(exc: BaseException) -> Response:
    """What a handler bug becomes: logged, answered with 500 and a fixed message (the
    exception's text may hold internals), the connection kept."""
    log.error("REST handler failed", exc_info=exc)
    return json_error(500, INTERNAL_MESSAGE)


def settle(answer: Future[Response], error_response: ErrorResponder) -> Response:
    """The response a finished handler future stands for; its error becomes a response."""
    if answer.cancelled():
        return json_error(503, "The request was cancelled")
    error = answer.exception()
    if error is not None:
        return error_response(error)
    return answer.result()


_STATUS_LINES: dict[int, bytes] = {}


def _status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Client Closed Request" if status == 499 else "Unknown"
        line = f"HTTP/1.1 {status} {phrase}\r\n".encode()
        _STATUS_LINES[status] = line
    return line


class _DateHeader:
    """`Date:` formatted once per second rather than once per response."""

    def __init__(self) -> None:
        self._second = -1
        self._line = b""

    def line(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._line = f"Date: {formatdate(now, usegmt=True)}\r\n".encode()
            self._second = now
        return self._line


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """What clients may make the server hold, and for how long (0 or less: no bound on the
    counts). Defaults are the REST flags' defaults (docs/security.md)."""

    max_body_bytes: int = 32 * 1024 * 1024
    request_timeout_s: float = 30.0  # to read one request
    answer_timeout_s: float = 30.0  # for the handler's answer; past it, 504
    idle_timeout_s: float = 60.0  # a keep-alive connection between requests
    max_connections: int = 1024
    max_pending: int = 256  # answers being waited for, across connections; past it, 503


@dataclass(slots=True)
class _Head:
    """A request line and header fields whose body has not all arrived yet."""

    method: str
    target: bytes
    version: bytes
    headers: dict[str, str]
    content_length: int | None  # None: chunked


@dataclass(slots=True)
class Parsed:
    """A complete request and how its connection must answer it."""

    request: Request
    keep_alive: bool
    http10: bool  # keep-alive must then be confirmed in the response
    head_only: bool  # a HEAD request, handled as GET and answered without the body


class RequestReader:
    """Incremental HTTP/1.1 request parser: feed it bytes as they arrive, take whole requests.

    It never blocks and never reads a socket, so one thread can serve every connection.
    """

    def __init__(self, max_body_bytes: int) -> None:
        self.buffer = bytearray()
        self._max_body = max_body_bytes
        self._head: _Head | None = None
        self._scanned = 0  # how far the buffer is known to hold no end of head
        self._chunks: _ChunkedBody | None = None
        self.needs_continue = False  # a `100 Continue` is owed before the body arrives

    @property
    def started(self) -> bool:
        """Whether part of a request has arrived (its read deadline is running)."""
        return bool(self.buffer) or self._head is not None

    def feed(self, data: bytes) -> None:
        self.buffer += data

    def take(self) -> Parsed | None:
        """The next complete request, None until one has arrived; ProtocolError if malformed."""
        if self._head is None:
            self._head = self._take_head()
            if self._head is None:
                return None
        head = self._head
        body = self._take_body(head)
        if body is None:
            return None
        self._head = None
        self._chunks = None
        path, _, query = _origin_form(head.target).partition("?")
        keep_alive = _wants_keep_alive(head.version, head.headers.get("connection", ""))
        head_only = head.method == "HEAD"
        request = Request("GET" if head_only else head.method, path, query, head.headers, body)
        return Parsed(request, keep_alive, head.version == b"HTTP/1.0", head_only)

    def _take_head(self) -> _Head | None:
        buffer = self.buffer
        if buffer[:1] in (b"\r", b"\n"):  # RFC 9112 2.2: ignore leading empty lines
            del buffer[: len(buffer) - len(buffer.lstrip(b"\r\n"))]
        end = buffer.find(b"\r\n\r\n", self._scanned)
        if end < 0:
            if len(buffer) > MAX_HEADER_BYTES:
                raise _header_too_large()
            self._scanned = max(0, len(buffer) - 3)
            return None
        if end > MAX_HEADER_BYTES:
            raise _header_too_large()
        method, target, version, headers = _parse_head(bytes(buffer[:end]))
        del buffer[: end + 4]
        self._scanned = 0
        length = self._body_length(version, headers)
        self.needs_continue = bool(
            length and version == b"HTTP/1.1" and "100-continue" in headers.get("expect", "")
        )
        return _Head(method, target, version, headers, length)

    def _body_length(self, version: bytes, headers: dict[str, str]) -> int | None:
        """Where the body ends, refusing every framing two parsers could read differently
        (the request-smuggling cases of RFC 9112 6.1 and 6.3)."""
        encoding = headers.get("transfer-encoding")
        length = headers.get("content-length")
        if encoding is not None:
            if version != b"HTTP/1.1":
                raise ProtocolError(400, "Transfer-Encoding is only allowed in HTTP/1.1")
            if length is not None:
                raise ProtocolError(400, "Both Content-Length and Transfer-Encoding were sent")
            if encoding.strip().lower() != "chunked":
                raise ProtocolError(501, f"Unsupported Transfer-Encoding: {encoding}")
            return None
        if length is None:
            return 0
        if not (length.isascii() and length.isdigit()):
            raise ProtocolError(400, f"Invalid Content-Length: {length[:40]}")
        if len(length) > _MAX_LENGTH_DIGITS:  # and no int() of thousands of digits
            raise _body_too_large(self._max_body)
        size = int(length)
        _check_size(size, self._max_body)
        return size

    def _take_body(self, head: _Head) -> bytes | None:
        if head.content_length is None:
            if self._chunks is None:
                self._chunks = _ChunkedBody(self._max_body)
            return self._chunks.take(self.buffer)
        size = head.content_length
        buffer = self.buffer
        if len(buffer) < size:
            return None
        self.needs_continue = False
        if len(buffer) == size:
            body = bytes(buffer)
            buffer.clear()
            return body
        with memoryview(buffer) as view:
            body = bytes(view[:size])
        del buffer[:size]
        return body


class _ChunkedBody:
    """Decodes a chunked body across as many reads as it takes to arrive."""

    def __init__(self, max_body_bytes: int) -> None:
        self._max_body = max_body_bytes
        self._parts: list[bytes] = []
        self._total = 0
        self._size: int | None = None  # the chunk being waited for
        self._in_trailers = False
        self._trailer_bytes = 0

    def take(self, buffer: bytearray) -> bytes | None:
        while True:
            if self._in_trailers:
                line = _take_line(buffer)
                if line is None:
                    return None
                if not line:
                    return b"".join(self._parts)
                self._trailer_bytes += len(line)  # trailers are read and ignored
                if self._trailer_bytes > MAX_HEADER_BYTES:
                    raise ProtocolError(431, "Trailer section too large")
            elif self._size is None:
                line = _take_line(buffer)
                if line is None:
                    return None
                self._start_chunk(line)
            elif not self._take_chunk(buffer, self._size):
                return None

    def _start_chunk(self, line: bytes) -> None:
        size_text = line.split(b";", 1)[0].strip()
        if not _CHUNK_SIZE.fullmatch(size_text):
            raise ProtocolError(400, "Malformed chunk size")
        size = int(size_text, 16)
        if size == 0:
            self._in_trailers = True
            return
        self._total += size
        _check_size(self._total, self._max_body)
        self._size = size

    def _take_chunk(self, buffer: bytearray, size: int) -> bool:
        if len(buffer) < size + 2:
            return False
        if buffer[size : size + 2] != b"\r\n":
            raise ProtocolError(400, "Chunk data not followed by CRLF")
        self._parts.append(bytes(buffer[:size]))
        del buffer[: size + 2]
        self._size = None
        return True


def _take_line(buffer: bytearray) -> bytes | None:
    end = buffer.find(b"\r\n")
    if end < 0:
        if len(buffer) > MAX_HEADER_BYTES:
            raise ProtocolError(400, "Chunk header line too long")
        return None
    line = bytes(buffer[:end])
    del buffer[: end + 2]
    return line


def _header_too_large() -> ProtocolError:
    return ProtocolError(431, f"Request header is larger than {MAX_HEADER_BYTES} bytes")


def _check_size(size: int, limit: int) -> None:
    if size > limit:
        raise _body_too_large(limit)


def _body_too_large(limit: int) -> ProtocolError:
    return ProtocolError(
        413, f"Request body is larger than the limit of {limit} bytes (--rest_api_max_body_bytes)"
    )


def _parse_head(head: bytes) -> tuple[str, bytes, bytes, dict[str, str]]:
    """Request line and header fields, with bytes operations only.

    A CR or LF anywhere but in a CRLF, or a NUL, is refused rather than read past: parsers
    in front of us may split the head there differently (RFC 9112 2.2)."""
    crlf = head.count(b"\r\n")
    if head.count(b"\r") != crlf or head.count(b"\n") != crlf or b"\0" in head:
        raise ProtocolError(400, "Bare CR, LF or NUL in the request head")
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]) or not parts[1]:
        raise ProtocolError(400, "Malformed request line")
    method, target, version = parts
    if version not in (b"HTTP/1.1", b"HTTP/1.0"):
        if version.startswith(b"HTTP/"):
            raise ProtocolError(505, "HTTP version not supported")
        raise ProtocolError(400, "Malformed request line")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.fullmatch(name):
            raise ProtocolError(400, "Malformed header line")
        key = name.decode("latin-1").lower()
        text = value.strip(b" \t").decode("latin-1")
        if key in headers:
            if key == "content-length":
                raise ProtocolError(400, "More than one Content-Length header")
            headers[key] = f"{headers[key]}, {text}"
        else:
            headers[key] = text
    return method.decode("latin-1"), target, version, headers


def _origin_form(target: bytes) -> str:
    """The path (and query) of a request target, also from absolute-form `http://host/p`."""
    if not target.startswith(b"/"):
        scheme, sep, rest = target.partition(b"://")
        if sep and scheme.lower() in (b"http", b"https"):
            slash = rest.find(b"/")
            target = rest[slash:] if slash >= 0 else b"/"
    return target.decode("utf-8", "replace")


def _wants_keep_alive(version: bytes, connection: str) -> bool:
    tokens = connection.lower()
    if version == b"HTTP/1.1":
        return "close" not in tokens
    return "keep-alive" in tokens


def _header_lines(headers: tuple[tuple[str, str], ...]) -> bytes:
    return b"".join(f"{name}: {value}\r\n".encode("latin-1") for name, value in headers)


def _serialize(
    response: Response,
    head: bytes,
    keep_alive: bool,
    http10: bool = False,
    head_only: bool = False,
) -> list[bytes]:
    """The response as byte strings to send in order (one, unless the body is large).

    `head` holds header lines every response carries (Date, configured headers).
    """
    body = response.body
    parts = [
        _status_line(response.status),
        b"Content-Type: ",
        response.content_type.encode("latin-1"),
        b"\r\nContent-Length: ",
        str(len(body)).encode(),
        b"\r\n",
        head,
    ]
    if response.headers:
        parts.append(_header_lines(response.headers))
    if not keep_alive:
        parts.append(b"Connection: close\r\n")
    elif http10:
        parts.append(b"Connection: keep-alive\r\n")
    parts.append(b"\r\n")
    if head_only or not body:
        return [b"".join(parts)]
    if len(body) <= _SMALL_BODY:
        parts.append(body)
        return [b"".join(parts)]
    return [b"".join(parts), body]


class _Connection(asyncio.Protocol):
    """One client connection, driven by the loop: bytes in, requests out, answers in order.

    At most one request per connection is being answered at a time (that is what keeps
    pipelined answers in order); requests that arrive meanwhile wait in the reader's buffer.
    """

    def __init__(self, server: HttpServer) -> None:
        self._server = server
        self._reader = RequestReader(server.limits.max_body_bytes)
        self._transport: asyncio.Transport | None = None
        self._waiting: Future[Response] | None = None  # the answer being waited for
        self._answering: Parsed | None = None
        self._paused = False  # reading paused: too much input buffered while answering
        self._blocked = False  # writing paused: the client is not reading our answers
        self._closing = False
        self.deadline = math.inf
        self._on_deadline: Callable[[], None] = self.abort
        self.answer_deadline = math.inf  # for the answer waited for, apart from reading

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's duck-types it
        with contextlib.suppress(OSError, AttributeError):
            sock = transport.get_extra_info("socket")
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if not self._server.admit(self):
            self._write(json_error(503, "Too many open connections"), keep_alive=False)
            self._closing = True
            self._transport.close()
            return
        self._idle()

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return  # lingering after an error: the rest of the request is discarded
        was_started = self._reader.started
        self._reader.feed(data)
        if self._waiting is not None:
            if len(self._reader.buffer) > _PAUSE_BYTES and not self._paused:
                self._paused = True
                self._transport.pause_reading()  # type: ignore[union-attr]
            return
        if not was_started:
            self._set_deadline(self._server.limits.request_timeout_s, self._timed_out)
        self._serve()

    def eof_received(self) -> bool:
        """The client is gone (as with libevent's evhttp, a half-close counts as gone): an
        answer still being waited for is cancelled, so a batch drops this caller."""
        return False  # the transport closes; connection_lost cancels what is waited for

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        waiting = self._waiting
        if waiting is not None:
            self._stop_waiting()
            waiting.cancel()  # a batched call drops this caller
        self._server.forget(self)

    def pause_writing(self) -> None:
        """The client is not reading our answers: stop reading its requests too. The read
        deadline must not blame the client for our back-pressure, but a client that reads
        nothing for a whole request timeout is gone (as SO_SNDTIMEO would say) and is cut."""
        self._blocked = True
        self._set_deadline(self._server.limits.request_timeout_s, self.abort)
        self._transport.pause_reading()  # type: ignore[union-attr]

    def resume_writing(self) -> None:
        self._blocked = False
        self.deadline = math.inf
        if self._closing:
            return
        if not self._paused:
            self._transport.resume_reading()  # type: ignore[union-attr]
        if self._waiting is None:
            self._serve()
            self._restart_read_deadline()

    # driving requests

    def _serve(self) -> None:
        """Answer the buffered requests in order until one must be waited for."""
        reader = self._reader
        while self._waiting is None and not self._closing and not self._blocked:
            try:
                parsed = reader.take()
            except ProtocolError as error:
                self._fail(error)
                return
            if parsed is None:
                if reader.needs_continue:
                    reader.needs_continue = False
                    self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # type: ignore[union-attr]
                if not reader.started:
                    self._idle()
                return
            self._dispatch(parsed)

    def _dispatch(self, parsed: Parsed) -> None:
        server = self._server
        if server.overloaded():
            self._answer(parsed, json_error(503, _OVERLOADED.format(server.limits.max_pending)))
            self._restart_read_deadline()
            return
        try:
            answer = server.handler(parsed.request)
        except Exception as exc:
            answer = server.error_response(exc)
        if isinstance(answer, Future):
            if not answer.done():
                self._wait_for(parsed, answer)
                return
            answer = self._server.settle(answer)
        self._answer(parsed, answer)
        self._restart_read_deadline()

    def _wait_for(self, parsed: Parsed, answer: Future[Response]) -> None:
        self._waiting = answer
        self._answering = parsed
        self._server.pending += 1
        self.deadline = math.inf
        self.answer_deadline = self._server.loop.time() + self._server.limits.answer_timeout_s
        answer.add_done_callback(self._wake)

    def _wake(self, done: Future[Response]) -> None:
        """In the thread that finished the answer: hand it to the loop."""
        with contextlib.suppress(RuntimeError):  # the loop is already closed: nobody to answer
            self._server.loop.call_soon_threadsafe(self._answered, done)

    def _answered(self, done: Future[Response]) -> None:
        """On the loop: the awaited answer is ready (or was cancelled with the connection)."""
        if done is not self._waiting or self._closing:
            return
        self._stop_waiting()
        self._finish(self._server.settle(done))

    def _answer_timed_out(self) -> None:
        """The handler took longer than the request timeout: its work is cancelled (a batch
        drops it; a model call already running finishes unseen) and the client gets 504."""
        waiting = self._waiting
        if waiting is None or self._closing:
            return
        self._stop_waiting()
        waiting.cancel()
        timeout_ms = round(self._server.limits.answer_timeout_s * 1000)
        self._finish(json_error(504, _TIMED_OUT.format(timeout_ms)))

    def _stop_waiting(self) -> None:
        self._waiting = None
        self.answer_deadline = math.inf
        self._server.pending -= 1

    def _finish(self, response: Response) -> None:
        """Answer the request waited for, then go on with what the client sent meanwhile."""
        parsed = self._answering
        assert parsed is not None
        self._answering = None
        self._answer(parsed, response)
        if self._paused and not self._closing:
            self._paused = False
            if not self._blocked:
                self._transport.resume_reading()  # type: ignore[union-attr]
        self._restart_read_deadline()
        self._serve()

    def _answer(self, parsed: Parsed, response: Response) -> None:
        keep_alive = parsed.keep_alive and not self._server.stopping
        try:
            self._write(response, keep_alive, parsed.http10, parsed.head_only)
        except Exception as exc:  # a handler's answer that cannot be written is its bug
            keep_alive = False
            self._write(internal_error(exc), keep_alive, parsed.http10, parsed.head_only)
        if not keep_alive:
            self._close()

    def _write(
        self, response: Response, keep_alive: bool, http10: bool = False, head_only: bool = False
    ) -> None:
        transport = self._transport
        assert transport is not None
        head = self._server.common_head()
        transport.writelines(_serialize(response, head, keep_alive, http10, head_only))

    # deadlines and closing

    def _set_deadline(self, seconds: float, action: Callable[[], None]) -> None:
        self.deadline = self._server.loop.time() + seconds
        self._on_deadline = action

    def check_deadline(self, now: float) -> None:
        if now >= self.answer_deadline:
            self._answer_timed_out()
        if now >= self.deadline:
            self.deadline = math.inf
            self._on_deadline()

    def _restart_read_deadline(self) -> None:
        """A request already partly buffered (pipelined) gets its full deadline from now:
        the time it waited behind earlier answers is ours, not the client's."""
        if self._reader.started and not self._closing and not self._blocked:
            self._set_deadline(self._server.limits.request_timeout_s, self._timed_out)

    def _idle(self) -> None:
        self._set_deadline(self._server.limits.idle_timeout_s, self._close)

    def _timed_out(self) -> None:
        self._fail(ProtocolError(408, "Timed out reading the request"))

    def _fail(self, error: ProtocolError) -> None:
        """Answer a protocol error, then half-close and drain what the client still sends, so
        it reads our answer (closing with unread input makes the kernel send RST, which can
        destroy e.g. a 413 before the client has read it)."""
        transport = self._transport
        assert transport is not None
        self._write(json_error(error.status, error.message), keep_alive=False)
        self._closing = True
        if self._paused:
            transport.resume_reading()
        if transport.can_write_eof():
            transport.write_eof()
            self._set_deadline(_LINGER_SECONDS, self.abort)
        else:
            transport.close()

    def close_if_idle(self) -> None:
        """Part of a drain: a connection with no request under way is closed now."""
        if self._waiting is None and not self._reader.started:
            self._close()

    def _close(self) -> None:
        self._closing = True
        self.deadline = math.inf
        if self._transport is not None:
            self._transport.close()  # after the buffered answers are written

    def abort(self) -> None:
        self._closing = True
        self.deadline = math.inf
        if self._transport is not None:
            self._transport.abort()


class HttpServer:
    """Serves `handler` over HTTP/1.1 from one event-loop thread."""

    def __init__(
        self,
        handler: Handler,
        *,
        host: str = "0.0.0.0",
        port: int = 0,
        limits: HttpLimits = HttpLimits(),
        common_headers: tuple[tuple[str, str], ...] = (),
        error_response: ErrorResponder = internal_error,
        ssl: SSLContext | None = None,
    ) -> None:
        """`ssl`: serve HTTPS with this context (the loop does the TLS)."""
        self.handler = handler
        self.error_response = error_response
        self.limits = limits
        self.loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        self.stopping = False
        self.pending = 0  # answers being waited for, on every connection
        self._address = (host, port)
        self._ssl = ssl
        self._common_headers = _header_lines(common_headers)
        self._date = _DateHeader()
        self._connections: set[_Connection] = set()
        self._listener: socket.socket | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._listener is None:
            raise RuntimeError("server not started")
        return self._listener.getsockname()[1]

    def start(self) -> None:
        """Bind and listen (errors such as a port in use raise here); serve on a new thread."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(self._address)
            listener.listen(1024)
        except OSError:
            listener.close()
            raise
        self._listener = listener
        serving = self.loop.create_server(
            lambda: _Connection(self), sock=listener, backlog=1024, ssl=self._ssl
        )
        self._server = self.loop.run_until_complete(serving)
        self.loop.call_soon(self._tick)
        # Errors of one connection end in its answer or its close; the loop ending is fatal.
        self._thread = guarded_thread(
            "rest-loop", self.loop.run_forever, should_run=lambda: not self.stopping, daemon=True
        )
        self._thread.start()

    def stop(self, grace_seconds: float = 5.0) -> None:
        """Stop accepting, let requests under way finish (up to the grace period), close all."""
        if self._thread is None:
            self.loop.close()
            return
        drained = asyncio.run_coroutine_threadsafe(self._drain(grace_seconds), self.loop)
        drained.result()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()
        self._thread = None

    async def _drain(self, grace_seconds: float) -> None:
        self.stopping = True
        assert self._server is not None
        self._server.close()
        for connection in list(self._connections):
            connection.close_if_idle()
        deadline = self.loop.time() + grace_seconds
        while self._connections and self.loop.time() < deadline:
            await asyncio.sleep(0.01)
        for connection in list(self._connections):
            connection.abort()
        await asyncio.sleep(0)  # let the aborted transports report connection_lost

    # for connections

    def admit(self, connection: _Connection) -> bool:
        cap = self.limits.max_connections
        if self.stopping or (cap > 0 and len(self._connections) >= cap):
            return False
        self._connections.add(connection)
        return True

    def forget(self, connection: _Connection) -> None:
        self._connections.discard(connection)

    def overloaded(self) -> bool:
        """Whether as many answers as allowed are already being waited for."""
        cap = self.limits.max_pending
        return cap > 0 and self.pending >= cap

    def common_head(self) -> bytes:
        return self._date.line() + self._common_headers

    def settle(self, answer: Future[Response]) -> Response:
        return settle(answer, self.error_response)

    def _tick(self) -> None:
        """Check every connection's read or idle deadline; one timer for all of them. The
        next tick is booked first, so a failing check cannot stop the deadlines for good."""
        self.loop.call_later(_TICK_SECONDS, self._tick)
        now = self.loop.time()
        for connection in list(self._connections):
            try:
                connection.check_deadline(now)
            except Exception:
                log.exception("deadline check failed; closing the connection")
                connection.abort()
