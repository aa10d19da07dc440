"""Migrations build the schema the ORM expects, from an empty database, and back down; 0002
keeps the tokens made before scopes existed working, as admin tokens."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from controlplane import auth, migrate
from controlplane.db import Database
from controlplane.models import Base

HEAD = "0002"
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
        migrate.upgrade(db, HEAD)
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
