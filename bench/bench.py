"""The full benchmark behind docs/benchmarks.md (a benchmark, never a test; a few minutes on 2 cores).

    python -m bench.bench                       # everything, full-size random checkpoint
    python -m bench.bench --only towers         # or: int8, mixed, preprocess

Sections:
  towers      `sigserve bench`'s comparison plus transformers (bench/reference.py) as the baseline
  int8        distance of int8 to exact fp32 on real photos (skimage / sklearn), 256 and 1024 patches
  mixed       mixed aspect ratios at 1024 patches: batches in input order vs sorted by patch count
  preprocess  JPEG decode+resize cost, draft decode's speed and distance, decode/inference overlap

The checkpoint is built once with tests/support/checkpoints.py (random weights, every parameter random)
under $SIGSERVE_CACHE/bench/full-random. Run from the repository root.
"""

from __future__ import annotations

import argparse
import io
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image

import sigserve
from bench.reference import TransformersRunner, peak_rss_mb
from sigserve.cli.bench import run_bench
from sigserve.paths import cache_dir
from sigserve.scoring import max_cosine_distance
from sigserve.weights import resolve
from tests.support.oracle import real_photos


def full_checkpoint() -> Path:
    from tests.support.checkpoints import make_checkpoint

    folder = cache_dir("bench", "full-random")
    if not (folder / "preprocessor_config.json").is_file():  # written last by make_checkpoint
        print(f"building the full-size random checkpoint in {folder} (1.5 GB, about a minute)")
        make_checkpoint(folder, "full", seed=0)
    return folder


def photos() -> dict[str, Image.Image]:
    return {k: v for k, v in real_photos().items() if k != "camera_gray"}


def jpeg(image: Image.Image, size=None, quality=90) -> bytes:
    buf = io.BytesIO()
    (image.resize(size, Image.BICUBIC) if size else image).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def best_of(fn, n=3) -> float:
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return min(ts)


def int8_distance(folder: Path) -> dict:
    exact = sigserve.load(folder, backend="onnx", precision="fp32")
    int8 = sigserve.load(folder, backend="onnx", precision="int8")
    ims = list(photos().values())
    out = {}
    for L in (256, 1024):
        a, b = exact.embed_images(ims, max_num_patches=L), int8.embed_images(ims, max_num_patches=L)
        per = 1 - (a * b).sum(1)
        out[L] = {"max_1_minus_cos": float(per.max()), "mean_1_minus_cos": float(per.mean())}
        print(f"int8 vs exact fp32, {len(ims)} real photos at {L} patches: 1-cos max {per.max():.1e}, "
              f"mean {per.mean():.1e}  (min cosine {1 - per.max():.5f})")
    texts = ["a photo of a cat", "a rocket on the launch pad", "a cup of coffee", "ein Hund im Park"]
    d = max_cosine_distance(exact.embed_texts(texts), int8.embed_texts(texts))
    print(f"int8 vs exact fp32, texts: 1-cos max {d:.1e}")
    out["text"] = d
    return out


def mixed_workload(folder: Path, backend: str, rounds: int = 2, batch: int = 8) -> dict:
    """Mixed aspect ratios at 1024 patches: the same images batched in input order (each batch pads to
    its longest) vs sorted by patch count (what Pipeline does within a window)."""
    model = sigserve.load(folder, backend=backend)
    rng = np.random.default_rng(0)
    sizes = [(480, 640), (640, 480), (1080, 1920), (512, 512), (300, 451), (1000, 3000), (2000, 300), (720, 1280)]
    images = [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for h, w in sizes * 2]
    patches = [model.preprocess(im, None, 1024) for im in images]
    order = sorted(range(len(patches)), key=lambda i: patches[i].num_patches)
    plans = {"input order": list(range(len(patches))), "sorted by patch count": order}

    def run(plan):
        for b in range(0, len(plan), batch):
            model.encode_patches([patches[i] for i in plan[b: b + batch]])

    padded = {k: sum(max(patches[i].num_patches for i in p[b: b + batch]) * len(p[b: b + batch])
                     for b in range(0, len(p), batch)) for k, p in plans.items()}
    real = sum(p.num_patches for p in patches)
    times = {k: [] for k in plans}
    run(order)
    for _ in range(rounds):
        for k, p in plans.items():
            times[k].append(best_of(lambda p=p: run(p), 1))
    base = min(times["input order"])
    out = {}
    for k in plans:
        t = min(times[k])
        out[k] = {"images_per_s": len(patches) / t, "padding_fraction": 1 - real / padded[k], "speedup": base / t}
        print(f"mixed 1024-patch workload ({backend}, batch {batch}), {k:<22}: {len(patches) / t:.2f} img/s, "
              f"padding {100 * (1 - real / padded[k]):.1f}% of rows, x{base / t:.3f}")
    return out


def preprocessing(folder: Path, backend: str) -> dict:
    exact = sigserve.load(folder, backend=backend)
    draft = sigserve.load(folder, backend=backend, jpeg_draft=True)
    ims = photos()
    big = {n: jpeg(im, (4000, 3000)) for n, im in ims.items()}
    small = {n: jpeg(im, (640, 480)) for n, im in ims.items()}
    out = {}
    for L in (256, 1024):
        t_small = best_of(lambda L=L: [exact.preprocess(b, None, L) for b in small.values()]) / len(small)
        t_big = best_of(lambda L=L: [exact.preprocess(b, None, L) for b in big.values()]) / len(big)
        t_draft = best_of(lambda L=L: [draft.preprocess(b, None, L) for b in big.values()]) / len(big)
        a = exact.embed_images(list(big.values()), max_num_patches=L)
        b = draft.embed_images(list(big.values()), max_num_patches=L)
        per = 1 - (a * b).sum(1)
        raw = np.abs(exact.embed_images(list(big.values()), max_num_patches=L, normalize=False)
                     - draft.embed_images(list(big.values()), max_num_patches=L, normalize=False)).max()
        out[L] = {"ms_640x480": 1000 * t_small, "ms_4000x3000": 1000 * t_big, "ms_4000x3000_draft": 1000 * t_draft,
                  "draft_max_1_minus_cos": float(per.max()), "draft_max_abs_pooled": float(raw)}
        print(f"preprocess at {L} patches: 640x480 JPEG {1000 * t_small:.0f} ms, 4000x3000 JPEG {1000 * t_big:.0f} ms, "
              f"with draft {1000 * t_draft:.0f} ms; draft distance 1-cos max {per.max():.1e} "
              f"(cosine {1 - per.max():.6f}), max |pooled diff| {raw:.1e}")
    # Overlap: 16 large JPEGs embedded through the pipeline (decode prefetched in threads while the
    # previous window infers) vs decoding and inferring strictly one after the other.
    items = list(big.values()) * 2 + list(small.values()) * 2
    seq = lambda: [exact.encode_patches([exact.preprocess(x, None, 256) for x in items[i: i + 8]])
                   for i in range(0, len(items), 8)]
    pipe = lambda: exact.embed_images(items, batch_size=8)
    ts = {"sequential": [], "prefetched": []}
    for _ in range(2):
        ts["sequential"].append(best_of(seq, 1))
        ts["prefetched"].append(best_of(pipe, 1))
    s, p = min(ts["sequential"]), min(ts["prefetched"])
    out["overlap"] = {"sequential_images_per_s": len(items) / s, "prefetched_images_per_s": len(items) / p}
    print(f"{len(items)} JPEGs (half 4000x3000) at 256 patches, {backend}: decode then infer {len(items) / s:.2f} img/s, "
          f"prefetched {len(items) / p:.2f} img/s (x{s / p:.2f})")
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default="towers,int8,mixed,preprocess")
    ap.add_argument("--batch-sizes", default="1,8,32")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--backend", default="onnx", help="backend for the mixed and preprocess sections")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    folder = full_checkpoint()
    report = {}
    sections = a.only.split(",")
    if "towers" in sections:
        reference = {"transformers": (TransformersRunner(folder), lambda: peak_rss_mb(str(folder)))}
        report["towers"] = run_bench(resolve(folder), ["torch:fp32", "onnx:fp32", "onnx:int8"],
                                     [int(b) for b in a.batch_sizes.split(",")], rounds=a.rounds, extra=reference)
    if "int8" in sections:
        report["int8"] = int8_distance(folder)
    if "mixed" in sections:
        report["mixed"] = mixed_workload(folder, a.backend)
    if "preprocess" in sections:
        report["preprocess"] = preprocessing(folder, a.backend)
    if a.json:
        Path(a.json).write_text(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
