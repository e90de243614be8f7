"""Who may call, how often, and what they used: sigserve.accounts' KeyStore, rate limits (in this
process, or shared through Redis) and UsageMeter behind the calls the routes make. Database and
Redis work runs in threads, never on the event loop.

A request's life: `authorize` (the key; failed guesses throttled per key id and client address),
`admit` (charge the rate limits, then reserve the images against the key's quota), the work,
then `record` (usage added and reservation dropped in one transaction) or, if the work failed,
`release` (the reserved images given back; the rate charge stays: the attempt happened)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from fastapi import Request

from sigserve.accounts.db import DatabaseUnavailableError
from sigserve.accounts.keys import AuthError, KeyRecord, KeyStore, bearer_token
from sigserve.accounts.ratelimit import AuthThrottle, Buckets, Decision, LocalBuckets, RateLimiter, rate_limit_headers
from sigserve.accounts.shared import KeyEvents, RateLimiterUnavailableError, RedisBuckets
from sigserve.accounts.usage import QuotaRefusal, Reservation, UsageMeter
from sigserve.server.errors import APIError
from sigserve.server.metrics import Metrics
from sigserve.server.schemas import Usage
from sigserve.server.settings import Settings

log = logging.getLogger(__name__)
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
RESERVATION_MARGIN_S = 300.0  # a reservation outlives the longest request by this much


@dataclass(frozen=True)
class Admission:
    """What `admit` granted: the x-ratelimit headers, and the quota reservation (None without quota)."""

    headers: dict[str, str]
    reservation: Reservation | None = None


class Access:
    def __init__(self, store: KeyStore, limiter: RateLimiter, meter: UsageMeter, events: KeyEvents | None = None):
        self.store = store
        self.limiter = limiter
        self.meter = meter
        self.events = events

    @classmethod
    def from_settings(cls, settings: Settings, metrics: Metrics | None = None) -> Access:
        buckets: Buckets
        events = None
        if settings.redis_url:
            on_error = metrics.ratelimit_backend_errors.inc if metrics is not None else None
            buckets = RedisBuckets(settings.redis_url, failure_mode=settings.redis_failure_mode, on_error=on_error)
            events = KeyEvents(settings.redis_url)
        else:
            buckets = LocalBuckets()
        static = settings.api_key.get_secret_value() if settings.api_key else None
        store = KeyStore(settings.resolved_database_url, static_key=static, refresh_s=settings.key_refresh_s,
                         timeout_s=settings.database_timeout_s, pool_size=settings.database_pool_size,
                         migrate=settings.database_migrate, events=events,
                         throttle=AuthThrottle(settings.max_failed_auth_per_min, buckets))
        if metrics is not None:
            store.database.on_error = metrics.database_errors.inc
        if events is not None:
            events.listen(store.forget)
        limiter = RateLimiter(default_rpm=settings.default_rpm, default_images_per_min=settings.default_images_per_min,
                              buckets=buckets)
        meter = UsageMeter(store, price_per_1k_images=settings.price_per_1k_images,
                           price_per_1m_tokens=settings.price_per_1m_tokens,
                           reservation_ttl_s=settings.request_timeout_s + RESERVATION_MARGIN_S)
        if settings.host not in LOCAL_HOSTS and store.is_open():
            log.warning("no API keys configured: the server on %s is open to anyone who can reach it", settings.host)
        return cls(store, limiter, meter, events)

    async def authorize(self, request: Request) -> KeyRecord:
        """The caller's key (a FastAPI dependency). 401 when keys are configured and none matches."""
        token = bearer_token(request.headers.get("authorization"), request.headers.get("x-api-key"))
        client = request.client.host if request.client else None
        try:
            return await asyncio.to_thread(self.store.authorize, token, client)
        except AuthError as exc:
            raise APIError(exc.status, exc.message, type=exc.type, code=exc.code, headers=exc.headers) from None

    async def admit(self, key: KeyRecord, images: int) -> Admission:
        """Charge the rate limits and reserve the quota for one request; 429 when over either."""
        decision, reservation = await asyncio.to_thread(self._admit, key, images)
        headers = rate_limit_headers(decision)
        if not decision.allowed:
            raise APIError(429, decision.message or "rate limited", type=decision.error_type,
                           code=decision.error_code, headers=headers)
        return Admission(headers, reservation)

    def _admit(self, key: KeyRecord, images: int) -> tuple[Decision, Reservation | None]:
        self.store.database.check()  # known down: refuse now rather than after the work
        decision = self.limiter.check(key, images=images)
        if not decision.allowed or key.quota_images is None or images == 0:
            return decision, None  # the quota counts images: text-only requests pass
        try:
            held = self.meter.reserve(key.id, images, key.quota_images)
        except BaseException:
            self.limiter.refund(key, images)
            raise
        if isinstance(held, QuotaRefusal):
            self.limiter.refund(key, images)
            return Decision(False, "quota", quota_images=held.quota, quota_remaining=held.remaining), None
        return decision, held

    async def record(self, key: KeyRecord, usage: Usage, admission: Admission | None = None, model: str = "",
                     prices: tuple[float, float] | None = None) -> None:
        """One request's usage under the model that served it, at its (per 1k images, per 1M tokens) prices."""
        reservation = admission.reservation if admission else None
        await asyncio.to_thread(self.meter.settle, reservation, key.id, model=model, images=usage.images,
                                patches=usage.patches, text_tokens=usage.prompt_tokens, prices=prices,
                                searches=getattr(usage, "searches", 0))  # collection searches (CollectionUsage)

    async def release(self, admission: Admission) -> None:
        """The work failed: give the reserved images back (best effort: they expire anyway)."""
        if admission.reservation is None:
            return
        try:
            await asyncio.to_thread(self.meter.release, admission.reservation)
        except DatabaseUnavailableError:
            log.warning("could not release quota reservation %s; it expires by itself", admission.reservation.id)

    async def usage(self, key: KeyRecord) -> dict:
        return await asyncio.to_thread(self.meter.usage_response, key)

    async def problem(self) -> tuple[str, str] | None:
        """(code, message) when this replica cannot serve for want of its database or Redis, else None."""
        try:
            await asyncio.to_thread(self.store.database.ping)
        except DatabaseUnavailableError as exc:
            return "database_unavailable", str(exc)
        buckets = self.limiter.buckets
        if isinstance(buckets, RedisBuckets) and buckets.failure_mode == "closed" and \
                not await asyncio.to_thread(buckets.ping):
            return "rate_limiter_unavailable", "rate limiting is unavailable (Redis unreachable)"
        return None

    def close(self) -> None:
        if self.events is not None:
            self.events.close()
        self.limiter.close()
        self.store.close()


__all__ = ["Access", "Admission", "DatabaseUnavailableError", "RateLimiterUnavailableError"]
