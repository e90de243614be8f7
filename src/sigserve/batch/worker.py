"""The embed stage: a Ray actor that loads the model once, then reads, decodes and embeds batches of
inputs (a batch of files, or one tar shard streamed in batches).

Each image is decoded with the model's own preprocessing (`Pipeline.preprocess`: EXIF, pixel cap,
NaFlex resize), in a pool of threads, and embedded with `Pipeline.encode_patches`, then L2-normalised:
the same arithmetic as `model.embed_images`. An image that fails to decode becomes an error row.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import pyarrow as pa

from sigserve.batch.read import read_files, read_shards
from sigserve.batch.schema import BUSY_S, DATA, EMBEDDING, ERROR, MAX_NUM_PATCHES, PEAK_RSS, WORKER, error_text
from sigserve.images import resolve_max_num_patches
from sigserve.scoring import l2_normalize


class Embedder:
    """Ray Data calls one instance per actor: __init__ once, then __call__ per batch of rows."""

    def __init__(self, model: str, *, dummy: bool, backend: str | None, precision: str, threads: int,
                 max_num_patches: int | None, batch_size: int, kind: str, window: int, max_bytes: int):
        import ray
        import torch

        import sigserve

        torch.set_num_threads(threads)  # also the onnx backend's intra-op threads (it follows torch's)
        # Actors starting together on one node build its cached files (ONNX export, dummy weights) once:
        # sigserve.artifacts locks each build.
        self.pipe = sigserve.load(model, dummy=dummy, backend=backend, precision=precision)
        # NaFlex: the length asked for, or the model's default; a fixed resolution: None (one asked for: an error)
        self.max_num_patches = resolve_max_num_patches(self.pipe.image_config, max_num_patches)
        self.batch_size = batch_size
        self.kind, self.window, self.max_bytes = kind, window, max_bytes
        self.decoder = ThreadPoolExecutor(threads, thread_name_prefix="sigserve-batch-decode")
        self.name = f"{ray.get_runtime_context().get_node_id()[:8]}/{os.getpid()}"

    def __call__(self, batch: pa.Table) -> Iterator[pa.Table]:
        """Files (id, path, location, metadata...) or tar shards (shard, location, done) -> output rows
        (id, path, metadata..., embedding, max_num_patches, error, worker stats), a table per window."""
        if self.kind == "tar":
            start = time.perf_counter()
            for chunk in read_shards(batch, self.max_bytes, self.window):
                yield self.embed(chunk, start)
                start = time.perf_counter()
        else:
            start = time.perf_counter()
            yield self.embed(read_files(batch, self.max_bytes), start)

    def embed(self, batch: pa.Table, start: float) -> pa.Table:
        """(id, path, metadata..., data, error) -> the output rows, in the same order."""
        errors = batch[ERROR].to_pylist()
        pending = {i: self.decoder.submit(self.pipe.preprocess, data, None, self.max_num_patches)
                   for i, data in enumerate(batch[DATA].to_pylist()) if errors[i] is None}
        vectors = np.zeros((batch.num_rows, self.pipe.embedding_dim), np.float32)  # (B, D)
        ok = np.zeros(batch.num_rows, bool)
        order = list(pending)
        # Encode in model batches, in row order: while one is encoded, the threads decode the next ones.
        # (embed_images also sorts a window by patch count; that would wait for the whole window's
        # decode, and NaFlex grids come within a few patches of max_num_patches for most images.)
        for s in range(0, len(order), self.batch_size):
            rows, patches = self._collect(order[s: s + self.batch_size], pending, errors)
            if rows:
                pooled, _ = self.pipe.encode_patches(patches)  # (b, D) raw pooled
                vectors[rows] = l2_normalize(pooled)
                ok[rows] = True
        return self._output(batch, vectors, ok, errors, time.perf_counter() - start)

    def _collect(self, rows: list[int], pending: dict[int, Future], errors: list) -> tuple[list[int], list]:
        good, patches = [], []
        for i in rows:
            try:
                patches.append(pending[i].result())
                good.append(i)
            except Exception as exc:  # noqa: BLE001 - one bad image is this row's error, never the job's
                errors[i] = error_text(exc)
        return good, patches

    def _output(self, batch: pa.Table, vectors: np.ndarray, ok: np.ndarray, errors: list, busy: float) -> pa.Table:
        n, dim = vectors.shape
        embedding = pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), dim, mask=pa.array(~ok))
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
        columns = {
            EMBEDDING: embedding,
            MAX_NUM_PATCHES: pa.array([self.max_num_patches] * n, pa.int32()),  # null: a fixed resolution
            ERROR: pa.array(errors, pa.string()),
            WORKER: pa.array([self.name] * n, pa.string()),
            BUSY_S: pa.array(np.full(n, busy / max(n, 1))),
            PEAK_RSS: pa.array(np.full(n, peak, np.int64)),
        }
        out = batch.drop_columns([DATA, ERROR])
        for name, column in columns.items():
            out = out.append_column(name, column)
        return out

