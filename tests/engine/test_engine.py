"""The engine on its own, with a fake model that records what the worker runs: micro-batching,
dropping cancelled work, isolating a failing item, admission control, and a dying worker."""

from __future__ import annotations

import asyncio
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

from sigserve.engine import Engine, EngineConfig, EngineUnavailableError, QueueFullError


class FakeModel:
    """Text i is the string str(i); its 'embedding' is [i, i, i, i], so results can be traced."""

    embedding_dim = 4

    def __init__(self, delay_s=0.0, poison: int | None = None, fatal: BaseException | None = None):
        self.delay_s, self.poison, self.fatal = delay_s, poison, fatal
        self.batches: list[list[int]] = []
        self.started = threading.Event()

    def tokenize(self, texts):
        ids = np.array([[int(t)] + [0] * 63 for t in texts], dtype=np.int64)
        return SimpleNamespace(ids=ids, lengths=[1] * len(texts))

    def encode_token_ids(self, ids):
        values = [int(v) for v in ids[:, 0]]
        self.batches.append(values)
        self.started.set()
        time.sleep(self.delay_s)
        if self.fatal is not None:
            raise self.fatal
        if self.poison in values:
            raise ValueError("poisoned batch")
        return np.repeat(np.array(values, dtype=np.float32)[:, None], 4, axis=1)


def run(coro):
    return asyncio.run(coro)


async def started(model, **config) -> Engine:
    engine = Engine(model, EngineConfig(**config))
    engine.start()
    return engine


def test_micro_batches_and_keeps_results_with_their_requests():
    model = FakeModel(delay_s=0.01)

    async def main():
        engine = await started(model, max_batch_texts=8, max_wait_ms=20)
        try:
            results = await asyncio.gather(*(engine.embed_texts([str(i)]) for i in range(20)))
        finally:
            engine.stop()
        return results

    results = run(main())
    assert [float(r.embeddings[0, 0]) for r in results] == list(range(20))
    sizes = [len(b) for b in model.batches]
    assert sum(sizes) == 20 and max(sizes) <= 8 and max(sizes) > 1


def test_a_lone_admitted_request_does_not_wait_for_company():
    """max_wait lets a batch fill; when every admitted item is already queued nothing can join, so the
    batch runs at once (idle latency). With more admitted than queued, it still waits and batches."""
    model = FakeModel()

    async def main():
        engine = await started(model, max_batch_texts=8, max_wait_ms=400)
        try:
            with engine.admit(1):
                t = time.monotonic()
                await engine.embed_texts(["1"])
                alone = time.monotonic() - t
            with engine.admit(2):  # a second item is admitted but not queued yet: the first waits for it
                first = asyncio.ensure_future(engine.embed_texts(["2"]))
                await asyncio.sleep(0.05)
                await asyncio.gather(first, engine.embed_texts(["3"]))
        finally:
            engine.stop()
        return alone

    assert run(main()) < 0.2
    assert model.batches == [[1], [2, 3]]


def test_cancelled_work_is_dropped():
    model = FakeModel(delay_s=0.3)

    async def main():
        engine = await started(model, max_batch_texts=1, max_wait_ms=0)
        try:
            busy = asyncio.ensure_future(engine.embed_texts(["1"]))
            await asyncio.to_thread(model.started.wait, 5)  # the worker is inside batch [1]
            abandoned = asyncio.ensure_future(engine.embed_texts(["2", "3"]))
            await asyncio.sleep(0.05)
            abandoned.cancel()  # what a client disconnect does
            after = await engine.embed_texts(["4"])
            await busy
        finally:
            engine.stop()
        return after

    after = run(main())
    assert float(after.embeddings[0, 0]) == 4
    assert [v for b in model.batches for v in b] == [1, 4]  # 2 and 3 never reached the model


def test_a_failing_item_fails_alone():
    model = FakeModel(delay_s=0.02, poison=5)

    async def main():
        engine = await started(model, max_batch_texts=16, max_wait_ms=30)
        try:
            return await asyncio.gather(*(engine.embed_texts([str(i)]) for i in range(8)), return_exceptions=True)
        finally:
            engine.stop()

    results = run(main())
    assert isinstance(results[5], ValueError)
    assert [float(r.embeddings[0, 0]) for i, r in enumerate(results) if i != 5] == [0, 1, 2, 3, 4, 6, 7]


def test_admission_is_bounded():
    async def main():
        engine = await started(FakeModel(), max_pending_items=4, retry_after_s=2)
        try:
            with engine.admit(3):
                with pytest.raises(QueueFullError) as err:
                    with engine.admit(2):
                        pass
                assert err.value.retry_after_s == 2
                with engine.admit(1):
                    assert engine.pending == 4
            assert engine.pending == 0
            with engine.admit(10):  # an empty backlog admits even an oversized request
                pass
        finally:
            engine.stop()

    run(main())


def test_dead_worker_fails_everything_fast():
    class Fatal(BaseException):
        pass

    model = FakeModel(fatal=Fatal())

    async def main():
        engine = await started(model, max_batch_texts=1, max_wait_ms=0, timeout_s=30)
        try:
            first = await asyncio.gather(engine.embed_texts(["1"]), engine.embed_texts(["2"]), return_exceptions=True)
            assert not engine.ready
            with pytest.raises(EngineUnavailableError):
                await engine.embed_texts(["3"])
            with pytest.raises(EngineUnavailableError):
                with engine.admit(1):
                    pass
            return first
        finally:
            engine.stop()

    t0 = time.monotonic()
    first = run(main())
    assert all(isinstance(r, EngineUnavailableError) for r in first)
    assert time.monotonic() - t0 < 10  # failed, not hung until the timeout


def test_image_decoding_follows_the_models_jpeg_draft_option(tiny_checkpoint, photos):
    """The server decodes as the library does: exact by default, draft decoding when the model asks."""
    import io

    import sigserve

    buf = io.BytesIO()
    photos["astronaut"].resize((2400, 2400)).save(buf, format="JPEG", quality=90)
    jpeg = buf.getvalue()
    for draft in (False, True):
        model = sigserve.load(tiny_checkpoint, backend="torch", jpeg_draft=draft)
        engine = Engine(model, EngineConfig())
        engine.start()
        try:
            (served,) = asyncio.run(engine.load_images([jpeg], 64))
        finally:
            engine.stop()
        library = model.preprocess(jpeg, 0, 64)
        assert np.array_equal(served.pixels, library.pixels), draft
    exact = sigserve.load(tiny_checkpoint, backend="torch").preprocess(jpeg, 0, 64)
    assert not np.array_equal(library.pixels, exact.pixels)  # draft decoding really changed the pixels
