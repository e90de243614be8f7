"""POST /v1/heatmap against the library's model.heatmap, its envelope errors, and its metering."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from tests.support.images import b64, data_uri
from tests.support.server import MODEL

TEXTS = ["a cat", "a red car", "a bowl of soup"]


@pytest.mark.parametrize("L", [16, 64, 256])
def test_heatmap_equals_library(http, tiny_model, pngs, L):
    r = http.post("/v1/heatmap", json={"model": MODEL, "image": data_uri(pngs[2]), "texts": TEXTS, "max_num_patches": L})
    assert r.status_code == 200, r.text
    body = r.json()
    want = tiny_model.heatmap(pngs[2], TEXTS, max_num_patches=L)  # (T, rows, cols)
    assert (body["rows"], body["cols"]) == want.shape[1:]
    assert [d["text"] for d in body["data"]] == TEXTS and [d["index"] for d in body["data"]] == [0, 1, 2]
    got = np.array([d["probabilities"] for d in body["data"]])
    assert got.shape == want.shape and np.abs(got - want).max() <= 1e-5
    usage = body["usage"]
    assert usage["images"] == 1 and usage["patches"] == want.shape[1] * want.shape[2] and usage["prompt_tokens"] > 0


def test_image_forms_and_default_length(http, tiny_model, pngs):
    want = tiny_model.heatmap(pngs[0], ["a cat"])  # the server's default max_num_patches is the library's
    for image in (b64(pngs[0]), {"image": b64(pngs[0])}, {"type": "image_url", "image_url": {"url": data_uri(pngs[0])}}):
        r = http.post("/v1/heatmap", json={"model": MODEL, "image": image, "texts": ["a cat"]})
        assert r.status_code == 200, r.text
        assert np.abs(np.array(r.json()["data"][0]["probabilities"]) - want[0]).max() <= 1e-5


def error(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    assert set(r.json()) == {"error"}
    return r.json()["error"]


def test_bad_inputs_get_the_usual_errors(http, make_server, pngs):
    post = lambda **body: http.post("/v1/heatmap", json={"model": MODEL, "image": b64(pngs[0]), "texts": ["a"], **body})
    assert error(post(image=b64(b"not an image")), 400)["param"] == "image"
    assert error(post(image="data:image/png;base64,@@@"), 400)["param"] == "image"
    assert error(post(texts=[]), 422)["param"] == "texts"
    assert error(post(texts="a cat"), 422)["param"] == "texts"
    assert error(post(max_num_patches=8), 422)["param"] == "max_num_patches"
    assert error(post(model="another-model"), 404)["code"] == "model_not_found"
    assert error(post(extra=1), 422)["param"] == "extra"
    small = make_server(max_labels=2)
    r = httpx.post(small.url + "/v1/heatmap", json={"model": MODEL, "image": b64(pngs[0]), "texts": ["a", "b", "c"]})
    assert error(r, 400)["param"] == "texts"


def test_usage_is_metered_per_key(make_server, tmp_path, pngs):
    from sigserve.accounts.keys import KeyStore, database_url_for

    url = database_url_for(tmp_path / "keys")
    store = KeyStore(url)
    _, key = store.create("heatmaps", rpm=10)
    store.close()
    server = make_server(database_url=url)
    auth = {"authorization": f"Bearer {key}"}
    assert httpx.post(server.url + "/v1/heatmap", json={"model": MODEL, "image": b64(pngs[1]), "texts": ["x"]}).status_code == 401
    r = httpx.post(server.url + "/v1/heatmap", headers=auth, json={"model": MODEL, "image": b64(pngs[1]), "texts": ["x", "y"]})
    assert r.status_code == 200 and r.headers["x-ratelimit-limit-requests"] == "10"
    usage = httpx.get(server.url + "/v1/usage", headers=auth).json()["data"]
    assert usage["requests"] == 1 and usage["images"] == 1 and usage["patches"] == r.json()["usage"]["patches"]
