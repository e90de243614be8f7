"""Fixtures for collections: small distinct images, a fresh store per test, and a live server."""

from __future__ import annotations

import pytest

from tests.collections.collection_images import png


@pytest.fixture(scope="session")
def images() -> list[bytes]:
    sizes = [(40, 32), (32, 64), (90, 24), (16, 16), (64, 64), (33, 47), (50, 50), (70, 30), (24, 80), (48, 48),
             (36, 20), (60, 44)]
    return [png(i, s) for i, s in enumerate(sizes)]


@pytest.fixture
def store_uri(tmp_path) -> str:
    return str(tmp_path / "store")
