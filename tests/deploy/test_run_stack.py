"""scripts/run_stack.py: its options and credentials file, then the whole stack for real."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import shlex
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from scripts import run_stack
from scripts.run_stack import Credentials, StackError, StackOptions
from tests.support.processes import REPO_ROOT, free_ports, port_open

STACK_TIMEOUT_S = 420.0  # first run builds the models and imports TensorFlow three times
STOP_TIMEOUT_S = 60.0
QUICKSTART = (
    "curl -d '{\"instances\": [1.0, 2.0, 5.0]}' -X POST "
    "http://localhost:8501/v1/models/half_plus_two:predict"
)


def options(**env: str) -> StackOptions:
    return run_stack.parse_options([], env)


# -- options and credentials ------------------------------------------------------------------


def test_defaults_are_the_documented_ports_and_the_repo_var_dir() -> None:
    defaults = options()
    assert (defaults.controlplane_port, defaults.grpc_port, defaults.rest_port) == (
        5000,
        8500,
        8501,
    )
    assert defaults.var_dir == REPO_ROOT / "var"
    assert defaults.database_url == f"sqlite:///{REPO_ROOT / 'var' / 'controlplane.db'}"
    assert defaults.predict_curl == QUICKSTART  # TF Serving's quick-start request, verbatim


def test_environment_then_flags_override_the_defaults(tmp_path: Path) -> None:
    env = {
        "MODELPLANE_VAR_DIR": str(tmp_path),
        "CONTROLPLANE_PORT": "6000",
        "GRPC_PORT": "9500",
        "REST_PORT": "9501",
    }
    from_env = run_stack.parse_options([], env)
    assert (from_env.var_dir, from_env.controlplane_port, from_env.rest_port) == (
        tmp_path,
        6000,
        9501,
    )
    assert from_env.models_dir == tmp_path / "models"
    assert from_env.controlplane_url == "http://127.0.0.1:6000"
    flags = run_stack.parse_options(["--grpc-port", "7500", "--database-url", "sqlite://"], env)
    assert (flags.grpc_port, flags.rest_port, flags.database_url) == (7500, 9501, "sqlite://")


def test_credentials_round_trip_in_a_private_file(tmp_path: Path) -> None:
    path = tmp_path / "credentials.txt"
    assert run_stack.read_credentials(path) is None
    credentials = Credentials("admin", "pa=ss", "mp_token")
    run_stack.write_credentials(path, credentials)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert run_stack.read_credentials(path) == credentials
    path.write_text("admin_username=admin\n")
    assert run_stack.read_credentials(path) is None  # incomplete: create new ones


def test_model_config_points_at_the_var_models(tmp_path: Path) -> None:
    config = run_stack.model_config(options(MODELPLANE_VAR_DIR=str(tmp_path)), "digits")
    assert config == {
        "name": "digits",
        "base_path": str(tmp_path / "models" / "digits"),
        "model_platform": "tensorflow",
        "model_version_policy": {"latest": {"num_versions": 1}},
    }


def test_a_busy_port_is_reported_with_the_variable_that_moves_it() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        busy = listener.getsockname()[1]
        stack = options(REST_PORT=str(busy), GRPC_PORT="1", CONTROLPLANE_PORT="2")
        with pytest.raises(StackError, match=f"port {busy} is already in use; set REST_PORT"):
            run_stack.require_free_ports(stack)


# -- the real stack ---------------------------------------------------------------------------


class StackProcess:
    """`python scripts/run_stack.py` with its stdout read line by line on a thread."""

    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "scripts/run_stack.py"],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, wanted: Callable[[str], bool], timeout_s: float) -> str:
        """The first line `wanted` accepts; fails with the whole output on EOF or timeout."""
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                break
            self.lines.append(line)
            if wanted(line):
                return line
        raise AssertionError("run_stack.py output so far:\n" + "\n".join(self.lines))

    def child_pids(self) -> dict[str, int]:
        started = (re.match(r"started (\w+) \(pid (\d+)\)", line) for line in self.lines)
        return {m.group(1): int(m.group(2)) for m in started if m}

    def kill_everything(self) -> None:
        """Last resort after a failed test: no stray server may outlive it."""
        for pid in self.child_pids().values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@dataclass
class Stack:
    """Launches run_stack.py (again and again) on one var dir and one set of free ports."""

    env: dict[str, str]
    launched: list[StackProcess] = field(default_factory=list)

    @property
    def options(self) -> StackOptions:
        return run_stack.parse_options([], self.env)

    def launch(self) -> StackProcess:
        process = StackProcess(self.env)
        self.launched.append(process)
        return process


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    controlplane_port, grpc_port, rest_port = free_ports(3)
    env = {
        key: value
        for key, value in os.environ.items()
        if key != "DATABASE_URL" and not key.startswith("MODELPLANE_")
    }
    env.update(
        MODELPLANE_VAR_DIR=str(tmp_path / "var"),
        CONTROLPLANE_PORT=str(controlplane_port),
        GRPC_PORT=str(grpc_port),
        REST_PORT=str(rest_port),
        PYTHONUNBUFFERED="1",
    )
    stack = Stack(env)
    try:
        yield stack
    finally:
        for process in stack.launched:
            process.kill_everything()


def api_get(opts: StackOptions, token: str, path: str) -> Any:
    response = requests.get(
        f"{opts.controlplane_url}/api/v1/{path}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return response.json()


def wait_until_serving(process: StackProcess, opts: StackOptions) -> str:
    """Wait for the printed curl, run it verbatim, check the answer; returns the API token."""
    curl = process.wait_for(lambda line: line.strip().startswith("curl -d"), STACK_TIMEOUT_S)
    assert curl.strip() == QUICKSTART.replace("8501", str(opts.rest_port))
    answer = subprocess.run(shlex.split(curl), capture_output=True, text=True, timeout=30)
    assert json.loads(answer.stdout) == {"predictions": [2.5, 3.0, 4.5]}
    return next(line.split()[-1] for line in process.lines if "API token" in line)


def stop_and_check(process: StackProcess, opts: StackOptions, signum: signal.Signals) -> None:
    """The signal stops the control plane, then the data plane, all with exit code 0."""
    pids = process.child_pids()
    assert set(pids) == {"dataplane", "controlplane"}
    process.proc.send_signal(signum)
    assert process.proc.wait(STOP_TIMEOUT_S) == 0
    process.wait_for(lambda line: line.startswith("stopped dataplane"), 5)
    assert process.lines[-3:] == [
        f"{signum.name}: stopping",
        "stopped controlplane (exit code 0)",
        "stopped dataplane (exit code 0)",
    ]
    for pid in pids.values():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    for port in (opts.controlplane_port, opts.grpc_port, opts.rest_port):
        assert not port_open(port), port


@pytest.mark.slow
def test_run_stack_serves_the_printed_curl_stops_cleanly_and_restarts_as_it_was(
    stack: Stack,
) -> None:
    opts = stack.options
    first = stack.launch()
    token = wait_until_serving(first, opts)
    assert run_stack.read_credentials(opts.credentials_path).api_token == token
    assert stat.S_IMODE(opts.credentials_path.stat().st_mode) == 0o600
    models = api_get(opts, token, "models")["models"]
    assert {(m["name"], m["base_path"]) for m in models} == {
        ("half_plus_two", str(opts.models_dir / "half_plus_two")),
        ("digits", str(opts.models_dir / "digits")),
    }
    (plane,) = api_get(opts, token, "dataplanes")["dataplanes"]  # in sync before the banner
    assert (plane["address"], plane["state"], plane["applied_revision"]) == (
        f"127.0.0.1:{opts.grpc_port}",
        "in_sync",
        2,
    )
    stop_and_check(first, opts, signal.SIGINT)

    second = stack.launch()  # same var dir: same credentials, no new revision
    assert wait_until_serving(second, opts) == token
    revisions = api_get(opts, token, "revisions")["revisions"]
    assert [r["revision"] for r in revisions] == [2, 1]  # one per example model
    stop_and_check(second, opts, signal.SIGTERM)


def test_the_stack_makes_its_own_secrets_once_and_keeps_them_private(tmp_path: Path) -> None:
    from controlplane.config import Settings
    from controlplane.credentials import PlaneCredentials
    from controlplane.startup_checks import checked, dataplane_token_problem, secret_key_problem

    opts = options(MODELPLANE_VAR_DIR=str(tmp_path))
    env = run_stack.controlplane_env(opts)
    assert env["MODELPLANE_DEV_MODE"] == "1"
    assert run_stack.controlplane_env(opts) == env  # made once, then reused
    for path in (opts.secret_key_path, opts.dataplane_token_path):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    settings = Settings.from_env(env)
    assert secret_key_problem(settings.secret_key) is None
    assert checked(settings).secret_key == settings.secret_key  # not a made-up one
    token = PlaneCredentials.load(settings.dataplane_auth).token
    assert len(bytes.fromhex(token)) == 32 and dataplane_token_problem(token) is None
