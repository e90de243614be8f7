"""The async face of the engine, used by the server (one instance per app, built in its lifespan).

- admission: a bounded count of items admitted but not finished, with a share per owner (API key);
  beyond it, QueueFullError (429) with a retry-after estimated from the backlog and the measured rate;
- images: decode + NaFlex preprocessing run in a thread pool, never on the event loop, within a pixel
  budget per request and one over all decodes in flight (a decode waits for room instead of growing
  memory); freed memory is given back after large images;
- inference: one worker thread owns the model and micro-batches each tower, fairly across owners
  (see worker.py). The owner is the one named by the `admit` block the work runs in."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from sigserve.engine.errors import EngineUnavailableError, QueueFullError
from sigserve.engine.protocol import ServedModel
from sigserve.engine.worker import BatchObserver, InferenceWorker, Tower
from sigserve.errors import RequestTooLargeError
from sigserve.images import Patches
from sigserve.memory import release_freed_heap

_owner: contextvars.ContextVar[str] = contextvars.ContextVar("sigserve_owner", default="")
TRIM_AFTER_PIXELS = 16_000_000  # give freed memory back after decoding an image this large


@dataclass(frozen=True)
class EngineConfig:
    max_batch_images: int = 8
    max_batch_texts: int = 32
    max_wait_ms: float = 5.0
    max_pending_items: int = 256  # admitted but unfinished items, over all requests
    max_pending_per_owner: int = 128  # one owner's share: the rest stays open to the others
    preprocess_threads: int = 2
    decode_budget_pixels: int = 64_000_000  # pixels being decoded at once, over all requests
    max_request_pixels: int | None = None  # pixels of all images of one request (None: no limit)
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
        self._by_owner: dict[str, int] = {}
        self._rate = Throughput()
        self._budget = PixelBudget(self.config.decode_budget_pixels)
        self._pool: ThreadPoolExecutor | None = None
        self._worker: InferenceWorker | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._pool = ThreadPoolExecutor(self.config.preprocess_threads, thread_name_prefix="sigserve-preprocess")
        towers = {
            "text": Tower(self._run_texts, self.config.max_batch_texts),
            "image": Tower(self._run_images, self.config.max_batch_images),
        }
        observer = _Observers(self._rate, self._observer)
        self._worker = InferenceWorker(towers, self.config.max_wait_ms / 1000.0, observer, self._more_coming)
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
    def admit(self, items: int, owner: str = "") -> Iterator[None]:
        """Reserve room for `items` for the duration of a request, and run its work as `owner`'s.
        An owner holds at most max_pending_per_owner items, so others always find room; a request
        larger than that share is admitted when its owner has nothing pending (no request starves),
        and counts as one full share against the total."""
        cap, capacity = self.config.max_pending_per_owner, self.config.max_pending_items
        mine = self._by_owner.get(owner, 0)
        load = sum(min(n, cap) for o, n in self._by_owner.items() if o != owner)
        if (mine and mine + items > cap) or (self._pending and load + min(mine + items, cap) > capacity):
            raise QueueFullError(self._pending, capacity, self._retry_after())
        if not self.ready:
            raise EngineUnavailableError("inference worker is not running")
        self._pending += items
        self._by_owner[owner] = mine + items
        token = _owner.set(owner)
        try:
            yield
        finally:
            _owner.reset(token)
            self._pending -= items
            self._by_owner[owner] -= items
            if not self._by_owner[owner]:
                del self._by_owner[owner]

    def _retry_after(self) -> float:
        """Seconds until the backlog has drained at the measured rate (1 to 60; the configured value
        until a rate has been measured)."""
        rate = self._rate.items_per_s
        return self.config.retry_after_s if rate is None else min(60.0, max(1.0, self._pending / rate))

    # -- preprocessing (thread pool) ------------------------------------------------------------

    async def load_images(self, items: Sequence[Any], max_num_patches: int | None) -> list[Patches]:
        """Decode and patchify each item (the model's own preprocess, in the thread pool). Raises the
        InputError of the first bad item by position, its `.index` being that position."""
        loop = asyncio.get_running_loop()
        sizes = await self._gather([loop.run_in_executor(self._pool, self.model.image_size, item, i)
                                    for i, item in enumerate(items)])
        self._check_request_pixels(sizes)
        return await self._gather([loop.run_in_executor(self._pool, self._decode, item, i, max_num_patches, w * h)
                                   for i, (item, (w, h)) in enumerate(zip(items, sizes))])

    def _check_request_pixels(self, sizes: list[tuple[int, int]]) -> None:
        limit, total = self.config.max_request_pixels, 0
        for i, (w, h) in enumerate(sizes):
            total += w * h
            if limit is not None and total > limit:
                raise RequestTooLargeError(i, f"the request's images hold more than {limit:,} pixels together "
                                              f"({total:,} up to this one): send fewer or smaller images per request")

    def _decode(self, item: Any, index: int, max_num_patches: int | None, pixels: int) -> Patches:
        with self._budget.hold(pixels):
            patches = self.model.preprocess(item, index, max_num_patches)
        if pixels >= TRIM_AFTER_PIXELS:
            release_freed_heap()
        return patches

    @staticmethod
    async def _gather(jobs: list) -> list:
        results = await asyncio.gather(*jobs, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result  # the first bad item by position
        return results

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
        futures = self._worker.submit(tower, payloads, _owner.get())
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


class PixelBudget:
    """Pixels being decoded at once, over all requests and threads: a decode waits for room instead of
    growing memory. One image larger than the whole budget is decoded when nothing else is."""

    def __init__(self, capacity: int):
        self.capacity, self.held = capacity, 0
        self._cond = threading.Condition()

    @contextlib.contextmanager
    def hold(self, pixels: int) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: self.held == 0 or self.held + pixels <= self.capacity)
            self.held += pixels
        try:
            yield
        finally:
            with self._cond:
                self.held -= pixels
                self._cond.notify_all()


class Throughput:
    """Items per second through the worker, smoothed over recent batches (for retry-after)."""

    def __init__(self, smoothing: float = 0.2):
        self.items_per_s: float | None = None
        self._a = smoothing

    def on_batch(self, tower: str, size: int, seconds: float) -> None:
        rate = size / max(seconds, 1e-6)
        self.items_per_s = rate if self.items_per_s is None else (1 - self._a) * self.items_per_s + self._a * rate

    def on_queue_depth(self, tower: str, depth: int) -> None:
        pass


class _Observers:
    """Several BatchObservers as one (the engine's own throughput, and the server's metrics)."""

    def __init__(self, *observers: BatchObserver | None):
        self._all = [o for o in observers if o is not None]

    def on_batch(self, tower: str, size: int, seconds: float) -> None:
        for o in self._all:
            o.on_batch(tower, size, seconds)

    def on_queue_depth(self, tower: str, depth: int) -> None:
        for o in self._all:
            o.on_queue_depth(tower, depth)
