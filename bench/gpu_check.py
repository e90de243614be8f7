"""GPU check: transformers (SDPA) vs sigserve's torch backend on CUDA, vision tower, half precision.

Builds a full-size random checkpoint with tests/checkpoints.py, then per batch size times, interleaved:
  transformers bf16 (SDPA)   sigserve torch bf16   sigserve torch fp16
twice: "e2e" = numpy in, numpy out (host->device copy included, as serving does it), and "device" =
inputs already on the GPU. Parity: 1 - cosine of each pooled output to transformers fp32 on the GPU.

    python bench/gpu_check.py                      # full size, batches 32,64 (needs CUDA)
    python bench/gpu_check.py --size tiny --device cpu --dtypes fp32   # logic check on a CPU
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

from checkpoints import make_checkpoint  # noqa: E402

from sigserve.backends.torch import DTYPES, TorchBackend  # noqa: E402
from sigserve.cli.bench import square_batch  # noqa: E402
from sigserve.weights import resolve  # noqa: E402

T0 = time.time()


def log(*args):
    print(f"[{time.time() - T0:6.1f}s]", *args, flush=True)


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


class HF:
    def __init__(self, folder, dtype, device):
        from transformers import Siglip2VisionModel
        from transformers.utils import logging

        logging.set_verbosity_error()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.model = Siglip2VisionModel.from_pretrained(folder, attn_implementation="sdpa", dtype=dtype).to(device).eval()
        self.device, self.dtype = device, dtype

    @torch.inference_mode()
    def encode_images(self, pv, mask, shapes):
        pv = torch.as_tensor(pv).to(self.device, self.dtype)
        out = self.model(pixel_values=pv, pixel_attention_mask=torch.as_tensor(mask).to(self.device),
                         spatial_shapes=torch.as_tensor(shapes)).pooler_output
        return out.float().cpu().numpy()


class Ours:
    def __init__(self, checkpoint, precision, device):
        self.backend = TorchBackend(checkpoint, precision=precision, device=device)

    def encode_images(self, pv, mask, shapes):
        return self.backend.encode_images(pv, mask, shapes)[0]


def cos_dist(a, b):
    a, b = a / np.linalg.norm(a, axis=1, keepdims=True), b / np.linalg.norm(b, axis=1, keepdims=True)
    return float(np.max(1 - (a * b).sum(1)))


def bench(runners, args, device, iters, rounds):
    """Seconds per batch for each runner: `rounds` interleaved rounds of `iters` calls, best round."""
    for r in runners.values():
        for _ in range(3):
            r.encode_images(*args)
    sync(device)
    best = {k: float("inf") for k in runners}
    for _ in range(rounds):
        for k, r in runners.items():
            sync(device)
            t0 = time.perf_counter()
            for _ in range(iters):
                r.encode_images(*args)
            sync(device)
            best[k] = min(best[k], (time.perf_counter() - t0) / iters)
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="full", choices=["tiny", "full"])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtypes", default="bf16,fp16", help="our backend's precisions to time")
    ap.add_argument("--batches", default="32,64")
    ap.add_argument("--patches", type=int, default=256)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--folder", default=None, help="checkpoint folder (built there if missing)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--compile-if-before", type=float, default=0, help="also time our bf16 encoder under "
                    "torch.compile if no more than this many seconds have passed (0: never)")
    a = ap.parse_args()
    device = a.device
    if device.startswith("cuda"):
        log(torch.__version__, torch.cuda.get_device_name(), "SDPA backends: flash", torch.backends.cuda.flash_sdp_enabled())
    folder = Path(a.folder or tempfile.mkdtemp(prefix="gpu-ckpt-"))
    if not (folder / "model.safetensors").is_file():
        make_checkpoint(folder, a.size, seed=0)
    log("checkpoint", folder, f"{(folder / 'model.safetensors').stat().st_size / 1e9:.2f} GB")
    checkpoint = resolve(folder)
    half = "bf16" if device.startswith("cuda") else "fp32"  # bf16 on CPU is slow here; the CPU run checks logic
    runners = {f"transformers-{half}": HF(folder, DTYPES[half], device)}
    runners.update({f"sigserve-{p}": Ours(checkpoint, p, device) for p in a.dtypes.split(",")})
    reference = HF(folder, torch.float32, device)
    log("models loaded")
    results = run(runners, reference, a, device, half)
    if a.compile_if_before and time.time() - T0 < a.compile_if_before:
        ours = Ours(checkpoint, "bf16" if half == "bf16" else "fp32", device)
        v = ours.backend.model.vision_model
        v.encoder = torch.compile(v.encoder, dynamic=False)  # fuses LayerNorm/GELU/residual kernels
        compiled = {f"transformers-{half}": runners[f"transformers-{half}"], "sigserve-compiled": ours}
        log("timing torch.compile (first call per shape compiles)")
        results += run(compiled, reference, a, device, half)
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=2))
    log("done")


def run(runners, reference, a, device, half):
    results = []
    for B in map(int, a.batches.split(",")):
        host = square_batch(B, a.patches)
        ref = reference.encode_images(*host)
        dist = {k: cos_dist(r.encode_images(*host), ref) for k, r in runners.items()}
        on_device = (torch.from_numpy(host[0]).to(device), torch.from_numpy(host[1]).to(device), host[2])
        for mode, args in (("e2e", host), ("device", on_device)):
            times = bench(runners, args, device, a.iters, a.rounds)
            base = times[f"transformers-{half}"]
            for k, t in times.items():
                row = dict(batch=B, mode=mode, config=k, images_per_s=B / t, ms_per_batch=1000 * t,
                           vs_transformers=base / t, one_minus_cos_to_fp32=dist[k])
                results.append(row)
                log(f"B={B:<3} {mode:<6} {k:<20} {B / t:9.1f} img/s {1000 * t:8.2f} ms  x{base / t:.2f}  1-cos {dist[k]:.1e}")
    return results


if __name__ == "__main__":
    main()
