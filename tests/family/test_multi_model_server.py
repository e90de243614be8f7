"""Several models in one live server (one of each architecture): every route answers with the model the
request names, equal to that model's own library output; an unknown model is a 404 naming the served
ones; /v1/models, metrics, usage and collections carry the model; memory is measured at load and a
budget refuses to start."""

from __future__ import annotations

import re

import httpx
import numpy as np
import pytest

import sigserve
from sigserve.server.models import MemoryBudgetError, load_models
from tests.support.images import b64, pngs
from tests.support.server import LiveServer, make_settings

NAMES = {"naflex": "sig2-naflex", "siglip2-fixed": "sig2-fixed", "siglip": "sig1"}
TOL = 1e-5


@pytest.fixture(scope="module")
def libraries(family_checkpoints):
    """Each model's library output, from instances of its own (not the server's)."""
    return {arch: sigserve.load(folder) for arch, folder in family_checkpoints.items()}


@pytest.fixture(scope="module")
def server(tmp_path_factory, family_checkpoints):
    models = [f"{family_checkpoints[arch]}={name}" for arch, name in NAMES.items()]
    settings = make_settings(tmp_path_factory.mktemp("multi"), family_checkpoints["naflex"], model=models,
                             served_model_name=None, models_file=None)
    from sigserve.server.app import create_app

    with LiveServer(create_app(settings)) as live:  # loaded (and measured) in the lifespan, as `sigserve serve` does
        yield live


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield client


def test_models_lists_each_with_what_it_is(http, libraries):
    cards = {c["id"]: c for c in http.get("/v1/models").json()["data"]}
    assert list(cards) == list(NAMES.values())  # the order given, the first the default
    for arch, name in NAMES.items():
        card, lib = cards[name], libraries[arch]
        assert card["embedding_dim"] == lib.embedding_dim and card["memory_mb"] is not None
        assert card["architecture"] == ("naflex" if arch == "naflex" else "fixed")
        if arch == "naflex":
            assert card["image_size"] is None and card["max_num_patches"]["default"] == 256
        else:
            assert card["image_size"] == lib.image_config.size and card["max_num_patches"] is None
    ready = http.get("/ready").json()
    assert ready["models"] == list(NAMES.values()) and ready["model"] == "sig2-naflex"


def test_each_request_is_answered_by_the_model_it_names(http, libraries, photos):
    images = pngs()[:3]
    texts = ["a photo of a cat", "ΣΟΦΟΣ", ""]
    for arch, name in NAMES.items():
        lib = libraries[arch]
        body = {"model": name, "input": texts + [{"image": b64(b)} for b in images]}
        got = http.post("/v1/embeddings", json=body)
        assert got.status_code == 200 and got.json()["model"] == name
        vectors = np.array([d["embedding"] for d in got.json()["data"]], np.float32)
        expected = np.concatenate([lib.embed_texts(texts), lib.embed_images(images)])
        assert np.abs(vectors - expected).max() <= TOL, name
        labels = ["cat", "dog", "car"]
        got = http.post("/v1/classify", json={"model": name, "input": [b64(images[0])], "labels": labels}).json()
        scores = {p["label"]: p["score"] for p in got["data"][0]["predictions"]}
        assert [scores[label] for label in labels] == pytest.approx([s for _, s in sorted(
            lib.classify([images[0]], labels)[0], key=lambda ls: labels.index(ls[0]))], abs=TOL)
        got = http.post("/v1/patch_features", json={"model": name, "input": [b64(images[1])]}).json()["data"][0]
        [grid] = lib.patch_features([images[1]])
        assert (got["rows"], got["cols"]) == grid.shape[:2]
        assert np.abs(np.array(got["features"], np.float32) - grid.reshape(-1, grid.shape[-1])).max() <= TOL
        got = http.post("/v1/heatmap", json={"model": name, "image": b64(images[2]), "texts": ["a cat"]}).json()
        assert np.abs(np.array(got["data"][0]["probabilities"]) - lib.heatmap(images[2], ["a cat"])[0]).max() <= TOL


def test_max_num_patches_is_a_naflex_choice(http):
    image = b64(pngs()[0])
    assert http.post("/v1/embeddings", json={"model": "sig2-naflex", "input": [{"image": image}],
                                             "max_num_patches": 64}).status_code == 200
    for name in ("sig2-fixed", "sig1"):
        r = http.post("/v1/embeddings", json={"model": name, "input": [{"image": image}], "max_num_patches": 64})
        error = r.json()["error"]
        assert r.status_code == 400 and error["param"] == "max_num_patches" and error["code"] == "unsupported_parameter"
        assert "fixed resolution" in error["message"] and name in error["message"]


def test_unknown_model_is_a_404_naming_the_served_ones(http):
    r = http.post("/v1/embeddings", json={"model": "siglip-huge", "input": "a cat"})
    error = r.json()["error"]
    assert r.status_code == 404 and error["code"] == "model_not_found" and error["param"] == "model"
    assert all(f"`{name}`" in error["message"] for name in NAMES.values())


def test_metrics_and_usage_carry_the_model(http):
    for name in NAMES.values():  # one image and one text each
        assert http.post("/v1/embeddings", json={"model": name, "input": ["x", {"image": b64(pngs()[3])}]}).status_code == 200
    text = http.get("/metrics").text
    for name in NAMES.values():
        assert _sample(text, f'sigserve_images_total{{model="{name}"}}') >= 1
        assert _sample(text, f'sigserve_batch_size_count{{model="{name}",tower="image"}}') >= 1
        assert _sample(text, f'sigserve_ready{{model="{name}"}}') == 1
        assert _sample(text, f'sigserve_model_memory_bytes{{model="{name}"}}') > 0
    usage = http.get("/v1/usage").json()["data"]
    assert set(NAMES.values()) <= set(usage["models"])
    assert all(usage["models"][name]["images"] >= 1 for name in NAMES.values())


def test_a_collection_stays_with_the_model_that_built_it(http, libraries):
    image = pngs()[4]
    r = http.post("/v1/collections", json={"name": "by-sig1", "model": "sig1"})
    assert r.status_code == 200 and r.json()["fingerprint"] == libraries["siglip"].checkpoint.fingerprint()
    assert http.post("/v1/collections/by-sig1/items", json={"items": [{"id": "a", "image": b64(image)}],
                                                            "max_num_patches": 64}).status_code == 400
    assert http.post("/v1/collections/by-sig1/items", json={"items": [{"id": "a", "image": b64(image)}]}).json()["added"] == 1
    found = http.post("/v1/collections/by-sig1/search", json={"query": {"text": "a cat"}}).json()
    assert found["model"] == "sig1"
    lib = libraries["siglip"]
    expected = float(lib.embed_texts(["a cat"])[0] @ lib.embed_images([image])[0])
    assert found["data"][0]["score"] == pytest.approx(expected, abs=1e-5)
    assert http.post("/v1/collections", json={"name": "nowhere", "model": "nope"}).status_code == 404


def test_load_measures_each_model_and_refuses_past_the_budget(tmp_path, family_checkpoints):
    lines: list[str] = []
    settings = make_settings(tmp_path, family_checkpoints["siglip"], served_model_name=None,
                             model=[f"{family_checkpoints['siglip']}=one", f"{family_checkpoints['siglip2-fixed']}=two"])
    loaded = load_models(settings, say=lines.append)
    assert [m.spec.served_name for m in loaded] == ["one", "two"] and all(m.rss_mb is not None for m in loaded)
    assert re.match(r"loaded one: \+[\d.]+ MB resident, \d+ MB resident in all", lines[0]), lines
    tight = settings.model_copy(update={"memory_budget_mb": 1})
    with pytest.raises(MemoryBudgetError, match=r"memory budget of 1 MB exceeded: one would add about .* MB"):
        load_models(tight)


def _sample(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in the metrics")
