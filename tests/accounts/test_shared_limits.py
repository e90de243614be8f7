"""Rate limits shared through Redis: the same arithmetic as the in-process buckets (one interface,
two implementations, the same tests), atomic under concurrency, the documented behaviour when
Redis is down; and key changes announced to other replicas through Redis."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from sigserve.accounts.keys import KeyRecord, KeyStore
from sigserve.accounts.ratelimit import Charge, LocalBuckets, RateLimiter
from sigserve.accounts.shared import RateLimiterUnavailableError, RedisBuckets


@pytest.fixture(params=["local", "redis"])
def buckets(request):
    if request.param == "local":
        yield LocalBuckets()
        return
    b = RedisBuckets(request.getfixturevalue("redis_url"))
    yield b
    b.close()


def key(**limits) -> KeyRecord:
    return KeyRecord(id=limits.pop("id", "k1"), name="test", **limits)


def test_same_semantics_on_both(buckets):
    limiter = RateLimiter(buckets=buckets)
    k = key(rpm=3, images_per_min=10)
    first = limiter.check(k, images=6)
    assert first.allowed and first.requests.remaining == 2 and first.images.remaining == 4
    assert first.requests.limit == 3 and first.images.limit == 10
    refused = limiter.check(k, images=6)  # images short: refused, and nothing paid
    assert not refused.allowed and refused.reason == "images"
    assert refused.retry_after_s == pytest.approx(12.0, abs=0.1)  # 2 images at 10/60 per second
    assert refused.requests.remaining == 2 and refused.images.remaining == 4
    assert limiter.check(k, images=4).allowed
    assert limiter.check(k).allowed
    last = limiter.check(k)
    assert not last.allowed and last.reason == "requests" and last.retry_after_s == pytest.approx(20.0, abs=0.1)
    limiter.refund(k)  # given back: one more passes
    assert limiter.check(k).allowed


def test_debt_and_changed_limits_on_both(buckets):
    limiter = RateLimiter(buckets=buckets)
    assert limiter.check(key(id="big", images_per_min=10), images=15).allowed  # a full bucket admits, 5 in debt
    debt = limiter.check(key(id="big", images_per_min=10), images=1)
    assert not debt.allowed and debt.retry_after_s == pytest.approx(36.0, abs=0.1)
    assert limiter.check(key(id="big", images_per_min=20), images=1).allowed  # limit changed: a fresh bucket


def test_dry_run_takes_nothing(buckets):
    charge = [Charge("dry", 2, 1)]
    for _ in range(5):
        assert buckets.take(charge, dry_run=True).allowed
    assert buckets.take(charge).allowed and buckets.take(charge).allowed
    assert not buckets.take(charge, dry_run=True).allowed


def test_redis_charges_atomically_across_clients(redis_url):
    """Eight clients (as eight replicas would) race 200 requests for a 25-per-minute key."""
    clients = [RateLimiter(buckets=RedisBuckets(redis_url)) for _ in range(8)]
    k = key(id="shared", rpm=25)

    def one(i):
        return clients[i % 8].check(k).allowed

    with ThreadPoolExecutor(16) as pool:
        allowed = sum(pool.map(one, range(200)))
    # 25 at once, plus what refills while the 200 run (25/min: well under one in this time)
    assert 25 <= allowed <= 26, allowed


def test_in_process_buckets_do_not_share(redis_url):
    """Why Redis: two replicas with their own buckets give a key twice its limit."""
    k = key(id="twice", rpm=5)
    local = [RateLimiter(), RateLimiter()]
    assert sum(local[i % 2].check(k).allowed for i in range(20)) == 10
    shared = [RateLimiter(buckets=RedisBuckets(redis_url)) for _ in range(2)]
    assert sum(shared[i % 2].check(k).allowed for i in range(20)) == 5


@pytest.mark.parametrize("mode", ["local", "open", "closed"])
def test_redis_down(mode):
    """Documented failure modes, each counted (the metric) and bounded in time."""
    from tests.support.services import Redis, ServiceUnavailable

    try:
        redis = Redis().__enter__()
    except ServiceUnavailable as exc:
        pytest.skip(f"SERVICE UNAVAILABLE: {exc}")
    errors: list[int] = []
    buckets = RedisBuckets(redis.url, failure_mode=mode, on_error=lambda: errors.append(1))  # type: ignore[arg-type]
    limiter = RateLimiter(buckets=buckets)
    k = key(id="down", rpm=2)
    assert limiter.check(k).allowed
    redis.__exit__(None, None, None)
    started = time.monotonic()
    if mode == "closed":
        with pytest.raises(RateLimiterUnavailableError):
            limiter.check(k)
    else:
        results = [limiter.check(k) for _ in range(5)]
        allowed = sum(r.allowed for r in results)
        assert allowed == (2 if mode == "local" else 5)  # local: this replica's own 2/min; open: no limit
    assert time.monotonic() - started < 2.0  # one connection attempt, then the cool-down answers at once
    assert errors  # counted
    buckets.close()


def test_key_changes_reach_another_replica_through_redis(redis_url, tmp_path):
    """Two stores (two replicas) with a 60 s refresh: without the notice, the other would use its
    cached row for up to a minute; with it, a revocation and a limit change apply within a second."""
    from sigserve.accounts.shared import KeyEvents

    url = f"sqlite:///{tmp_path / 'k.db'}"
    stores, events = [], []
    for _ in range(2):
        ev = KeyEvents(redis_url)
        store = KeyStore(url, refresh_s=60, events=ev)
        ev.listen(store.forget)
        assert ev.connected.wait(5)
        stores.append(store)
        events.append(ev)
    one, other = stores
    record, secret = one.create("moving", rpm=5)
    assert other.authenticate(secret).rpm == 5  # cached for 60 s from here
    one.update(record.id, rpm=7)
    assert _within(1.0, lambda: other.authenticate(secret).rpm == 7)
    one.revoke(record.id)
    assert _within(1.0, lambda: other.authenticate(secret) is None)
    for ev, store in zip(events, stores):
        ev.close()
        store.close()


def test_without_redis_changes_apply_within_the_refresh(tmp_path):
    url = f"sqlite:///{tmp_path / 'k.db'}"
    one, other = KeyStore(url), KeyStore(url, refresh_s=0.5)
    record, secret = one.create("moving", rpm=5)
    assert other.authenticate(secret) is not None
    one.revoke(record.id)
    assert _within(0.5 + 0.3, lambda: other.authenticate(secret) is None)
    one.close()
    other.close()


def _within(seconds: float, condition) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def test_auth_throttle_is_shared_too(redis_url):
    """Guesses spread over replicas count once: the failed-attempt buckets live in Redis as well."""
    from sigserve.accounts.ratelimit import AuthThrottle

    throttles = [AuthThrottle(3, RedisBuckets(redis_url)) for _ in range(2)]
    for i in range(3):
        assert throttles[i % 2].wait_s("abc", "10.0.0.1") == 0
        throttles[i % 2].failed("abc", "10.0.0.1")
    assert throttles[0].wait_s("abc", "10.0.0.1") > 0 and throttles[1].wait_s("abc", "10.0.0.9") > 0  # by key id
    assert throttles[1].wait_s("other", "10.0.0.1") > 0  # by client
    assert throttles[1].wait_s("other", "10.0.0.9") == 0
