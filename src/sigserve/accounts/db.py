"""The keys and usage database: one SQLAlchemy engine (a connection pool) with bounded waits, and
one answer for "the database cannot be reached".

Two backends are supported and tested: SQLite (the embedded default: one file in the data folder,
for one process or one host) and PostgreSQL (``postgresql+psycopg://...``, shared by replicas).

Nothing may hang on the database: connecting, waiting for a pooled connection, a statement and a
lock wait are each bounded by ``timeout_s``. A failure to reach the database becomes
:class:`DatabaseUnavailableError` (the server answers 503 ``database_unavailable``); after one,
calls fail at once for ``cooldown_s`` instead of each waiting out the timeout again, then the
next call tries the database again (recovery needs no restart: the pool pings connections
before use and replaces dead ones).

The SQLite file is created 0600 and its folder 0700: it holds key hashes and billing data.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import sqlalchemy as sa

from sigserve import paths
from sigserve.errors import SigserveError

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 5.0
DEFAULT_POOL_SIZE = 10
SUPPORTED = ("sqlite", "postgresql")


class DatabaseUnavailableError(SigserveError):
    """The keys and usage database cannot be reached (down, unreachable, or too slow)."""


class Database:
    """An engine plus a circuit breaker. Use ``with db.guard(): ...`` around database work."""

    def __init__(self, url: str, *, timeout_s: float = DEFAULT_TIMEOUT_S, pool_size: int = DEFAULT_POOL_SIZE,
                 cooldown_s: float = 1.0, clock=time.monotonic):
        self.url = sa.engine.make_url(url)
        self.backend = self.url.get_backend_name()
        if self.backend not in SUPPORTED:
            raise SigserveError(f"unsupported database {self.backend!r}: use sqlite:///<file> or "
                                "postgresql+psycopg://user:password@host/db")
        self.timeout_s = timeout_s
        self.engine = _sqlite_engine(self.url, timeout_s) if self.backend == "sqlite" else \
            _postgres_engine(self.url, timeout_s, pool_size)
        self._cooldown_s, self._clock = cooldown_s, clock
        self._down_until = 0.0
        self._lock = threading.Lock()
        self.on_error: Callable[[], object] | None = None  # told of each outage detected (a metric)

    @property
    def is_postgres(self) -> bool:
        return self.backend == "postgresql"

    def check(self) -> None:
        """Raise DatabaseUnavailableError at once while an outage was seen less than cooldown_s ago."""
        if self._clock() < self._down_until:
            raise DatabaseUnavailableError("the keys and usage database is unavailable (retrying shortly)")

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """Map "cannot reach the database" onto DatabaseUnavailableError (other errors pass)."""
        self.check()
        try:
            yield
        except (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError) as exc:
            self._trip(exc)
            raise DatabaseUnavailableError(f"the keys and usage database is unavailable: {_first_line(exc)}") from exc
        except sa.exc.DBAPIError as exc:
            if not exc.connection_invalidated:
                raise
            self._trip(exc)
            raise DatabaseUnavailableError("the keys and usage database connection was lost") from exc

    def ping(self) -> None:
        """One round trip (readiness); raises DatabaseUnavailableError."""
        with self.guard(), self.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()

    def _trip(self, exc: BaseException) -> None:
        with self._lock:
            first = self._clock() >= self._down_until + self._cooldown_s
            self._down_until = self._clock() + self._cooldown_s
        if self.on_error is not None:
            self.on_error()
        if first:
            log.error("database unavailable (%s): answering 503 database_unavailable until it returns",
                      _first_line(exc))


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _postgres_engine(url: sa.URL, timeout_s: float, pool_size: int) -> sa.Engine:
    ms = int(timeout_s * 1000)
    connect_args = {
        "connect_timeout": max(2, math.ceil(timeout_s)),  # libpq's minimum is 2 s
        "options": f"-c statement_timeout={ms} -c lock_timeout={ms} -c idle_in_transaction_session_timeout={4 * ms}",
        "application_name": "sigserve",
    }
    return sa.create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_timeout=timeout_s,
                            pool_pre_ping=True, pool_recycle=1800, connect_args=connect_args)


def _sqlite_engine(url: sa.URL, timeout_s: float) -> sa.Engine:
    if url.database and url.database != ":memory:":
        secure_file(Path(url.database))
    # Server and CLI write the same file from different processes: wait for the lock (bounded)
    # instead of failing at once with "database is locked".
    engine = sa.create_engine(url, connect_args={"timeout": timeout_s})

    @sa.event.listens_for(engine, "connect")
    def _wal(dbapi_conn, _record):  # readers no longer block the writer
        dbapi_conn.execute("PRAGMA journal_mode=WAL")

    return engine


def secure_file(path: Path) -> None:
    """Create the database file 0600 in a 0700 folder (SQLite gives its -wal/-shm the file's mode).

    A folder sigserve creates is made 0700; an existing one is tightened only when it is the
    default data folder (ours by definition), else a warning names it: chmod on a folder the
    operator chose (say /srv) could break other software."""
    folder = path.expanduser().parent
    if not folder.exists():
        folder.mkdir(parents=True, mode=0o700, exist_ok=True)
        os.chmod(folder, 0o700)  # mkdir's mode is filtered by the umask
    elif stat.S_IMODE(folder.stat().st_mode) & 0o077:
        if folder.resolve() == paths.data_dir().resolve():
            os.chmod(folder, 0o700)
        else:
            log.warning("%s is readable by other users; it holds the keys database: chmod 700 it", folder)
    fd = os.open(path.expanduser(), os.O_CREAT | os.O_RDWR, 0o600)
    os.close(fd)
    if stat.S_IMODE(path.expanduser().stat().st_mode) != 0o600:
        os.chmod(path.expanduser(), 0o600)  # a file made by an older version (0644)
