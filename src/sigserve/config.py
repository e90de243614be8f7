"""The checkpoint's config.json as plain dataclasses. Defaults are the SigLIP 2 base values, so the
hub's 329-byte config (which only stores what differs from the defaults) resolves to the full model."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sigserve.errors import ModelLoadError

SUPPORTED_ACTIVATIONS = {"gelu_pytorch_tanh"}


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
    num_patches: int = 256  # size of the learned position table (16x16), not a sequence limit

    @property
    def patch_dim(self) -> int:
        return self.num_channels * self.patch_size * self.patch_size


@dataclass(frozen=True)
class TextConfig(TowerConfig):
    vocab_size: int = 256000
    max_position_embeddings: int = 64
    projection_size: int | None = None  # None means hidden_size

    @property
    def embed_dim(self) -> int:
        return self.projection_size or self.hidden_size


@dataclass(frozen=True)
class ModelConfig:
    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ModelConfig:
        model_type = raw.get("model_type", "siglip2")
        if model_type != "siglip2":
            raise ModelLoadError(f"config.json has model_type={model_type!r}; sigserve serves 'siglip2' checkpoints")
        config = cls(vision=_build(VisionConfig, raw.get("vision_config") or {}),
                     text=_build(TextConfig, raw.get("text_config") or {}))
        config.validate()
        return config

    @classmethod
    def from_file(cls, path: Path) -> ModelConfig:
        try:
            raw = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelLoadError(f"cannot read {path}: {exc}") from exc
        return cls.from_dict(raw)

    def validate(self) -> None:
        for name, tower in (("vision", self.vision), ("text", self.text)):
            if tower.hidden_act not in SUPPORTED_ACTIVATIONS:
                raise ModelLoadError(f"{name}_config.hidden_act={tower.hidden_act!r} is not supported")
            if tower.hidden_size % tower.num_attention_heads:
                raise ModelLoadError(f"{name}_config: hidden_size is not divisible by num_attention_heads")
        side = int(round(self.vision.num_patches ** 0.5))
        if side * side != self.vision.num_patches:
            raise ModelLoadError("vision_config.num_patches must be a square (the position table is a grid)")
        if self.text.embed_dim != self.vision.hidden_size:
            raise ModelLoadError("text projection size must equal the vision hidden size (shared embedding space)")

    def to_dict(self) -> dict[str, Any]:
        return {"vision_config": dataclasses.asdict(self.vision), "text_config": dataclasses.asdict(self.text)}


def _build(kind: type, raw: dict[str, Any]):
    """Keep the fields we know; the rest (CLIP leftovers such as bos_token_id) have no effect."""
    names = {f.name for f in dataclasses.fields(kind)}
    return kind(**{k: v for k, v in raw.items() if k in names})
