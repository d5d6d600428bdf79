"""run and lock holders (kind, host, pid, process start, boot id) and their heartbeats

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 22:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for name in ("runs", "academy_locks"):
        with op.batch_alter_table(name, schema=None) as batch_op:
            batch_op.add_column(sa.Column("holder", sa.JSON(), nullable=True))
            batch_op.add_column(sa.Column("heartbeat_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    for name in ("runs", "academy_locks"):
        with op.batch_alter_table(name, schema=None) as batch_op:
            batch_op.drop_column("heartbeat_at")
            batch_op.drop_column("holder")
