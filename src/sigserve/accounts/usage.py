"""Usage metering per API key and model: requests, images, patches, text tokens and cost.

Each call to :meth:`UsageMeter.record` adds to one row per (key id, UTC day, model) in its own
committed transaction (an UPDATE ... SET n = n + :x, or an INSERT when the day's row does not
exist yet), so a crash loses at most the request in flight and nothing waits for shutdown.
The SQL is portable (no UPSERT dialects): two replicas racing to insert the same day's row are
resolved by the primary key and a retry of the UPDATE. The tables live in the same database as
the keys (:class:`sigserve.accounts.keys.KeyStore`).

Cost is ``images * price_per_1k_images / 1000 + text_tokens * price_per_1m_tokens / 1e6`` at the
prices of the model that served (a server serving several models prices each), computed at record
time and stored, so changing the price later does not rewrite history.

Response shape (OpenRouter's key introspection plus our counters)::

    {"object": "usage",
     "data": {"key_id", "label", "usage", "usage_daily", "usage_weekly", "usage_monthly",
              "limit", "limit_remaining", "limit_unit": "images", "is_admin",
              "rate_limit": {"requests_per_minute", "images_per_minute"},
              "requests", "images", "patches", "text_tokens",
              "models": {"<model>": {"requests", "images", ..., "cost"}, ...},
              "daily": [{"date": "YYYY-MM-DD", "requests", "images", "patches",
                         "text_tokens", "cost", "models": {"<model>": {...}}}, ...]},
     "keys": [<same shape per key>, ...], "total": {...}}      # "keys"/"total": admin only

``usage*`` are costs (UTC day, Monday-based week, calendar month); ``limit`` and
``limit_remaining`` count images (the quota unit), null when the key has no quota.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from sigserve.accounts.keys import KeyRecord, KeyStore

COUNTERS = ("requests", "images", "patches", "text_tokens", "cost", "searches")

metadata = sa.MetaData()
usage_daily = sa.Table(
    "sigserve_usage_daily",
    metadata,
    # No foreign key: the static key and anonymous callers are metered too.
    sa.Column("key_id", sa.String(64), primary_key=True),
    sa.Column("day", sa.String(10), primary_key=True),  # ISO date (UTC): sorts as text
    sa.Column("model", sa.String(200), primary_key=True, default=""),  # the served model's name ("" before models)
    sa.Column("requests", sa.BigInteger, nullable=False, default=0),
    sa.Column("images", sa.BigInteger, nullable=False, default=0),
    sa.Column("patches", sa.BigInteger, nullable=False, default=0),
    sa.Column("text_tokens", sa.BigInteger, nullable=False, default=0),
    sa.Column("cost", sa.Float, nullable=False, default=0.0),
    sa.Column("searches", sa.BigInteger, nullable=False, default=0),  # collection searches
)


def _zero() -> dict:
    return {name: (0.0 if name == "cost" else 0) for name in COUNTERS}


def _row_dict(row) -> dict:
    return {name: (float(getattr(row, name) or 0) if name == "cost" else
                   int(getattr(row, name) or 0)) for name in COUNTERS}


class UsageMeter:
    """Records and reports usage per key in the KeyStore's database.

    `now` returns epoch seconds (injectable so tests can pick the day)."""

    def __init__(
        self,
        store: KeyStore,
        price_per_1k_images: float = 0.0,
        price_per_1m_tokens: float = 0.0,
        now=time.time,
    ):
        self.store = store
        self.db = store.db
        self.price_per_1k_images = price_per_1k_images
        self.price_per_1m_tokens = price_per_1m_tokens
        self._now = now
        metadata.create_all(self.db)
        _add_searches_column(self.db)
        _add_model_column(self.db)

    # -- recording ------------------------------------------------------------------------

    def cost(self, images: int = 0, text_tokens: int = 0, prices: tuple[float, float] | None = None) -> float:
        per_1k_images, per_1m_tokens = prices or (self.price_per_1k_images, self.price_per_1m_tokens)
        return images * per_1k_images / 1e3 + text_tokens * per_1m_tokens / 1e6

    def record(self, key_id: str, *, model: str = "", images: int = 0, patches: int = 0, text_tokens: int = 0,
               requests: int = 1, searches: int = 0, prices: tuple[float, float] | None = None) -> float:
        """Add one request's usage under the model that served it (committed before returning), at that
        model's (per 1k images, per 1M tokens) prices, default the meter's. Returns its cost."""
        values = {"requests": requests, "images": images, "patches": patches,
                  "text_tokens": text_tokens, "cost": self.cost(images, text_tokens, prices), "searches": searches}
        day = self._today().isoformat()
        where = (usage_daily.c.key_id == key_id, usage_daily.c.day == day, usage_daily.c.model == model)
        increment = {name: usage_daily.c[name] + value for name, value in values.items()}
        for attempt in range(3):
            try:
                with self.db.begin() as conn:
                    if conn.execute(usage_daily.update().where(*where)
                                    .values(**increment)).rowcount == 0:
                        conn.execute(usage_daily.insert().values(key_id=key_id, day=day, model=model,
                                                                 **values))
                return values["cost"]
            except IntegrityError:
                # Another process inserted the day's row between our UPDATE and INSERT: the
                # transaction rolled back, so retrying the UPDATE counts this request once.
                if attempt == 2:
                    raise
        return values["cost"]

    async def arecord(self, key_id: str, **counts) -> float:
        """`record` in a worker thread, for async route handlers."""
        return await asyncio.to_thread(self.record, key_id, **counts)

    # -- reading --------------------------------------------------------------------------

    def images_used(self, key_id: str) -> int:
        """All-time images of this key (what quota_images is compared against)."""
        query = sa.select(sa.func.sum(usage_daily.c.images)).where(usage_daily.c.key_id == key_id)
        with self.db.connect() as conn:
            return int(conn.execute(query).scalar() or 0)

    def usage_for(self, key_id: str, days: int = 30) -> dict:
        """{"key_id", "totals": {...}, "daily": [{"date", ...}] (last `days` days with use)}."""
        return self._collect([key_id], days)[key_id]

    def usage_all(self, days: int = 30) -> list[dict]:
        """usage_for of every key that exists or has usage, ordered by key creation."""
        known = [record.id for record in self.store.list()]
        with self.db.connect() as conn:
            used = [row[0] for row in conn.execute(sa.select(usage_daily.c.key_id).distinct())]
        ids = known + sorted(set(used) - set(known))
        collected = self._collect(ids, days)
        return [collected[key_id] for key_id in ids]

    def usage_response(self, caller: KeyRecord, days: int = 30) -> dict:
        """The JSON body of GET /v1/usage for `caller` (see the module docstring)."""
        body: dict[str, Any] = {"object": "usage", "data": self._entry(caller, self.usage_for(caller.id, days))}
        if caller.admin:
            records = {record.id: record for record in self.store.list()}
            entries = [self._entry(records.get(u["key_id"]) or _unknown(u["key_id"]), u)
                       for u in self.usage_all(days)]
            body["keys"] = entries
            body["total"] = {name: sum(e[name] for e in entries) for name in (*COUNTERS[:4], "searches")}
            body["total"]["cost"] = sum(e["usage"] for e in entries)
        return body

    # -- internals ------------------------------------------------------------------------

    def _today(self) -> dt.date:
        return dt.datetime.fromtimestamp(self._now(), dt.UTC).date()

    def _collect(self, key_ids: list[str], days: int) -> dict[str, dict]:
        out: dict[str, dict[str, Any]] = {k: {"key_id": k, "totals": _zero(), "models": {}, "daily": [], "periods": {}}
               for k in key_ids}
        if not key_ids:
            return out
        sums = [sa.func.sum(usage_daily.c[name]).label(name) for name in COUNTERS]
        today = self._today()
        starts = {"day": today, "week": today - dt.timedelta(days=today.weekday()),
                  "month": today.replace(day=1)}
        since = min(*starts.values(), today - dt.timedelta(days=max(days, 1) - 1)).isoformat()
        with self.db.connect() as conn:
            totals = conn.execute(sa.select(usage_daily.c.key_id, *sums)
                                  .where(usage_daily.c.key_id.in_(key_ids))
                                  .group_by(usage_daily.c.key_id))
            for row in totals:
                out[row.key_id]["totals"] = _row_dict(row)
            per_model = conn.execute(sa.select(usage_daily.c.key_id, usage_daily.c.model, *sums)
                                     .where(usage_daily.c.key_id.in_(key_ids))
                                     .group_by(usage_daily.c.key_id, usage_daily.c.model))
            for row in per_model:
                out[row.key_id]["models"][row.model] = _row_dict(row)
            recent = conn.execute(sa.select(usage_daily)
                                  .where(usage_daily.c.key_id.in_(key_ids),
                                         usage_daily.c.day >= since)
                                  .order_by(usage_daily.c.day)).all()
        first_listed = (today - dt.timedelta(days=max(days, 1) - 1)).isoformat()
        by_key: dict[str, list] = {}
        for row in recent:
            by_key.setdefault(row.key_id, []).append(row)
        for key_id, entry in out.items():
            rows = by_key.get(key_id, [])
            entry["daily"] = _by_day([r for r in rows if r.day >= first_listed])
            entry["periods"] = {
                name: sum(float(r.cost) for r in rows if r.day >= start.isoformat())
                for name, start in starts.items()
            }
        return out

    def _entry(self, record: KeyRecord, usage: dict) -> dict:
        totals, periods = usage["totals"], usage["periods"]
        quota = record.quota_images
        return {
            "key_id": record.id,
            "label": record.name,
            "usage": totals["cost"],
            "usage_daily": periods["day"],
            "usage_weekly": periods["week"],
            "usage_monthly": periods["month"],
            "limit": quota,
            "limit_remaining": None if quota is None else max(quota - totals["images"], 0),
            "limit_unit": "images",
            "is_admin": record.admin,
            "revoked": not record.active,
            "rate_limit": {"requests_per_minute": record.rpm,
                           "images_per_minute": record.images_per_min},
            **{name: totals[name] for name in COUNTERS[:4]},
            "searches": totals["searches"],
            "models": usage["models"],
            "daily": usage["daily"],
        }


def _by_day(rows) -> list[dict]:
    """One entry per day (rows come ordered by day): the day's totals over models, and each model's."""
    days: dict[str, dict] = {}
    for r in rows:
        day = days.setdefault(r.day, {"date": r.day, **_zero(), "models": {}})
        counts = _row_dict(r)
        for name in COUNTERS:
            day[name] += counts[name]
        day["models"][r.model] = counts
    return list(days.values())


def _add_model_column(engine) -> None:
    """Usage tables made before several models were served have no `model` column, and their primary key
    is (key_id, day): rebuilt as (key_id, day, model), the old rows kept under model "". Portable SQL
    (SQLite cannot change a primary key in place): a new table beside the old, the rows copied, a swap."""
    if "model" in {c["name"] for c in sa.inspect(engine).get_columns(usage_daily.name)}:
        return
    new = usage_daily.to_metadata(sa.MetaData(), name=f"{usage_daily.name}_new")
    columns = ", ".join(c.name for c in usage_daily.columns if c.name != "model")
    try:
        with engine.begin() as conn:
            new.create(conn)
            conn.execute(sa.text(f"INSERT INTO {new.name} (model, {columns}) SELECT '', {columns} FROM {usage_daily.name}"))
            conn.execute(sa.text(f"DROP TABLE {usage_daily.name}"))
            conn.execute(sa.text(f"ALTER TABLE {new.name} RENAME TO {usage_daily.name}"))
    except sa.exc.DBAPIError:  # another process migrated first (its transaction won)
        if "model" not in {c["name"] for c in sa.inspect(engine).get_columns(usage_daily.name)}:
            raise


def _add_searches_column(engine) -> None:
    """Databases made before collections lack the `searches` counter: add it (portable SQL)."""
    if "searches" in {c["name"] for c in sa.inspect(engine).get_columns(usage_daily.name)}:
        return
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(f"ALTER TABLE {usage_daily.name} ADD COLUMN searches BIGINT NOT NULL DEFAULT 0"))
    except sa.exc.DBAPIError:  # another process added it first
        if "searches" not in {c["name"] for c in sa.inspect(engine).get_columns(usage_daily.name)}:
            raise


def _unknown(key_id: str) -> KeyRecord:
    """Usage rows whose key is not in the table: the static key, anonymous callers."""
    return KeyRecord(id=key_id, name=key_id, kind="db" if key_id not in
                     ("static", "anonymous") else key_id)
