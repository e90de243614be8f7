"""Usage metering per API key and model: requests, images, patches, text tokens and cost; image quotas.

Recording: one row per (key id, UTC day, model), incremented by a single atomic upsert
(``INSERT ... ON CONFLICT (key_id, day, model) DO UPDATE SET n = n + excluded.n``, PostgreSQL and
SQLite alike) committed before the response is sent. Why this and not an append-only log rolled
up later: the row lock is held for one statement, so replicas writing the same key's row at once
queue for microseconds and neither lose nor double-count an increment; the table stays small
(keys x days), so quotas and billing read it directly, with no roll-up job to run, watch or lag
behind. A crash loses at most the requests in flight (they got no answer either).

Quotas (``quota_images``, all-time images): a request reserves its images before the work
(:meth:`UsageMeter.reserve`, a row in ``sigserve_quota_reservations``, granted only while
used + reserved + asked <= quota under a per-key row lock), and settles after
(:meth:`UsageMeter.settle`: the reservation is deleted and the usage added in ONE transaction) or
gives them back when it fails (:meth:`UsageMeter.release`). So concurrent requests, on one replica
or many, never take the key past its quota. A replica killed mid-request leaves reservations that
stop counting at their expiry (``reservation_ttl_s``).

Cost is ``images * price_per_1k_images / 1000 + text_tokens * price_per_1m_tokens / 1e6`` at the
prices of the model that served (a server serving several models prices each; `model` is its served
name, "" for usage recorded before models were), computed at record time and stored, so changing the
price later does not rewrite history. Quotas count the images of every model.

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
import secrets
import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from sigserve.accounts.keys import KeyRecord, KeyStore
from sigserve.accounts.schema import api_keys, quota_reservations, usage_daily

COUNTERS = ("requests", "images", "patches", "text_tokens", "cost", "searches")
DEFAULT_RESERVATION_TTL_S = 600.0


@dataclass(frozen=True)
class Reservation:
    """Images held for one request in flight. `remaining`: what the quota still allows after it."""

    id: str
    key_id: str
    images: int
    quota: int
    remaining: int


@dataclass(frozen=True)
class QuotaRefusal:
    """The quota cannot cover the request: `remaining` images are left of `quota`."""

    quota: int
    remaining: int


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
        reservation_ttl_s: float = DEFAULT_RESERVATION_TTL_S,
    ):
        self.store = store
        self.db = store.db
        self.price_per_1k_images = price_per_1k_images
        self.price_per_1m_tokens = price_per_1m_tokens
        self._now = now
        self.reservation_ttl_s = reservation_ttl_s  # longer than any request may run

    # -- recording ------------------------------------------------------------------------

    def cost(self, images: int = 0, text_tokens: int = 0, prices: tuple[float, float] | None = None) -> float:
        """At `prices` (per 1k images, per 1M tokens: the serving model's), default the meter's own."""
        per_1k_images, per_1m_tokens = prices or (self.price_per_1k_images, self.price_per_1m_tokens)
        return images * per_1k_images / 1e3 + text_tokens * per_1m_tokens / 1e6

    def record(self, key_id: str, *, model: str = "", images: int = 0, patches: int = 0, text_tokens: int = 0,
               requests: int = 1, searches: int = 0, prices: tuple[float, float] | None = None) -> float:
        """Add one request's usage under the model that served it (committed before returning). Returns its cost."""
        return self.settle(None, key_id, model=model, images=images, patches=patches, text_tokens=text_tokens,
                           requests=requests, searches=searches, prices=prices)

    def settle(self, reservation: Reservation | None, key_id: str, *, model: str = "", images: int = 0,
               patches: int = 0, text_tokens: int = 0, requests: int = 1, searches: int = 0,
               prices: tuple[float, float] | None = None) -> float:
        """Record a finished request under its model, at its model's prices, and drop its reservation, in one
        transaction. Returns its cost."""
        values = {"requests": requests, "images": images, "patches": patches,
                  "text_tokens": text_tokens, "cost": self.cost(images, text_tokens, prices), "searches": searches}
        with self.store.database.guard(), self.db.begin() as conn:
            if reservation is not None:
                conn.execute(quota_reservations.delete().where(quota_reservations.c.id == reservation.id))
            conn.execute(self._upsert(key_id, self._today().isoformat(), model, values))
        return values["cost"]

    def reserve(self, key_id: str, images: int, quota: int) -> Reservation | QuotaRefusal:
        """Hold `images` of the key's quota for a request about to run (see the module docstring)."""
        now = self._now()
        used = sa.select(sa.func.coalesce(sa.func.sum(usage_daily.c.images), 0)).where(
            usage_daily.c.key_id == key_id).scalar_subquery()
        held = sa.select(sa.func.coalesce(sa.func.sum(quota_reservations.c.images), 0)).where(
            quota_reservations.c.key_id == key_id, quota_reservations.c.expires_at > now).scalar_subquery()
        reservation_id = secrets.token_hex(16)
        with self.store.database.guard(), self.db.begin() as conn:
            # Serialise reservations of this key (PostgreSQL: row lock; SQLite ignores FOR UPDATE,
            # its INSERT below takes the database's write lock before it reads the sums).
            conn.execute(sa.select(api_keys.c.id).where(api_keys.c.id == key_id).with_for_update())
            conn.execute(quota_reservations.delete().where(quota_reservations.c.key_id == key_id,
                                                           quota_reservations.c.expires_at <= now))
            conn.execute(quota_reservations.insert().from_select(
                ["id", "key_id", "images", "expires_at"],
                sa.select(sa.literal(reservation_id), sa.literal(key_id), sa.literal(images),
                          sa.literal(now + self.reservation_ttl_s)).where(used + held + images <= quota),
            ))
            # (rowcount of INSERT ... SELECT is -1 under psycopg: look for the row instead)
            granted = conn.execute(sa.select(quota_reservations.c.id)
                                   .where(quota_reservations.c.id == reservation_id)).first() is not None
            spent = int(conn.execute(sa.select(used + held)).scalar() or 0)
        if not granted:
            return QuotaRefusal(quota=quota, remaining=max(quota - spent, 0))
        return Reservation(reservation_id, key_id, images, quota, remaining=max(quota - spent, 0))

    def release(self, reservation: Reservation) -> None:
        """Give back the images of a request that failed (nothing is recorded)."""
        with self.store.database.guard(), self.db.begin() as conn:
            conn.execute(quota_reservations.delete().where(quota_reservations.c.id == reservation.id))

    def _upsert(self, key_id: str, day: str, model: str, values: dict):
        dialect = postgresql if self.store.database.is_postgres else sqlite
        insert = dialect.insert(usage_daily).values(key_id=key_id, day=day, model=model, **values)
        return insert.on_conflict_do_update(
            index_elements=[usage_daily.c.key_id, usage_daily.c.day, usage_daily.c.model],
            set_={name: usage_daily.c[name] + insert.excluded[name] for name in values})

    async def arecord(self, key_id: str, **counts) -> float:
        """`record` in a worker thread, for async route handlers."""
        return await asyncio.to_thread(self.record, key_id, **counts)

    # -- reading --------------------------------------------------------------------------

    def images_used(self, key_id: str) -> int:
        """All-time images of this key (what quota_images is compared against)."""
        query = sa.select(sa.func.sum(usage_daily.c.images)).where(usage_daily.c.key_id == key_id)
        with self.store.database.guard(), self.db.connect() as conn:
            return int(conn.execute(query).scalar() or 0)

    def daily_rows(self, key_id: str | None = None, since: dt.date | None = None,
                   until: dt.date | None = None) -> list[dict]:
        """One dict per key, UTC day and model (billing export), oldest first: {"date", "key_id", "model", counters}."""
        query = sa.select(usage_daily).order_by(usage_daily.c.day, usage_daily.c.key_id, usage_daily.c.model)
        if key_id is not None:
            query = query.where(usage_daily.c.key_id == key_id)
        if since is not None:
            query = query.where(usage_daily.c.day >= since.isoformat())
        if until is not None:
            query = query.where(usage_daily.c.day <= until.isoformat())
        with self.store.database.guard(), self.db.connect() as conn:
            return [{"date": row.day, "key_id": row.key_id, "model": row.model, **_row_dict(row)}
                    for row in conn.execute(query)]

    def usage_for(self, key_id: str, days: int = 30) -> dict:
        """{"key_id", "totals": {...}, "daily": [{"date", ...}] (last `days` days with use)}."""
        return self._collect([key_id], days)[key_id]

    def usage_all(self, days: int = 30) -> list[dict]:
        """usage_for of every key that exists or has usage, ordered by key creation."""
        known = [record.id for record in self.store.list()]
        with self.store.database.guard(), self.db.connect() as conn:
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
        with self.store.database.guard(), self.db.connect() as conn:
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


def _unknown(key_id: str) -> KeyRecord:
    """Usage rows whose key is not in the table: the static key, anonymous callers."""
    return KeyRecord(id=key_id, name=key_id, kind="db" if key_id not in
                     ("static", "anonymous") else key_id)
