"""`sigserve bench`: sigserve's backends and precisions on one checkpoint, in the same run.

Timings on a shared machine are noisy, so every configuration is timed interleaved (round-robin, one
batch each, several rounds) and each reports its best round; the ratios within one run are the result,
against the first configuration (the baseline, named in every line). Alongside: a large fp32
matmul's GFLOP/s measured in the same run (the hardware ceiling), the fraction of it each
configuration reaches, peak RSS in a fresh subprocess, and cost per 1k images. The comparison with
transformers lives in the repository's bench/bench.py, which adds it as one more configuration.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any, Optional

import numpy as np
import typer

from sigserve.defaults import DEFAULT_MAX_NUM_PATCHES, DEFAULT_MODEL
from sigserve.scoring import max_cosine_distance

DEFAULT_CONFIGS = "torch:fp32,openvino:fp32,onnx:fp32,openvino:int8,onnx:int8"
PRICE_PER_HOUR = 0.085  # USD, a 2-vCPU AVX-512 cloud VM on demand (AWS c6i.large, us-east-1, 2025)


def register(app: typer.Typer) -> None:
    app.command()(bench)


def vision_gflop(n: int, d: int = 768, mlp: int = 3072, layers: int = 12, patch_dim: int = 768) -> float:
    """Multiply-adds x2 of the vision tower at n patches: projections, MLP, attention, patch embedding, MAP head."""
    per_layer = 8 * n * d * d + 4 * n * d * mlp + 4 * n * n * d
    return (layers * per_layer + 2 * n * patch_dim * d + 4 * n * d * d + 4 * n * d + 4 * d * mlp) / 1e9


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def square_batch(batch: int, n: int, patch_dim: int = 768, seed: int = 0):
    """A packed batch as images.pack gives it: (B, N, P) uint8 pixel values (not normalised), mask, shapes."""
    side = int(round(n**0.5))
    rng = np.random.default_rng(seed)
    pv = rng.integers(0, 256, (batch, side * side, patch_dim), dtype=np.uint8)
    return pv, np.ones((batch, side * side), np.int32), np.array([[side, side]] * batch, np.int64)


def make_runner(spec: str, checkpoint):
    """'backend:precision' -> the backend (encode_images / encode_texts)."""
    from sigserve.backends import create_backend

    name, _, precision = spec.partition(":")
    return create_backend(name, checkpoint, precision=precision or "fp32")


class MatmulProbe:
    """A large fp32 matmul timed between the configurations' calls, so that the peak is sampled under
    the same machine load as they are (the best sample is the ceiling)."""

    def __init__(self, size: int = 2048):
        import torch

        self.a, self.b, self.flop = torch.randn(size, size), torch.randn(size, size), 2 * size**3
        self.samples: list[float] = []

    def sample(self):
        self.samples.append(self.flop / min(_timed(lambda: self.a @ self.b) for _ in range(2)) / 1e9)

    @property
    def peak(self) -> float:
        return max(self.samples)


def interleaved(runners: dict, fn_name: str, args, rounds: int, probe: MatmulProbe | None = None) -> dict[str, list[float]]:
    """Seconds per call for each runner, measured round-robin after one warm-up call each."""
    times: dict[str, list[float]] = {k: [] for k in runners}
    for r in runners.values():
        getattr(r, fn_name)(*args)
    for _ in range(rounds):
        for k, r in runners.items():
            if probe:
                probe.sample()
            times[k].append(_timed(lambda r=r: getattr(r, fn_name)(*args)))
    return times


def peak_rss_mb(folder: str, backend: str, precision: str, dummy: bool = False) -> float:
    """Peak RSS (MB) of a fresh process that loads the model and embeds one 640x480 image. VmHWM, not
    ru_maxrss: the latter keeps the parent's RSS across fork+exec on Linux."""
    code = (
        "import numpy as np, sigserve\n"
        f"m = sigserve.load({folder!r}, dummy={dummy}, backend={backend!r}, precision={precision!r})\n"
        "m.embed_images([np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)])\n"
        "print(int(open('/proc/self/status').read().split('VmHWM:')[1].split()[0]) / 1024)\n"
    )
    return rss_of(code)


def rss_of(code: str) -> float:
    """Run `code` (which prints its VmHWM in MB last) in a fresh interpreter."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def run_bench(checkpoint, configs: list[str], batch_sizes: list[int], patches: int | None = None, rounds: int = 3,
              text_batch: int = 64, rss: bool = True, price: float = PRICE_PER_HOUR, echo=print,
              extra: dict | None = None) -> dict:
    """The whole comparison; returns the numbers as a dict and echoes a readable table as it goes.
    `extra`: name -> (runner, rss function or None), compared too and, when given, the baseline."""
    import torch

    vision = checkpoint.config.vision
    patches = (patches or DEFAULT_MAX_NUM_PATCHES) if vision.naflex else vision.num_patches  # fixed: its own grid
    gflop = vision_gflop(patches, vision.hidden_size, vision.intermediate_size, vision.num_hidden_layers, vision.patch_dim)
    report: dict[str, Any] = {"checkpoint": str(checkpoint.path), "threads": torch.get_num_threads(), "patches": patches,
              "gflop_per_image": round(gflop, 2), "price_per_hour": price, "vision": [], "text": {}}
    report["load_average_before"] = os.getloadavg()
    echo(f"{report['threads']} threads; load average {report['load_average_before'][0]:.2f} "
         "(a shared machine: compare within this run only)")
    probe = MatmulProbe()
    extra = extra or {}
    runners = {**{k: r for k, (r, _) in extra.items()}, **{c: make_runner(c, checkpoint) for c in configs}}
    base = next(iter(runners))  # the ratios' denominator, named in every line
    ref_name = "torch:fp32" if "torch:fp32" in runners else base
    report["baseline"] = base
    for B in batch_sizes:
        args = square_batch(B, patches, vision.patch_dim)
        outs = {k: r.encode_images(*args)[0] for k, r in runners.items()}
        times = interleaved(runners, "encode_images", args, rounds, probe)
        for k, ts in times.items():
            best = min(ts)
            row = {"config": k, "batch": B, "images_per_s": B / best, "latency_ms": 1000 * best,
                   "median_ms": 1000 * float(np.median(ts)), "vs_baseline": min(times[base]) / best,
                   "distance_1_minus_cos": max_cosine_distance(outs[k], outs[ref_name]),
                   "usd_per_1k_images": price / 3600 * 1000 * best / B}
            report["vision"].append(row)
        echo(f"\nvision tower, {patches} patches, batch {B} (best of {rounds} interleaved rounds):")
        for row in report["vision"][-len(times):]:
            echo(f"  {row['config']:<14} {row['images_per_s']:7.2f} img/s  {row['latency_ms']:8.0f} ms/batch  "
                 f"x{row['vs_baseline']:.2f} vs {base}  1-cos {row['distance_1_minus_cos']:.1e}  "
                 f"${row['usd_per_1k_images']:.4f}/1k img")
    peak = report["matmul_peak_gflops"] = probe.peak
    for row in report["vision"]:
        row["fraction_of_fp32_matmul_peak"] = row["images_per_s"] * report["gflop_per_image"] / peak
    echo(f"\nfp32 matmul peak (2048^3, best of {len(probe.samples)} samples taken between the calls): "
         f"{peak:.0f} GFLOP/s; fraction of it reached at {report['gflop_per_image']} GFLOP/image, best batch:")
    for k in runners:
        best_row = max((r for r in report["vision"] if r["config"] == k), key=lambda r: r["images_per_s"])
        echo(f"  {k:<14} {best_row['images_per_s']:6.2f} img/s at batch {best_row['batch']}: "
             f"{100 * best_row['fraction_of_fp32_matmul_peak']:.0f}% of peak")
    if text_batch:
        ids = np.random.default_rng(0).integers(5, 300, (text_batch, 64)).astype(np.int64)
        times = interleaved(runners, "encode_texts", (ids,), rounds)
        echo(f"\ntext tower, batch {text_batch} x 64 tokens:")
        for k, ts in times.items():
            report["text"][k] = {"texts_per_s": text_batch / min(ts), "vs_baseline": min(times[base]) / min(ts)}
            echo(f"  {k:<14} {text_batch / min(ts):7.1f} texts/s  x{min(times[base]) / min(ts):.2f} vs {base}")
    report["load_average_after"] = os.getloadavg()
    del runners
    if rss:
        report["peak_rss_mb"] = {}
        echo("\npeak RSS, fresh process, load + embed one image:")
        measures = {k: fn for k, (_, fn) in extra.items() if fn is not None}
        for c in configs:
            name, _, precision = c.partition(":")
            measures[c] = lambda n=name, p=precision: peak_rss_mb(str(checkpoint.path), n, p or "fp32")
        for k, measure in measures.items():
            report["peak_rss_mb"][k] = mb = measure()
            echo(f"  {k:<14} {mb:6.0f} MB")
    return report


def bench(
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Checkpoint folder; without one, the base "
                              "architecture with random weights (a dummy checkpoint)."),
    configs: str = typer.Option(DEFAULT_CONFIGS, "--configs", help="Comma list of backend:precision (torch:fp32, "
                                "openvino:fp32, openvino:int8, onnx:fp32, onnx:int8, aoti:fp32; openvino:bf16 on CPUs "
                                "with bf16 instructions); the first is the baseline of the ratios."),
    batch_sizes: str = typer.Option("1,8", "--batch-sizes", help="Comma list of vision batch sizes."),
    max_num_patches: Optional[int] = typer.Option(None, "--max-num-patches", help="Patches per image (a square grid; "
                                                  f"default {DEFAULT_MAX_NUM_PATCHES}; a fixed-resolution model runs at "
                                                  "its own)."),
    rounds: int = typer.Option(3, "--rounds", help="Interleaved timing rounds per configuration."),
    text_batch: int = typer.Option(64, "--text-batch", help="Text batch size (0 skips the text tower)."),
    rss: bool = typer.Option(True, "--rss/--no-rss", help="Measure peak RSS in fresh subprocesses."),
    price: float = typer.Option(PRICE_PER_HOUR, "--price-per-hour", help="USD per machine-hour, for cost per 1k images."),
    json_out: str = typer.Option(None, "--json", help="Also write the numbers to this JSON file."),
):
    """Benchmark sigserve's backends and precisions against each other on one checkpoint."""
    from pathlib import Path

    from sigserve.dummy import dummy_checkpoint
    from sigserve.weights import resolve

    checkpoint = resolve(model) if Path(model).expanduser().is_dir() else dummy_checkpoint(model)
    typer.echo(f"checkpoint: {checkpoint.path} ({checkpoint.source})")
    report = run_bench(checkpoint, [c.strip() for c in configs.split(",") if c.strip()],
                       [int(b) for b in batch_sizes.split(",")], max_num_patches, rounds, text_batch, rss, price,
                       echo=typer.echo)
    if json_out:
        Path(json_out).write_text(json.dumps(report, indent=2))
