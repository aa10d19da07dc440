"""deploy/nginx/nginx.conf as shipped, on Debian's nginx, in front of two real data planes.

Runs without Docker: the container names become loopback ports, nothing else changes. It
proves the front door's promises on every `make test`: gRPC (`grpc_pass`) and REST reach the
planes with the official client and curl, a plane that refuses connections is skipped, and a
rolling restart (SIGTERM with drain, start again) under a steady load fails no request.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from tensorflow_serving.apis import (
    model_management_pb2,
    model_service_pb2_grpc,
    prediction_service_pb2_grpc,
)

from tests.deploy.load import (
    EXPECTED,
    SteadyLoad,
    curl_predict,
    grpc_predict,
    settle_seconds,
)
from tests.support.processes import DataPlaneProcess, free_ports, port_open, start_dataplane

NGINX_CONF = Path(__file__).resolve().parents[2] / "deploy" / "nginx" / "nginx.conf"
CONFIG = 'model_config_list {{ config {{ name: "half_plus_two" base_path: "{path}" }} }}'


def nginx_binary() -> str:
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    if found is None:
        pytest.fail("nginx is not installed: `make system-deps` installs Debian's nginx-light")
    return found


def loopback_conf(planes: list[DataPlaneProcess], grpc_port: int, rest_port: int, tmp: Path) -> str:
    """The shipped config with the compose names and ports turned into loopback ones."""
    text = NGINX_CONF.read_text()
    for index, plane in enumerate(planes, start=1):
        text = text.replace(f"dataplane-{index}:8500", f"127.0.0.1:{plane.grpc_port}")
        text = text.replace(f"dataplane-{index}:8501", f"127.0.0.1:{plane.rest_port}")
    replacements = {
        "listen 8500 http2;": f"listen 127.0.0.1:{grpc_port} http2;",
        "listen 8501;": f"listen 127.0.0.1:{rest_port};",
        "error_log stderr warn;": f"error_log {tmp}/error.log warn;",
        "pid /tmp/nginx.pid;": f"pid {tmp}/nginx.pid;",
    }
    for old, new in replacements.items():
        assert old in text, old
        text = text.replace(old, new)
    return text.replace("/tmp/nginx-", f"{tmp}/nginx-")


class FrontDoor:
    """nginx with the loopback config, and the planes behind it (restartable in place)."""

    def __init__(self, planes: list[DataPlaneProcess], tmp: Path) -> None:
        self.planes, self.tmp = planes, tmp
        self.grpc_port, self.rest_port = free_ports(2)
        conf = tmp / "nginx.conf"
        conf.write_text(loopback_conf(planes, self.grpc_port, self.rest_port, tmp))
        self.proc = subprocess.Popen([nginx_binary(), "-c", str(conf), "-g", "daemon off;"])
        deadline = time.monotonic() + 10
        while not (port_open(self.grpc_port) and port_open(self.rest_port)):
            assert self.proc.poll() is None, (tmp / "error.log").read_text()
            assert time.monotonic() < deadline, "nginx did not open its ports"
            time.sleep(0.1)

    def predict(self) -> tuple[list[float], list[float]]:
        with grpc.insecure_channel(f"127.0.0.1:{self.grpc_port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            return grpc_predict(stub), curl_predict(self.rest_port)

    def restart_plane(self, index: int) -> None:
        """SIGTERM (the plane drains and exits 0), then the same plane on the same ports."""
        plane = self.planes[index]
        assert plane.stop() == 0
        plane.start()

    def error_log(self) -> str:
        return (self.tmp / "error.log").read_text()

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        for plane in self.planes:
            plane.stop()


@pytest.fixture
def front_door(saved_models, tmp_path: Path) -> Iterator[FrontDoor]:
    config = tmp_path / "models.config"
    config.write_text(CONFIG.format(path=saved_models.half_plus_two))
    flags = [f"--model_config_file={config}", "--grace_period_seconds=10"]
    planes = [start_dataplane(*flags, log_dir=tmp_path) for _ in range(2)]
    door = FrontDoor(planes, tmp_path)
    yield door
    door.close()


def test_grpc_and_rest_go_through_and_a_refusing_plane_is_skipped(front_door: FrontDoor) -> None:
    assert front_door.predict() == (EXPECTED, EXPECTED)
    front_door.planes[0].stop()  # its ports now refuse connections
    for _ in range(10):
        assert front_door.predict() == (EXPECTED, EXPECTED)
    assert "(111: Connection refused) while connecting to upstream" in front_door.error_log()


def test_a_rolling_restart_under_load_fails_no_request(front_door: FrontDoor) -> None:
    with SteadyLoad(front_door.grpc_port, front_door.rest_port) as load:
        time.sleep(1)
        for index in (0, 1):
            front_door.restart_plane(index)
            time.sleep(settle_seconds())
    counts = load.snapshot()
    print({kind: (c.total, c.failed) for kind, c in counts.items()})
    assert all(c.total >= 50 for c in counts.values()), counts
    assert [c.failed for c in counts.values()] == [0, 0], counts


def test_admin_calls_are_refused_at_the_front_door(front_door: FrontDoor) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{front_door.grpc_port}") as channel:
        reload = model_service_pb2_grpc.ModelServiceStub(channel).HandleReloadConfigRequest
        with pytest.raises(grpc.RpcError) as refused:
            reload(model_management_pb2.ReloadConfigRequest(), timeout=10)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        info = channel.unary_unary("/modelplane.DataPlaneInfo/GetInfo")
        with pytest.raises(grpc.RpcError) as refused:
            info(b"", timeout=10)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert front_door.predict() == (EXPECTED, EXPECTED)  # inference still goes through
