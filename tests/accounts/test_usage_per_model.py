"""Usage per (key, day, model) on SQLite and PostgreSQL: each request costed at its model's prices, totals
and days broken down by model, quotas counting every model; a database from before (rows keyed by key and
day) is upgraded by migration 0004 with its rows under model "", and 0004's downgrade sums them back."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from sigserve.accounts import migrate
from sigserve.accounts.keys import KeyStore
from sigserve.accounts.usage import UsageMeter


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'sigserve.db'}"
    return request.getfixturevalue("postgres_url")


def _downgrade(store: KeyStore, revision: str) -> None:
    from alembic import command

    with store.db.connect() as conn:
        command.downgrade(migrate._config(conn), revision)
        conn.commit()


def _before_models(url: str) -> None:
    """The database as migration 0003 left it, with a day of usage."""
    store = KeyStore(url)
    _downgrade(store, "0003")
    with store.db.begin() as conn:
        conn.execute(sa.text("DELETE FROM sigserve_usage_daily"))
        conn.execute(sa.text("INSERT INTO sigserve_usage_daily (key_id, day, requests, images, patches, text_tokens, "
                             "cost, searches) VALUES ('k', '2025-01-01', 5, 7, 0, 0, 0.5, 0)"))
    store.close()


def test_usage_per_model_after_the_upgrade(url):
    _before_models(url)
    store = KeyStore(url)  # opening the store upgrades it
    assert migrate.current(store.database) == migrate.head()
    meter = UsageMeter(store, price_per_1k_images=1.0)
    assert meter.record("k", model="a", images=2) == 2 / 1000
    assert meter.record("k", model="b", images=3, prices=(10.0, 0.0)) == 30 / 1000
    meter.record("k", model="a", images=1)
    usage = meter.usage_for("k")
    assert usage["totals"]["images"] == 13 and usage["totals"]["requests"] == 8
    assert {m: (u["requests"], u["images"]) for m, u in usage["models"].items()} == {"": (5, 7), "a": (2, 3), "b": (1, 3)}
    assert usage["models"]["b"]["cost"] == pytest.approx(30 / 1000)
    [today] = usage["daily"]  # the 2025 row is older than the listed days; today's two models in one entry
    assert today["images"] == 6 and set(today["models"]) == {"a", "b"}
    assert meter.images_used("k") == 13  # quotas count every model
    assert {(r["model"], r["images"]) for r in meter.daily_rows("k")} == {("", 7), ("a", 3), ("b", 3)}
    store.close()


def test_the_downgrade_sums_each_day_over_its_models(url):
    store = KeyStore(url)
    meter = UsageMeter(store)
    meter.record("k", model="a", images=2)
    meter.record("k", model="b", images=3)
    _downgrade(store, "0003")
    with store.db.connect() as conn:
        rows = conn.execute(sa.text("SELECT key_id, images, requests FROM sigserve_usage_daily")).all()
    assert [tuple(r) for r in rows] == [("k", 5, 2)]
    store.close()
