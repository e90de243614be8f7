"""`sigserve bench` plumbing on the tiny checkpoint (numbers are not checked: a benchmark, not a test)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from sigserve.cli import build_app
from sigserve.cli.bench import vision_gflop


def test_vision_cost_formula_matches_the_reference_figures():
    # 46.9 / 112 / 217 GFLOP per image at 256 / 576 / 1024 patches, as counted by the project's first CPU
    # performance study (multiply-adds x2 of the base vision tower; docs/benchmarks.md)
    for n, reference in ((256, 46.9), (576, 112), (1024, 217)):
        assert abs(vision_gflop(n) / reference - 1) < 0.01


def test_bench_command_compares_every_configuration(tiny_checkpoint, tmp_path):
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(build_app(), ["bench", "-m", str(tiny_checkpoint), "--batch-sizes", "1,2", "--rounds", "1",
                                              "--text-batch", "4", "--no-rss", "--json", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    configs = {"torch:fp32", "openvino:fp32", "onnx:fp32", "openvino:int8", "onnx:int8"}
    assert {(r["config"], r["batch"]) for r in report["vision"]} == {(c, b) for c in configs for b in (1, 2)}
    assert set(report["text"]) == configs and report["matmul_peak_gflops"] > 0
    exact = [r for r in report["vision"] if r["config"].endswith("fp32")]
    assert max(r["distance_1_minus_cos"] for r in exact) < 1e-6  # same checkpoint read by all: same answers
    assert report["baseline"] == "torch:fp32" and "vs torch:fp32" in result.output  # what it compared, named
    assert "transformers" not in result.output  # the product never claims a comparison it did not run


def test_bench_script_adds_transformers_as_the_baseline(tiny_checkpoint):
    from bench.reference import TransformersRunner
    from sigserve.cli.bench import run_bench
    from sigserve.weights import resolve

    lines: list[str] = []
    report = run_bench(resolve(tiny_checkpoint), ["onnx:fp32"], [1], rounds=1, text_batch=2, rss=False,
                       echo=lines.append, extra={"transformers": (TransformersRunner(tiny_checkpoint), None)})
    assert report["baseline"] == "transformers" and any("vs transformers" in line for line in lines)
    assert [r["distance_1_minus_cos"] < 1e-6 for r in report["vision"]] == [True, True]
