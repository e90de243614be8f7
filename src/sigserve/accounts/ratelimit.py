"""Per-key rate limits (requests/min, images/min) and the image quota, as OpenAI-style headers.

Each key gets two token buckets, in process memory: requests (capacity ``rpm``, refilled at
``rpm/60`` per second) and images (capacity ``images_per_min``). A request is admitted only if
both buckets can pay for it, and then pays both; a refused request pays nothing. A single request
with more images than the bucket holds is admitted once the bucket is full and leaves it in debt,
so it is slowed down rather than refused forever.

With several replicas each one keeps its own buckets, so the effective limit is per replica
(N replicas allow up to N times the rate). The quota is global: it compares the all-time image
count stored by :class:`sigserve.accounts.usage.UsageMeter` with the key's ``quota_images``; the
check and the recording are not one transaction, so concurrent requests can overshoot the quota
by at most the requests in flight. The quota counts images only; text-only requests pass.

Headers (:func:`rate_limit_headers`), following OpenAI's names with ``images`` standing where
OpenAI has ``tokens``; only the limits the key has are sent::

    x-ratelimit-limit-requests      rpm
    x-ratelimit-remaining-requests  whole requests left now
    x-ratelimit-reset-requests      time until the bucket is full again, like "1s", "250ms", "1m30s"
    x-ratelimit-limit-images / x-ratelimit-remaining-images / x-ratelimit-reset-images
    retry-after                     whole seconds, on a refusal by rate (not on quota)
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

from sigserve.accounts.keys import KeyRecord


@dataclass(frozen=True)
class LimitState:
    """One limit as the headers show it."""

    limit: int
    remaining: int
    reset_s: float  # seconds until the bucket is full again


@dataclass(frozen=True)
class Decision:
    """The answer for one request. `reason`: None, "requests", "images" or "quota"."""

    allowed: bool
    reason: str | None = None
    requests: LimitState | None = None
    images: LimitState | None = None
    retry_after_s: float | None = None
    quota_images: int | None = None
    quota_remaining: int | None = None

    @property
    def status(self) -> int:
        return 200 if self.allowed else 429

    @property
    def error_type(self) -> str | None:
        if self.allowed:
            return None
        return "insufficient_quota" if self.reason == "quota" else "rate_limit_error"

    @property
    def error_code(self) -> str | None:
        if self.allowed:
            return None
        return "insufficient_quota" if self.reason == "quota" else "rate_limit_exceeded"

    @property
    def message(self) -> str | None:
        if self.allowed:
            return None
        if self.reason == "quota":
            return (f"Image quota exhausted: this key may embed {self.quota_images} images "
                    f"and has {self.quota_remaining} left.")
        state = self.requests if self.reason == "requests" else self.images
        unit = "requests" if self.reason == "requests" else "images"
        assert state is not None  # a refusal by rate names a limit the key has
        return (f"Rate limit reached: {state.limit} {unit} per minute. "
                f"Retry in {format_duration(self.retry_after_s or 0)}.")


class _Bucket:
    def __init__(self, capacity: int, now: float):
        self.capacity = capacity
        self.rate = capacity / 60.0  # tokens per second
        self.tokens = float(capacity)
        self.updated = now

    def refill(self, now: float) -> None:
        elapsed = max(now - self.updated, 0.0)
        self.tokens = min(self.capacity, self.tokens + elapsed * self.rate)
        self.updated = now

    def wait_for(self, cost: int) -> float:
        """Seconds until `cost` tokens (at most a full bucket) are available; 0 if now."""
        need = min(cost, self.capacity) - self.tokens
        return max(need / self.rate, 0.0)

    def state(self) -> LimitState:
        return LimitState(limit=self.capacity, remaining=max(math.floor(self.tokens), 0),
                          reset_s=max((self.capacity - self.tokens) / self.rate, 0.0))


class RateLimiter:
    """Token buckets per key id. Thread-safe; `clock` is injectable for tests.

    A key's own `rpm` / `images_per_min` win; keys without them get the defaults (None: no limit).
    """

    def __init__(self, default_rpm: int | None = None,
                 default_images_per_min: int | None = None, clock=time.monotonic):
        self.default_rpm = default_rpm
        self.default_images_per_min = default_images_per_min
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[tuple[str, str], _Bucket] = {}

    def check(self, key: KeyRecord, images: int = 0, images_used: int | None = None) -> Decision:
        """Admit (and charge) one request with `images` images, or say why not.

        `images_used`: the key's all-time images (UsageMeter.images_used); None skips the
        quota check."""
        quota, remaining = key.quota_images, None
        if quota is not None and images_used is not None:
            remaining = max(quota - images_used, 0)
            if images > remaining:
                return Decision(False, "quota", quota_images=quota, quota_remaining=remaining)
        now = self._clock()
        with self._lock:
            buckets = self._buckets_for(key, now)
            costs = {"requests": 1, "images": images}
            for bucket in buckets.values():
                bucket.refill(now)
            waits = {name: b.wait_for(costs[name]) for name, b in buckets.items() if costs[name]}
            refused = [name for name, wait in waits.items() if wait > 0]
            if not refused:
                for name, bucket in buckets.items():
                    bucket.tokens -= costs[name]
            states = {name: bucket.state() for name, bucket in buckets.items()}
        return Decision(
            allowed=not refused,
            reason=refused[0] if refused else None,
            requests=states.get("requests"),
            images=states.get("images"),
            retry_after_s=max(waits[name] for name in refused) if refused else None,
            quota_images=quota,
            quota_remaining=None if remaining is None else
            (remaining - images if not refused else remaining),
        )

    def _buckets_for(self, key: KeyRecord, now: float) -> dict[str, _Bucket]:
        limits = {"requests": key.rpm or self.default_rpm,
                  "images": key.images_per_min or self.default_images_per_min}
        out = {}
        for name, limit in limits.items():
            slot = (key.id, name)
            if not limit:
                self._buckets.pop(slot, None)
                continue
            bucket = self._buckets.get(slot)
            if bucket is None or bucket.capacity != limit:  # new key or its limit changed
                bucket = self._buckets[slot] = _Bucket(limit, now)
            out[name] = bucket
        return out


def format_duration(seconds: float) -> str:
    """OpenAI's reset format: "250ms", "1s", "6.5s", "1m30s"."""
    if seconds <= 0:
        return "0s"
    if seconds < 1:
        return f"{max(round(seconds * 1000), 1)}ms"
    minutes, rest = divmod(round(seconds, 3), 60)
    text = f"{rest:.3f}".rstrip("0").rstrip(".") + "s"
    return f"{int(minutes)}m{text}" if minutes else text


def rate_limit_headers(decision: Decision) -> dict[str, str]:
    """The x-ratelimit-* headers (and retry-after on a rate refusal) for a response."""
    headers = {}
    for name, state in (("requests", decision.requests), ("images", decision.images)):
        if state is not None:
            headers[f"x-ratelimit-limit-{name}"] = str(state.limit)
            headers[f"x-ratelimit-remaining-{name}"] = str(state.remaining)
            headers[f"x-ratelimit-reset-{name}"] = format_duration(state.reset_s)
    if not decision.allowed and decision.retry_after_s is not None:
        headers["retry-after"] = str(max(math.ceil(decision.retry_after_s), 1))
    return headers
