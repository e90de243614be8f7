"""The backend interface: batched arrays in, pooled embeddings (and patch features) out.

Backends see only tensors: preprocessing, tokenization and scoring live above them, so every backend
is compared on exactly the same inputs. One step of preprocessing is theirs: pixel values arrive as
the resized uint8 values (images.pack), and each backend normalises them with its checkpoint's LUT
(checkpoint.image.lut()) where the batch enters it (images.normalize on the host, or a gather on the
device), bit-exactly.
Every backend runs the forwards of model.py (called, exported or compiled), never a copy of them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Protocol

import numpy as np
import torch

from sigserve.model import PositionGrid, resize_position_grid


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
    """The learned position table on each (rows, cols) grid (model.position_grid: resized for NaFlex,
    as is for a fixed resolution), computed once per grid: every backend adds these to the patch
    embeddings, and a server sees few distinct grids."""

    def __init__(self, table: torch.Tensor, max_grids: int = 512, on_grid: PositionGrid = resize_position_grid):
        self.table = table.detach()
        self.on_grid = on_grid
        self.grid = functools.lru_cache(maxsize=max_grids)(self._resize)  # (rows*cols, D)

    def _resize(self, rows: int, cols: int) -> torch.Tensor:
        return self.on_grid(self.table, rows, cols)

    def batch(self, spatial_shapes: np.ndarray, N: int) -> torch.Tensor:
        """(B, N, D) per-image position embeddings, zero on padding rows (they are masked anyway)."""
        out = self.table.new_zeros(len(spatial_shapes), N, self.table.shape[1])
        for b, (rows, cols) in enumerate(np.asarray(spatial_shapes).tolist()):
            out[b, : rows * cols] = self.grid(int(rows), int(cols))
        return out


# run(pixel_values (b, n, P), attention_mask (b, n) int32, spatial_shapes (b, 2), n) -> pooled, hidden | None
ChunkFn = Callable[[np.ndarray, np.ndarray, np.ndarray, int], tuple[np.ndarray, np.ndarray | None]]


def encode_in_chunks(pixel_values: np.ndarray, attention_mask: np.ndarray, spatial_shapes: np.ndarray,
                     chunk: int, with_features: bool, run: ChunkFn) -> tuple[np.ndarray, np.ndarray | None]:
    """Run a batch as chunks of `chunk` images, each cut to its own longest image: on 2 CPU cores
    ONNX Runtime measured best at a few images per call (docs/benchmarks.md), and a chunk of short
    images then pays no padding for a long one elsewhere in the batch."""
    B, N, _ = pixel_values.shape
    pooled: np.ndarray | None = None
    hidden: np.ndarray | None = None
    for i in range(0, B, chunk):
        rows = slice(i, i + chunk)
        mask = np.ascontiguousarray(attention_mask[rows], np.int32)
        n = int(mask.sum(1).max())
        p, h = run(np.ascontiguousarray(pixel_values[rows, :n]), np.ascontiguousarray(mask[:, :n]),
                   spatial_shapes[rows], n)
        if pooled is None:
            pooled = np.empty((B, p.shape[1]), np.float32)
            hidden = np.zeros((B, N, p.shape[1]), np.float32) if with_features else None
        pooled[rows] = p
        if hidden is not None and h is not None:
            hidden[rows, :n] = h[:, :n]
    assert pooled is not None, "empty batch"
    return pooled, hidden
