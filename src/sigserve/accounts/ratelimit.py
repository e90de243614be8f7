"""Per-key rate limits (requests/min, images/min) as OpenAI-style headers, and the throttle on
failed secret verifications.

Each key gets two token buckets: requests (capacity ``rpm``, refilled at ``rpm/60`` per second)
and images (capacity ``images_per_min``). A request is admitted only if both buckets can pay for
it, and then pays both; a refused request pays nothing. A single request with more images than the
bucket holds is admitted once the bucket is full and leaves it in debt, so it is slowed down
rather than refused forever.

Where the buckets live is one interface, :class:`Buckets`, with two implementations:
:class:`LocalBuckets` (this process's memory: one replica) and
:class:`sigserve.accounts.shared.RedisBuckets` (Redis, charged atomically by a Lua script: the
same limit whether one replica or ten serve the key). Both charge all the buckets of a request
or none, with the same arithmetic.

The image quota is not a rate: it is reserved in the usage database
(:meth:`sigserve.accounts.usage.UsageMeter.reserve`).

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
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

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


@dataclass(frozen=True)
class Charge:
    """`cost` tokens from the bucket `name`, which holds `capacity` and refills `capacity` per minute."""

    name: str
    capacity: int
    cost: int


@dataclass(frozen=True)
class Taken:
    """What charging a set of buckets did: all paid (`allowed`) or none; per bucket its state after,
    and how long until it could pay (0 when it can now)."""

    allowed: bool
    states: tuple[LimitState, ...]
    waits: tuple[float, ...]


class Buckets(Protocol):
    """Token buckets by name. `take` charges all or none atomically; `dry_run` only says whether
    it would pass; `give_back` returns tokens (capped at a full bucket)."""

    def take(self, charges: Sequence[Charge], dry_run: bool = False) -> Taken: ...

    def give_back(self, charges: Sequence[Charge]) -> None: ...

    def close(self) -> None: ...


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
        if cost <= 0:
            return 0.0
        need = min(cost, self.capacity) - self.tokens
        return max(need / self.rate, 0.0)

    def state(self) -> LimitState:
        return LimitState(limit=self.capacity, remaining=max(math.floor(self.tokens), 0),
                          reset_s=max((self.capacity - self.tokens) / self.rate, 0.0))


class LocalBuckets:
    """Buckets in this process's memory (one replica). Thread-safe; `clock` is injectable for tests.

    A bucket whose capacity changed (the key's limit was changed) starts again full. Buckets
    untouched for longer than they take to refill are dropped (they would be full anyway), so
    memory follows the active keys."""

    def __init__(self, clock=time.monotonic):
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, _Bucket] = {}
        self._next_sweep = 0.0

    def take(self, charges: Sequence[Charge], dry_run: bool = False) -> Taken:
        now = self._clock()
        with self._lock:
            self._sweep(now)
            buckets = [self._bucket(c, now) for c in charges]
            for bucket in buckets:
                bucket.refill(now)
            waits = tuple(b.wait_for(c.cost) for b, c in zip(buckets, charges))
            allowed = not any(waits)
            if allowed and not dry_run:
                for bucket, charge in zip(buckets, charges):
                    bucket.tokens -= charge.cost
            return Taken(allowed, tuple(b.state() for b in buckets), waits)

    def give_back(self, charges: Sequence[Charge]) -> None:
        now = self._clock()
        with self._lock:
            for charge in charges:
                bucket = self._bucket(charge, now)
                bucket.refill(now)
                bucket.tokens = min(bucket.capacity, bucket.tokens + charge.cost)

    def close(self) -> None:
        pass

    def _bucket(self, charge: Charge, now: float) -> _Bucket:
        bucket = self._buckets.get(charge.name)
        if bucket is None or bucket.capacity != charge.capacity:
            bucket = self._buckets[charge.name] = _Bucket(charge.capacity, now)
        return bucket

    def _sweep(self, now: float) -> None:
        if now < self._next_sweep:
            return
        self._next_sweep = now + 60.0
        for name in [n for n, b in self._buckets.items() if now - b.updated > (b.capacity - b.tokens) / b.rate]:
            del self._buckets[name]


class RateLimiter:
    """The per-key limits on a Buckets store (LocalBuckets unless given).

    A key's own `rpm` / `images_per_min` win; keys without them get the defaults (None: no limit).
    """

    def __init__(self, default_rpm: int | None = None, default_images_per_min: int | None = None,
                 clock=time.monotonic, buckets: Buckets | None = None):
        self.default_rpm = default_rpm
        self.default_images_per_min = default_images_per_min
        self.buckets: Buckets = buckets if buckets is not None else LocalBuckets(clock)

    def check(self, key: KeyRecord, images: int = 0) -> Decision:
        """Admit (and charge) one request with `images` images, or say why not."""
        names, charges = self._charges(key, images)
        if not charges:
            return Decision(allowed=True)
        taken = self.buckets.take(charges)
        states = dict(zip(names, taken.states))
        refused = [(name, wait) for name, wait in zip(names, taken.waits) if wait > 0]
        return Decision(
            allowed=taken.allowed,
            reason=refused[0][0] if refused else None,
            requests=states.get("requests"),
            images=states.get("images"),
            retry_after_s=max(wait for _, wait in refused) if refused else None,
        )

    def refund(self, key: KeyRecord, images: int = 0) -> None:
        """Give back what `check` charged (a request refused afterwards, say by its quota)."""
        _, charges = self._charges(key, images)
        if charges:
            self.buckets.give_back(charges)

    def close(self) -> None:
        self.buckets.close()

    def _charges(self, key: KeyRecord, images: int) -> tuple[list[str], list[Charge]]:
        limits = {"requests": (key.rpm or self.default_rpm, 1),
                  "images": (key.images_per_min or self.default_images_per_min, images)}
        names = [name for name, (limit, _) in limits.items() if limit]
        return names, [Charge(f"key:{key.id}:{name}", *limits[name]) for name in names]  # type: ignore[arg-type]


class AuthThrottle:
    """Failed secret verifications allowed per minute for each key id and each client address
    (a burst of `per_min`, then one every 60/per_min s); beyond, the store answers 429 before
    spending a scrypt. Checked before a verification and charged after a failure, so valid keys
    never pay; concurrent guesses can overshoot by the verifications already running."""

    def __init__(self, per_min: int, buckets: Buckets):
        self.per_min, self.buckets = per_min, buckets

    def _charges(self, key_id: str, client: str | None) -> list[Charge]:
        names = [f"authfail:id:{key_id}", *([f"authfail:ip:{client}"] if client else [])]
        return [Charge(name, self.per_min, 1) for name in names]

    def wait_s(self, key_id: str, client: str | None) -> float:
        taken = self.buckets.take(self._charges(key_id, client), dry_run=True)
        return 0.0 if taken.allowed else max(taken.waits)

    def failed(self, key_id: str, client: str | None) -> None:
        for charge in self._charges(key_id, client):  # each on its own: one being empty must not spare the other
            self.buckets.take([charge])


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
