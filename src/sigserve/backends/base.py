"""The backend interface: batched arrays in, pooled embeddings (and patch features) out.

Backends see only tensors: preprocessing, tokenization and scoring live above them, so every backend
is compared on exactly the same inputs. One step of preprocessing is theirs: pixel values arrive as
the resized uint8 values (images.pack), and each backend normalises them with images.LUT where the
batch enters it (images.normalize on the host, or a gather on the device), bit-exactly.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


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
