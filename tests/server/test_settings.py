"""Settings that depend on the device: batch sizes measured best per device, explicit values win."""

from __future__ import annotations

import pytest

from sigserve.server.settings import Settings


@pytest.mark.parametrize("device,expected", [("cpu", 8), ("cuda", 64), ("cuda:1", 64)])
def test_default_image_batch_follows_the_device(device, expected):
    assert Settings(device=device).engine_config().max_batch_images == expected


def test_explicit_batch_size_and_env_prefix(monkeypatch):
    assert Settings(device="cuda", max_batch_images=16).engine_config().max_batch_images == 16
    monkeypatch.setenv("SIGSERVE_DEVICE", "cpu")
    assert Settings().resolved_device == "cpu"


def test_auto_device_is_cpu_without_a_gpu():
    import torch

    assert Settings(device="auto").resolved_device == ("cuda" if torch.cuda.is_available() else "cpu")
