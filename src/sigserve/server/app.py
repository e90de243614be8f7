"""The app factory: `create_app(settings, models=None)`. Everything an app uses (the models registry
with an engine and a Serving per model, fetcher, keys, metrics registry) is built here or in its
lifespan and hangs off `app.state`: no globals, so several apps can live in one process (tests do)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from contextlib import asynccontextmanager

from fastapi import FastAPI

import sigserve
from sigserve.engine import Engine, ServedModel
from sigserve.server import accesslog, admin, collections, errors, heatmap, playground, routes
from sigserve.server import models as registry
from sigserve.server.access import Access
from sigserve.server.fetch import ImageFetcher
from sigserve.server.limits import RequestGuardMiddleware, guarded_protocol
from sigserve.server.metrics import Metrics, RequestMetricsMiddleware
from sigserve.server.models import LoadedModel, Models, Served
from sigserve.server.serving import Serving
from sigserve.server.settings import Settings, resolve_device

log = logging.getLogger(__name__)
Given = ServedModel | Sequence[ServedModel] | Sequence[LoadedModel] | None


def server_options(settings: Settings) -> dict:
    """uvicorn's options for these settings (the CLI's server and the tests' are the same server)."""
    return {"http": guarded_protocol(settings.header_timeout_s), "timeout_keep_alive": settings.keep_alive_s,
            "log_level": settings.log_level,
            # X-Forwarded-For is believed only from --trusted-proxies (the load balancer), never from clients.
            "proxy_headers": True, "forwarded_allow_ips": settings.trusted_proxies}


def given_models(settings: Settings, models: Given) -> list[LoadedModel] | None:
    """What create_app was handed, as LoadedModels in the settings' order: one library model (the
    settings' single model), library models paired with the settings' models, or LoadedModels as is."""
    if models is None:
        return None
    items = list(models) if isinstance(models, Sequence) else [models]
    if all(isinstance(m, LoadedModel) for m in items):
        return items  # type: ignore[return-value]
    specs = settings.model_specs()
    if len(specs) != len(items):
        raise ValueError(f"{len(items)} models given for {len(specs)} in the settings")
    return [LoadedModel(spec, m) for spec, m in zip(specs, items)]  # type: ignore[arg-type]


def create_app(settings: Settings, models: Given = None) -> FastAPI:
    """`models`: already loaded library models (the CLI loads and measures them first, to fail before
    binding a port); None loads the settings' models during startup."""
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loaded = given_models(settings, models)
        if loaded is None:
            loaded = await asyncio.to_thread(registry.load_models, settings)  # looked up now: tests replace it
        fetcher = ImageFetcher(max_bytes=settings.max_image_bytes, timeout_s=settings.fetch_timeout_s,
                               allow_private=settings.allow_private_urls, max_fetches=settings.max_fetches,
                               max_request_bytes=settings.max_request_fetch_bytes,
                               fetches_per_request=settings.fetches_per_request)
        access = await asyncio.to_thread(Access.from_settings, settings, metrics)
        app.state.access = access
        app.state.models = served = Models([serve(entry, fetcher) for entry in loaded])
        # /ready says 200 only after both towers ran once through the engine (lazy graph builds, the
        # allocator's arenas): the first request then costs what the tenth does. /health answers meanwhile.
        warm_ups = [asyncio.create_task(s.serving.warm_up()) for s in served]
        try:
            yield
        finally:
            for task in warm_ups:
                task.cancel()
            for s in served:
                s.engine.stop()
            await fetcher.aclose()
            access.close()

    def serve(entry: LoadedModel, fetcher: ImageFetcher) -> Served:
        """One model's engine (its own queue, worker thread and backend) and Serving, started."""
        name = entry.spec.served_name
        if entry.pipeline.dummy:
            log.warning("serving %s, a DUMMY model (random weights): embeddings are meaningless", name)
        engine = Engine(entry.pipeline, settings.engine_config(resolve_device(entry.spec.device)),
                        observer=metrics.observer(name))
        engine.start()
        if entry.rss_mb is not None:
            metrics.memory.labels(name).set(entry.rss_mb * 1024 * 1024)
        return Served(entry.spec, engine, Serving(engine, settings, fetcher, entry.spec, entry.rss_mb), entry.rss_mb)

    app = FastAPI(title="sigserve", version=sigserve.__version__,
                  summary="SigLIP 2 and SigLIP embeddings, zero-shot classification, rerank and patch features",
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
