"""Fixtures for collections: small distinct images, a fresh store per test, and a live server."""

from __future__ import annotations

import io

import numpy as np
import pytest
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


@pytest.fixture(scope="session")
def images() -> list[bytes]:
    sizes = [(40, 32), (32, 64), (90, 24), (16, 16), (64, 64), (33, 47), (50, 50), (70, 30), (24, 80), (48, 48),
             (36, 20), (60, 44)]
    return [png(i, s) for i, s in enumerate(sizes)]


@pytest.fixture
def store_uri(tmp_path) -> str:
    return str(tmp_path / "store")
