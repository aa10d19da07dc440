"""SQLAlchemy 2 ORM: the desired state, its immutable history, the fleet and who may change it.

The desired state (model configs, version policies, labels) is mutable and always equals the
head revision; every change also writes an immutable `Revision` row holding the fully rendered
ModelServerConfig, so history, diff and rollback never depend on the mutable tables.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class ConfigHead(Base):
    """One row (id=1) holding the head revision number.

    Every config write starts by incrementing it, which takes the row lock (PostgreSQL) or the
    write lock (SQLite): writers serialize there, so revision numbers never collide.
    """

    __tablename__ = "config_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    revision: Mapped[int] = mapped_column(Integer, nullable=False, default=0)


class ModelConfigRow(Base):
    """A TensorFlow Serving ModelConfig as the head revision has it."""

    __tablename__ = "model_configs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True, nullable=False)
    base_path: Mapped[str] = mapped_column(Text, nullable=False)
    model_platform: Mapped[str] = mapped_column(String(64), nullable=False)
    # The revision that last changed this model (its ETag).
    revision: Mapped[int] = mapped_column(Integer, nullable=False)
    # logging_config: all three NULL when the model logs nothing (no logging_config).
    log_sampling_rate: Mapped[float | None] = mapped_column(Float)
    log_collector_type: Mapped[str | None] = mapped_column(String(16))
    log_filename_prefix: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    policy: Mapped[VersionPolicy | None] = relationship(
        back_populates="model", cascade="all, delete-orphan", uselist=False, lazy="selectin"
    )
    labels: Mapped[list[VersionLabel]] = relationship(
        back_populates="model",
        cascade="all, delete-orphan",
        lazy="selectin",
        order_by="VersionLabel.label",
    )


class VersionPolicy(Base):
    """ServableVersionPolicy: `kind` is latest | all | specific; absent row = upstream default."""

    __tablename__ = "version_policies"

    model_id: Mapped[int] = mapped_column(
        ForeignKey("model_configs.id", ondelete="CASCADE"), primary_key=True
    )
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    num_versions: Mapped[int | None] = mapped_column(Integer)
    versions: Mapped[list[int] | None] = mapped_column(JSON)

    model: Mapped[ModelConfigRow] = relationship(back_populates="policy")


class VersionLabel(Base):
    __tablename__ = "version_labels"
    __table_args__ = (UniqueConstraint("model_id", "label"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(
        ForeignKey("model_configs.id", ondelete="CASCADE"), nullable=False
    )
    label: Mapped[str] = mapped_column(String(64), nullable=False)
    version: Mapped[int] = mapped_column(Integer, nullable=False)

    model: Mapped[ModelConfigRow] = relationship(back_populates="labels")


class Revision(Base):
    """An immutable, numbered snapshot of the whole desired ModelServerConfig."""

    __tablename__ = "revisions"

    number: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    author: Mapped[str] = mapped_column(String(128), nullable=False)
    message: Mapped[str] = mapped_column(Text, nullable=False)
    # ModelServerConfig in protobuf text format, exactly what is pushed.
    model_server_config: Mapped[str] = mapped_column(Text, nullable=False)
    # sha256 of the deterministic binary serialization; compared with what a plane reports.
    fingerprint: Mapped[str] = mapped_column(String(64), nullable=False)
    rollback_of: Mapped[int | None] = mapped_column(Integer)


class DataPlane(Base):
    """A data plane and what the control plane last knew about it."""

    __tablename__ = "dataplanes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    address: Mapped[str] = mapped_column(String(255), unique=True, nullable=False)
    # api | env | dns: how it was registered (DNS-discovered planes are pruned when gone).
    source: Mapped[str] = mapped_column(String(16), nullable=False, default="api")
    # Stored state: pending | in_sync | error | unreachable (in_sync is re-checked against head).
    state: Mapped[str] = mapped_column(String(16), nullable=False, default="pending")
    # Revision believed in force; cleared when the plane restarted empty or drifted.
    applied_revision: Mapped[int | None] = mapped_column(Integer)
    # Highest revision ever sent: the compare-and-set guard that keeps pushes from going back.
    pushed_revision: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    last_seen: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    incarnation_id: Mapped[str | None] = mapped_column(String(128))
    # {"model": {"version": "AVAILABLE", ...}, ...} as last reported by GetModelStatus.
    model_states: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    # Push lease: which process may talk to the plane until when (see fleet.PlaneLease).
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class PushResult(Base):
    """One push step (intermediate or final) of one revision to one data plane."""

    __tablename__ = "push_results"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dataplane_id: Mapped[int] = mapped_column(
        ForeignKey("dataplanes.id", ondelete="CASCADE"), nullable=False, index=True
    )
    revision: Mapped[int] = mapped_column(Integer, nullable=False)
    step: Mapped[str] = mapped_column(String(16), nullable=False)
    ok: Mapped[bool] = mapped_column(Boolean, nullable=False)
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ApiToken(Base):
    """A bearer token; only its SHA-256 is stored.

    `scope` is read | write | admin (see auth.SCOPES); a revoked token keeps its row so that
    the tokens page and the audit log can still name it.
    """

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True, nullable=False)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    scope: Mapped[str] = mapped_column(String(16), nullable=False)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Written at most once a minute per token (auth.LAST_USED_RESOLUTION), not on every call.
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class AdminUser(Base):
    """A person allowed into the admin UI; the password is a werkzeug salted hash."""

    __tablename__ = "admin_users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(128), unique=True, nullable=False)
    password_hash: Mapped[str] = mapped_column(String(256), nullable=False)
    active: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AuditEntry(Base):
    """Who did what, when: one row per accepted change, written in the change's transaction."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, index=True
    )
    actor: Mapped[str] = mapped_column(String(128), nullable=False)
    action: Mapped[str] = mapped_column(String(64), nullable=False)
    target: Mapped[str] = mapped_column(String(255), nullable=False)
    revision: Mapped[int | None] = mapped_column(Integer)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)


class LoginThrottle(Base):
    """Failed sign-ins of one client address or one user name (`key` "addr:..." / "user:...").

    In the database rather than in process memory so that every HTTP worker and every
    control-plane instance counts the same failures (see throttle.py).
    """

    __tablename__ = "login_throttle"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    # Failures since `window_start`; the window restarts once it is older than the policy's.
    failures: Mapped[int] = mapped_column(Integer, nullable=False)
    window_start: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    # How many times this key was blocked: each block lasts twice as long as the one before.
    strikes: Mapped[int] = mapped_column(Integer, nullable=False)
    blocked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, index=True
    )
