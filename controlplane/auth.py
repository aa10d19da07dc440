"""Who is calling: bearer tokens for the JSON API, admin users for the web UI.

Both resolve to a `Principal`, which is also a Flask-Login user (get_id, is_authenticated...),
so the UI can hand it to `login_user` and the audit log names people and tokens the same way.

Tokens carry a scope (read < write < admin), an optional expiry and a last-used time; admins
can be disabled. Password hashes (scrypt) are always checked outside any database
transaction: a hash takes tens of milliseconds of CPU, and holding a transaction (on SQLite
the database-wide write lock) across it would let a login flood stall every other writer.
"""

from __future__ import annotations

import hashlib
import math
import secrets
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from sqlalchemy import or_, select, update
from werkzeug.security import check_password_hash, generate_password_hash

from . import audit, throttle
from .config import LoginThrottle
from .db import Database
from .models import AdminUser, ApiToken, utcnow
from .revisions import ValidationError
from .store import Conflict, NotFound, iso

TOKEN_PREFIX = "mp_"
# Ordered: each scope may do everything the ones before it may.
SCOPES = ("read", "write", "admin")
NAME_LENGTH = 128
MAX_EXPIRY_DAYS = 3650
# `last_used_at` is rewritten only when older than this, so API calls stay reads.
LAST_USED_RESOLUTION = timedelta(minutes=1)


class Refused(PermissionError):
    """A credential that does not (or no longer) authenticate; the message says why (401)."""


@dataclass(frozen=True)
class Principal:
    """An authenticated caller. `kind` is "token" or "admin"; admins have the admin scope."""

    kind: str
    id: int
    name: str
    scope: str = "admin"

    @property
    def label(self) -> str:
        """How the audit log and revisions name this caller, e.g. "admin:alice"."""
        return f"{self.kind}:{self.name}"

    # Flask-Login protocol.
    is_authenticated = True
    is_active = True
    is_anonymous = False

    def get_id(self) -> str:
        return f"{self.kind}:{self.id}"


def allows(scope: str, needed: str) -> bool:
    """Whether a credential of `scope` may make a call that needs `needed`."""
    return SCOPES.index(scope) >= SCOPES.index(needed)


# -- API tokens -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenInfo:
    """A token as the tokens page and `GET /api/v1/tokens` show it (never its hash)."""

    name: str
    scope: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked: bool
    revoked_at: datetime | None

    def state(self, now: datetime | None = None) -> str:
        """active | expired | revoked."""
        if self.revoked:
            return "revoked"
        if self.expires_at is not None and throttle.aware(self.expires_at) <= (now or utcnow()):
            return "expired"
        return "active"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "scope": self.scope,
            "state": self.state(),
            "created_at": iso(self.created_at),
            "expires_at": iso(self.expires_at),
            "last_used_at": iso(self.last_used_at),
            "revoked_at": iso(self.revoked_at),
        }


def hash_token(token: str) -> str:
    """Tokens are 256 random bits, so one SHA-256 is enough (no salt or stretching needed)."""
    return hashlib.sha256(token.encode()).hexdigest()


def valid_name(name: Any, field: str) -> str:
    """A printable name of 1 to NAME_LENGTH characters, stripped."""
    if not isinstance(name, str) or not name.strip():
        raise ValidationError(field, "must not be empty")
    name = name.strip()
    if len(name) > NAME_LENGTH or not name.isprintable():
        raise ValidationError(field, f"must be at most {NAME_LENGTH} printable characters")
    return name


def valid_scope(scope: Any) -> str:
    if scope not in SCOPES:
        raise ValidationError("scope", f"must be one of {', '.join(SCOPES)}")
    return scope


def valid_expiry_days(days: Any) -> int | None:
    """None (never expires) or a whole number of days from 1 to MAX_EXPIRY_DAYS."""
    if days is None:
        return None
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_EXPIRY_DAYS:
        message = f"must be a whole number from 1 to {MAX_EXPIRY_DAYS}"
        raise ValidationError("expires_in_days", message)
    return days


def create_token(
    db: Database,
    name: str,
    scope: str,
    expires_in_days: int | None = None,
    actor: str = "cli",
) -> str:
    """Store a new token's hash and return the token itself, the only time it is known."""
    name = valid_name(name, "name")
    scope = valid_scope(scope)
    days = valid_expiry_days(expires_in_days)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    now = utcnow()
    expires_at = now + timedelta(days=days) if days else None
    with db.transaction() as session:
        if session.scalar(select(ApiToken.id).where(ApiToken.name == name)):
            raise Conflict(f"a token named {name!r} already exists")
        row = ApiToken(
            name=name,
            token_hash=hash_token(token),
            scope=scope,
            created_at=now,
            expires_at=expires_at,
        )
        session.add(row)
        detail = {"scope": scope, "expires_at": iso(expires_at)}
        session.add(audit.entry(actor, "token.create", name, detail))
    return token


def authenticate_token(db: Database, token: str) -> Principal:
    """The token's principal; Refused (unknown, revoked or expired) otherwise.

    Marks the token used, but writes only when the stored time is a minute old: the common
    call is a read, and a burst of calls with one token is not a burst of writes.
    """
    digest = hash_token(token) if token.startswith(TOKEN_PREFIX) else None
    now = utcnow()
    with db.transaction() as session:
        row = session.scalar(select(ApiToken).where(ApiToken.token_hash == digest))
        if row is None:
            raise Refused("missing or invalid bearer token")
        info = _token_info(row)
        principal = Principal("token", row.id, row.name, row.scope)
    state = info.state(now)
    if state != "active":
        raise Refused(f"token {state}")
    last_used = info.last_used_at
    if last_used is None or now - throttle.aware(last_used) >= LAST_USED_RESOLUTION:
        _mark_used(db, principal.id, now)
    return principal


def _mark_used(db: Database, token_id: int, now: datetime) -> None:
    """Conditional, so that of several workers seeing a stale time only one row update lands."""
    stale = now - LAST_USED_RESOLUTION
    with db.transaction() as session:
        session.execute(
            update(ApiToken)
            .where(ApiToken.id == token_id)
            .where(or_(ApiToken.last_used_at.is_(None), ApiToken.last_used_at < stale))
            .values(last_used_at=now)
        )


def revoke_token(db: Database, name: str, actor: str) -> TokenInfo:
    """Revoke the named token for good (its row stays, for the tokens page and the audit)."""
    with db.transaction() as session:
        row = session.scalar(select(ApiToken).where(ApiToken.name == name))
        if row is None:
            raise NotFound(f"token {name!r} not found")
        if row.revoked:
            raise Conflict(f"token {name!r} is already revoked")
        row.revoked = True
        row.revoked_at = utcnow()
        session.add(audit.entry(actor, "token.revoke", name, {"scope": row.scope}))
        session.flush()
        return _token_info(row)


def get_token(db: Database, name: str) -> TokenInfo:
    with db.transaction() as session:
        row = session.scalar(select(ApiToken).where(ApiToken.name == name))
        if row is None:
            raise NotFound(f"token {name!r} not found")
        return _token_info(row)


def list_tokens(db: Database) -> list[TokenInfo]:
    with db.transaction() as session:
        return [_token_info(row) for row in session.scalars(select(ApiToken).order_by("name"))]


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, else None."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _token_info(row: ApiToken) -> TokenInfo:
    return TokenInfo(**{f.name: getattr(row, f.name) for f in fields(TokenInfo)})


# -- admin users ------------------------------------------------------------------------------


@dataclass(frozen=True)
class AdminInfo:
    username: str
    active: bool
    created_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "username": self.username,
            "state": "active" if self.active else "disabled",
            "created_at": iso(self.created_at),
        }


def create_admin(db: Database, username: str, password: str) -> Principal:
    username = valid_name(username, "username")
    if len(password) < 8:
        raise ValidationError("password", "must be at least 8 characters")
    password_hash = generate_password_hash(password)  # scrypt, before the transaction
    with db.transaction() as session:
        if session.scalar(select(AdminUser.id).where(AdminUser.username == username)):
            raise Conflict(f"admin user {username!r} already exists")
        user = AdminUser(username=username, password_hash=password_hash)
        session.add(user)
        session.flush()
        return Principal("admin", user.id, user.username)


def disable_admin(db: Database, username: str, actor: str) -> AdminInfo:
    """Disable for good: the admin cannot sign in, and an open session ends at its next
    request (load_principal refuses it)."""
    with db.transaction() as session:
        user = session.scalar(select(AdminUser).where(AdminUser.username == username))
        if user is None:
            raise NotFound(f"admin user {username!r} not found")
        if not user.active:
            raise Conflict(f"admin user {username!r} is already disabled")
        user.active = False
        session.add(audit.entry(actor, "admin.disable", username))
        return AdminInfo(user.username, user.active, user.created_at)


def get_admin(db: Database, username: str) -> AdminInfo:
    with db.transaction() as session:
        user = session.scalar(select(AdminUser).where(AdminUser.username == username))
        if user is None:
            raise NotFound(f"admin user {username!r} not found")
        return AdminInfo(user.username, user.active, user.created_at)


def list_admins(db: Database) -> list[AdminInfo]:
    with db.transaction() as session:
        users = session.scalars(select(AdminUser).order_by(AdminUser.username))
        return [AdminInfo(u.username, u.active, u.created_at) for u in users]


def verify_admin(db: Database, username: str, password: str) -> Principal | None:
    """The admin if the password matches; None for unknown users, wrong passwords, inactive.

    Every attempt checks one password hash, a stand-in when there is no usable user: the
    check is what takes time, so skipping it would tell by timing which usernames exist.
    The check runs after the reading transaction has ended.
    """
    with db.transaction() as session:
        user = session.scalar(select(AdminUser).where(AdminUser.username == username))
        usable = user is not None and user.active
        found = Principal("admin", user.id, user.username) if usable else None
        stored = user.password_hash if usable else None
    matches = check_password_hash(stored or _stand_in_hash(), password)
    return found if matches and found else None


@cache
def _stand_in_hash() -> str:
    """A hash made like every admin's (same method and cost) that no password is known for."""
    return generate_password_hash(secrets.token_urlsafe(32))


@dataclass(frozen=True)
class SignIn:
    """The outcome of a sign-in: the admin, or None; `retry_after` > 0 when it was throttled
    (then no password was checked at all)."""

    principal: Principal | None
    retry_after: int = 0


def sign_in(
    db: Database, policy: LoginThrottle, username: str, password: str, address: str | None
) -> SignIn:
    """A throttled, audited password sign-in (see throttle.py for the policy).

    A plain read turns away a blocked key first, so a flood against a blocked key costs no
    write; an admitted attempt is counted before the password is checked (throttle.admit).
    """
    keys = throttle.keys(address, username)
    with db.transaction() as session:
        wait = throttle.retry_after(session, keys, utcnow())
    if wait <= 0:
        with db.transaction() as session:
            admission = throttle.admit(session, policy, keys, utcnow())
        wait = admission.retry_after
    if wait > 0:
        return SignIn(None, math.ceil(wait))
    principal = verify_admin(db, username, password)
    detail = {"address": address}
    with db.transaction() as session:
        if principal is not None:
            throttle.succeeded(session, admission, keys[1])
            session.add(audit.entry(principal.label, "login.success", username, detail))
            return SignIn(principal)
        session.add(audit.entry(audit.ANONYMOUS, "login.failure", username, detail))
        for key, seconds in admission.blocked.items():
            block = {"seconds": round(seconds), **detail}
            session.add(audit.entry(audit.ANONYMOUS, "login.blocked", key, block))
    return SignIn(None)


def load_principal(db: Database, user_id: str) -> Principal | None:
    """Flask-Login's user_loader: turns `get_id()` back into a Principal, if still valid."""
    kind, _, raw_id = user_id.partition(":")
    if kind != "admin" or not raw_id.isdigit():
        return None
    with db.transaction() as session:
        user = session.get(AdminUser, int(raw_id))
        if user is None or not user.active:
            return None
        return Principal("admin", user.id, user.username)
