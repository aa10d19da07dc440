"""Start real server processes for tests and wait until they listen.

Importable from any test module (``from tests.support.processes import start_dataplane``) so
that module-scoped fixtures can share one data plane; the ``start_dataplane`` fixture in
``tests/conftest.py`` wraps the same function and stops everything at teardown.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
LOG_TAIL_LINES = 60


def free_port() -> int:
    """Return a TCP port that was free a moment ago (the OS picks it; tiny reuse race)."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """Return ``count`` distinct free ports; sockets stay open until all are picked."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def quiet_port() -> int:
    """A free port below Linux's ephemeral range (32768+), for a server that must bind the same
    port again after a restart: on a machine busy with many connections an outgoing one can take
    an ephemeral port in the seconds a restarting server spends importing TensorFlow."""
    while True:
        port = random.randint(20000, 32000)
        if not port_open(port):
            return port


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """True if something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """Last ``lines`` lines of a log file, for error messages that explain a failed start."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "<no log file>"


class ServerProcess:
    """A subprocess that serves on known TCP ports, with its output captured in a log file.

    ``start()`` returns only once every port accepts connections; ``restart()`` reuses the
    same command and ports, which is what crash-recovery tests need.
    """

    def __init__(
        self,
        argv: Sequence[str],
        ports: Sequence[int],
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path = REPO_ROOT,
        ready_timeout: float = READY_TIMEOUT_S,
    ) -> None:
        self.argv = list(argv)
        self.ports = list(ports)
        self.log_path = log_path
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.cwd = cwd
        self.ready_timeout = ready_timeout
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ServerProcess:
        """Launch the command (appending to the log) and block until all ports listen."""
        busy = [port for port in self.ports if port_open(port)]
        if busy:
            raise RuntimeError(f"ports already in use before start: {busy}")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"=== start: {' '.join(self.argv)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.argv, cwd=self.cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        """Poll the ports; fail fast with the log tail if the process dies or times out."""
        assert self.proc is not None
        deadline = time.monotonic() + self.ready_timeout
        while not all(port_open(port) for port in self.ports):
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.argv} exited with {self.proc.returncode} before listening on "
                    f"{self.ports}; log {self.log_path}:\n{log_tail(self.log_path)}"
                )
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(
                    f"{self.argv} not listening on {self.ports} after {self.ready_timeout}s; "
                    f"log {self.log_path}:\n{log_tail(self.log_path)}"
                )
            time.sleep(0.1)

    @property
    def running(self) -> bool:
        """True while the process has not exited."""
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait()

    def kill(self) -> int | None:
        """SIGKILL without a grace period (simulates a crash); returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.kill()
        return self.proc.wait()

    def restart(self) -> ServerProcess:
        """Stop if running, then start again with the same command, ports and environment."""
        self.stop()
        self._wait_ports_released()
        return self.start()

    def _wait_ports_released(self) -> None:
        """A killed server's ports can linger briefly; starting into them would misreport."""
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while any(port_open(port) for port in self.ports) and time.monotonic() < deadline:
            time.sleep(0.1)


class DataPlaneProcess(ServerProcess):
    """``python -m dataplane --port=P --rest_api_port=R ...`` with convenient addresses."""

    def __init__(
        self,
        flags: Sequence[str],
        log_path: Path,
        env: Mapping[str, str] | None = None,
        command: Sequence[str] = (sys.executable, "-m", "dataplane"),
        ready_timeout: float = READY_TIMEOUT_S,
    ) -> None:
        self.grpc_port, self.rest_port = free_ports(2)
        self.flags = list(flags)
        argv = [*command, f"--port={self.grpc_port}", f"--rest_api_port={self.rest_port}"]
        super().__init__(
            [*argv, *self.flags],
            [self.grpc_port, self.rest_port],
            log_path,
            env=env,
            ready_timeout=ready_timeout,
        )

    @property
    def grpc_target(self) -> str:
        """gRPC channel target, e.g. ``127.0.0.1:8500``."""
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def rest_url(self) -> str:
        """REST base URL without trailing slash, e.g. ``http://127.0.0.1:8501``."""
        return f"http://127.0.0.1:{self.rest_port}"


def start_dataplane(
    *flags: str,
    env: Mapping[str, str] | None = None,
    log_dir: Path | str | None = None,
    command: Sequence[str] = (sys.executable, "-m", "dataplane"),
    ready_timeout: float = READY_TIMEOUT_S,
) -> DataPlaneProcess:
    """Start a data plane on fresh ports and return it once both ports accept connections.

    ``env`` entries are added to (not substituted for) the current environment. The caller
    owns the process and must ``stop()`` it; the ``start_dataplane`` fixture does so.
    ``command`` exists so the helper itself can be tested against a stand-in server.
    """
    directory = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="dataplane-logs-"))
    directory.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix="dataplane-", suffix=".log", dir=directory)
    os.close(fd)
    log_path = Path(name)
    process = DataPlaneProcess(flags, log_path, env, command, ready_timeout)
    try:
        process.start()
    except BaseException:
        process.kill()
        raise
    return process
