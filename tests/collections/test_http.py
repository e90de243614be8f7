"""/v1/collections through a live server: the full round trip, per-item errors, tenancy, usage,
and a restart serving the same results."""

from __future__ import annotations

import hashlib

import httpx
import numpy as np
import pytest

from sigserve.accounts.keys import KeyStore, database_url_for
from tests.collections.collection_server import data_uri, start_server


@pytest.fixture
def server(tmp_path, tiny_checkpoint, tiny_model):
    live = start_server(tmp_path / "data", tiny_checkpoint, tiny_model)
    yield live
    live.__exit__(None, None, None)


def call(live, method, path, key=None, **kwargs):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.request(method, live.url + path, headers=headers, timeout=60, **kwargs)


def test_round_trip(server, tiny_model, images):
    created = call(server, "POST", "/v1/collections", json={"name": "shop", "description": "test",
                                                             "metadata_schema": {"price": "number"}})
    assert created.status_code == 200, created.text
    assert created.json()["fields"] == {"price": "number"} and created.json()["count"] == 0
    again = call(server, "POST", "/v1/collections", json={"name": "shop"})
    assert again.status_code == 409 and again.json()["error"]["code"] == "collection_exists"

    items = [{"image": data_uri(img), "metadata": {"price": i, "tags": ["red"] if i % 2 else []}}
             for i, img in enumerate(images[:6])]
    items.insert(2, {"image": data_uri(b"definitely not an image"), "metadata": {"price": 1}})
    items.append({"id": "typed", "image": data_uri(images[7]), "metadata": {"price": "cheap"}})
    added = call(server, "POST", "/v1/collections/shop/items", json={"items": items})
    assert added.status_code == 200, added.text
    body = added.json()
    assert (body["added"], body["failed"], body["errors"]) == (6, 2, True)
    assert body["data"][2]["status"] == "failed" and body["data"][2]["error"]["param"] == "items[2].image"
    assert body["data"][7]["error"]["param"] == "items[7].metadata.price"
    assert body["data"][0] == {"index": 0, "id": hashlib.sha256(images[0]).hexdigest(), "status": "added"}
    assert body["usage"]["images"] == 6

    found = call(server, "POST", "/v1/collections/shop/search", json={"query": {"text": "a red car"}, "top_k": 4})
    assert found.status_code == 200, found.text
    hits = found.json()["data"]
    # the same ranking as the library on its own embeddings
    embeds, text = tiny_model.embed_images(images[:6]), tiny_model.embed_texts(["a red car"])[0]
    order = np.argsort(-(embeds @ text), kind="stable")[:4]
    assert [h["id"] for h in hits] == [hashlib.sha256(images[i]).hexdigest() for i in order]
    np.testing.assert_allclose([h["score"] for h in hits], (embeds @ text)[order], atol=1e-5)
    np.testing.assert_allclose([h["probability"] for h in hits], tiny_model.score(images[:6], ["a red car"])[order, 0],
                               rtol=1e-4, atol=1e-7)
    assert found.json()["usage"]["searches"] == 1

    filtered = call(server, "POST", "/v1/collections/shop/search",
                    json={"query": {"image": data_uri(images[1])}, "filter": {"tags": {"$contains": "red"}},
                          "include_metadata": False})
    assert {h["id"] for h in filtered.json()["data"]} == {hashlib.sha256(images[i]).hexdigest() for i in (1, 3, 5)}
    assert "metadata" not in filtered.json()["data"][0] and "probability" not in filtered.json()["data"][0]
    bad = call(server, "POST", "/v1/collections/shop/search", json={"query": {"text": "x"}, "filter": {"$where": 1}})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "filter.$where"

    listed = call(server, "GET", "/v1/collections").json()["data"]
    assert [(c["name"], c["count"]) for c in listed] == [("shop", 6)]
    item_id = hashlib.sha256(images[3]).hexdigest()
    item = call(server, "GET", f"/v1/collections/shop/items/{item_id}").json()
    assert item["metadata"] == {"price": 3, "tags": ["red"]} and item["max_num_patches"] == 256
    assert call(server, "DELETE", "/v1/collections/shop/items", json={"ids": [item_id, "nope"]}).json()["deleted"] == 1
    assert call(server, "GET", f"/v1/collections/shop/items/{item_id}").status_code == 404
    assert call(server, "DELETE", "/v1/collections/shop").json()["deleted"] is True
    gone = call(server, "GET", "/v1/collections/shop")
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "collection_not_found"


def test_tenants_are_isolated(tmp_path, tiny_checkpoint, tiny_model, images):
    data = tmp_path / "data"
    store = KeyStore(database_url_for(data))
    _, key_a = store.create("a")
    _, key_b = store.create("b")
    _, admin = store.create("admin", admin=True)
    store.close()
    live = start_server(data, tiny_checkpoint, tiny_model)
    try:
        assert call(live, "POST", "/v1/collections", key_a, json={"name": "private"}).status_code == 200
        added = call(live, "POST", "/v1/collections/private/items", key_a,
                     json={"items": [{"image": data_uri(img)} for img in images[:3]]})
        assert added.json()["added"] == 3
        search = {"query": {"text": "a cat"}}
        assert call(live, "GET", "/v1/collections", key_b).json()["data"] == []
        for method, path, body in [("GET", "/v1/collections/private", None),
                                   ("POST", "/v1/collections/private/search", search),
                                   ("POST", "/v1/collections/private/items", {"items": [{"image": data_uri(images[4])}]}),
                                   ("DELETE", "/v1/collections/private", None)]:
            refused = call(live, method, path, key_b, json=body)
            assert refused.status_code == 404, (method, path)
        assert call(live, "GET", "/v1/collections", None).status_code == 401
        assert len(call(live, "POST", "/v1/collections/private/search", key_a, json=search).json()["data"]) == 3
        assert len(call(live, "POST", "/v1/collections/private/search", admin, json=search).json()["data"]) == 3
        seen_by_admin = call(live, "GET", "/v1/collections", admin).json()["data"]
        assert [c["name"] for c in seen_by_admin] == ["private"] and seen_by_admin[0]["owner"] is not None
        usage = call(live, "GET", "/v1/usage", key_a).json()["data"]
        assert usage["searches"] == 1 and usage["images"] == 3
    finally:
        live.__exit__(None, None, None)


def test_restart_serves_the_same_results(tmp_path, tiny_checkpoint, tiny_model, images):
    data = tmp_path / "data"
    query = {"query": {"text": "a dog", "image": data_uri(images[0])}, "top_k": 5}
    live = start_server(data, tiny_checkpoint, tiny_model)
    try:
        call(live, "POST", "/v1/collections", json={"name": "photos"})
        call(live, "POST", "/v1/collections/photos/items",
             json={"items": [{"image": data_uri(img), "metadata": {"i": i}} for i, img in enumerate(images)]})
        before = call(live, "POST", "/v1/collections/photos/search", json=query).json()["data"]
    finally:
        live.__exit__(None, None, None)
    live = start_server(data, tiny_checkpoint, tiny_model)
    try:
        after = call(live, "POST", "/v1/collections/photos/search", json=query).json()["data"]
    finally:
        live.__exit__(None, None, None)
    assert len(before) == 5 and after == before


def test_concurrent_adds_are_all_stored(server, images):
    from concurrent.futures import ThreadPoolExecutor

    call(server, "POST", "/v1/collections", json={"name": "busy"})

    def add(i):
        items = [{"id": f"r{i}-{j}", "image": data_uri(images[(2 * i + j) % len(images)]), "metadata": {"req": i}}
                 for j in range(2)]
        return call(server, "POST", "/v1/collections/busy/items", json={"items": items})

    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(add, range(8)))
    assert [r.status_code for r in responses] == [200] * 8
    assert all(r.json()["added"] == 2 for r in responses)
    assert call(server, "GET", "/v1/collections/busy").json()["count"] == 16


def test_a_collection_of_other_weights_is_refused(server, tmp_path, images):
    import sigserve
    from sigserve.collections import Store
    from tests.support.checkpoints import make_checkpoint

    other = sigserve.load(make_checkpoint(tmp_path / "other", "tiny", seed=1))
    other.collection("foreign", uri=Store(tmp_path / "data" / "collections").uri).add([images[0]])
    refused = call(server, "POST", "/v1/collections/foreign/search", json={"query": {"text": "x"}})
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "model_mismatch"
    assert call(server, "GET", "/v1/collections/foreign").json()["count"] == 1  # still visible and described


def test_index_is_built_in_the_background_past_the_threshold(tmp_path, tiny_checkpoint, tiny_model, images,
                                                             monkeypatch):
    import time

    from sigserve.collections import ann

    monkeypatch.setattr(ann, "MIN_INDEX_ROWS", 8)  # the tiny collection is enough to train on here
    live = start_server(tmp_path / "data", tiny_checkpoint, tiny_model, collections_index_threshold=8)
    try:
        call(live, "POST", "/v1/collections", json={"name": "grows"})
        small = call(live, "POST", "/v1/collections/grows/items", json={"items": [{"image": data_uri(images[0])}]})
        assert small.json()["added"] == 1
        assert call(live, "GET", "/v1/collections/grows").json()["index"]["type"] is None
        call(live, "POST", "/v1/collections/grows/items",
             json={"items": [{"image": data_uri(img)} for img in images[1:]]})
        deadline = time.monotonic() + 60
        while (state := call(live, "GET", "/v1/collections/grows").json()["index"])["type"] is None:
            assert time.monotonic() < deadline, state
            time.sleep(0.2)
        found = call(live, "POST", "/v1/collections/grows/search", json={"query": {"image": data_uri(images[5])},
                                                                          "top_k": 1}).json()["data"]
        assert found[0]["id"] == hashlib.sha256(images[5]).hexdigest()
    finally:
        live.__exit__(None, None, None)
