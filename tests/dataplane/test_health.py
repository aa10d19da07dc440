"""Health answers follow the manager's model states and go NOT_SERVING on shutdown."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dataplane import errors
from dataplane.grpc_server import GrpcServer
from dataplane.grpc_service import health_routes
from dataplane.health import NOT_SERVING, SERVICE_UNKNOWN, SERVING, HealthService
from dataplane.manager import VersionState, VersionStatus


class FakeManager:
    """Model states set by the test: name -> list of version states."""

    def __init__(self) -> None:
        self.models: dict[str, list[VersionState]] = {}

    def model_names(self) -> list[str]:
        return sorted(self.models)

    def model_status(self, name: str, version: int | None = None) -> list[VersionStatus]:
        if name not in self.models:
            raise errors.not_found(f"Could not find any versions of model {name}")
        return [VersionStatus(i + 1, state) for i, state in enumerate(self.models[name])]


@pytest.fixture
def manager() -> FakeManager:
    return FakeManager()


@pytest.fixture
def servicer(manager: FakeManager) -> HealthService:
    return HealthService(manager, watch_interval_seconds=0.02)  # type: ignore[arg-type]


@pytest.fixture
def stub(servicer: HealthService) -> Iterator[health_pb2_grpc.HealthStub]:
    """The service on the data plane's own gRPC front end, on a free loopback port."""
    server = GrpcServer(health_routes(servicer), channel_args=[])
    port = server.start(["127.0.0.1:0"])
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield health_pb2_grpc.HealthStub(channel)
    server.stop(0)


def check(stub: health_pb2_grpc.HealthStub, service: str) -> int:
    return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status


def test_server_is_not_serving_while_nothing_is_available(manager, stub) -> None:
    assert check(stub, "") == NOT_SERVING
    manager.models["m"] = [VersionState.LOADING]
    assert check(stub, "") == NOT_SERVING
    assert check(stub, "m") == NOT_SERVING


def test_serving_once_a_version_is_available(manager, stub) -> None:
    manager.models["m"] = [VersionState.END, VersionState.AVAILABLE]
    manager.models["broken"] = [VersionState.END]
    assert check(stub, "") == SERVING
    assert check(stub, "m") == SERVING
    assert check(stub, "broken") == NOT_SERVING


def test_unknown_model_is_not_found(manager, stub) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        check(stub, "nope")
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND
    assert "unknown service: nope" in caught.value.details()


def test_shutting_down_is_not_serving_everywhere(manager, servicer, stub) -> None:
    manager.models["m"] = [VersionState.AVAILABLE]
    assert check(stub, "") == SERVING
    servicer.shut_down()
    assert check(stub, "") == NOT_SERVING
    assert check(stub, "m") == NOT_SERVING


def test_watch_streams_changes_and_ends_on_shutdown(manager, servicer, stub) -> None:
    manager.models["m"] = [VersionState.LOADING]
    stream = stub.Watch(health_pb2.HealthCheckRequest(service="m"), timeout=10)
    seen: list[int] = []
    first = threading.Event()

    def read() -> None:
        for response in stream:
            seen.append(response.status)
            first.set()

    reader = threading.Thread(target=read)
    reader.start()
    assert first.wait(5)
    manager.models["m"] = [VersionState.AVAILABLE]
    deadline = time.monotonic() + 5
    while len(seen) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    servicer.shut_down()
    reader.join(5)
    assert not reader.is_alive()
    assert seen == [NOT_SERVING, SERVING, NOT_SERVING]


def test_watch_of_unknown_service_says_so(stub, servicer) -> None:
    stream = stub.Watch(health_pb2.HealthCheckRequest(service="ghost"), timeout=10)
    assert next(stream).status == SERVICE_UNKNOWN
    stream.cancel()


def test_a_watch_started_after_shutdown_gets_one_answer_and_ends(manager, servicer, stub) -> None:
    manager.models["m"] = [VersionState.AVAILABLE]
    servicer.shut_down()
    statuses = [r.status for r in stub.Watch(health_pb2.HealthCheckRequest(service="m"), timeout=5)]
    assert statuses == [NOT_SERVING]
