"""The process helpers start, restart and stop real servers (stand-ins for the data plane)."""

from __future__ import annotations

import signal
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.processes import (
    DataPlaneProcess,
    ServerProcess,
    free_port,
    port_open,
    quiet_port,
    start_dataplane,
)

# Listens on the --port and --rest_api_port it is given, like `python -m dataplane`.
FAKE_DATAPLANE = """
import os, socket, sys, time
ports = [int(a.split("=", 1)[1]) for a in sys.argv[1:]
         if a.startswith(("--port=", "--rest_api_port="))]
print("fake dataplane", " ".join(sys.argv[1:]), "MARK=" + os.environ.get("MARK", ""), flush=True)
listeners = []
for port in ports:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen()
    listeners.append(sock)
time.sleep(600)
"""


@pytest.fixture
def fake_command(tmp_path: Path) -> tuple[str, ...]:
    """Command line of a two-port stand-in for ``python -m dataplane``."""
    script = tmp_path / "fake_dataplane.py"
    script.write_text(FAKE_DATAPLANE)
    return (sys.executable, str(script))


def test_server_process_serves_http_and_stops(tmp_path: Path) -> None:
    port = free_port()
    argv = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
    server = ServerProcess(argv, [port], tmp_path / "http.log", cwd=tmp_path).start()
    (tmp_path / "hello.txt").write_text("hi")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/hello.txt", timeout=5) as response:
        assert response.read() == b"hi"
    assert server.stop() == -signal.SIGTERM
    assert not server.running
    assert not port_open(port)


def test_dataplane_process_flags_env_restart_kill(tmp_path: Path, fake_command) -> None:
    plane = start_dataplane(
        "--model_name=m", env={"MARK": "x1"}, log_dir=tmp_path, command=fake_command
    )
    try:
        assert plane.grpc_target == f"127.0.0.1:{plane.grpc_port}"
        assert plane.rest_url == f"http://127.0.0.1:{plane.rest_port}"
        assert plane.grpc_port != plane.rest_port
        first_pid = plane.proc.pid
        plane.restart()
        assert plane.proc.pid != first_pid
        assert port_open(plane.grpc_port) and port_open(plane.rest_port)
        log = plane.log_path.read_text()
        expected = f"--port={plane.grpc_port} --rest_api_port={plane.rest_port} --model_name=m"
        assert log.count(f"fake dataplane {expected} MARK=x1") == 2
        assert plane.kill() == -signal.SIGKILL
    finally:
        plane.stop()


def test_early_exit_reports_log_tail(tmp_path: Path) -> None:
    crash = (sys.executable, "-c", "import sys; print('boom: bad flag', sys.argv[1:]); sys.exit(3)")
    with pytest.raises(RuntimeError, match=r"exited with 3[\s\S]*boom: bad flag"):
        start_dataplane("--bogus", log_dir=tmp_path, command=crash)


def test_not_listening_times_out_and_kills(tmp_path: Path) -> None:
    silent = (sys.executable, "-c", "import time; time.sleep(60)")
    with pytest.raises(TimeoutError, match="not listening"):
        start_dataplane(log_dir=tmp_path, command=silent, ready_timeout=1.0)


def test_fixture_factory_tracks_processes(
    start_dataplane: Callable[..., DataPlaneProcess], fake_command
) -> None:
    first = start_dataplane(command=fake_command)
    second = start_dataplane(command=fake_command)
    assert first.running and second.running
    assert {first.grpc_port, first.rest_port}.isdisjoint({second.grpc_port, second.rest_port})


def test_quiet_port_is_free_and_below_the_ephemeral_range() -> None:
    port = quiet_port()
    assert 20000 <= port <= 32000
    assert not port_open(port)
