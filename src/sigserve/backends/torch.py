"""The reference backend: our own torch model (model.py) on memory-mapped weights."""

from __future__ import annotations

import numpy as np
import torch

from sigserve.weights import Checkpoint, load_model

DTYPES = {"fp32": torch.float32}


class TorchBackend:
    name = "torch"

    def __init__(self, checkpoint: Checkpoint, precision: str = "fp32", device: str = "cpu"):
        self.precision = precision
        self.device = torch.device(device)
        self.model = load_model(checkpoint, DTYPES[precision]).to(self.device)
        self.logit_scale = float(self.model.logit_scale.float().item())
        self.logit_bias = float(self.model.logit_bias.float().item())

    @torch.inference_mode()
    def encode_images(self, pixel_values, attention_mask, spatial_shapes, with_features=False):
        pooled, hidden = self.model.vision_model(
            torch.from_numpy(pixel_values).to(self.device),
            torch.from_numpy(attention_mask).to(self.device),
            torch.from_numpy(spatial_shapes),
        )
        return _numpy(pooled), (_numpy(hidden) if with_features else None)

    @torch.inference_mode()
    def encode_texts(self, input_ids):
        return _numpy(self.model.text_model(torch.from_numpy(input_ids).to(self.device)))

    def describe(self) -> dict:
        return {"backend": self.name, "precision": self.precision, "device": str(self.device),
                "threads": torch.get_num_threads()}


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.float().cpu().numpy()
