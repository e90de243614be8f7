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
