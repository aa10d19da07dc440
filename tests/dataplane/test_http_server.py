"""The HTTP/1.1 layer on its own, over loopback with raw sockets: framing, limits, timeouts.

The handler echoes what the server parsed, so each test sees exactly what a handler would.
"""

from __future__ import annotations

import contextlib
import random
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future

import orjson
import pytest

from dataplane import errors
from dataplane.http_server import (
    Handler,
    HttpLimits,
    HttpServer,
    ProtocolError,
    Request,
    RequestReader,
    Response,
)

TIMEOUT_S = 0.5


def echo(request: Request) -> Response | Future[Response]:
    """Echo the parsed request; `/boom` raises, `/sleep` answers through a Future 0.3 s later,
    `/garbled` answers with something that is not a Response (later, through a Future)."""
    if request.path == "/boom":
        raise RuntimeError("handler bug")
    if request.path == "/garbled":
        return later(0.01, "not a response")  # type: ignore[arg-type]
    if request.path == "/sleep":
        return later(0.3, echoed(request))
    return echoed(request)


def later(seconds: float, response: Response) -> Future[Response]:
    """A Future another thread completes after `seconds`, as a batched model call would."""
    answer: Future[Response] = Future()
    threading.Timer(seconds, answer.set_result, (response,)).start()
    return answer


def echoed(request: Request) -> Response:
    body = {
        "method": request.method,
        "path": request.path,
        "query": request.query,
        "body": request.body.decode("latin-1"),
        "headers": request.headers,
    }
    return Response(200, orjson.dumps(body), headers=(("X-Test", "1"),))


class Client:
    """A raw HTTP/1.1 client socket that reads responses one at a time."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("connection closed")
        self.buffer += data

    def response(self, head_only: bool = False) -> tuple[int, dict[str, str], bytes]:
        """One response: (status, lower-cased headers, body)."""
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = 0 if head_only else int(headers.get("content-length", "0"))
        while len(self.buffer) < length:
            self._fill()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return status, headers, body

    def closed_by_server(self) -> bool:
        """True once the server has closed its side (EOF or reset), within 5 s."""
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()


def start_server(handler: Handler = echo, **limits: float) -> HttpServer:
    """A server on loopback with small limits; `limits` overrides HttpLimits fields."""
    settings: dict[str, float] = {
        "max_body_bytes": 1000,
        "request_timeout_s": TIMEOUT_S,
        "answer_timeout_s": 5.0,
        "idle_timeout_s": 2.0,
    }
    settings.update(limits)
    server = HttpServer(handler, host="127.0.0.1", limits=HttpLimits(**settings))  # type: ignore[arg-type]
    server.start()
    return server


@pytest.fixture
def server() -> Iterator[HttpServer]:
    server = start_server()
    yield server
    server.stop(1.0)


@pytest.fixture
def client(server: HttpServer) -> Iterator[Client]:
    client = Client(server.port)
    yield client
    client.close()


def post(path: str, body: bytes, extra: bytes = b"") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n".encode()
        + extra
        + b"\r\n"
        + body
    )


def get(path: str, extra: bytes = b"") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: x\r\n".encode() + extra + b"\r\n"


def assert_serves(server: HttpServer) -> None:
    """A fresh connection still gets an answer: the server is neither dead nor wedged."""
    client = Client(server.port)
    client.send(post("/alive", b"ok"))
    status, _, body = client.response()
    client.close()
    assert (status, orjson.loads(body)["body"]) == (200, "ok")


def test_keep_alive_serves_many_requests_on_one_connection(client: Client) -> None:
    for i in range(3):
        client.send(post(f"/r{i}", f"body{i}".encode()))
        status, headers, body = client.response()
        echoed = orjson.loads(body)
        assert (status, echoed["path"], echoed["body"]) == (200, f"/r{i}", f"body{i}")
        assert headers["content-type"] == "application/json"
        assert headers["content-length"] == str(len(body))
        assert headers["x-test"] == "1"
        assert "connection" not in headers
        assert headers["date"].endswith(" GMT")


def test_request_fields_reach_the_handler(client: Client) -> None:
    client.send(
        b"\r\nPOST http://example.com/v1/models/a%20b:predict?x=1&y=2 HTTP/1.1\r\n"
        b"Host: x\r\nX-Multi: a\r\nx-multi: b\r\nContent-Length: 2\r\n\r\nhi"
    )
    status, _, body = client.response()
    echoed = orjson.loads(body)
    assert status == 200
    assert echoed["method"] == "POST"
    assert echoed["path"] == "/v1/models/a%20b:predict"
    assert echoed["query"] == "x=1&y=2"
    assert echoed["headers"]["x-multi"] == "a, b"
    assert echoed["body"] == "hi"


def test_connection_close_is_honoured(client: Client) -> None:
    client.send(get("/a", b"Connection: close\r\n"))
    status, headers, _ = client.response()
    assert (status, headers["connection"]) == (200, "close")
    assert client.closed_by_server()


def test_http10_closes_unless_keep_alive_is_asked_for(server: HttpServer) -> None:
    plain = Client(server.port)
    plain.send(b"GET /a HTTP/1.0\r\n\r\n")
    status, headers, _ = plain.response()
    assert (status, headers["connection"]) == (200, "close")
    assert plain.closed_by_server()
    kept = Client(server.port)
    for _ in range(2):
        kept.send(b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        status, headers, _ = kept.response()
        assert (status, headers["connection"]) == (200, "keep-alive")
    kept.close()


def test_pipelined_requests_are_answered_in_order(client: Client) -> None:
    client.send(post("/1", b"one") + get("/2") + post("/3", b"three"))
    answers = [orjson.loads(client.response()[2]) for _ in range(3)]
    assert [(a["path"], a["body"]) for a in answers] == [("/1", "one"), ("/2", ""), ("/3", "three")]


def test_chunked_body_with_extensions_and_trailers(client: Client) -> None:
    client.send(
        b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"4;ext=1\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-Trailer: t\r\n\r\n"
    )
    status, _, body = client.response()
    assert (status, orjson.loads(body)["body"]) == (200, "Wikipedia in\r\n\r\nchunks.")
    client.send(get("/after"))  # the connection is still in sync
    assert orjson.loads(client.response()[2])["path"] == "/after"


def test_expect_100_continue_gets_an_interim_response(client: Client) -> None:
    client.send(b"POST /e HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
    status, _, _ = client.response()
    assert status == 100
    client.send(b"hello")
    status, _, body = client.response()
    assert (status, orjson.loads(body)["body"]) == (200, "hello")


def test_head_sends_headers_without_body(client: Client) -> None:
    client.send(get("/h"))
    _, get_headers, get_body = client.response()
    client.send(b"HEAD /h HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, _ = client.response(head_only=True)
    assert (status, headers["content-length"]) == (200, str(len(get_body)))
    assert orjson.loads(get_body)["method"] == "GET"  # HEAD runs the GET handler
    client.send(get("/next"))  # no stray body bytes were sent after the HEAD answer
    assert orjson.loads(client.response()[2])["path"] == "/next"
    assert get_headers["content-length"] == headers["content-length"]


def test_oversized_content_length_is_rejected_before_the_body(server: HttpServer) -> None:
    client = Client(server.port)
    client.send(b"POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: 1001\r\n\r\n")
    status, headers, body = client.response()
    assert (status, headers["connection"]) == (413, "close")
    assert orjson.loads(body) == {
        "error": "Request body is larger than the limit of 1000 bytes (--rest_api_max_body_bytes)"
    }
    client.close()
    assert_serves(server)


def test_oversized_body_sent_anyway_still_gets_the_413(server: HttpServer) -> None:
    client = Client(server.port)
    client.send(post("/big", b"x" * 50_000))
    status, _, body = client.response()
    assert status == 413
    assert "limit of 1000 bytes" in orjson.loads(body)["error"]
    client.close()
    assert_serves(server)


def test_oversized_chunked_body_is_rejected(server: HttpServer) -> None:
    client = Client(server.port)
    chunk = b"3e8\r\n" + b"y" * 1000 + b"\r\n"
    client.send(b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk * 2)
    status, _, _ = client.response()
    assert status == 413
    client.close()
    assert_serves(server)


@pytest.mark.parametrize(
    ("raw", "status", "message"),
    [
        (b"GARBAGE\r\n\r\n", 400, "Malformed request line"),
        (b"GET /a HTTP/1.1 extra\r\n\r\n", 400, "Malformed request line"),
        (b"GET /a HTTP/2.0\r\n\r\n", 505, "HTTP version not supported"),
        (b"GET /a HTTP/1.1\r\nNoColon\r\n\r\n", 400, "Malformed header line"),
        (b"GET /a HTTP/1.1\r\nBad : space\r\n\r\n", 400, "Malformed header line"),
        (b"POST /a HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400, "Invalid Content-Length: -1"),
        (b"POST /a HTTP/1.1\r\nContent-Length: 1x\r\n\r\n", 400, "Invalid Content-Length: 1x"),
        (
            b"POST /a HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            400,
            "More than one Content-Length header",
        ),
        (
            b"POST /a HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
            400,
            "More than one Content-Length header",
        ),
        (
            b"POST /a HTTP/1.1\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n",
            413,
            "Request body is larger than the limit of 1000 bytes (--rest_api_max_body_bytes)",
        ),
        (
            b"POST /a HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
            "Transfer-Encoding is only allowed in HTTP/1.1",
        ),
        (
            b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
            501,
            "Unsupported Transfer-Encoding: chunked, chunked",
        ),
        (
            b"GET /a HTTP/1.1\r\nX-A: 1\rContent-Length: 5\r\n\r\n",
            400,
            "Bare CR, LF or NUL in the request head",
        ),
        (
            b"GET /a HTTP/1.1\r\nX-A: 1\nContent-Length: 5\r\n\r\n",
            400,
            "Bare CR, LF or NUL in the request head",
        ),
        (
            b"GET /a HTTP/1.1\r\nX-A: 1\x00\r\n\r\n",
            400,
            "Bare CR, LF or NUL in the request head",
        ),
        (
            b"GET /a\n HTTP/1.1\r\n\r\n",
            400,
            "Bare CR, LF or NUL in the request head",
        ),
        (b"GET /a HTTP/1.1\r\n folded: x\r\n\r\n", 400, "Malformed header line"),
        (b"GET /a HTTP/1.1\r\nContent\x0bLength: 1\r\n\r\n", 400, "Malformed header line"),
        (b"G(T /a HTTP/1.1\r\n\r\n", 400, "Malformed request line"),
        (
            b"POST /a HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            400,
            "Both Content-Length and Transfer-Encoding were sent",
        ),
        (
            b"POST /a HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            501,
            "Unsupported Transfer-Encoding: gzip",
        ),
        (
            b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            400,
            "Malformed chunk size",
        ),
        (
            b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXY0\r\n\r\n",
            400,
            "Chunk data not followed by CRLF",
        ),
        (
            b"GET /a HTTP/1.1\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n",
            431,
            "Request header is larger than 65536 bytes",
        ),
    ],
)
def test_malformed_requests_get_an_error_and_a_close(
    server: HttpServer, raw: bytes, status: int, message: str
) -> None:
    client = Client(server.port)
    client.send(raw)
    got_status, headers, body = client.response()
    assert (got_status, headers["connection"]) == (status, "close")
    assert orjson.loads(body) == {"error": message}
    assert client.closed_by_server()
    client.close()
    assert_serves(server)


def test_an_answer_that_cannot_be_written_is_a_500_and_the_connection_closes(
    client: Client,
) -> None:
    client.send(get("/garbled"))
    status, headers, body = client.response()
    assert (status, headers["connection"]) == (500, "close")
    assert orjson.loads(body) == {"error": errors.INTERNAL_MESSAGE}
    assert client.closed_by_server()


def test_invalid_utf8_in_the_target_is_replaced_not_fatal(client: Client) -> None:
    client.send(b"GET /v1/models/\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n")
    status, _, body = client.response()
    assert (status, orjson.loads(body)["path"]) == (200, "/v1/models/\ufffd\ufffd")


def test_handler_exception_is_a_500_and_the_connection_survives(client: Client) -> None:
    client.send(get("/boom"))
    status, _, body = client.response()
    assert (status, orjson.loads(body)) == (500, {"error": errors.INTERNAL_MESSAGE})
    client.send(get("/fine"))
    assert client.response()[0] == 200


def test_slow_body_times_out_with_408_without_blocking_others(server: HttpServer) -> None:
    slow = Client(server.port)
    slow.send(b"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab")
    assert_serves(server)  # served while the slow client holds its connection
    started = time.monotonic()
    status, headers, body = slow.response()
    assert (status, headers["connection"]) == (408, "close")
    assert orjson.loads(body) == {"error": "Timed out reading the request"}
    assert time.monotonic() - started < TIMEOUT_S + 1.0
    slow.close()


def test_slowloris_head_times_out_although_bytes_keep_arriving(server: HttpServer) -> None:
    client = Client(server.port)
    client.send(b"GET /a HTTP/1.1\r\n")
    started = time.monotonic()
    for _ in range(8):  # one header byte every 0.1 s: the deadline is per request, not per read
        client.send(b"X")
        time.sleep(0.1)
    status, headers, body = client.response()
    assert (status, headers["connection"]) == (408, "close")
    assert orjson.loads(body) == {"error": "Timed out reading the request"}
    assert time.monotonic() - started < TIMEOUT_S + 1.0
    client.close()
    assert_serves(server)


@pytest.mark.parametrize(
    "partial",
    [
        b"POST /half HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly-part",
        b"GET /a HTTP/1.1\r\nHost",
    ],
    ids=["half_closed_mid_body", "truncated_head"],
)
def test_client_closing_mid_request_is_dropped(server: HttpServer, partial: bytes) -> None:
    client = Client(server.port)
    client.send(partial)
    client.sock.shutdown(socket.SHUT_WR)
    assert client.closed_by_server()
    client.close()
    assert_serves(server)


def test_idle_keep_alive_connection_is_closed_after_idle_timeout() -> None:
    server = start_server(idle_timeout_s=0.3)
    try:
        client = Client(server.port)
        client.send(get("/a"))
        assert client.response()[0] == 200
        started = time.monotonic()
        assert client.closed_by_server()
        assert 0.2 < time.monotonic() - started < 2.0
        client.close()
    finally:
        server.stop(1.0)


def test_a_waited_for_answer_does_not_hold_up_other_connections(server: HttpServer) -> None:
    waiting = Client(server.port)
    waiting.send(get("/sleep"))
    started = time.monotonic()
    assert_serves(server)
    assert time.monotonic() - started < 0.2
    status, _, body = waiting.response()
    assert (status, orjson.loads(body)["path"]) == (200, "/sleep")
    waiting.close()


def test_pipelined_requests_stay_in_order_behind_a_waited_for_answer(client: Client) -> None:
    client.send(get("/sleep") + post("/second", b"2") + get("/third"))
    paths = [orjson.loads(client.response()[2])["path"] for _ in range(3)]
    assert paths == ["/sleep", "/second", "/third"]


def test_a_large_pipelined_body_waits_behind_a_slow_answer() -> None:
    server = start_server(max_body_bytes=4 * 1024 * 1024)
    try:
        client = Client(server.port)
        big = b"z" * (3 * 1024 * 1024)  # more than the loop buffers before pausing the reads
        client.send(get("/sleep") + post("/big", big))
        first, second = client.response(), client.response()
        assert (first[0], orjson.loads(first[2])["path"]) == (200, "/sleep")
        assert (second[0], len(orjson.loads(second[2])["body"])) == (200, len(big))
        client.close()
    finally:
        server.stop(1.0)


def test_a_client_that_does_not_read_is_paused_and_loses_nothing() -> None:
    """Pipelined requests whose answers the client leaves unread: the server stops reading
    (no unbounded buffering) and, once the client reads, every answer arrives in order."""
    server = start_server(max_body_bytes=200_000)
    try:
        client = Client(server.port)
        count, size = 100, 150_000  # 15 MB each way: more than the kernel's socket buffers
        stream = b"".join(post(f"/{i}", b"b" * size) for i in range(count))
        sender = threading.Thread(target=client.send, args=(stream,))
        sender.start()
        time.sleep(TIMEOUT_S * 0.6)  # answers pile up unread: the server stops reading
        paths = [orjson.loads(client.response()[2])["path"] for _ in range(count)]
        sender.join(5)
        assert paths == [f"/{i}" for i in range(count)]
        client.close()
    finally:
        server.stop(1.0)


def test_a_client_that_reads_nothing_for_a_whole_timeout_is_cut() -> None:
    server = start_server(max_body_bytes=200_000)
    try:
        client = Client(server.port)
        count, size = 100, 150_000
        stream = b"".join(post(f"/{i}", b"b" * size) for i in range(count))

        def send() -> None:
            with contextlib.suppress(OSError):  # the server cuts us off mid-stream
                client.send(stream)

        sender = threading.Thread(target=send)
        sender.start()
        time.sleep(TIMEOUT_S + 0.5)
        received = 0
        with contextlib.suppress(ConnectionResetError):
            while data := client.sock.recv(1 << 20):
                received += len(data)
        sender.join(5)
        assert received < count * size  # ended early: the server gave the connection up
        client.close()
        assert_serves(server)
    finally:
        server.stop(1.0)


def test_client_going_away_cancels_the_answer_it_waited_for() -> None:
    handed_out: list[Future[Response]] = []

    def never(request: Request) -> Future[Response]:
        handed_out.append(Future())
        return handed_out[-1]

    server = HttpServer(never, host="127.0.0.1")
    server.start()
    try:
        client = Client(server.port)
        client.send(get("/wait"))
        deadline = time.monotonic() + 2.0
        while not handed_out and time.monotonic() < deadline:
            time.sleep(0.01)
        client.close()
        while not handed_out[0].cancelled() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert handed_out[0].cancelled()
    finally:
        server.stop(1.0)


def test_errors_raised_or_set_on_the_future_go_through_error_response() -> None:
    def failing(request: Request) -> Future[Response]:
        if request.path == "/raise":
            raise KeyError("now")
        answer: Future[Response] = Future()
        threading.Timer(0.05, answer.set_exception, (KeyError("later"),)).start()
        return answer

    def teapot(exc: BaseException) -> Response:
        return Response(418, orjson.dumps({"error": str(exc)}))

    server = HttpServer(failing, host="127.0.0.1", error_response=teapot)
    server.start()
    try:
        client = Client(server.port)
        client.send(get("/raise") + get("/later"))
        answers = [client.response() for _ in range(2)]
        assert [(s, orjson.loads(b)) for s, _, b in answers] == [
            (418, {"error": "'now'"}),
            (418, {"error": "'later'"}),
        ]
        client.close()
    finally:
        server.stop(1.0)


def test_reader_gives_the_same_requests_however_the_bytes_arrive() -> None:
    stream = (
        post("/one", b"abc")
        + b"POST /two?q=1 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"2;ext=1\r\nde\r\n1\r\nf\r\n0\r\nTrailer: x\r\n\r\n"
        + b"HEAD /three HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
    )

    def requests(pieces: list[bytes]) -> list[tuple[str, str, str, bytes, bool, bool, bool]]:
        reader = RequestReader(max_body_bytes=100)
        taken = []
        for piece in pieces:
            reader.feed(piece)
            while (parsed := reader.take()) is not None:
                r = parsed.request
                flags = (parsed.keep_alive, parsed.http10, parsed.head_only)
                taken.append((r.method, r.path, r.query, r.body, *flags))
        assert not reader.started
        return taken

    whole = requests([stream])
    assert whole == [
        ("POST", "/one", "", b"abc", True, False, False),
        ("POST", "/two", "q=1", b"def", True, False, False),
        ("GET", "/three", "", b"", True, True, True),
    ]
    assert requests([stream[i : i + 1] for i in range(len(stream))]) == whole


def test_connections_beyond_the_limit_get_503() -> None:
    server = start_server(max_connections=2)
    try:
        held = [Client(server.port) for _ in range(2)]
        for client in held:  # make sure both are being served before the third arrives
            client.send(get("/hold"))
            assert client.response()[0] == 200
        extra = Client(server.port)
        status, _, body = extra.response()
        assert (status, orjson.loads(body)) == (503, {"error": "Too many open connections"})
        extra.close()
        for client in held:
            client.close()
    finally:
        server.stop(1.0)


def test_stop_finishes_in_flight_requests_and_closes_idle_ones() -> None:
    server = start_server()
    idle = Client(server.port)
    idle.send(get("/warm"))
    assert idle.response()[0] == 200
    busy = Client(server.port)
    busy.send(get("/sleep"))
    time.sleep(0.1)  # the handler is now running
    started = time.monotonic()
    server.stop(5.0)
    assert time.monotonic() - started < 2.0
    status, headers, _ = busy.response()
    assert (status, headers["connection"]) == (200, "close")
    assert idle.closed_by_server()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=1)


def test_stop_without_grace_cuts_stalled_connections() -> None:
    server = start_server(request_timeout_s=30.0)
    stalled = Client(server.port)
    stalled.send(b"POST /s HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")
    time.sleep(0.1)
    started = time.monotonic()
    server.stop(0.2)
    assert time.monotonic() - started < 1.5
    assert stalled.closed_by_server()


def test_reader_answers_any_bytes_with_requests_or_a_protocol_error() -> None:
    """Seeded random mixes of request fragments, fed in random splits: whatever a client sends
    becomes requests or a ProtocolError (which the loop answers), never another exception."""
    fragments = [
        b"GET ", b"POST ", b"HEAD ", b"/", b"/v1/models/x:predict", b" HTTP/1.1", b" HTTP/1.0",
        b" HTTP/2.0", b"\r\n", b"\r\n\r\n", b"Content-Length: ", b"Transfer-Encoding: chunked",
        b"Transfer-Encoding: gzip", b"5", b"0", b"-1", b"ff", b"zz", b"abc", b":", b" ", b"\t",
        b"Expect: 100-continue", b"Connection: close", b"\xff\xfe", b"\x00", b";ext", b"\n",
        b"http://h/p?q", b"99999999999999999999", b"\r",
        get("/ok"), post("/ok", b"abc"), b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"3\r\nabc\r\n0\r\n\r\n",
    ]  # fmt: skip
    rng = random.Random(7)
    outcomes = {"requests": 0, "protocol errors": 0}
    for _ in range(5000):
        data = b"".join(rng.choice(fragments) for _ in range(rng.randint(1, 25)))
        cuts = sorted(rng.sample(range(len(data) + 1), min(3, len(data) + 1)))
        reader = RequestReader(max_body_bytes=100)
        try:
            for start, end in zip([0, *cuts], [*cuts, len(data)], strict=True):
                reader.feed(data[start:end])
                while reader.take() is not None:
                    outcomes["requests"] += 1
        except ProtocolError:
            outcomes["protocol errors"] += 1
    assert all(count > 200 for count in outcomes.values()), outcomes  # both paths exercised


def held_answers(futures: list[Future[Response]]) -> Handler:
    """A handler whose `/held` answers wait (as batched model calls do) until the test sets
    them; anything else is echoed at once."""

    def handle(request: Request) -> Response | Future[Response]:
        if request.path != "/held":
            return echoed(request)
        answer: Future[Response] = Future()
        futures.append(answer)
        return answer

    return handle


def test_an_answer_slower_than_the_timeout_is_a_504_and_its_work_is_cancelled() -> None:
    futures: list[Future[Response]] = []
    server = start_server(held_answers(futures), answer_timeout_s=0.3)
    try:
        client = Client(server.port)
        started = time.monotonic()
        client.send(get("/held"))
        status, headers, body = client.response()
        assert (status, orjson.loads(body)) == (
            504,
            {"error": "Request timed out: no answer within 300 ms (--rest_api_timeout_in_ms)"},
        )
        assert 0.25 < time.monotonic() - started < 3.0
        assert futures[0].cancelled() and "connection" not in headers  # kept alive
        client.send(get("/after"))
        assert orjson.loads(client.response()[2])["path"] == "/after"
        client.close()
    finally:
        server.stop(1.0)


def test_requests_beyond_the_pending_bound_get_503_at_once() -> None:
    futures: list[Future[Response]] = []
    server = start_server(held_answers(futures), max_pending=2)
    try:
        held = [Client(server.port) for _ in range(2)]
        for client in held:
            client.send(get("/held"))
        deadline = time.monotonic() + 5
        while len(futures) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        extra = Client(server.port)
        extra.send(get("/held"))
        status, _, body = extra.response()
        assert (status, orjson.loads(body)) == (
            503,
            {
                "error": "Too many requests are waiting for a model "
                "(--rest_api_max_pending_requests=2)"
            },
        )
        assert len(futures) == 2  # the refused request never reached the handler
        futures[0].set_result(Response(200, b"{}"))
        assert held[0].response()[0] == 200
        extra.send(get("/held"))  # one answer fewer is waited for: admitted again
        deadline = time.monotonic() + 5
        while len(futures) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(futures) == 3
        for client in (*held, extra):
            client.close()
    finally:
        server.stop(1.0)
