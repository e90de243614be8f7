"""Usage counts collection searches: `searches` on the daily usage rows (0 for the past).

Before migrations, the collections branch added this column in place at start; a database where
that already happened keeps its column (and its counts) as it is.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    columns = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("sigserve_usage_daily")}
    if "searches" not in columns:
        with op.batch_alter_table("sigserve_usage_daily") as batch:
            batch.add_column(sa.Column("searches", sa.BigInteger, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("sigserve_usage_daily") as batch:
        batch.drop_column("searches")
