"""End to end over HTTP vs model-only, in one run (a benchmark, never a test; about 7 minutes on 2 cores).

    python -m bench.http_bench                          # defaults: 16 clients, 1080p JPEGs, 3 rounds
    python -m bench.http_bench --server-arg=--preprocess-threads=1   # try a server setting

What is measured, on the full-size random checkpoint (tests/support/checkpoints.py, cached under
SIGSERVE_CACHE/bench/full-random) with the backend/precision the server picks by default
(`sigserve.server.models.load_pipeline(settings, spec)`, i.e. onnx fp32 on CPU):

  inference-only  `Pipeline.encode_patches` on already-preprocessed NaFlex patches (256) of the same
                  JPEGs, at batch 1, 4 and 8 (8 = the server's max_batch_images). The best of these is
                  the denominator of the throughput goal ("model-only throughput").
  pipeline        `Pipeline.embed_images(jpeg bytes, batch_size=8)`: decode + preprocess + inference
                  with the library's own decode prefetch: what a library user gets (reported too).
  HTTP            `sigserve serve` as a subprocess on 127.0.0.1; N concurrent clients (httpx, asyncio),
                  each posting one image per request as a data URI (OpenAI `image_url` content part)
                  to /v1/embeddings, in a closed loop for a fixed window after a warm-up.
  idle latency    one request at a time, the same image: HTTP vs pipeline (decode+preprocess+inference)
                  vs inference-only at batch 1 (median of --latency-n, interleaved).

The three throughput measurements run interleaved in every round (the machine is shared); each round
also records the load average and how much CPU *other* processes took meanwhile (/proc/stat minus this
process and the server). Server-side batch sizes and per-image inference time under HTTP load come from
the server's /metrics, so contention inside the server shows up as a slower per-image inference.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

from bench.bench import full_checkpoint, photos

RESULTS = Path(__file__).resolve().parent / "results"

CLK = os.sysconf("SC_CLK_TCK")


# -- inputs ----------------------------------------------------------------------------------------

def hd_jpegs(n: int, seed: int = 0, size=(1920, 1080), quality: int = 90) -> list[bytes]:
    """n distinct 1920x1080 JPEGs from the skimage/sklearn photos: random 16:9 crop, flip, colour and
    brightness jitter, upscaled, plus mild sensor-like noise (so they compress like real photos)."""
    rng = np.random.default_rng(seed)
    base = list(photos().values())
    out = []
    for i in range(n):
        im = base[i % len(base)]
        w, h = im.size
        cw = int(min(w, h * 16 / 9) * rng.uniform(0.7, 1.0))
        ch = int(cw * 9 / 16)
        x, y = rng.integers(0, w - cw + 1), rng.integers(0, h - ch + 1)
        crop = im.crop((x, y, x + cw, y + ch))
        if rng.random() < 0.5:
            crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
        crop = ImageEnhance.Color(crop).enhance(rng.uniform(0.7, 1.3))
        crop = ImageEnhance.Brightness(crop).enhance(rng.uniform(0.8, 1.2))
        big = np.asarray(crop.resize(size, Image.BICUBIC), np.float32)
        big += rng.normal(0, 3.0, big.shape)
        buf = io.BytesIO()
        Image.fromarray(np.clip(big, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=quality)
        out.append(buf.getvalue())
    return out


def body(jpeg: bytes, model: str) -> bytes:
    uri = "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")
    return json.dumps({"model": model, "input": [{"type": "image_url", "image_url": {"url": uri}}]}).encode()


# -- machine load ----------------------------------------------------------------------------------

def _cpu_busy() -> float:
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v) - v[3] - v[4]) / CLK  # all but idle and iowait, seconds over all cores


def _proc_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        v = f.read().rsplit(")", 1)[1].split()
    return (int(v[11]) + int(v[12])) / CLK


def others_now(pids: list[int], seconds: float = 1.0) -> float:
    """Cores used by processes other than `pids` over the next `seconds`."""
    b0, o0 = _cpu_busy(), sum(map(_proc_cpu, pids))
    time.sleep(seconds)
    return max(0.0, (_cpu_busy() - b0) - (sum(map(_proc_cpu, pids)) - o0)) / seconds


class Load:
    """CPU used by other processes (not this one, not the server) during a phase, in cores; also this
    process's and the server's own CPU seconds. Entering first waits (at most `quiet_wait` s) until the
    other processes use less than `quiet` cores, so that phases start on an idle machine when it has one."""

    quiet, quiet_wait = 0.3, 20.0

    def __init__(self, server_pid: int | None):
        self.pids = [os.getpid()] + ([server_pid] if server_pid else [])
        self.server_pid = server_pid

    def __enter__(self):
        t = time.monotonic()
        while time.monotonic() - t < self.quiet_wait and others_now(self.pids, 1.0) > self.quiet:
            pass
        self.waited = time.monotonic() - t
        self.self0 = _proc_cpu(os.getpid())
        self.server0 = _proc_cpu(self.server_pid) if self.server_pid else 0.0
        self.t0, self.busy0, self.own0 = time.monotonic(), _cpu_busy(), sum(map(_proc_cpu, self.pids))
        self.load_start = os.getloadavg()[0]
        return self

    def __exit__(self, *exc):
        dt = time.monotonic() - self.t0
        self.others = max(0.0, (_cpu_busy() - self.busy0) - (sum(map(_proc_cpu, self.pids)) - self.own0)) / dt
        self.load_end = os.getloadavg()[0]
        self.self_cpu = _proc_cpu(os.getpid()) - self.self0
        self.server_cpu = (_proc_cpu(self.server_pid) - self.server0) if self.server_pid else 0.0

    def __str__(self):
        return (f"loadavg {self.load_start:.2f}->{self.load_end:.2f}, others {self.others:.2f} cores "
                f"(waited {self.waited:.0f} s for quiet)")


# -- model-only ------------------------------------------------------------------------------------

def inference_rate(model, patches, batch: int, images: int) -> float:
    todo = [patches[i % len(patches)] for i in range(images)]
    t0 = time.perf_counter()
    for i in range(0, images, batch):
        model.encode_patches(todo[i: i + batch])
    return images / (time.perf_counter() - t0)


def pipeline_rate(model, jpegs, images: int, batch: int) -> float:
    todo = [jpegs[i % len(jpegs)] for i in range(images)]
    t0 = time.perf_counter()
    model.embed_images(todo, batch_size=batch)
    return images / (time.perf_counter() - t0)


# -- the server --------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(folder: Path, port: int, extra: list[str], data_dir: str) -> subprocess.Popen:
    cmd = [str(Path(sys.executable).with_name("sigserve")), "serve", "--model", str(folder), "--host", "127.0.0.1",
           "--port", str(port), "--log-level", "warning", "--data-dir", data_dir, *extra]
    print("server:", " ".join(cmd), flush=True)
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=sys.stderr)


def wait_ready(proc: subprocess.Popen, url: str, timeout: float = 600, every: float = 0.5,
               probe_timeout: float = 2) -> None:
    """Poll /ready every `every` s until 200. A short `probe_timeout` times startup finely: the port is
    bound (and accepts) long before uvicorn answers."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url + "/ready", timeout=probe_timeout).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(every)
    raise SystemExit("server not ready in time")


def scrape(url: str) -> dict[str, float]:
    import httpx

    text = httpx.get(url + "/metrics", timeout=10).text
    out = {}
    for name in ("sigserve_batch_size", "sigserve_batch_duration_seconds"):
        for part in ("sum", "count"):
            # the labels carry the served model's name too (one model served here)
            m = re.search(rf'^{name}_{part}{{[^}}]*tower="image"[^}}]*}} (\S+)$', text, re.M)
            out[f"{name}_{part}"] = float(m.group(1)) if m else 0.0
    return out


async def http_load(url: str, bodies: list[bytes], clients: int, warmup: float, duration: float) -> dict:
    """Closed loop: `clients` tasks, each posting one image per request until the window ends. Throughput
    is counted between completions (batches finish in bursts), latency over requests sent in the window."""
    import httpx

    done: list[tuple[float, float]] = []  # (sent, finished)
    errors = 0
    t0 = time.monotonic()
    start, stop = t0 + warmup, t0 + warmup + duration
    counter = iter(range(10**9))
    headers = {"content-type": "application/json"}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=300) as client:
        async def one_client():
            nonlocal errors
            while time.monotonic() < stop:
                b = bodies[next(counter) % len(bodies)]
                sent = time.monotonic()
                r = await client.post("/v1/embeddings", content=b, headers=headers)
                if r.status_code != 200 or len(r.json()["data"][0]["embedding"]) != 768:
                    errors += 1
                    continue
                done.append((sent, time.monotonic()))

        await asyncio.gather(*(one_client() for _ in range(clients)))
    # A batch's responses arrive together: group completions into bursts (gaps < 50 ms) and count the
    # images of bursts 2..K over the time from burst 1 to burst K (exact in steady state; counting the
    # rest of burst 1 too would overstate the rate by up to a batch per window).
    ends = sorted(e for _, e in done if start <= e <= stop)
    bursts: list[list[float]] = []
    for e in ends:
        if bursts and e - bursts[-1][-1] < 0.05:
            bursts[-1].append(e)
        else:
            bursts.append([e])
    n = sum(len(b) for b in bursts[1:])
    span = bursts[-1][0] - bursts[0][0] if len(bursts) > 1 else 0.0
    lat = sorted(e - s for s, e in done if start <= s <= stop)
    return {"images_per_s": n / span if span > 0 else 0.0, "completed": n, "bursts": len(bursts),
            "window_s": span, "p50_ms": 1000 * _q(lat, 0.5), "p95_ms": 1000 * _q(lat, 0.95),
            "errors": errors}


def _q(xs: list[float], q: float) -> float:
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


# -- main --------------------------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=24, help="distinct 1080p JPEGs")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=float, default=8.0, help="seconds of HTTP load before the window")
    ap.add_argument("--duration", type=float, default=30.0, help="seconds of the HTTP window")
    ap.add_argument("--model-images", type=int, default=24, help="images per model-only measurement (b1: a third)")
    ap.add_argument("--batch", type=int, default=8, help="the server's max_batch_images")
    ap.add_argument("--latency-n", type=int, default=10)
    ap.add_argument("--server-arg", action="append", default=[], help="extra `sigserve serve` flag (repeat)")
    ap.add_argument("--max-others", type=float, default=0.15, help="rerun a phase when other processes took more cores")
    ap.add_argument("--retries", type=int, default=2)
    ap.add_argument("--quiet-wait", type=float, default=20.0, help="max seconds to wait for an idle machine per phase")
    ap.add_argument("--log", default=str(RESULTS / "http-end-to-end.log"))
    ap.add_argument("--json", default=None)
    a = ap.parse_args()

    log_lines: list[str] = []
    Load.quiet_wait = a.quiet_wait

    def say(msg: str = "") -> None:
        print(msg, flush=True)
        log_lines.append(msg)

    import httpx

    import sigserve
    from sigserve.server.models import load_pipeline
    from sigserve.server.settings import Settings

    folder = full_checkpoint()
    say(f"# sigserve {sigserve.__version__} http_bench, {time.strftime('%Y-%m-%d %H:%M:%S')}, {os.cpu_count()} cpus, "
        f"loadavg {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    say(f"# command: python -m bench.{Path(__file__).stem} {' '.join(sys.argv[1:])}")
    jpegs = hd_jpegs(a.images)
    say(f"inputs: {len(jpegs)} distinct 1920x1080 JPEGs (q90), mean {np.mean([len(j) for j in jpegs]) / 1024:.0f} KiB")

    settings = Settings(model=str(folder))
    model = load_pipeline(settings, settings.model_specs()[0])  # exactly what the server loads (exports ONNX once)
    say(f"model-only: {model!r}, threads {model.backend.describe().get('threads')}")
    patches = [model.preprocess(j, None, 256) for j in jpegs]
    say(f"patches per image: {patches[0].rows}x{patches[0].cols} = {patches[0].num_patches}")
    name = str(folder)
    bodies = [body(j, name) for j in jpegs]

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as data_dir:
        proc = start_server(folder, port, a.server_arg, data_dir)
        try:
            wait_ready(proc, url)
            say(f"server ready on {url} (pid {proc.pid}), extra flags: {a.server_arg or 'none'}")
            # correctness: the served embedding is the library's
            r = httpx.post(url + "/v1/embeddings", content=bodies[0], headers={"content-type": "application/json"},
                           timeout=120).json()
            cos = float(np.dot(r["data"][0]["embedding"], model.embed_images([jpegs[0]])[0]))
            say(f"served vs library embedding of image 0: cosine {cos:.7f}")
            # warm both sides
            inference_rate(model, patches, a.batch, a.batch)
            asyncio.run(http_load(url, bodies, a.clients, 0.0, 3.0))

            def phase(fn):
                """Run fn under Load; rerun (at most --retries times) while other processes took more than
                --max-others cores meanwhile, keeping the quietest attempt."""
                best = None
                for _ in range(1 + a.retries):
                    with Load(proc.pid) as ld:
                        out = fn()
                    if best is None or ld.others < best[1].others:
                        best = (out, ld)
                    if ld.others <= a.max_others:
                        break
                return best

            def http_phase():
                m0 = scrape(url)
                h = asyncio.run(http_load(url, bodies, a.clients, a.warmup, a.duration))
                d = {k: v - m0[k] for k, v in scrape(url).items()}
                h["server_mean_batch"] = d["sigserve_batch_size_sum"] / max(1, d["sigserve_batch_size_count"])
                batched = max(1, d["sigserve_batch_size_sum"])
                h["server_infer_ms_per_image"] = 1000 * d["sigserve_batch_duration_seconds_sum"] / batched
                h["served"] = d["sigserve_batch_size_sum"]
                return h

            rounds = []
            for r_i in range(a.rounds):
                row: dict = {"others": []}
                for b in (1, 4, a.batch):
                    n_img = a.model_images if b > 1 else a.model_images // 3
                    row[f"inf_b{b}"], ld = phase(lambda b=b, n_img=n_img: inference_rate(model, patches, b, n_img))
                    row[f"cpu_inf_b{b}"] = ld.self_cpu / n_img
                    row["others"].append(ld.others)
                    say(f"round {r_i + 1}: inference-only b{b}: {row[f'inf_b{b}']:.2f} img/s, "
                        f"{1000 * row[f'cpu_inf_b{b}']:.0f} CPU-ms/img   [{ld}]")
                row["pipeline"], ld = phase(lambda: pipeline_rate(model, jpegs, a.model_images, a.batch))
                row["cpu_pipeline"] = ld.self_cpu / a.model_images
                row["others"].append(ld.others)
                say(f"round {r_i + 1}: pipeline embed_images b{a.batch}: {row['pipeline']:.2f} img/s, "
                    f"{1000 * row['cpu_pipeline']:.0f} CPU-ms/img   [{ld}]")
                h, ld = phase(http_phase)
                h["server_cpu_ms_per_image"] = 1000 * ld.server_cpu / max(1, h["served"])
                h["client_cpu_ms_per_image"] = 1000 * ld.self_cpu / max(1, h["served"])
                row["http"] = h
                row["others"].append(ld.others)
                say(f"round {r_i + 1}: HTTP {a.clients} clients: {h['images_per_s']:.2f} img/s ({h['completed']} in "
                    f"{h['window_s']:.1f} s, {h['bursts']} bursts), p50 {h['p50_ms']:.0f} ms, p95 {h['p95_ms']:.0f} ms, "
                    f"errors {h['errors']}; "
                    f"server: mean batch {h['server_mean_batch']:.2f}, inference {h['server_infer_ms_per_image']:.0f} "
                    f"ms/img; CPU-ms/img: server {h['server_cpu_ms_per_image']:.0f}, "
                    f"client {h['client_cpu_ms_per_image']:.0f}   [{ld}]")
                rounds.append(row)

            # idle latency, interleaved: HTTP, pipeline, inference-only (same image)
            lat = {"http": [], "pipeline": [], "inference": []}
            hdr = {"content-type": "application/json"}
            with Load(proc.pid) as ld, httpx.Client(base_url=url, timeout=120) as c:
                c.post("/v1/embeddings", content=bodies[1], headers=hdr)
                for _ in range(a.latency_n):
                    t = time.perf_counter()
                    assert c.post("/v1/embeddings", content=bodies[1], headers=hdr).status_code == 200
                    lat["http"].append(time.perf_counter() - t)
                    t = time.perf_counter()
                    model.embed_images([jpegs[1]], batch_size=1)
                    lat["pipeline"].append(time.perf_counter() - t)
                    t = time.perf_counter()
                    model.encode_patches([patches[1]])
                    lat["inference"].append(time.perf_counter() - t)
            lat_ms = {k: 1000 * statistics.median(v) for k, v in lat.items()}
            say(f"idle latency (median of {a.latency_n}): HTTP {lat_ms['http']:.0f} ms, pipeline {lat_ms['pipeline']:.0f} ms, "
                f"inference-only {lat_ms['inference']:.0f} ms   [{ld}]")
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()

    # summary: per round ratios (same round = same machine state), then the median over rounds
    say()
    say(f"| round | inference-only best b (img/s) | pipeline b{a.batch} | HTTP {a.clients} clients | HTTP / inference-only "
        f"| HTTP / pipeline | p50 / p95 ms | server batch, ms/img | CPU-ms/img inf b{a.batch} / pipeline / server "
        f"| others' CPU (cores, max of phases) |")
    say("|---|---|---|---|---|---|---|---|---|---|")
    ratios, ratios_pipe = [], []
    for i, row in enumerate(rounds):
        best = max(row[f"inf_b{b}"] for b in (1, 4, a.batch))
        h = row["http"]
        ratios.append(h["images_per_s"] / best)
        ratios_pipe.append(h["images_per_s"] / row["pipeline"])
        say(f"| {i + 1} | {best:.2f} (b1 {row['inf_b1']:.2f}, b4 {row['inf_b4']:.2f}, b{a.batch} {row[f'inf_b{a.batch}']:.2f}) "
            f"| {row['pipeline']:.2f} | {h['images_per_s']:.2f} | **{ratios[-1]:.1%}** | {ratios_pipe[-1]:.1%} "
            f"| {h['p50_ms']:.0f} / {h['p95_ms']:.0f} | {h['server_mean_batch']:.1f}, {h['server_infer_ms_per_image']:.0f} "
            f"| {1000 * row[f'cpu_inf_b{a.batch}']:.0f} / {1000 * row['cpu_pipeline']:.0f} / {h['server_cpu_ms_per_image']:.0f} "
            f"| {max(row['others']):.2f} |")
    say()
    cpu_ratio = [row[f"cpu_inf_b{a.batch}"] * 1000 / row["http"]["server_cpu_ms_per_image"] for row in rounds]
    say(f"CPU efficiency: inference-only b{a.batch} CPU per image / server CPU per image: median "
        f"{statistics.median(cpu_ratio):.1%} (what the throughput ratio would be on a machine of our own)")
    say(f"throughput: HTTP / inference-only (goal >= 85%): median {statistics.median(ratios):.1%} "
        f"(rounds {', '.join(f'{r:.1%}' for r in ratios)}); HTTP / pipeline: median {statistics.median(ratios_pipe):.1%}")
    say(f"idle latency: HTTP {lat_ms['http']:.0f} ms = {lat_ms['http'] / lat_ms['inference']:.2f}x inference-only "
        f"({lat_ms['inference']:.0f} ms, goal <= 1.2x), {lat_ms['http'] / lat_ms['pipeline']:.2f}x pipeline "
        f"({lat_ms['pipeline']:.0f} ms)")
    say(f"# end loadavg {' '.join(f'{x:.2f}' for x in os.getloadavg())}")

    Path(a.log).parent.mkdir(parents=True, exist_ok=True)
    with open(a.log, "a") as f:
        f.write("\n".join(log_lines) + "\n\n")
    if a.json:
        Path(a.json).write_text(json.dumps({"rounds": rounds, "latency_ms": lat_ms}, indent=2))


if __name__ == "__main__":
    main()
