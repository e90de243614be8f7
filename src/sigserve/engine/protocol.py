"""What the engine needs from a model: the low-level half of sigserve.Pipeline. The engine decodes
in a thread pool (preprocess, tokenize) and infers on one worker thread (encode_*); scoring is pure
arithmetic on two of the checkpoint's scalars and runs anywhere."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from sigserve.images import Patches
from sigserve.textcache import TextEmbeddingCache
from sigserve.tokenizer import TokenBatch


class ServedModel(Protocol):
    embedding_dim: int
    dummy: bool
    text_cache: TextEmbeddingCache  # normalised prompt embeddings, shared with the library's classify

    @property
    def naflex(self) -> bool:
        """False for a fixed resolution, where max_num_patches does not apply."""
        ...

    def image_rules(self) -> dict:
        """{"kind": "naflex", "default_max_num_patches", ...} or {"kind": "fixed", "image_size", "grid", ...}."""
        ...

    def preprocess(self, item: Any, index: int | None = None, max_num_patches: int | None = ...) -> Patches:
        """Decode one image (path, bytes, PIL, array) and cut it into patches (NaFlex: at max_num_patches,
        None for the model's default; a fixed-resolution model refuses one); raises InputError(index)."""
        ...

    def image_size(self, item: Any, index: int | None = None) -> tuple[int, int]:
        """(width, height) from the header alone (what decoding it will cost); raises InputError(index)."""
        ...

    def encode_patches(self, patches: list[Patches], with_features: bool = False
                       ) -> tuple[np.ndarray, list[np.ndarray] | None]:
        """Raw pooled (B, D) and, if asked, each image's (rows, cols, D) grid."""
        ...

    def tokenize(self, texts: Sequence[str]) -> TokenBatch: ...

    def encode_token_ids(self, ids: np.ndarray) -> np.ndarray:
        """(B, T) int64 -> raw pooled (B, D)."""
        ...

    def probabilities(self, image_embeds: np.ndarray, text_embeds: np.ndarray) -> np.ndarray:
        """(n_img, n_txt) sigmoid probabilities from L2-normalised embeddings."""
        ...

    def score_patches(self, grid: np.ndarray, text_embeds: np.ndarray) -> np.ndarray:
        """One image's (rows, cols, D) patch features, (T, D) normalised texts -> (T, rows, cols) probabilities
        (heatmaps: the pooling head per patch; torch arithmetic on the head's weights, safe beside the worker)."""
        ...
