"""Parity with transformers on a tiny random checkpoint of each architecture of the family, each with its
own processor and tokenizer: NaFlex (Siglip2Model), SigLIP 2 fixed resolution (SiglipModel, bilinear,
Gemma vocabulary with SigLIP 2's text rules) and SigLIP 1 (SiglipModel, bicubic, per-channel mean/std,
patch 14 on a size that is not a multiple of it, a T5-style SentencePiece vocabulary, 16 text tokens).
Pooled embeddings, patch features and probabilities within 1e-5 in fp32 on the torch and onnx backends;
the preprocessed pixels bit for bit; token ids identical."""

from __future__ import annotations

import numpy as np
import pytest

import sigserve
from sigserve.errors import InvalidArgumentError
from sigserve.images import normalize
from tests.core.test_parity import TEXTS, oracle_rgb
from tests.support.images import awkward_images

TOL = 1e-5
ARCHS = ["naflex", "siglip2-fixed", "siglip"]
BACKENDS = ("torch", "onnx", "openvino")  # each against transformers (aoti: scripts/parity_report.py)
MORE_TEXTS = ["hello </s> world", "</s>", "x<unk>y", "end </s>", "▁under ▁line", "punct!!! a,b.c", "don't STOP",
              "Ⅻ ﬁ ½ ｆｕｌｌ", "  leading and trailing  ", "ΣΑΣ", "a" * 15 + " </s>"]


@pytest.fixture(scope="module")
def models(family_checkpoints):
    return {(arch, backend): sigserve.load(folder, backend=backend)
            for arch, folder in family_checkpoints.items() for backend in BACKENDS}


@pytest.fixture(scope="module")
def items(photos):
    awkward = awkward_images(photos["chelsea"])
    ours = list(photos.values()) + list(awkward.values())
    oracle = [im.convert("RGB") for im in photos.values()] + [oracle_rgb(b) for b in awkward.values()]
    return ours, oracle


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("arch", ARCHS)
def test_pooled_patch_features_and_probabilities(models, family_oracles, items, arch, backend):
    model, oracle = models[arch, backend], family_oracles[arch]
    ours_items, rgb = items
    inputs, pooled, hidden = oracle.vision(rgb)
    assert np.abs(model.embed_images(ours_items, normalize=False, batch_size=4) - pooled).max() <= TOL
    for b, grid in enumerate(model.patch_features(ours_items)):
        rows, cols = inputs["spatial_shapes"][b].tolist()
        assert grid.shape == (rows, cols, model.embedding_dim)
        assert np.abs(grid.reshape(rows * cols, -1) - hidden[b, : rows * cols]).max() <= TOL
    texts = ["a photo of a cat", "A ROCKET", "coffee", ""]
    assert np.abs(model.score(ours_items, texts) - oracle.probabilities(rgb, texts)).max() <= TOL


@pytest.mark.parametrize("arch", ARCHS)
def test_token_ids_and_text_embeddings(models, family_oracles, arch):
    model, oracle = models[arch, "torch"], family_oracles[arch]
    texts = TEXTS + MORE_TEXTS
    ours = model.tokenize(texts)
    assert ours.ids.shape == (len(texts), oracle.context_length)
    assert np.array_equal(ours.ids, oracle.token_ids(texts))
    assert ours.ids[TEXTS.index("x" * 500), -1] == model.tokenizer.eos_id  # over-long: T-1 tokens + sticky EOS
    for backend in BACKENDS:
        assert np.abs(models[arch, backend].embed_texts(texts, normalize=False) - oracle.text(texts)).max() <= TOL


def test_siglip1_long_texts_are_cut_before_tokenizing_without_changing_the_ids(models, family_oracles):
    """SigLIP 1 reads T-1 tokens: only the first words can count, so a long text is cut to them first."""
    rng = np.random.default_rng(0)
    words = ["cat", "ΣΟΦΟΣ", "日本語", "  ", "🐱", "straße", "x" * 40, "İstanbul", "!!!", "</s>"]
    texts = [" ".join(rng.choice(words, 4000)) for _ in range(3)] + ["a" * 100_000, " " * 50_000 + "b", "! " * 9000 + "z"]
    assert np.array_equal(models["siglip", "torch"].tokenize(texts).ids, family_oracles["siglip"].token_ids(texts))


@pytest.mark.parametrize("arch", ["siglip2-fixed", "siglip"])
def test_preprocessed_pixels_equal_the_oracle(models, family_oracles, items, arch):
    """The square resize (the configured filter, aspect not kept), cut to the model's G x G patches and
    normalised through the checkpoint's per-channel LUT: the oracle's pixel_values bit for bit."""
    model, oracle = models[arch, "torch"], family_oracles[arch]
    ours_items, rgb = items
    ref = oracle.preprocess(rgb)["pixel_values"].numpy()  # (B, 3, S, S)
    G, P = model.image_config.grid, model.image_config.patch_size
    for i, item in enumerate(ours_items):
        patches = model.preprocess(item, i)
        assert (patches.rows, patches.cols) == (G, G)
        pixels = normalize(patches.pixels, model.backend.lut).reshape(G, G, P, P, 3)
        image = pixels.transpose(4, 0, 2, 1, 3).reshape(3, G * P, G * P)
        assert np.array_equal(image, ref[i, :, : G * P, : G * P])


@pytest.mark.parametrize("arch", ["siglip2-fixed", "siglip"])
def test_fixed_resolution_refuses_max_num_patches_but_works_without(models, photos, arch):
    model = models[arch, "torch"]
    size = model.image_config.size
    for call in (lambda: model.embed_images([photos["coffee"]], max_num_patches=256),
                 lambda: model.classify([photos["coffee"]], ["cat"], max_num_patches=64),
                 lambda: model.preprocess(photos["coffee"], 0, 256)):
        with pytest.raises(InvalidArgumentError, match=f"fixed resolution \\({size}x{size}") as err:
            call()
        assert err.value.param == "max_num_patches"
    assert model.embed_images([photos["coffee"]]).shape == (1, model.embedding_dim)
    [[(label, _)]] = model.classify([photos["coffee"]], ["cat"])
    assert label == "cat"
    assert model.heatmap(photos["coffee"], ["cat"]).shape == (1, model.image_config.grid, model.image_config.grid)
    info = model.describe()
    assert info["architecture"] == "fixed" and info["image"]["image_size"] == size


def test_naflex_default_length_is_the_processors(models, photos):
    model = models["naflex", "torch"]
    assert model.image_config.max_num_patches == 256
    assert np.array_equal(model.embed_images([photos["rocket"]]), model.embed_images([photos["rocket"]], max_num_patches=256))


@pytest.mark.parametrize("arch", ["siglip2-fixed", "siglip"])
def test_aoti_compiles_the_fixed_resolution_tower(family_checkpoints, family_oracles, items, arch):
    pytest.importorskip("torch._inductor")
    model, oracle = sigserve.load(family_checkpoints[arch], backend="aoti"), family_oracles[arch]
    ours_items, rgb = items
    _, pooled, hidden = oracle.vision(rgb)
    assert np.abs(model.embed_images(ours_items, normalize=False, batch_size=5) - pooled).max() <= TOL
    grids = np.stack([g.reshape(-1, g.shape[-1]) for g in model.patch_features(ours_items)])
    assert np.abs(grids - hidden).max() <= TOL
