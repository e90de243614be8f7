"""The tables of the keys and usage database, defined once for the queries of keys.py and usage.py.

They are created and changed only by the migrations (sigserve/accounts/migrations, Alembic); a test
checks that a database upgraded to the newest migration matches these definitions exactly. To
change a table: edit it here AND add a migration (`alembic revision`, see migrations/README)."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

api_keys = sa.Table(
    "sigserve_api_keys",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False, index=True),
    sa.Column("salt", sa.LargeBinary(32), nullable=False),
    sa.Column("hash", sa.LargeBinary(64), nullable=False),
    sa.Column("rpm", sa.Integer, nullable=True),
    sa.Column("images_per_min", sa.Integer, nullable=True),
    sa.Column("quota_images", sa.BigInteger, nullable=True),
    sa.Column("admin", sa.Boolean, nullable=False, default=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("revoked_at", sa.Float, nullable=True),
)

# One row per key, UTC day and model, incremented atomically (INSERT ... ON CONFLICT DO UPDATE).
usage_daily = sa.Table(
    "sigserve_usage_daily",
    metadata,
    # No foreign key: the static key and anonymous callers are metered too.
    sa.Column("key_id", sa.String(64), primary_key=True),
    sa.Column("day", sa.String(10), primary_key=True),  # ISO date (UTC): sorts as text
    # The served model's name (several models in one server); "" for usage recorded before (migration 0004)
    sa.Column("model", sa.String(200), primary_key=True, default="", server_default=""),
    sa.Column("requests", sa.BigInteger, nullable=False, default=0),
    sa.Column("images", sa.BigInteger, nullable=False, default=0),
    sa.Column("patches", sa.BigInteger, nullable=False, default=0),
    sa.Column("text_tokens", sa.BigInteger, nullable=False, default=0),
    sa.Column("cost", sa.Float, nullable=False, default=0.0),
    sa.Column("searches", sa.BigInteger, nullable=False, default=0, server_default="0"),  # collection searches
)

# Images held for requests in flight against a quota: taken before the work, removed when the
# request settles (its usage recorded in the same transaction) or fails; a replica killed mid-request
# leaves rows that stop counting at `expires_at` (epoch seconds).
quota_reservations = sa.Table(
    "sigserve_quota_reservations",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("key_id", sa.String(64), nullable=False, index=True),
    sa.Column("images", sa.BigInteger, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
)
