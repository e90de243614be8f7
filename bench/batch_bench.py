"""`sigserve batch` against `model.embed_images` in one process, on the same files (a benchmark, never a
test; about 20 minutes on 2 cores with the defaults). Run it on a quiet machine.

    python -m bench.batch_bench                       # full-size random weights, 160 1080p JPEGs, 2 rounds
    python -m bench.batch_bench --tiny --images 40 --rounds 1   # checks the script itself in a few minutes

Each round runs, one after the other, on the same JPEGs and the same weights (`--load-format dummy`: the
real architecture, random weights, written once to SIGSERVE_CACHE):

  in-process  `sigserve.load(...).embed_images(paths)` in a fresh interpreter, timed after the model is
              loaded and warmed up: decode + preprocess + inference, with the library's decode prefetch
  local       `sigserve batch` with no --ray-address: a local Ray instance, default workers and threads
              (here one actor with every core)
  cluster     `sigserve batch --ray-address` on a two-node cluster on this machine (`ray start` head and
              worker, one CPU each: two actors of one thread), tests/batch/ray_local_cluster.py

Each batch mode runs twice per round, on all the images (N) and on the first quarter (n): the
marginal rate (N - n) / (T_N - T_n) is its steady throughput, with Ray start, model loading and the
pipeline's fill and drain cancelled out (T: the job's own seconds, from `--summary-json`). Reported
beside it: end-to-end images/s of the full run (everything included, what a short job sees), each
actor's rate while busy and its peak RSS. Ray Data's overhead = 1 - marginal rate / in-process rate.
The projection for N workers multiplies the local run's marginal rate (one 2-vCPU node) by N: a
projection, assuming linear scaling, storage that keeps up and a driver that is not the bottleneck,
never a measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.http_bench import hd_jpegs
from tests.batch.ray_local_cluster import LocalRayCluster

FULL_MODEL = "google/siglip2-base-patch16-naflex"  # with --load-format dummy: its config, random weights
TINY_CONFIG = {"model_type": "siglip2",
               "vision_config": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4},
               "text_config": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4}}
PROJECT_WORKERS = (1, 8, 32, 128)

IN_PROCESS = """
import json, resource, sys, time
import sigserve
model_id, paths, patches, batch = json.loads(sys.argv[1])
model = sigserve.load(model_id, dummy=True)
model.embed_images(paths[:batch], max_num_patches=patches, batch_size=batch)  # warm-up
t0 = time.perf_counter()
model.embed_images(paths, max_num_patches=patches, batch_size=batch)
seconds = time.perf_counter() - t0
print(json.dumps({"images_per_s": len(paths) / seconds, "seconds": seconds,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "threads": model.backend.describe().get("threads")}))
"""


def in_process(model: str, paths: list[str], patches: int, batch: int, env: dict) -> dict:
    args = json.dumps([model, paths, patches, batch])
    done = subprocess.run([sys.executable, "-c", IN_PROCESS, args], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"in-process run failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def batch_run(model: str, folder: Path, patches: int, batch: int, env: dict, address: str | None) -> dict:
    with tempfile.TemporaryDirectory(prefix="batch-bench-") as tmp:
        summary = Path(tmp) / "summary.json"
        cmd = [str(Path(sys.executable).with_name("sigserve")), "batch", "--input", str(folder), "--output",
               f"{tmp}/out", "--model", model, "--load-format", "dummy", "--max-num-patches", str(patches),
               "--batch-size", str(batch), "--summary-json", str(summary), "--no-progress"]
        if address:
            cmd += ["--ray-address", address]
        t0 = time.perf_counter()
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if done.returncode != 0:
            raise RuntimeError(f"sigserve batch failed: {done.stderr[-2000:]}")
        result = json.loads(summary.read_text())
    result["command_s"] = wall  # the whole command, interpreter start and Ray start included
    return result


def marginal(model: str, folders: tuple[Path, Path], patches: int, batch: int, env: dict, address: str | None) -> dict:
    """The short run, then the full run; their marginal rate."""
    short, full = (batch_run(model, f, patches, batch, env, address) for f in folders)
    extra = full["seconds"] - short["seconds"]
    rate = (full["rows"] - short["rows"]) / extra if extra > 0 else float("nan")  # nan: too few images to tell
    return {"marginal_images_per_s": rate, "short": short, "full": full}


def describe(result: dict) -> str:
    full = result["full"]
    rates = ", ".join(f"{w['images_per_s']:.2f}" for w in full["workers"].values())
    rss = ", ".join(f"{w['peak_rss_mb']:.0f}" for w in full["workers"].values())
    return (f"marginal {result['marginal_images_per_s']:.2f} img/s; full run {full['images_per_s']:.2f} img/s end to "
            f"end ({full['seconds']:.0f} s, first rows after {full['startup_s']:.0f} s), short run "
            f"{result['short']['seconds']:.0f} s; per actor busy {rates} img/s, peak RSS {rss} MB")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=160, help="distinct 1920x1080 JPEGs")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--max-num-patches", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--tiny", action="store_true", help="a 2-layer, 64-wide random model: checks the script only")
    ap.add_argument("--price-per-hour", type=float, default=0.085, help="$ per node-hour (2-vCPU AVX-512 VM, c6i.large)")
    ap.add_argument("--json", default=None, help="also write the raw results here")
    a = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="batch-bench-"))
    model = FULL_MODEL
    if a.tiny:
        (work / "tiny").mkdir()
        (work / "tiny" / "config.json").write_text(json.dumps(TINY_CONFIG))
        model = str(work / "tiny")
    folder, short = work / "jpegs", work / "quarter"
    folder.mkdir()
    short.mkdir()
    for i, jpeg in enumerate(hd_jpegs(a.images)):
        (folder / f"{i:05d}.jpg").write_bytes(jpeg)
        if i < a.images // 4:
            os.link(folder / f"{i:05d}.jpg", short / f"{i:05d}.jpg")
    paths = sorted(str(p) for p in folder.glob("*.jpg"))
    folders = (short, folder)
    # A token of our own for every Ray process: a local instance would otherwise write ~/.ray/auth_token.
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32), "RAY_USAGE_STATS_ENABLED": "0"}

    print(f"# batch_bench {time.strftime('%Y-%m-%d %H:%M:%S')}, {os.cpu_count()} cpus, loadavg "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}; model {'tiny' if a.tiny else FULL_MODEL} (random weights)")
    print(f"# command: python -m bench.batch_bench {' '.join(sys.argv[1:])}")
    print(f"inputs: {len(paths)} 1920x1080 JPEGs, {a.max_num_patches} patches, batch {a.batch_size}", flush=True)

    runs: dict[str, list[dict]] = {"in-process": [], "local": [], "cluster": []}
    for r in range(a.rounds):
        load = os.getloadavg()[0]
        runs["in-process"].append(in_process(model, paths, a.max_num_patches, a.batch_size, env))
        print(f"round {r + 1} (load {load:.2f}) in-process: {runs['in-process'][-1]['images_per_s']:.2f} img/s, "
              f"peak RSS {runs['in-process'][-1]['peak_rss_mb']:.0f} MB", flush=True)
        runs["local"].append(marginal(model, folders, a.max_num_patches, a.batch_size, env, None))
        print(f"round {r + 1} local: {describe(runs['local'][-1])}", flush=True)
        cluster = LocalRayCluster(cpus_per_node=(1, 1), object_store_bytes=1024**3)
        cluster.env = {k: env[k] for k in cluster.env}  # the same token for nodes and driver
        try:
            cluster.start()
            runs["cluster"].append(marginal(model, folders, a.max_num_patches, a.batch_size, env, cluster.address))
        finally:
            cluster.stop()
        print(f"round {r + 1} two-node cluster: {describe(runs['cluster'][-1])}", flush=True)

    shutil.rmtree(work, ignore_errors=True)
    report(runs, a)
    if a.json:
        Path(a.json).write_text(json.dumps({"args": vars(a), "runs": runs}, indent=1))


def report(runs: dict[str, list[dict]], a) -> None:
    ref = statistics.median(r["images_per_s"] for r in runs["in-process"])
    ref_rss = max(r["peak_rss_mb"] for r in runs["in-process"])
    print("\n| run | img/s end to end | img/s steady (marginal) | vs in-process | Ray Data overhead | peak RSS per worker |")
    print("|---|---|---|---|---|---|")
    print(f"| `model.embed_images`, one process | – | {ref:.2f} | 1 | – | {ref_rss:.0f} MB |")
    steady: dict[str, float] = {}
    for name, label in (("local", "`sigserve batch`, local Ray"), ("cluster", "`sigserve batch`, two-node cluster")):
        e2e = statistics.median(r["full"]["images_per_s"] for r in runs[name])
        steady[name] = s = statistics.median(r["marginal_images_per_s"] for r in runs[name])
        rss = max(w["peak_rss_mb"] for r in runs[name] for w in r["full"]["workers"].values())
        print(f"| {label} | {e2e:.2f} | {s:.2f} | {s / ref:.2f} | {100 * (1 - s / ref):.1f}% | {rss:.0f} MB |")

    node = steady["local"]
    print(f"\nProjection (not measured): N nodes like this one (2 vCPU, ${a.price_per_hour}/h each), "
          f"{node:.2f} img/s per node (the local run's marginal rate), linear scaling assumed")
    print("| workers (nodes) | img/s | hours per 1M images | $ per 1M images |")
    print("|---|---|---|---|")
    for n in PROJECT_WORKERS:
        hours = 1e6 / (n * node) / 3600
        print(f"| {n} | {n * node:.1f} | {hours:.1f} | {hours * n * a.price_per_hour:.2f} |")


if __name__ == "__main__":
    main()
