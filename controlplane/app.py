"""Flask app factory: one `ControlPlane` (settings, database, fleet) per app.

Blueprints: `api` (JSON under /api/v1). The admin UI adds its own blueprint beside it.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, jsonify
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from . import https, request_ids, ui
from .api import bp as api_bp
from .config import Settings
from .context import ControlPlane, control_plane
from .db import Database
from .fleet import Fleet
from .traffic import Traffic

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> Flask:
    """Build the app; starts the push/reconcile worker and the traffic scraper when
    `settings.run_fleet`."""
    settings = settings or Settings.from_env()
    app = Flask(__name__)
    app.config.update(SECRET_KEY=settings.secret_key)
    app.json.sort_keys = False
    db = Database(settings.database_url, settings.pool)
    fleet = Fleet(db, settings)
    traffic = Traffic(db, settings.traffic)
    app.extensions["modelplane"] = ControlPlane(settings, db, fleet, traffic)
    app.register_blueprint(api_bp)
    request_ids.install(app)
    ui.init_app(app, settings)
    https.init_app(app)
    app.add_url_rule("/healthz", "healthz", healthz)
    app.register_error_handler(DBAPIError, database_unavailable)
    app.register_error_handler(IntegrityError, integrity_conflict)
    app.register_error_handler(PoolTimeout, pool_exhausted)
    if settings.run_fleet:
        fleet.start()
        traffic.start()
    return app


def healthz() -> tuple[Any, int]:
    """No auth: load balancers and `make run` poll it; 503 when the database does not answer."""
    up = control_plane().db.ping()
    return jsonify(status="ok" if up else "unavailable", database=up), 200 if up else 503


def database_unavailable(err: DBAPIError) -> tuple[Any, int]:
    """Any driver-level failure: the transaction was rolled back, so nothing is half-written."""
    log.warning("database error: %s", err)
    return jsonify(error="database unavailable"), 503


def pool_exhausted(err: PoolTimeout) -> tuple[Any, int]:
    """Every pooled connection is busy for longer than the pool timeout: say so and let the
    client retry, instead of a 500 (the request did nothing)."""
    log.warning("database pool exhausted: %s", err)
    return jsonify(error="database busy: no connection free, retry later"), 503


def integrity_conflict(err: IntegrityError) -> tuple[Any, int]:
    """A unique constraint caught a race the checks before it could not see (e.g. two POSTs)."""
    log.info("integrity error: %s", err)
    return jsonify(error="conflicts with a concurrent change; reload and retry"), 409
