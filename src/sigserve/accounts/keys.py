"""API keys: creation, hashing, authentication, limits and revocation.

A key looks like ``sk-sig-<key id>-<secret>``. The key id (12 hex characters) is not secret: it
is stored in clear to find the row and shown by ``sigserve keys list``. The secret is stored only
as a salted scrypt hash (per-key random salt) and compared in constant time. The plaintext is
returned once by :meth:`KeyStore.create` and never stored.

Storage: :mod:`sigserve.accounts.db` (SQLite by default, PostgreSQL for replicas); the schema is
brought up to date by the migrations when the store opens (``migrate=True``).

Speed: scrypt costs tens of milliseconds, so a verified plaintext is remembered in memory (by its
SHA-256, never in clear) for ``verify_ttl_s``. The row itself (revoked flag, limits) is re-read
from the database at most every ``refresh_s`` (1 s by default): a revocation or a limit change made
elsewhere takes effect within ``refresh_s``. With ``events`` (Redis pub/sub across replicas) every
change made through any KeyStore is also announced, and each replica drops its cached row at once.

Guessing: every scrypt verification is first checked against ``throttle`` (failed attempts per key
id and per client address), and an unknown or revoked key id costs the same scrypt as a real one,
so timing does not tell which ids exist.

Open mode: with no static key and no key ever created, :meth:`KeyStore.is_open` is true and the
server should accept anonymous calls (as :data:`ANONYMOUS`) and log a loud warning when bound
beyond localhost. Revoking every key does NOT reopen the server: a revoked key still counts.

At shutdown call ``store.close()``.
"""

from __future__ import annotations

import builtins
import hashlib
import hmac
import logging
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import sqlalchemy as sa

from sigserve.accounts import migrate as migrations
from sigserve.accounts.db import DEFAULT_POOL_SIZE, DEFAULT_TIMEOUT_S, Database
from sigserve.accounts.schema import api_keys
from sigserve.errors import InvalidArgumentError, SigserveError

log = logging.getLogger(__name__)

KEY_PREFIX = "sk-sig-"
_CACHE_MAX = 10_000
_KEY_RE = re.compile(r"^sk-sig-([0-9a-f]{12})-([A-Za-z0-9_-]{20,128})$")
LIMIT_FIELDS = ("rpm", "images_per_min", "quota_images")
_LEAST = {"rpm": 1, "images_per_min": 1, "quota_images": 0}  # a rate of 0 would lock the key out: use None
# What the columns hold (rates are 32-bit integers, the quota 64-bit): larger is refused, not overflowed.
LIMIT_MOST = {"rpm": 2**31 - 1, "images_per_min": 2**31 - 1, "quota_images": 2**63 - 1}


@dataclass(frozen=True)
class KeyRecord:
    """What the server knows about the caller. `kind` is "db", "static" or "anonymous"."""

    id: str
    name: str
    rpm: int | None = None
    images_per_min: int | None = None
    quota_images: int | None = None
    admin: bool = False
    created_at: float = 0.0
    revoked_at: float | None = None
    kind: str = "db"

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    @property
    def display_prefix(self) -> str:
        """A non-secret hint of the key, safe for logs and listings."""
        return f"{KEY_PREFIX}{self.id}-…" if self.kind == "db" else f"<{self.kind}>"


ANONYMOUS = KeyRecord(id="anonymous", name="anonymous", kind="anonymous")


class AuthError(SigserveError):
    """Refused authentication (401), authorisation (403) or too many failed attempts (429)."""

    def __init__(self, status: int, message: str, type: str, code: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code = status, message, type, code
        self.headers = headers or {}


class KeyEvents(Protocol):
    """Announces key changes to the other replicas (sigserve.accounts.shared.KeyEvents over Redis)."""

    def publish(self, key_id: str) -> None: ...


class FailureThrottle(Protocol):
    """Failed secret verifications per key id and per client (sigserve.accounts.ratelimit.AuthThrottle)."""

    def wait_s(self, key_id: str, client: str | None) -> float: ...

    def failed(self, key_id: str, client: str | None) -> None: ...


def database_url_for(data_dir: str | Path) -> str:
    """The default database: an SQLite file in the data folder."""
    return f"sqlite:///{Path(data_dir).expanduser().resolve() / 'sigserve.db'}"


def bearer_token(authorization: str | None, x_api_key: str | None = None) -> str | None:
    """The key from `Authorization: Bearer <key>` (OpenAI clients) or `x-api-key` (others)."""
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return x_api_key.strip() if x_api_key and x_api_key.strip() else None


def _hash_secret(secret: str, salt: bytes, n: int) -> bytes:
    return hashlib.scrypt(secret.encode(), salt=salt, n=n, r=8, p=1, dklen=32, maxmem=64 << 20)


def _record(row) -> KeyRecord:
    return KeyRecord(
        id=row.id, name=row.name, rpm=row.rpm, images_per_min=row.images_per_min,
        quota_images=row.quota_images, admin=bool(row.admin), created_at=row.created_at,
        revoked_at=row.revoked_at,
    )


def _check_limits(values: dict) -> None:
    for label, value in values.items():
        if label in _LEAST and value is not None and (isinstance(value, bool) or value < _LEAST[label]):
            raise InvalidArgumentError(f"{label} must be >= {_LEAST[label]} (or null for no limit)", label)
        if label in LIMIT_MOST and value is not None and value > LIMIT_MOST[label]:
            raise InvalidArgumentError(f"{label} must be <= {LIMIT_MOST[label]}", label)


@dataclass(frozen=True)
class _Cached:
    record: KeyRecord | None
    salt: bytes
    hash: bytes
    fetched: float


class KeyStore:
    """API keys in a database, plus an optional static key (`--api-key`) for simple setups.

    `static_key` authenticates as an admin named "static" (a single operator's setup).
    `scrypt_n` is the scrypt cost; the default (2**14) takes ~30-60 ms per verification.
    `migrate`: upgrade the schema when opening (else refuse a database behind this version).
    """

    def __init__(
        self,
        database_url: str,
        *,
        static_key: str | None = None,
        refresh_s: float = 1.0,
        verify_ttl_s: float = 300.0,
        scrypt_n: int = 2**14,
        clock=time.monotonic,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        pool_size: int = DEFAULT_POOL_SIZE,
        migrate: bool = True,
        events: KeyEvents | None = None,
        throttle: FailureThrottle | None = None,
    ):
        self.database = Database(database_url, timeout_s=timeout_s, pool_size=pool_size)
        self.db = self.database.engine
        migrations.ensure(self.database, migrate)
        self._static = static_key or None
        self._refresh_s, self._verify_ttl_s = refresh_s, verify_ttl_s
        self._scrypt_n, self._clock = scrypt_n, clock
        self.events, self.throttle = events, throttle
        self._lock = threading.Lock()
        self._verified: dict[bytes, tuple[str, float]] = {}  # sha256(plaintext) -> (id, until)
        self._rows: dict[str, _Cached] = {}
        self._open: tuple[bool, float] | None = None
        # Unknown and revoked ids are checked against this, so that they cost a real scrypt too.
        self._decoy = _Cached(None, os.urandom(16), os.urandom(32), 0.0)

    # -- administration -------------------------------------------------------------------

    def create(
        self,
        name: str,
        rpm: int | None = None,
        images_per_min: int | None = None,
        quota_images: int | None = None,
        admin: bool = False,
    ) -> tuple[KeyRecord, str]:
        """A new key. Returns (record, plaintext); the plaintext cannot be recovered later."""
        if not name or not name.strip():
            raise InvalidArgumentError("a key needs a name", "name")
        _check_limits({"rpm": rpm, "images_per_min": images_per_min, "quota_images": quota_images})
        key_id, secret, salt = secrets.token_hex(6), secrets.token_urlsafe(32), os.urandom(16)
        record = KeyRecord(id=key_id, name=name.strip(), rpm=rpm, images_per_min=images_per_min,
                           quota_images=quota_images, admin=admin, created_at=time.time())
        with self.database.guard(), self.db.begin() as conn:
            conn.execute(api_keys.insert().values(
                id=record.id, name=record.name, salt=salt,
                hash=_hash_secret(secret, salt, self._scrypt_n), rpm=rpm,
                images_per_min=images_per_min, quota_images=quota_images, admin=admin,
                created_at=record.created_at, revoked_at=None,
            ))
        with self._lock:
            self._open = None
            self._rows.pop(key_id, None)
        self._announce(key_id)
        return record, f"{KEY_PREFIX}{key_id}-{secret}"

    def list(self, include_revoked: bool = True) -> list[KeyRecord]:
        query = sa.select(api_keys).order_by(api_keys.c.created_at)
        if not include_revoked:
            query = query.where(api_keys.c.revoked_at.is_(None))
        with self.database.guard(), self.db.connect() as conn:
            return [_record(row) for row in conn.execute(query)]

    def get(self, key_id: str) -> KeyRecord | None:
        with self.database.guard(), self.db.connect() as conn:
            row = conn.execute(sa.select(api_keys).where(api_keys.c.id == key_id)).first()
        return _record(row) if row else None

    def update(self, key_id: str, **changes) -> KeyRecord | None:
        """Change a key's name, limits (None: no limit) or admin flag. None when no such key."""
        unknown = set(changes) - {"name", "admin", *LIMIT_FIELDS}
        if unknown:
            raise InvalidArgumentError(f"cannot change {sorted(unknown)}", sorted(unknown)[0])
        if "name" in changes and (not changes["name"] or not str(changes["name"]).strip()):
            raise InvalidArgumentError("a key needs a name", "name")
        _check_limits(changes)
        if "name" in changes:
            changes["name"] = changes["name"].strip()
        with self.database.guard(), self.db.begin() as conn:
            found = conn.execute(api_keys.update().where(api_keys.c.id == key_id).values(**changes)).rowcount \
                if changes else conn.execute(sa.select(sa.func.count()).where(api_keys.c.id == key_id)).scalar()
        if not found:
            return None
        self.forget(key_id)
        self._announce(key_id)
        return self.get(key_id)

    def revoke(self, key_id_or_name: str) -> builtins.list[KeyRecord]:
        """Revoke the key with this id (or full plaintext), else the active keys with this name.

        Returns the records revoked (empty when nothing matched)."""
        ident = key_id_or_name.strip()
        if m := _KEY_RE.match(ident):
            ident = m.group(1)
        now = time.time()
        active = api_keys.c.revoked_at.is_(None)
        with self.database.guard(), self.db.begin() as conn:
            rows = conn.execute(sa.select(api_keys).where(active, api_keys.c.id == ident)).all()
            if not rows:
                rows = conn.execute(
                    sa.select(api_keys).where(active, api_keys.c.name == ident)).all()
            ids = [row.id for row in rows]
            if ids:
                conn.execute(api_keys.update().where(api_keys.c.id.in_(ids))
                             .values(revoked_at=now))
        for key_id in ids:  # this process: at once; other replicas: through events, else within refresh_s
            self.forget(key_id)
            self._announce(key_id)
        return [replace(_record(row), revoked_at=now) for row in rows]

    def forget(self, key_id: str | None = None) -> None:
        """Drop what is cached about `key_id` (None: about every key); the next use re-reads the row."""
        with self._lock:
            if key_id is None:
                self._rows.clear()
                self._verified.clear()
                self._open = None
                return
            self._rows.pop(key_id, None)
            self._verified = {h: v for h, v in self._verified.items() if v[0] != key_id}

    # -- authentication -------------------------------------------------------------------

    def is_open(self) -> bool:
        """True when no static key is set and no key was ever created (anyone may call)."""
        if self._static:
            return False
        now = self._clock()
        with self._lock:
            if self._open and now - self._open[1] < self._refresh_s:
                return self._open[0]
        with self.database.guard(), self.db.connect() as conn:
            is_open = conn.execute(sa.select(sa.func.count()).select_from(api_keys)).scalar() == 0
        with self._lock:
            self._open = (is_open, now)
        return is_open

    def authenticate(self, plaintext: str | None, client: str | None = None) -> KeyRecord | None:
        """The active key matching `plaintext`, else None. `client`: the caller's address, for
        the failed-attempts throttle (AuthError 429 when over it)."""
        if not plaintext:
            return None
        if self._static and hmac.compare_digest(plaintext.encode(), self._static.encode()):
            return KeyRecord(id="static", name="static", admin=True, kind="static")
        m = _KEY_RE.match(plaintext)
        if not m:
            return None  # not even the shape of a key: no scrypt, nothing to learn from timing
        key_id, secret = m.groups()
        digest = hashlib.sha256(plaintext.encode()).digest()
        now = self._clock()
        with self._lock:
            verified = self._verified.get(digest)
        cached = self._row(key_id, now)
        record = cached.record
        if record is not None and record.active and verified and verified[0] == key_id and verified[1] > now:
            return record
        self._check_throttle(key_id, client)
        usable = record is not None and record.active
        target = cached if usable else self._decoy  # same scrypt whether the id exists or not
        good = hmac.compare_digest(_hash_secret(secret, target.salt, self._scrypt_n), target.hash)
        if not (good and usable):
            if self.throttle is not None:
                self.throttle.failed(key_id, client)
            return None
        with self._lock:
            if len(self._verified) >= _CACHE_MAX:
                self._verified.clear()
            self._verified[digest] = (key_id, now + self._verify_ttl_s)
        return record

    def authorize(self, plaintext: str | None, client: str | None = None) -> KeyRecord:
        """The caller's record: ANONYMOUS in open mode, else a valid key or AuthError(401)."""
        record = self.authenticate(plaintext, client)
        if record is not None:
            return record
        if self.is_open():
            return ANONYMOUS
        if not plaintext:
            raise AuthError(401, "Missing API key: send 'Authorization: Bearer <key>'.",
                            "authentication_error", "missing_api_key")
        raise AuthError(401, "Invalid or revoked API key.", "authentication_error",
                        "invalid_api_key")

    @staticmethod
    def require_admin(record: KeyRecord) -> KeyRecord:
        if not record.admin:
            raise AuthError(403, "This endpoint needs an admin key.", "permission_error",
                            "admin_required")
        return record

    def close(self) -> None:
        self.database.dispose()

    # -- internals ------------------------------------------------------------------------

    def _row(self, key_id: str, now: float) -> _Cached:
        """The row, re-read at most every refresh_s so changes made elsewhere are seen quickly."""
        with self._lock:
            hit = self._rows.get(key_id)
        if hit and now - hit.fetched < self._refresh_s:
            return hit
        with self.database.guard(), self.db.connect() as conn:
            row = conn.execute(sa.select(api_keys).where(api_keys.c.id == key_id)).first()
        cached = _Cached(_record(row), bytes(row.salt), bytes(row.hash), now) if row else \
            replace(self._decoy, fetched=now)
        with self._lock:
            if len(self._rows) >= _CACHE_MAX:  # random ids from scanners must not grow memory
                self._rows.clear()
            self._rows[key_id] = cached
        return cached

    def _check_throttle(self, key_id: str, client: str | None) -> None:
        wait = self.throttle.wait_s(key_id, client) if self.throttle is not None else 0.0
        if wait > 0:
            retry = max(int(wait + 0.999), 1)
            raise AuthError(429, f"Too many failed authentication attempts; retry in {retry} s.",
                            "rate_limit_error", "too_many_failed_attempts", {"retry-after": str(retry)})

    def _announce(self, key_id: str) -> None:
        if self.events is None:
            return
        try:
            self.events.publish(key_id)
        except Exception as exc:  # noqa: BLE001 - the refresh_s bound still holds
            log.warning("could not announce the change of key %s to other replicas (%s); they see it "
                        "within %.1f s", key_id, exc, self._refresh_s)
