"""Heatmaps in the library: a patch's region embedding is what the pooling head outputs when it may see
that patch alone (checked against transformers' own head, every patch masked but one), the heatmap is
those embeddings scored as pooled images are, and its shape is the image's NaFlex grid."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import sigserve
from sigserve.images import naflex_size
from sigserve.scoring import l2_normalize
from tests.support.images import image_bytes

TOL = 1e-5
LENGTHS = [16, 64, 256]
TEXTS = ["a photo of a cat", "a rocket", "coffee"]


@pytest.fixture(scope="module")
def images(photos):
    return {"astronaut": photos["astronaut"], "coffee": photos["coffee"], "camera_gray": photos["camera_gray"],
            "wide png": image_bytes(3, (100, 20)), "tall png": image_bytes(4, (20, 90))}


@pytest.fixture(scope="module")
def torch_model(tiny_checkpoint):
    return sigserve.load(tiny_checkpoint, backend="torch")


def head_with_one_patch_visible(oracle, grid: np.ndarray) -> np.ndarray:
    """transformers' pooling head on the patch grid once per patch, every other patch masked -> (N, D) raw."""
    x = torch.from_numpy(grid.reshape(-1, grid.shape[-1]))  # (N, D)
    N = x.shape[0]
    with torch.no_grad():
        return oracle.model.vision_model.head(x.expand(N, N, -1), attention_mask=torch.eye(N, dtype=torch.long)).numpy()


@pytest.mark.parametrize("L", LENGTHS)
@pytest.mark.parametrize("backend", ["default", "torch"])
def test_region_embedding_is_the_pooled_head_seeing_one_patch(tiny_model, torch_model, oracle, images, backend, L):
    model = tiny_model if backend == "default" else torch_model
    for name, image in images.items():
        [grid] = model.patch_features([image], max_num_patches=L)
        expected = head_with_one_patch_visible(oracle, grid)  # (N, D)
        ours = model.patch_embeddings(grid).reshape(expected.shape)
        assert np.abs(ours - l2_normalize(expected)).max() <= TOL, name
        raw = model._head.per_patch(torch.from_numpy(grid)).numpy().reshape(expected.shape)
        assert np.abs(raw - expected).max() <= TOL, name


@pytest.mark.parametrize("L", LENGTHS)
def test_heatmap_scores_each_patch_like_a_pooled_image(tiny_model, oracle, images, L):
    scale, bias = oracle.model.logit_scale.item(), oracle.model.logit_bias.item()
    texts = l2_normalize(oracle.text(TEXTS))
    for name, image in images.items():
        maps = tiny_model.heatmap(image, TEXTS, max_num_patches=L)
        [grid] = tiny_model.patch_features([image], max_num_patches=L)
        regions = l2_normalize(head_with_one_patch_visible(oracle, grid))  # (N, D)
        expected = 1 / (1 + np.exp(-(regions @ texts.T * np.exp(scale) + bias)))  # (N, T)
        assert maps.shape == (len(TEXTS), *grid.shape[:2]), name
        assert np.abs(maps - expected.T.reshape(maps.shape)).max() <= TOL, name
        assert ((maps > 0) & (maps < 1)).all()


@pytest.mark.parametrize("L", [16, 64, 144, 256, 576, 1024])
def test_heatmap_shape_is_the_naflex_grid(tiny_model, photos, L):
    for image in (photos["astronaut"], photos["rocket"], image_bytes(1, (100, 20))):
        size = sigserve.images.open_image(image).size  # (width, height)
        height, width = naflex_size(size[1], size[0], L)
        assert tiny_model.heatmap(image, ["a"], max_num_patches=L).shape == (1, height // 16, width // 16)


def test_backends_agree(tiny_model, torch_model, photos):
    a = tiny_model.heatmap(photos["chelsea"], TEXTS)
    b = torch_model.heatmap(photos["chelsea"], TEXTS)
    assert np.abs(a - b).max() <= TOL


def test_bad_inputs_are_named(tiny_model, photos):
    with pytest.raises(sigserve.InvalidArgumentError, match="texts must not be empty"):
        tiny_model.heatmap(photos["coffee"], [])
    with pytest.raises(sigserve.InvalidArgumentError, match="texts must be a list"):
        tiny_model.heatmap(photos["coffee"], "a cat")
    with pytest.raises(sigserve.ImageDecodeError, match="cannot decode|not a readable image"):
        tiny_model.heatmap(b"not an image", ["a cat"])
    with pytest.raises(sigserve.InvalidArgumentError, match="max_num_patches"):
        tiny_model.heatmap(photos["coffee"], ["a cat"], max_num_patches=8)
