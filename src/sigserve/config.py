"""The checkpoint's configs as plain dataclasses: config.json (the architecture) and
preprocessor_config.json (the image rules), read as transformers reads them.

Two architectures share everything but the vision embeddings:
    model_type "siglip2"  SigLIP 2 NaFlex: linear patch embedding, learned position grid resized per image
    model_type "siglip"   fixed resolution (SigLIP 1 and SigLIP 2's fixed-res checkpoints, transformers'
                          SiglipModel): convolutional patch embedding over a square resize, the position
                          table added as is
Defaults are transformers' class defaults for each model_type, so a hub config.json (which only stores
what differs from them) resolves to the full model. Anything we cannot run faithfully is a ModelLoadError.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sigserve.errors import ModelLoadError

SUPPORTED_ACTIVATIONS = {"gelu_pytorch_tanh"}
MODEL_TYPES = {"siglip2": "NaFlex (SigLIP 2)", "siglip": "fixed resolution (SigLIP, SigLIP 2)"}
# transformers' class defaults that differ between the two model types (configuration_siglip*.py)
TYPE_DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    "siglip2": {"vision": {}, "text": {}},
    "siglip": {"vision": {"image_size": 224}, "text": {"vocab_size": 32000}},
}
PIL_FILTERS = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


@dataclass(frozen=True)
class TowerConfig:
    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    layer_norm_eps: float = 1e-6
    hidden_act: str = "gelu_pytorch_tanh"


@dataclass(frozen=True)
class VisionConfig(TowerConfig):
    num_channels: int = 3
    patch_size: int = 16
    num_patches: int = 256  # size of the learned position table (NaFlex: a 16x16 grid, not a sequence limit)
    image_size: int | None = None  # fixed resolution: the square input side in pixels; None: NaFlex

    @property
    def naflex(self) -> bool:
        return self.image_size is None

    @property
    def patch_dim(self) -> int:
        return self.num_channels * self.patch_size * self.patch_size

    @property
    def grid(self) -> int:
        """Side of the position grid G (NaFlex: resized per image; fixed: every image's grid)."""
        return int(round(self.num_patches ** 0.5))


@dataclass(frozen=True)
class TextConfig(TowerConfig):
    vocab_size: int = 256000
    max_position_embeddings: int = 64  # also the tokenized length: texts are padded to exactly this
    projection_size: int | None = None  # None means hidden_size

    @property
    def embed_dim(self) -> int:
        return self.projection_size or self.hidden_size


@dataclass(frozen=True)
class ModelConfig:
    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    model_type: str = "siglip2"

    @property
    def naflex(self) -> bool:
        return self.vision.naflex

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ModelConfig:
        model_type = raw.get("model_type", "siglip2")
        if model_type not in MODEL_TYPES:
            kinds = ", ".join(f"{k!r} ({v})" for k, v in MODEL_TYPES.items())
            raise ModelLoadError(f"config.json has model_type={model_type!r}; sigserve serves {kinds}")
        defaults = TYPE_DEFAULTS[model_type]
        vision_raw = {**defaults["vision"], **(raw.get("vision_config") or {})}
        if vision_raw.get("vision_use_head", True) is False:
            raise ModelLoadError("vision_config.vision_use_head is false: without the MAP head the checkpoint has "
                                 "no pooled image embedding to serve")
        if model_type == "siglip":
            vision_raw = _fixed_resolution(vision_raw)
        config = cls(vision=_build(VisionConfig, vision_raw),
                     text=_build(TextConfig, {**defaults["text"], **(raw.get("text_config") or {})}),
                     model_type=model_type)
        config.validate()
        return config

    @classmethod
    def from_file(cls, path: Path) -> ModelConfig:
        return cls.from_dict(_read_json(path))

    def validate(self) -> None:
        for name, tower in (("vision", self.vision), ("text", self.text)):
            if tower.hidden_act not in SUPPORTED_ACTIVATIONS:
                raise ModelLoadError(f"{name}_config.hidden_act={tower.hidden_act!r} is not supported")
            if tower.hidden_size % tower.num_attention_heads:
                raise ModelLoadError(f"{name}_config: hidden_size is not divisible by num_attention_heads")
        if self.vision.num_channels != 3:
            raise ModelLoadError(f"vision_config.num_channels={self.vision.num_channels}; sigserve feeds RGB images")
        if self.vision.grid ** 2 != self.vision.num_patches:
            raise ModelLoadError("vision_config.num_patches must be a square (the position table is a grid)")
        if self.text.embed_dim != self.vision.hidden_size:
            raise ModelLoadError("text projection size must equal the vision hidden size (shared embedding space)")

    def to_dict(self) -> dict[str, Any]:
        return {"model_type": self.model_type, "vision_config": dataclasses.asdict(self.vision),
                "text_config": dataclasses.asdict(self.text)}

    def to_hf_dict(self) -> dict[str, Any]:
        """A config.json that transformers reads back to this architecture (dummy checkpoints)."""
        vision = dataclasses.asdict(self.vision)
        vision.pop("num_patches" if not self.naflex else "image_size")  # derived / absent in that model type
        return {"architectures": ["Siglip2Model" if self.naflex else "SiglipModel"], "model_type": self.model_type,
                "vision_config": vision, "text_config": dataclasses.asdict(self.text)}


def _fixed_resolution(raw: dict[str, Any]) -> dict[str, Any]:
    """transformers allows image_size and patch_size as [h, w]; only squares exist in the family. The
    convolution runs with stride = patch and no padding, so a remainder of image_size is never seen."""
    raw = dict(raw)
    for key in ("image_size", "patch_size"):
        value = raw.get(key, 224 if key == "image_size" else 16)
        if isinstance(value, (list, tuple)):
            if len(set(value)) != 1:
                raise ModelLoadError(f"vision_config.{key}={value}: only square images and patches are supported")
            value = value[0]
        if not isinstance(value, int) or value < 1:
            raise ModelLoadError(f"vision_config.{key}={value!r} is not a positive integer")
        raw[key] = value
    if raw["patch_size"] > raw["image_size"]:
        raise ModelLoadError("vision_config.patch_size is larger than image_size")
    raw["num_patches"] = (raw["image_size"] // raw["patch_size"]) ** 2
    return raw


def _build(kind: type, raw: dict[str, Any]):
    """Keep the fields we know; the rest (CLIP leftovers such as bos_token_id) have no effect."""
    names = {f.name for f in dataclasses.fields(kind)}
    return kind(**{k: v for k, v in raw.items() if k in names})


def _read_json(path: Path) -> dict[str, Any]:
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"cannot read {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise ModelLoadError(f"{path} is not a JSON object")
    return raw


# ---------------------------------------------------------------------------------------------
# preprocessor_config.json


@dataclass(frozen=True)
class ImageConfig:
    """The image rules of a checkpoint. NaFlex: resize keeping the aspect ratio to at most
    max_num_patches patches (a per-call choice); fixed: resize to size x size, aspect not kept.
    Then rescale (float64, cast to float32) and normalise ((x - mean) / std in float32), as
    transformers' PIL image processors do."""

    naflex: bool = True
    patch_size: int = 16
    size: int | None = None  # fixed resolution: the square side the image is resized to
    max_num_patches: int = 256  # NaFlex: the processor's default sequence length
    resample: int = 2  # a PIL filter (2 bilinear, 3 bicubic)
    do_rescale: bool = True
    rescale_factor: float = 1 / 255
    do_normalize: bool = True
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    @property
    def grid(self) -> int:
        """Fixed resolution: patches per side (the convolution drops a remainder of size)."""
        assert self.size is not None, "NaFlex images have no fixed grid"
        return self.size // self.patch_size

    @property
    def resample_name(self) -> str:
        return PIL_FILTERS[self.resample]

    @classmethod
    def defaults_for(cls, model: ModelConfig) -> ImageConfig:
        """transformers' processor class defaults for the architecture (Siglip2ImageProcessor: bilinear;
        SiglipImageProcessor: bicubic, resized to the model's image_size)."""
        if model.naflex:
            return cls(patch_size=model.vision.patch_size)
        return cls(naflex=False, patch_size=model.vision.patch_size, size=model.vision.image_size, resample=3)

    @classmethod
    def from_file(cls, path: Path, model: ModelConfig) -> ImageConfig:
        """preprocessor_config.json over the class defaults; a missing file gives the defaults."""
        base = cls.defaults_for(model)
        if not Path(path).is_file():
            return base
        raw = _read_json(path)
        kind = str(raw.get("image_processor_type") or "").removesuffix("Fast").removesuffix("Pil")
        expected = "Siglip2ImageProcessor" if model.naflex else "SiglipImageProcessor"
        if kind and kind != expected:
            raise ModelLoadError(f"{path.name}: image_processor_type {raw['image_processor_type']!r} does not fit a "
                                 f"{MODEL_TYPES[model.model_type]} model (expected {expected})")
        for flag in ("do_center_crop", "do_pad"):
            if raw.get(flag):
                raise ModelLoadError(f"{path.name}: {flag}=true is not supported (the SigLIP processors resize only)")
        if raw.get("do_resize") is False:
            raise ModelLoadError(f"{path.name}: do_resize=false is not supported (images of any size are served)")
        values: dict[str, Any] = {}
        for key in ("do_rescale", "rescale_factor", "do_normalize", "resample"):
            if raw.get(key) is not None:
                values[key] = raw[key]
        for key in ("image_mean", "image_std"):
            if raw.get(key) is not None:
                values[key] = _per_channel(raw[key], f"{path.name}: {key}")
        if values.get("resample", base.resample) not in PIL_FILTERS:
            raise ModelLoadError(f"{path.name}: resample={values['resample']!r} is not a PIL filter (0-5)")
        if model.naflex:
            values.update(_naflex_fields(raw, path.name, model))
        else:
            values["size"] = _square_size(raw.get("size"), path.name, model)
        return dataclasses.replace(base, **values)

    def lut(self) -> np.ndarray:
        """(3, 256) float32: resized uint8 value -> normalised value per channel, with the processor's own
        arithmetic (transformers' rescale: float64 product cast to float32; normalize: float32)."""
        x = np.arange(256, dtype=np.float64)
        x = (x * self.rescale_factor).astype(np.float32) if self.do_rescale else x.astype(np.float32)
        if not self.do_normalize:
            return np.stack([x] * 3)
        mean, std = (np.asarray(v, dtype=np.float32) for v in (self.image_mean, self.image_std))
        return ((x[None, :] - mean[:, None]) / std[:, None]).astype(np.float32)


def _per_channel(value: Any, what: str) -> tuple[float, float, float]:
    values = [value] * 3 if isinstance(value, (int, float)) else list(value)
    if len(values) != 3 or not all(isinstance(v, (int, float)) for v in values):
        raise ModelLoadError(f"{what} must be a number or 3 numbers (RGB), got {value!r}")
    if what.endswith("image_std") and any(v == 0 for v in values):
        raise ModelLoadError(f"{what} has a zero")
    return (float(values[0]), float(values[1]), float(values[2]))


def _naflex_fields(raw: dict[str, Any], name: str, model: ModelConfig) -> dict[str, Any]:
    patch = raw.get("patch_size", model.vision.patch_size)
    if patch != model.vision.patch_size:
        raise ModelLoadError(f"{name}: patch_size={patch} but the model's is {model.vision.patch_size}")
    out: dict[str, Any] = {}
    if raw.get("max_num_patches") is not None:
        out["max_num_patches"] = int(raw["max_num_patches"])
    return out


def _square_size(size: Any, name: str, model: ModelConfig) -> int:
    """transformers' SiglipImageProcessor resizes to {"height", "width"}; the model's position table
    only fits its own image_size, so the two must agree (as they do in every released checkpoint)."""
    expected = model.vision.image_size
    assert expected is not None
    if size is None:
        return expected
    if isinstance(size, int):
        size = {"height": size, "width": size}
    if not isinstance(size, dict) or set(size) != {"height", "width"}:
        raise ModelLoadError(f"{name}: size={size!r} is not supported (expected {{'height': {expected}, 'width': {expected}}})")
    if size["height"] != size["width"] or size["height"] != expected:
        raise ModelLoadError(f"{name}: size {size['height']}x{size['width']} does not match the model's image_size "
                             f"{expected} (its position table has {model.vision.num_patches} entries)")
    return int(size["height"])
