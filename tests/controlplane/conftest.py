"""Databases for control-plane tests: a fresh SQLite file or a fresh PostgreSQL database each
(the PostgreSQL server itself is started once per session, see tests/controlplane/postgres.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from controlplane.auth import create_token
from controlplane.config import Settings
from controlplane.db import Database
from tests.controlplane.postgres import PostgresServer, running_postgres
from tests.support.controlplane import migrated_database, running_app

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
# The one directory the test apps let a model's logging_config write under.
LOG_ROOT = "/var/log/modelplane"


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    with running_postgres() as server:
        yield server


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database (no schema) on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'controlplane.db'}"
    return request.getfixturevalue("postgres_server").new_database()


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    """A migrated database."""
    with migrated_database(database_url) as database:
        yield database


@pytest.fixture
def settings(database_url: str) -> Settings:
    """Settings for an app without the background worker (tests drive cycles themselves)."""
    return Settings(
        database_url=database_url,
        run_fleet=False,
        rpc_deadline_s=2.0,
        push_attempts=2,
        push_backoff_s=0.05,
        label_wait_s=10.0,
        retry_backoff_s=0.5,
        retry_backoff_max_s=2.0,
        secret_key="test",
        request_log_roots=(LOG_ROOT,),
    )


@pytest.fixture
def app(settings: Settings, db: Database):
    with running_app(settings) as application:
        yield application


@pytest.fixture
def token(db: Database) -> str:
    return create_token(db, "tests", "admin")


@pytest.fixture
def api(app, token: str) -> Callable[..., object]:
    """`api("get", "/models", json=...)` → werkzeug TestResponse, authenticated."""
    client = app.test_client()

    def call(method: str, path: str, headers: dict[str, str] | None = None, **kwargs):
        all_headers = {"Authorization": f"Bearer {token}", **(headers or {})}
        return getattr(client, method)(f"/api/v1{path}", headers=all_headers, **kwargs)

    return call
