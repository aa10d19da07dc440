"""Migrations build the schema the ORM expects, from an empty database, and back down; 0002
keeps the tokens made before scopes existed working, as admin tokens; 0003 keeps existing
models and their revisions as they were, without logging."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from controlplane import auth, migrate, store
from controlplane.db import Database
from controlplane.models import Base

HEAD = "0003"
LOG_COLUMNS = {"log_sampling_rate", "log_collector_type", "log_filename_prefix"}
TOKEN_COLUMNS = {"scope", "expires_at", "last_used_at", "revoked_at"}


def test_upgrade_from_empty_matches_the_models_and_downgrade_undoes_it(database_url: str):
    db = Database(database_url)
    try:
        migrate.upgrade(db)
        with db.engine.connect() as conn:
            diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
            assert diffs == []
            assert conn.execute(text("SELECT id, revision FROM config_head")).all() == [(1, 0)]
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == HEAD
        assert db.ping()
        migrate.downgrade(db, "base")
        assert set(inspect(db.engine).get_table_names()) <= {"alembic_version"}
        assert not db.ping()
        migrate.upgrade(db)
        assert db.ping()
    finally:
        db.dispose()


def test_0002_turns_existing_tokens_into_admin_tokens_and_back(database_url: str):
    db = Database(database_url)
    token = "mp_made-before-scopes"
    insert = text(
        "INSERT INTO api_tokens (name, token_hash, created_at, revoked) "
        "VALUES ('legacy', :hash, CURRENT_TIMESTAMP, :revoked)"
    )
    try:
        migrate.upgrade(db, "0001")
        with db.engine.begin() as conn:
            conn.execute(insert, {"hash": auth.hash_token(token), "revoked": False})
        migrate.upgrade(db, "0002")
        principal = auth.authenticate_token(db, token)
        assert (principal.name, principal.scope) == ("legacy", "admin")
        assert "login_throttle" in inspect(db.engine).get_table_names()
        # The default only filled the old rows: a token inserted without a scope is refused.
        columns = {c["name"]: c for c in inspect(db.engine).get_columns("api_tokens")}
        assert columns["scope"]["default"] is None and not columns["scope"]["nullable"]
        migrate.downgrade(db, "0001")
        db.engine.dispose()
        columns = {c["name"] for c in inspect(db.engine).get_columns("api_tokens")}
        assert not columns & TOKEN_COLUMNS
        assert "login_throttle" not in inspect(db.engine).get_table_names()
        with db.engine.connect() as conn:
            rows = conn.execute(text("SELECT name, revoked FROM api_tokens")).all()
        assert [(name, bool(revoked)) for name, revoked in rows] == [("legacy", False)]
    finally:
        db.dispose()


def test_0003_adds_logging_to_existing_models_and_back(database_url: str):
    db = Database(database_url)
    insert = text(
        "INSERT INTO model_configs (name, base_path, model_platform, revision, created_at, "
        "updated_at) VALUES ('old', '/models/old', 'tensorflow', 1, CURRENT_TIMESTAMP, "
        "CURRENT_TIMESTAMP)"
    )
    try:
        migrate.upgrade(db, "0002")
        with db.engine.begin() as conn:
            conn.execute(insert)
        migrate.upgrade(db, "0003")
        (old,) = store.list_models(db)
        assert old.to_json() == {
            "name": "old",
            "base_path": "/models/old",
            "model_platform": "tensorflow",
            "version_labels": {},
            "revision": 1,
        }
        with db.engine.begin() as conn:
            conn.execute(
                text(
                    "UPDATE model_configs SET log_sampling_rate = 0.5, "
                    "log_collector_type = 'jsonl', log_filename_prefix = '/logs/old'"
                )
            )
        logging = store.get_model(db, "old").config.logging_config
        assert (logging.sampling_config.sampling_rate, logging.log_collector_config.type) == (
            0.5,
            "jsonl",
        )
        migrate.downgrade(db, "0002")
        db.engine.dispose()
        columns = {c["name"] for c in inspect(db.engine).get_columns("model_configs")}
        assert not columns & LOG_COLUMNS
        with db.engine.connect() as conn:
            assert conn.execute(text("SELECT name FROM model_configs")).scalars().all() == ["old"]
    finally:
        db.dispose()
