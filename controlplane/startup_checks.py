"""Refuse to start with secrets anyone can read in this repository.

A session cookie is signed with `MODELPLANE_SECRET_KEY`: whoever knows the key can forge an
admin session, so a missing, short or shipped placeholder key is as good as none. The same goes
for the database password the shipped files used to default to. Development mode
(`MODELPLANE_DEV_MODE=1`, what `make run` sets) accepts both and makes up a key when none is set.
"""

from __future__ import annotations

import logging
import re
import secrets
from dataclasses import replace

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from .config import Settings

log = logging.getLogger(__name__)

MIN_SECRET_BYTES = 32
# Values this repository's files or docs have shipped as examples.
PLACEHOLDER_SECRETS = frozenset(
    {"change-me-to-64-random-hex-characters", "change-me", "changeme", "secret", "test"}
)
PLACEHOLDER_PASSWORDS = frozenset({"modelplane", "change-me", "changeme", "postgres", "password"})
PLACEHOLDER_PATTERN = re.compile(r"change.?me|replace.?me|placeholder", re.IGNORECASE)


class UnsafeSettings(Exception):
    """Settings a production start must refuse; the message is one line for stderr."""


def secret_key_problem(key: str) -> str | None:
    """Why `key` cannot sign sessions, or None when it can."""
    if not key:
        return "MODELPLANE_SECRET_KEY is not set"
    if key.lower() in PLACEHOLDER_SECRETS or PLACEHOLDER_PATTERN.search(key):
        return "MODELPLANE_SECRET_KEY is a placeholder from the shipped files"
    if len(key.encode()) < MIN_SECRET_BYTES:
        return f"MODELPLANE_SECRET_KEY is shorter than {MIN_SECRET_BYTES} bytes"
    return None


def database_password_problem(database_url: str) -> str | None:
    """Why the password in `database_url` is unsafe, or None (no password is the DBA's call)."""
    try:
        password = make_url(database_url).password
    except ArgumentError:
        return None  # not ours to judge here: the engine reports a malformed URL itself
    if password and (
        password.lower() in PLACEHOLDER_PASSWORDS or PLACEHOLDER_PATTERN.search(password)
    ):
        return "DATABASE_URL uses a placeholder password from the shipped files"
    return None


def dataplane_token_problem(token: str) -> str | None:
    """Why the data planes' admin token is unsafe: a placeholder from the shipped manifests."""
    if token and (token.lower() in PLACEHOLDER_SECRETS or PLACEHOLDER_PATTERN.search(token)):
        return "the data planes' admin token is a placeholder from the shipped files"
    return None


def checked(settings: Settings) -> Settings:
    """`settings` ready to serve: raises UnsafeSettings, or in development mode warns and fills
    in a random key (one per process tree: `serve` passes it on to its workers)."""
    key_problem = secret_key_problem(settings.secret_key)
    password_problem = database_password_problem(settings.database_url)
    problems = [p for p in (key_problem, password_problem) if p]
    if not problems:
        return settings
    if not settings.dev_mode:
        hint = "set real values (e.g. `openssl rand -hex 32`), or MODELPLANE_DEV_MODE=1 on a laptop"
        raise UnsafeSettings(f"refusing to start: {'; '.join(problems)}; {hint}")
    log.warning("development mode: %s", "; ".join(problems))
    if key_problem:
        return replace(settings, secret_key=secrets.token_hex(32))
    return settings
