"""The credential commands of the CLI: create-token, revoke-token, create-admin, disable-admin.

Apart from __main__ (which owns serving and the schema) so that credentials are managed in one
place. Each command opens the database, calls one function of `auth`, and says what it did;
the audit log names the CLI as the actor ("cli").
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from . import auth
from .config import Settings
from .db import Database

ACTOR = "cli"


def add_commands(commands: Any) -> None:
    """Add the credential sub-commands to `commands` (an argparse sub-parsers action)."""
    token = commands.add_parser("create-token", help="create an API token (printed last)")
    token.add_argument("--name", required=True)
    token.add_argument("--scope", required=True, choices=auth.SCOPES)
    token.add_argument("--expires-in-days", type=int, default=None, metavar="D")
    token.set_defaults(handler=_create_token)

    revoke = commands.add_parser("revoke-token", help="revoke an API token for good")
    revoke.add_argument("--name", required=True)
    revoke.set_defaults(handler=_revoke_token)

    admin = commands.add_parser("create-admin", help="create an admin user for the web UI")
    admin.add_argument("--username", required=True)
    admin.add_argument("--password-stdin", action="store_true", required=True)
    admin.set_defaults(handler=_create_admin)

    disable = commands.add_parser("disable-admin", help="disable an admin; ends their sessions")
    disable.add_argument("--username", required=True)
    disable.set_defaults(handler=_disable_admin)


def _with_db(settings: Settings, action: Callable[[Database], Any]) -> Any:
    db = Database(settings.database_url)
    try:
        return action(db)
    finally:
        db.dispose()


def _create_token(args: argparse.Namespace, settings: Settings) -> int:
    token = _with_db(
        settings,
        lambda db: auth.create_token(db, args.name, args.scope, args.expires_in_days, ACTOR),
    )
    print(f"created {args.scope} API token {args.name!r}; it is shown once:", file=sys.stderr)
    print(token)
    return 0


def _revoke_token(args: argparse.Namespace, settings: Settings) -> int:
    _with_db(settings, lambda db: auth.revoke_token(db, args.name, ACTOR))
    print(f"revoked API token {args.name!r}")
    return 0


def _create_admin(args: argparse.Namespace, settings: Settings) -> int:
    password = sys.stdin.readline().rstrip("\r\n")
    user = _with_db(settings, lambda db: auth.create_admin(db, args.username, password))
    print(f"created admin user {user.name!r}")
    return 0


def _disable_admin(args: argparse.Namespace, settings: Settings) -> int:
    _with_db(settings, lambda db: auth.disable_admin(db, args.username, ACTOR))
    print(f"disabled admin user {args.username!r}; their sessions end at their next request")
    return 0
