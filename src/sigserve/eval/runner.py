"""The evaluation loop: embed (through the cache), score, and make clip_benchmark records."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .cache import EmbeddingCache, image_key
from .datasets import ClassificationData, DatasetError, ImageFileError, RetrievalData
from .metrics import class_embeddings, retrieval_metrics, zeroshot_metrics
from .sources import EmbeddingSource
from .templates import prompts_for

ZEROSHOT_TASK = "zeroshot_classification"
RETRIEVAL_TASK = "zeroshot_retrieval"


@dataclass
class Stats:
    images_embedded: int = 0
    images_cached: int = 0
    texts_embedded: int = 0
    texts_cached: int = 0


class Embedder:
    """Embeddings by way of the cache: only the missing rows go to the source, batch by batch,
    and each batch is stored before the next one starts (so a killed run resumes).

    An image that cannot be used (corrupt, too large) is skipped, its row NaN, and named in
    `skipped` (path -> reason); with `strict` it stops the run instead."""

    def __init__(self, source: EmbeddingSource, cache: EmbeddingCache, batch_size: int = 32, progress: bool = True,
                 strict: bool = False):
        self.source, self.cache = source, cache
        self.batch_size, self.progress, self.strict = max(1, batch_size), progress, strict
        self.stats = Stats()
        self.skipped: dict[str, str] = {}
        self._dim: int | None = None

    def _fill(self, keys: list[str], found: dict, embed, store, desc: str) -> tuple[np.ndarray, int]:
        missing = list(dict.fromkeys(k for k in keys if k not in found))
        with tqdm(total=len(missing), desc=desc, unit="item", disable=not self.progress or not missing) as bar:
            for start in range(0, len(missing), self.batch_size):
                chunk = missing[start : start + self.batch_size]
                vecs = embed(chunk)
                store(chunk, vecs)
                found.update(zip(chunk, vecs))
                bar.update(len(chunk))
        return np.stack([found[k] for k in keys]).astype(np.float32), len(missing)

    def images(self, paths: list[Path], max_num_patches: int | None) -> np.ndarray:
        keys = [image_key(p) for p in paths]
        path_of = dict(zip(keys, paths))
        found = self.cache.get_images(keys, max_num_patches)
        out, n_new = self._fill(
            keys, found,
            lambda ks: self._embed_images([path_of[k] for k in ks], max_num_patches),
            lambda ks, v: self._store_good(ks, max_num_patches, v),
            f"images @{max_num_patches}",
        )
        self.stats.images_embedded += n_new
        self.stats.images_cached += len(set(keys)) - n_new
        return out

    def _embed_images(self, paths: list[Path], max_num_patches: int | None) -> np.ndarray:
        try:
            return self._seen(self.source.embed_images(paths, max_num_patches))
        except ImageFileError:
            if self.strict or len(paths) == 1 and self._dim is None:
                raise
        rows = []  # one bad file in the batch: find it (and any other) one by one
        for path in paths:
            try:
                rows.append(self._seen(self.source.embed_images([path], max_num_patches))[0])
            except ImageFileError as exc:
                if self.strict or self._dim is None:
                    raise
                self.skipped[exc.path] = exc.reason
                rows.append(np.full(self._dim, np.nan, np.float32))
        return np.stack(rows)

    def _seen(self, vectors: np.ndarray) -> np.ndarray:
        self._dim = vectors.shape[1]
        return vectors

    def _store_good(self, keys: list[str], max_num_patches: int | None, vectors: np.ndarray) -> None:
        good = ~np.isnan(vectors).any(axis=1)  # a skipped image is tried again on the next run
        self.cache.put_images([k for k, g in zip(keys, good) if g], max_num_patches, vectors[good])

    def texts(self, texts: list[str]) -> np.ndarray:
        found = self.cache.get_texts(texts)
        out, n_new = self._fill(texts, found, self.source.embed_texts, self.cache.put_texts, "texts")
        self._dim = out.shape[1] if len(out) else self._dim
        self.stats.texts_embedded += n_new
        self.stats.texts_cached += len(set(texts)) - n_new
        return out


def make_record(source: EmbeddingSource, dataset: str, task: str, metrics: dict, language: str,
                max_num_patches: int | None, details: dict) -> dict:
    """One clip_benchmark result record, plus `max_num_patches` and a `sigserve` details block."""
    return {
        "dataset": dataset,
        "model": source.model_name,
        "pretrained": source.pretrained,
        "task": task,
        "metrics": metrics,
        "language": language,
        "max_num_patches": max_num_patches,
        "sigserve": details,
    }


def zeroshot_classifier(embedder: Embedder, classnames: list[str], templates: list[str]) -> np.ndarray:
    prompts = [p for c in classnames for p in prompts_for(c, templates)]
    emb = embedder.texts(prompts)
    return class_embeddings(emb.reshape(len(classnames), len(templates), -1))


def run_zeroshot(embedder: Embedder, data: ClassificationData, templates: list[str],
                 lengths: list[int | None], dataset: str | None = None) -> list[dict]:
    classifier = zeroshot_classifier(embedder, data.classnames, templates)
    details = {"num_images": len(data.paths), "num_classes": len(data.classnames), "num_templates": len(templates)}
    records = []
    for n in lengths:
        images = embedder.images(data.paths, n)
        good = _usable(images, embedder)  # skipped (unreadable) images are left out of the metrics
        metrics = zeroshot_metrics(images[good] @ classifier.T, data.labels[good])
        counts = {"num_images": int(good.sum()), "skipped_images": int((~good).sum())}
        records.append(make_record(embedder.source, dataset or data.name, ZEROSHOT_TASK, metrics, "en", n,
                                   {**details, **counts}))
    return records


def run_retrieval(embedder: Embedder, data: RetrievalData, lengths: list[int | None],
                  dataset: str | None = None) -> list[dict]:
    texts = embedder.texts(data.captions)
    records = []
    for n in lengths:
        images = embedder.images(data.image_paths, n)
        good = _usable(images, embedder)  # a skipped image leaves with its captions
        for lang in data.languages():
            img_idx, cap_idx = data.for_language(lang)
            img_idx, cap_idx = img_idx[good[img_idx]], cap_idx[good[data.caption_image[cap_idx]]]
            owner = np.searchsorted(img_idx, data.caption_image[cap_idx])
            metrics = retrieval_metrics(images[img_idx], texts[cap_idx], owner)
            details = {"num_images": int(len(img_idx)), "num_texts": int(len(cap_idx)),
                       "skipped_images": int((~good).sum())}
            name = dataset or data.name
            records.append(make_record(embedder.source, name, RETRIEVAL_TASK, metrics, lang, n, details))
    return records


def _usable(images: np.ndarray, embedder: Embedder) -> np.ndarray:
    """Rows that hold an embedding (skipped images are NaN); none at all is an error, not a metric."""
    good = ~np.isnan(images).any(axis=1)
    if not good.any():
        path, why = next(iter(embedder.skipped.items()), ("?", "?"))
        raise DatasetError(f"none of the {len(images)} images could be read, e.g. {path}: {why}")
    return good
