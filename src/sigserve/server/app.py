"""The app factory: `create_app(settings, model=None)`. Everything an app uses (engine, fetcher,
keys, metrics registry) is built here or in its lifespan and hangs off `app.state`: no globals,
so several apps can live in one process (tests do)."""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI

import sigserve
from sigserve.engine import Engine, ServedModel
from sigserve.server import accesslog, admin, collections, errors, heatmap, playground, routes
from sigserve.server.access import Access
from sigserve.server.fetch import ImageFetcher
from sigserve.server.limits import RequestGuardMiddleware, guarded_protocol
from sigserve.server.metrics import Metrics, RequestMetricsMiddleware
from sigserve.server.serving import Serving
from sigserve.server.settings import Settings

log = logging.getLogger(__name__)


def load_pipeline(settings: Settings) -> ServedModel:
    """The library model the settings describe (blocking: seconds to minutes)."""
    return sigserve.load(settings.model, dummy=settings.dummy, backend=settings.backend, precision=settings.precision,
                         device=settings.resolved_device, max_image_pixels=settings.max_image_pixels,
                         jpeg_draft=settings.jpeg_draft, text_cache_size=settings.label_cache_size,
                         image_formats=settings.image_formats)


def server_options(settings: Settings) -> dict:
    """uvicorn's options for these settings (the CLI's server and the tests' are the same server)."""
    return {"http": guarded_protocol(settings.header_timeout_s), "timeout_keep_alive": settings.keep_alive_s,
            "log_level": settings.log_level,
            # X-Forwarded-For is believed only from --trusted-proxies (the load balancer), never from clients.
            "proxy_headers": True, "forwarded_allow_ips": settings.trusted_proxies}


def create_app(settings: Settings, model: ServedModel | None = None) -> FastAPI:
    """`model`: an already loaded library model (the CLI loads it first, to fail before binding
    a port); None loads it from the settings during startup."""
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loaded = model if model is not None else await asyncio.to_thread(load_pipeline, settings)
        if loaded.dummy:
            log.warning("serving a DUMMY model (random weights): embeddings are meaningless")
        engine = Engine(loaded, settings.engine_config(), observer=metrics)
        fetcher = ImageFetcher(max_bytes=settings.max_image_bytes, timeout_s=settings.fetch_timeout_s,
                               allow_private=settings.allow_private_urls, max_fetches=settings.max_fetches,
                               max_request_bytes=settings.max_request_fetch_bytes,
                               fetches_per_request=settings.fetches_per_request)
        access = await asyncio.to_thread(Access.from_settings, settings, metrics)
        engine.start()
        app.state.engine, app.state.access = engine, access
        app.state.serving = serving = Serving(engine, settings, fetcher)
        # /ready says 200 only after every tower and the common grids ran once (lazy graph builds, the
        # allocator's arenas): the first request then costs what the tenth does. /health answers meanwhile.
        warm_up = asyncio.create_task(serving.warm_up())
        try:
            yield
        finally:
            warm_up.cancel()
            engine.stop()
            await fetcher.aclose()
            access.close()

    app = FastAPI(title="sigserve", version=sigserve.__version__,
                  summary="SigLIP 2 NaFlex embeddings, zero-shot classification, rerank and patch features",
                  lifespan=lifespan)
    app.state.settings, app.state.metrics = settings, metrics
    errors.install(app, on_error=metrics.on_error)
    app.include_router(routes.router)
    app.include_router(collections.router)
    app.include_router(admin.router)
    accesslog.install()
    app.include_router(heatmap.router)
    playground.install(app, settings.playground)
    app.add_middleware(RequestGuardMiddleware, max_bytes=settings.max_body_bytes, body_timeout_s=settings.body_timeout_s)
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics)  # outermost: counts 413s too
    return app
