"""The openvino backend's own parts: static int8 stays within a stated distance at lengths it was and
was not calibrated at, `sigserve prepare` builds its files ahead of time, and a missing package is a
clear error. (Its fp32 parity and its cache are tested with onnx's, in test_backends.py.)"""

from __future__ import annotations

import sys

import pytest
from typer.testing import CliRunner

import sigserve
from sigserve.backends import check_selection
from sigserve.cli import build_app
from sigserve.scoring import max_cosine_distance

# Static int8 (activation ranges fixed by calibration, unlike onnx's dynamic int8) on this tiny random
# model, measured: images 1.7e-3 to 3.1e-3 (1 - cos; the worst at 16 patches, a length never
# calibrated), texts 4.1e-4. 2.5x headroom; a broken calibration (ranges from one length only, zero
# ranges) lands at 1e-1 and beyond. Full-size figures: docs/benchmarks.md.
INT8_MAX_COSINE_DISTANCE = 8e-3


def test_int8_is_close_at_every_length_but_not_exact(tiny_checkpoint, torch_model, photos):
    int8 = sigserve.load(tiny_checkpoint, backend="openvino", precision="int8")
    images = list(photos.values())
    for L in (16, 144, 256, 1024):  # 16 and 144 are never calibrated (calibration.LENGTHS)
        got, ref = int8.embed_images(images, max_num_patches=L), torch_model.embed_images(images, max_num_patches=L)
        assert 0 < max_cosine_distance(got, ref) <= INT8_MAX_COSINE_DISTANCE, L
    texts = ["a photo of a cat", "a rocket", "", "ein Hund im Park"]
    assert max_cosine_distance(int8.embed_texts(texts), torch_model.embed_texts(texts)) <= INT8_MAX_COSINE_DISTANCE
    assert int8.describe()["precision"] == "int8" and "int8" in repr(int8)


def test_prepare_command_builds_ahead_and_reports(tiny_checkpoint):
    runner = CliRunner()
    built = runner.invoke(build_app(), ["prepare", "--model", str(tiny_checkpoint), "--backend", "openvino"])
    assert built.exit_code == 0, built.output
    assert "vision" in built.output and ".xml" in built.output and "ready in" in built.output
    torch_only = runner.invoke(build_app(), ["prepare", "--model", str(tiny_checkpoint), "--backend", "torch"])
    assert torch_only.exit_code == 0 and "nothing to build" in torch_only.output
    bad = runner.invoke(build_app(), ["prepare", "--model", str(tiny_checkpoint), "--backend", "torch",
                                      "--precision", "int8"])
    assert bad.exit_code != 0 and "Traceback" not in bad.output


def test_missing_packages_are_named(tiny_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if not installed
    with pytest.raises(sigserve.InvalidArgumentError, match=r"needs openvino: pip install openvino"):
        check_selection("openvino", "fp32")
    with pytest.raises(sigserve.InvalidArgumentError, match="openvino"):
        sigserve.load(tiny_checkpoint, backend="openvino")
    monkeypatch.undo()
    # int8 is built by nncf; serving an already-built int8 model needs only openvino.
    monkeypatch.setenv("SIGSERVE_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setitem(sys.modules, "nncf", None)
    with pytest.raises(sigserve.ModelLoadError, match=r"needs nncf: pip install 'sigserve\[int8\]'"):
        sigserve.load(tiny_checkpoint, backend="openvino", precision="int8")
