"""the AAF state: each school's last applied AAF records and where its Complet/Delta chain stands

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 06:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "aaf_records",
        sa.Column("academy", sa.String(length=32), nullable=False),
        sa.Column("uai", sa.String(length=8), nullable=False),
        sa.Column("category", sa.String(length=24), nullable=False),
        sa.Column("identifier", sa.String(length=64), nullable=False),
        sa.Column("attrs", sa.JSON(), nullable=False),
        sa.Column("stamp", sa.String(length=12), nullable=False),
        sa.Column("file", sa.Text(), nullable=True),
        sa.Column("line", sa.Integer(), nullable=True),
        sa.Column("run_id", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("academy", "uai", "category", "identifier"),
    )
    op.create_table(
        "aaf_schools",
        sa.Column("academy", sa.String(length=32), nullable=False),
        sa.Column("uai", sa.String(length=8), nullable=False),
        sa.Column("type", sa.String(length=24), nullable=False),
        sa.Column("complet_date", sa.String(length=10), nullable=True),
        sa.Column("applied_stamp", sa.String(length=12), nullable=True),
        sa.Column("run_id", sa.String(length=64), nullable=True),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("academy", "uai", "type"),
    )


def downgrade() -> None:
    op.drop_table("aaf_schools")
    op.drop_table("aaf_records")
