"""`python -m controlplane serve` as a process: gunicorn serves HTTP, exactly one fleet worker
runs beside it (in the serve process itself), HTTP workers wake it, SIGTERM drains and exits 0,
and a gunicorn that cannot start takes the instance down instead of leaving half of it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from tensorflow_serving.config.model_server_config_pb2 import ModelConfig

from controlplane import planes, store
from controlplane.auth import create_token
from controlplane.config import HttpOptions
from controlplane.server import gunicorn_options
from tests.controlplane.fake_dataplane import FakeDataPlane
from tests.support.controlplane import migrated_database
from tests.support.processes import REPO_ROOT, ServerProcess, free_port, log_tail

SECRET = "5e" * 32


def test_gunicorn_options_bound_workers_threads_and_timeouts():
    http = HttpOptions(workers=3, threads=4, timeout_s=20, graceful_timeout_s=15, keepalive_s=2)
    options = gunicorn_options(http, "0.0.0.0", 5000)
    assert options["bind"] == ["0.0.0.0:5000"]
    assert (options["worker_class"], options["workers"], options["threads"]) == ("gthread", 3, 4)
    assert (options["timeout"], options["graceful_timeout"], options["keepalive"]) == (20, 15, 2)
    assert "certfile" not in options
    tls = gunicorn_options(HttpOptions(cert_file="c.pem", key_file="k.pem"), "::", 443)
    assert (tls["bind"], tls["certfile"], tls["keyfile"]) == (["[::]:443"], "c.pem", "k.pem")


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


@pytest.fixture
def fake() -> Iterator[FakeDataPlane]:
    plane = FakeDataPlane()
    yield plane
    plane.stop()


def serve_process(tmp_path: Path, port: int, dataplane: str) -> tuple[ServerProcess, str]:
    url = f"sqlite:///{tmp_path / 'cp.db'}"
    with migrated_database(url) as db:
        token = create_token(db, "server-test", "admin")
    env = {
        "DATABASE_URL": url,
        "MODELPLANE_SECRET_KEY": SECRET,
        "MODELPLANE_DATAPLANES": dataplane,
        # Only a notify can push within the test: the periodic pass is far away.
        "MODELPLANE_RECONCILE_INTERVAL_S": "300",
    }
    argv = [sys.executable, "-m", "controlplane", "serve", "--port", str(port)]
    argv += ["--workers", "2", "--threads", "2", "--graceful-timeout", "10"]
    return ServerProcess(argv, [port], tmp_path / "serve.log", env, ready_timeout=120), token


@pytest.mark.slow
def test_serve_runs_gunicorn_and_one_fleet_worker_that_http_workers_wake(tmp_path, fake):
    port = free_port()
    server, token = serve_process(tmp_path, port, fake.address)
    server.start()
    try:
        base = f"http://127.0.0.1:{port}"
        health = requests.get(f"{base}/healthz", timeout=120)
        assert (health.status_code, health.headers["Server"]) == (200, "gunicorn")
        serve_pid = server.proc.pid
        [master] = children(serve_pid)
        deadline = time.monotonic() + 30  # gunicorn forks its workers one after the other
        while len(children(master)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(children(master)) == 2  # --workers 2
        model = {"name": "m", "base_path": "/models/m"}
        auth = {"Authorization": f"Bearer {token}"}
        created = requests.post(f"{base}/api/v1/models", json=model, headers=auth, timeout=60)
        assert created.status_code == 201
        deadline = time.monotonic() + 60
        while not fake.reloads and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(fake.reloads) == 1, log_tail(server.log_path)  # woken by SIGUSR1
        log = server.log_path.read_text()
        assert log.count("fleet worker running in pid") == 1
        assert f"fleet worker running in pid {serve_pid}" in log
        workers = children(master)
        assert server.stop(timeout=60) == 0
        assert not any(alive(pid) for pid in [master, *workers])
        assert "Shutting down: Master" in server.log_path.read_text()
    finally:
        server.stop()


@pytest.mark.slow
def test_serve_exits_non_zero_when_gunicorn_cannot_bind(tmp_path, fake):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server, _ = serve_process(tmp_path, port, fake.address)
        started = time.monotonic()
        result = subprocess.run(
            server.argv, cwd=REPO_ROOT, env=server.env, capture_output=True, text=True, timeout=180
        )
    assert result.returncode != 0
    assert "the HTTP server exited with" in result.stderr
    assert time.monotonic() - started < 180


def test_gunicorn_goes_when_serve_is_killed():
    """serve's child gets SIGTERM when serve dies, even by SIGKILL (PR_SET_PDEATHSIG): no
    orphaned gunicorn keeps the port while the orchestrator starts a new instance."""
    script = (
        "import subprocess, sys, time;"
        "from controlplane.server import _die_with_parent;"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'],"
        " preexec_fn=_die_with_parent); print(p.pid, flush=True); time.sleep(60)"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True
    )
    child = int(parent.stdout.readline())
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(child)


def other_threads(pid: int) -> list[int]:
    """The thread ids of `pid` other than its main thread."""
    return [int(tid) for tid in os.listdir(f"/proc/{pid}/task") if int(tid) != pid]


def wait_for_first_probe(url: str) -> None:
    """Until the fleet's first cycle has seen the plane: it read the head before that, so from
    then on only a wake-up (or the far periodic pass) pushes a new head."""
    with migrated_database(url) as db:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if any(plane.last_seen for plane in planes.list_planes(db)):
                return
            time.sleep(0.1)
    raise AssertionError("the fleet's first cycle never probed the plane")


def fleet_process(tmp_path: Path, dataplane: str) -> ServerProcess:
    """`fleet` alone: no port to wait for."""
    serve, _ = serve_process(tmp_path, free_port(), dataplane)
    argv = [sys.executable, "-m", "controlplane", "fleet"]
    return ServerProcess(argv, [], tmp_path / "fleet.log", serve.env)


@pytest.mark.slow
@pytest.mark.parametrize("command", ["serve", "fleet"])
def test_signals_that_land_on_any_thread_reach_the_main_loop(tmp_path, fake, command):
    """kill() on a thread id hands the process's signal to that thread, as the kernel itself does
    when the main thread has a signal pending already (a busy machine): the wake-up and the stop
    must still reach the main loop, not wait in a flag for a main thread that sleeps in a
    blocking call."""
    if command == "serve":
        server, _ = serve_process(tmp_path, free_port(), fake.address)
    else:
        server = fleet_process(tmp_path, fake.address)
    server.start()
    try:
        url = f"sqlite:///{tmp_path / 'cp.db'}"
        wait_for_first_probe(url)
        with migrated_database(url) as db:  # committed behind the HTTP workers: no notify
            store.create_model(db, ModelConfig(name="m", base_path="/models/m"), "server-test")
        pid = server.proc.pid
        threads = other_threads(pid)
        assert threads  # the fleet worker's and gRPC's
        for tid in threads:
            os.kill(tid, signal.SIGUSR1)
        deadline = time.monotonic() + 30
        while not fake.reloads and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(fake.reloads) == 1, log_tail(server.log_path)
        os.kill(other_threads(pid)[0], signal.SIGTERM)
        assert server.proc.wait(timeout=90) == 0, log_tail(server.log_path)  # a loaded machine
    finally:
        server.stop()
