"""/v1/embeddings through the official openai client: every input dialect, both encodings, the
usage block and the errors, each compared with the library on the same inputs."""

from __future__ import annotations

import base64

import numpy as np
import openai
import pytest

from tests.support.images import b64, data_uri
from tests.support.server import MODEL


def vectors(response) -> np.ndarray:
    return np.array([d.embedding for d in response.data], dtype=np.float32)


def test_texts_equal_the_library(client, tiny_model):
    texts = ["a photo of a cat", "ÉCOLE Ärger Öl", "", "the quick brown fox " * 20]
    response = client.embeddings.create(model=MODEL, input=texts, encoding_format="float")
    assert [d.index for d in response.data] == list(range(len(texts)))
    assert np.allclose(vectors(response), tiny_model.embed_texts(texts), atol=1e-6)
    tokens = sum(tiny_model.tokenize(texts).lengths)
    assert response.usage.prompt_tokens == response.usage.total_tokens == tokens
    assert response.model == MODEL


def test_single_string_input(client, tiny_model):
    response = client.embeddings.create(model=MODEL, input="a dog", encoding_format="float")
    assert len(response.data) == 1
    assert np.allclose(vectors(response)[0], tiny_model.embed_texts(["a dog"])[0], atol=1e-6)


def test_base64_encoding_is_little_endian_float32(client, tiny_model):
    # encoding_format="base64" returns the raw string through the client's extra header trick:
    # the client decodes base64 itself when it asked for it by default, so ask via raw HTTP too.
    raw = client.embeddings.with_raw_response.create(model=MODEL, input=["a cat", "a dog"], encoding_format="base64")
    body = raw.http_response.json()
    got = np.stack([np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in body["data"]])
    assert np.allclose(got, tiny_model.embed_texts(["a cat", "a dog"]), atol=1e-6)
    # and the client's default (which sends base64 and decodes it) agrees
    default = client.embeddings.create(model=MODEL, input=["a cat", "a dog"])
    assert np.allclose(vectors(default), got, atol=1e-6)


@pytest.mark.parametrize("dialect", ["jina", "openai_part", "openai_part_string", "voyage", "modality"])
def test_image_dialects(client, tiny_model, pngs, dialect):
    images = pngs[:3]
    refs = [data_uri(images[0]), b64(images[1]), data_uri(images[2])]
    if dialect == "jina":
        items, extra = [{"image": r} for r in refs], {}
    elif dialect == "openai_part":
        items, extra = [{"type": "image_url", "image_url": {"url": r}} for r in refs], {}
    elif dialect == "openai_part_string":  # Cohere's spelling: the URL is the value itself
        items, extra = [{"type": "image_url", "image_url": r} for r in refs], {}
    elif dialect == "voyage":
        items, extra = [{"type": "image_base64", "image_base64": r} for r in refs], {}
    else:  # infinity: plain strings become image references
        items, extra = refs, {"modality": "image"}
    response = client.embeddings.create(model=MODEL, input=items, encoding_format="float", extra_body=extra)
    assert np.allclose(vectors(response), tiny_model.embed_images(images), atol=1e-6)
    assert response.usage.images == 3
    assert response.usage.patches == sum(tiny_model.preprocess(im, 0, 256).num_patches for im in images)
    assert response.usage.prompt_tokens == 0


def test_mixed_list_keeps_order(client, tiny_model, pngs):
    items = ["a red car", {"image": data_uri(pngs[3])}, {"type": "text", "text": "a cat"},
             {"text": "a dog"}, {"type": "image_url", "image_url": {"url": data_uri(pngs[4])}}]
    response = client.embeddings.create(model=MODEL, input=items, encoding_format="float")
    got = vectors(response)
    texts = tiny_model.embed_texts(["a red car", "a cat", "a dog"])
    images = tiny_model.embed_images([pngs[3], pngs[4]])
    assert np.allclose(got[[0, 2, 3]], texts, atol=1e-6)
    assert np.allclose(got[[1, 4]], images, atol=1e-6)
    assert response.usage.prompt_tokens == sum(tiny_model.tokenize(["a red car", "a cat", "a dog"]).lengths)


def test_max_num_patches_and_raw_embeddings(client, tiny_model, pngs):
    response = client.embeddings.create(model=MODEL, input=[{"image": b64(pngs[4])}], encoding_format="float",
                                        extra_body={"max_num_patches": 16, "normalize": False})
    want = tiny_model.embed_images([pngs[4]], max_num_patches=16, normalize=False)
    assert np.allclose(vectors(response), want, atol=1e-6)
    assert response.usage.patches == tiny_model.preprocess(pngs[4], 0, 16).num_patches <= 16
    assert not np.isclose(np.linalg.norm(want), 1.0)  # raw really is raw


def test_native_dimensions_accepted_others_refused(client, tiny_model):
    dim = tiny_model.embedding_dim
    ok = client.embeddings.create(model=MODEL, input="a cat", dimensions=dim, encoding_format="float")
    assert len(ok.data[0].embedding) == dim
    with pytest.raises(openai.BadRequestError) as err:
        client.embeddings.create(model=MODEL, input="a cat", dimensions=dim // 2)
    body = err.value.body
    assert body["param"] == "dimensions" and "Matryoshka" in body["message"]


def test_bad_image_is_named(client, pngs):
    items = ["a cat", {"image": data_uri(pngs[0])}, {"image": b64(b"not an image at all")},
             {"image": data_uri(pngs[1][: len(pngs[1]) // 2])}]
    with pytest.raises(openai.BadRequestError) as err:
        client.embeddings.create(model=MODEL, input=items)
    assert err.value.body["param"] in ("input[2]", "input[3]")
    assert err.value.body["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as err:  # truncated PNG alone
        client.embeddings.create(model=MODEL, input=[{"image": data_uri(pngs[1][:100])}])
    assert err.value.body["param"] == "input[0]"


def test_private_url_is_refused(client):
    with pytest.raises(openai.BadRequestError) as err:
        client.embeddings.create(model=MODEL, input=[{"image": "http://127.0.0.1:9/cat.png"}])
    assert err.value.body["param"] == "input[0]" and err.value.body["code"] == "image_url_refused"


def test_unknown_model_and_bad_body(client):
    with pytest.raises(openai.NotFoundError) as err:
        client.embeddings.create(model="text-embedding-3-small", input="a cat")
    assert err.value.body["code"] == "model_not_found" and err.value.body["param"] == "model"
    with pytest.raises(openai.UnprocessableEntityError) as err:
        client.embeddings.create(model=MODEL, input=[{"video": "x"}])
    assert err.value.body["type"] == "invalid_request_error" and err.value.body["param"].startswith("input[0]")
    with pytest.raises(openai.BadRequestError) as err:
        client.embeddings.create(model=MODEL, input=[])
    assert err.value.body["code"] == "empty_input"
    with pytest.raises(openai.BadRequestError) as err:
        client.embeddings.create(model=MODEL, input=["x"] * 65)  # max_items is 64 in these tests
    assert err.value.body["code"] == "too_many_items"
