"""Usage per model: a server can serve several models, so the daily usage rows gain `model` (the served
name) and their key becomes (key_id, day, model). Rows from before keep their counts under model "".

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TABLE = "sigserve_usage_daily"
PKEY = "sigserve_usage_daily_pkey"  # PostgreSQL's name for the key it made with the table
COUNTERS = ("requests", "images", "patches", "text_tokens", "cost", "searches")


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.add_column(TABLE, sa.Column("model", sa.String(200), nullable=False, server_default=""))
        op.drop_constraint(PKEY, TABLE, type_="primary")
        op.create_primary_key(PKEY, TABLE, ["key_id", "day", "model"])
    else:
        _sqlite_rebuild(with_model=True)


def downgrade() -> None:
    """Each key's day summed over its models, then the column dropped."""
    conn = op.get_bind()
    usage = sa.table(TABLE, *(sa.column(name) for name in ("key_id", "day", "model", *COUNTERS)))
    totals = conn.execute(sa.select(usage.c.key_id, usage.c.day, *(sa.func.sum(usage.c[n]).label(n) for n in COUNTERS))
                          .group_by(usage.c.key_id, usage.c.day)).all()
    conn.execute(usage.delete())
    if totals:
        conn.execute(usage.insert(), [{**row._mapping, "model": ""} for row in totals])
    if conn.dialect.name == "postgresql":
        op.drop_constraint(PKEY, TABLE, type_="primary")
        op.drop_column(TABLE, "model")
        op.create_primary_key(PKEY, TABLE, ["key_id", "day"])
    else:
        _sqlite_rebuild(with_model=False)


def _sqlite_rebuild(with_model: bool) -> None:
    """SQLite cannot change a primary key in place: a new table with the new key, the rows copied, a swap."""
    key = ["key_id", "day", "model"] if with_model else ["key_id", "day"]
    model = [sa.Column("model", sa.String(200), nullable=False, server_default="")] if with_model else []
    op.create_table(
        f"{TABLE}_new",
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("day", sa.String(10), nullable=False),
        *model,
        *(sa.Column(name, sa.BigInteger, nullable=False) for name in ("requests", "images", "patches", "text_tokens")),
        sa.Column("cost", sa.Float, nullable=False),
        sa.Column("searches", sa.BigInteger, nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint(*key),
    )
    copied = ", ".join(("key_id", "day", *COUNTERS))
    op.execute(f"INSERT INTO {TABLE}_new ({copied}) SELECT {copied} FROM {TABLE}")
    op.drop_table(TABLE)
    op.rename_table(f"{TABLE}_new", TABLE)
