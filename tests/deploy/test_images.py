"""The images `make images` builds hold what runs and behave as compose and Kubernetes expect.

The module builds (or finds, by content hash) every image with scripts/images.py, then runs
real containers: the Python images as their non-root user with no development tool inside,
the data plane's native transport loaded by the image's own Python, PostgreSQL initialised
from the official image's variables and reached with psycopg, Prometheus answering its
readiness probe, nginx accepting the front door's config.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import psycopg
import pytest
import requests

from scripts import images

pytestmark = pytest.mark.slow

DATAPLANE = "modelplane-dataplane:local"
CONTROLPLANE = "modelplane-controlplane:local"
PYTHON_IMAGES = (DATAPLANE, CONTROLPLANE)
DEV_TOOLS = ("pytest", "ruff", "playwright", "maturin", "atheris")
START_TIMEOUT_S = 60.0


@pytest.fixture(scope="module", autouse=True)
def built_images() -> None:
    """Every image, built or found up to date (a second build only hashes the inputs)."""
    assert images.main([]) == 0


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, check=check, timeout=300
    )


def run(image: str, *args: str, entrypoint: str | None = None) -> str:
    """Run a throw-away container to completion; its stdout."""
    override = ["--entrypoint", entrypoint] if entrypoint else []
    return docker("run", "--rm", *override, image, *args).stdout


def inspect(image: str) -> dict:
    return json.loads(docker("image", "inspect", image).stdout)[0]["Config"]


@contextmanager
def container(image: str, port: int, *args: str) -> Iterator[str]:
    """A detached container with ``port`` published on loopback; removed afterwards."""
    publish = f"127.0.0.1::{port}"
    name = docker("run", "--detach", "--publish", publish, *args, image).stdout.strip()
    try:
        yield name
    finally:
        docker("rm", "--force", name, check=False)


def published_port(name: str, port: int) -> int:
    """The loopback port docker chose for a container port (no port is fixed in a test)."""
    for line in docker("port", name, f"{port}/tcp").stdout.splitlines():
        if line.startswith("127.0.0.1:"):
            return int(line.rsplit(":", 1)[1])
    raise AssertionError(f"{name}: {port} is not published")


def wait_for(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise AssertionError(f"{what} did not come up in {START_TIMEOUT_S:.0f} s")


# -- data plane and control plane -------------------------------------------------------------


@pytest.mark.parametrize("image", PYTHON_IMAGES)
def test_python_images_run_as_the_unprivileged_user(image: str) -> None:
    assert inspect(image)["User"] == "10001"
    assert run(image, "-u", entrypoint="id").strip() == "10001"


@pytest.mark.parametrize("image", PYTHON_IMAGES)
def test_python_images_hold_no_development_tool(image: str) -> None:
    probe = (
        "import importlib.util, sys; "
        f"print([m for m in {DEV_TOOLS!r} if importlib.util.find_spec(m)], sys.version_info[:2])"
    )
    assert run(image, "-c", probe, entrypoint="python").strip() == "[] (3, 11)"


def test_dataplane_entrypoint_is_the_model_server() -> None:
    config = inspect(DATAPLANE)
    assert config["Entrypoint"] == ["python", "-m", "dataplane"]
    assert config["Cmd"] == ["--port=8500", "--rest_api_port=8501"]
    assert set(config["ExposedPorts"]) == {"8500/tcp", "8501/tcp"}
    usage = run(DATAPLANE, "--help")
    assert "--rest_api_port" in usage and "--model_config_file" in usage


def test_dataplane_image_loads_the_native_transport() -> None:
    probe = (
        "import dataplane.transport._native as n, dataplane.transport as t; "
        "print(n.__file__, t._native_module() is n)"
    )
    out = run(DATAPLANE, "-c", probe, entrypoint="python").split()
    assert out == ["/app/dataplane/transport/_native.abi3.so", "True"]


def test_dataplane_image_builds_the_example_models_for_compose() -> None:
    usage = run(DATAPLANE, "-m", "examples.build", "--help", entrypoint="python")
    assert "--out" in usage


def test_controlplane_entrypoint_is_the_control_plane_cli() -> None:
    config = inspect(CONTROLPLANE)
    assert config["Entrypoint"] == ["python", "-m", "controlplane"]
    assert config["Cmd"] == ["serve", "--host", "0.0.0.0", "--port", "5000"]
    usage = run(CONTROLPLANE, "--help")
    for command in ("serve", "db", "create-token", "create-admin"):
        assert command in usage


# -- PostgreSQL, Prometheus, nginx ------------------------------------------------------------


def test_postgres_initialises_user_password_and_database_like_the_official_image() -> None:
    env = ["-e", "POSTGRES_USER=modelplane", "-e", "POSTGRES_PASSWORD=s3cret"]
    env += ["-e", "POSTGRES_DB=modelplane"]
    with container("modelplane/postgres:local", 5432, *env) as name:
        ready = ["exec", name, "pg_isready", "-U", "modelplane", "-d", "modelplane"]
        wait_for(lambda: docker(*ready, check=False).returncode == 0, "pg_isready")
        dsn = f"postgresql://modelplane:s3cret@127.0.0.1:{published_port(name, 5432)}/modelplane"
        with psycopg.connect(dsn) as conn:
            row = conn.execute("SELECT current_user, current_database(), version()").fetchone()
        assert row[:2] == ("modelplane", "modelplane")
        assert row[2].startswith("PostgreSQL 15.")
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(dsn.replace("s3cret", "wrong")).close()
        assert docker("exec", name, "id", "-un").stdout.strip() == "postgres"


def test_postgres_refuses_to_start_without_a_password() -> None:
    result = docker("run", "--rm", "modelplane/postgres:local", check=False)
    assert result.returncode != 0
    assert "set POSTGRES_PASSWORD" in result.stderr


def test_prometheus_reads_its_config_path_and_answers_ready() -> None:
    config = inspect("modelplane/prometheus:local")
    assert config["Cmd"][0] == "--config.file=/etc/prometheus/prometheus.yml"
    assert config["User"] == "nobody"
    with container("modelplane/prometheus:local", 9090) as name:
        url = f"http://127.0.0.1:{published_port(name, 9090)}/-/ready"

        def ready() -> bool:
            try:
                return requests.get(url, timeout=2).status_code == 200
            except requests.ConnectionError:
                return False

        wait_for(ready, "prometheus /-/ready")


def test_nginx_accepts_the_front_door_config_as_www_data() -> None:
    assert inspect("modelplane-nginx:local")["User"] == "www-data"
    hosts = ["--add-host", "dataplane-1:127.0.0.1", "--add-host", "dataplane-2:127.0.0.1"]
    result = docker("run", "--rm", *hosts, "--entrypoint", "nginx", "modelplane-nginx:local", "-t")
    assert "syntax is ok" in result.stderr and "test is successful" in result.stderr
