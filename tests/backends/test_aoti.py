"""The opt-in AOTInductor backend is exact fp32: within 1e-5 of transformers (the oracle) on padded
mixed-grid batches, pooled and patch features, for any batch size and length from ONE compiled package,
which is cached and reused by the next load."""

from __future__ import annotations

import numpy as np
import pytest

import sigserve
from sigserve import artifacts
from sigserve.images import Patches, pack

pytest.importorskip("torch._inductor")
from sigserve.backends import aoti  # noqa: E402

TOL = 1e-5


@pytest.fixture(scope="module")
def aoti_model(tiny_checkpoint):
    return sigserve.load(tiny_checkpoint, backend="aoti")  # compiles once (tens of seconds), then cached


@pytest.mark.parametrize("L", [16, 64, 256])
def test_aoti_matches_transformers_on_padded_mixed_batches(aoti_model, oracle, photos, L):
    images = list(photos.values())
    rgb = [im.convert("RGB") for im in images]
    inputs, pooled, hidden = oracle.vision(rgb, L)
    ours = aoti_model.embed_images(images, max_num_patches=L, normalize=False, batch_size=len(images))
    assert np.abs(ours - pooled).max() <= TOL
    grids = aoti_model.patch_features(images, max_num_patches=L, batch_size=3)
    for b, grid in enumerate(grids):
        rows, cols = inputs["spatial_shapes"][b].tolist()
        assert np.abs(grid.reshape(rows * cols, -1) - hidden[b, : rows * cols]).max() <= TOL
    texts = ["a photo of a cat", "", "coffee"]
    assert np.abs(aoti_model.embed_texts(texts, normalize=False) - oracle.text(texts)).max() <= TOL
    assert np.abs(aoti_model.score(images, texts, max_num_patches=L) - oracle.probabilities(rgb, texts, L)).max() <= TOL


def test_aoti_padding_batch_size_and_tiny_grids(tiny_checkpoint, aoti_model, photos):
    torch_model = sigserve.load(tiny_checkpoint, backend="torch")
    patches = [torch_model.preprocess(im, None, 64) for im in photos.values()]
    # A 1-patch image: no preprocessing at 16+ patches yields one, but the backend must take it.
    patches += [Patches(np.zeros((1, 3 * 16 * 16), np.uint8), 1, 1)]
    assert len({p.num_patches for p in patches}) > 2
    ref, _ = torch_model.encode_patches(patches)
    got, _ = aoti_model.encode_patches(patches)
    assert np.abs(got - ref).max() <= TOL
    alone = np.concatenate([aoti_model.encode_patches([p])[0] for p in patches])  # batch 1, no padding
    assert np.abs(alone - ref).max() <= TOL
    p = patches[0]  # extra padding rows change nothing
    padded = aoti_model.backend.encode_images(*pack([p], length=p.num_patches + 9))[0]
    assert np.abs(padded - alone[:1]).max() <= TOL


def test_aoti_package_is_cached(tiny_checkpoint, aoti_model, monkeypatch, photos):
    assert aoti.package_path(aoti_model.checkpoint).is_file()
    before = aoti_model.embed_images([photos["coffee"]])

    def no_compile(*args, **kwargs):
        raise AssertionError("recompiled although the cached package is current")

    monkeypatch.setattr(artifacts.subprocess, "run", no_compile)
    again = sigserve.load(tiny_checkpoint, backend="aoti")
    assert np.array_equal(again.embed_images([photos["coffee"]]), before)
