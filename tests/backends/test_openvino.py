"""The openvino backend: fp32 agrees with the torch reference to 1e-5 (padded mixed-grid batches, every
length, texts), static int8 stays within a stated distance at lengths it was and was not calibrated at,
`sigserve prepare` builds its files ahead of time, and a missing package is a clear error. (Its cache:
test_backends.py, with onnx's.)"""

from __future__ import annotations

import sys

import numpy as np
import pytest
from typer.testing import CliRunner

import sigserve
from sigserve.backends import check_selection
from sigserve.cli import build_app
from sigserve.scoring import max_cosine_distance

TOL = 1e-5
# Static int8 (activation ranges fixed by calibration, unlike onnx's dynamic int8) on this tiny random
# model, measured: images 1.7e-3 to 3.1e-3 (1 - cos; the worst at 16 patches, a length never
# calibrated), texts 4.1e-4. 2.5x headroom; a broken calibration (ranges from one length only, zero
# ranges) lands at 1e-1 and beyond. Full-size figures: docs/benchmarks.md.
INT8_MAX_COSINE_DISTANCE = 8e-3


@pytest.fixture(scope="module")
def ov_model(tiny_checkpoint):
    return sigserve.load(tiny_checkpoint, backend="openvino")


def test_fp32_matches_torch_on_padded_mixed_batches(torch_model, ov_model, photos):
    patches = [torch_model.preprocess(im, None, 64) for im in photos.values()]
    assert len({p.num_patches for p in patches}) > 2  # several lengths in one batch: padding
    ref_pooled, ref_grids = torch_model.encode_patches(patches, with_features=True)
    pooled, grids = ov_model.encode_patches(patches, with_features=True)
    assert np.abs(pooled - ref_pooled).max() <= TOL
    for a, b in zip(grids, ref_grids):
        assert a.shape == b.shape and np.abs(a - b).max() <= TOL
    alone = np.concatenate([ov_model.encode_patches([p])[0] for p in patches])
    assert np.abs(alone - pooled).max() <= TOL


@pytest.mark.parametrize("L", [16, 256, 1024])
def test_fp32_any_length_and_texts(torch_model, ov_model, photos, L):
    images = [photos["rocket"], photos["china"], photos["camera_gray"]]
    ref = torch_model.embed_images(images, max_num_patches=L, normalize=False)
    assert np.abs(ov_model.embed_images(images, max_num_patches=L, normalize=False) - ref).max() <= TOL
    texts = ["a photo of a cat", "", "ΣΟΦΟΣ 日本語 " * 20]
    assert np.abs(ov_model.embed_texts(texts, normalize=False)
                  - torch_model.embed_texts(texts, normalize=False)).max() <= TOL


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
