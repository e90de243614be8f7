"""The async face of the engine, used by the server (one instance per app, built in its lifespan).

- admission: a bounded count of items admitted but not finished; beyond it, QueueFullError (429);
- images: decode + NaFlex preprocessing run in a thread pool, never on the event loop;
- inference: one worker thread owns the model and micro-batches each tower (see worker.py)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from sigserve.engine.errors import EngineUnavailableError, QueueFullError
from sigserve.engine.protocol import ServedModel
from sigserve.engine.worker import BatchObserver, InferenceWorker, Tower
from sigserve.images import Patches


@dataclass(frozen=True)
class EngineConfig:
    max_batch_images: int = 8
    max_batch_texts: int = 32
    max_wait_ms: float = 5.0
    max_pending_items: int = 256  # admitted but unfinished items, over all requests
    preprocess_threads: int = 2
    timeout_s: float = 120.0  # a request never waits longer than this for the worker
    retry_after_s: float = 1.0  # what a 429 tells clients to wait


@dataclass
class TextResult:
    embeddings: np.ndarray  # (N, D) raw pooled float32
    lengths: list[int]  # non-padding tokens per text


@dataclass
class ImageResult:
    embeddings: np.ndarray  # (N, D) raw pooled float32
    grids: list[tuple[int, int]]  # (rows, cols) per image
    features: list[np.ndarray] | None  # per image (rows, cols, D), when asked for


class Engine:
    def __init__(self, model: ServedModel, config: EngineConfig | None = None, observer: BatchObserver | None = None):
        self.model = model
        self.config = config or EngineConfig()
        self._observer = observer
        self._pending = 0
        self._pool: ThreadPoolExecutor | None = None
        self._worker: InferenceWorker | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._pool = ThreadPoolExecutor(self.config.preprocess_threads, thread_name_prefix="sigserve-preprocess")
        towers = {
            "text": Tower(self._run_texts, self.config.max_batch_texts),
            "image": Tower(self._run_images, self.config.max_batch_images),
        }
        self._worker = InferenceWorker(towers, self.config.max_wait_ms / 1000.0, self._observer, self._more_coming)
        self._worker.start()

    def stop(self) -> None:
        if self._worker is not None:
            self._worker.stop()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    @property
    def ready(self) -> bool:
        return self._worker is not None and self._worker.alive

    @property
    def pending(self) -> int:
        return self._pending

    def _more_coming(self, queued: int) -> bool:
        """Called by the worker (under its lock) before letting a batch fill: when every admitted item
        is already queued, nothing else can join, so waiting max_wait would only add latency (a lone
        request at idle). Without admission (pending 0: the engine used directly) it always waits."""
        pending = self._pending  # an int written on the event loop: a stale read only means waiting
        return not (0 < pending <= queued)

    # -- admission ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def admit(self, items: int) -> Iterator[None]:
        """Reserve room for `items` for the duration of a request. A request is admitted when the
        backlog is empty even if it alone exceeds the capacity, so that no request starves."""
        capacity = self.config.max_pending_items
        if self._pending and self._pending + items > capacity:
            raise QueueFullError(self._pending, capacity, self.config.retry_after_s)
        if not self.ready:
            raise EngineUnavailableError("inference worker is not running")
        self._pending += items
        try:
            yield
        finally:
            self._pending -= items

    # -- preprocessing (thread pool) ------------------------------------------------------------

    async def load_images(self, items: Sequence[Any], max_num_patches: int) -> list[Patches]:
        """Decode and patchify each item (the model's own preprocess, in the thread pool). Raises the
        InputError of the first bad item by position, its `.index` being that position."""
        loop = asyncio.get_running_loop()
        jobs = [loop.run_in_executor(self._pool, self.model.preprocess, item, i, max_num_patches)
                for i, item in enumerate(items)]
        results = await asyncio.gather(*jobs, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return results  # type: ignore[return-value]  # every BaseException was raised above

    async def tokenize(self, texts: Sequence[str]):
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self.model.tokenize, list(texts))

    # -- inference (worker thread) ------------------------------------------------------------

    async def embed_texts(self, texts: Sequence[str]) -> TextResult:
        if not texts:
            return TextResult(self._empty(), [])
        tokens = await self.tokenize(texts)
        rows = await self._submit("text", list(tokens.ids))
        return TextResult(np.stack(rows) if rows else self._empty(), list(tokens.lengths))

    async def embed_images(self, patches: Sequence[Any], features: bool = False) -> ImageResult:
        outputs = await self._submit("image", [(p, features) for p in patches])
        pooled = np.stack([o[0] for o in outputs]) if outputs else self._empty()
        grids = [(p.rows, p.cols) for p in patches]
        return ImageResult(pooled, grids, [o[1] for o in outputs] if features else None)

    def probabilities(self, image_embeds: np.ndarray, text_embeds: np.ndarray) -> np.ndarray:
        # Pure arithmetic on two scalars of the checkpoint: safe beside the worker thread.
        return np.asarray(self.model.probabilities(image_embeds, text_embeds), dtype=np.float32)

    async def _submit(self, tower: str, payloads: list) -> list:
        if not payloads:
            return []
        if self._worker is None:
            raise EngineUnavailableError("engine not started")
        futures = self._worker.submit(tower, payloads)
        try:
            return await asyncio.wait_for(asyncio.gather(*futures), self.config.timeout_s)
        except TimeoutError:
            raise EngineUnavailableError(f"inference did not finish within {self.config.timeout_s:g} s") from None
        finally:
            for f in futures:  # on cancellation or failure, leave nothing for the worker to do
                f.cancel()

    def _empty(self) -> np.ndarray:
        return np.zeros((0, self.model.embedding_dim), dtype=np.float32)

    # Called on the worker thread only.
    def _run_texts(self, rows: list[np.ndarray]) -> list[np.ndarray]:
        pooled = self.model.encode_token_ids(np.stack(rows))
        return list(np.asarray(pooled, dtype=np.float32))

    def _run_images(self, payloads: list[tuple[Any, bool]]) -> list[tuple[np.ndarray, Any]]:
        patches = [p for p, _ in payloads]
        want = any(f for _, f in payloads)
        pooled, grids = self.model.encode_patches(patches, with_features=want)
        pooled = np.asarray(pooled, dtype=np.float32)
        return [(pooled[i], grids[i] if grids is not None and payloads[i][1] else None) for i in range(len(payloads))]


__all__ = ["Engine", "EngineConfig", "ImageResult", "TextResult"]
