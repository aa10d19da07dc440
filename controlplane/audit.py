"""The audit log: who did what, when, for changes, sign-ins and credential management.

Config changes write their entry inside the change's own transaction (store._change); the
functions here are for everything else, which callers add to their own transaction with
`entry` or write alone with `record`.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from .db import Database
from .models import AuditEntry
from .store import iso

ACTOR_LENGTH = 128
TARGET_LENGTH = 255
# Who a refused or anonymous action is recorded as (e.g. a failed sign-in).
ANONYMOUS = "anonymous"


def entry(actor: str, action: str, target: str, detail: dict[str, Any] | None = None) -> AuditEntry:
    """A row to add to the caller's transaction; texts a client chose are clamped to fit."""
    return AuditEntry(
        actor=actor[:ACTOR_LENGTH],
        action=action,
        target=target[:TARGET_LENGTH],
        detail=detail or {},
    )


def record(
    db: Database, actor: str, action: str, target: str, detail: dict[str, Any] | None = None
) -> None:
    """Write one entry in its own transaction (for actions that change no row themselves)."""
    with db.transaction() as session:
        session.add(entry(actor, action, target, detail))


def recent(db: Database, limit: int = 200) -> list[dict[str, Any]]:
    """The newest `limit` entries, newest first, in the API's shape."""
    with db.transaction() as session:
        rows = session.scalars(select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit))
        return [
            {
                "id": row.id,
                "created_at": iso(row.created_at),
                "actor": row.actor,
                "action": row.action,
                "target": row.target,
                "revision": row.revision,
                "detail": row.detail,
            }
            for row in rows
        ]
