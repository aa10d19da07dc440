"""The app's answers when the database cannot serve: a bounded wait, then 503 with an error;
and an app started while its database is down that serves as soon as it is back."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest

from controlplane import migrate
from controlplane.auth import create_token
from controlplane.config import PoolOptions, Settings
from controlplane.db import Database
from tests.controlplane.postgres import running_postgres
from tests.support.controlplane import running_app
from tests.support.processes import free_port


def test_an_exhausted_pool_is_503_within_the_pool_timeout(settings: Settings, db: Database):
    token = create_token(db, "pool", "read")
    tight = replace(settings, pool=PoolOptions(size=1, max_overflow=0, timeout_s=0.5))
    with running_app(tight) as app:
        pool_db = app.extensions["modelplane"].db
        client = app.test_client()
        headers = {"Authorization": f"Bearer {token}"}
        assert client.get("/api/v1/models", headers=headers).status_code == 200
        with pool_db.engine.connect():  # the pool's only connection, held
            start = time.monotonic()
            response = client.get("/api/v1/models", headers=headers)
            waited = time.monotonic() - start
        assert response.status_code == 503
        assert response.get_json() == {"error": "database busy: no connection free, retry later"}
        assert 0.4 <= waited < 10
        assert client.get("/api/v1/models", headers=headers).status_code == 200


@pytest.mark.postgres
def test_the_app_starts_while_the_database_is_down_and_serves_once_it_is_back(tmp_path):
    port = free_port()
    url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    settings = Settings(
        database_url=url,
        reconcile_interval_s=0.2,
        pool=PoolOptions(connect_timeout_s=1),
        secret_key="s" * 64,
    )
    with running_app(settings) as app:  # run_fleet: its worker must survive the outage too
        client = app.test_client()
        assert client.get("/healthz").get_json() == {"status": "unavailable", "database": False}
        down = client.get("/api/v1/models", headers={"Authorization": "Bearer mp_x"})
        assert (down.status_code, down.get_json()) == (503, {"error": "database unavailable"})
        with running_postgres(port):
            database = Database(url)
            migrate.upgrade(database)
            token = create_token(database, "back", "read")
            database.dispose()
            health = client.get("/healthz")
            assert (health.status_code, health.get_json()["database"]) == (200, True)
            models = client.get("/api/v1/models", headers={"Authorization": f"Bearer {token}"})
            assert (models.status_code, models.get_json()) == (200, {"models": []})
            fleet_thread = app.extensions["modelplane"].fleet._thread
            assert fleet_thread is not None and fleet_thread.is_alive()
