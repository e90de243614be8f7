"""The one thread that owns the model. Jobs wait in one fair queue per tower; the worker takes a
micro-batch from the tower whose oldest job has waited longest, after letting the batch fill for
at most `max_wait_s` (text-embeddings-inference style). Within a tower, each owner (API key) has its
own FIFO and a batch takes one job from each owner in turn, so a key that queued a thousand prompts
delays another key's request by about one batch, not by the thousand. Results go back to the asyncio
loop that submitted them, through call_soon_threadsafe."""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sigserve.engine.errors import EngineUnavailableError

log = logging.getLogger(__name__)

# A tower's batch function: payloads in, one result per payload out, same order.
BatchFn = Callable[[list[Any]], Sequence[Any]]


class BatchObserver(Protocol):
    """What the worker reports (the server turns it into Prometheus metrics)."""

    def on_batch(self, tower: str, size: int, seconds: float) -> None: ...

    def on_queue_depth(self, tower: str, depth: int) -> None: ...


class _NullObserver:
    def on_batch(self, tower: str, size: int, seconds: float) -> None:
        pass

    def on_queue_depth(self, tower: str, depth: int) -> None:
        pass


@dataclass(eq=False)
class Job:
    payload: Any
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    owner: str = ""  # who asked (the API key's id): the unit of fairness
    enqueued: float = field(default_factory=time.monotonic)

    def abandoned(self) -> bool:
        # A done future here means the awaiting request was cancelled (client went away) or
        # timed out: its work is dropped. Reading the state from this thread is benign.
        return self.future.done()

    def resolve(self, result: Any = None, error: BaseException | None = None) -> None:
        try:
            self.loop.call_soon_threadsafe(_settle, self.future, result, error)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass


def _settle(future: asyncio.Future, result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class FairQueue:
    """Jobs by owner, each owner's in FIFO order; `take` goes round the owners one job at a time."""

    def __init__(self) -> None:
        self._owners: collections.OrderedDict[str, collections.deque[Job]] = collections.OrderedDict()
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def extend(self, jobs: Sequence[Job]) -> None:
        for job in jobs:
            self._owners.setdefault(job.owner, collections.deque()).append(job)
        self._size += len(jobs)

    def oldest(self) -> float:
        return min(q[0].enqueued for q in self._owners.values())

    def take(self, n: int) -> list[Job]:
        """Up to n live jobs, round-robin over the owners (abandoned ones are dropped on the way)."""
        batch: list[Job] = []
        while self._owners and len(batch) < n:
            owner, jobs = next(iter(self._owners.items()))
            job = jobs.popleft()
            self._size -= 1
            if jobs:
                self._owners.move_to_end(owner)  # next turn goes to the next owner
            else:
                del self._owners[owner]
            if not job.abandoned():
                batch.append(job)
        return batch

    def drain(self) -> list[Job]:
        jobs = [j for q in self._owners.values() for j in q]
        self._owners.clear()
        self._size = 0
        return jobs


@dataclass
class Tower:
    run: BatchFn
    max_batch: int
    queue: FairQueue = field(default_factory=FairQueue)


class InferenceWorker:
    def __init__(self, towers: dict[str, Tower], max_wait_s: float, observer: BatchObserver | None = None,
                 more_coming: Callable[[int], bool] | None = None):
        self._towers = towers
        self._max_wait_s = max_wait_s
        # more_coming(queued): can more jobs still arrive, given `queued` jobs waiting over all towers?
        # When not, a batch is taken at once instead of waiting max_wait for company that never comes.
        self._more_coming = more_coming or (lambda queued: True)
        self._observer = observer or _NullObserver()
        self._cond = threading.Condition()
        self._stopping = False
        self._failure: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._inflight: list[Job] = []  # the batch being computed, failed too if the thread dies

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._main, name="sigserve-inference", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        self._fail_pending(EngineUnavailableError("server is shutting down"))

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self._failure is None and not self._stopping

    # -- submission (called on the event loop) ------------------------------------------------

    def submit(self, tower: str, payloads: Sequence[Any], owner: str = "") -> list[asyncio.Future]:
        if not self.alive:
            raise EngineUnavailableError(self._why_unavailable())
        loop = asyncio.get_running_loop()
        jobs = [Job(p, loop.create_future(), loop, owner) for p in payloads]
        with self._cond:
            self._towers[tower].queue.extend(jobs)
            depth = len(self._towers[tower].queue)
            self._cond.notify_all()
        self._observer.on_queue_depth(tower, depth)
        return [j.future for j in jobs]

    def _why_unavailable(self) -> str:
        if self._failure is not None:
            return f"inference worker died: {type(self._failure).__name__}"
        return "inference worker is not running"

    # -- the thread ---------------------------------------------------------------------------

    def _main(self) -> None:
        try:
            while True:
                picked = self._next_batch()
                if picked is None:
                    return
                self._inflight = picked[1]
                self._run(*picked)
                self._inflight = []
        except BaseException as exc:  # noqa: BLE001 - anything that escapes is a dead worker
            log.critical("inference worker died", exc_info=True)
            self._failure = exc
            self._fail_pending(EngineUnavailableError(f"inference worker died: {type(exc).__name__}"))

    def _next_batch(self) -> tuple[str, list[Job]] | None:
        with self._cond:
            while True:
                if self._stopping:
                    return None
                name = self._oldest_tower()
                if name is None:
                    self._cond.wait()
                    continue
                tower = self._towers[name]
                deadline = tower.queue.oldest() + self._max_wait_s
                # Let the batch fill up, but never hold the oldest job beyond max_wait.
                while len(tower.queue) < tower.max_batch and not self._stopping and self._more_coming(self._queued()):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                batch = tower.queue.take(tower.max_batch)
                depth = len(tower.queue)
                if batch:
                    break
        self._observer.on_queue_depth(name, depth)
        return name, batch

    def _queued(self) -> int:
        return sum(len(t.queue) for t in self._towers.values())

    def _oldest_tower(self) -> str | None:
        heads = {n: t.queue.oldest() for n, t in self._towers.items() if len(t.queue)}
        return min(heads, key=lambda n: heads[n]) if heads else None

    def _run(self, name: str, batch: list[Job]) -> None:
        tower = self._towers[name]
        start = time.perf_counter()
        try:
            results = tower.run([j.payload for j in batch])
        except Exception as exc:  # noqa: BLE001
            if len(batch) == 1:
                log.warning("inference failed for one item", exc_info=True)
                batch[0].resolve(error=exc)
                return
            # Isolate the culprit: rerun one by one so that only its own request fails.
            for job in batch:
                self._run(name, [job])
            return
        self._observer.on_batch(name, len(batch), time.perf_counter() - start)
        for job, result in zip(batch, results):
            job.resolve(result)

    def _fail_pending(self, error: BaseException) -> None:
        with self._cond:
            jobs = list(self._inflight) + [j for t in self._towers.values() for j in t.queue.drain()]
        for job in jobs:
            job.resolve(error=error)
