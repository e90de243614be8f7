"""POST /v1/heatmap: where in an image each text matches, one calibrated probability per patch (of the
image's NaFlex grid, or the model's fixed G x G grid), on the model the request names.

The image and the texts go through the engine as every route's do (fetch, the preprocessing pool, the
worker's batches), the image asking for its patch features. The per-patch pooling head then runs here,
in a thread, once the worker has answered (Pipeline.score_patches): a few matrix products over one
image's patches, about 7% of the encoder's work, which batching would not make cheaper; so the engine,
its queue and its batching stay exactly as they are for every other route."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Literal

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field

from sigserve.accounts.keys import KeyRecord
from sigserve.scoring import l2_normalize
from sigserve.server.errors import APIError
from sigserve.server.inputs import Item
from sigserve.server.routes import _served, caller
from sigserve.server.schemas import ImageItem, MaxNumPatches, PatchFeaturesRequest, Usage, _Strict
from sigserve.server.serving import Prepared, Serving

router = APIRouter()


class HeatmapRequest(_Strict):
    model: str
    image: ImageItem = Field(..., description="URL, data URI or base64")
    texts: list[str] = Field(..., min_length=1, description="one heatmap per text")
    max_num_patches: int | None = MaxNumPatches


class TextHeatmap(BaseModel):
    object: Literal["heatmap"] = "heatmap"
    index: int
    text: str
    probabilities: list[list[float]]  # (rows, cols): the image's NaFlex grid, row-major


class HeatmapResponse(BaseModel):
    object: Literal["list"] = "list"
    rows: int
    cols: int
    data: list[TextHeatmap]
    model: str
    usage: Usage


def prepare(serving: Serving, req: HeatmapRequest) -> Prepared[HeatmapRequest]:
    """The image is checked as for /v1/patch_features (which a heatmap is, plus texts), and so is
    max_num_patches; texts count like classify's labels."""
    [image] = serving.prepare(PatchFeaturesRequest(model=req.model, input=req.image,
                                                   max_num_patches=req.max_num_patches)).items
    if len(req.texts) > serving.settings.max_labels:
        raise APIError(400, f"at most {serving.settings.max_labels} texts per request", param="texts")
    texts = [Item("text", t, f"texts[{i}]") for i, t in enumerate(req.texts)]
    serving.check_text_lengths([(t.param, t.value) for t in texts])
    return Prepared(req, [replace(image, param="image"), *texts])


async def heatmaps(serving: Serving, job: Prepared[HeatmapRequest]) -> HeatmapResponse:
    req, engine = job.body, serving.engine
    L = serving.sequence_length(req.max_num_patches)
    with engine.admit(len(job.items), job.owner):
        enc = await serving.encode(job.items, L, features=True)  # item 0 the image, then the texts
        maps = await asyncio.to_thread(engine.model.score_patches, enc.features[0], l2_normalize(enc.vectors[1:]))
    _, rows, cols = maps.shape  # (T, rows, cols)
    data = [TextHeatmap(index=i, text=t, probabilities=m.tolist()) for i, (t, m) in enumerate(zip(req.texts, maps))]
    return HeatmapResponse(rows=rows, cols=cols, data=data, model=req.model, usage=enc.usage)


@router.post("/v1/heatmap", response_model=HeatmapResponse, tags=["heatmap"])
async def heatmap(body: HeatmapRequest, request: Request, response: Response,
                  key: KeyRecord = Depends(caller)) -> HeatmapResponse:
    """Per text, the probability that it matches each NaFlex patch of the image (MaskCLIP-style regions)."""
    return await _served(request, response, key, body, heatmaps, prepare=prepare)
