"""Small distinct test images for the collections tests."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def png(seed: int, size=(40, 32)) -> bytes:
    """A PNG that differs per seed (smooth gradients plus noise, so embeddings differ too)."""
    rng = np.random.default_rng(seed)
    w, h = size
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([(x * (seed + 3)) % 256, (y * (seed + 5)) % 256, ((x + y) * (seed % 7 + 2)) % 256], -1)
    arr = np.clip(base + rng.integers(0, 60, (h, w, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()
