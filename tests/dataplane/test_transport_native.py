"""The native transport's own contract (dataplane.transport._native), beyond what
test_grpc_server.py covers through the dispatcher: metadata, deadlines seen by a handler,
the pending-call bound, limits and encodings it refuses without Python."""

from __future__ import annotations

import threading
import time

import grpc
import pytest

from dataplane.transport import _native
from tests.dataplane.native_serving import echo, serving

METHOD = "/test.Echo/Say"


def call_with(port: int, request: bytes, **kwargs) -> bytes:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        return channel.unary_unary(METHOD)(request, timeout=kwargs.pop("timeout", 10), **kwargs)


def error_of(port: int, request: bytes, **kwargs) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call_with(port, request, **kwargs)
    return caught.value


def test_a_handler_sees_the_ascii_metadata_and_not_the_transport_headers() -> None:
    seen: list[list[tuple[str, str]]] = []

    def record(call: _native.Call) -> None:
        seen.append(call.metadata)
        echo(call)

    metadata = [("x-request-id", "abc-123"), ("x-blob-bin", b"\x00\x01")]
    with serving(record) as (_, port):
        assert call_with(port, b"hi", metadata=metadata) == b"echo:hi"
    names = [name for name, _ in seen[0]]
    assert ("x-request-id", "abc-123") in seen[0]
    assert "x-blob-bin" not in names
    assert not {"content-type", "te", "grpc-timeout", "grpc-accept-encoding"} & set(names)
    assert any(name == "user-agent" and "grpc-python" in value for name, value in seen[0])


def test_a_held_call_whose_deadline_passes_is_expired_cancelled_and_deadline_exceeded() -> None:
    held: list[_native.Call] = []
    with serving(held.append) as (_, port):
        error = error_of(port, b"slow", timeout=0.3)
        assert error.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        (call,) = held
        assert call.expired
        deadline = time.monotonic() + 5  # the client's timer and the server's race
        while not call.cancelled and time.monotonic() < deadline:
            time.sleep(0.01)
        assert call.cancelled
        assert call.finish(b"too late") is False


def test_a_call_without_a_deadline_never_expires() -> None:
    states: list[tuple[bool, bool]] = []

    def record(call: _native.Call) -> None:
        states.append((call.expired, call.client_verified))
        echo(call)

    with serving(record) as (_, port), grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        assert channel.unary_unary(METHOD)(b"x") == b"echo:x"  # no timeout at all
    assert states == [(False, False)]


def test_calls_beyond_max_pending_calls_get_unavailable_without_python() -> None:
    """Nobody takes calls here: the first two to arrive wait, the third is refused at once."""
    server = _native.Frontend(["127.0.0.1:0"], [], max_pending_calls=2)
    (port,) = server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            say = channel.unary_unary(METHOD)
            sent = [say.future(b"%d" % i, timeout=10) for i in range(3)]
            deadline = time.monotonic() + 8
            while not any(f.done() for f in sent) and time.monotonic() < deadline:
                time.sleep(0.01)
            (refused,) = [f for f in sent if f.done()]
            assert refused.exception().code() is grpc.StatusCode.UNAVAILABLE
            calls = server.next_calls()
            assert len(calls) == 2
            for call in calls:
                call.finish(b"done:" + call.request)
            waited = [f for f in sent if f is not refused]
            assert sorted(f.result(timeout=5) for f in waited) == sorted(
                b"done:" + c.request for c in calls
            )
    finally:
        server.shutdown(0)
        server.close()


def test_an_oversize_request_is_resource_exhausted_without_python() -> None:
    seen: list[bytes] = []

    def record(call: _native.Call) -> None:
        seen.append(call.request)
        echo(call)

    limits = [("grpc.max_receive_message_length", 64)]
    with serving(record, channel_args=limits) as (_, port):
        error = error_of(port, b"x" * 65)
        assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "larger than max (65 vs. 64)" in error.details()
        assert call_with(port, b"y" * 64) == b"echo:" + b"y" * 64
    assert seen == [b"y" * 64]


def test_an_oversize_answer_is_resource_exhausted() -> None:
    limits = [("grpc.max_send_message_length", 16)]
    with serving(lambda call: call.finish(b"z" * 17), channel_args=limits) as (_, port):
        error = error_of(port, b"q")
        assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "Sent message larger than max (17 vs. 16)" in error.details()


def test_a_compressed_request_is_unimplemented_and_the_next_one_served() -> None:
    seen: list[bytes] = []

    def record(call: _native.Call) -> None:
        seen.append(call.request)
        echo(call)

    with serving(record) as (_, port):
        error = error_of(port, b"a" * 1000, compression=grpc.Compression.Gzip)
        assert error.code() is grpc.StatusCode.UNIMPLEMENTED
        assert "gzip" in error.details()
        assert call_with(port, b"plain") == b"echo:plain"
    assert seen == [b"plain"]


def test_abort_takes_only_error_codes() -> None:
    errors: list[str] = []

    def bad_code(call: _native.Call) -> None:
        try:
            call.abort(0, "OK is not an error")
        except ValueError as exc:
            errors.append(str(exc))
        call.abort(5, "nothing here")

    with serving(bad_code) as (_, port):
        error = error_of(port, b"q")
    assert (error.code(), error.details()) == (grpc.StatusCode.NOT_FOUND, "nothing here")
    assert errors == ["not a gRPC error code"]


def test_a_stopped_frontend_hands_out_no_more_calls() -> None:
    server = _native.Frontend(["127.0.0.1:0"], [])
    server.start()
    server.shutdown(0)
    taken: list[list[_native.Call]] = []
    thread = threading.Thread(target=lambda: taken.append(server.next_calls()))
    thread.start()
    server.close()
    thread.join(5)
    assert taken == [[]]
