"""A usage database made before collections (no `searches` column) is migrated in place."""

from __future__ import annotations

import sqlalchemy as sa

from sigserve.accounts.keys import KeyStore
from sigserve.accounts.usage import UsageMeter


def test_old_usage_table_gets_the_searches_column(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:  # the table as it was before collections
        conn.execute(sa.text("CREATE TABLE sigserve_usage_daily (key_id VARCHAR(64) NOT NULL, day VARCHAR(10) NOT NULL, "
                             "requests BIGINT NOT NULL, images BIGINT NOT NULL, patches BIGINT NOT NULL, "
                             "text_tokens BIGINT NOT NULL, cost FLOAT NOT NULL, PRIMARY KEY (key_id, day))"))
        conn.execute(sa.text("INSERT INTO sigserve_usage_daily VALUES ('k', '2025-01-01', 5, 7, 0, 0, 0.0)"))
    engine.dispose()
    store = KeyStore(url)
    meter = UsageMeter(store)
    meter.record("k", searches=1)
    meter.record("k", searches=1, images=2)
    totals = meter.usage_for("k")["totals"]
    assert (totals["requests"], totals["images"], totals["searches"]) == (7, 9, 2)
    UsageMeter(store)  # a second start finds the column and leaves it
    store.close()


def test_usage_is_kept_per_model_and_an_old_table_is_rebuilt_with_the_model_in_its_key(tmp_path):
    """Usage rows are per (key, day, model), each request costed at its model's prices; a table made
    before (primary key key_id, day) is rebuilt with its rows under model "" and keeps counting."""
    url = f"sqlite:///{tmp_path / 'before-models.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE sigserve_usage_daily (key_id VARCHAR(64) NOT NULL, day VARCHAR(10) NOT NULL, "
                             "requests BIGINT NOT NULL, images BIGINT NOT NULL, patches BIGINT NOT NULL, "
                             "text_tokens BIGINT NOT NULL, cost FLOAT NOT NULL, searches BIGINT NOT NULL DEFAULT 0, "
                             "PRIMARY KEY (key_id, day))"))
        conn.execute(sa.text("INSERT INTO sigserve_usage_daily VALUES ('k', '2025-01-01', 5, 7, 0, 0, 0.5, 0)"))
    engine.dispose()
    store = KeyStore(url)
    meter = UsageMeter(store, price_per_1k_images=1.0)
    assert meter.record("k", model="a", images=2) == 2 / 1000
    assert meter.record("k", model="b", images=3, prices=(10.0, 0.0)) == 30 / 1000
    meter.record("k", model="a", images=1)
    usage = meter.usage_for("k")
    assert usage["totals"]["images"] == 13 and usage["totals"]["requests"] == 8
    assert {m: (u["requests"], u["images"]) for m, u in usage["models"].items()} == {"": (5, 7), "a": (2, 3), "b": (1, 3)}
    assert usage["models"]["b"]["cost"] == 30 / 1000
    [today] = usage["daily"]  # the 2025 row is older than the listed days; today's two models in one entry
    assert today["images"] == 6 and set(today["models"]) == {"a", "b"}
    assert meter.images_used("k") == 13  # quotas count every model
    columns = {c["name"]: c for c in sa.inspect(store.db).get_columns("sigserve_usage_daily")}
    assert columns["model"]["primary_key"]
    UsageMeter(store)  # a second start finds the new table and leaves it
    store.close()
