"""Who may call, how often, and what they used: sigserve.accounts' KeyStore, RateLimiter and
UsageMeter behind the three calls the routes make. Database work runs in threads,
never on the event loop."""

from __future__ import annotations

import asyncio
import logging

from fastapi import Request

from sigserve.accounts.keys import AuthError, KeyRecord, KeyStore, bearer_token
from sigserve.accounts.ratelimit import RateLimiter, rate_limit_headers
from sigserve.accounts.usage import UsageMeter
from sigserve.server.errors import APIError
from sigserve.server.schemas import Usage
from sigserve.server.settings import Settings

log = logging.getLogger(__name__)
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


class Access:
    def __init__(self, store: KeyStore, limiter: RateLimiter, meter: UsageMeter):
        self.store = store
        self.limiter = limiter
        self.meter = meter

    @classmethod
    def from_settings(cls, settings: Settings) -> Access:
        static = settings.api_key.get_secret_value() if settings.api_key else None
        store = KeyStore(settings.resolved_database_url, static_key=static)
        limiter = RateLimiter(default_rpm=settings.default_rpm, default_images_per_min=settings.default_images_per_min)
        meter = UsageMeter(store, price_per_1k_images=settings.price_per_1k_images,
                           price_per_1m_tokens=settings.price_per_1m_tokens)
        if settings.host not in LOCAL_HOSTS and store.is_open():
            log.warning("no API keys configured: the server on %s is open to anyone who can reach it", settings.host)
        return cls(store, limiter, meter)

    async def authorize(self, request: Request) -> KeyRecord:
        """The caller's key (a FastAPI dependency). 401 when keys are configured and none matches."""
        token = bearer_token(request.headers.get("authorization"), request.headers.get("x-api-key"))
        try:
            return await asyncio.to_thread(self.store.authorize, token)
        except AuthError as exc:
            raise APIError(exc.status, exc.message, type=exc.type, code=exc.code) from None

    async def admit(self, key: KeyRecord, images: int) -> dict[str, str]:
        """Charge the rate limits for one request; 429 when over. Returns the x-ratelimit headers."""
        used = None
        if key.quota_images is not None:
            used = await asyncio.to_thread(self.meter.images_used, key.id)
        decision = self.limiter.check(key, images=images, images_used=used)
        headers = rate_limit_headers(decision)
        if not decision.allowed:
            raise APIError(429, decision.message or "rate limited", type=decision.error_type,
                           code=decision.error_code, headers=headers)
        return headers

    async def record(self, key: KeyRecord, usage: Usage, model: str = "",
                     prices: tuple[float, float] | None = None) -> None:
        """One request's usage under the model that served it, at its (per 1k images, per 1M tokens) prices."""
        await self.meter.arecord(key.id, model=model, images=usage.images, patches=usage.patches,
                                 text_tokens=usage.prompt_tokens, prices=prices,
                                 searches=getattr(usage, "searches", 0))  # collection searches (CollectionUsage)

    async def usage(self, key: KeyRecord) -> dict:
        return await asyncio.to_thread(self.meter.usage_response, key)

    def close(self) -> None:
        self.store.close()
