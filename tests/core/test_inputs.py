"""Inputs: every accepted kind, every PIL mode, and bad items raising typed errors that name them."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

import sigserve
from sigserve.errors import ImageDecodeError, ImageTooLargeError, InvalidArgumentError, TextInputError
from sigserve.images import naflex_size, open_image
from tests.support.images import awkward_images, encode


@pytest.mark.parametrize("size,L,expected", [
    ((224, 224), 256, (256, 256)), ((480, 640), 256, (224, 288)), ((480, 640), 1024, (432, 576)),
    ((427, 640), 576, (304, 464)), ((1080, 1920), 784, (336, 592)), ((224, 1024), 256, (112, 512)),
    ((1, 1), 256, (112, 112)), ((16, 2000), 256, (32, 2048)), ((1080, 1920), 1024, (384, 672)),
])
def test_naflex_size_matches_the_reference_table(size, L, expected):
    assert naflex_size(*size, L) == expected


def test_naflex_size_agrees_with_transformers_on_random_sizes():
    from transformers.models.siglip2.image_processing_pil_siglip2 import get_image_size_for_max_num_patches

    rng = np.random.default_rng(1)
    for h, w, L in zip(rng.integers(1, 5000, 2000), rng.integers(1, 5000, 2000), rng.integers(16, 1100, 2000)):
        assert naflex_size(int(h), int(w), int(L)) == get_image_size_for_max_num_patches(int(h), int(w), 16, int(L))


def test_every_input_kind_gives_the_same_embedding(tiny_model, photos, tmp_path):
    photo = photos["coffee"]
    path = tmp_path / "coffee.png"
    photo.save(path)
    items = [str(path), path, path.read_bytes(), photo, np.asarray(photo)]
    emb = tiny_model.embed_images(items)
    assert emb.shape == (5, tiny_model.embedding_dim)
    assert np.abs(emb - emb[0]).max() <= 1e-6


def test_conversions_to_rgb(photos):
    awkward = awkward_images(photos["chelsea"])
    for name, data in awkward.items():
        assert open_image(data).mode == "RGB", name
    rgba = open_image(awkward["rgba.png"])
    assert np.asarray(rgba)[0, 0].tolist() != [0, 0, 0]  # transparent corner composited on white, not black
    transparent = Image.new("RGBA", (8, 8), (10, 20, 30, 0))
    assert np.asarray(open_image(encode(transparent, "PNG"))).min() == 255
    ramp = (np.arange(256, dtype=np.uint16) * 257).reshape(16, 16)
    gray = np.asarray(open_image(encode(Image.fromarray(ramp), "PNG")))[..., 0]
    assert np.array_equal(gray.ravel(), np.arange(256))  # 16-bit scaled, not clipped to white


def test_animated_gif_uses_first_frame():
    frames = [Image.new("RGB", (32, 32), c) for c in [(255, 0, 0), (0, 0, 255)]]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    assert np.asarray(open_image(buf.getvalue()))[0, 0].tolist() == [255, 0, 0]


def test_exif_orientation_applied_by_default_and_switchable():
    image = Image.new("RGB", (40, 20), (0, 0, 0))
    image.paste((255, 255, 255), (0, 0, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    data = encode(image, "JPEG", exif=exif.tobytes(), quality=100)
    assert open_image(data).size == (20, 40)
    assert open_image(data, exif_transpose=False).size == (40, 20)


BAD = {
    "corrupt": b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 20,
    "empty": b"",
    "text": b"this is not an image at all",
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_bytes_raise_decode_error_naming_the_item(tiny_model, photos, name):
    items = [photos["coffee"], photos["rocket"], BAD[name]]
    with pytest.raises(ImageDecodeError) as err:
        tiny_model.embed_images(items)
    assert err.value.index == 2 and "input[2]" in str(err.value)


def test_truncated_jpeg_and_missing_or_empty_files(tiny_model, photos, tmp_path):
    jpeg = encode(photos["astronaut"], "JPEG")
    with pytest.raises(ImageDecodeError) as err:
        tiny_model.embed_images([photos["coffee"], jpeg[: len(jpeg) // 2]])
    assert err.value.index == 1
    (tmp_path / "empty.jpg").write_bytes(b"")
    for i, bad in enumerate([tmp_path / "empty.jpg", tmp_path / "missing.jpg", 42, np.zeros((4, 4), np.float32)]):
        with pytest.raises(ImageDecodeError) as err:
            tiny_model.embed_images([photos["coffee"], bad])
        assert err.value.index == 1, i


def test_decompression_bomb_cap_is_configurable(tiny_checkpoint):
    bomb = encode(Image.new("L", (5000, 4000)), "PNG")  # 20 MP of zeros: a few KB on disk
    strict = sigserve.load(tiny_checkpoint, max_image_pixels=10_000_000)
    with pytest.raises(ImageTooLargeError) as err:
        strict.embed_images([bomb])
    assert err.value.index == 0 and "10000000" in str(err.value)
    assert sigserve.load(tiny_checkpoint, max_image_pixels=25_000_000).embed_images([bomb]).shape[0] == 1


def test_model_still_works_after_bad_inputs(tiny_model, photos):
    before = tiny_model.embed_images([photos["coffee"]])
    with pytest.raises(ImageDecodeError):
        tiny_model.embed_images([b"nope"])
    assert np.array_equal(tiny_model.embed_images([photos["coffee"]]), before)


@pytest.mark.parametrize("L", [0, 15, 4097, -1, 2.5, "256", True])
def test_max_num_patches_out_of_range_is_refused(tiny_model, photos, L):
    with pytest.raises(InvalidArgumentError, match="max_num_patches"):
        tiny_model.embed_images([photos["coffee"]], max_num_patches=L)


def test_beyond_trained_lengths_is_allowed(tiny_model, photos):
    grid = tiny_model.patch_features([photos["astronaut"]], max_num_patches=2048)[0]
    assert 1024 < grid.shape[0] * grid.shape[1] <= 2048


def test_text_inputs_are_validated(tiny_model):
    with pytest.raises(TextInputError) as err:
        tiny_model.embed_texts(["ok", None])
    assert err.value.index == 1
    with pytest.raises(InvalidArgumentError):
        tiny_model.embed_texts("a single string, not a list")


def test_classify_returns_sigmoid_probabilities_best_first(tiny_model, photos):
    labels = ["cat", "rocket", "coffee", "astronaut"]
    result = tiny_model.classify([photos["chelsea"], photos["rocket"]], labels)
    probs = tiny_model.score([photos["chelsea"], photos["rocket"]],
                             [f"This is a photo of {label}." for label in labels])
    for row, ranked in zip(probs, result):
        assert [p for _, p in ranked] == sorted((p for _, p in ranked), reverse=True)
        assert {lab: p for lab, p in ranked} == pytest.approx(dict(zip(labels, row.tolist())), abs=1e-6)
    assert len(tiny_model.classify([photos["chelsea"]], labels, top_k=2)[0]) == 2


def test_classify_with_several_templates_averages_normalised_prompts(tiny_model, photos):
    templates = ["a photo of a {}.", "a drawing of a {}.", "{}"]
    labels = ["cat", "dog"]
    emb = tiny_model.embed_texts([t.format(lab) for lab in labels for t in templates]).reshape(2, 3, -1).mean(1)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    image = tiny_model.embed_images([photos["chelsea"]])
    expected = tiny_model.probabilities(image, emb)[0]
    got = dict(tiny_model.classify([photos["chelsea"]], labels, templates=templates)[0])
    assert [got["cat"], got["dog"]] == pytest.approx(expected.tolist(), abs=1e-6)


def test_long_texts_are_cut_before_tokenizing_without_changing_the_ids(tiny_model, oracle):
    """Only 63 tokens count: a text is cut to a few KB first (a 10 MB string must not cost seconds of
    tokenizing), and the ids are the reference's, also for texts far longer than the cut."""
    tokenizer = tiny_model.tokenizer
    assert 64 <= tokenizer.max_chars <= 64 * 1024
    rng = np.random.default_rng(0)
    words = ["cat", "ΣΟΦΟΣ", "日本語", "  ", "🐱", "straße", "x" * 40, "İstanbul", "\u00e9\u0301"]
    texts = [" ".join(rng.choice(words, 4000)) for _ in range(3)] + ["a" * 100_000, " " * 50_000 + "b"]
    assert all(len(t) > tokenizer.max_chars for t in texts)
    assert np.array_equal(tokenizer(texts).ids, oracle.token_ids(texts))
