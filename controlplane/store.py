"""The desired state and its history: every accepted change is one transaction that bumps the
head, edits the model rows, writes the immutable Revision and the audit entry together.

Functions take plain values and return plain values (protos, dataclasses), never live ORM rows,
so callers (API, UI, CLI) cannot accidentally lazy-load after the transaction closed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import select, update
from sqlalchemy.orm import Session
from tensorflow_serving.config.model_server_config_pb2 import ModelConfig, ModelServerConfig

from . import revisions as rv
from .db import Database
from .models import (
    AuditEntry,
    ConfigHead,
    ModelConfigRow,
    Revision,
    VersionLabel,
    VersionPolicy,
    utcnow,
)

T = TypeVar("T")


class NotFound(LookupError):
    """The named thing does not exist (404)."""


class Conflict(RuntimeError):
    """Duplicate name or stale revision (409)."""


@dataclass(frozen=True)
class StoredModel:
    config: ModelConfig
    revision: int

    def to_json(self) -> dict[str, Any]:
        return rv.model_to_json(self.config, self.revision)


@dataclass(frozen=True)
class RevisionInfo:
    number: int
    created_at: datetime
    author: str
    message: str
    model_server_config: str
    fingerprint: str
    rollback_of: int | None

    @property
    def config(self) -> ModelServerConfig:
        return rv.from_text(self.model_server_config)

    def to_json(self, *, with_config: bool = False) -> dict[str, Any]:
        body: dict[str, Any] = {
            "revision": self.number,
            "created_at": iso(self.created_at),
            "author": self.author,
            "message": self.message,
            "fingerprint": self.fingerprint,
            "rollback_of": self.rollback_of,
        }
        if with_config:
            body["model_server_config"] = self.model_server_config
        return body


@dataclass(frozen=True)
class Head:
    """The desired ModelServerConfig; revision 0 is the empty config before any change."""

    number: int
    config: ModelServerConfig
    fingerprint: str


def iso(moment: datetime | None) -> str | None:
    """ISO 8601 in UTC; SQLite hands datetimes back naive, and they are UTC by construction."""
    if moment is None:
        return None
    return moment.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


def existing(session: Session, entity: type[T], key: object, what: str) -> T:
    """The row of `entity` with primary key `key`; NotFound ("<what> not found") otherwise."""
    row = session.get(entity, key)
    if row is None:
        raise NotFound(f"{what} not found")
    return row


def detached(record: type[T], row: object, **overrides: Any) -> T:
    """Copy a row into the frozen dataclass whose fields are named after its columns.

    Callers get plain values, so nothing can lazy-load once the transaction has closed.
    """
    values = {f.name: getattr(row, f.name) for f in fields(record)}  # type: ignore[arg-type]
    return record(**{**values, **overrides})


# -- reads ------------------------------------------------------------------------------------


def list_models(db: Database) -> list[StoredModel]:
    with db.transaction() as session:
        rows = session.scalars(select(ModelConfigRow).order_by(ModelConfigRow.name))
        return [_stored(row) for row in rows]


def get_model(db: Database, name: str) -> StoredModel:
    with db.transaction() as session:
        return _stored(_model_row(session, name))


def list_revisions(db: Database, limit: int = 100) -> list[RevisionInfo]:
    """Newest first."""
    with db.transaction() as session:
        rows = session.scalars(select(Revision).order_by(Revision.number.desc()).limit(limit))
        return [_revision_info(row) for row in rows]


def get_revision(db: Database, number: int) -> RevisionInfo:
    with db.transaction() as session:
        return _revision_info(existing(session, Revision, number, f"revision {number}"))


def load_head(session: Session) -> Head:
    number = session.scalar(select(ConfigHead.revision).where(ConfigHead.id == 1)) or 0
    row = session.get(Revision, number) if number else None
    config = rv.from_text(row.model_server_config) if row else rv.render([])
    return Head(number=number, config=config, fingerprint=rv.fingerprint(config))


def head(db: Database) -> Head:
    with db.transaction() as session:
        return load_head(session)


def revision_diff(db: Database, old: int, new: int) -> rv.ConfigDiff:
    """Diff two revisions; 0 stands for the empty config before the first change."""
    configs = [rv.render([]) if n == 0 else get_revision(db, n).config for n in (old, new)]
    return rv.diff(configs[0], configs[1], f"revision {old}", f"revision {new}")


# -- writes -----------------------------------------------------------------------------------


def create_model(db: Database, config: ModelConfig, actor: str) -> StoredModel:
    def mutate(session: Session, number: int) -> StoredModel:
        if session.scalar(select(ModelConfigRow.id).where(ModelConfigRow.name == config.name)):
            raise Conflict(f"model {config.name!r} already exists")
        session.add(_new_row(config, number))
        return StoredModel(config, number)

    return _change(db, actor, "model.create", config.name, f"create model {config.name}", mutate)


def replace_model(
    db: Database, config: ModelConfig, expected: int | None, actor: str
) -> StoredModel:
    def mutate(session: Session, number: int) -> StoredModel:
        row = _model_row(session, config.name, expected)
        _write_row(row, config, number)
        return StoredModel(config, number)

    return _change(db, actor, "model.update", config.name, f"update model {config.name}", mutate)


def delete_model(db: Database, name: str, expected: int | None, actor: str) -> int:
    """Returns the revision that removed it."""

    def mutate(session: Session, number: int) -> int:
        session.delete(_model_row(session, name, expected))
        return number

    return _change(db, actor, "model.delete", name, f"delete model {name}", mutate)


def set_label(
    db: Database, name: str, label: str, version: int, expected: int | None, actor: str
) -> StoredModel:
    def mutate(session: Session, number: int) -> StoredModel:
        row = _model_row(session, name, expected)
        config = rv.with_label(_to_proto(row), label, version)
        _write_row(row, config, number)
        return StoredModel(config, number)

    message = f"set label {label} of {name} to version {version}"
    return _change(db, actor, "label.set", f"{name}/{label}", message, mutate)


def remove_label(
    db: Database, name: str, label: str, expected: int | None, actor: str
) -> StoredModel:
    def mutate(session: Session, number: int) -> StoredModel:
        row = _model_row(session, name, expected)
        config = _to_proto(row)
        if label not in config.version_labels:
            raise NotFound(f"model {name!r} has no label {label!r}")
        del config.version_labels[label]
        _write_row(row, config, number)
        return StoredModel(config, number)

    return _change(db, actor, "label.delete", f"{name}/{label}", f"remove label {label}", mutate)


def rollback(db: Database, target: int, actor: str) -> RevisionInfo:
    """A new head whose ModelServerConfig equals revision `target`'s."""

    def mutate(session: Session, number: int) -> int:
        row = session.get(Revision, target)
        if row is None:
            raise NotFound(f"revision {target} not found")
        _replace_all(session, rv.models_by_name(rv.from_text(row.model_server_config)), number)
        return number

    number = _change(
        db,
        actor,
        "revision.rollback",
        f"revision {target}",
        f"rollback to revision {target}",
        mutate,
        rollback_of=target,
    )
    return get_revision(db, number)


def _change(
    db: Database,
    actor: str,
    action: str,
    target: str,
    message: str,
    mutate: Callable[[Session, int], T],
    rollback_of: int | None = None,
) -> T:
    """Run `mutate` under a fresh head number and record the resulting revision, atomically."""
    with db.transaction() as session:
        number = _bump_head(session)
        result = mutate(session, number)
        session.flush()
        rows = session.scalars(select(ModelConfigRow).order_by(ModelConfigRow.name))
        config = rv.render(_to_proto(row) for row in rows)
        session.add(
            Revision(
                number=number,
                author=actor,
                message=message,
                model_server_config=rv.to_text(config),
                fingerprint=rv.fingerprint(config),
                rollback_of=rollback_of,
            )
        )
        session.add(
            AuditEntry(
                actor=actor,
                action=action,
                target=target,
                revision=number,
                detail={"message": message},
            )
        )
    return result


def _bump_head(session: Session) -> int:
    """Must be the first write of a change: it is the lock that serializes config writers."""
    session.execute(
        update(ConfigHead).where(ConfigHead.id == 1).values(revision=ConfigHead.revision + 1)
    )
    return session.scalar(select(ConfigHead.revision).where(ConfigHead.id == 1))


def _model_row(session: Session, name: str, expected: int | None = None) -> ModelConfigRow:
    row = session.scalar(select(ModelConfigRow).where(ModelConfigRow.name == name))
    if row is None:
        raise NotFound(f"model {name!r} not found")
    if expected is not None and expected != row.revision:
        raise Conflict(
            f"model {name!r} is at revision {row.revision}, not {expected}: reload and retry"
        )
    return row


def _replace_all(session: Session, wanted: dict[str, ModelConfig], number: int) -> None:
    """Make the model rows equal `wanted`; only models that differ get the new revision."""
    existing = {row.name: row for row in session.scalars(select(ModelConfigRow))}
    for name, row in existing.items():
        if name not in wanted:
            session.delete(row)
        elif _to_proto(row) != wanted[name]:
            _write_row(row, wanted[name], number)
    for name, config in wanted.items():
        if name not in existing:
            session.add(_new_row(config, number))


# -- ORM <-> proto ----------------------------------------------------------------------------


def _revision_info(row: Revision) -> RevisionInfo:
    return detached(RevisionInfo, row)


def _stored(row: ModelConfigRow) -> StoredModel:
    return StoredModel(_to_proto(row), row.revision)


def _to_proto(row: ModelConfigRow) -> ModelConfig:
    config = ModelConfig(name=row.name, base_path=row.base_path, model_platform=row.model_platform)
    policy = row.policy
    if policy is not None:
        target = config.model_version_policy
        if policy.kind == "latest":
            target.latest.num_versions = policy.num_versions or 1
        elif policy.kind == "all":
            target.all.SetInParent()
        else:
            target.specific.versions.extend(policy.versions or [])
    for label in row.labels:
        config.version_labels[label.label] = label.version
    if row.log_filename_prefix is not None:
        logging = config.logging_config
        logging.sampling_config.sampling_rate = row.log_sampling_rate or 0.0
        logging.log_collector_config.type = row.log_collector_type or ""
        logging.log_collector_config.filename_prefix = row.log_filename_prefix
    return config


def _new_row(config: ModelConfig, number: int) -> ModelConfigRow:
    row = ModelConfigRow(name=config.name)
    _write_row(row, config, number)
    return row


def _write_row(row: ModelConfigRow, config: ModelConfig, number: int) -> None:
    row.base_path = config.base_path
    row.model_platform = config.model_platform
    row.revision = number
    row.updated_at = utcnow()
    _write_policy(row, config)
    _write_logging(row, config)
    wanted = dict(config.version_labels)
    for label in list(row.labels):
        if label.label not in wanted:
            row.labels.remove(label)
        else:
            label.version = wanted.pop(label.label)
    row.labels.extend(VersionLabel(label=k, version=v) for k, v in sorted(wanted.items()))


def _write_policy(row: ModelConfigRow, config: ModelConfig) -> None:
    """Edit the policy row in place (replacing it would reuse its primary key in one flush)."""
    policy = config.model_version_policy
    kind = policy.WhichOneof("policy_choice")
    if kind is None:
        row.policy = None
        return
    if row.policy is None:
        row.policy = VersionPolicy(kind=kind)
    row.policy.kind = kind
    row.policy.num_versions = policy.latest.num_versions if kind == "latest" else None
    row.policy.versions = list(policy.specific.versions) if kind == "specific" else None


def _write_logging(row: ModelConfigRow, config: ModelConfig) -> None:
    if not config.HasField("logging_config"):
        row.log_sampling_rate = row.log_collector_type = row.log_filename_prefix = None
        return
    logging = config.logging_config
    row.log_sampling_rate = logging.sampling_config.sampling_rate
    row.log_collector_type = logging.log_collector_config.type
    row.log_filename_prefix = logging.log_collector_config.filename_prefix
