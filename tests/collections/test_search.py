"""Library search equals a brute-force ranking computed from the library's own embeddings."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

import sigserve
from sigserve.collections import ModelMismatchError

QUERIES = ["a red car", "a dog on a beach", "Das ist ein Haus."]


@pytest.fixture
def photos(tiny_model, store_uri, images):
    col = tiny_model.collection("photos", uri=store_uri)
    col.add(images, metadata=[{"n": i, "odd": bool(i % 2)} for i in range(len(images))])
    return col


def brute_force(model, images, query_vec, top_k):
    embeds = model.embed_images(images)
    scores = embeds @ query_vec
    order = np.argsort(-scores, kind="stable")[:top_k]
    return order, scores[order]


def ids_of(images, order):
    return [hashlib.sha256(images[i]).hexdigest() for i in order]


@pytest.mark.parametrize("text", QUERIES)
def test_text_search_equals_brute_force(tiny_model, photos, images, text):
    hits = photos.search(text, top_k=5)
    order, scores = brute_force(tiny_model, images, tiny_model.embed_texts([text])[0], 5)
    assert [h.id for h in hits] == ids_of(images, order)
    np.testing.assert_allclose([h.score for h in hits], scores, atol=1e-6, rtol=0)
    probs = tiny_model.score(images, [text])[order, 0]
    np.testing.assert_allclose([h.probability for h in hits], probs, atol=1e-7, rtol=1e-5)
    assert [h.metadata["n"] for h in hits] == [int(i) for i in order]


def test_image_search_equals_brute_force(tiny_model, photos, images):
    hits = photos.search(image=images[4], top_k=len(images))
    order, scores = brute_force(tiny_model, images, tiny_model.embed_images([images[4]])[0], len(images))
    assert [h.id for h in hits] == ids_of(images, order)
    assert hits[0].id == hashlib.sha256(images[4]).hexdigest()  # an image finds itself first
    np.testing.assert_allclose([h.score for h in hits], scores, atol=1e-6, rtol=0)
    assert all(h.probability is None for h in hits)  # no text: no text-image probability


@pytest.mark.parametrize("weight", [0.25, 0.5, 0.9])
def test_mixed_query_is_the_renormalised_weighted_sum(tiny_model, photos, images, weight):
    text_vec = tiny_model.embed_texts(["a red car"])[0]
    image_vec = tiny_model.embed_images([images[2]])[0]
    mixed = weight * text_vec + (1 - weight) * image_vec
    mixed /= np.linalg.norm(mixed)
    hits = photos.search("a red car", image=images[2], top_k=6, text_weight=weight)
    order, scores = brute_force(tiny_model, images, mixed, 6)
    assert [h.id for h in hits] == ids_of(images, order)
    np.testing.assert_allclose([h.score for h in hits], scores, atol=1e-6, rtol=0)
    # the probability is the text's own, for the pair (image, text)
    np.testing.assert_allclose([h.probability for h in hits], tiny_model.score(images, ["a red car"])[order, 0],
                               atol=1e-7, rtol=1e-5)


def test_threshold_returns_every_match_and_no_other(tiny_model, photos, images):
    probs = tiny_model.score(images, ["a red car"])[:, 0]
    threshold = float(np.sort(probs)[len(probs) // 2])  # half of the photos qualify
    hits = photos.search("a red car", threshold=threshold)
    expected = [i for i in np.argsort(-probs, kind="stable") if probs[i] >= threshold]
    assert len(hits) == len(expected) > 1  # no top_k cut unless asked
    assert [h.id for h in hits] == ids_of(images, expected)
    assert all(h.probability >= threshold for h in hits)
    assert [h.id for h in photos.search("a red car", threshold=threshold, top_k=2)] == ids_of(images, expected[:2])
    assert len(photos.search("a red car", threshold=0.0)) == len(images)


def test_threshold_needs_text(photos, images):
    with pytest.raises(sigserve.InvalidArgumentError) as err:
        photos.search(image=images[0], threshold=0.5)
    assert err.value.param == "threshold"


def test_same_image_twice_is_stored_once(photos, images):
    before = photos.count()
    result = photos.add([images[3], images[3]])
    assert photos.count() == before
    assert result.inserted == 0 and result.updated == 1
    assert result.ids == [hashlib.sha256(images[3]).hexdigest()] * 2


def test_upsert_get_delete(photos, images):
    photos.add([images[0]], ids=["custom"], metadata=[{"brand": "acme", "tags": ["a", "b"]}])
    photos.add([images[1]], ids=["custom"], metadata=[{"brand": "other"}])  # replaced, not added
    got, missing = photos.get(["custom", "nope"])
    assert missing is None
    assert got["metadata"] == {"brand": "other"} and got["content_hash"] == hashlib.sha256(images[1]).hexdigest()
    assert photos.fields["tags"] == "string[]"
    assert photos.delete(["custom", "nope"]) == 1
    assert photos.get(["custom"]) == [None]


def test_bad_image_writes_nothing(photos, images):
    before = photos.count()
    with pytest.raises(sigserve.InputError) as err:
        photos.add([images[0], b"not an image"])
    assert err.value.index == 1
    assert photos.count() == before


def test_other_weights_are_refused(tmp_path, photos, store_uri):
    from tests.support.checkpoints import make_checkpoint

    other = sigserve.load(make_checkpoint(tmp_path / "other", "tiny", seed=1))
    col = other.collection("photos", uri=store_uri)
    with pytest.raises(ModelMismatchError, match="not comparable"):
        col.search("a red car")
    with pytest.raises(ModelMismatchError):
        col.add([np.zeros((16, 16, 3), np.uint8)])


def test_reopened_store_gives_the_same_results(tiny_model, photos, store_uri):
    again = sigserve.collections.open(tiny_model, "photos", store_uri, create=False)
    assert [(h.id, h.score) for h in again.search("a red car")] == [(h.id, h.score) for h in photos.search("a red car")]


def test_open_without_create_raises_not_found(tiny_model, store_uri):
    with pytest.raises(sigserve.collections.CollectionNotFoundError):
        sigserve.collections.open(tiny_model, "absent", store_uri, create=False)
