"""Backends agree with the reference torch backend: ONNX fp32 to 1e-5 (padded mixed-grid batches
included: the mask must reach attention), int8 within a stated distance; exported graphs (onnx) and
converted models (openvino) are cached per weights fingerprint and rebuilt when the weights change;
the default backend and its fallbacks; bad selections are refused."""

from __future__ import annotations

import shutil
import sys

import numpy as np
import pytest
from safetensors.torch import load_file, save_file

import sigserve
from sigserve.backends import check_selection, create_backend, default_backend, prepare
from sigserve.backends import onnx as onnx_backend
from sigserve.backends import openvino as openvino_backend
from sigserve.images import pack
from sigserve.scoring import max_cosine_distance

TOL = 1e-5
# Measured on this tiny random model: images 2.5e-4, texts 1.1e-4 (1 - cos). 4x headroom for rounding
# differences between onnxruntime versions; a broken quantization (wrong scale, unsigned weights on
# signed data) lands far above. Full-size figures: docs/benchmarks.md.
INT8_MAX_COSINE_DISTANCE = 1e-3


EXACT = ["onnx", "openvino"]  # the exported-graph backends at fp32 (aoti: test_aoti.py)


@pytest.fixture(scope="module")
def exact_models(tiny_checkpoint):
    return {name: sigserve.load(tiny_checkpoint, backend=name) for name in EXACT}


@pytest.fixture(scope="module")
def onnx_model(exact_models):
    return exact_models["onnx"]


@pytest.fixture(scope="module")
def mixed_patches(torch_model, photos):
    """Photos of different aspect ratios, so one batch mixes grids and pads most images."""
    return [torch_model.preprocess(im, None, 64) for im in photos.values()]


@pytest.mark.parametrize("name", EXACT)
def test_fp32_matches_torch_on_padded_mixed_batches(name, torch_model, exact_models, mixed_patches):
    model = exact_models[name]
    assert len({p.num_patches for p in mixed_patches}) > 2  # really mixed: several lengths, so padding
    ref_pooled, ref_grids = torch_model.encode_patches(mixed_patches, with_features=True)
    pooled, grids = model.encode_patches(mixed_patches, with_features=True)
    assert np.abs(pooled - ref_pooled).max() <= TOL
    for a, b in zip(grids, ref_grids):
        assert a.shape == b.shape and np.abs(a - b).max() <= TOL
    # Each image alone (no padding) gives the same as inside the padded batch: the mask is wired.
    alone = np.concatenate([model.encode_patches([p])[0] for p in mixed_patches])
    assert np.abs(alone - pooled).max() <= TOL


@pytest.mark.parametrize("name", EXACT)
@pytest.mark.parametrize("L", [16, 256, 1024])
def test_fp32_any_grid_and_length(name, torch_model, exact_models, photos, L):
    images = [photos["rocket"], photos["china"], photos["camera_gray"]]
    ref = torch_model.embed_images(images, max_num_patches=L, normalize=False)
    assert np.abs(exact_models[name].embed_images(images, max_num_patches=L, normalize=False) - ref).max() <= TOL


@pytest.mark.parametrize("name", EXACT)
def test_fp32_text_and_scores_match_torch(name, torch_model, exact_models, photos):
    model = exact_models[name]
    texts = ["a photo of a cat", "", "ΣΟΦΟΣ 日本語 " * 20]  # empty and truncated texts included
    assert np.abs(model.embed_texts(texts, normalize=False) - torch_model.embed_texts(texts, normalize=False)).max() <= TOL
    images = [photos["coffee"], photos["astronaut"]]
    assert np.abs(model.score(images, texts) - torch_model.score(images, texts)).max() <= TOL
    assert model.backend.logit_bias == torch_model.backend.logit_bias


def test_int8_is_close_but_not_exact(tiny_checkpoint, torch_model, mixed_patches):
    int8 = sigserve.load(tiny_checkpoint, backend="onnx", precision="int8")
    ref, _ = torch_model.encode_patches(mixed_patches)
    got, _ = int8.encode_patches(mixed_patches)
    assert 0 < max_cosine_distance(got, ref) <= INT8_MAX_COSINE_DISTANCE
    texts = ["a photo of a cat", "a rocket"]
    assert max_cosine_distance(int8.embed_texts(texts), torch_model.embed_texts(texts)) <= INT8_MAX_COSINE_DISTANCE
    assert "int8" in repr(int8)


def test_torch_backend_unpadded_fast_path_equals_padded_path(torch_model, mixed_patches):
    p = mixed_patches[0]
    alone, _ = torch_model.encode_patches([p])  # no padding: attention runs with no mask
    padded = torch_model.backend.encode_images(*pack([p], length=p.num_patches + 9))[0]
    assert np.abs(alone - padded).max() <= TOL


def test_uint8_pixels_are_normalised_exactly_where_they_enter_each_backend(torch_model, onnx_model, mixed_patches):
    """pack() gives uint8; each backend applies images.LUT itself (torch: a gather from its LUT tensor,
    on the GPU for CUDA; onnx: on the host). Same values as normalising first, so the same outputs."""
    import torch

    from sigserve.images import LUT, normalize

    every = np.arange(256, dtype=np.uint8).reshape(1, 1, 256)
    assert np.array_equal(normalize(every), LUT[None, None])
    for given in (every, torch.from_numpy(every)):  # host numpy, or a tensor (already on the device)
        got = torch_model.backend.pixels(given).float().cpu().numpy()
        assert np.array_equal(got, LUT[None, None])
    pixel_values, mask, shapes = pack(mixed_patches)
    assert pixel_values.dtype == np.uint8 and all(p.pixels.dtype == np.uint8 for p in mixed_patches)
    for model in (torch_model, onnx_model):
        from_uint8 = model.backend.encode_images(pixel_values, mask, shapes)[0]
        from_float = model.backend.encode_images(normalize(pixel_values), mask, shapes)[0]
        assert np.array_equal(from_uint8, from_float)
    with pytest.raises(TypeError):
        normalize(pixel_values.astype(np.int32))


@pytest.mark.parametrize("name", ["onnx", "openvino"])
def test_artifacts_are_cached_and_rebuilt_when_weights_change(name, tiny_checkpoint, tmp_path, photos, monkeypatch):
    """prepare() builds a backend's files under a folder named by the weights fingerprint; a second
    prepare and load build nothing; changed weights get a folder of their own and exact outputs."""
    module = {"onnx": onnx_backend, "openvino": openvino_backend}[name]
    folder_of = {"onnx": onnx_backend.export_dir, "openvino": openvino_backend.ir_dir}[name]
    folder = shutil.copytree(tiny_checkpoint, tmp_path / "ckpt")
    state = load_file(folder / "model.safetensors")  # weights of its own: the fingerprint is their content
    state["logit_bias"] = state["logit_bias"] + 0.25
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    first = sigserve.load(folder, backend=name)
    paths = prepare(name, first.checkpoint, "fp32")
    assert sorted(p.name.split(".")[0] for p in paths) == ["text", "vision"]
    assert all(p.is_file() and p.parent == folder_of(first.checkpoint) for p in paths)
    before = first.embed_images([photos["coffee"]])

    def no_build(*args, **kwargs):
        raise AssertionError("built again although the cached files are current")

    monkeypatch.setattr(module, "run_in_child", no_build)
    assert prepare(name, first.checkpoint, "fp32") == paths
    again = sigserve.load(folder, backend=name)  # same weights: the cached files are reused
    assert np.array_equal(again.embed_images([photos["coffee"]]), before)
    monkeypatch.undo()

    state["vision_model.post_layernorm.weight"] = state["vision_model.post_layernorm.weight"] * 2 + 0.5
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    changed = sigserve.load(folder, backend=name)
    assert folder_of(changed.checkpoint) != folder_of(first.checkpoint)
    reference = sigserve.load(folder, backend="torch").embed_images([photos["coffee"]], normalize=False)
    assert np.abs(changed.embed_images([photos["coffee"]], normalize=False) - reference).max() <= TOL
    assert not np.allclose(changed.embed_images([photos["coffee"]]), before)


def test_onnx_text_graph_is_exported_on_first_use(tiny_checkpoint, tmp_path):
    folder = shutil.copytree(tiny_checkpoint, tmp_path / "ckpt")
    state = load_file(folder / "model.safetensors")
    state["logit_bias"] = state["logit_bias"] - 0.5  # a fingerprint no other test has exported
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    model = sigserve.load(folder, backend="onnx")

    def graphs() -> list[str]:
        return sorted(g.name for g in onnx_backend.export_dir(model.checkpoint).glob("*.onnx"))

    assert graphs() == [f"vision.{onnx_backend.EXPORT_VERSION}.fp32.onnx"]  # an image-only service never builds text
    model.embed_texts(["a"])
    assert graphs() == sorted(f"{t}.{onnx_backend.EXPORT_VERSION}.fp32.onnx" for t in ("text", "vision"))


@pytest.mark.parametrize("backend, precision, device, param", [
    ("tensorrt", "fp32", "cpu", "backend"),
    ("torch", "fp64", "cpu", "precision"),
    ("torch", "int8", "cpu", "precision"),  # int8 is the onnx backend's
    ("torch", "bf16", "cpu", "precision"),  # bf16 is slower than fp32 on these CPUs: CUDA only
    ("onnx", "bf16", "cpu", "precision"),
    ("onnx", "fp32", "cuda", "device"),
])
def test_unknown_or_unsupported_selections_are_refused(tiny_checkpoint, backend, precision, device, param):
    with pytest.raises(sigserve.InvalidArgumentError) as err:
        check_selection(backend, precision, device)
    assert err.value.param == param
    with pytest.raises(sigserve.InvalidArgumentError):
        sigserve.load(tiny_checkpoint, backend=backend, precision=precision, device=device)


def test_default_backend_and_the_fallbacks_without_openvino_or_onnxruntime(tiny_checkpoint, monkeypatch, photos):
    assert default_backend("cpu") == "openvino" and default_backend("cuda") == "torch"
    assert sigserve.load(tiny_checkpoint).backend.name == "openvino"
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if not installed: import fails
    assert default_backend("cpu") == "onnx" and sigserve.load(tiny_checkpoint).backend.name == "onnx"
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    assert default_backend("cpu") == "torch"
    model = sigserve.load(tiny_checkpoint)
    assert model.backend.name == "torch" and model.embed_images([photos["coffee"]]).shape == (1, 64)
    with pytest.raises(sigserve.InvalidArgumentError, match="onnxruntime"):
        create_backend("onnx", model.checkpoint)
