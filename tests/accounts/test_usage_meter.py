"""UsageMeter: counters per key and UTC day, persisted per request, reported OpenRouter-style."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import threading

import pytest

from sigserve.accounts.keys import KeyStore
from sigserve.accounts.usage import UsageMeter


def _epoch(day: str, hour: int = 12) -> float:
    return dt.datetime.fromisoformat(f"{day}T{hour:02d}:00:00+00:00").timestamp()


class Day:
    """A settable `now` for the meter."""

    def __init__(self, day: str):
        self.t = _epoch(day)

    def set(self, day: str) -> None:
        self.t = _epoch(day)

    def __call__(self) -> float:
        return self.t


def test_record_and_totals(store):
    meter = UsageMeter(store, price_per_1k_images=2.0, price_per_1m_tokens=10.0)
    key, _ = store.create("alice")
    assert meter.record(key.id, images=3, patches=768) == pytest.approx(0.006)
    meter.record(key.id, text_tokens=1000)
    totals = meter.usage_for(key.id)["totals"]
    assert totals == {"requests": 2, "images": 3, "patches": 768, "text_tokens": 1000,
                      "cost": pytest.approx(0.006 + 0.01), "searches": 0}
    assert meter.images_used(key.id) == 3
    assert meter.images_used("someone-else") == 0


def test_daily_buckets(store):
    now = Day("2025-03-05")
    meter = UsageMeter(store, price_per_1k_images=1.0, now=now)
    meter.record("k", images=1)
    now.set("2025-03-06")
    meter.record("k", images=2)
    meter.record("k", images=4)
    daily = meter.usage_for("k")["daily"]
    assert [(d["date"], d["requests"], d["images"]) for d in daily] == [
        ("2025-03-05", 1, 1), ("2025-03-06", 2, 6)]
    assert [d["date"] for d in meter.usage_for("k", days=1)["daily"]] == ["2025-03-06"]


def test_usage_persists_across_restart(db_url):
    first = KeyStore(db_url)
    key, _ = first.create("alice")
    UsageMeter(first).record(key.id, images=7, patches=100, text_tokens=5)
    first.close()
    second = KeyStore(db_url)
    assert UsageMeter(second).usage_for(key.id)["totals"]["images"] == 7
    second.close()


def test_usage_survives_a_crash(db_url):
    # A separate process records two requests and dies without closing anything.
    script = (
        "import os, sys\n"
        "from sigserve.accounts.keys import KeyStore\n"
        "from sigserve.accounts.usage import UsageMeter\n"
        "meter = UsageMeter(KeyStore(sys.argv[1]))\n"
        "meter.record('crashy', images=2)\n"
        "meter.record('crashy', images=3, text_tokens=9)\n"
        "os._exit(0)\n"
    )
    subprocess.run([sys.executable, "-c", script, db_url], check=True, timeout=60)
    store = KeyStore(db_url)
    totals = UsageMeter(store).usage_for("crashy")["totals"]
    assert (totals["requests"], totals["images"], totals["text_tokens"]) == (2, 5, 9)
    store.close()


def test_concurrent_records_are_all_counted(store):
    meter = UsageMeter(store)

    def work():
        for _ in range(15):
            meter.record("busy", images=1)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    totals = meter.usage_for("busy")["totals"]
    assert (totals["requests"], totals["images"]) == (90, 90)


def test_usage_response_for_a_user(store):
    now = Day("2025-03-12")  # a Wednesday
    meter = UsageMeter(store, price_per_1k_images=1000.0, now=now)  # 1.0 per image
    key, _ = store.create("alice", rpm=10, quota_images=10)
    other, _ = store.create("bob")
    now.set("2025-02-28")
    meter.record(key.id, images=1)  # last month
    now.set("2025-03-10")
    meter.record(key.id, images=2)  # this month, Monday of this week
    now.set("2025-03-09")
    meter.record(key.id, images=4)  # this month, last week (Sunday)
    now.set("2025-03-12")
    meter.record(key.id, images=1, patches=9)  # today
    meter.record(other.id, images=50)
    body = meter.usage_response(store.get(key.id))
    data = body["data"]
    assert "keys" not in body and "total" not in body
    assert data["label"] == "alice" and data["key_id"] == key.id
    assert data["usage"] == pytest.approx(8.0)
    assert data["usage_daily"] == pytest.approx(1.0)
    assert data["usage_weekly"] == pytest.approx(3.0)
    assert data["usage_monthly"] == pytest.approx(7.0)
    assert (data["limit"], data["limit_remaining"], data["limit_unit"]) == (10, 2, "images")
    assert (data["requests"], data["images"], data["patches"]) == (4, 8, 9)
    assert data["rate_limit"] == {"requests_per_minute": 10, "images_per_minute": None}
    today = {"requests": 1, "images": 1, "patches": 9, "text_tokens": 0, "cost": pytest.approx(1.0), "searches": 0}
    assert data["daily"][-1] == {"date": "2025-03-12", **today, "models": {"": today}}  # recorded under no model name


def test_usage_response_for_an_admin(store):
    meter = UsageMeter(store, price_per_1k_images=1.0)
    admin, _ = store.create("root", admin=True)
    alice, _ = store.create("alice")
    meter.record(alice.id, images=3)
    meter.record("static", images=1)
    body = meter.usage_response(store.get(admin.id))
    assert body["data"]["key_id"] == admin.id and body["data"]["images"] == 0
    by_id = {e["key_id"]: e for e in body["keys"]}
    assert set(by_id) == {admin.id, alice.id, "static"}
    assert by_id[alice.id]["label"] == "alice" and by_id[alice.id]["images"] == 3
    assert body["total"]["images"] == 4 and body["total"]["requests"] == 2
    assert body["total"]["cost"] == pytest.approx(0.004)
