"""The transport contract's per-call fields and bounds, on a Frontend driven directly (the
dispatcher's view): metadata, expired, client_verified under TLS, max_pending_calls.

The C++ transport predates these fields, so they run on grpcio here; the native extension
that replaces it runs the same tests in its own file."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import grpc
import pytest

from dataplane.transport import Call, Frontend
from dataplane.transport.grpcio_frontend import Frontend as GrpcioFrontend
from tests.support.certs import Pki, make_pki

METHOD = "/test.Echo/Say"


@contextmanager
def serving(**kwargs: object) -> Iterator[tuple[Frontend, int]]:
    frontend = GrpcioFrontend(["127.0.0.1:0"], [], **kwargs)  # type: ignore[arg-type]
    port = frontend.start()[0]
    try:
        yield frontend, port
    finally:
        frontend.shutdown(0)
        frontend.close()


def take(frontend: Frontend, count: int) -> list[Call]:
    """The next `count` calls, from as many wake-ups as it takes."""
    taken: list[Call] = []
    while len(taken) < count:
        taken.extend(frontend.next_calls())
    return taken


def test_a_call_carries_metadata_deadline_and_bytes_and_is_answered() -> None:
    with serving() as (frontend, port), grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        say = channel.unary_unary(METHOD)
        metadata = (("x-request-id", "abc-1"), ("trace-bin", b"\x00\x01"))
        answer = say.future(b"hello", timeout=0.5, metadata=metadata)
        (call,) = take(frontend, 1)
        assert (call.method, call.request) == (METHOD, b"hello")
        assert ("x-request-id", "abc-1") in call.metadata
        assert not any(key.endswith("-bin") for key, _ in call.metadata)
        assert not call.expired and not call.cancelled and not call.client_verified
        assert call.finish(b"hi there")
        assert answer.result(timeout=5) == b"hi there"
        assert not call.finish(b"twice")  # one answer per call


def test_a_call_past_its_deadline_is_expired_and_cancelled() -> None:
    with serving() as (frontend, port), grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        answer = channel.unary_unary(METHOD).future(b"slow", timeout=0.3)
        (call,) = take(frontend, 1)
        assert not call.expired
        (again,) = take(frontend, 1)  # the cancellation of a call Python holds comes back
        assert again is call and call.cancelled and call.expired
        assert answer.exception().code() is grpc.StatusCode.DEADLINE_EXCEEDED
        assert not call.finish(b"too late")


def test_calls_beyond_max_pending_are_unavailable_until_one_is_answered() -> None:
    with (
        serving(max_pending_calls=2) as (frontend, port),
        grpc.insecure_channel(f"127.0.0.1:{port}") as channel,
    ):
        say = channel.unary_unary(METHOD)
        held = [say.future(b"one", timeout=10), say.future(b"two", timeout=10)]
        calls = take(frontend, 2)
        with pytest.raises(grpc.RpcError) as refused:
            say(b"three", timeout=10)
        assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
        for call in calls:
            call.finish(call.request.upper())
        assert sorted(answer.result(timeout=5) for answer in held) == [b"ONE", b"TWO"]
        later = say.future(b"four", timeout=10)
        (call,) = take(frontend, 1)
        call.finish(b"FOUR")
        assert later.result(timeout=5) == b"FOUR"


def test_a_server_stream_and_an_abort() -> None:
    with serving() as (frontend, port), grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stream = channel.unary_stream(METHOD)(b"count", timeout=5)
        failing = channel.unary_unary(METHOD).future(b"fail", timeout=5)
        calls = {call.request: call for call in take(frontend, 2)}
        for word in (b"1", b"2", b"3"):
            assert calls[b"count"].write(word)
        assert calls[b"count"].close_stream()
        assert not calls[b"count"].write(b"4")
        assert list(stream) == [b"1", b"2", b"3"]
        assert calls[b"fail"].abort(grpc.StatusCode.NOT_FOUND.value[0], "no such thing")
        error = failing.exception()
        assert (error.code(), error.details()) == (grpc.StatusCode.NOT_FOUND, "no such thing")


@pytest.fixture(scope="module")
def pki() -> Pki:
    return make_pki()


def mtls_channel(pki: Pki, port: int, client: bool) -> grpc.Channel:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=pki.ca.cert_pem,
        private_key=pki.client.key_pem if client else None,
        certificate_chain=pki.client.cert_pem if client else None,
    )
    return grpc.secure_channel(f"localhost:{port}", credentials)


@pytest.mark.parametrize("client_verify", [True, False])
def test_client_verified_only_when_tls_verified_a_client_certificate(
    pki: Pki, client_verify: bool
) -> None:
    tls = (pki.server.key_pem, pki.server.cert_pem, pki.ca.cert_pem, client_verify)
    with serving(tls=tls) as (frontend, port), mtls_channel(pki, port, True) as channel:
        answer = channel.unary_unary(METHOD).future(b"who", timeout=10)
        (call,) = take(frontend, 1)
        assert call.client_verified is client_verify
        call.finish(b"you")
        assert answer.result(timeout=10) == b"you"


def test_with_client_verify_a_client_without_a_certificate_never_reaches_python(pki) -> None:
    tls = (pki.server.key_pem, pki.server.cert_pem, pki.ca.cert_pem, True)
    with serving(tls=tls) as (frontend, port), mtls_channel(pki, port, False) as channel:
        reached: list[Call] = []
        taker = threading.Thread(target=lambda: reached.extend(frontend.next_calls()))
        taker.start()
        with pytest.raises(grpc.RpcError) as refused:
            channel.unary_unary(METHOD)(b"anyone?", timeout=10)
        assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
        time.sleep(0.2)
        assert not reached
        frontend.close()
        taker.join(5)


def test_calls_whose_message_never_comes_cannot_take_every_thread() -> None:
    """grpcio parks a thread per call until its request arrives; beyond the pending bound plus
    a few threads to refuse with, grpcio refuses calls itself, and the server stays usable."""
    with (
        serving(max_pending_calls=1) as (frontend, port),
        grpc.insecure_channel(f"127.0.0.1:{port}") as channel,
    ):
        release = threading.Event()

        def never_sends() -> Iterator[bytes]:
            release.wait(10)
            return
            yield b""

        silent = channel.stream_unary(METHOD)
        parked = [silent.future(never_sends(), timeout=10) for _ in range(17)]
        time.sleep(0.5)  # all 17 (the bound, 1, plus 16) hold a thread
        with pytest.raises(grpc.RpcError) as refused:
            channel.unary_unary(METHOD)(b"one more", timeout=10)
        assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        release.set()
        for call in parked:
            assert call.exception(timeout=10).code() is grpc.StatusCode.INTERNAL
        answer = channel.unary_unary(METHOD).future(b"now", timeout=10)
        (call,) = take(frontend, 1)
        call.finish(b"served")
        assert answer.result(timeout=5) == b"served"
