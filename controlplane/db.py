"""Engine and transactions, with the per-dialect settings that make concurrent writers safe.

SQLite: writers must take the write lock at BEGIN (``BEGIN IMMEDIATE``); a deferred transaction
that reads first and writes later fails with "database is locked" instead of waiting, which
would turn concurrent label writes into spurious 500s. PostgreSQL needs nothing special: the
config_head row lock serializes config writers (see models.ConfigHead).

The pool is bounded and so is the wait for one of its connections (`PoolOptions`): an
exhausted pool or a database that does not answer is a quick 503 (app.py), not a hung request.
Nothing connects before the first query, so the app starts while the database is down.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from .config import PoolOptions, ensure_sqlite_dir


def normalize_url(database_url: str) -> str:
    """Use psycopg 3 for plain ``postgresql://`` URLs (psycopg2 is not installed)."""
    url = make_url(database_url)
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    return url.render_as_string(hide_password=False)


def make_engine(database_url: str, pool: PoolOptions | None = None) -> Engine:
    """Create an engine; SQLite gets WAL, foreign keys, a busy timeout and BEGIN IMMEDIATE."""
    url = normalize_url(database_url)
    pool = pool or PoolOptions()
    sizes: dict[str, float] = {
        "pool_size": pool.size,
        "max_overflow": pool.max_overflow,
        "pool_timeout": pool.timeout_s,
    }
    if not url.startswith("sqlite"):
        return create_engine(
            url,
            pool_pre_ping=True,
            connect_args={"connect_timeout": pool.connect_timeout_s},
            **sizes,
        )
    ensure_sqlite_dir(url)
    if ":memory:" in url:
        sizes = {}  # one connection per thread (SingletonThreadPool): nothing to bound
    engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, **sizes)
    event.listen(engine, "connect", _sqlite_on_connect)
    event.listen(engine, "begin", _sqlite_on_begin)
    return engine


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # we emit BEGIN ourselves, see _sqlite_on_begin
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _sqlite_on_begin(connection: Any) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE")


class Database:
    """Owns the engine and hands out short transactions."""

    def __init__(self, database_url: str, pool: PoolOptions | None = None) -> None:
        self.url = database_url
        self.engine = make_engine(database_url, pool)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One unit of work: commits on success, rolls back on any exception."""
        with self._sessions.begin() as session:
            yield session

    def ping(self) -> bool:
        """True when the database answers and the schema is there."""
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT revision FROM config_head"))
        except SQLAlchemyError:
            return False
        return True

    def dispose(self) -> None:
        self.engine.dispose()
