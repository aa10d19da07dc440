"""Command line: serve, db upgrade, and the credential commands (cli_credentials.py).

Settings come from the environment (see config.Settings.from_env); flags only say what to do.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence

from werkzeug.serving import make_server

from . import cli_credentials, migrate
from .config import Settings
from .db import Database
from .store import Conflict, NotFound


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = Settings.from_env()
    try:
        return args.handler(args, settings)
    except (ValueError, Conflict, NotFound) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


def build_parser() -> argparse.ArgumentParser:
    """The CLI; public so the deploy tests check the manifests' commands against it."""
    parser = argparse.ArgumentParser(prog="python -m controlplane")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the API and the push/reconcile worker")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.set_defaults(handler=_serve)

    db = commands.add_parser("db", help="database schema")
    db_commands = db.add_subparsers(required=True, metavar="ACTION")
    db_commands.add_parser("upgrade", help="apply migrations up to head").set_defaults(
        handler=_db_upgrade
    )

    cli_credentials.add_commands(commands)
    return parser


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    """Threaded WSGI server; SIGTERM/SIGINT stop the server and the fleet worker cleanly."""
    from .app import create_app  # imports TensorFlow's protos: only the server needs them

    app = create_app(settings)
    server = make_server(args.host, args.port, app, threaded=True)
    stopping = threading.Event()

    def stop(_signum: int, _frame: object) -> None:
        if not stopping.is_set():
            stopping.set()
            threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    logging.getLogger(__name__).info("serving on http://%s:%d", args.host, server.port)
    try:
        server.serve_forever()
    finally:
        context = app.extensions["modelplane"]
        context.fleet.stop()
        context.db.dispose()
    return 0


def _db_upgrade(_args: argparse.Namespace, settings: Settings) -> int:
    db = Database(settings.database_url)
    try:
        migrate.upgrade(db)
    finally:
        db.dispose()
    print("database is at the latest schema")
    return 0


if __name__ == "__main__":
    sys.exit(main())
