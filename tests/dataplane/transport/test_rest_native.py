"""REST's HTTP/1.1 on hyper (native/src/rest.rs + transport/rest_native.py), over loopback
with raw sockets: what reaches the handler, the answers, and every bound Rust enforces alone.

The handler echoes what it was given; `/hang` answers never (its Future is recorded, so a test
sees it cancelled), `/later` answers from another thread, `/boom` raises.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path

import orjson
import pytest

from dataplane.errors import INTERNAL_MESSAGE
from dataplane.http_server import HttpLimits, Request, Response
from dataplane.transport.rest_native import NativeHttpServer
from tests.support.tls import make_pki

TIMEOUT_S = 0.5
BODY_LIMIT = 1000


class Echo:
    """The handler; `hung` holds the Futures of /hang requests."""

    def __init__(self) -> None:
        self.hung: list[Future[Response]] = []

    def __call__(self, request: Request) -> Response | Future[Response]:
        if request.path == "/boom":
            raise RuntimeError("handler bug")
        if request.path == "/hang":
            waiting: Future[Response] = Future()
            self.hung.append(waiting)
            return waiting
        if request.path == "/later":
            answer: Future[Response] = Future()
            threading.Timer(0.05, answer.set_result, (echoed(request),)).start()
            return answer
        return echoed(request)


def echoed(request: Request) -> Response:
    body = {
        "method": request.method,
        "path": request.path,
        "query": request.query,
        "body": request.body.decode("latin-1"),
        "headers": request.headers,
    }
    return Response(200, orjson.dumps(body), headers=(("X-Test", "1"),))


def serve(echo: Echo, tls: tuple[bytes, bytes, bytes, bool] | None = None, **limits: float):
    settings = {
        "max_body_bytes": BODY_LIMIT,
        "request_timeout_s": TIMEOUT_S,
        "answer_timeout_s": TIMEOUT_S,
        "idle_timeout_s": TIMEOUT_S,
        **limits,
    }
    server = NativeHttpServer(
        echo,
        host="127.0.0.1",
        limits=HttpLimits(**settings),  # type: ignore[arg-type]
        common_headers=(("Access-Control-Allow-Origin", "*"),),
        tls=tls,
    )
    server.start()
    return server


@pytest.fixture
def echo() -> Echo:
    return Echo()


@pytest.fixture
def server(echo: Echo) -> Iterator[NativeHttpServer]:
    running = serve(echo, max_connections=4, max_pending=1)
    yield running
    running.stop(1.0)


def exchange(server: NativeHttpServer, data: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes, read until the server closes."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


def split(raw: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """Every (status, lower-case headers, body) in `raw`, by Content-Length."""
    answers = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in lines[1:])
        length = int(headers["content-length"])
        answers.append((int(lines[0].split(" ")[1]), headers, rest[:length]))
        raw = rest[length:]
    return answers


def test_a_request_reaches_the_handler_whole_and_its_answer_the_client(
    server: NativeHttpServer,
) -> None:
    request = (
        b"POST /v1/x?a=1 HTTP/1.1\r\nHost: h\r\nX-Twice: 1\r\nX-Twice: 2\r\n"
        b"X-Latin: \xe9\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"
    )
    [(status, headers, body)] = split(exchange(server, request))
    echoed_request = orjson.loads(body)
    assert status == 200
    assert headers["x-test"] == "1"
    assert headers["access-control-allow-origin"] == "*"
    assert headers["content-type"] == "application/json"
    assert "date" in headers
    assert echoed_request["method"] == "POST"
    assert echoed_request["path"] == "/v1/x"
    assert echoed_request["query"] == "a=1"
    assert echoed_request["body"] == "hello"
    assert echoed_request["headers"]["x-twice"] == "1, 2"
    assert echoed_request["headers"]["x-latin"] == "\xe9"


def test_pipelined_requests_are_answered_in_order(server: NativeHttpServer) -> None:
    requests = (
        b"GET /later HTTP/1.1\r\nHost: h\r\n\r\n"
        b"GET /second HTTP/1.1\r\nHost: h\r\n\r\n"
        b"POST /third HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
        b"Connection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    )
    answers = split(exchange(server, requests))
    assert [orjson.loads(body)["path"] for _, _, body in answers] == ["/later", "/second", "/third"]
    assert orjson.loads(answers[2][2])["body"] == "abc"


def test_a_body_over_the_limit_is_413_whether_declared_or_chunked(
    server: NativeHttpServer,
) -> None:
    message = (
        f"Request body is larger than the limit of {BODY_LIMIT} bytes (--rest_api_max_body_bytes)"
    )
    declared = f"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: {BODY_LIMIT + 1}\r\n\r\n"
    [(status, headers, body)] = split(exchange(server, declared.encode()))
    assert (status, orjson.loads(body)) == (413, {"error": message})
    assert headers["connection"] == "close"
    chunk = b"%x\r\n%s\r\n" % (600, b"a" * 600)
    chunked = b"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk * 2
    [(status, _, body)] = split(exchange(server, chunked))
    assert (status, orjson.loads(body)) == (413, {"error": message})


def test_an_answer_past_the_timeout_is_504_and_the_work_cancelled(
    server: NativeHttpServer, echo: Echo
) -> None:
    started = time.monotonic()
    raw = exchange(server, b"GET /hang HTTP/1.1\r\nConnection: close\r\n\r\n")
    [(status, _, body)] = split(raw)
    assert TIMEOUT_S - 0.1 < time.monotonic() - started < TIMEOUT_S + 2
    assert (status, orjson.loads(body)) == (
        504,
        {"error": "Request timed out: no answer within 500 ms (--rest_api_timeout_in_ms)"},
    )
    deadline = time.monotonic() + 2
    while not echo.hung[0].cancelled() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert echo.hung[0].cancelled()


def test_a_client_that_goes_away_cancels_the_work(server: NativeHttpServer, echo: Echo) -> None:
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"GET /hang HTTP/1.1\r\n\r\n")
        deadline = time.monotonic() + 2
        while not echo.hung and time.monotonic() < deadline:
            time.sleep(0.01)
    deadline = time.monotonic() + 2
    while not echo.hung[0].cancelled() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert echo.hung[0].cancelled()


def test_requests_beyond_the_pending_bound_get_503_at_once(
    server: NativeHttpServer, echo: Echo
) -> None:
    with socket.create_connection(("127.0.0.1", server.port)) as holder:
        holder.sendall(b"GET /hang HTTP/1.1\r\n\r\n")
        deadline = time.monotonic() + 2
        while not echo.hung and time.monotonic() < deadline:
            time.sleep(0.01)
        started = time.monotonic()
        raw = exchange(server, b"GET /x HTTP/1.1\r\nConnection: close\r\n\r\n")
        [(status, _, body)] = split(raw)
        assert time.monotonic() - started < TIMEOUT_S
    assert (status, orjson.loads(body)) == (
        503,
        {"error": "Too many requests are waiting for a model (--rest_api_max_pending_requests=1)"},
    )


def test_connections_beyond_the_cap_get_503_and_idle_ones_are_closed(
    server: NativeHttpServer,
) -> None:
    held = [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(4)]
    try:
        time.sleep(0.1)
        [(status, _, body)] = split(exchange(server, b""))
        assert (status, orjson.loads(body)) == (503, {"error": "Too many open connections"})
        started = time.monotonic()
        for sock in held:
            assert sock.recv(1) == b""  # closed by the idle timeout
        assert time.monotonic() - started < TIMEOUT_S + 2
    finally:
        for sock in held:
            sock.close()


@pytest.mark.parametrize(
    "head",
    [
        b"GET /x HTTP/1.1\r\nX-A: a\rb\r\n\r\n",
        b"GET /x HTTP/1.1\r\nX-A: a\x00b\r\n\r\n",
        b"POST /x HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST /x HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        b"GET /x HTTP/1.1\r\nX-A: " + b"a" * 70_000 + b"\r\n\r\n",
        b"GET /x HTTP/1.1\r\n" + b"X-A: b\r\n" * 101 + b"\r\n",
    ],
    ids=["bare-cr", "nul", "te-on-http10", "two-lengths", "huge-head", "101-fields"],
)
def test_malformed_heads_are_refused_and_the_connection_closed(
    server: NativeHttpServer, head: bytes
) -> None:
    [(status, headers, _)] = split(exchange(server, head))
    assert status == (431 if len(head) > 65536 or head.count(b"X-A") > 100 else 400)
    assert headers["connection"] == "close"


def test_a_bare_lf_ends_a_header_line_and_never_joins_a_value(server: NativeHttpServer) -> None:
    """RFC 9112 2.2 lets a recipient take a lone LF as a line's end (httparse does); no
    value ever holds the LF."""
    raw = exchange(server, b"GET /x HTTP/1.1\r\nX-A: 1\nX-B: 2\r\nConnection: close\r\n\r\n")
    [(status, _, body)] = split(raw)
    headers = orjson.loads(body)["headers"]
    assert (status, headers["x-a"], headers["x-b"]) == (200, "1", "2")


def test_length_and_chunked_together_read_as_chunked_then_close(server: NativeHttpServer) -> None:
    """RFC 9112 6.3: Transfer-Encoding wins and the connection ends after the answer, so
    bytes a front proxy might have framed differently are never read as a next request."""
    smuggle = (
        b"POST /x HTTP/1.1\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n"
    )
    answers = split(exchange(server, smuggle))
    assert [orjson.loads(body)["path"] for _, _, body in answers] == ["/x"]
    assert answers[0][1]["connection"] == "close"


def test_a_slow_head_is_cut(server: NativeHttpServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /x HTTP/1.1\r\nX-Slow: ")
        while sock.recv(65536):
            pass
        assert TIMEOUT_S - 0.1 < time.monotonic() - started < TIMEOUT_S + 2


def test_handler_errors_are_500_and_the_connection_goes_on(server: NativeHttpServer) -> None:
    answers = split(
        exchange(server, b"GET /boom HTTP/1.1\r\n\r\nGET /ok HTTP/1.1\r\nConnection: close\r\n\r\n")
    )
    assert [status for status, _, _ in answers] == [500, 200]
    assert orjson.loads(answers[0][2]) == {"error": INTERNAL_MESSAGE}


def test_https_with_a_client_certificate(echo: Echo, tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    tls = (pki.read("server.key"), pki.read("server.pem"), pki.read("ca.pem"), True)
    running = serve(echo, tls)
    try:
        context = ssl.create_default_context(cafile=str(pki.path("ca.pem")))
        context.load_cert_chain(pki.path("client.pem"), pki.path("client.key"))
        with (
            socket.create_connection(("127.0.0.1", running.port)) as raw,
            context.wrap_socket(raw, server_hostname="localhost") as sock,
        ):
            sock.sendall(b"GET /secure HTTP/1.1\r\nConnection: close\r\n\r\n")
            received = b""
            while chunk := sock.recv(65536):
                received += chunk
        [(status, _, body)] = split(received)
        assert (status, orjson.loads(body)["path"]) == (200, "/secure")
        anonymous = ssl.create_default_context(cafile=str(pki.path("ca.pem")))
        with (
            pytest.raises((ssl.SSLError, ConnectionResetError)),
            socket.create_connection(("127.0.0.1", running.port)) as raw,
            anonymous.wrap_socket(raw, server_hostname="localhost") as sock,
        ):
            sock.sendall(b"GET /secure HTTP/1.1\r\nConnection: close\r\n\r\n")
            sock.recv(65536)
    finally:
        running.stop(1.0)


def test_expect_100_continue_and_http10(server: NativeHttpServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"POST /x HTTP/1.1\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n")
        sock.sendall(b"ok")
        [(status, _, body)] = split(sock.recv(65536))
        assert (status, orjson.loads(body)["body"]) == (200, "ok")
    [(status, headers, body)] = split(exchange(server, b"GET /old HTTP/1.0\r\n\r\n"))
    assert (status, orjson.loads(body)["path"]) == (200, "/old")
    assert headers.get("connection", "close") == "close"  # 1.0 without keep-alive: closed


def test_stop_finishes_the_request_under_way_and_closes_idle_connections(echo: Echo) -> None:
    running = serve(echo)
    idle = socket.create_connection(("127.0.0.1", running.port), timeout=5)
    busy = socket.create_connection(("127.0.0.1", running.port), timeout=5)
    try:
        busy.sendall(b"GET /later HTTP/1.1\r\n\r\n")
        time.sleep(0.01)
        running.stop(2.0)
        [(status, _, body)] = split(busy.recv(65536))
        assert (status, orjson.loads(body)["path"]) == (200, "/later")
        assert idle.recv(1) == b""
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", running.port), timeout=1).close()
    finally:
        idle.close()
        busy.close()
