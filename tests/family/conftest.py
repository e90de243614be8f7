"""Tiny random checkpoints of each architecture of the family (tests.support.checkpoints), the library and
transformers (the oracle) on each. "naflex" is the session's tiny_checkpoint."""

from __future__ import annotations

import warnings

import pytest

from tests.support.checkpoints import make_checkpoint
from tests.support.oracle import Oracle

FIXED = ["siglip2-fixed", "siglip"]


@pytest.fixture(scope="session")
def fixed_checkpoints(tmp_path_factory) -> dict:
    return {arch: make_checkpoint(tmp_path_factory.mktemp(arch), "tiny", seed=1, arch=arch) for arch in FIXED}


@pytest.fixture(scope="session")
def family_checkpoints(fixed_checkpoints, tiny_checkpoint) -> dict:
    return {"naflex": tiny_checkpoint, **fixed_checkpoints}


@pytest.fixture(scope="session")
def family_oracles(family_checkpoints) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {arch: Oracle(folder) for arch, folder in family_checkpoints.items()}
