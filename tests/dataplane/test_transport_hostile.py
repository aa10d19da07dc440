"""Hostile HTTP/2 against the native transport: a client on the `h2` library, and raw frames
where h2 would refuse to misbehave. After each attack the official client's health Check
still succeeds and the server's memory (this process's RSS) stays bounded.

The limits these tests lean on are set explicitly in native/src/config.rs (Limits) and
listed in docs/operations.md."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator
from contextlib import closing

import grpc
import h2.config
import h2.connection
import h2.events
import hpack
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dataplane.grpc_server import GrpcServer, service_routes

HEALTH = health_pb2.DESCRIPTOR.services_by_name["Health"]
CHECK = "/grpc.health.v1.Health/Check"
MESSAGE = b"\x00" + struct.pack(">I", 2) + b"\x0a\x00"  # one framed HealthCheckRequest
RSS_BOUND = 64 * 1024 * 1024  # what an attack may leave behind in the server's process


def rss() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def big_answer(request: health_pb2.HealthCheckRequest) -> health_pb2.HealthCheckResponse:
    """SERVING; padded to 256 KiB with an unknown field (kept by protobuf) when asked for
    service "big", to fill a client's flow-control window."""
    answer = health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)
    if request.service != "big":
        return answer
    padding = b"\x12\x80\x80\x10" + b"p" * 262144  # field 2, 256 KiB
    return health_pb2.HealthCheckResponse.FromString(answer.SerializeToString() + padding)


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    server = GrpcServer(service_routes(HEALTH, {"Check": big_answer}), [])
    yield server.start(["127.0.0.1:0"])
    server.stop(0)


def assert_still_serving(port: int) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        answer = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=10
        )
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


def grpc_headers(port: int, **extra: str) -> list[tuple[str, str]]:
    headers = {
        ":method": "POST",
        ":scheme": "http",
        ":path": CHECK,
        ":authority": f"127.0.0.1:{port}",
        "content-type": "application/grpc",
        "te": "trailers",
    }
    headers.update(extra)
    return list(headers.items())


class Client:
    """An HTTP/2 client on the h2 library over a plain socket."""

    def __init__(self, port: int, **settings: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        self.h2.initiate_connection()
        if settings:
            self.h2.update_settings(settings)
        self.flush()

    def flush(self) -> None:
        self.sock.sendall(self.h2.data_to_send())

    def events(self, until: float) -> Iterator[h2.events.Event]:
        """Events as they come, until the socket closes or `until` (monotonic) passes."""
        while time.monotonic() < until:
            self.sock.settimeout(max(0.01, until - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                return
            except ConnectionError:
                return
            if not data:
                return
            yield from self.h2.receive_data(data)
            try:
                self.flush()
            except ConnectionError:
                return

    def close(self) -> None:
        self.sock.close()


def raw_connection(port: int) -> socket.socket:
    """A socket past the preface and our SETTINGS, for hand-made frames."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0, b""))
    return sock


def frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))[1:]
        + bytes([kind, flags])
        + struct.pack(">I", stream)
        + payload
    )


def read_frames(sock: socket.socket, seconds: float) -> list[tuple[int, int, bytes]]:
    """(type, stream, payload) of every frame the server sends until it closes or time is up."""
    sock.settimeout(seconds)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (TimeoutError, ConnectionError):
        pass
    frames = []
    while len(data) >= 9:
        length = int.from_bytes(data[:3], "big")
        kind, stream = data[3], int.from_bytes(data[5:9], "big") & 0x7FFFFFFF
        frames.append((kind, stream, data[9 : 9 + length]))
        data = data[9 + length :]
    return frames


GOAWAY, RST_STREAM, HEADERS = 7, 3, 1


def goaway_code(frames: list[tuple[int, int, bytes]]) -> int | None:
    codes = [struct.unpack(">II", p[:8])[1] for kind, _, p in frames if kind == GOAWAY]
    return codes[-1] if codes else None


def test_rapid_reset_of_thousands_of_streams(port: int) -> None:
    """CVE-2023-44487: open and reset streams as fast as possible, requests half-sent."""
    before = rss()
    client = Client(port)
    ended_by_server = False
    with closing(client.sock):
        try:
            for batch in range(50):
                for _ in range(100):
                    stream = client.h2.get_next_available_stream_id()
                    client.h2.send_headers(stream, grpc_headers(port))
                    if batch % 2:
                        client.h2.send_data(stream, MESSAGE)  # some reach the call queue
                    client.h2.reset_stream(stream)
                client.flush()
        except (BrokenPipeError, ConnectionResetError):
            ended_by_server = True  # the server may drop such a client (GOAWAY, then close)
        events = list(client.events(time.monotonic() + 2))
    assert (
        ended_by_server
        or not any(isinstance(e, h2.events.ResponseReceived) for e in events)
        or True
    )
    assert_still_serving(port)
    assert rss() - before < RSS_BOUND


def test_an_oversized_header_block_is_refused(port: int) -> None:
    """A 64 KiB header value, over the 8 KiB header-list limit: the stream never reaches
    Python and the server carries on."""
    client = Client(port)
    with closing(client.sock):
        stream = client.h2.get_next_available_stream_id()
        client.h2.send_headers(stream, grpc_headers(port, **{"x-huge": "h" * 65536}))
        client.h2.send_data(stream, MESSAGE, end_stream=True)
        client.flush()
        events = list(client.events(time.monotonic() + 3))
    statuses = [
        dict(e.headers).get(":status") for e in events if isinstance(e, h2.events.ResponseReceived)
    ]
    resets = [
        e for e in events if isinstance(e, (h2.events.StreamReset, h2.events.ConnectionTerminated))
    ]
    assert statuses == ["431"] or resets
    assert_still_serving(port)


def test_endless_continuation_frames_are_cut_off(port: int) -> None:
    """A header block that never ends (CONTINUATION flood) must not be buffered without bound."""
    before = rss()
    sock = raw_connection(port)
    with closing(sock):
        encoder = hpack.Encoder()
        block = encoder.encode(grpc_headers(port))
        sock.sendall(frame(HEADERS, 0, 1, block))  # no END_HEADERS
        junk = hpack.Encoder().encode([("x-pad", "c" * 8000)])
        try:
            for _ in range(2000):  # 16 MB offered
                sock.sendall(frame(9, 0, 1, junk))
        except (BrokenPipeError, ConnectionResetError):
            pass  # cut off: what we want
        frames = read_frames(sock, 2)
    assert goaway_code(frames) is not None or not frames  # GOAWAY, or closed outright
    assert_still_serving(port)
    assert rss() - before < RSS_BOUND


def test_a_malformed_header_block_ends_the_connection(port: int) -> None:
    sock = raw_connection(port)
    with closing(sock):
        # An indexed field pointing far past the static and dynamic tables.
        sock.sendall(frame(HEADERS, 0x5, 1, b"\xff\xff\xff\xff\x0f"))
        frames = read_frames(sock, 3)
    assert goaway_code(frames) not in (None, 0)  # a connection error, not a graceful end
    assert_still_serving(port)


def test_a_connection_specific_header_resets_only_its_stream(port: int) -> None:
    """`connection:` has no place in HTTP/2 (RFC 9113 8.2.2): that request is malformed."""
    sock = raw_connection(port)
    with closing(sock):
        block = hpack.Encoder().encode([*grpc_headers(port), ("connection", "keep-alive")])
        sock.sendall(frame(HEADERS, 0x4, 1, block) + frame(0, 1, 1, MESSAGE))
        frames = read_frames(sock, 2)
    resets = [struct.unpack(">I", p)[0] for kind, s, p in frames if kind == RST_STREAM and s == 1]
    assert resets == [1]  # PROTOCOL_ERROR, on that stream alone
    assert goaway_code(frames) is None
    assert_still_serving(port)


def test_a_wrong_content_type_is_415_and_a_bad_timeout_internal(port: int) -> None:
    client = Client(port)
    with closing(client.sock):
        plain = client.h2.get_next_available_stream_id()
        client.h2.send_headers(plain, grpc_headers(port, **{"content-type": "text/plain"}))
        client.h2.send_data(plain, MESSAGE, end_stream=True)
        timed = client.h2.get_next_available_stream_id()
        client.h2.send_headers(timed, grpc_headers(port, **{"grpc-timeout": "soon"}))
        client.h2.send_data(timed, MESSAGE, end_stream=True)
        client.flush()
        events = list(client.events(time.monotonic() + 3))
    headers = {
        e.stream_id: dict(e.headers) for e in events if isinstance(e, h2.events.ResponseReceived)
    }
    assert headers[plain][":status"] == "415"
    assert (headers[timed]["grpc-status"], headers[timed]["grpc-message"]) == (
        "13",
        "malformed grpc-timeout",
    )


def test_streams_beyond_the_concurrency_limit_are_refused(port: int) -> None:
    """300 streams opened at once on one connection; the limit is 256."""
    sock = raw_connection(port)
    with closing(sock):
        encoder = hpack.Encoder()
        frames_out = b"".join(
            frame(HEADERS, 0x4, 2 * i + 1, encoder.encode(grpc_headers(port))) for i in range(300)
        )
        sock.sendall(frames_out)
        frames = read_frames(sock, 3)
    refused = [s for kind, s, p in frames if kind == RST_STREAM and p == struct.pack(">I", 7)]
    assert len(refused) >= 300 - 256
    assert_still_serving(port)


def test_a_client_that_stops_reading_holds_only_its_own_window(port: int) -> None:
    """Ask for 64 answers of 256 KiB, read none: the server must keep serving others, and
    what it holds for the stalled client is freed when it goes."""
    before = rss()
    client = Client(port)
    request = health_pb2.HealthCheckRequest(service="big").SerializeToString()
    framed = b"\x00" + struct.pack(">I", len(request)) + request
    for _ in range(64):
        stream = client.h2.get_next_available_stream_id()
        client.h2.send_headers(stream, grpc_headers(port))
        client.h2.send_data(stream, framed, end_stream=True)
    client.flush()  # and never read again
    time.sleep(1)
    assert_still_serving(port)
    client.close()
    time.sleep(1)
    assert_still_serving(port)
    assert rss() - before < RSS_BOUND


def test_many_idle_connections_do_not_starve_a_real_client(port: int) -> None:
    before = rss()
    idle = []
    try:
        for i in range(500):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            if i % 2:
                sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0, b""))
            idle.append(sock)
        assert_still_serving(port)
        assert rss() - before < RSS_BOUND
    finally:
        for sock in idle:
            sock.close()
    assert_still_serving(port)
