"""The control plane in-process, for tests: a migrated database and an app that cleans up."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from flask import Flask

from controlplane import migrate
from controlplane.config import Settings
from controlplane.db import Database


@contextmanager
def migrated_database(database_url: str) -> Iterator[Database]:
    """The database at `database_url` with the schema applied; disposed on exit."""
    database = Database(database_url)
    migrate.upgrade(database)
    try:
        yield database
    finally:
        database.dispose()


@contextmanager
def running_app(settings: Settings) -> Iterator[Flask]:
    """The real app factory; on exit its fleet worker and traffic scraper are stopped and its
    database disposed."""
    from controlplane.app import create_app  # imports TensorFlow Serving's protos: seconds

    application = create_app(settings)
    try:
        yield application
    finally:
        context = application.extensions["modelplane"]
        context.fleet.stop()
        context.traffic.stop()
        context.db.dispose()
