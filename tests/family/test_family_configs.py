"""Architectures from config.json as transformers reads them: every released shape (sigserve.family, the
So400m/16 NaFlex among them) builds our model on the meta device with transformers' own parameter names,
shapes and counts (transformers built on the meta device too, in the test); what we cannot run
faithfully is a clear ModelLoadError at load."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

import sigserve
from sigserve.config import ModelConfig
from sigserve.errors import ModelLoadError
from sigserve.family import HUB_CHECKPOINTS
from sigserve.model import Siglip2


def transformers_model(raw: dict):
    import transformers

    family = "Siglip2" if raw["model_type"] == "siglip2" else "Siglip"
    config = getattr(transformers, f"{family}Config")(text_config=raw["text_config"], vision_config=raw["vision_config"])
    with torch.device("meta"):
        return getattr(transformers, f"{family}Model")(config)


def shapes(model: torch.nn.Module) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.endswith("position_ids")}


def test_so400m_naflex_loads_on_the_meta_device_with_the_reference_parameter_counts():
    raw = HUB_CHECKPOINTS["google/siglip2-so400m-patch16-naflex"]["config"]
    config = ModelConfig.from_dict(raw)
    for tower in (config.vision, config.text):  # the figures: both towers alike
        assert (tower.hidden_size, tower.num_hidden_layers, tower.num_attention_heads, tower.intermediate_size) == \
            (1152, 27, 16, 4304)
    with torch.device("meta"):
        ours = Siglip2(config)
    reference = transformers_model(raw)
    count = lambda m: sum(p.numel() for p in m.parameters())
    assert count(ours) == count(reference)
    assert count(ours.vision_model) == count(reference.vision_model)
    assert count(ours.text_model) == count(reference.text_model)
    assert shapes(ours) == shapes(reference)


@pytest.mark.parametrize("hub_id", sorted(HUB_CHECKPOINTS))
def test_every_released_shape_has_the_reference_names_and_shapes(hub_id):
    raw = HUB_CHECKPOINTS[hub_id]["config"]
    with torch.device("meta"):
        ours = Siglip2(ModelConfig.from_dict(raw))
    assert shapes(ours) == shapes(transformers_model(raw))


def test_a_dummy_load_by_hub_id_takes_that_architecture():
    model = sigserve.load("google/siglip-so400m-patch14-384", dummy=True, backend="torch")
    assert not model.naflex and model.image_config.size == 384 and model.image_config.grid == 27
    assert model.image_config.resample_name == "bicubic" and model.embedding_dim == 1152


def _broken(folder, tmp_path, edit_config=None, edit_pre=None, edit_tok=None):
    copy = shutil.copytree(folder, tmp_path / "broken")
    for name, edit in (("config.json", edit_config), ("preprocessor_config.json", edit_pre),
                       ("tokenizer_config.json", edit_tok)):
        if edit is not None:
            raw = json.loads((copy / name).read_text())
            edit(raw)
            (copy / name).write_text(json.dumps(raw))
    return copy


@pytest.mark.parametrize("case, match", [
    ("clip", "model_type='clip'"),
    ("no_head", "vision_use_head"),
    ("oblong", "only square"),
    ("size_mismatch", "does not match the model's image_size"),
    ("center_crop", "do_center_crop"),
    ("naflex_processor", "expected SiglipImageProcessor"),
    ("tokenizer", "declares 'BertTokenizer'"),
    ("activation", "hidden_act='relu'"),
])
def test_unsupported_checkpoints_are_clear_load_errors(fixed_checkpoints, tmp_path, case, match):
    def set_config(**values):
        return lambda raw: raw.update(values)

    edits = {
        "clip": dict(edit_config=set_config(model_type="clip")),
        "no_head": dict(edit_config=lambda raw: raw["vision_config"].update(vision_use_head=False)),
        "oblong": dict(edit_config=lambda raw: raw["vision_config"].update(image_size=[64, 48])),
        "size_mismatch": dict(edit_pre=set_config(size={"height": 96, "width": 96})),
        "center_crop": dict(edit_pre=set_config(do_center_crop=True, crop_size={"height": 60, "width": 60})),
        "naflex_processor": dict(edit_pre=set_config(image_processor_type="Siglip2ImageProcessorFast")),
        "tokenizer": dict(edit_tok=set_config(tokenizer_class="BertTokenizer")),
        "activation": dict(edit_config=lambda raw: raw["text_config"].update(hidden_act="relu")),
    }
    folder = _broken(fixed_checkpoints["siglip"], tmp_path, **edits[case])
    with pytest.raises(ModelLoadError, match=match):
        sigserve.load(folder, backend="torch")
