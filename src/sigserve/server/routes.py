"""HTTP routes. Each one authenticates, charges the rate limits, hands the parsed body to the
serving layer (cancelled if the client goes away), and records usage. Nothing else lives here."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from sigserve.accounts.keys import KeyRecord
from sigserve.server import schemas
from sigserve.server.errors import APIError
from sigserve.server.serving import Prepared


class _Metered(Protocol):
    usage: schemas.Usage


T = TypeVar("T", bound=_Metered)  # every response the routes serve carries its usage
router = APIRouter()
CLIENT_CLOSED = 499  # nginx's "client closed request": nobody reads it, but metrics show it


async def caller(request: Request) -> KeyRecord:
    return await request.app.state.access.authorize(request)


async def _served(request: Request, response: Response, key: KeyRecord, body,
                  work: Callable[[Prepared], Awaitable[T]], prepare: Callable[[Any], Prepared] | None = None) -> T:
    """Parse and check the body once (Serving.prepare, unless the route brings its own), charge the rate
    limits for it, serve it, record the usage."""
    state = request.app.state
    job = (prepare or state.serving.prepare)(body)
    job.owner = key.id  # the engine shares its queue fairly between owners
    admission = await state.access.admit(key, job.images)  # rate limits charged, quota reserved
    response.headers.update(admission.headers)
    request.state.response_headers = admission.headers  # an error from here on still tells the client its limits
    try:
        result = await _until_disconnect(request, work(job))
    except BaseException:
        await asyncio.shield(state.access.release(admission))  # the quota reserved comes back
        raise
    await state.access.record(key, result.usage, admission)
    state.metrics.on_usage(result.usage.images, result.usage.patches, result.usage.prompt_tokens)
    return result


async def _until_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Run `work`, cancelling it (and so its queued jobs) if the client disconnects first."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            return task.result()
        raise APIError(CLIENT_CLOSED, "client closed the request", code="client_closed")
    finally:
        task.cancel()
        watcher.cancel()


async def _disconnected(request: Request) -> None:
    # The body has been read already, so the next ASGI message can only be the disconnect.
    while (await request.receive())["type"] != "http.disconnect":
        pass


# -- probes and metrics ---------------------------------------------------------------------------


@router.get("/health", response_model=schemas.Health, tags=["probes"])
@router.head("/health", include_in_schema=False)  # load balancers probe with HEAD
async def health() -> schemas.Health:
    """The process answers (liveness)."""
    return schemas.Health(status="ok")


@router.head("/ready", include_in_schema=False)
@router.get("/ready", response_model=schemas.Ready, tags=["probes"],
            responses={503: {"description": "model not loaded, inference worker dead, or database unreachable"}})
async def ready(request: Request):
    """The model is loaded, warmed up, and the inference worker alive (readiness)."""
    engine, settings, serving = request.app.state.engine, request.app.state.settings, request.app.state.serving
    if not engine.ready:
        raise APIError(503, "not ready: the inference worker is not running", code="not_ready")
    if serving.warm_up_error is not None:
        raise APIError(503, f"not ready: warm-up failed: {serving.warm_up_error}", code="warm_up_failed")
    if not serving.warm:
        raise APIError(503, "not ready yet: warming up the model", code="warming_up", headers={"retry-after": "1"})
    if problem := await request.app.state.access.problem():  # database (or Redis, when it must be up)
        raise APIError(503, f"not ready: {problem[1]}", code=problem[0])
    return schemas.Ready(status="ready", model=settings.model_name, pending_items=engine.pending)


@router.get("/metrics", tags=["probes"], response_class=Response)
async def metrics(request: Request) -> Response:
    state = request.app.state
    state.metrics.pending.set(state.engine.pending)
    state.metrics.ready.set(1 if state.engine.ready else 0)
    return Response(state.metrics.render(), media_type=state.metrics.content_type)


# -- the API ------------------------------------------------------------------------------------


@router.get("/v1/models", response_model=schemas.ModelList, tags=["models"])
async def list_models(request: Request, key: KeyRecord = Depends(caller)) -> schemas.ModelList:
    return request.app.state.serving.models()


@router.post("/v1/embeddings", response_model=schemas.EmbeddingResponse, tags=["embeddings"])
async def embeddings(body: schemas.EmbeddingRequest, request: Request, response: Response,
                     key: KeyRecord = Depends(caller)) -> schemas.EmbeddingResponse:
    return await _served(request, response, key, body, request.app.state.serving.embeddings)


@router.post("/v1/classify", response_model=schemas.ClassifyResponse, tags=["classify"])
async def classify(body: schemas.ClassifyRequest, request: Request, response: Response,
                   key: KeyRecord = Depends(caller)) -> schemas.ClassifyResponse:
    return await _served(request, response, key, body, request.app.state.serving.classify)


@router.post("/v1/rerank", response_model=schemas.RerankResponse, response_model_exclude_none=True, tags=["rerank"])
async def rerank(body: schemas.RerankRequest, request: Request, response: Response,
                 key: KeyRecord = Depends(caller)) -> schemas.RerankResponse:
    return await _served(request, response, key, body, request.app.state.serving.rerank)


@router.post("/v1/patch_features", response_model=schemas.PatchFeaturesResponse, tags=["patch features"])
async def patch_features(body: schemas.PatchFeaturesRequest, request: Request, response: Response,
                         key: KeyRecord = Depends(caller)) -> schemas.PatchFeaturesResponse:
    return await _served(request, response, key, body, request.app.state.serving.patch_features)


@router.get("/v1/usage", tags=["usage"])
@router.get("/api/v1/key", tags=["usage"], include_in_schema=False)  # OpenRouter's key introspection
async def usage(request: Request, key: KeyRecord = Depends(caller)) -> JSONResponse:
    """The caller's usage (OpenRouter's key shape plus our counters); admin keys see every key."""
    return JSONResponse(await request.app.state.access.usage(key))
