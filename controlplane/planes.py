"""Data-plane rows: registration, reported state, push results and the push lease.

The lease is the compare-and-set that keeps pushes ordered across threads and processes: a
pusher may talk to a plane only while it holds an unexpired lease, and it can only take one
for a revision at least as new as any revision already sent there (`pushed_revision`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.orm import Session

from .db import Database
from .models import AuditEntry, DataPlane, PushResult, utcnow
from .revisions import ValidationError
from .store import Conflict, detached, existing, iso

# gRPC targets a token holder may register: host:port, or dns:///host:port (gRPC's DNS
# resolver, which follows every A record). No unix: or other schemes: a control plane must not
# be made to dial its own host's sockets.
ADDRESS_RE = re.compile(r"^(?:dns:///)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$")
ADDRESS_MAX_CHARS = DataPlane.__table__.c.address.type.length
INCARNATION_MAX_CHARS = DataPlane.__table__.c.incarnation_id.type.length
# Text columns have no size in the schema; what a plane says is cut here so that one plane
# cannot fill the database (or the page that shows it).
ERROR_MAX_CHARS = 2000
VERSIONS_MAX_PER_MODEL = 100
REPORTED_ERRORS = ("error", "unreachable")


@dataclass(frozen=True)
class PlaneView:
    id: int
    address: str
    source: str
    state: str
    applied_revision: int | None
    pushed_revision: int
    last_error: str | None
    last_seen: datetime | None
    incarnation_id: str | None
    model_states: dict[str, Any]

    def reported_state(self, head: int) -> str:
        """in_sync only while the applied revision is the head; errors win over pending."""
        if self.state in REPORTED_ERRORS:
            return self.state
        return "in_sync" if self.applied_revision == head else "pending"

    def to_json(self, head: int) -> dict[str, Any]:
        return {
            "id": self.id,
            "address": self.address,
            "source": self.source,
            "state": self.reported_state(head),
            "applied_revision": self.applied_revision,
            "head_revision": head,
            "last_error": self.last_error,
            "last_seen": iso(self.last_seen),
            "incarnation_id": self.incarnation_id,
            "models": self.model_states,
        }


def validate_address(address: Any) -> str:
    if not isinstance(address, str) or not ADDRESS_RE.match(address.strip()):
        raise ValidationError("address", "must be host:port or dns:///host:port")
    address = address.strip()
    if len(address) > ADDRESS_MAX_CHARS:
        raise ValidationError("address", f"must be at most {ADDRESS_MAX_CHARS} characters")
    if not 1 <= int(address.rsplit(":", 1)[1]) <= 65535:
        raise ValidationError("address", "port must be between 1 and 65535")
    return address


def clip(text: str, limit: int = ERROR_MAX_CHARS) -> str:
    """`text` as a column can hold it: NUL characters dropped (PostgreSQL refuses them in
    text), cut to `limit` characters."""
    text = text.replace("\x00", "")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def clip_incarnation(incarnation_id: str) -> str:
    """The incarnation id as stored, so that a probe compares like with like."""
    return clip(incarnation_id, INCARNATION_MAX_CHARS)


def clip_states(states: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    """At most VERSIONS_MAX_PER_MODEL versions per model (the newest), states clipped."""
    return {
        name: {
            v: clip(s, 32)
            for v, s in sorted(vs.items(), key=lambda kv: -int(kv[0]))[:VERSIONS_MAX_PER_MODEL]
        }
        for name, vs in states.items()
    }


def _view(row: DataPlane) -> PlaneView:
    return detached(PlaneView, row, model_states=row.model_states or {})


def _existing_plane(session: Session, plane_id: int) -> DataPlane:
    return existing(session, DataPlane, plane_id, f"data plane {plane_id}")


# -- registration -----------------------------------------------------------------------------


def list_planes(db: Database) -> list[PlaneView]:
    with db.transaction() as session:
        return [_view(r) for r in session.scalars(select(DataPlane).order_by(DataPlane.id))]


def get_plane(db: Database, plane_id: int) -> PlaneView:
    with db.transaction() as session:
        return _view(_existing_plane(session, plane_id))


def add_plane(db: Database, address: str, actor: str) -> PlaneView:
    address = validate_address(address)
    with db.transaction() as session:
        if session.scalar(select(DataPlane.id).where(DataPlane.address == address)):
            raise Conflict(f"data plane {address} is already registered")
        row = _new_plane(session, address, "api")
        session.add(AuditEntry(actor=actor, action="dataplane.add", target=address, detail={}))
        session.flush()
        return _view(row)


def delete_plane(db: Database, plane_id: int, actor: str) -> None:
    with db.transaction() as session:
        row = _existing_plane(session, plane_id)
        session.add(
            AuditEntry(actor=actor, action="dataplane.delete", target=row.address, detail={})
        )
        session.delete(row)


def sync_source(db: Database, source: str, addresses: Iterable[str]) -> None:
    """Make the planes registered by `source` (env or dns) exactly `addresses`."""
    wanted = {validate_address(a) for a in addresses}
    with db.transaction() as session:
        existing = set(session.scalars(select(DataPlane.address)))
        for address in sorted(wanted - existing):
            _new_plane(session, address, source)
        session.execute(
            delete(DataPlane).where(
                DataPlane.source == source, DataPlane.address.not_in(sorted(wanted))
            )
        )


def _new_plane(session: Session, address: str, source: str) -> DataPlane:
    row = DataPlane(
        address=address, source=source, state="pending", pushed_revision=0, model_states={}
    )
    session.add(row)
    return row


# -- observations and results -----------------------------------------------------------------


@dataclass(frozen=True)
class Observation:
    """What one reconcile probe learned. `serving_head` None means "cannot tell"."""

    incarnation_id: str | None
    model_states: dict[str, dict[str, str]]
    serving_head: bool | None
    restarted: bool


def record_observation(db: Database, plane_id: int, head: int, obs: Observation) -> None:
    """Store a probe of the plane against `head`.

    A plane proven not to serve the head loses its applied revision; a rejected-config error
    stays until a push succeeds (a probe does not prove it went away).
    """
    with db.transaction() as session:
        row = session.get(DataPlane, plane_id)
        if row is None:
            return
        row.last_seen = utcnow()
        row.model_states = clip_states(obs.model_states)
        if obs.incarnation_id:
            row.incarnation_id = clip_incarnation(obs.incarnation_id)
        if head < row.pushed_revision:
            return  # judged against a head older than one already sent: says nothing now
        if obs.serving_head:
            row.applied_revision, row.state, row.last_error = head, "in_sync", None
            return
        if obs.restarted or obs.serving_head is False:
            row.applied_revision = None
        if row.state != "error":
            row.state = "pending"


def record_unreachable(db: Database, plane_id: int, error: str) -> None:
    with db.transaction() as session:
        session.execute(
            update(DataPlane)
            .where(DataPlane.id == plane_id)
            .values(state="unreachable", last_error=clip(error))
        )


def record_internal_error(db: Database, plane_id: int, error: str, owner: str | None) -> None:
    """A bug or database error while working on this plane: shown on it, and the lease let go
    if `owner` holds it, so that the next cycle (or another instance) can try again."""
    with db.transaction() as session:
        session.execute(
            update(DataPlane)
            .where(DataPlane.id == plane_id)
            .values(state="error", last_error=clip(error))
        )
        if owner is not None:
            session.execute(
                update(DataPlane)
                .where(DataPlane.id == plane_id, DataPlane.lease_owner == owner)
                .values(lease_owner=None, lease_until=None)
            )


def record_step(
    db: Database,
    plane_id: int,
    revision: int,
    step: str,
    error: str | None,
    attempts: int,
    keep: int,
) -> None:
    """Append one push result and delete all but the plane's newest `keep` (a config a plane
    refuses adds a row every cycle: unpruned, the table grows for ever)."""
    with db.transaction() as session:
        session.add(
            PushResult(
                dataplane_id=plane_id,
                revision=revision,
                step=step,
                ok=error is None,
                error=None if error is None else clip(error),
                attempts=attempts,
            )
        )
        session.flush()
        oldest_kept = session.scalar(
            select(PushResult.id)
            .where(PushResult.dataplane_id == plane_id)
            .order_by(PushResult.id.desc())
            .offset(max(keep, 1) - 1)
            .limit(1)
        )
        if oldest_kept is not None:
            session.execute(
                delete(PushResult).where(
                    PushResult.dataplane_id == plane_id, PushResult.id < oldest_kept
                )
            )


def record_applied(db: Database, plane_id: int, owner: str, revision: int) -> bool:
    """The final push of `revision` succeeded; only the lease holder may say so."""
    with db.transaction() as session:
        result = session.execute(
            update(DataPlane)
            .where(DataPlane.id == plane_id, DataPlane.lease_owner == owner)
            .values(
                applied_revision=revision,
                state="in_sync",
                last_error=None,
                last_seen=utcnow(),
                lease_owner=None,
                lease_until=None,
            )
        )
        return result.rowcount == 1


def record_failure(db: Database, plane_id: int, owner: str, state: str, error: str) -> None:
    with db.transaction() as session:
        session.execute(
            update(DataPlane)
            .where(DataPlane.id == plane_id, DataPlane.lease_owner == owner)
            .values(state=state, last_error=clip(error), lease_owner=None, lease_until=None)
        )


def push_history(db: Database, plane_id: int, limit: int = 20) -> list[dict[str, Any]]:
    with db.transaction() as session:
        rows = session.scalars(
            select(PushResult)
            .where(PushResult.dataplane_id == plane_id)
            .order_by(PushResult.id.desc())
            .limit(limit)
        )
        return [
            {
                "revision": r.revision,
                "step": r.step,
                "ok": r.ok,
                "error": r.error,
                "attempts": r.attempts,
                "created_at": iso(r.created_at),
            }
            for r in rows
        ]


# -- the push lease ---------------------------------------------------------------------------


def acquire_lease(db: Database, plane_id: int, owner: str, revision: int, ttl_s: float) -> bool:
    """Claim the plane for pushing `revision`: refused if another pusher holds a live lease or a
    newer revision was already sent. One UPDATE, so it is atomic on every database."""
    now = utcnow()
    with db.transaction() as session:
        result = session.execute(
            update(DataPlane)
            .where(
                DataPlane.id == plane_id,
                DataPlane.pushed_revision <= revision,
                or_(DataPlane.lease_owner.is_(None), DataPlane.lease_until < now),
            )
            .values(
                lease_owner=owner,
                lease_until=now + timedelta(seconds=ttl_s),
                pushed_revision=revision,
            )
        )
        return result.rowcount == 1


def renew_lease(db: Database, plane_id: int, owner: str, ttl_s: float) -> bool:
    """Extend our lease before each call; False means it expired and someone else took it."""
    now = utcnow()
    with db.transaction() as session:
        result = session.execute(
            update(DataPlane)
            .where(
                and_(DataPlane.id == plane_id, DataPlane.lease_owner == owner),
            )
            .values(lease_until=now + timedelta(seconds=ttl_s))
        )
        return result.rowcount == 1


def release_lease(db: Database, plane_id: int, owner: str) -> None:
    with db.transaction() as session:
        session.execute(
            update(DataPlane)
            .where(DataPlane.id == plane_id, DataPlane.lease_owner == owner)
            .values(lease_owner=None, lease_until=None)
        )
