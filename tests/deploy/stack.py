"""compose.yaml run for real by the deploy tests: the compose tool, the containers, the API.

`Stack` drives one compose project (a unique name, free host ports, its own secrets) with
the tests' override file, which only swaps the images no registry can give this machine for
those `make images` builds. Each data plane is also reached on its own, at its address on the
`serving` network (the host routes to Docker's bridges), to tell which revision it serves.
"""

from __future__ import annotations

import functools
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scripts.run_stack import http_json
from tests.support.processes import REPO_ROOT, free_ports

COMPOSE_FILE = REPO_ROOT / "compose.yaml"
OVERRIDE_FILE = Path(__file__).with_name("compose.override.yaml")
LOCAL_IMAGES = (
    "modelplane-dataplane:latest",
    "modelplane-controlplane:latest",
    "modelplane-nginx:latest",
    "modelplane/postgres:local",
    "modelplane/prometheus:local",
)
IMAGE_USER = 10001  # the user our images run as: it must read the token file
COMMAND_TIMEOUT_S = 120.0


class StackError(AssertionError):
    """A docker or compose command failed; the message carries its output."""


def run(
    argv: list[str], env: dict[str, str] | None = None, timeout: float = COMMAND_TIMEOUT_S
) -> str:
    """Run a command, return its stdout; a non-zero exit is a StackError with its stderr."""
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise StackError(f"`{' '.join(argv)}` exited {result.returncode}:\n{result.stderr}")
    return result.stdout


def compose_tool() -> list[str]:
    """Compose v2 (`docker compose`) where the plugin is installed, else Debian's docker-compose."""
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    raise StackError("no compose tool: install Debian's docker-compose or the compose plugin")


def require_engine_and_images() -> None:
    """Fail (never skip) with what to do when the engine or an image is missing."""
    if shutil.which("docker") is None:
        raise StackError("the deploy tests need Docker: no `docker` command on PATH")
    info = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=30)
    if info.returncode != 0:
        raise StackError(
            "no Docker engine answers (`docker info` failed); the deploy tests run the stack "
            f"in containers, so start the daemon first:\n{info.stderr.strip()}"
        )
    missing = [
        image
        for image in LOCAL_IMAGES
        if subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode
    ]
    if missing:
        raise StackError(f"images missing: {', '.join(missing)}; build them with `make images`")


def wait_for(what: str, check: Callable[[], bool], timeout_s: float, every_s: float = 0.5) -> float:
    """Seconds until `check()` held; a StackError naming `what` after `timeout_s`."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout_s:
            raise StackError(f"{what}: not within {timeout_s:.0f} s")
        time.sleep(every_s)
    return time.monotonic() - started


# The control plane's JSON API, as `make run` talks to it; a short timeout keeps polls brisk.
http = functools.partial(http_json, timeout=5.0)


@dataclass(frozen=True)
class Ports:
    """The host ports compose.yaml publishes, all picked free."""

    grpc: int
    rest: int
    controlplane: int
    prometheus: int


class Stack:
    """One compose project of compose.yaml plus the override, on free ports."""

    def __init__(self, workdir: Path) -> None:
        self.project = f"mp-deploy-{os.getpid()}-{secrets.token_hex(3)}"
        self.ports = Ports(*free_ports(4))
        token_file = workdir / "dataplane_token"
        token_file.write_text(secrets.token_hex(32) + "\n")
        try:
            os.chown(token_file, IMAGE_USER, IMAGE_USER)
            token_file.chmod(0o400)
        except PermissionError:  # not root: readable by all, in a directory only we list
            token_file.chmod(0o444)
        self.env = {
            **os.environ,
            "POSTGRES_PASSWORD": secrets.token_hex(16),
            "MODELPLANE_SECRET_KEY": secrets.token_hex(32),
            "MODELPLANE_DATAPLANE_TOKEN_FILE": str(token_file),
            "GRPC_PORT": str(self.ports.grpc),
            "REST_PORT": str(self.ports.rest),
            "CONTROLPLANE_PORT": str(self.ports.controlplane),
            "PROMETHEUS_PORT": str(self.ports.prometheus),
        }
        self.tool = compose_tool()
        self.api_token = ""

    # -- compose and docker ------------------------------------------------------------------

    def compose_argv(self, *args: str) -> list[str]:
        files = ["-f", str(COMPOSE_FILE), "-f", str(OVERRIDE_FILE)]
        return [
            *self.tool,
            "-p",
            self.project,
            "--project-directory",
            str(REPO_ROOT),
            *files,
            *args,
        ]

    def compose(self, *args: str, timeout: float = COMMAND_TIMEOUT_S) -> str:
        return run(self.compose_argv(*args), self.env, timeout)

    def container(self, service: str) -> str:
        """The id of `service`'s container (running or not)."""
        ids = self.compose("ps", "-a", "-q", service).split()
        if len(ids) != 1:
            raise StackError(f"{service}: expected one container, found {ids}")
        return ids[0]

    def network(self, name: str) -> str:
        """The engine's name of compose.yaml's network `name` in this project."""
        return f"{self.project}_{name}"

    def address(self, service: str) -> str:
        """`service`'s IP address on the serving network (it may change across restarts)."""
        template = (
            f'{{{{(index .NetworkSettings.Networks "{self.network("serving")}").IPAddress}}}}'
        )
        return run(["docker", "inspect", "-f", template, self.container(service)]).strip()

    def up(self) -> None:
        self.compose("up", "-d", "--no-build", timeout=600)

    def save_logs(self, directory: Path) -> Path:
        """Every container's log, one file per service, under `directory`."""
        directory.mkdir(parents=True, exist_ok=True)
        for service in self.compose("config", "--services").split():
            argv = self.compose_argv("logs", "--no-color", "--timestamps", service)
            logs = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=60)
            (directory / f"{service}.log").write_text(logs.stdout + logs.stderr)
        return directory

    def down(self) -> None:
        self.compose("down", "-v", "--remove-orphans", "-t", "5", timeout=300)

    # -- control plane API -------------------------------------------------------------------

    def api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        url = f"http://127.0.0.1:{self.ports.controlplane}/api/v1{path}"
        return http(method, url, body, self.api_token)

    def create_api_token(self) -> None:
        """An admin token from the control plane's own CLI, inside its container."""
        out = self.compose(
            "exec",
            "-T",
            "controlplane",
            "python",
            "-m",
            "controlplane",
            "create-token",
            "--name",
            "deploy-test",
            "--scope",
            "admin",
        )
        self.api_token = out.strip().splitlines()[-1]

    def add_model(self, name: str, directory: str) -> int:
        """POST a model serving /models/<directory>; returns the new head revision."""
        config = {
            "name": name,
            "base_path": f"/models/{directory}",
            "model_platform": "tensorflow",
            "model_version_policy": {"latest": {"num_versions": 1}},
        }
        status, answer = self.api("POST", "/models", config)
        if status != 201:
            raise StackError(f"POST /models {name}: {status} {answer}")
        return self.head_revision()

    def head_revision(self) -> int:
        status, answer = self.api("GET", "/revisions?limit=1")
        if status != 200:
            raise StackError(f"GET /revisions: {status} {answer}")
        return int(answer["revisions"][0]["revision"])

    def model_names(self) -> list[str]:
        status, answer = self.api("GET", "/models")
        if status != 200:
            raise StackError(f"GET /models: {status} {answer}")
        return sorted(model["name"] for model in answer["models"])

    # -- one data plane ----------------------------------------------------------------------

    def plane_serves(self, service: str, model: str) -> bool:
        """True when `service` itself (not nginx) reports `model` AVAILABLE (TF Serving's
        GET /v1/models/<name>)."""
        try:
            url = f"http://{self.address(service)}:8501/v1/models/{model}"
        except StackError:
            return False
        status, answer = http("GET", url)
        states = [v.get("state") for v in (answer or {}).get("model_version_status", [])]
        return status == 200 and "AVAILABLE" in states

    def plane_lacks(self, service: str, model: str) -> bool:
        """True when `service` answers that it has no `model` at all (404)."""
        status, _ = http("GET", f"http://{self.address(service)}:8501/v1/models/{model}")
        return status == 404
