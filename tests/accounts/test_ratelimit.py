"""RateLimiter: token buckets per key, quota refusals and the OpenAI-style headers."""

from __future__ import annotations

import pytest

from sigserve.accounts.keys import KeyRecord
from sigserve.accounts.ratelimit import Decision, RateLimiter, format_duration, rate_limit_headers


def key(**limits) -> KeyRecord:
    return KeyRecord(id=limits.pop("id", "k1"), name="test", **limits)


def test_requests_per_minute(clock):
    limiter = RateLimiter(clock=clock)
    k = key(rpm=3)
    remaining = [limiter.check(k).requests.remaining for _ in range(3)]
    assert remaining == [2, 1, 0]
    refused = limiter.check(k)
    assert not refused.allowed and refused.reason == "requests" and refused.status == 429
    assert refused.retry_after_s == pytest.approx(20.0)  # 3/min refills one every 20 s
    headers = rate_limit_headers(refused)
    assert headers == {"x-ratelimit-limit-requests": "3", "x-ratelimit-remaining-requests": "0",
                       "x-ratelimit-reset-requests": "1m0s", "retry-after": "20"}
    assert (refused.error_type, refused.error_code) == ("rate_limit_error", "rate_limit_exceeded")
    clock.advance(19.9)
    assert not limiter.check(k).allowed
    clock.advance(0.2)
    assert limiter.check(k).allowed


def test_images_per_minute_and_refusals_cost_nothing(clock):
    limiter = RateLimiter(clock=clock)
    k = key(rpm=100, images_per_min=10)
    ok = limiter.check(k, images=6)
    assert ok.allowed and ok.images.remaining == 4 and ok.requests.remaining == 99
    refused = limiter.check(k, images=6)
    assert not refused.allowed and refused.reason == "images"
    assert refused.retry_after_s == pytest.approx(12.0)  # 2 images at 10/60 per second
    assert refused.requests.remaining == 99 and refused.images.remaining == 4
    headers = rate_limit_headers(refused)
    assert headers["x-ratelimit-limit-images"] == "10"
    assert headers["x-ratelimit-remaining-images"] == "4"
    assert headers["x-ratelimit-reset-images"] == "36s"
    assert headers["retry-after"] == "12"
    assert limiter.check(k, images=4).allowed  # text-sized requests still pass meanwhile


def test_oversized_request_waits_for_a_full_bucket_then_goes_into_debt(clock):
    limiter = RateLimiter(clock=clock)
    k = key(images_per_min=10)
    assert limiter.check(k, images=15).allowed  # full bucket: admitted, 5 in debt
    refused = limiter.check(k, images=1)
    assert not refused.allowed and refused.retry_after_s == pytest.approx(36.0)
    assert refused.images.remaining == 0
    clock.advance(36.1)
    assert limiter.check(k, images=1).allowed


def test_a_quota_refusal_is_its_own_error_and_refunds_the_rate(clock):
    """The quota is reserved in the usage database (test_quota.py); what the limiter does for it:
    the refusal reads as insufficient_quota, and `refund` gives back what the request was charged."""
    limiter = RateLimiter(clock=clock)
    k = key(rpm=10, images_per_min=10, quota_images=5)
    assert limiter.check(k, images=3).allowed
    limiter.refund(k, images=3)
    after = limiter.check(k, images=0)
    assert after.requests.remaining == 9 and after.images.remaining == 10  # only this request is charged
    refused = Decision(False, "quota", quota_images=5, quota_remaining=2)
    assert refused.status == 429 and (refused.error_type, refused.error_code) == ("insufficient_quota",) * 2
    assert "quota" in refused.message and "2 left" in refused.message
    assert "retry-after" not in rate_limit_headers(refused)


def test_no_limits_means_no_headers_and_defaults_apply(clock):
    free = RateLimiter(clock=clock).check(key(), images=1000)
    assert free.allowed and rate_limit_headers(free) == {}
    limiter = RateLimiter(default_rpm=2, default_images_per_min=50, clock=clock)
    d = limiter.check(key(), images=1)
    assert (d.requests.limit, d.images.limit) == (2, 50)
    own = limiter.check(key(id="k2", rpm=7), images=1)
    assert own.requests.limit == 7


def test_keys_have_separate_buckets_and_limit_changes_apply(clock):
    limiter = RateLimiter(clock=clock)
    assert limiter.check(key(id="a", rpm=1)).allowed
    assert not limiter.check(key(id="a", rpm=1)).allowed
    assert limiter.check(key(id="b", rpm=1)).allowed
    assert limiter.check(key(id="a", rpm=5)).allowed  # raised limit: fresh bucket


def test_reset_headers_track_refill(clock):
    limiter = RateLimiter(clock=clock)
    k = key(rpm=60)
    limiter.check(k)
    clock.advance(0.25)
    d = limiter.check(k)  # 60/min: 1.75 spent, refills in 1.75 s
    assert rate_limit_headers(d)["x-ratelimit-reset-requests"] == "1.75s"


@pytest.mark.parametrize("seconds, text", [
    (0, "0s"), (0.0004, "1ms"), (0.25, "250ms"), (1, "1s"), (6.5, "6.5s"), (60, "1m0s"),
    (90, "1m30s"), (361.25, "6m1.25s"),
])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text
