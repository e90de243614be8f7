"""Request and response bodies. Fields follow the dialect each route speaks (OpenAI for
embeddings and models, Jina for classify, Cohere/Jina for rerank), in that API's order; fields
that are ours come after a `# -- sigserve extensions --` line and are documented in docs/server.md."""

from __future__ import annotations

from typing import Literal, Union

from pydantic import BaseModel, ConfigDict, Field

from sigserve.defaults import MAX_PATCHES, MIN_PATCHES


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- input items: every dialect in one list ----------------------------------------------------


class TextObject(_Strict):
    """Jina: {"text": "..."}"""

    text: str


class ImageObject(_Strict):
    """Jina: {"image": "<url, data URI or base64>"}"""

    image: str


class TextPart(_Strict):
    """OpenAI content part: {"type": "text", "text": "..."}"""

    type: Literal["text"]
    text: str


class ImageURL(_Strict):
    url: str
    detail: str | None = None  # accepted for compatibility, ignored


class ImageURLPart(_Strict):
    """OpenAI content part {"type": "image_url", "image_url": {"url": ...}}; Cohere passes the URL
    string directly as image_url."""

    type: Literal["image_url"]
    image_url: Union[ImageURL, str]


class ImageBase64Part(_Strict):
    """Voyage: {"type": "image_base64", "image_base64": "data:..."}"""

    type: Literal["image_base64"]
    image_base64: str


InputItem = Union[str, TextPart, ImageURLPart, ImageBase64Part, TextObject, ImageObject]
ImageItem = Union[str, ImageURLPart, ImageBase64Part, ImageObject]

MaxNumPatches = Field(None, ge=MIN_PATCHES, le=MAX_PATCHES,
                      description="NaFlex sequence length (default: the server's); refused by fixed-resolution models")


# -- shared ------------------------------------------------------------------------------------


class Usage(BaseModel):
    prompt_tokens: int = 0  # non-padding text tokens
    total_tokens: int = 0
    # -- sigserve extensions --
    images: int = 0
    patches: int = 0  # valid (non-padding) image patches


# -- /v1/embeddings ----------------------------------------------------------------------------


class EmbeddingRequest(_Strict):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"model": "siglip2", "input": "a cat"}]})

    # Token arrays (OpenAI's other `input` form) are accepted here only to be refused with a clear 400:
    # ids from another model's tokenizer mean nothing to SigLIP 2.
    input: Union[str, list[InputItem], list[int], list[list[int]]] = Field(
        ..., description="text(s) and/or image reference(s); data:image/...;base64 strings are images")
    model: str
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, description="only the native size is accepted (SigLIP 2 is not Matryoshka-trained)")
    user: str | None = None
    # -- sigserve extensions --
    modality: Literal["text", "image"] | None = Field(None, description="infinity: plain strings are image references")
    max_num_patches: int | None = MaxNumPatches
    normalize: bool = Field(True, description="L2-normalise the embeddings")


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    embedding: Union[list[float], str]
    index: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: Usage


# -- /v1/models --------------------------------------------------------------------------------


class PatchRange(BaseModel):
    min: int
    max: int
    default: int
    trained_max: int  # beyond this the model extrapolates


class Pricing(BaseModel):
    per_1k_images: float
    per_1m_tokens: float


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    # -- sigserve extensions --
    capabilities: list[str]
    input_modalities: list[str]
    embedding_dim: int
    architecture: Literal["naflex", "fixed"]  # NaFlex: a sequence length per request; fixed: one image size
    image_size: int | None = None  # fixed resolution: the square side images are resized to
    max_num_patches: PatchRange | None = None  # NaFlex only
    pricing: Pricing
    dummy: bool
    backend: str | None = None
    precision: str | None = None
    memory_mb: float | None = None  # resident memory the model added at load (measured)


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


# -- /v1/classify (Jina) -------------------------------------------------------------------------


class ClassifyRequest(_Strict):
    model: str
    input: Union[ImageItem, list[ImageItem]] = Field(..., description="images to classify")
    labels: list[str] = Field(..., min_length=1)
    # -- sigserve extensions --
    templates: list[str] | None = Field(None, min_length=1, description='prompt templates with "{}" for the label')
    top_k: int | None = Field(None, ge=1, description="keep only the k best labels per image")
    threshold: float | None = Field(None, ge=0, le=1, description="multi-label: keep labels with probability >= threshold")
    max_num_patches: int | None = MaxNumPatches


class LabelScore(BaseModel):
    label: str
    score: float


class Classification(BaseModel):
    object: Literal["classification"] = "classification"
    index: int
    prediction: str | None  # the best label; None when a threshold was given and no label passed it
    score: float | None
    predictions: list[LabelScore]


class ClassifyResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Classification]
    model: str
    usage: Usage


# -- /v1/rerank (Cohere / Jina) ------------------------------------------------------------------


class RerankRequest(_Strict):
    model: str
    query: Union[str, TextPart, ImageURLPart, ImageBase64Part, TextObject, ImageObject]
    documents: list[InputItem] = Field(..., min_length=1)
    top_n: int | None = Field(None, ge=1)
    return_documents: bool = False
    # -- sigserve extensions --
    max_num_patches: int | None = MaxNumPatches


class RerankDocument(BaseModel):
    text: str | None = None
    image: str | None = None


class RerankResult(BaseModel):
    index: int
    relevance_score: float
    document: RerankDocument | None = None


class RerankResponse(BaseModel):
    object: Literal["list"] = "list"
    results: list[RerankResult]
    model: str
    usage: Usage


# -- /v1/patch_features (ours) -------------------------------------------------------------------


class PatchFeaturesRequest(_Strict):
    model: str
    input: Union[ImageItem, list[ImageItem]]
    encoding_format: Literal["float", "base64"] = "float"
    dtype: Literal["float32", "float16"] = "float32"
    max_num_patches: int | None = MaxNumPatches


class PatchFeatures(BaseModel):
    object: Literal["patch_features"] = "patch_features"
    index: int
    rows: int
    cols: int
    dim: int
    dtype: str
    # rows*cols vectors in row-major order; base64: the same values as packed little-endian bytes
    features: Union[list[list[float]], str]


class PatchFeaturesResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[PatchFeatures]
    model: str
    usage: Usage


# -- /v1/usage, health ---------------------------------------------------------------------------


class Health(BaseModel):
    status: str


class Ready(BaseModel):
    status: str
    model: str  # the default (first) model
    models: list[str]  # every served model, each ready
    pending_items: int  # over all models
