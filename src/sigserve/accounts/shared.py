"""What replicas share through Redis (`--redis-url`): the token buckets and the notices of key changes.

RedisBuckets: the Buckets interface of ratelimit.py with the buckets in Redis hashes, refilled and
charged by one Lua script (atomic: all the buckets of a request or none, whatever the number of
replicas), timed by Redis's own clock so replicas' clocks need not agree. Each hash expires once
it would be full again, so Redis holds only the active keys.

When Redis cannot be reached (a timeout of `timeout_s`, then `cooldown_s` without trying), the
buckets follow `failure_mode`:

    local   (default) each replica falls back to its own in-memory buckets: limits still hold,
            per replica (N replicas allow up to N times a key's rate) until Redis returns;
    open    admit without rate limits;
    closed  refuse: RateLimiterUnavailableError (the server answers 503 rate_limiter_unavailable).

Every failure is counted (`on_error`, a Prometheus counter in the server) and logged loudly: once
when it starts, then at most once a minute, and once when Redis is back. Quotas do not depend on
Redis (they are reserved in the database).

KeyEvents: a key created, changed or revoked through any replica (or the CLI given --redis-url) is
published on a channel; every replica drops its cached copy of that key at once. Pub/sub delivers
at most once: after a reconnection a replica forgets every cached key, and the keys' refresh
interval (`--key-refresh-s`) stays the upper bound if a notice is lost.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Literal, get_args

from sigserve.accounts.ratelimit import Charge, LimitState, LocalBuckets, Taken
from sigserve.errors import SigserveError

log = logging.getLogger(__name__)

PREFIX = "sigserve:{rl}:"  # one hash tag: a Redis Cluster keeps every bucket of a script on one shard
CHANNEL = "sigserve:keys"
FailureMode = Literal["local", "open", "closed"]
FAILURE_MODES = get_args(FailureMode)

# KEYS: the buckets. ARGV: dry_run ("1"/"0"), op ("take"/"give"), then capacity, cost per bucket.
# Returns {allowed, tokens_1, wait_1, tokens_2, wait_2, ...} (numbers as strings: Lua floats
# would be truncated to integers in a Redis reply).
TOKEN_BUCKET_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local dry, give = ARGV[1] == '1', ARGV[2] == 'give'
local caps, costs, tokens, waits = {}, {}, {}, {}
local allowed = true
for i = 1, #KEYS do
  local cap, cost = tonumber(ARGV[1 + 2 * i]), tonumber(ARGV[2 + 2 * i])
  local rate = cap / 60.0
  local h = redis.call('HMGET', KEYS[i], 'tokens', 'updated', 'capacity')
  local tok, upd = tonumber(h[1]), tonumber(h[2])
  if tok == nil or tonumber(h[3]) ~= cap then tok, upd = cap, now end
  tok = math.min(cap, tok + math.max(now - upd, 0) * rate)
  local wait = 0
  if not give and cost > 0 then
    local need = math.min(cost, cap) - tok
    if need > 0 then wait, allowed = need / rate, false end
  end
  caps[i], costs[i], tokens[i], waits[i] = cap, cost, tok, wait
end
local out = {allowed and 1 or 0}
for i = 1, #KEYS do
  if give then tokens[i] = math.min(caps[i], tokens[i] + costs[i])
  elseif allowed and not dry then tokens[i] = tokens[i] - costs[i] end
  if not dry then
    redis.call('HSET', KEYS[i], 'tokens', tostring(tokens[i]), 'updated', tostring(now), 'capacity', caps[i])
    redis.call('PEXPIRE', KEYS[i], math.ceil((caps[i] - tokens[i]) / (caps[i] / 60.0) * 1000) + 1000)
  end
  out[#out + 1] = tostring(tokens[i])
  out[#out + 1] = tostring(waits[i])
end
return out
"""


class RateLimiterUnavailableError(SigserveError):
    """Redis is unreachable and the failure mode is "closed"."""


def redis_client(url: str, timeout_s: float, **options):
    """A Redis client that never waits longer than `timeout_s` and never retries by itself."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis.Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s,
                                retry=Retry(NoBackoff(), 0), **options)


class _Outage:
    """Logs an outage loudly but not once per request, and keeps Redis untried for `cooldown_s`."""

    def __init__(self, what: str, cooldown_s: float, on_error: Callable[[], None] | None, clock=time.monotonic):
        self.what, self.cooldown_s, self.on_error, self.clock = what, cooldown_s, on_error, clock
        self.down_until = 0.0
        self.down = False
        self.last_log = -1e9

    def skip(self) -> bool:
        return self.clock() < self.down_until

    def failed(self, exc: BaseException, consequence: str) -> None:
        now = self.clock()
        self.down_until = now + self.cooldown_s
        if self.on_error is not None:
            self.on_error()
        if not self.down or now - self.last_log >= 60:
            log.error("%s unreachable (%s): %s", self.what, exc, consequence)
            self.last_log = now
        self.down = True

    def ok(self) -> None:
        if self.down:
            log.warning("%s reachable again", self.what)
            self.down = False


class RedisBuckets:
    """Buckets in Redis (see the module docstring for `failure_mode`)."""

    def __init__(self, url: str, *, failure_mode: FailureMode = "local", timeout_s: float = 0.5, cooldown_s: float = 1.0,
                 on_error: Callable[[], None] | None = None, clock=time.monotonic):
        if failure_mode not in FAILURE_MODES:
            raise ValueError(f"failure_mode must be one of {FAILURE_MODES}")
        self.failure_mode = failure_mode
        self.client = redis_client(url, timeout_s)
        self._script = self.client.register_script(TOKEN_BUCKET_LUA)
        self._fallback = LocalBuckets(clock)
        self._outage = _Outage("Redis (rate limits)", cooldown_s, on_error, clock)
        self._lock = threading.Lock()

    def take(self, charges: Sequence[Charge], dry_run: bool = False) -> Taken:
        try:
            reply = self._run(charges, "take", dry_run)
        except (OSError, _redis_errors()) as exc:
            return self._degraded(exc, charges, dry_run)
        values = [float(v) for v in reply[1:]]
        tokens, waits = values[0::2], values[1::2]
        states = tuple(_state(c.capacity, tok) for c, tok in zip(charges, tokens))
        return Taken(bool(int(reply[0])), states, tuple(waits))

    def give_back(self, charges: Sequence[Charge]) -> None:
        try:
            self._run(charges, "give", False)
        except (OSError, _redis_errors()) as exc:
            if self.failure_mode == "local":
                self._fallback.give_back(charges)
            log.debug("could not give back tokens: %s", exc)

    def ping(self) -> bool:
        try:
            return bool(self.client.ping())
        except (OSError, _redis_errors()):
            return False

    def close(self) -> None:
        self.client.close()

    def _run(self, charges: Sequence[Charge], op: str, dry_run: bool) -> list:
        if self._outage.skip():
            raise ConnectionError("in the cool-down after a failure")
        args: list = ["1" if dry_run else "0", op]
        for c in charges:
            args += [c.capacity, c.cost]
        reply = self._script(keys=[PREFIX + c.name for c in charges], args=args)
        self._outage.ok()
        return reply

    def _degraded(self, exc: BaseException, charges: Sequence[Charge], dry_run: bool) -> Taken:
        if not (isinstance(exc, ConnectionError) and self._outage.skip()):  # a real attempt failed
            consequence = {"local": "rate limits now apply per replica", "open": "requests admitted WITHOUT rate limits",
                           "closed": "requests refused with 503"}[self.failure_mode]
            self._outage.failed(exc, consequence)
        if self.failure_mode == "local":
            return self._fallback.take(charges, dry_run)
        if self.failure_mode == "open":
            return Taken(True, (), ())
        raise RateLimiterUnavailableError("rate limiting is unavailable (Redis unreachable)") from exc


def _state(capacity: int, tokens: float) -> LimitState:
    return LimitState(limit=capacity, remaining=max(int(tokens // 1), 0),
                      reset_s=max((capacity - tokens) / (capacity / 60.0), 0.0))


def _redis_errors() -> type[Exception]:
    import redis

    return redis.exceptions.RedisError


class KeyEvents:
    """Publishes key changes and, with `listen(callback)`, hands every change seen (a key id, or
    None for "anything may have changed") to `callback` from a background thread."""

    def __init__(self, url: str, *, timeout_s: float = 0.5):
        self.url, self.timeout_s = url, timeout_s
        self.client = redis_client(url, timeout_s)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.connected = threading.Event()

    def publish(self, key_id: str) -> None:
        self.client.publish(CHANNEL, key_id)

    def listen(self, callback: Callable[[str | None], None]) -> None:
        self._thread = threading.Thread(target=self._loop, args=(callback,), name="sigserve-key-events", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self.client.close()

    def _loop(self, callback: Callable[[str | None], None]) -> None:
        outage = _Outage("Redis (key-change notices)", 1.0, None)
        while not self._stop.is_set():
            client = redis_client(self.url, self.timeout_s, health_check_interval=5)
            try:
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(CHANNEL)
                callback(None)  # (re)connected: notices may have been missed meanwhile
                self.connected.set()
                outage.ok()
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=0.5)
                    if message and message.get("type") == "message":
                        data = message["data"]
                        callback(data.decode() if isinstance(data, bytes) else str(data))
            except (OSError, _redis_errors()) as exc:
                self.connected.clear()
                outage.failed(exc, "key changes now reach this replica within --key-refresh-s")
                self._stop.wait(1.0)
            finally:
                client.close()
