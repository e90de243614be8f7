"""Schema migrations (Alembic, shipped inside the package): `upgrade` brings a database to the
newest schema keeping its data, `current` and `head` say where it is.

Replicas started together must not migrate twice at once: on PostgreSQL the upgrade holds an
advisory lock (the others wait, then find nothing to do); on SQLite a lock file beside the database
does the same for processes of one host. History is linear: each migration names the one before,
so branches merged later (say, a new usage column) append their migration after the newest one."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa

from sigserve.accounts.db import Database
from sigserve.errors import SigserveError

log = logging.getLogger(__name__)

VERSION_TABLE = "sigserve_alembic_version"  # not Alembic's default name: the database may be shared
MIGRATIONS = Path(__file__).parent / "migrations"
_PG_LOCK_ID = 0x5167_5E72  # any constant: "sigserve migrations"


class SchemaOutdatedError(SigserveError):
    """The database is behind this version of sigserve and migrating at start is off."""


def _config(connection: sa.Connection | None = None):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def head() -> str:
    from alembic.script import ScriptDirectory

    revision = ScriptDirectory.from_config(_config()).get_current_head()
    assert revision is not None
    return revision


def current(db: Database) -> str | None:
    """The database's revision; None for an empty database or one made before migrations."""
    from alembic.runtime.migration import MigrationContext

    with db.guard(), db.engine.connect() as conn:
        return MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}).get_current_revision()


def upgrade(db: Database, revision: str = "head") -> tuple[str | None, str | None]:
    """Apply the migrations up to `revision`. Returns (revision before, revision after)."""
    from alembic import command

    with db.guard(), _exclusive(db) as conn:
        before = _revision(conn)
        if before != head() or revision != "head":
            command.upgrade(_config(conn), revision)
            conn.commit()
        after = _revision(conn)
    if before != after:
        log.info("database schema upgraded from %s to %s", before or "(none)", after)
    return before, after


def ensure(db: Database, migrate: bool) -> None:
    """At start: upgrade, or (migrate=False) refuse a database that is not at the newest schema."""
    if migrate:
        upgrade(db)
        return
    found, wanted = current(db), head()
    if found != wanted:
        raise SchemaOutdatedError(f"the database schema is at {found or 'no revision'}, this sigserve needs {wanted}: "
                                  "run `sigserve db upgrade` (or start with --database-migrate)")


def _revision(conn: sa.Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}).get_current_revision()


@contextlib.contextmanager
def _exclusive(db: Database) -> Iterator[sa.Connection]:
    """A connection while no other process migrates the same database."""
    with db.engine.connect() as conn:
        if db.is_postgres:
            conn.execute(sa.text("SELECT pg_advisory_lock(:id)"), {"id": _PG_LOCK_ID})
            conn.commit()  # the lock belongs to the session, not to this transaction
            try:
                yield conn
            finally:
                conn.rollback()
                conn.execute(sa.text("SELECT pg_advisory_unlock(:id)"), {"id": _PG_LOCK_ID})
                conn.commit()
            return
        database = db.url.database
        if not database or database == ":memory:":
            yield conn
            return
        fd = os.open(f"{database}.lock", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield conn
        finally:
            os.close(fd)  # releases the lock
