"""API keys: creation, hashing, authentication and revocation.

A key looks like ``sk-sig-<key id>-<secret>``. The key id (12 hex characters) is not secret: it
is stored in clear to find the row and shown by ``sigserve keys list``. The secret is stored only
as a salted scrypt hash (per-key random salt) and compared in constant time. The plaintext is
returned once by :meth:`KeyStore.create` and never stored.

Storage is SQLAlchemy 2 Core with portable SQL only, so the default SQLite file
(``sqlite:///<data folder>/sigserve.db``) and a PostgreSQL URL shared by several replicas both work.

Speed: scrypt costs tens of milliseconds, so a verified plaintext is remembered in memory (by its
SHA-256, never in clear) for ``verify_ttl_s``. The row itself (revoked flag, limits) is re-read
from the database at most every ``refresh_s`` (1 s by default), so a revocation made by another
process or replica takes effect within a second; one made through the same ``KeyStore`` takes
effect immediately.

Open mode: with no static key and no key ever created, :meth:`KeyStore.is_open` is true and the
server should accept anonymous calls (as :data:`ANONYMOUS`) and log a loud warning when bound
beyond localhost. Revoking every key does NOT reopen the server: a revoked key still counts.

At shutdown call ``store.close()``.
"""

from __future__ import annotations

import builtins
import hashlib
import hmac
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import sqlalchemy as sa

from sigserve.errors import InvalidArgumentError, SigserveError

KEY_PREFIX = "sk-sig-"
_CACHE_MAX = 10_000
_KEY_RE = re.compile(r"^sk-sig-([0-9a-f]{12})-([A-Za-z0-9_-]{20,128})$")

# Schema definition only (no connection, no state): shared by every KeyStore instance.
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
    """Refused authentication (401) or authorisation (403), in OpenAI error terms."""

    def __init__(self, status: int, message: str, type: str, code: str):
        super().__init__(message)
        self.status, self.message, self.type, self.code = status, message, type, code


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


def connect(database_url: str) -> sa.Engine:
    """A SQLAlchemy engine (connection pool) for `database_url`; SQLite gets its folder created and a lock timeout."""
    url = sa.engine.make_url(database_url)
    if url.get_backend_name() != "sqlite":
        return sa.create_engine(url, pool_pre_ping=True)
    if url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    # Server and CLI write the same file from different processes: wait for the lock instead
    # of failing with "database is locked".
    db = sa.create_engine(url, connect_args={"timeout": 30})

    @sa.event.listens_for(db, "connect")
    def _wal(dbapi_conn, _record):  # readers no longer block the writer
        dbapi_conn.execute("PRAGMA journal_mode=WAL")

    return db


def _hash_secret(secret: str, salt: bytes, n: int) -> bytes:
    return hashlib.scrypt(secret.encode(), salt=salt, n=n, r=8, p=1, dklen=32, maxmem=64 << 20)


def _record(row) -> KeyRecord:
    return KeyRecord(
        id=row.id, name=row.name, rpm=row.rpm, images_per_min=row.images_per_min,
        quota_images=row.quota_images, admin=bool(row.admin), created_at=row.created_at,
        revoked_at=row.revoked_at,
    )


class KeyStore:
    """API keys in a database, plus an optional static key (`--api-key`) for simple setups.

    `static_key` authenticates as an admin named "static" (a single operator's setup).
    `scrypt_n` is the scrypt cost; the default (2**14) takes ~30-60 ms per verification.
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
    ):
        self.db = connect(database_url)
        metadata.create_all(self.db)
        self._static = static_key or None
        self._refresh_s, self._verify_ttl_s = refresh_s, verify_ttl_s
        self._scrypt_n, self._clock = scrypt_n, clock
        self._lock = threading.Lock()
        self._verified: dict[bytes, tuple[str, float]] = {}  # sha256(plaintext) -> (id, until)
        self._rows: dict[str, tuple[KeyRecord | None, float]] = {}  # id -> (record, fetched)
        self._open: tuple[bool, float] | None = None

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
        # A rate of 0 would lock the key out for good: leave it unset (None) for no limit.
        for label, value, least in (("rpm", rpm, 1), ("images_per_min", images_per_min, 1),
                                    ("quota_images", quota_images, 0)):
            if value is not None and value < least:
                raise InvalidArgumentError(f"{label} must be >= {least}", label)
        key_id, secret, salt = secrets.token_hex(6), secrets.token_urlsafe(32), os.urandom(16)
        record = KeyRecord(id=key_id, name=name.strip(), rpm=rpm, images_per_min=images_per_min,
                           quota_images=quota_images, admin=admin, created_at=time.time())
        with self.db.begin() as conn:
            conn.execute(api_keys.insert().values(
                id=record.id, name=record.name, salt=salt,
                hash=_hash_secret(secret, salt, self._scrypt_n), rpm=rpm,
                images_per_min=images_per_min, quota_images=quota_images, admin=admin,
                created_at=record.created_at, revoked_at=None,
            ))
        with self._lock:
            self._open = None
        return record, f"{KEY_PREFIX}{key_id}-{secret}"

    def list(self, include_revoked: bool = True) -> list[KeyRecord]:
        query = sa.select(api_keys).order_by(api_keys.c.created_at)
        if not include_revoked:
            query = query.where(api_keys.c.revoked_at.is_(None))
        with self.db.connect() as conn:
            return [_record(row) for row in conn.execute(query)]

    def get(self, key_id: str) -> KeyRecord | None:
        with self.db.connect() as conn:
            row = conn.execute(sa.select(api_keys).where(api_keys.c.id == key_id)).first()
        return _record(row) if row else None

    def revoke(self, key_id_or_name: str) -> builtins.list[KeyRecord]:
        """Revoke the key with this id (or full plaintext), else the active keys with this name.

        Returns the records revoked (empty when nothing matched)."""
        ident = key_id_or_name.strip()
        if m := _KEY_RE.match(ident):
            ident = m.group(1)
        now = time.time()
        active = api_keys.c.revoked_at.is_(None)
        with self.db.begin() as conn:
            rows = conn.execute(sa.select(api_keys).where(active, api_keys.c.id == ident)).all()
            if not rows:
                rows = conn.execute(
                    sa.select(api_keys).where(active, api_keys.c.name == ident)).all()
            ids = [row.id for row in rows]
            if ids:
                conn.execute(api_keys.update().where(api_keys.c.id.in_(ids))
                             .values(revoked_at=now))
        with self._lock:  # same process: immediately
            for key_id in ids:
                self._rows.pop(key_id, None)
            self._verified = {h: v for h, v in self._verified.items() if v[0] not in ids}
        return [replace(_record(row), revoked_at=now) for row in rows]

    # -- authentication -------------------------------------------------------------------

    def is_open(self) -> bool:
        """True when no static key is set and no key was ever created (anyone may call)."""
        if self._static:
            return False
        now = self._clock()
        with self._lock:
            if self._open and now - self._open[1] < self._refresh_s:
                return self._open[0]
        with self.db.connect() as conn:
            is_open = conn.execute(sa.select(sa.func.count()).select_from(api_keys)).scalar() == 0
        with self._lock:
            self._open = (is_open, now)
        return is_open

    def authenticate(self, plaintext: str | None) -> KeyRecord | None:
        """The active key matching `plaintext`, else None."""
        if not plaintext:
            return None
        if self._static and hmac.compare_digest(plaintext.encode(), self._static.encode()):
            return KeyRecord(id="static", name="static", admin=True, kind="static")
        m = _KEY_RE.match(plaintext)
        if not m:
            return None
        key_id, secret = m.groups()
        digest = hashlib.sha256(plaintext.encode()).digest()
        now = self._clock()
        with self._lock:
            cached = self._verified.get(digest)
        record = self._row(key_id, now)
        if record is None or not record.active:
            return None
        if cached and cached[0] == key_id and cached[1] > now:
            return record
        if not self._verify(key_id, secret):
            return None
        with self._lock:
            if len(self._verified) >= _CACHE_MAX:
                self._verified.clear()
            self._verified[digest] = (key_id, now + self._verify_ttl_s)
        return record

    def authorize(self, plaintext: str | None) -> KeyRecord:
        """The caller's record: ANONYMOUS in open mode, else a valid key or AuthError(401)."""
        record = self.authenticate(plaintext)
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
        self.db.dispose()

    # -- internals ------------------------------------------------------------------------

    def _row(self, key_id: str, now: float) -> KeyRecord | None:
        """The row, re-read at most every refresh_s so revocation elsewhere is seen quickly."""
        with self._lock:
            hit = self._rows.get(key_id)
        if hit and now - hit[1] < self._refresh_s:
            return hit[0]
        record = self.get(key_id)
        with self._lock:
            if len(self._rows) >= _CACHE_MAX:  # random ids from scanners must not grow memory
                self._rows.clear()
            self._rows[key_id] = (record, now)
        return record

    def _verify(self, key_id: str, secret: str) -> bool:
        with self.db.connect() as conn:
            row = conn.execute(sa.select(api_keys.c.salt, api_keys.c.hash)
                               .where(api_keys.c.id == key_id)).first()
        if row is None:
            return False
        return hmac.compare_digest(_hash_secret(secret, bytes(row.salt), self._scrypt_n),
                                   bytes(row.hash))
