"""The one-command local stack behind `make run`: control plane + one data plane on loopback.

Steps, each idempotent so a second `make run` is quick: build the example SavedModels, upgrade
the database, start an EMPTY data plane and a control plane that knows it, make sure an admin
login and an API token exist, create the example models through the control plane's API (so the
data plane gets them the production way, by a pushed config), wait until the data plane is in
sync and `half_plus_two` answers, then print URLs, credentials and a curl example. SIGINT and
SIGTERM stop every child: the control plane first (so it stops pushing), then the data plane.

Children run in their own sessions: a terminal Ctrl-C reaches only this supervisor, which then
stops them in order instead of racing them. Their output goes to `<var>/logs/`.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

REPO_ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
EXAMPLE_MODELS = ("half_plus_two", "digits")
SMOKE_MODEL = "half_plus_two"
SMOKE_BODY = '{"instances": [1.0, 2.0, 5.0]}'  # TF Serving's own quick-start request
SMOKE_PREDICTIONS = [2.5, 3.0, 4.5]
METRICS_PATH = "/monitoring/prometheus/metrics"
ADMIN_USERNAME = "admin"
STOP_TIMEOUT_S = 20.0
POLL_INTERVAL_S = 0.25
LOG_TAIL_LINES = 30


class StackError(Exception):
    """The stack cannot come up; the message says why and what to do."""


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived: unwind whatever is running and stop every child."""


@dataclass(frozen=True)
class StackOptions:
    """Where the stack keeps its state and which ports it listens on."""

    var_dir: Path
    database_url: str
    controlplane_port: int
    grpc_port: int
    rest_port: int
    ready_timeout_s: float

    @property
    def models_dir(self) -> Path:
        return self.var_dir / "models"

    @property
    def logs_dir(self) -> Path:
        return self.var_dir / "logs"

    @property
    def credentials_path(self) -> Path:
        return self.var_dir / "credentials.txt"

    @property
    def monitoring_config_path(self) -> Path:
        return self.var_dir / "monitoring.config"

    @property
    def secret_key_path(self) -> Path:
        """Signs the web UI's sessions; kept so that a restart does not sign everyone out."""
        return self.var_dir / "secret_key"

    @property
    def dataplane_token_path(self) -> Path:
        """The data plane's admin token (--admin_token_file), which the control plane sends."""
        return self.var_dir / "dataplane_token"

    @property
    def controlplane_url(self) -> str:
        return f"http://{HOST}:{self.controlplane_port}"

    @property
    def rest_url(self) -> str:
        return f"http://localhost:{self.rest_port}"

    @property
    def predict_curl(self) -> str:
        """TF Serving's quick-start request, verbatim but for the port."""
        url = f"{self.rest_url}/v1/models/{SMOKE_MODEL}:predict"
        return f"curl -d '{SMOKE_BODY}' -X POST {url}"


@dataclass(frozen=True)
class Credentials:
    """The first admin login and an API token, as stored in credentials.txt."""

    admin_username: str
    admin_password: str
    api_token: str


@dataclass
class Child:
    """One supervised server process and the log it writes."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self) -> str:
        lines = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(lines[-LOG_TAIL_LINES:])


def parse_options(argv: Sequence[str], env: Mapping[str, str]) -> StackOptions:
    """Flags win over environment variables, which win over the documented defaults."""
    parser = argparse.ArgumentParser(prog="scripts/run_stack.py", description=__doc__)
    parser.add_argument("--var-dir", type=Path, default=env.get("MODELPLANE_VAR_DIR", "var"))
    parser.add_argument("--database-url", default=env.get("DATABASE_URL", ""))
    parser.add_argument(
        "--controlplane-port", type=int, default=int(env.get("CONTROLPLANE_PORT", "5000"))
    )
    parser.add_argument("--grpc-port", type=int, default=int(env.get("GRPC_PORT", "8500")))
    parser.add_argument("--rest-port", type=int, default=int(env.get("REST_PORT", "8501")))
    parser.add_argument("--ready-timeout", type=float, default=180.0, help="seconds")
    args = parser.parse_args(list(argv))
    var_dir = (REPO_ROOT / args.var_dir).resolve()  # absolute paths survive the children's cwd
    return StackOptions(
        var_dir=var_dir,
        database_url=args.database_url or f"sqlite:///{var_dir / 'controlplane.db'}",
        controlplane_port=args.controlplane_port,
        grpc_port=args.grpc_port,
        rest_port=args.rest_port,
        ready_timeout_s=args.ready_timeout,
    )


# -- one-shot steps ---------------------------------------------------------------------------


def run_python(argv: Sequence[str], env: Mapping[str, str], stdin: str = "") -> str:
    """Run `python <argv>` in the repo and return its stdout; a failure is a StackError."""
    result = subprocess.run(
        [sys.executable, *argv],
        cwd=REPO_ROOT,
        env={**os.environ, **env},
        input=stdin,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip()
        raise StackError(f"`python {' '.join(argv)}` failed:\n{detail}")
    return result.stdout


def controlplane_env(options: StackOptions) -> dict[str, str]:
    """The environment every control-plane command of this stack shares: development mode
    (a laptop), but with its own session key and the data plane's admin token all the same."""
    return {
        "DATABASE_URL": options.database_url,
        "MODELPLANE_DATAPLANES": f"{HOST}:{options.grpc_port}",
        "MODELPLANE_DEV_MODE": "1",
        "MODELPLANE_SECRET_KEY": private_secret(options.secret_key_path),
        "MODELPLANE_DATAPLANE_TOKEN_FILE": private_file(options.dataplane_token_path),
    }


def private_secret(path: Path) -> str:
    """The random secret kept in `path` (mode 600), made on first use."""
    return Path(private_file(path)).read_text().strip()


def private_file(path: Path) -> str:
    """`path`, holding a random secret (mode 600 from the first byte) unless it already does."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32) + "\n")
    return str(path)


def controlplane_cli(options: StackOptions, *args: str, stdin: str = "") -> str:
    """`python -m controlplane ARGS` on this stack's database; returns what it printed."""
    return run_python(["-m", "controlplane", *args], controlplane_env(options), stdin)


def build_models(options: StackOptions) -> None:
    """Delegates to examples.build, which skips existing models before importing TensorFlow."""
    print(f"example models: {options.models_dir}", flush=True)
    out = run_python(["-m", "examples.build", "--out", str(options.models_dir)], {})
    print(out, end="", flush=True)


def write_monitoring_config(options: StackOptions) -> None:
    options.monitoring_config_path.write_text(
        f'prometheus_config {{ enable: true, path: "{METRICS_PATH}" }}\n'
    )


def require_free_ports(options: StackOptions) -> None:
    """Fail before starting anything, naming the variable that moves the busy port."""
    ports = {
        "CONTROLPLANE_PORT": options.controlplane_port,
        "GRPC_PORT": options.grpc_port,
        "REST_PORT": options.rest_port,
    }
    for variable, port in ports.items():
        with socket.socket() as sock:
            if sock.connect_ex((HOST, port)) == 0:
                raise StackError(f"port {port} is already in use; set {variable} to another port")


# -- credentials ------------------------------------------------------------------------------


def read_credentials(path: Path) -> Credentials | None:
    """`key=value` lines; None when the file is missing or incomplete."""
    if not path.exists():
        return None
    values = dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    try:
        return Credentials(values["admin_username"], values["admin_password"], values["api_token"])
    except KeyError:
        return None


def write_credentials(path: Path, credentials: Credentials) -> None:
    """Mode 600 from the first byte: the file holds a password and a bearer token."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(
            "# modelplane local stack: keep this file private\n"
            f"admin_username={credentials.admin_username}\n"
            f"admin_password={credentials.admin_password}\n"
            f"api_token={credentials.api_token}\n"
        )
    path.chmod(0o600)


def create_credentials(options: StackOptions) -> Credentials:
    """A random admin password and a new token through the control plane's own CLI.

    The token name carries a timestamp so a database that outlived its credentials file
    still accepts a new one; an admin that already exists keeps its (unknown) password.
    """
    password = secrets.token_urlsafe(12)
    try:
        create_admin = ("create-admin", "--username", ADMIN_USERNAME, "--password-stdin")
        controlplane_cli(options, *create_admin, stdin=password + "\n")
    except StackError as err:
        if "already exists" not in str(err):
            raise
        password = "(unchanged: the admin existed before this credentials file)"
    name = f"run-stack-{time.strftime('%Y%m%d-%H%M%S')}"
    output = controlplane_cli(options, "create-token", "--name", name, "--scope", "admin")
    return Credentials(ADMIN_USERNAME, password, output.strip().splitlines()[-1])


def ensure_credentials(options: StackOptions) -> Credentials:
    """Reuse credentials.txt while its token still works; otherwise create and store new ones."""
    stored = read_credentials(options.credentials_path)
    if stored is not None:
        status, _ = http_json(
            "GET", f"{options.controlplane_url}/api/v1/models", token=stored.api_token
        )
        if status == 200:
            return stored
    credentials = create_credentials(options)
    write_credentials(options.credentials_path, credentials)
    return credentials


# -- HTTP -------------------------------------------------------------------------------------


def http_json(
    method: str, url: str, body: Any = None, token: str = "", timeout: float = 10.0
) -> tuple[int, Any]:
    """(status, decoded JSON or None); status 0 when nothing answered (still starting)."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, _decode(response.read())
    except urllib.error.HTTPError as err:
        return err.code, _decode(err.read())
    except OSError:  # refused, reset, timed out (URLError is one too)
        return 0, None


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


def model_config(options: StackOptions, name: str) -> dict[str, Any]:
    """A TF Serving ModelConfig in protobuf JSON, as POST /api/v1/models takes it."""
    return {
        "name": name,
        "base_path": str(options.models_dir / name),
        "model_platform": "tensorflow",
        "model_version_policy": {"latest": {"num_versions": 1}},
    }


def ensure_model(options: StackOptions, token: str, name: str) -> None:
    """Create the model, or point an existing one at this var dir; never a no-op revision."""
    url = f"{options.controlplane_url}/api/v1/models"
    wanted = model_config(options, name)
    status, current = http_json("GET", f"{url}/{name}", token=token)
    if status == 404:
        status, answer = http_json("POST", url, wanted, token)
    elif status == 200 and current.get("base_path") != wanted["base_path"]:
        status, answer = http_json("PUT", f"{url}/{name}", wanted, token)
    else:
        answer = current
    if status not in (200, 201):
        raise StackError(f"control plane answered {status} for model {name}: {answer}")


def fleet_in_sync(options: StackOptions, token: str) -> bool:
    """True once every registered data plane has applied the head revision (all models)."""
    status, answer = http_json("GET", f"{options.controlplane_url}/api/v1/dataplanes", token=token)
    planes = answer["dataplanes"] if status == 200 else []
    return bool(planes) and all(plane["state"] == "in_sync" for plane in planes)


def smoke_prediction(options: StackOptions) -> bool:
    """True once the data plane answers the quick-start request with the documented result."""
    url = f"{options.rest_url}/v1/models/{SMOKE_MODEL}:predict"
    status, answer = http_json("POST", url, json.loads(SMOKE_BODY))
    return status == 200 and answer == {"predictions": SMOKE_PREDICTIONS}


# -- supervision ------------------------------------------------------------------------------


class Supervisor:
    """Starts, watches and stops the stack's server processes.

    SIGINT / SIGTERM become `Interrupted` so any wait unwinds at once, except while a child is
    being started: there the signal is held until the child is recorded, so none is orphaned.
    """

    def __init__(self, logs_dir: Path) -> None:
        self.logs_dir = logs_dir
        self.children: list[Child] = []
        self._pending: str | None = None
        self._deferring = False

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._pending = signal.Signals(signum).name
        if not self._deferring:
            raise Interrupted(self._pending)

    def start(self, name: str, argv: Sequence[str], env: Mapping[str, str]) -> None:
        log_path = self.logs_dir / f"{name}.log"
        self._deferring = True
        try:
            with log_path.open("ab") as log:
                proc = subprocess.Popen(
                    [sys.executable, *argv],
                    cwd=REPO_ROOT,
                    env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            self.children.append(Child(name, proc, log_path))
        finally:
            self._deferring = False
        print(f"started {name} (pid {proc.pid}), log {log_path}", flush=True)
        if self._pending:
            raise Interrupted(self._pending)

    def check_alive(self) -> None:
        for child in self.children:
            code = child.proc.poll()
            if code is not None:
                raise StackError(f"{child.name} exited with code {code}; log:\n{child.log_tail()}")

    def wait_until(self, ready: Callable[[], bool], what: str, timeout_s: float) -> None:
        """Poll `ready`, failing fast (with the log) if a child dies or the deadline passes."""
        deadline = time.monotonic() + timeout_s
        while not ready():
            self.check_alive()
            if time.monotonic() > deadline:
                raise StackError(f"timed out after {timeout_s:.0f}s waiting for {what}")
            time.sleep(POLL_INTERVAL_S)

    def watch(self) -> NoReturn:
        """Block until a signal arrives (Interrupted) or a child dies (StackError)."""
        while True:
            self.check_alive()
            time.sleep(POLL_INTERVAL_S)

    def stop_all(self) -> None:
        """Newest first: SIGTERM, wait, SIGKILL what still runs; report each exit code.

        Further signals are ignored from here on: a second Ctrl-C must not cut this short.
        """
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for child in reversed(self.children):
            if child.proc.poll() is None:
                child.proc.terminate()
            try:
                code = child.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                child.proc.kill()
                code = child.proc.wait()
            print(f"stopped {child.name} (exit code {code})", flush=True)


def start_stack(options: StackOptions, supervisor: Supervisor) -> Credentials:
    """Data plane (empty) first, so the control plane's first push finds it listening."""
    dataplane_flags = [
        f"--port={options.grpc_port}",
        f"--rest_api_port={options.rest_port}",
        f"--monitoring_config_file={options.monitoring_config_path}",
        f"--admin_token_file={options.dataplane_token_path}",
    ]
    supervisor.start("dataplane", ["-m", "dataplane", *dataplane_flags], {})
    serve = ["serve", "--host", HOST, "--port", str(options.controlplane_port)]
    supervisor.start("controlplane", ["-m", "controlplane", *serve], controlplane_env(options))
    healthz = f"{options.controlplane_url}/healthz"
    supervisor.wait_until(
        lambda: http_json("GET", healthz)[0] == 200, healthz, options.ready_timeout_s
    )
    credentials = ensure_credentials(options)
    for name in EXAMPLE_MODELS:
        ensure_model(options, credentials.api_token, name)
    supervisor.wait_until(
        lambda: fleet_in_sync(options, credentials.api_token),
        "the data plane to load every example model",
        options.ready_timeout_s,
    )
    supervisor.wait_until(
        lambda: smoke_prediction(options),
        f"{SMOKE_MODEL} on {options.rest_url}",
        options.ready_timeout_s,
    )
    return credentials


def banner(options: StackOptions, credentials: Credentials) -> str:
    api = f"{options.controlplane_url}/api/v1"
    return "\n".join(
        [
            "",
            "modelplane is running. Ctrl-C stops everything.",
            f"  control plane  {options.controlplane_url}/  (web UI; JSON API {api})",
            f"  data plane     gRPC {HOST}:{options.grpc_port}  REST {options.rest_url}",
            f"  metrics        {options.rest_url}{METRICS_PATH}",
            f"  logs           {options.logs_dir}",
            f"  admin login    {credentials.admin_username} / {credentials.admin_password}",
            f"  API token      {credentials.api_token}",
            f"  (both saved in {options.credentials_path}, mode 600)",
            "",
            "Predict (TensorFlow Serving's quick-start request):",
            f"  {options.predict_curl}",
            "List the models the control plane manages:",
            f"  curl -H 'Authorization: Bearer {credentials.api_token}' {api}/models",
            "",
        ]
    )


def main(argv: Sequence[str]) -> int:
    options = parse_options(argv, os.environ)
    supervisor = Supervisor(options.logs_dir)
    supervisor.install_signal_handlers()
    try:
        options.logs_dir.mkdir(parents=True, exist_ok=True)
        require_free_ports(options)
        build_models(options)
        write_monitoring_config(options)
        controlplane_cli(options, "db", "upgrade")
        credentials = start_stack(options, supervisor)
        print(banner(options, credentials), flush=True)
        supervisor.watch()
    except Interrupted as signal_name:
        print(f"\n{signal_name}: stopping", flush=True)
        return 0
    except StackError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 1
    finally:
        supervisor.stop_all()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
