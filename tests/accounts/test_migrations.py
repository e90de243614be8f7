"""Schema migrations on SQLite and on a real PostgreSQL: from an empty database, and from the schema
sigserve created before migrations existed, with its data (nothing lost); the upgraded schema is
exactly the one the code queries (schema.py); replicas starting together migrate once."""

from __future__ import annotations

import os
import threading

import pytest
import sqlalchemy as sa

from sigserve.accounts import migrate
from sigserve.accounts.db import Database
from sigserve.accounts.keys import KeyStore, _hash_secret
from sigserve.accounts.schema import metadata
from sigserve.accounts.usage import UsageMeter

# The tables exactly as sigserve 0.1 made them (metadata.create_all in keys.py and usage.py), frozen here.
OLD = sa.MetaData()
sa.Table("sigserve_api_keys", OLD,
         sa.Column("id", sa.String(32), primary_key=True), sa.Column("name", sa.String(200), nullable=False, index=True),
         sa.Column("salt", sa.LargeBinary(32), nullable=False), sa.Column("hash", sa.LargeBinary(64), nullable=False),
         sa.Column("rpm", sa.Integer), sa.Column("images_per_min", sa.Integer),
         sa.Column("quota_images", sa.BigInteger), sa.Column("admin", sa.Boolean, nullable=False),
         sa.Column("created_at", sa.Float, nullable=False), sa.Column("revoked_at", sa.Float))
sa.Table("sigserve_usage_daily", OLD,
         sa.Column("key_id", sa.String(64), primary_key=True), sa.Column("day", sa.String(10), primary_key=True),
         *[sa.Column(name, sa.BigInteger, nullable=False) for name in ("requests", "images", "patches", "text_tokens")],
         sa.Column("cost", sa.Float, nullable=False))

SECRET = "s" * 43
PLAINTEXT = f"sk-sig-0123456789ab-{SECRET}"


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'sigserve.db'}"
    return request.getfixturevalue("postgres_url")


def _schema_diff(db: Database) -> list:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    with db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"version_table": migrate.VERSION_TABLE})
        return compare_metadata(context, metadata)


def test_from_empty(url):
    db = Database(url)
    assert migrate.current(db) is None
    assert migrate.upgrade(db) == (None, migrate.head())
    assert migrate.upgrade(db) == (migrate.head(), migrate.head())  # again: nothing to do
    assert _schema_diff(db) == []
    db.dispose()


def test_from_the_pre_migration_schema_with_data(url):
    engine = sa.create_engine(url)
    OLD.create_all(engine)
    salt = os.urandom(16)
    with engine.begin() as conn:
        conn.execute(OLD.tables["sigserve_api_keys"].insert(), [
            dict(id="0123456789ab", name="alice", salt=salt, hash=_hash_secret(SECRET, salt, 2**14), rpm=60,
                 images_per_min=None, quota_images=1000, admin=False, created_at=1.0, revoked_at=None),
            dict(id="ba9876543210", name="gone", salt=salt, hash=b"x" * 32, rpm=None, images_per_min=None,
                 quota_images=None, admin=True, created_at=2.0, revoked_at=3.0)])
        conn.execute(OLD.tables["sigserve_usage_daily"].insert(), [
            dict(key_id="0123456789ab", day="2025-01-01", requests=3, images=7, patches=1792, text_tokens=11, cost=0.5),
            dict(key_id="0123456789ab", day="2025-01-02", requests=1, images=2, patches=512, text_tokens=0, cost=0.25),
            dict(key_id="static", day="2025-01-02", requests=4, images=0, patches=0, text_tokens=40, cost=0.0)])
    engine.dispose()

    store = KeyStore(url)  # opening the store upgrades it
    assert migrate.current(store.database) == migrate.head()
    assert _schema_diff(store.database) == []
    record = store.authenticate(PLAINTEXT)
    assert record is not None and (record.name, record.rpm, record.quota_images) == ("alice", 60, 1000)
    assert [(k.name, k.active, k.admin) for k in store.list()] == [("alice", True, False), ("gone", False, True)]
    meter = UsageMeter(store)
    assert meter.usage_for("0123456789ab", days=100_000)["totals"] == {
        "requests": 4, "images": 9, "patches": 2304, "text_tokens": 11, "cost": pytest.approx(0.75),
        "searches": 0}
    assert meter.usage_for("static", days=100_000)["totals"]["text_tokens"] == 40
    assert meter.images_used("0123456789ab") == 9  # the quota counts the old usage
    meter.record("0123456789ab", images=1)  # and new usage adds to it
    assert meter.images_used("0123456789ab") == 10
    store.close()


def test_refuses_an_old_schema_when_told_not_to_migrate(url):
    from sigserve.accounts.migrate import SchemaOutdatedError

    engine = sa.create_engine(url)
    OLD.create_all(engine)
    engine.dispose()
    with pytest.raises(SchemaOutdatedError, match="sigserve db upgrade"):
        KeyStore(url, migrate=False)
    KeyStore(url).close()  # migrating (the default) fixes it
    KeyStore(url, migrate=False).close()


def test_replicas_starting_together_migrate_once(url):
    """Four stores opening an empty database at once: no error, one history."""
    errors: list[BaseException] = []

    def open_store():
        try:
            KeyStore(url).close()
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    db = Database(url)
    with db.engine.connect() as conn:
        versions = conn.execute(sa.text(f"SELECT version_num FROM {migrate.VERSION_TABLE}")).all()
    assert [v[0] for v in versions] == [migrate.head()]
    db.dispose()


def test_db_upgrade_command(tmp_path):
    from typer.testing import CliRunner

    from sigserve.cli import build_app

    runner = CliRunner()
    first = runner.invoke(build_app(), ["db", "upgrade", "--data-dir", str(tmp_path)])
    assert first.exit_code == 0 and f"schema at {migrate.head()}" in first.output, first.output
    again = runner.invoke(build_app(), ["db", "current", "--data-dir", str(tmp_path)])
    assert again.exit_code == 0 and f"database: {migrate.head()}; newest: {migrate.head()}" in again.output


def test_from_a_database_whose_searches_column_was_added_in_place(url):
    """Before migrations, the collections code added `searches` at start (ALTER TABLE ... DEFAULT 0):
    migration 0003 keeps that column and its counts."""
    engine = sa.create_engine(url)
    OLD.create_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE sigserve_usage_daily ADD COLUMN searches BIGINT NOT NULL DEFAULT 0"))
        conn.execute(sa.text("INSERT INTO sigserve_usage_daily VALUES ('k', '2025-01-01', 5, 0, 0, 0, 0.0, 3)"))
    engine.dispose()
    store = KeyStore(url)
    assert migrate.current(store.database) == migrate.head() and _schema_diff(store.database) == []
    meter = UsageMeter(store)
    meter.record("k", searches=2)
    totals = meter.usage_for("k", days=100_000)["totals"]
    assert (totals["requests"], totals["searches"]) == (6, 5)
    store.close()
