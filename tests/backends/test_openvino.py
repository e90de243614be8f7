"""The openvino backend's own parts: static int8 stays within a stated distance at lengths it was and
was not calibrated at, bf16 too (and is refused on a CPU without bf16 instructions), `sigserve prepare`
builds its files ahead of time, and a missing package is a clear error. (Its fp32 parity and its cache
are tested with onnx's, in test_backends.py.)"""

from __future__ import annotations

import sys

import pytest
from typer.testing import CliRunner

import sigserve
from sigserve.backends import check_selection, openvino
from sigserve.cli import build_app
from sigserve.scoring import max_cosine_distance

# Static int8 (activation ranges fixed by calibration, unlike onnx's dynamic int8) on this tiny random
# model, measured: images 1.7e-3 to 3.1e-3 (1 - cos; the worst at 16 patches, a length never
# calibrated), texts 4.1e-4. 2.5x headroom; a broken calibration (ranges from one length only, zero
# ranges) lands at 1e-1 and beyond. Full-size figures: docs/benchmarks.md.
INT8_MAX_COSINE_DISTANCE = 8e-3
# bf16 (the fp32 IR computed in bf16) on the same model, measured: images 2.0e-5 to 2.5e-5, texts 1.6e-5.
# 4x headroom above; below, 1e-6 tells bf16 from a quiet fallback to f32 (exact: about 1e-7 and less).
BF16_MAX_COSINE_DISTANCE, BF16_MIN_COSINE_DISTANCE = 1e-4, 1e-6
TEXTS = ["a photo of a cat", "a rocket", "", "ein Hund im Park"]


def test_int8_is_close_at_every_length_but_not_exact(tiny_checkpoint, torch_model, photos):
    int8 = sigserve.load(tiny_checkpoint, backend="openvino", precision="int8")
    images = list(photos.values())
    for L in (16, 144, 256, 1024):  # 16 and 144 are never calibrated (calibration.LENGTHS)
        got, ref = int8.embed_images(images, max_num_patches=L), torch_model.embed_images(images, max_num_patches=L)
        assert 0 < max_cosine_distance(got, ref) <= INT8_MAX_COSINE_DISTANCE, L
    assert max_cosine_distance(int8.embed_texts(TEXTS), torch_model.embed_texts(TEXTS)) <= INT8_MAX_COSINE_DISTANCE
    assert int8.describe()["precision"] == "int8" and "int8" in repr(int8)
    # the layers int8 leaves in floating point run in bf16 where the CPU can
    assert int8.describe()["inference_precision"] == ("bf16" if openvino.cpu_has_bf16() else "f32")


def test_bf16_is_close_at_every_length_but_not_exact(tiny_checkpoint, torch_model, photos):
    if not openvino.cpu_has_bf16():
        pytest.skip("this CPU has no bf16 instructions (AVX512_BF16 or AMX); the refusal is tested below")
    bf16 = sigserve.load(tiny_checkpoint, backend="openvino", precision="bf16")
    assert bf16.describe()["inference_precision"] == "bf16"
    images = list(photos.values())
    for L in (16, 256, 1024):
        got, ref = bf16.embed_images(images, max_num_patches=L), torch_model.embed_images(images, max_num_patches=L)
        assert BF16_MIN_COSINE_DISTANCE < max_cosine_distance(got, ref) <= BF16_MAX_COSINE_DISTANCE, L
    distance = max_cosine_distance(bf16.embed_texts(TEXTS), torch_model.embed_texts(TEXTS))
    assert BF16_MIN_COSINE_DISTANCE < distance <= BF16_MAX_COSINE_DISTANCE


def test_bf16_is_refused_on_a_cpu_without_bf16(tiny_checkpoint, monkeypatch):
    """OpenVINO itself would run fp32 and say nothing; sigserve names the missing instructions. int8 then
    keeps its unquantized layers in f32."""
    monkeypatch.setattr(openvino, "cpu_has_bf16", lambda: False)
    with pytest.raises(sigserve.ModelLoadError, match=r"bf16 instructions \(AVX512_BF16 or AMX\)"):
        sigserve.load(tiny_checkpoint, backend="openvino", precision="bf16")
    assert openvino.compile_config(2, "int8")["INFERENCE_PRECISION_HINT"] == "f32"
    assert openvino.compile_config(2, "fp32")["INFERENCE_PRECISION_HINT"] == "f32"


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
