"""What each page shows, assembled from the core's read functions in one call per view.

Kept apart from the views so a view stays "parse, call one function, render", and so the
shaping (which versions a label may point at, how many planes are in sync) is testable
without HTTP.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .. import auth, planes, store
from ..db import Database
from ..revisions import ConfigDiff

AVAILABLE = "AVAILABLE"
# Plane states, most serious first: what a one-word summary of the fleet should say.
SEVERITY = ("unreachable", "error", "pending", "in_sync")


@dataclass(frozen=True)
class VersionState:
    version: int
    state: str


@dataclass(frozen=True)
class PlaneRow:
    """One data plane as the tables show it; `state` is already judged against the head."""

    id: int
    address: str
    source: str
    state: str
    applied_revision: int | None
    last_error: str | None
    last_seen: datetime | None
    models: dict[str, list[VersionState]]


@dataclass(frozen=True)
class FleetStatus:
    head: int
    planes: list[PlaneRow]

    @property
    def in_sync(self) -> int:
        return sum(plane.state == "in_sync" for plane in self.planes)

    @property
    def overall(self) -> str:
        """The fleet in one state: the most serious any plane is in."""
        states = {plane.state for plane in self.planes}
        return next(s for s in SEVERITY if s in states or s == "in_sync")


@dataclass(frozen=True)
class VersionChoice:
    """A version a label may point at, described by how the fleet serves it."""

    version: int
    text: str


@dataclass(frozen=True)
class Dashboard:
    fleet: FleetStatus
    models: list[dict[str, Any]]


@dataclass(frozen=True)
class ModelPage:
    model: dict[str, Any]
    fleet: FleetStatus
    choices: list[VersionChoice]


@dataclass(frozen=True)
class DiffPage:
    old: int
    new: int
    diff: ConfigDiff
    revisions: list[store.RevisionInfo]


@dataclass(frozen=True)
class RevisionPage:
    revision: store.RevisionInfo
    head: int
    # Revision page: what this revision changed. Rollback page: what rolling back would change.
    diff: ConfigDiff


@dataclass(frozen=True)
class AccessPage:
    """Who can change this control plane: every API token and every admin."""

    tokens: list[auth.TokenInfo]
    admins: list[auth.AdminInfo]


def access_page(db: Database) -> AccessPage:
    return AccessPage(auth.list_tokens(db), auth.list_admins(db))


def fleet_status(db: Database, model: str | None = None) -> FleetStatus:
    """Every plane's state against the head; only `model`'s versions when one is given."""
    head = store.head(db).number
    rows = [_plane_row(plane, head, model) for plane in planes.list_planes(db)]
    return FleetStatus(head, rows)


def dashboard(db: Database) -> Dashboard:
    models = [stored.to_json() for stored in store.list_models(db)]
    return Dashboard(fleet_status(db), models)


def model_page(db: Database, name: str) -> ModelPage:
    """The model, how each plane serves it, and the versions its labels may move to."""
    model = store.get_model(db, name).to_json()
    fleet = fleet_status(db, name)
    return ModelPage(model, fleet, version_choices(fleet, model["version_labels"].values()))


def diff_page(db: Database, old: int | None, new: int | None) -> DiffPage:
    """Any two revisions; by default the head against the revision before it."""
    new = store.head(db).number if new is None else new
    old = max(new - 1, 0) if old is None else old
    return DiffPage(old, new, store.revision_diff(db, old, new), store.list_revisions(db))


def revision_page(db: Database, number: int) -> RevisionPage:
    """A revision with the diff against the one before it (0 is the empty config)."""
    revision = store.get_revision(db, number)
    diff = store.revision_diff(db, number - 1, number)
    return RevisionPage(revision, store.head(db).number, diff)


def rollback_page(db: Database, number: int) -> RevisionPage:
    """A revision with the diff from the head to it: exactly what a rollback would change."""
    revision = store.get_revision(db, number)
    head = store.head(db).number
    return RevisionPage(revision, head, store.revision_diff(db, head, number))


def version_choices(fleet: FleetStatus, labelled: Any = ()) -> list[VersionChoice]:
    """Versions the planes report for the model, plus those labels already name.

    Each choice says on how many planes it is AVAILABLE, so an operator sees before moving a
    label whether the fleet still has to load the version.
    """
    states = [vs for plane in fleet.planes for model in plane.models.values() for vs in model]
    available = Counter(vs.version for vs in states if vs.state == AVAILABLE)
    reported = {vs.version for vs in states}
    total = len(fleet.planes)
    choices = []
    for version in sorted(reported | set(labelled)):
        if version in reported:
            text = f"{version} — available on {available[version]} of {total}"
        else:
            text = f"{version} — not reported by any data plane"
        choices.append(VersionChoice(version, text))
    return choices


def _plane_row(plane: planes.PlaneView, head: int, model: str | None) -> PlaneRow:
    reported = plane.model_states
    names = [model] if model is not None else sorted(reported)
    return PlaneRow(
        id=plane.id,
        address=plane.address,
        source=plane.source,
        state=plane.reported_state(head),
        applied_revision=plane.applied_revision,
        last_error=plane.last_error,
        last_seen=plane.last_seen,
        models={name: _version_states(reported.get(name) or {}) for name in names},
    )


def _version_states(states: dict[str, str]) -> list[VersionState]:
    return sorted((VersionState(int(v), s) for v, s in states.items()), key=lambda vs: vs.version)
