"""The library's front door: `sigserve.load(...)` returns a Pipeline, which turns images and texts
into embeddings, probabilities, labels and patch grids. It owns preprocessing, tokenization,
batching and scoring; the numeric work is the backend's."""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from tqdm.auto import tqdm

from sigserve.backends import Backend, create_backend
from sigserve.defaults import (
    DEFAULT_IMAGE_BATCH,
    DEFAULT_MAX_IMAGE_PIXELS,
    DEFAULT_MODEL,
    DEFAULT_TEXT_BATCH,
    DEFAULT_TEXT_CACHE_SIZE,
    IMAGE_FORMATS,
)
from sigserve.dummy import dummy_checkpoint
from sigserve.errors import InvalidArgumentError
from sigserve.images import Patches, image_size, image_to_patches, open_image, pack, resize_target, resolve_max_num_patches
from sigserve.model import MAPHead, Siglip2
from sigserve.prompts import build_prompts, check_templates, label_matrix
from sigserve.scoring import l2_normalize, sigmoid_probabilities
from sigserve.textcache import TextEmbeddingCache
from sigserve.tokenizer import TokenBatch, load_tokenizer
from sigserve.weights import Checkpoint, build_head, resolve

BUCKET_BATCHES = 4  # images are sorted by patch count within windows of this many batches (less padding)
MAX_WINDOW = 64  # images per window at most: bounds the patches held (and prefetched) in memory
PREFETCH_WORKERS = 2  # threads decoding the next window while the current one is inferred


def resolve_checkpoint(model: str | os.PathLike | Checkpoint = DEFAULT_MODEL, dummy: bool = False,
                       revision: str | None = None, cache_dir: str | None = None) -> Checkpoint:
    """The checkpoint `load` would use (a download, if any, happens here), without loading it."""
    if isinstance(model, Checkpoint):
        return model
    return dummy_checkpoint(str(model)) if dummy else resolve(model, revision, cache_dir)


def load(model: str | os.PathLike | Checkpoint = DEFAULT_MODEL, *, dummy: bool = False,
         backend: str | None = None, precision: str = "fp32", device: str = "cpu", revision: str | None = None,
         cache_dir: str | None = None, max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS, exif_transpose: bool = True,
         text_cache_size: int = DEFAULT_TEXT_CACHE_SIZE, jpeg_draft: bool = False,
         image_formats: Sequence[str] = IMAGE_FORMATS) -> Pipeline:
    """Load a SigLIP 2 (NaFlex or fixed resolution) or SigLIP checkpoint from a local folder, the HF cache
    or the hub (downloaded once); its config.json, preprocessor_config.json and tokenizer files decide
    the architecture and the image and text rules.
    `dummy=True` keeps the architecture (from the folder's config.json, a released checkpoint's by hub id,
    else the base NaFlex model's) with random weights and a stand-in tokenizer: for benchmarks and load
    tests, never for real answers.
    `backend` None (or "auto") picks the measured fastest for `device` (onnx on CPU when onnxruntime is
    installed, else torch); `precision` "fp32" is exact, "int8" (onnx) is opt-in and approximate.
    `jpeg_draft=True` decodes large JPEGs at a reduced DCT scale: several times faster on photos of many
    megapixels, but not bit-exact with the reference preprocessing, so off by default."""
    checkpoint = resolve_checkpoint(model, dummy, revision, cache_dir)
    chosen = create_backend(backend, checkpoint, precision=precision, device=device)
    return Pipeline(checkpoint, chosen, max_image_pixels=max_image_pixels, exif_transpose=exif_transpose,
                    text_cache_size=text_cache_size, jpeg_draft=jpeg_draft, image_formats=image_formats)


class Pipeline:
    """Implements sigserve.engine.ServedModel (the low-level half below), which the server drives."""

    def __init__(self, checkpoint: Checkpoint, backend: Backend, *, max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
                 exif_transpose: bool = True, text_cache_size: int = DEFAULT_TEXT_CACHE_SIZE, jpeg_draft: bool = False,
                 image_formats: Sequence[str] = IMAGE_FORMATS):
        self.checkpoint = checkpoint
        self.backend = backend
        self.config = checkpoint.config
        self.image_config = checkpoint.image  # the image rules (preprocessor_config.json)
        self.tokenizer = load_tokenizer(checkpoint.path, self.config.text.max_position_embeddings)
        self.max_image_pixels = max_image_pixels
        self.exif_transpose = exif_transpose
        self.jpeg_draft = jpeg_draft
        self.image_formats = tuple(image_formats)  # decoded; every other format is refused
        self.embedding_dim = self.config.vision.hidden_size
        self.dummy = checkpoint.source == "dummy"
        self.text_cache = TextEmbeddingCache(text_cache_size)

    def __repr__(self) -> str:
        flag = ", DUMMY (random weights)" if self.dummy else ""
        return f"<sigserve.Pipeline {self.checkpoint.model_id} [{self.backend.name}/{self.backend.precision}]{flag}>"

    # -- low level: the engine and the server drive these ------------------------------------

    @property
    def naflex(self) -> bool:
        """True for NaFlex (a sequence length per call); False for a fixed resolution."""
        return self.config.naflex

    def preprocess(self, item, index: int | None = None, max_num_patches: int | None = None) -> Patches:
        """Decode one item with this pipeline's options (EXIF, opt-in JPEG draft decoding) and pixel
        cap, then cut it into patches by the checkpoint's rules. max_num_patches: NaFlex only (None: the
        processor's default, 256); a fixed-resolution model refuses it."""
        draft = resize_target(self.image_config, max_num_patches) if self.jpeg_draft else None
        image = open_image(item, index, max_pixels=self.max_image_pixels, formats=self.image_formats,
                           exif_transpose=self.exif_transpose, draft=draft)
        return image_to_patches(image, self.image_config, max_num_patches)

    def image_size(self, item, index: int | None = None) -> tuple[int, int]:
        """(width, height) from the image's header, without decoding it."""
        return image_size(item, index, self.image_formats)

    def encode_patches(self, patches: list[Patches], with_features: bool = False):
        """Raw pooled embeddings (B, D) and, if asked, each image's (rows, cols, D) feature grid."""
        pooled, hidden = self.backend.encode_images(*pack(patches), with_features=with_features)
        if hidden is None:
            return pooled, None
        grids = [hidden[b, : p.num_patches].reshape(p.rows, p.cols, -1) for b, p in enumerate(patches)]
        return pooled, grids

    def tokenize(self, texts: Sequence[str]) -> TokenBatch:
        return self.tokenizer(list(texts))

    def encode_token_ids(self, ids: np.ndarray) -> np.ndarray:
        return self.backend.encode_texts(ids)

    def probabilities(self, image_embeds: np.ndarray, text_embeds: np.ndarray) -> np.ndarray:
        return sigmoid_probabilities(image_embeds, text_embeds, self.backend.logit_scale, self.backend.logit_bias)

    def score_patches(self, grid: np.ndarray, text_embeds: np.ndarray) -> np.ndarray:
        """One image's (rows, cols, D) patch features and (T, D) L2-normalised text embeddings -> (T, rows, cols)
        probabilities: each patch's region embedding (patch_embeddings) scored as a pooled image would be."""
        regions = self.patch_embeddings(grid)
        rows, cols, dim = regions.shape
        return self.probabilities(regions.reshape(rows * cols, dim), text_embeds).T.reshape(-1, rows, cols)

    def patch_embeddings(self, grid: np.ndarray) -> np.ndarray:
        """Patch features (..., D) -> L2-normalised region embeddings (..., D): each patch through the pooling
        head as if the probe attended to it alone (MAPHead.per_patch), so they live where image embeddings do.
        Computed in torch from the checkpoint's head, whichever backend produced the features."""
        with torch.inference_mode():
            return l2_normalize(self._head.per_patch(torch.tensor(grid, dtype=torch.float32)).numpy())

    @functools.cached_property
    def _head(self) -> MAPHead:
        return build_head(self.checkpoint)  # memory-mapped, read on first use

    # -- high level ---------------------------------------------------------------------------

    def embed_images(self, images: Iterable, max_num_patches: int | None = None, normalize: bool = True,
                     batch_size: int = DEFAULT_IMAGE_BATCH, progress: bool = False) -> np.ndarray:
        """(N, D) image embeddings, L2-normalised unless normalize=False (then the raw pooled output)."""
        pooled = [p for p, _ in self._image_batches(images, max_num_patches, batch_size, progress, False)]
        out = np.concatenate(pooled) if pooled else np.zeros((0, self.embedding_dim), np.float32)
        return l2_normalize(out) if normalize else out

    def patch_features(self, images: Iterable, max_num_patches: int | None = None,
                       batch_size: int = DEFAULT_IMAGE_BATCH, progress: bool = False) -> list[np.ndarray]:
        """Per image its (rows, cols, D) dense features (last hidden state after the final LayerNorm,
        padding removed), rows x cols being the image's NaFlex grid (fixed resolution: the model's G x G)."""
        grids: list[np.ndarray] = []
        for _, g in self._image_batches(images, max_num_patches, batch_size, progress, True):
            grids.extend(g)
        return grids

    def embed_texts(self, texts: Sequence[str], normalize: bool = True, batch_size: int = DEFAULT_TEXT_BATCH,
                    progress: bool = False) -> np.ndarray:
        texts = _as_list(texts, "texts")
        _check_batch_size(batch_size)
        tokens = self.tokenize(texts)  # validates every item before any work
        parts = [self.encode_token_ids(tokens.ids[i: i + batch_size])
                 for i in tqdm(range(0, len(texts), batch_size), disable=not progress, desc="texts", unit="batch")]
        out = np.concatenate(parts) if parts else np.zeros((0, self.embedding_dim), np.float32)
        return l2_normalize(out) if normalize else out

    def score(self, images: Iterable, texts: Sequence[str], max_num_patches: int | None = None) -> np.ndarray:
        """(n_img, n_txt) independent sigmoid probabilities that image i matches text j."""
        return self.probabilities(self.embed_images(images, max_num_patches), self.embed_texts(texts))

    def classify(self, images: Iterable, labels: Sequence[str], templates: Sequence[str] | None = None,
                 top_k: int | None = None, max_num_patches: int | None = None) -> list[list[tuple[str, float]]]:
        """Zero-shot labels per image, best first, with SigLIP's sigmoid probabilities. Each is an
        independent yes/no probability: they do not sum to 1 (several labels can be likely, or none)."""
        labels = _as_list(labels, "labels")
        if not labels:
            raise InvalidArgumentError("labels must not be empty", "labels")
        probs = self.probabilities(self.embed_images(images, max_num_patches), self.label_embeddings(labels, templates))
        k = len(labels) if top_k is None else max(0, min(int(top_k), len(labels)))
        order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        return [[(labels[j], float(row[j])) for j in idx] for row, idx in zip(probs, order)]

    def heatmap(self, image, texts: Sequence[str], max_num_patches: int | None = None) -> np.ndarray:
        """Where in `image` each text matches: (len(texts), rows, cols) calibrated probabilities, one per
        patch of the image's grid (NaFlex: at `max_num_patches`; raster order, as patch_features). Each patch is scored
        as the pooled image is, as if the pooling head had seen that patch alone (MaskCLIP's approach)."""
        texts = _as_list(texts, "texts")
        if not texts:
            raise InvalidArgumentError("texts must not be empty", "texts")
        [grid] = self.patch_features([image], max_num_patches)
        return self.score_patches(grid, self.embed_texts(texts))

    def label_embeddings(self, labels: Sequence[str], templates: Sequence[str] | None = None) -> np.ndarray:
        """(L, D): per label the mean of its L2-normalised prompt embeddings, re-normalised. Prompt
        embeddings go through the model's text cache (a fixed label set costs nothing the second time)."""
        prompts = build_prompts(labels, check_templates(templates))
        hits, missing = self.text_cache.split(prompts)
        if missing:
            hits.update(self.text_cache.add(missing, self.embed_texts(missing)))
        return label_matrix(prompts, hits, len(labels))

    def collection(self, name: str, uri: str | os.PathLike | None = None, **options):
        """The image collection `name` (created when absent) for search by text, image or both:
        see sigserve.collections.open. Imported lazily: collections sit above the pipeline."""
        from sigserve import collections

        return collections.open(self, name, uri, **options)

    def describe(self) -> dict:
        with torch.device("meta"):
            counts = _parameter_counts(Siglip2(self.config))
        return {
            "model": self.checkpoint.model_id,
            "source": self.checkpoint.source,
            "path": str(self.checkpoint.path),
            "weights_fingerprint": self.checkpoint.fingerprint(),  # a digest of the weights' contents
            "dummy": self.dummy,
            "embedding_dim": self.embedding_dim,
            "architecture": "naflex" if self.naflex else "fixed",
            "image": self.image_rules(),
            "text": {"rules": self.tokenizer.rules, "context_length": self.tokenizer.context_length},
            "parameters": counts,
            "config": self.config.to_dict(),
            "logit_scale": self.backend.logit_scale,
            "logit_bias": self.backend.logit_bias,
            **self.backend.describe(),
        }

    def image_rules(self) -> dict:
        """How images are prepared: NaFlex (a sequence length per call) or a fixed square resize."""
        rules = self.image_config
        out: dict = {"resample": rules.resample_name, "patch_size": rules.patch_size,
                     "image_mean": list(rules.image_mean), "image_std": list(rules.image_std)}
        if rules.naflex:
            return {"kind": "naflex", "default_max_num_patches": rules.max_num_patches, **out}
        return {"kind": "fixed", "image_size": rules.size, "grid": rules.grid, **out}

    # -- helpers -------------------------------------------------------------------------------

    def _image_batches(self, images, max_num_patches, batch_size, progress, with_features):
        """(pooled, grids) per window of images, in input order. Two savings, neither changing a result:
        the next window is decoded in threads while this one is inferred, and within a window images are
        batched in order of patch count, so a batch pads only to its own longest image."""
        resolve_max_num_patches(self.image_config, max_num_patches)  # a bad value fails before any decode
        _check_batch_size(batch_size)
        items = _as_list(images, "images")
        window = max(batch_size, min(batch_size * BUCKET_BATCHES, MAX_WINDOW))
        bar = tqdm(total=len(items), disable=not progress, desc="images", unit="img")
        pool = ThreadPoolExecutor(PREFETCH_WORKERS, thread_name_prefix="sigserve-decode")

        def submit(start):
            return [pool.submit(self.preprocess, item, start + i, max_num_patches)
                    for i, item in enumerate(items[start: start + window])]

        try:
            pending = submit(0)
            for start in range(0, len(items), window):
                patches = [f.result() for f in pending]  # the first bad item (lowest index) raises
                pending = submit(start + window) if start + window < len(items) else []
                order = sorted(range(len(patches)), key=lambda i: patches[i].num_patches)
                pooled: list = [None] * len(patches)
                grids: list = [None] * len(patches)
                for b in range(0, len(order), batch_size):
                    idx = order[b: b + batch_size]
                    p, g = self.encode_patches([patches[i] for i in idx], with_features)
                    for j, i in enumerate(idx):
                        pooled[i] = p[j]
                        grids[i] = g[j] if with_features else None
                yield np.stack(pooled), (grids if with_features else None)
                bar.update(len(patches))
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            bar.close()


def _as_list(items, name: str) -> list:
    if isinstance(items, (str, bytes, np.ndarray)) or not isinstance(items, Iterable):
        raise InvalidArgumentError(f"{name} must be a list (wrap a single item in a list)", name)
    return list(items)


def _check_batch_size(batch_size: int) -> None:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidArgumentError(f"batch_size must be a positive integer, got {batch_size!r}", "batch_size")


def _parameter_counts(model: Siglip2) -> dict[str, int]:
    count = lambda m: sum(p.numel() for p in m.parameters())
    return {"total": count(model), "vision": count(model.vision_model), "text": count(model.text_model),
            "text_token_embedding": model.text_model.embeddings.token_embedding.weight.numel()}
