"""/v1/classify, /v1/rerank and /v1/patch_features over HTTP, against the library's answers."""

from __future__ import annotations

import base64

import httpx
import numpy as np
import pytest

from tests.support.images import b64, data_uri
from tests.support.server import MODEL

LABELS = ["a cat", "a dog", "a red car", "a bowl of soup"]


def test_classify_equals_library(http, tiny_model, pngs):
    templates = ["a photo of {}.", "{}, drawn"]
    body = {"model": MODEL, "input": [{"image": b64(p)} for p in pngs[:3]], "labels": LABELS, "templates": templates}
    r = http.post("/v1/classify", json=body)
    assert r.status_code == 200, r.text
    want = tiny_model.classify(pngs[:3], LABELS, templates=templates)
    for i, (item, expected) in enumerate(zip(r.json()["data"], want)):
        assert item["object"] == "classification" and item["index"] == i
        assert [p["label"] for p in item["predictions"]] == [label for label, _ in expected]
        assert np.allclose([p["score"] for p in item["predictions"]], [s for _, s in expected], atol=1e-6)
        assert (item["prediction"], item["score"]) == (item["predictions"][0]["label"], item["predictions"][0]["score"])
    assert r.json()["usage"]["images"] == 3


def test_classify_default_template_top_k_threshold_and_cache(http, tiny_model, pngs):
    labels = ["a fresh label for the cache test", "another fresh one"]
    body = {"model": MODEL, "input": [data_uri(pngs[0])], "labels": labels, "top_k": 1}
    first = http.post("/v1/classify", json=body).json()
    want = tiny_model.classify([pngs[0]], labels, top_k=1)[0]
    assert [(p["label"]) for p in first["data"][0]["predictions"]] == [want[0][0]]
    assert np.isclose(first["data"][0]["score"], want[0][1], atol=1e-6)
    assert first["usage"]["prompt_tokens"] > 0  # labels were embedded ...
    second = http.post("/v1/classify", json=body).json()
    assert second["usage"]["prompt_tokens"] == 0  # ... and the second time came from the LRU
    assert second["data"] == first["data"]
    # multi-label: keep every label at or above the threshold (maybe none); prediction stays the best
    full = tiny_model.classify([pngs[0]], labels)[0]
    threshold = float(np.mean([s for _, s in full]))
    r = http.post("/v1/classify", json={**body, "top_k": None, "threshold": threshold}).json()["data"][0]
    assert [p["label"] for p in r["predictions"]] == [label for label, s in full if s >= threshold]
    assert r["prediction"] == full[0][0]


def test_classify_refuses_text_items(http):
    r = http.post("/v1/classify", json={"model": MODEL, "input": [{"text": "a cat"}], "labels": ["x"]})
    # {"text": ...} is not an image item: the schema refuses it
    assert r.status_code == 422 and r.json()["error"]["param"].startswith("input")
    r = http.post("/v1/classify", json={"model": MODEL, "input": [data_uri(b"x")], "labels": ["x"], "templates": ["no slot"]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "templates[0]"


def test_rerank_text_query_over_images(http, tiny_model, pngs):
    docs = [{"image": b64(p)} for p in pngs[:4]]
    r = http.post("/v1/rerank", json={"model": MODEL, "query": "a cat", "documents": docs, "top_n": 3,
                                      "return_documents": True})
    assert r.status_code == 200, r.text
    want = tiny_model.score(pngs[:4], ["a cat"])[:, 0]
    order = np.argsort(-want, kind="stable")[:3]
    results = r.json()["results"]
    assert [x["index"] for x in results] == order.tolist()
    assert np.allclose([x["relevance_score"] for x in results], want[order], atol=1e-6)
    assert all(x["document"] == {"image": docs[x["index"]]["image"]} for x in results)


def test_rerank_image_query_over_texts(http, tiny_model, pngs):
    r = http.post("/v1/rerank", json={"model": MODEL, "query": {"image": data_uri(pngs[2])}, "documents": LABELS})
    assert r.status_code == 200, r.text
    want = tiny_model.score([pngs[2]], LABELS)[0]
    results = r.json()["results"]
    assert [x["index"] for x in results] == np.argsort(-want, kind="stable").tolist()
    assert np.allclose([x["relevance_score"] for x in results], np.sort(want)[::-1], atol=1e-6)
    assert all("document" not in x for x in results)
    assert r.json()["usage"]["prompt_tokens"] == sum(tiny_model.tokenize(LABELS).lengths)


def test_rerank_needs_one_image_side(http, pngs):
    r = http.post("/v1/rerank", json={"model": MODEL, "query": "a cat", "documents": ["a dog"]})
    assert r.status_code == 400 and r.json()["error"]["code"] == "same_modality"
    r = http.post("/v1/rerank", json={"model": MODEL, "query": "a cat", "documents": ["a dog", {"image": b64(pngs[0])}]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "documents"


@pytest.mark.parametrize("dtype,encoding", [("float32", "float"), ("float32", "base64"), ("float16", "base64"),
                                            ("float16", "float")])
def test_patch_features(http, tiny_model, pngs, dtype, encoding):
    images = [pngs[0], pngs[2]]
    body = {"model": MODEL, "input": [b64(p) for p in images], "dtype": dtype, "encoding_format": encoding,
            "max_num_patches": 64}
    r = http.post("/v1/patch_features", json=body)
    assert r.status_code == 200, r.text
    want = tiny_model.patch_features(images, max_num_patches=64)
    for item, grid in zip(r.json()["data"], want):
        rows, cols, dim = grid.shape
        assert (item["rows"], item["cols"], item["dim"], item["dtype"]) == (rows, cols, dim, dtype)
        if encoding == "base64":
            got = np.frombuffer(base64.b64decode(item["features"]), dtype="<f4" if dtype == "float32" else "<f2")
        else:
            got = np.array(item["features"])
        got = got.astype(np.float32).reshape(rows, cols, dim)
        tol = 1e-6 if dtype == "float32" else 1e-2 * float(np.abs(grid).max())
        assert np.allclose(got, grid, atol=tol)
    assert r.json()["usage"]["patches"] == sum(g.shape[0] * g.shape[1] for g in want)


def test_classify_labels_share_the_models_one_text_cache(make_server, tiny_checkpoint, pngs):
    """One cache per model for the library's classify and the server's /v1/classify: the prompts a
    request embedded are the library's cache entries, and the library's are the server's."""
    import sigserve

    model = sigserve.load(tiny_checkpoint, max_image_pixels=4_000_000)
    server = make_server(model)
    body = {"model": MODEL, "input": [b64(pngs[0])], "labels": ["cat", "dog"], "templates": ["a {}", "the {}"]}
    first = httpx.post(server.url + "/v1/classify", json=body).json()
    assert first["usage"]["prompt_tokens"] > 0
    hits, missing = model.text_cache.split(["a cat", "the cat", "a dog", "the dog"])
    assert not missing and len(hits) == 4
    model.label_embeddings(["bird"], ["a {}"])  # filled by the library ...
    again = httpx.post(server.url + "/v1/classify", json={**body, "labels": ["bird"], "templates": ["a {}"]}).json()
    assert again["usage"]["prompt_tokens"] == 0  # ... served from it
