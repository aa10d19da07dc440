"""A model's logging_config: sampling rate and log collector (type, filename prefix).

Existing models had no logging_config, which is what NULL columns mean, so the upgrade needs
no data step; the downgrade drops what the operator set (the revisions keep it in their text).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-08
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

LOG_COLUMNS = ("log_sampling_rate", "log_collector_type", "log_filename_prefix")


def upgrade() -> None:
    with op.batch_alter_table("model_configs") as batch:
        batch.add_column(sa.Column("log_sampling_rate", sa.Float(), nullable=True))
        batch.add_column(sa.Column("log_collector_type", sa.String(16), nullable=True))
        batch.add_column(sa.Column("log_filename_prefix", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("model_configs") as batch:
        for column in LOG_COLUMNS:
            batch.drop_column(column)
