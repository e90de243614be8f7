"""HTTP routes. Each one authenticates, finds the model the body names (app.state.models), charges the
rate limits, hands the parsed body to that model's serving layer (cancelled if the client goes away),
and records usage under that model. Nothing else lives here."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from sigserve.accounts.keys import KeyRecord
from sigserve.server import schemas
from sigserve.server.errors import APIError
from sigserve.server.serving import Prepared, Serving


class _Metered(Protocol):
    usage: schemas.Usage


T = TypeVar("T", bound=_Metered)  # every response the routes serve carries its usage
router = APIRouter()
CLIENT_CLOSED = 499  # nginx's "client closed request": nobody reads it, but metrics show it


async def caller(request: Request) -> KeyRecord:
    return await request.app.state.access.authorize(request)


async def _served(request: Request, response: Response, key: KeyRecord, body,
                  work: Callable[[Serving, Prepared], Awaitable[T]],
                  prepare: Callable[[Serving, Any], Prepared] | None = None) -> T:
    """Find the model the body names (404 naming the served ones), parse and check the body once
    (Serving.prepare, unless the route brings its own), charge the rate limits for it, serve it on that
    model, record the usage under it."""
    state = request.app.state
    serving = state.models.resolve(body.model).serving
    job = (prepare or Serving.prepare)(serving, body)
    job.owner = key.id  # the engine shares its queue fairly between owners
    admission = await state.access.admit(key, job.images)  # rate limits charged, quota reserved
    response.headers.update(admission.headers)
    request.state.response_headers = admission.headers  # an error from here on still tells the client its limits
    try:
        result = await _until_disconnect(request, work(serving, job))
    except BaseException:
        await asyncio.shield(state.access.release(admission))  # the quota reserved comes back
        raise
    await record_usage(request, key, serving, result.usage, admission)
    return result


async def record_usage(request: Request, key: KeyRecord, serving: Serving, usage: schemas.Usage,
                       admission=None) -> None:
    """The key's usage row (settling its quota reservation) and the metrics, under the model that served,
    at its prices."""
    state = request.app.state
    spec = serving.spec
    await state.access.record(key, usage, admission, model=serving.name,
                              prices=(spec.price_per_1k_images, spec.price_per_1m_tokens))
    state.metrics.on_usage(serving.name, usage.images, usage.patches, usage.prompt_tokens)


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
            responses={503: {"description": "a model not loaded, its inference worker dead, or database unreachable"}})
async def ready(request: Request):
    """Every model is loaded, warmed up, and its inference worker alive; the database answers (readiness)."""
    models = request.app.state.models
    for served in models:
        engine, serving = served.engine, served.serving
        named = f" ({served.name})" if len(models) > 1 else ""
        if not engine.ready:
            raise APIError(503, f"not ready: the inference worker{named} is not running", code="not_ready")
        if serving.warm_up_error is not None:
            raise APIError(503, f"not ready: warm-up{named} failed: {serving.warm_up_error}", code="warm_up_failed")
        if not serving.warm:
            raise APIError(503, f"not ready yet: warming up the model{named}", code="warming_up",
                           headers={"retry-after": "1"})
    if problem := await request.app.state.access.problem():  # database (or Redis, when it must be up)
        raise APIError(503, f"not ready: {problem[1]}", code=problem[0])
    return schemas.Ready(status="ready", model=models.default.name, models=models.names,
                         pending_items=sum(s.engine.pending for s in models))


@router.get("/metrics", tags=["probes"], response_class=Response)
async def metrics(request: Request) -> Response:
    state = request.app.state
    for served in state.models:
        state.metrics.pending.labels(served.name).set(served.engine.pending)
        state.metrics.ready.labels(served.name).set(1 if served.engine.ready else 0)
    return Response(state.metrics.render(), media_type=state.metrics.content_type)


# -- the API ------------------------------------------------------------------------------------


@router.get("/v1/models", response_model=schemas.ModelList, tags=["models"])
async def list_models(request: Request, key: KeyRecord = Depends(caller)) -> schemas.ModelList:
    """Every served model, the default first, with what it is and costs."""
    return schemas.ModelList(data=[served.serving.card() for served in request.app.state.models])


@router.post("/v1/embeddings", response_model=schemas.EmbeddingResponse, tags=["embeddings"])
async def embeddings(body: schemas.EmbeddingRequest, request: Request, response: Response,
                     key: KeyRecord = Depends(caller)) -> schemas.EmbeddingResponse:
    return await _served(request, response, key, body, Serving.embeddings)


@router.post("/v1/classify", response_model=schemas.ClassifyResponse, tags=["classify"])
async def classify(body: schemas.ClassifyRequest, request: Request, response: Response,
                   key: KeyRecord = Depends(caller)) -> schemas.ClassifyResponse:
    return await _served(request, response, key, body, Serving.classify)


@router.post("/v1/rerank", response_model=schemas.RerankResponse, response_model_exclude_none=True, tags=["rerank"])
async def rerank(body: schemas.RerankRequest, request: Request, response: Response,
                 key: KeyRecord = Depends(caller)) -> schemas.RerankResponse:
    return await _served(request, response, key, body, Serving.rerank)


@router.post("/v1/patch_features", response_model=schemas.PatchFeaturesResponse, tags=["patch features"])
async def patch_features(body: schemas.PatchFeaturesRequest, request: Request, response: Response,
                         key: KeyRecord = Depends(caller)) -> schemas.PatchFeaturesResponse:
    return await _served(request, response, key, body, Serving.patch_features)


@router.get("/v1/usage", tags=["usage"])
@router.get("/api/v1/key", tags=["usage"], include_in_schema=False)  # OpenRouter's key introspection
async def usage(request: Request, key: KeyRecord = Depends(caller)) -> JSONResponse:
    """The caller's usage (OpenRouter's key shape plus our counters); admin keys see every key."""
    return JSONResponse(await request.app.state.access.usage(key))
