"""What a new user's usual clients send on the first day, answered right (each failed before its fix):
images as data-URI strings, token-id arrays, classify thresholds that nothing passes, server-side
paths, /docs, and a first request that costs what the tenth does."""

from __future__ import annotations

import time

import httpx
import numpy as np
import openai
import pytest

from tests.support.images import b64, data_uri
from tests.support.server import MODEL, WrappedModel


def test_a_data_uri_string_is_embedded_as_an_image(client, http, tiny_model, pngs):
    uri = data_uri(pngs[0])
    got = client.embeddings.create(model=MODEL, input=[uri, "a cat"])
    want = tiny_model.embed_images([pngs[0]])[0]
    assert np.abs(np.array(got.data[0].embedding) - want).max() <= 1e-6  # not a 64-token text
    assert got.usage.model_extra["images"] == 1
    text = tiny_model.embed_texts(["a cat"])[0]
    assert np.abs(np.array(got.data[1].embedding) - text).max() <= 1e-6
    # rerank documents given as data-URI strings are images too
    r = http.post("/v1/rerank", json={"model": MODEL, "query": "a cat", "documents": [uri, data_uri(pngs[1])]})
    assert r.status_code == 200 and len(r.json()["results"]) == 2


def test_data_uri_detection_can_be_turned_off(make_server, pngs):
    server = make_server(detect_image_data_uris=False)
    r = httpx.post(server.url + "/v1/embeddings", json={"model": MODEL, "input": [data_uri(pngs[0])]})
    assert r.status_code == 200 and r.json()["usage"]["images"] == 0


@pytest.mark.parametrize("tokens", [[101, 2023, 2003], [[101, 2023], [7592]]])
def test_token_id_arrays_get_a_400_that_says_what_to_do(client, tokens):
    with pytest.raises(openai.BadRequestError) as err:
        client.embeddings.create(model=MODEL, input=tokens)
    body = err.value.body
    assert body["code"] == "token_ids_not_supported" and body["param"] == "input"
    assert "check_embedding_ctx_length=False" in body["message"] and "strings" in body["message"]


def test_classify_threshold_that_nothing_passes_reports_no_prediction(http, pngs):
    body = {"model": MODEL, "input": [b64(pngs[0])], "labels": ["a", "b"], "threshold": 0.999}
    r = http.post("/v1/classify", json=body).json()["data"][0]
    assert r["prediction"] is None and r["score"] is None and r["predictions"] == []
    r = http.post("/v1/classify", json={**body, "threshold": 0.0}).json()["data"][0]
    assert r["prediction"] == r["predictions"][0]["label"] and r["score"] == r["predictions"][0]["score"]


@pytest.mark.parametrize("ref", ["/etc/passwd", "./cat.jpg", "photo.png", "C:\\\\pics\\\\a.jpg"])
def test_a_server_path_is_refused_as_a_path(http, ref):
    r = http.post("/v1/embeddings", json={"model": MODEL, "input": [{"image": ref}]})
    error = r.json()["error"]
    assert r.status_code == 400 and error["param"] == "input[0]" and "file path" in error["message"]


def test_a_bare_base64_jpeg_is_not_mistaken_for_a_path(http, tiny_model, photos):
    import io

    buf = io.BytesIO()
    photos["coffee"].save(buf, "JPEG")
    assert b64(buf.getvalue()).startswith("/9j/")
    r = http.post("/v1/embeddings", json={"model": MODEL, "input": [{"image": b64(buf.getvalue())}]})
    assert r.status_code == 200


def test_unreadable_bytes_are_described_not_repr(http):
    r = http.post("/v1/embeddings", json={"model": MODEL, "input": [{"image": b64(b"GIF89a but not really")}]})
    message = r.json()["error"]["message"]
    assert r.status_code == 400 and "bytes" in message and "BytesIO" not in message and "0x" not in message


def test_docs_and_openapi_are_served(http):
    assert http.get("/docs").status_code == 200
    spec = http.get("/openapi.json").json()
    assert "/v1/embeddings" in spec["paths"]


def test_ready_waits_for_the_warm_up_of_both_towers(server_model, tiny_checkpoint, tmp_path):
    """/ready is 503 `warming_up` until the text tower and the image tower ran once; /health
    answers meanwhile; after it, the first request needs no lazy work."""
    from sigserve.server.app import create_app
    from tests.support.server import LiveServer, make_settings

    model = WrappedModel(server_model)
    model.knobs = (0.3, None, None)
    model.arm()  # slow from the start: the warm-up itself takes a while
    settings = make_settings(tmp_path, tiny_checkpoint)
    app = create_app(settings, model)
    server = LiveServer(app)
    server.thread.start()
    try:
        deadline = time.monotonic() + 60
        while not server.server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        early = httpx.get(server.url + "/ready")
        assert early.status_code == 503 and early.json()["error"]["code"] == "warming_up"
        assert httpx.get(server.url + "/health").status_code == 200
        while httpx.get(server.url + "/ready").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert httpx.get(server.url + "/ready").status_code == 200
        towers = {tower for tower, _ in model.batches}
        assert towers == {"text", "image"}
    finally:
        server.__exit__(None, None, None)
