"""What each route does, between the HTTP schemas and the engine: parse the input dialects,
fetch and preprocess images, embed, score, and shape the response. Routes stay thin."""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np

from sigserve.defaults import MAX_PATCHES, MIN_PATCHES, TRAINED_MAX_PATCHES
from sigserve.engine import Engine
from sigserve.errors import InputError
from sigserve.prompts import build_prompts, check_templates, label_matrix
from sigserve.scoring import l2_normalize
from sigserve.server import schemas
from sigserve.server.errors import APIError, input_error
from sigserve.server.inputs import ImageSource, Item, parse_item, parse_items, require_images, token_id_input
from sigserve.server.settings import ModelSpec, Settings

R = TypeVar("R")
log = logging.getLogger(__name__)
# One photo shape: a new grid costs nothing measurable after the first call (full size, 256 patches:
# the first call of five more shapes took 0.24-0.29 s, their second 0.24-0.28 s, on onnx and openvino alike).
WARM_UP_SHAPE = (1080, 1920)  # (height, width)
TOKEN_IDS_REFUSED = (
    "input holds token ids; sigserve takes text as strings. Token ids come from another model's tokenizer "
    "(tiktoken, for OpenAI models) and mean nothing to SigLIP 2, which tokenizes text itself. Send the text "
    "instead; with LangChain's OpenAIEmbeddings, pass check_embedding_ctx_length=False.")

CAPABILITIES = ["embeddings", "classify", "rerank", "patch_features", "heatmap"]


@dataclass
class Encoded:
    """Embeddings for a list of Items, in their order, plus what it cost."""

    vectors: np.ndarray  # (N, D) raw pooled
    usage: schemas.Usage
    features: dict[int, np.ndarray] = field(default_factory=dict)  # item position -> (rows, cols, D)


@dataclass
class Prepared(Generic[R]):
    """A request body checked and parsed once (model, item kinds and counts): what the rate limits
    charge, then what the route serves."""

    body: R
    items: list[Item]  # input items; rerank: the documents
    owner: str = ""  # the caller's key id: the engine shares its queue fairly between owners
    query: Item | None = None  # rerank
    prompts: list[str] = field(default_factory=list)  # classify: labels x templates

    @property
    def images(self) -> int:
        return sum(it.kind == "image" for it in [*self.items, *([self.query] if self.query else [])])


class Serving:
    """One served model's routes (models.Models holds one per served name)."""

    def __init__(self, engine: Engine, settings: Settings, images: ImageSource, spec: ModelSpec,
                 rss_mb: float | None = None):
        self.engine = engine
        self.settings = settings
        self.images = images
        self.spec = spec
        self.name = spec.served_name
        self.rss_mb = rss_mb  # resident memory its load added (models.load_models), when measured
        self.created = int(time.time())
        self.warm = False
        self.warm_up_error: str | None = None

    async def warm_up(self) -> None:
        """Run the text tower and the image tower once each, at the default length, through the engine
        (its worker and preprocessing threads), so that the first request finds nothing left to start."""
        try:
            await self.engine.embed_texts(["warm-up"])
            image = np.zeros((*WARM_UP_SHAPE, 3), np.uint8)
            patches = await self.engine.load_images([image], self.sequence_length(None))
            await self.engine.embed_images(patches)
            self.warm = True
        except Exception as exc:  # noqa: BLE001 - reported by /ready, never hidden
            self.warm_up_error = f"{type(exc).__name__}: {exc}"
            log.error("warm-up failed: %s", self.warm_up_error, exc_info=exc)

    # -- parsing (before the rate limits are charged) ------------------------------------------

    def prepare(self, req: Any, owner: str = "") -> Prepared[Any]:
        job = self._prepare(req)
        job.owner = owner
        texts = [(it.param, it.value) for it in [*job.items, *([job.query] if job.query else [])] if it.kind == "text"]
        if isinstance(req, schemas.ClassifyRequest):
            texts += [(f"labels[{i}]", t) for i, t in enumerate(req.labels)]
            texts += [(f"templates[{i}]", t) for i, t in enumerate(req.templates or [])]
        self.check_text_lengths(texts)
        return job

    def check_text_lengths(self, texts: list[tuple[str, str]]) -> None:
        limit = self.settings.max_text_chars
        for param, text in texts:
            if len(text) > limit:
                raise APIError(400, f"{param}: {len(text):,} characters; at most {limit:,} per text (SigLIP 2 reads "
                                    "the first 64 tokens, a few hundred characters)", param=param, code="text_too_long")

    def _prepare(self, req: Any) -> Prepared[Any]:
        self.check_max_num_patches(getattr(req, "max_num_patches", None))
        if isinstance(req, schemas.EmbeddingRequest):
            if token_id_input(req.input):
                raise APIError(400, TOKEN_IDS_REFUSED, param="input", code="token_ids_not_supported")
            uris = self.settings.detect_image_data_uris
            return Prepared(req, self._items(parse_items(req.input, "input", req.modality, data_uris_are_images=uris)))
        if isinstance(req, schemas.RerankRequest):
            return self._prepare_rerank(req)
        assert isinstance(req, (schemas.ClassifyRequest, schemas.PatchFeaturesRequest))
        items = self._items(parse_items(req.input, "input", "image", single_name=False))
        require_images(items, "classify" if isinstance(req, schemas.ClassifyRequest) else "patch_features")
        if not isinstance(req, schemas.ClassifyRequest):
            return Prepared(req, items)
        return Prepared(req, items, prompts=self._prompts(req))

    def _prompts(self, req: schemas.ClassifyRequest) -> list[str]:
        """labels x templates, each a text to embed: bounded, and counted as work at admission."""
        s = self.settings
        if len(req.labels) > s.max_labels:
            raise APIError(400, f"at most {s.max_labels} labels per request", param="labels", code="too_many_labels")
        if req.templates and len(req.templates) > s.max_templates:
            raise APIError(400, f"at most {s.max_templates} templates per request", param="templates",
                           code="too_many_templates")
        prompts = build_prompts(req.labels, check_templates(req.templates))  # a template without {}: 400
        if len(prompts) > s.max_prompts:
            raise APIError(400, f"{len(req.labels)} labels x {len(prompts) // len(req.labels)} templates = "
                                f"{len(prompts)} prompts; at most {s.max_prompts} per request", param="templates",
                           code="too_many_prompts")
        return prompts

    def _prepare_rerank(self, req: schemas.RerankRequest) -> Prepared[schemas.RerankRequest]:
        uris = self.settings.detect_image_data_uris
        query = parse_item(req.query, "query", data_uris_are_images=uris)
        docs = self._items(parse_items(req.documents, "documents", data_uris_are_images=uris))
        kinds = {d.kind for d in docs}
        if len(kinds) > 1:
            raise APIError(400, "documents must be all texts or all images", param="documents")
        if query.kind in kinds:
            raise APIError(400, f"SigLIP 2 scores an image against a text: a {query.kind} query needs "
                                f"{'image' if query.kind == 'text' else 'text'} documents", param="documents",
                           code="same_modality")
        return Prepared(req, docs, query=query)

    # -- routes --------------------------------------------------------------------------------

    def card(self) -> schemas.ModelCard:
        """This model's entry in /v1/models: what it is (NaFlex or a fixed resolution), its width, price and memory."""
        m = self.engine.model
        backend = getattr(m, "backend", None)  # what actually loaded, when the model says
        rules = m.image_rules()
        naflex = rules["kind"] == "naflex"
        patches = schemas.PatchRange(min=MIN_PATCHES, max=MAX_PATCHES, default=self.sequence_length(None) or 0,
                                     trained_max=TRAINED_MAX_PATCHES) if naflex else None
        return schemas.ModelCard(
            id=self.name, created=self.created, owned_by="sigserve",
            capabilities=CAPABILITIES, input_modalities=["text", "image"], embedding_dim=m.embedding_dim,
            architecture="naflex" if naflex else "fixed", image_size=rules.get("image_size"), max_num_patches=patches,
            pricing=schemas.Pricing(per_1k_images=self.spec.price_per_1k_images, per_1m_tokens=self.spec.price_per_1m_tokens),
            dummy=bool(getattr(m, "dummy", self.spec.dummy)), backend=getattr(backend, "name", self.spec.backend),
            precision=getattr(backend, "precision", self.spec.precision),
            memory_mb=None if self.rss_mb is None else round(self.rss_mb, 1),
        )

    async def embeddings(self, job: Prepared[schemas.EmbeddingRequest]) -> schemas.EmbeddingResponse:
        req, items = job.body, job.items
        dim = self.engine.model.embedding_dim
        if req.dimensions is not None and req.dimensions != dim:
            raise APIError(400, f"dimensions={req.dimensions} is not available: SigLIP 2 is not Matryoshka-trained, "
                                f"so truncated embeddings lose accuracy; omit `dimensions` or send {dim}",
                           param="dimensions", code="unsupported_dimensions")
        with self.engine.admit(len(items), job.owner):
            enc = await self.encode(items, self.sequence_length(req.max_num_patches))
        vectors = l2_normalize(enc.vectors) if req.normalize else enc.vectors
        data = [schemas.Embedding(embedding=_encode(v, req.encoding_format, np.float32), index=i)
                for i, v in enumerate(vectors)]
        return schemas.EmbeddingResponse(data=data, model=req.model, usage=enc.usage)

    async def classify(self, job: Prepared[schemas.ClassifyRequest]) -> schemas.ClassifyResponse:
        req, items, prompts = job.body, job.items, job.prompts
        with self.engine.admit(len(items) + len(prompts), job.owner):
            enc = await self.encode(items, self.sequence_length(req.max_num_patches))
            classes, tokens = await self.label_embeddings(req.labels, prompts)
        probs = self.engine.probabilities(l2_normalize(enc.vectors), classes)
        enc.usage.prompt_tokens = enc.usage.total_tokens = tokens
        data = [_classification(i, row, req) for i, row in enumerate(probs)]
        return schemas.ClassifyResponse(data=data, model=req.model, usage=enc.usage)

    async def rerank(self, job: Prepared[schemas.RerankRequest]) -> schemas.RerankResponse:
        req, query, docs = job.body, job.query, job.items
        assert query is not None
        with self.engine.admit(1 + len(docs), job.owner):
            enc = await self.encode([query, *docs], self.sequence_length(req.max_num_patches))
        vectors = l2_normalize(enc.vectors)
        q, d = vectors[:1], vectors[1:]
        scores = self.engine.probabilities(q, d)[0] if query.kind == "image" else self.engine.probabilities(d, q)[:, 0]
        order = np.argsort(-scores, kind="stable")[: req.top_n]
        results = [schemas.RerankResult(index=int(j), relevance_score=float(scores[j]),
                                        document=_document(docs[j]) if req.return_documents else None) for j in order]
        return schemas.RerankResponse(results=results, model=req.model, usage=enc.usage)

    async def patch_features(self, job: Prepared[schemas.PatchFeaturesRequest]) -> schemas.PatchFeaturesResponse:
        req, items = job.body, job.items
        with self.engine.admit(len(items), job.owner):
            enc = await self.encode(items, self.sequence_length(req.max_num_patches), features=True)
        dtype = np.float16 if req.dtype == "float16" else np.float32
        data = []
        for i in range(len(items)):
            grid = enc.features[i]
            rows, cols, dim = grid.shape
            flat = grid.reshape(rows * cols, dim)
            data.append(schemas.PatchFeatures(index=i, rows=rows, cols=cols, dim=dim, dtype=req.dtype,
                                              features=_encode(flat, req.encoding_format, dtype)))
        return schemas.PatchFeaturesResponse(data=data, model=req.model, usage=enc.usage)

    # -- the shared path -----------------------------------------------------------------------

    async def encode(self, items: Sequence[Item], max_num_patches: int | None, features: bool = False) -> Encoded:
        """Embed texts and images of one request, concurrently, keeping the items' order."""
        texts = [i for i, it in enumerate(items) if it.kind == "text"]
        images = [i for i, it in enumerate(items) if it.kind == "image"]
        text_out, image_out = await _gather_or_cancel(
            self.engine.embed_texts([items[i].value for i in texts]),
            self._embed_images([items[i] for i in images], max_num_patches, features),
        )
        vectors = np.zeros((len(items), self.engine.model.embedding_dim), np.float32)
        if texts:
            vectors[texts] = text_out.embeddings
        if images:
            vectors[images] = image_out.embeddings
        tokens = sum(text_out.lengths)
        usage = schemas.Usage(prompt_tokens=tokens, total_tokens=tokens, images=len(images),
                              patches=sum(r * c for r, c in image_out.grids))
        grids = dict(zip(images, image_out.features)) if features else {}
        return Encoded(vectors, usage, grids)

    async def _embed_images(self, items: list[Item], max_num_patches: int | None, features: bool):
        try:
            share = self.images.for_request()  # the request's downloads: one byte budget, a few at a time
            blobs = await _gather_or_cancel(*(self.images.fetch(it.value, i, share) for i, it in enumerate(items)))
            patches = await self.engine.load_images(blobs, max_num_patches)
        except InputError as exc:  # .index is the position in `items`: name it as the client does
            param = items[exc.index].param if exc.index is not None else "input"
            raise input_error(exc, param) from None
        return await self.engine.embed_images(patches, features=features)

    async def label_embeddings(self, labels: list[str], prompts: list[str]) -> tuple[np.ndarray, int]:
        """(L, D) class embeddings as the library builds them, through the model's own text cache
        (Pipeline.text_cache; embedded here on the worker thread); also the text tokens computed."""
        cache = self.engine.model.text_cache
        hits, missing = cache.split(prompts)
        tokens = 0
        if missing:
            out = await self.engine.embed_texts(missing)
            tokens = sum(out.lengths)
            hits.update(cache.add(missing, l2_normalize(out.embeddings)))
        return label_matrix(prompts, hits, len(labels)), tokens

    # -- checks --------------------------------------------------------------------------------

    def check_max_num_patches(self, value: int | None) -> None:
        """A fixed-resolution model has one image size: a request that asks for a sequence length is told so."""
        rules = self.engine.model.image_rules()
        if value is not None and rules["kind"] != "naflex":
            size = rules["image_size"]
            raise APIError(400, f"max_num_patches does not apply to `{self.name}`: it has a fixed resolution "
                                f"({size}x{size} pixels, {rules['grid']}x{rules['grid']} patches); omit max_num_patches",
                           param="max_num_patches", code="unsupported_parameter")

    def _items(self, items: list[Item]) -> list[Item]:
        if not items:
            raise APIError(400, "input must not be empty", param="input", code="empty_input")
        if len(items) > self.settings.max_items:
            raise APIError(400, f"{len(items)} items; at most {self.settings.max_items} per request",
                           param="input", code="too_many_items")
        return items

    def sequence_length(self, requested: int | None) -> int | None:
        """The sequence length to run at: the request's, else the server's default, else the model's own
        (None: the model decides; always None for a fixed resolution)."""
        rules = self.engine.model.image_rules()
        if rules["kind"] != "naflex":
            return None
        if requested is not None:
            return requested
        return self.settings.default_max_num_patches or rules["default_max_num_patches"]


async def _gather_or_cancel(*aws):
    """asyncio.gather that cancels the siblings when one fails (no orphaned work)."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        return await asyncio.gather(*tasks)
    finally:
        for t in tasks:
            t.cancel()


def _encode(x: np.ndarray, encoding_format: str, dtype) -> list | str:
    """float: nested lists; base64: packed little-endian values, as OpenAI's encoding_format=base64."""
    x = np.asarray(x, dtype=np.dtype(dtype).newbyteorder("<"))
    if encoding_format == "base64":
        return base64.b64encode(x.tobytes()).decode("ascii")
    return x.tolist()


def _classification(index: int, row: np.ndarray, req: schemas.ClassifyRequest) -> schemas.Classification:
    """Labels best first; with a threshold only those at or above it, and no prediction if none is."""
    order = [int(j) for j in np.argsort(-row, kind="stable")]
    keep = [j for j in order if req.threshold is None or row[j] >= req.threshold][: req.top_k]
    best = keep[0] if keep else None
    return schemas.Classification(index=index, prediction=None if best is None else req.labels[best],
                                  score=None if best is None else float(row[best]),
                                  predictions=[schemas.LabelScore(label=req.labels[j], score=float(row[j])) for j in keep])


def _document(item: Item) -> schemas.RerankDocument:
    return schemas.RerankDocument(text=item.value) if item.kind == "text" else schemas.RerankDocument(image=item.value)
