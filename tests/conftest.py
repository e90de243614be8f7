"""Shared fixtures: a tiny random checkpoint in the hub layout, the library on it, transformers on it
(the oracle), and real photos from scikit-image and scikit-learn."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest
from PIL import Image

from tests.support.checkpoints import make_checkpoint
from tests.support.oracle import Oracle, real_photos

# Throw-away PostgreSQL and Redis (postgres_server, postgres_url, redis_server, redis_url fixtures).
pytest_plugins = ["tests.support.services"]


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Dummy checkpoints and other caches go to a temporary folder, never the user's."""
    os.environ["SIGSERVE_CACHE"] = str(tmp_path_factory.mktemp("sigserve-cache"))
    os.environ["HF_HUB_OFFLINE"] = "1"
    yield


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("tiny-siglip2"), "tiny", seed=0)


@pytest.fixture(scope="session")
def tiny_model(tiny_checkpoint):
    import sigserve

    return sigserve.load(tiny_checkpoint)


@pytest.fixture(scope="session")
def oracle(tiny_checkpoint) -> Oracle:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Oracle(tiny_checkpoint)


@pytest.fixture(scope="session")
def photos() -> dict[str, Image.Image]:
    return real_photos()
