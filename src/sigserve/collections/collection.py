"""A collection: images embedded once, searched by text, image or both, with metadata filters and
SigLIP's calibrated probabilities. One LanceDB table; see store.py for where it lives."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
from PIL import Image

from sigserve.collections import ann
from sigserve.collections import fields as fieldmod
from sigserve.collections.errors import ModelMismatchError
from sigserve.collections.filters import compile_filter
from sigserve.collections.store import CollectionMeta, Store
from sigserve.errors import ImageDecodeError, InvalidArgumentError
from sigserve.images import resolve_max_num_patches
from sigserve.scoring import l2_normalize

ROW_COLUMNS = ["id", "source", "content_hash", "max_num_patches", "created", "metadata"]
ID_CHUNK = 1000  # ids per `id IN (...)` query
RANK_MARGIN = 8  # extra candidates re-ranked in numpy, so near-ties at the cut follow exact scores
THRESHOLD_SLACK = 1e-3  # cosine slack when turning a probability threshold into a search bound
FIRST_THRESHOLD_BATCH = 256


@dataclass
class Hit:
    id: str
    score: float  # cosine similarity of the query and the image
    metadata: dict = field(default_factory=dict)
    probability: float | None = None  # text queries: sigmoid(exp(t) * cos(text, image) + b)
    source: str | None = None


@dataclass
class AddResult:
    ids: list[str]  # in input order (an id given twice appears twice; the last one is stored)
    inserted: int
    updated: int


def content_hash(item: Any, index: int | None = None) -> str:
    """sha256 of the image's bytes (a file's content; raw pixels for PIL images and arrays)."""
    h = hashlib.sha256()
    if isinstance(item, (bytes, bytearray, memoryview)):
        h.update(bytes(item))
    elif isinstance(item, (str, os.PathLike)):
        try:
            with open(item, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
        except OSError as exc:
            raise ImageDecodeError(index, f"cannot read {item}: {exc.strerror or exc}") from None
    elif isinstance(item, Image.Image):
        h.update(f"{item.mode}{item.size}".encode())
        h.update(item.tobytes())
    elif isinstance(item, np.ndarray):
        h.update(f"{item.dtype}{item.shape}".encode())
        h.update(np.ascontiguousarray(item).tobytes())
    else:
        raise ImageDecodeError(index, f"expected a path, bytes, PIL image or numpy array, got {type(item).__name__}")
    return h.hexdigest()


def sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class Collection:
    def __init__(self, store: Store, name: str, model):
        self.store = store
        self.name = name
        self.model = model
        self.table = store.table(name)
        self.meta = CollectionMeta.from_schema(name, self.table.schema)

    def __repr__(self) -> str:
        return f"<sigserve.Collection {self.name!r} ({self.count()} items) in {self.store.uri}>"

    # -- facts -----------------------------------------------------------------------------------

    @property
    def fields(self) -> dict[str, str]:
        """Metadata keys seen so far (or declared) and their types."""
        return fieldmod.fields_of(self.table.schema)

    def count(self, filter: dict | None = None) -> int:
        return self.table.count_rows(compile_filter(filter, self.fields))

    def info(self) -> dict:
        return self.store.info(self.name)

    def check_model(self) -> None:
        """Refuse to mix embeddings of different weights (scores would be meaningless)."""
        stored = (self.meta.model, self.meta.fingerprint)
        current = (self.model.checkpoint.model_id, self.model.checkpoint.fingerprint())
        if stored != current:
            raise ModelMismatchError(self.name, f"{stored[0]} (weights {stored[1]})",
                                     f"{current[0]} (weights {current[1]})")

    def sequence_length(self, max_num_patches: int | None) -> int | None:
        """What an image is embedded at (and stored as): NaFlex, the given length or the model's default;
        a fixed-resolution model, None (and a length given to it is refused)."""
        rules = getattr(self.model, "image_config", None)
        return max_num_patches if rules is None else resolve_max_num_patches(rules, max_num_patches)

    # -- writing ---------------------------------------------------------------------------------

    def add(self, images: Iterable, ids: Sequence[str] | None = None, metadata: Sequence[dict | None] | None = None,
            max_num_patches: int | None = None, batch_size: int = 8, progress: bool = False,
            auto_index: bool = True) -> AddResult:
        """Embed and upsert images (paths, bytes, PIL images, arrays). Ids default to the content
        hash, so the same image added twice is stored once. All or nothing: a bad image raises its
        InputError (naming its index) before anything is written. max_num_patches: NaFlex only (None:
        the model's default)."""
        self.check_model()
        max_num_patches = self.sequence_length(max_num_patches)
        images = list(images)
        hashes = [content_hash(item, i) for i, item in enumerate(images)]
        raw = self.model.embed_images(images, max_num_patches, normalize=False, batch_size=batch_size,
                                      progress=progress)
        sources = [str(item) if isinstance(item, (str, os.PathLike)) else None for item in images]
        return self.add_embeddings(raw, ids=list(ids) if ids is not None else hashes, hashes=hashes,
                                   sources=sources, metadata=metadata, max_num_patches=max_num_patches,
                                   auto_index=auto_index)

    def add_embeddings(self, vectors: np.ndarray, *, ids: Sequence[str], hashes: Sequence[str],
                       sources: Sequence[str | None] | None = None, metadata: Sequence[dict | None] | None = None,
                       max_num_patches: int | None | Sequence[int | None] = None, auto_index: bool = True) -> AddResult:
        """Upsert precomputed image embeddings (N, D), raw or normalised (stored normalised), in one
        commit: when this returns, the items are durable. The server and the CLI embed through their
        own paths and store through this one."""
        self.check_model()
        n = len(ids)
        metadata = list(metadata) if metadata is not None else [None] * n
        sources = list(sources) if sources is not None else [None] * n
        if max_num_patches is None or isinstance(max_num_patches, int):
            patches = [self.sequence_length(max_num_patches)] * n
        else:
            patches = list(max_num_patches)
        vectors = np.asarray(vectors, np.float32).reshape(n, -1) if n else np.zeros((0, self.meta.dim), np.float32)
        if not (len(hashes) == len(metadata) == len(sources) == len(patches) == n):
            raise InvalidArgumentError("ids, hashes, sources, metadata and max_num_patches must be as long as the images")
        for i, item_id in enumerate(ids):
            if not isinstance(item_id, str) or not item_id:
                raise InvalidArgumentError(f"ids[{i}]: an id is a non-empty string", f"ids[{i}]")
        self._ensure_fields(self.check_metadata(metadata))
        keep = list({item_id: i for i, item_id in enumerate(ids)}.values())  # last occurrence wins
        rows = self._rows([ids[i] for i in keep], l2_normalize(vectors[keep]), [hashes[i] for i in keep],
                          [sources[i] for i in keep], [metadata[i] for i in keep], [patches[i] for i in keep])
        result = (self.table.merge_insert("id").when_matched_update_all().when_not_matched_insert_all().execute(rows)
                  if len(keep) else None)
        if auto_index and self.needs_optimize():
            self.optimize()
        return AddResult(list(ids), result.num_inserted_rows if result else 0, result.num_updated_rows if result else 0)

    def check_metadata(self, metadata: Sequence[dict | None], param: str = "metadata") -> dict[str, str]:
        """Validate every item's metadata; returns the new keys with their types."""
        known, new = self.fields, dict[str, str]()
        for i, m in enumerate(metadata):
            new.update(fieldmod.check_metadata(m, {**known, **new}, f"{param}[{i}]"))
        return new

    def delete(self, ids: Sequence[str]) -> int:
        """Remove these ids (unknown ones are ignored). Returns how many were removed."""
        before = self.table.count_rows()
        for chunk in _chunks(list(ids), ID_CHUNK):
            self.table.delete(f"id IN ({', '.join(sql_string(i) for i in chunk)})")
        return before - self.table.count_rows()

    def update_metadata(self, ids: Sequence[str], metadata: Sequence[dict | None]) -> None:
        """Replace the metadata of stored items, keeping their vectors (no embedding)."""
        stored = self._fetch(ids, with_vectors=True)
        found = [i for i, item_id in enumerate(ids) if item_id in stored]
        if not found:
            return
        self._ensure_fields(self.check_metadata([metadata[i] for i in found]))
        rows = [stored[ids[i]] for i in found]
        table = self._rows([r["id"] for r in rows], np.stack([r["vector"] for r in rows]),
                           [r["content_hash"] for r in rows], [r["source"] for r in rows],
                           [metadata[i] for i in found], [r["max_num_patches"] for r in rows])
        self.table.merge_insert("id").when_matched_update_all().when_not_matched_insert_all().execute(table)

    # -- reading ---------------------------------------------------------------------------------

    def get(self, ids: Sequence[str]) -> list[dict | None]:
        """The stored items (id, source, content_hash, max_num_patches, created, metadata), aligned
        with `ids`; None where an id is not stored."""
        stored = self._fetch(ids, with_vectors=False)
        return [stored.get(item_id) for item_id in ids]

    def sources(self) -> dict[str, str]:
        """{id: source} of every item that has a source (the CLI prunes with it)."""
        rows = self.table.search().where("source IS NOT NULL").select(["id", "source"]).limit(None).to_arrow()
        return dict(zip(rows["id"].to_pylist(), rows["source"].to_pylist()))

    def search(self, text: str | None = None, image: Any = None, top_k: int | None = None, filter: dict | None = None,
               threshold: float | None = None, text_weight: float = 0.5, max_num_patches: int | None = None) -> list[Hit]:
        """Best matches first. A query is a text, an image, or both (the re-normalised weighted sum
        `text_weight * text + (1 - text_weight) * image`). With a text, every hit carries SigLIP's
        calibrated probability that it matches the text; `threshold` keeps hits with probability >=
        threshold and then returns all of them unless `top_k` is given. Without a threshold,
        `top_k` defaults to 10."""
        self.check_model()
        text_vec = self.model.embed_texts([text])[0] if text is not None else None
        image_vec = self.model.embed_images([image], max_num_patches)[0] if image is not None else None
        return self.search_vectors(text_vec, image_vec, top_k=top_k, filter=filter, threshold=threshold,
                                   text_weight=text_weight)

    def search_vectors(self, text_vector: np.ndarray | None = None, image_vector: np.ndarray | None = None, *,
                       top_k: int | None = None, filter: dict | None = None, threshold: float | None = None,
                       text_weight: float = 0.5) -> list[Hit]:
        """`search` on precomputed normalised query embeddings (D,) (the server embeds its own)."""
        self.check_model()
        query = _combine(text_vector, image_vector, text_weight)
        if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
            raise InvalidArgumentError(f"top_k must be a positive integer, got {top_k!r}", "top_k")
        where = compile_filter(filter, self.fields)
        if threshold is None:
            rows = self._nearest(query, (top_k or 10) + RANK_MARGIN, where)
        else:
            if text_vector is None:
                raise InvalidArgumentError("threshold needs a text query: probabilities are of a text-image pair",
                                           "threshold")
            if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
                raise InvalidArgumentError(f"threshold must be a probability in [0, 1], got {threshold!r}", "threshold")
            rows = self._within(text_vector, self._cosine_for(threshold) - THRESHOLD_SLACK, where)
        return self._hits(rows, query, text_vector, threshold, top_k if threshold is not None else (top_k or 10))

    # -- maintenance -----------------------------------------------------------------------------

    def needs_optimize(self) -> bool:
        return ann.needs_work(self.table, self.store.index_threshold)

    def optimize(self, index: bool | None = None) -> dict:
        """Compact small commits and bring the ANN index up to date: built when past the store's
        threshold (or when `index=True` and there are enough rows to train it), updated when rows
        were added since. Returns the index state."""
        rows = self.table.count_rows()
        has_index = ann.vector_index(self.table) is not None
        build = index if index is not None else rows >= self.store.index_threshold
        self.table.optimize()  # compaction, plus new rows folded into an existing index
        if build and not has_index and rows >= ann.MIN_INDEX_ROWS:
            ann.build(self.table)
        return ann.index_state(self.table, self.store.index_threshold)

    # -- internals -------------------------------------------------------------------------------

    def _ensure_fields(self, new: dict[str, str]) -> None:
        missing = {k: t for k, t in new.items() if k not in self.fields}
        if missing:  # new metadata keys: all-null typed columns for the rows already stored
            self.table.add_columns([pa.field(fieldmod.column(k), fieldmod.ARROW_TYPES[t]) for k, t in missing.items()])

    def _rows(self, ids, vectors, hashes, sources, metadata, patches) -> pa.Table:
        n, dim = len(ids), self.meta.dim
        now = dt.datetime.now(dt.UTC)
        columns = {
            "id": pa.array(ids, pa.string()),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(np.asarray(vectors, np.float32).ravel()), dim),
            "max_num_patches": pa.array(patches, pa.int32()),
            "content_hash": pa.array(hashes, pa.string()),
            "source": pa.array(sources, pa.string()),
            "created": pa.array([now] * n, pa.timestamp("ms", tz="UTC")),
            "metadata": pa.array([fieldmod.to_json(m) for m in metadata], pa.string()),
            **fieldmod.column_arrays(metadata, self.fields),
        }
        return pa.table(columns, schema=self.table.schema)

    def _fetch(self, ids: Sequence[str], with_vectors: bool) -> dict[str, dict]:
        columns = ROW_COLUMNS + (["vector"] if with_vectors else [])
        out: dict[str, dict] = {}
        for chunk in _chunks(list(dict.fromkeys(ids)), ID_CHUNK):
            where = f"id IN ({', '.join(sql_string(i) for i in chunk)})"
            table = self.table.search().where(where).select(columns).limit(len(chunk)).to_arrow()
            for row in table.to_pylist():
                row["metadata"] = fieldmod.from_json(row["metadata"])
                if with_vectors:
                    row["vector"] = np.asarray(row["vector"], np.float32)
                out[row["id"]] = row
        return out

    def _nearest(self, query: np.ndarray, k: int, where: str | None) -> pa.Table:
        indexed = ann.vector_index(self.table) is not None
        search = ann.tune(self.table.search(query, vector_column_name="vector"), indexed)
        search = search.select(["id", "source", "metadata", "vector", "_distance"]).limit(k)
        return (search.where(where, prefilter=True) if where else search).to_arrow()

    def _within(self, text_vector: np.ndarray, min_cosine: float, where: str | None) -> pa.Table:
        """Every row with cosine(text, image) >= min_cosine: nearest neighbours of the text, fetched
        in growing batches until the last one falls below the bound."""
        k, total = FIRST_THRESHOLD_BATCH, self.table.count_rows()
        while True:
            rows = self._nearest(text_vector, k, where)
            scores = _vectors(rows) @ text_vector if rows.num_rows else np.zeros(0, np.float32)
            if rows.num_rows < k or k >= total or scores.min() < min_cosine:
                return rows.filter(pa.array(scores >= min_cosine)) if rows.num_rows else rows
            k *= 4

    def _cosine_for(self, probability: float) -> float:
        """The cosine at which sigmoid(exp(t) * cos + b) = probability (it is monotone in cos)."""
        if probability <= 0:
            return -1.0
        if probability >= 1:
            return 1.0
        logit = np.log(probability / (1 - probability))
        cos = (logit - self.model.backend.logit_bias) / np.exp(self.model.backend.logit_scale)
        return float(np.clip(cos, -1.0, 1.0))

    def _hits(self, rows: pa.Table, query: np.ndarray, text_vector, threshold, top_k) -> list[Hit]:
        if rows.num_rows == 0:
            return []
        vectors = _vectors(rows)  # (n, D)
        scores = vectors @ query  # exact cosines, the same arithmetic as a brute-force ranking
        probs = self.model.probabilities(vectors, text_vector[None, :])[:, 0] if text_vector is not None else None
        order = [int(i) for i in np.argsort(-scores, kind="stable")]
        if probs is not None and threshold is not None:
            order = [i for i in order if probs[i] >= threshold]
        order = order[:top_k] if top_k is not None else order
        ids, sources, metadata = rows["id"].to_pylist(), rows["source"].to_pylist(), rows["metadata"].to_pylist()
        return [Hit(ids[i], float(scores[i]), fieldmod.from_json(metadata[i]),
                    float(probs[i]) if probs is not None else None, sources[i]) for i in order]


def _vectors(rows: pa.Table) -> np.ndarray:
    column = rows["vector"].combine_chunks()
    return column.flatten().to_numpy(zero_copy_only=False).reshape(len(column), -1).astype(np.float32, copy=False)


def _combine(text_vector, image_vector, text_weight: float) -> np.ndarray:
    """(D,) query: text, image, or their re-normalised weighted sum."""
    if text_vector is None and image_vector is None:
        raise InvalidArgumentError("a query needs a text, an image, or both", "query")
    if text_vector is None:
        return np.asarray(image_vector, np.float32)
    if image_vector is None:
        return np.asarray(text_vector, np.float32)
    if isinstance(text_weight, bool) or not isinstance(text_weight, (int, float)) or not 0 <= text_weight <= 1:
        raise InvalidArgumentError(f"text_weight must be in [0, 1], got {text_weight!r}", "text_weight")
    mixed = text_weight * np.asarray(text_vector, np.float32) + (1 - text_weight) * np.asarray(image_vector, np.float32)
    return l2_normalize(mixed)


def _chunks(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start: start + size]
