"""The reference backend: our own torch model (model.py) on memory-mapped weights.

Two serving-only savings that leave the arithmetic unchanged: resized position embeddings are cached
per (rows, cols) grid (on the model's device, in its dtype), and a batch without padding runs
attention with no mask at all (SDPA then picks its fastest kernel: flash attention on CUDA).

Pixels arrive as uint8 (images.pack) and are normalised here through the checkpoint's LUT
(checkpoint.image.lut(), per channel): on the host for the CPU, and on CUDA by a gather from a
device-resident copy of it (in the model's dtype) after the uint8 batch crossed PCIe: 4x fewer bytes
than float32. The values are bit-identical to normalising on the host. Floating-point input is taken
as already normalised."""

from __future__ import annotations

import numpy as np
import torch

from sigserve.backends.base import PositionCache
from sigserve.images import normalize
from sigserve.model import position_grid
from sigserve.weights import Checkpoint, build_model

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class TorchBackend:
    name = "torch"

    def __init__(self, checkpoint: Checkpoint, precision: str = "fp32", device: str = "cpu"):
        self.precision = precision
        self.device = torch.device(device)
        self.dtype = DTYPES[precision]
        self.model = build_model(checkpoint, self.dtype).to(self.device)
        self._positions = PositionCache(self.model.vision_model.embeddings.position_embedding.weight,
                                        on_grid=position_grid(checkpoint.config.vision))
        self.logit_scale = float(self.model.logit_scale.float().item())
        self.logit_bias = float(self.model.logit_bias.float().item())
        self.lut = checkpoint.image.lut()  # (3, 256): uint8 -> normalised, per channel
        # Flattened for the device gather: channel c's value v sits at c * 256 + v. Exact LUT, then cast.
        self._lut = torch.from_numpy(self.lut.reshape(-1).copy()).to(self.device, self.dtype)

    def _batch_positions(self, spatial_shapes: np.ndarray, N: int) -> torch.Tensor:
        shapes = np.asarray(spatial_shapes).tolist()
        rows, cols = shapes[0]
        if all(s == shapes[0] for s in shapes) and rows * cols == N:
            return self._positions.grid(int(rows), int(cols))  # (N, D), broadcast over the batch
        return self._positions.batch(spatial_shapes, N)

    def pixels(self, pixel_values) -> torch.Tensor:
        """(B, N, P) uint8 pixel values (numpy, or a tensor on any device) -> normalised, in the model's
        dtype, on its device. Floating-point input is taken as already normalised."""
        if isinstance(pixel_values, torch.Tensor):
            if pixel_values.dtype == torch.uint8:
                return self._gather(pixel_values.to(self.device, non_blocking=True))
            return pixel_values.to(self.device, self.dtype, non_blocking=True)
        pixel_values = np.asarray(pixel_values)
        if self.device.type != "cuda" or pixel_values.dtype != np.uint8:
            return torch.from_numpy(normalize(pixel_values, self.lut)).to(self.device, self.dtype)
        return self._gather(torch.from_numpy(np.ascontiguousarray(pixel_values)).to(self.device))

    def _gather(self, x: torch.Tensor) -> torch.Tensor:
        """(..., P) uint8 on the device, channels-last -> LUT values in the model's dtype (int32 indices:
        index_select takes them as is)."""
        channel = (torch.arange(x.shape[-1], device=x.device, dtype=torch.int32) % 3) * 256  # (P,)
        return self._lut.index_select(0, (x.int() + channel).reshape(-1)).view(x.shape)

    @torch.inference_mode()
    def encode_images(self, pixel_values, attention_mask, spatial_shapes, with_features=False):
        N = pixel_values.shape[1]
        padded = not bool(attention_mask.all())
        mask = torch.as_tensor(attention_mask).to(self.device) if padded else None
        pooled, hidden = self.model.vision_model(self.pixels(pixel_values), self._batch_positions(spatial_shapes, N), mask)
        return _numpy(pooled), (_numpy(hidden) if with_features else None)

    @torch.inference_mode()
    def encode_texts(self, input_ids):
        return _numpy(self.model.text_model(torch.from_numpy(input_ids).to(self.device)))

    def describe(self) -> dict:
        return {"backend": self.name, "precision": self.precision, "device": str(self.device),
                "threads": torch.get_num_threads()}


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.float().cpu().numpy()
