"""Fixtures for end-to-end control-plane tests: a real control-plane process over a real
database (SQLite file or a throwaway PostgreSQL), driving real data-plane processes."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.controlplane.postgres import PostgresServer, running_postgres
from tests.support.processes import REPO_ROOT, ServerProcess, quiet_port


@pytest.fixture(scope="session")
def e2e_postgres() -> Iterator[PostgresServer]:
    with running_postgres() as server:
        yield server


class ControlPlaneProcess(ServerProcess):
    """`python -m controlplane serve` on a free port, after `db upgrade` and `create-token`:
    gunicorn (two workers) and the fleet worker, with a real session key (no dev mode)."""

    def __init__(self, database_url: str, dataplanes: list[str], log_dir: Path) -> None:
        self.port = quiet_port()  # restarted on the same port (test_control_plane_restart...)
        self.database_url = database_url
        env = {
            "DATABASE_URL": database_url,
            "MODELPLANE_DATAPLANES": ",".join(dataplanes),
            "MODELPLANE_LABEL_WAIT_S": "60",
            "MODELPLANE_SECRET_KEY": secrets.token_hex(32),
            "MODELPLANE_HTTP_WORKERS": "2",
        }
        argv = [sys.executable, "-m", "controlplane", "serve", "--host", "127.0.0.1"]
        super().__init__(
            [*argv, "--port", str(self.port)], [self.port], log_dir / "controlplane.log", env
        )
        self.token = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def prepare(self) -> ControlPlaneProcess:
        """Run the documented CLI steps; the token is the last line create-token prints."""
        self._cli("db", "upgrade")
        made = self._cli("create-token", "--name", "e2e", "--scope", "admin")
        self.token = made.strip().splitlines()[-1]
        return self

    def _cli(self, *args: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "controlplane", *args],
            cwd=REPO_ROOT,
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            check=True,
        )
        return result.stdout
