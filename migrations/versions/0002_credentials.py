"""Scoped, expiring, revocable API tokens and the login throttle.

Tokens made before scopes existed had full power, so they become `admin` tokens: the upgrade
keeps every deployment working, and the tokens page shows operators which ones to narrow.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TOKEN_COLUMNS = ("scope", "expires_at", "last_used_at", "revoked_at")


def upgrade() -> None:
    # The server default only fills the existing rows; it is dropped at once so that a new
    # token never gets admin power by omission.
    with op.batch_alter_table("api_tokens") as batch:
        batch.add_column(
            sa.Column("scope", sa.String(16), nullable=False, server_default="admin")
        )
        batch.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("api_tokens") as batch:
        batch.alter_column("scope", server_default=None)
    op.create_table(
        "login_throttle",
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("strikes", sa.Integer(), nullable=False),
        sa.Column("blocked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_login_throttle_updated_at", "login_throttle", ["updated_at"])


def downgrade() -> None:
    op.drop_index("ix_login_throttle_updated_at", "login_throttle")
    op.drop_table("login_throttle")
    with op.batch_alter_table("api_tokens") as batch:
        for column in TOKEN_COLUMNS:
            batch.drop_column(column)
