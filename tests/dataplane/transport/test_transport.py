"""Choosing the transport (`--grpc_transport`): native when built, grpcio otherwise with one
warning, and each module given only the arguments it takes."""

from __future__ import annotations

import logging
import sys

import grpc
import pytest

from dataplane.transport import select_transport

GRPCIO = "dataplane.transport.grpcio_frontend"
NATIVE = "dataplane.transport._native"


def fallbacks(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "serving gRPC with grpcio" in r.getMessage()]


def test_grpcio_is_chosen_by_name_without_a_warning(caplog) -> None:
    with caplog.at_level(logging.WARNING):
        assert select_transport("grpcio").name == GRPCIO
    assert fallbacks(caplog) == []


def test_native_is_a_built_native_module() -> None:
    assert select_transport("native").name == NATIVE


def test_without_a_native_module_native_serves_on_grpcio_with_one_warning(
    monkeypatch, caplog
) -> None:
    monkeypatch.setitem(sys.modules, NATIVE, None)  # as on a machine where it was not built
    with caplog.at_level(logging.WARNING):
        assert select_transport("native").name == GRPCIO
    assert fallbacks(caplog) == ["the native gRPC transport is not built; serving gRPC with grpcio"]


def test_an_unknown_transport_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown gRPC transport 'cxx'"):
        select_transport("cxx")


def test_each_module_serves_with_a_pending_bound() -> None:
    for name in ("native", "grpcio"):
        frontend = select_transport(name, max_pending_calls=5).frontend(["127.0.0.1:0"], [], 0)
        port = frontend.start()[0]
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                answer = channel.unary_unary("/t.S/M").future(b"ping", timeout=10)
                calls = frontend.next_calls()
                assert [call.request for call in calls] == [b"ping"]
                calls[0].finish(b"pong")
                assert answer.result(timeout=10) == b"pong"
        finally:
            frontend.shutdown(0)
            frontend.close()
