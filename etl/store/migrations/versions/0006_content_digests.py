"""content digests of source files, re-read date of schools: re-exports of content already
applied are not read again

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28 21:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("source_files", schema=None) as batch_op:
        batch_op.add_column(sa.Column("content_sha256", sa.String(length=64), nullable=True))
    with op.batch_alter_table("school_state", schema=None) as batch_op:
        batch_op.add_column(sa.Column("reread_on", sa.String(length=10), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("school_state", schema=None) as batch_op:
        batch_op.drop_column("reread_on")
    with op.batch_alter_table("source_files", schema=None) as batch_op:
        batch_op.drop_column("content_sha256")
