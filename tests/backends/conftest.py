"""The reference every backend test compares against: our torch backend on the tiny checkpoint."""

from __future__ import annotations

import pytest

import sigserve


@pytest.fixture(scope="session")
def torch_model(tiny_checkpoint):
    return sigserve.load(tiny_checkpoint, backend="torch")
