"""The reference backend: our own torch model (model.py) on memory-mapped weights.

The vision forward is driven from here rather than through VisionTransformer.forward, for two
serving-only savings that leave the arithmetic unchanged: resized position embeddings are cached per
(rows, cols) grid, and a batch without padding runs attention with no mask at all (SDPA then picks
its fastest kernel: flash attention on CUDA)."""

from __future__ import annotations

import functools

import numpy as np
import torch

from sigserve.model import resize_position_grid
from sigserve.weights import Checkpoint, load_model

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class TorchBackend:
    name = "torch"

    def __init__(self, checkpoint: Checkpoint, precision: str = "fp32", device: str = "cpu"):
        self.precision = precision
        self.device = torch.device(device)
        self.dtype = DTYPES[precision]
        self.model = load_model(checkpoint, self.dtype).to(self.device)
        self.logit_scale = float(self.model.logit_scale.float().item())
        self.logit_bias = float(self.model.logit_bias.float().item())

    @functools.lru_cache(maxsize=512)
    def _grid_positions(self, rows: int, cols: int) -> torch.Tensor:
        return resize_position_grid(self.model.vision_model.embeddings.position_embedding.weight, rows, cols)

    def _positions(self, spatial_shapes: np.ndarray, B: int, N: int) -> torch.Tensor:
        grids = [self._grid_positions(int(r), int(c)) for r, c in spatial_shapes.tolist()]
        if all(g.shape[0] == N for g in grids):
            return torch.stack(grids)
        out = grids[0].new_zeros(B, N, grids[0].shape[1])
        for b, g in enumerate(grids):
            out[b, : g.shape[0]] = g
        return out

    @torch.inference_mode()
    def encode_images(self, pixel_values, attention_mask, spatial_shapes, with_features=False):
        v = self.model.vision_model
        B, N, _ = pixel_values.shape
        x = torch.as_tensor(pixel_values).to(self.device, self.dtype, non_blocking=True)  # numpy, or tensors
        x = v.embeddings.patch_embedding(x) + self._positions(spatial_shapes, B, N)
        padded = not bool(attention_mask.all())
        key_mask = torch.as_tensor(attention_mask).to(self.device).bool()[:, None, None, :] if padded else None
        x = v.post_layernorm(v.encoder(x, key_mask))
        pooled = v.head(x, key_mask)
        return _numpy(pooled), (_numpy(x) if with_features else None)

    @torch.inference_mode()
    def encode_texts(self, input_ids):
        return _numpy(self.model.text_model(torch.from_numpy(input_ids).to(self.device)))

    def describe(self) -> dict:
        return {"backend": self.name, "precision": self.precision, "device": str(self.device),
                "threads": torch.get_num_threads()}


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.float().cpu().numpy()
