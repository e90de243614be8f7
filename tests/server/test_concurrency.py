"""Many clients at once, mixing valid, corrupt and oversized images: every valid request gets the
library's embeddings, every bad one a 400 naming its item, and the server stays ready. Also: a
client that hangs up has its queued work dropped."""

from __future__ import annotations

import concurrent.futures as cf
import io
import random
import time

import httpx
import numpy as np
import openai
from PIL import Image

from tests.support.images import b64, data_uri, image_bytes
from tests.support.server import MODEL, WrappedModel


def oversized_png() -> bytes:
    """2100x2000 pixels: over the 4 MP cap of the test server, yet a tiny file (a bomb in spirit)."""
    buf = io.BytesIO()
    Image.new("RGB", (2100, 2000), (200, 10, 10)).save(buf, format="PNG")
    return buf.getvalue()


def test_parallel_clients_mixing_good_and_bad_images(live, tiny_model):
    good = [image_bytes(100 + i, (24 + 7 * i, 40 - 2 * i), "PNG" if i % 2 else "JPEG") for i in range(8)]
    want = tiny_model.embed_images(good)
    bad = {"corrupt": b64(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20), "truncated": b64(good[1][:60]),
           "oversized": b64(oversized_png())}
    rng = random.Random(0)
    plans = []
    for n in range(36):
        picks = [rng.randrange(len(good)) for _ in range(rng.randint(1, 4))]
        bad_at, bad_kind = None, None
        if n % 3 == 0:  # a third of the requests carry exactly one bad image
            bad_at, bad_kind = rng.randrange(len(picks) + 1), rng.choice(sorted(bad))
        plans.append((picks, bad_at, bad_kind))

    client = openai.OpenAI(base_url=live.url + "/v1", api_key="x", max_retries=0, timeout=120)

    def call(plan):
        picks, bad_at, bad_kind = plan
        items = [{"image": data_uri(good[p])} for p in picks]
        if bad_at is not None:
            items.insert(bad_at, {"image": bad[bad_kind]})
        try:
            response = client.embeddings.create(model=MODEL, input=items, encoding_format="float")
            return "ok", np.array([d.embedding for d in response.data], np.float32)
        except openai.BadRequestError as exc:
            return "bad", exc.body

    with cf.ThreadPoolExecutor(12) as pool:
        outcomes = list(pool.map(call, plans))

    for (picks, bad_at, bad_kind), (kind, payload) in zip(plans, outcomes):
        if bad_at is None:
            assert kind == "ok"
            assert np.allclose(payload, want[picks], atol=1e-6)
        else:
            assert kind == "bad", (bad_kind, payload)
            assert payload["param"] == f"input[{bad_at}]"
            expected = "image_too_large" if bad_kind == "oversized" else "invalid_image"
            assert payload["code"] == expected
    ready = httpx.get(live.url + "/ready")
    assert ready.status_code == 200 and ready.json()["pending_items"] == 0


def test_disconnected_client_work_is_dropped(make_server, server_model):
    model = WrappedModel(server_model, delay_s=1.0)
    server = make_server(model, max_batch_texts=1, max_wait_ms=0)
    with cf.ThreadPoolExecutor(1) as pool:
        busy = pool.submit(httpx.post, server.url + "/v1/embeddings", json={"model": MODEL, "input": "busy"}, timeout=30)
        deadline = time.monotonic() + 10
        while not model.batches and time.monotonic() < deadline:  # the worker is inside "busy"
            time.sleep(0.01)
        try:  # three more texts queue behind it; the client gives up and hangs up
            httpx.post(server.url + "/v1/embeddings", json={"model": MODEL, "input": ["a", "b", "c"]}, timeout=0.3)
        except httpx.TimeoutException:
            pass
        assert busy.result().status_code == 200
    time.sleep(0.5)  # a cancelled job left in the queue would run now
    assert model.batches == [("text", 1)]
    assert httpx.get(server.url + "/ready").status_code == 200
    assert 'route="/v1/embeddings",status="499"' in httpx.get(server.url + "/metrics").text
