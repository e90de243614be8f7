"""Loading: local folders, the HF cache, offline hub ids, sharded files, bad checkpoints, dummy loads."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import sigserve
from sigserve.errors import ModelLoadError


def copy_checkpoint(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_weights_are_memory_mapped_not_copied(tiny_checkpoint):
    size = (tiny_checkpoint / "model.safetensors").stat().st_size
    torch_model = sigserve.load(tiny_checkpoint, backend="torch")  # the default on CPU is onnx (issue 4)
    ptrs = [p.data_ptr() for p in torch_model.backend.model.parameters()]
    assert max(ptrs) - min(ptrs) < size  # every tensor is a view into the one mapping of the file


def test_bad_checkpoints_are_reported_by_tensor_name(tiny_checkpoint, tmp_path):
    state = load_file(tiny_checkpoint / "model.safetensors")
    state.pop("vision_model.head.probe")
    state["vision_model.extra.weight"] = torch.zeros(3)
    state["text_model.head.bias"] = torch.zeros(7)
    folder = copy_checkpoint(tiny_checkpoint, tmp_path / "bad")
    save_file(state, folder / "model.safetensors")
    with pytest.raises(ModelLoadError) as err:
        sigserve.load(folder)
    message = str(err.value)
    for name in ("missing tensors: vision_model.head.probe", "unexpected tensors: vision_model.extra.weight",
                 "text_model.head.bias: checkpoint (7,)"):
        assert name in message


def test_missing_files_and_bad_config(tiny_checkpoint, tmp_path):
    folder = copy_checkpoint(tiny_checkpoint, tmp_path / "nofiles")
    (folder / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="model.safetensors"):
        sigserve.load(folder)
    folder = copy_checkpoint(tiny_checkpoint, tmp_path / "clip")
    (folder / "config.json").write_text(json.dumps({"model_type": "clip"}))
    with pytest.raises(ModelLoadError, match="siglip2"):
        sigserve.load(folder)
    with pytest.raises(ModelLoadError, match="not a checkpoint folder"):
        sigserve.load(tmp_path / "does-not-exist")


def test_sharded_checkpoint_loads_the_same(tiny_model, tiny_checkpoint, tmp_path, photos):
    folder = copy_checkpoint(tiny_checkpoint, tmp_path / "sharded")
    state = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    names = sorted(state)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    weight_map = {}
    for file, keys in shards.items():
        save_file({k: state[k] for k in keys}, folder / file)
        weight_map.update({k: file for k in keys})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    sharded = sigserve.load(folder)
    images = [photos["coffee"], photos["rocket"]]
    # Same weights at other addresses: SIMD paths may differ in the last bit, not more.
    assert np.abs(sharded.embed_images(images) - tiny_model.embed_images(images)).max() <= 1e-6


def test_hub_id_offline_and_not_cached_gives_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(ModelLoadError) as err:
        sigserve.load("google/siglip2-base-patch16-naflex", cache_dir=str(tmp_path / "empty-cache"))
    message = str(err.value)
    assert "google/siglip2-base-patch16-naflex" in message and "pass its folder" in message


def test_hub_id_is_found_in_the_hf_cache(tiny_checkpoint, tmp_path, photos, tiny_model):
    """The hub cache layout: models--org--name/{refs/main, snapshots/<commit>/files}."""
    cache = tmp_path / "hf-cache"
    repo = cache / "models--google--siglip2-base-patch16-naflex"
    commit = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(tiny_checkpoint, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    model = sigserve.load("google/siglip2-base-patch16-naflex", cache_dir=str(cache))
    assert model.describe()["source"] == "hf-cache"
    assert np.abs(model.embed_images([photos["coffee"]]) - tiny_model.embed_images([photos["coffee"]])).max() <= 1e-6


def test_dummy_load_keeps_the_architecture_and_says_so(tiny_checkpoint, photos):
    model = sigserve.load(tiny_checkpoint, dummy=True)
    info = model.describe()
    assert info["dummy"] is True and "DUMMY" in repr(model)
    assert info["config"]["vision_config"]["hidden_size"] == 64
    assert model.embed_images([photos["coffee"]]).shape == (1, 64)
    assert model.embed_texts(["any text, even ΣΟΦΟΣ"]).shape == (1, 64)
    real = sigserve.load(tiny_checkpoint)
    assert not np.allclose(model.embed_images([photos["coffee"]]), real.embed_images([photos["coffee"]]))


def test_describe_counts_parameters(tiny_checkpoint):
    torch_model = sigserve.load(tiny_checkpoint, backend="torch")  # the default on CPU is onnx (issue 4)
    info = torch_model.describe()
    model = torch_model.backend.model
    assert info["parameters"]["total"] == sum(p.numel() for p in model.parameters())
    assert info["dummy"] is False and info["source"] == "local" and info["backend"] == "torch"


def test_base_config_parameter_count_matches_the_reference():
    """375,234,050 parameters for google/siglip2-base-patch16-naflex (reference doc section 1.3)."""
    from sigserve.config import ModelConfig
    from sigserve.model import Siglip2

    with torch.device("meta"):
        model = Siglip2(ModelConfig())
    count = lambda m: sum(p.numel() for p in m.parameters())
    assert (count(model), count(model.vision_model), count(model.text_model)) == (375_234_050, 92_930_304, 282_303_744)


def test_hub_style_minimal_config_resolves_to_the_base_model():
    from sigserve.config import ModelConfig

    raw = {"architectures": ["Siglip2Model"], "initializer_factor": 1.0, "model_type": "siglip2",
           "text_config": {"model_type": "siglip2_text_model", "vocab_size": 256000},
           "torch_dtype": "float32", "vision_config": {"model_type": "siglip2_vision_model"}}
    assert ModelConfig.from_dict(raw) == ModelConfig()


def test_fingerprint_names_the_contents_not_the_copy(tiny_checkpoint, tmp_path):
    """Replicas that each copied or downloaded the same weights agree on the fingerprint (so they share
    exports and collections); one changed tensor changes it; a file in the HF cache layout (a link to a
    blob named by its SHA-256) is not even read."""
    import hashlib
    import os

    from sigserve.weights import resolve

    a = shutil.copytree(tiny_checkpoint, tmp_path / "a")
    b = shutil.copytree(tiny_checkpoint, tmp_path / "b")
    os.utime(b / "model.safetensors", ns=(1, 1))
    assert resolve(a).fingerprint() == resolve(b).fingerprint() == resolve(tiny_checkpoint).fingerprint()
    state = load_file(b / "model.safetensors")
    state["vision_model.post_layernorm.bias"] = state["vision_model.post_layernorm.bias"] + 1e-3
    save_file(state, b / "model.safetensors", metadata={"format": "pt"})
    assert resolve(b).fingerprint() != resolve(a).fingerprint()
    blob = tmp_path / "blobs" / hashlib.sha256((a / "model.safetensors").read_bytes()).hexdigest()
    blob.parent.mkdir()
    (a / "model.safetensors").rename(blob)
    (a / "model.safetensors").symlink_to(blob)
    assert resolve(a).fingerprint() == resolve(tiny_checkpoint).fingerprint()
