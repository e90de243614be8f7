"""Baseline: the keys and usage tables as sigserve created them before migrations existed.

A database made by those versions already has them (with data): they are adopted as they are.
An empty database gets them created.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    if "sigserve_api_keys" not in existing:
        op.create_table(
            "sigserve_api_keys",
            sa.Column("id", sa.String(32), primary_key=True),
            sa.Column("name", sa.String(200), nullable=False),
            sa.Column("salt", sa.LargeBinary(32), nullable=False),
            sa.Column("hash", sa.LargeBinary(64), nullable=False),
            sa.Column("rpm", sa.Integer, nullable=True),
            sa.Column("images_per_min", sa.Integer, nullable=True),
            sa.Column("quota_images", sa.BigInteger, nullable=True),
            sa.Column("admin", sa.Boolean, nullable=False),
            sa.Column("created_at", sa.Float, nullable=False),
            sa.Column("revoked_at", sa.Float, nullable=True),
        )
        op.create_index("ix_sigserve_api_keys_name", "sigserve_api_keys", ["name"])
    if "sigserve_usage_daily" not in existing:
        op.create_table(
            "sigserve_usage_daily",
            sa.Column("key_id", sa.String(64), primary_key=True),
            sa.Column("day", sa.String(10), primary_key=True),
            sa.Column("requests", sa.BigInteger, nullable=False),
            sa.Column("images", sa.BigInteger, nullable=False),
            sa.Column("patches", sa.BigInteger, nullable=False),
            sa.Column("text_tokens", sa.BigInteger, nullable=False),
            sa.Column("cost", sa.Float, nullable=False),
        )


def downgrade() -> None:
    op.drop_table("sigserve_usage_daily")
    op.drop_index("ix_sigserve_api_keys_name", "sigserve_api_keys")
    op.drop_table("sigserve_api_keys")
