"""The backend interface: batched arrays in, pooled embeddings (and patch features) out.

Backends see only tensors: preprocessing, tokenization and scoring live above them, so every backend
is compared on exactly the same inputs. One step of preprocessing is theirs: pixel values arrive as
the resized uint8 values (images.pack), and each backend normalises them with images.LUT where the
batch enters it (images.normalize on the host, or a gather on the device), bit-exactly.
"""

from __future__ import annotations

import functools
from typing import Protocol

import numpy as np
import torch

from sigserve.model import resize_position_grid


class Backend(Protocol):
    name: str
    precision: str
    logit_scale: float  # log temperature, as stored in the checkpoint
    logit_bias: float

    def encode_images(self, pixel_values: np.ndarray, attention_mask: np.ndarray, spatial_shapes: np.ndarray,
                      with_features: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """(B, N, P) uint8 (floating point: already normalised), (B, N) int, (B, 2) int64 -> raw pooled
        (B, D), and (B, N, D) features if asked."""
        ...

    def encode_texts(self, input_ids: np.ndarray) -> np.ndarray:
        """(B, 64) int64 -> raw pooled (B, D)."""
        ...

    def describe(self) -> dict:
        ...


class PositionCache:
    """The learned position table resized to each (rows, cols) grid, computed once per grid: every
    backend adds these to the patch embeddings, and a server sees few distinct grids."""

    def __init__(self, table: torch.Tensor, max_grids: int = 512):
        self.table = table.detach()
        self.grid = functools.lru_cache(maxsize=max_grids)(self._resize)  # (rows*cols, D)

    def _resize(self, rows: int, cols: int) -> torch.Tensor:
        return resize_position_grid(self.table, rows, cols)

    def batch(self, spatial_shapes: np.ndarray, N: int) -> torch.Tensor:
        """(B, N, D) per-image position embeddings, zero on padding rows (they are masked anyway)."""
        out = self.table.new_zeros(len(spatial_shapes), N, self.table.shape[1])
        for b, (rows, cols) in enumerate(np.asarray(spatial_shapes).tolist()):
            out[b, : rows * cols] = self.grid(int(rows), int(cols))
        return out
