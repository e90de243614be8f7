"""Parity with transformers' Siglip2 (model, PIL image processor, Siglip2Tokenizer) on the same
random checkpoint: real photos and awkward images, every sequence length, fp32 max abs diff <= 1e-5."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from transformers.image_transforms import convert_to_rgb

from tests.support.images import awkward_images

TOL = 1e-5
LENGTHS = [64, 256, 576, 1024]


def oracle_rgb(data: bytes) -> Image.Image:
    """The oracle's own view of an encoded image: transformers' convert_to_rgb, except 16-bit
    grayscale, which PIL would clip to white; there the test scales to 8 bits itself."""
    image = Image.open(io.BytesIO(data))
    if image.mode.startswith("I"):
        a = np.rint(np.asarray(image, np.float64) / 257).clip(0, 255).astype(np.uint8)
        return Image.fromarray(np.stack([a] * 3, -1))
    return Image.fromarray(convert_to_rgb(image, return_numpy=True))


@pytest.fixture(scope="module")
def awkward(photos):
    return awkward_images(photos["chelsea"])


@pytest.mark.parametrize("L", LENGTHS)
def test_photos_pooled_features_and_probabilities(tiny_model, oracle, photos, L):
    images = list(photos.values())
    rgb = [im.convert("RGB") for im in images]
    inputs, pooled, hidden = oracle.vision(rgb, L)
    ours = tiny_model.embed_images(images, max_num_patches=L, normalize=False)
    assert np.abs(ours - pooled).max() <= TOL
    grids = tiny_model.patch_features(images, max_num_patches=L)
    for b, grid in enumerate(grids):
        rows, cols = inputs["spatial_shapes"][b].tolist()
        assert grid.shape == (rows, cols, tiny_model.embedding_dim)
        assert np.abs(grid.reshape(rows * cols, -1) - hidden[b, : rows * cols]).max() <= TOL
    texts = ["a photo of a cat", "a rocket", "coffee"]
    probs = tiny_model.score(images, texts, max_num_patches=L)
    assert np.abs(probs - oracle.probabilities(rgb, texts, L)).max() <= TOL


@pytest.mark.parametrize("L", LENGTHS)
def test_awkward_images(tiny_model, oracle, awkward, L):
    names = list(awkward)
    ours = tiny_model.embed_images([awkward[n] for n in names], max_num_patches=L, normalize=False)
    _, pooled, _ = oracle.vision([oracle_rgb(awkward[n]) for n in names], L)
    diffs = {n: float(np.abs(ours[i] - pooled[i]).max()) for i, n in enumerate(names)}
    assert max(diffs.values()) <= TOL, diffs


def test_preprocessed_arrays_equal_the_oracle(tiny_model, oracle, photos, awkward):
    """Patches and packed batches hold the resized uint8 values; normalised through images.LUT (as every
    backend does where a batch enters it, on the host or the GPU) they equal the oracle's float32
    pixel_values exactly, on every valid patch. Padding rows are masked, so their value never counts."""
    import torch

    from sigserve.images import normalize, pack

    items = list(photos.values()) + list(awkward.values())
    for L in LENGTHS:
        patches = [tiny_model.preprocess(item, i, L) for i, item in enumerate(items)]
        assert all(p.pixels.dtype == np.uint8 for p in patches)
        pixel_values, mask, shapes = pack(patches, length=L)
        assert pixel_values.dtype == np.uint8
        rgb = [im.convert("RGB") for im in photos.values()] + [oracle_rgb(b) for b in awkward.values()]
        ref = oracle.preprocess(rgb, L)
        assert np.array_equal(shapes, ref["spatial_shapes"].numpy())
        assert np.array_equal(mask, ref["pixel_attention_mask"].numpy())
        valid = mask.astype(bool)
        ref_pixels = ref["pixel_values"].numpy()
        assert ref_pixels.dtype == np.float32 and not ref_pixels[~valid].any()  # the oracle pads with 0.0
        host = normalize(pixel_values)
        assert host.dtype == np.float32 and np.array_equal(host[valid], ref_pixels[valid])
        # The torch backend's own path (a gather from its LUT tensor: on the GPU for CUDA), bit for bit.
        backend = tiny_model.backend
        if hasattr(backend, "pixels"):
            gathered = backend.pixels(torch.from_numpy(pixel_values)).float().cpu().numpy()
            assert np.array_equal(gathered[valid], ref_pixels[valid])


TEXTS = ["a photo of a cat", "A PHOTO OF A CAT", "Ein Hund läuft im Park", "ΣΟΦΟΣ σοφός Ελληνικά",
         "日本語のテキスト", "фото КОШКИ", "ÉCOLE İstanbul STRASSE", "", "   ", "\t\n", "emoji 🐱🐶",
         "the quick brown fox " * 40, "x" * 500, "<eos> literal special tokens <pad>"]


def test_token_ids_equal_the_oracle(tiny_model, oracle):
    ours = tiny_model.tokenize(TEXTS)
    ref = oracle.token_ids(TEXTS)
    assert ours.ids.shape == (len(TEXTS), 64)
    assert np.array_equal(ours.ids, ref)
    assert ours.ids[-3, -1] == tiny_model.tokenizer.eos_id  # over-long: 63 tokens + sticky EOS
    eos = tiny_model.tokenizer.eos_id
    assert ours.lengths == [int(np.flatnonzero(row == eos)[-1]) + 1 for row in ref]  # up to the appended EOS


def test_text_embeddings(tiny_model, oracle):
    ours = tiny_model.embed_texts(TEXTS, normalize=False)
    assert np.abs(ours - oracle.text(TEXTS)).max() <= TOL
    normed = tiny_model.embed_texts(TEXTS)
    assert np.allclose(np.linalg.norm(normed, axis=1), 1.0, atol=1e-6)


def test_batch_invariance_mixed_aspect_ratios(tiny_model, photos, awkward):
    items = [photos["astronaut"], awkward["3x1000"], photos["flower"], awkward["1x1"], awkward["1000x3"]]
    together = tiny_model.embed_images(items, max_num_patches=256, batch_size=8)
    for i, item in enumerate(items):
        alone = tiny_model.embed_images([item], max_num_patches=256)
        assert np.abs(alone[0] - together[i]).max() <= TOL


def test_golden_circle_images_rank_as_the_oracle(tiny_model, oracle):
    """The HF integration test's images and captions (random weights, so oracle values, not the hub's)."""
    from PIL import ImageDraw

    def circle(h, w):
        image = Image.new("RGB", (w, h), "red")
        cx, cy = w // 2, h // 2
        r = min(cx, cy) // 8 * 7
        ImageDraw.Draw(image).ellipse((cx - r, cy - r, cx + r, cy + r), fill="blue", outline="green", width=w // 20)
        return image

    images = [circle(224, 224), circle(1024, 1024), circle(224, 1024)]
    texts = ["circle", "ellipsoid", "blue circle on red background", "a dog"]
    assert [p.rows * 100 + p.cols for p in map(lambda im: tiny_model.preprocess(im), images)] == [1616, 1616, 732]
    assert np.abs(tiny_model.score(images, texts) - oracle.probabilities(images, texts)).max() <= TOL
