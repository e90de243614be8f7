"""Quota reservations: images held by requests in flight, so that concurrent requests (on one or
many replicas) cannot overshoot a key's quota.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sigserve_quota_reservations",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("images", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
    )
    op.create_index("ix_sigserve_quota_reservations_key_id", "sigserve_quota_reservations", ["key_id"])


def downgrade() -> None:
    op.drop_index("ix_sigserve_quota_reservations_key_id", "sigserve_quota_reservations")
    op.drop_table("sigserve_quota_reservations")
