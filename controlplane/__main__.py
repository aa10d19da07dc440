"""Command line: serve (http + fleet), db upgrade, and the credential commands
(cli_credentials.py).

Settings come from the environment (see config.Settings.from_env); flags only say what to do,
plus the HTTP server's sizes, which override their MODELPLANE_HTTP_* variables.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace

from dataplane import json_logs

from . import cli_credentials, migrate, server, startup_checks
from .config import HttpOptions, Settings
from .credentials import CredentialsError, PlaneCredentials
from .db import Database
from .store import Conflict, NotFound

# Exit code of a start refused for its settings (argparse uses 2 for bad flags too).
REFUSED = 2


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except ValueError as err:  # a variable that does not parse
        print(f"error: {err}", file=sys.stderr)
        return REFUSED
    json_logs.configure(settings.log_format, capture_native=True)
    try:
        return args.handler(args, settings)
    except (ValueError, Conflict, NotFound) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


def build_parser() -> argparse.ArgumentParser:
    """The CLI; public so the deploy tests check the manifests' commands against it."""
    parser = argparse.ArgumentParser(prog="python -m controlplane")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the API (gunicorn) and the fleet worker")
    _http_arguments(serve)
    serve.set_defaults(handler=_checked(_serve))

    http = commands.add_parser("http", help="run only the API (gunicorn), no fleet worker")
    _http_arguments(http)
    http.set_defaults(handler=_checked(_http))

    fleet = commands.add_parser("fleet", help="run only the push/reconcile worker")
    fleet.set_defaults(handler=_checked(_fleet))

    db = commands.add_parser("db", help="database schema")
    db_commands = db.add_subparsers(required=True, metavar="ACTION")
    db_commands.add_parser("upgrade", help="apply migrations up to head").set_defaults(
        handler=_db_upgrade
    )

    cli_credentials.add_commands(commands)
    return parser


HTTP_FLAGS = {  # flag -> HttpOptions field (unset flags keep the environment's value)
    "--workers": "workers",
    "--threads": "threads",
    "--timeout": "timeout_s",
    "--graceful-timeout": "graceful_timeout_s",
    "--keepalive": "keepalive_s",
}


def _http_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    defaults = HttpOptions()
    for flag, name in HTTP_FLAGS.items():
        kind = type(getattr(defaults, name))
        parser.add_argument(
            flag, type=kind, dest=name, help=f"default: env or {getattr(defaults, name)}"
        )


def _checked(
    command: Callable[[argparse.Namespace, Settings], int],
) -> Callable[[argparse.Namespace, Settings], int]:
    """Run `command` only with safe secrets and readable data-plane credentials; otherwise
    one line on stderr and exit code 2 (startup_checks.py)."""

    def run(args: argparse.Namespace, settings: Settings) -> int:
        try:
            settings = startup_checks.checked(settings)
            token = PlaneCredentials.load(settings.dataplane_auth).token
        except (startup_checks.UnsafeSettings, CredentialsError) as err:
            print(f"error: {err}", file=sys.stderr)
            return REFUSED
        token_problem = startup_checks.dataplane_token_problem(token)
        if token_problem and not settings.dev_mode:
            print(f"error: refusing to start: {token_problem}", file=sys.stderr)
            return REFUSED
        if not token:
            logging.getLogger(__name__).warning(
                "no MODELPLANE_DATAPLANE_TOKEN(_FILE): admin calls to data planes carry no token"
            )
        overrides = {n: getattr(args, n) for n in HTTP_FLAGS.values() if getattr(args, n, None)}
        return command(args, replace(settings, http=replace(settings.http, **overrides)))

    return run


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    http_argv = [sys.executable, "-m", "controlplane", "http", "--host", args.host]
    http_argv += ["--port", str(args.port)]
    for flag, name in HTTP_FLAGS.items():
        http_argv += [flag, str(getattr(settings.http, name))]
    return server.run_serve(settings, http_argv)


def _http(args: argparse.Namespace, settings: Settings) -> int:
    return server.run_http(settings, args.host, args.port)


def _fleet(_args: argparse.Namespace, settings: Settings) -> int:
    return server.run_fleet(settings)


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
