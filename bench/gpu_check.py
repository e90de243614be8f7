"""GPU check: transformers (SDPA) vs sigserve's torch backend on CUDA, vision tower, half precision.

Builds a full-size random checkpoint with tests/support/checkpoints.py, then per batch size times, interleaved,
each side fed what it is fed in practice:

  transformers-bf16          its processor's output: float32 pixel_values on the host (normalised there,
                             outside the timing, as transformers' image processor does before the model),
                             copied with a plain `.to(device)` (pageable memory), bf16 model, pooled -> numpy
  transformers-bf16-pinned   the same with that float32 input already page-locked (pinning not timed) and
                             copied non_blocking: transformers' best case, for reference
  sigserve-bf16 / -fp16      what serving does since issue 4: images.pack()'s uint8 pixel values on the
                             host -> TorchBackend.encode_images: uint8 copied to the GPU (plain pageable
                             copy, the default), normalised there by a LUT gather, pooled -> numpy

twice: "e2e" = host arrays in (float32 for transformers, uint8 for sigserve), numpy out, every copy
included; "device" = inputs already on the GPU (float32 for transformers, uint8 for sigserve, whose LUT
gather is then timed; its mask stays on the host, where serving has it). Neither side's decode/resize
is timed (identical work on the host). Parity: 1 -
cosine of each pooled output to transformers fp32 on the GPU; our fp32 vs transformers fp32 max abs
diff; the GPU LUT gather vs the host normalisation, bit for bit. A transfer probe times the copies
alone. (A page-locked staging buffer and torch.compile were measured no faster here: see
bench/results/2026-11-27-gpu-h200.log.)

    python -m bench.gpu_check                      # full size, batches 8,32,64,128 (needs CUDA)
    python -m bench.gpu_check --tiny --device cpu  # logic check on a CPU (fp32, tiny checkpoint)
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from sigserve.backends.torch import DTYPES, TorchBackend
from sigserve.cli.bench import square_batch
from sigserve.images import normalize
from sigserve.scoring import max_cosine_distance
from sigserve.weights import resolve
from tests.support.checkpoints import make_checkpoint

T0 = time.time()


def log(*args):
    print(f"[{time.time() - T0:6.1f}s]", *args, flush=True)


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


class HF:
    """transformers' vision tower; takes normalised float32 pixel_values (numpy or a tensor)."""

    def __init__(self, folder, dtype, device, pinned=False):
        from transformers import Siglip2VisionModel
        from transformers.utils import logging

        logging.set_verbosity_error()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.model = Siglip2VisionModel.from_pretrained(folder, attn_implementation="sdpa", dtype=dtype).to(device).eval()
        self.device, self.dtype, self.pinned = device, dtype, pinned and device.startswith("cuda")

    def prepare(self, host, on_device):
        """The input this runner is timed on: its processor's float32 output, on the host or the GPU."""
        pv, mask, shapes = host
        pv = torch.from_numpy(normalize(pv))  # the image processor's output (not timed)
        mask = torch.from_numpy(mask)
        if on_device:
            return pv.to(self.device), mask.to(self.device), torch.from_numpy(shapes)
        if self.pinned:
            pv, mask = pv.pin_memory(), mask.pin_memory()
        return pv, mask, torch.from_numpy(shapes)

    @torch.inference_mode()
    def encode_images(self, pv, mask, shapes):
        pv = pv.to(self.device, non_blocking=self.pinned).to(self.dtype)
        out = self.model(pixel_values=pv, pixel_attention_mask=mask.to(self.device, non_blocking=self.pinned),
                         spatial_shapes=shapes).pooler_output
        return out.float().cpu().numpy()


class Ours:
    """sigserve's torch backend; takes images.pack()'s uint8 pixel values (numpy or a tensor)."""

    def __init__(self, checkpoint, precision, device):
        self.backend = TorchBackend(checkpoint, precision=precision, device=device)
        self.device = device

    def prepare(self, host, on_device):
        """uint8 pixels on the GPU for "device"; the mask stays on the host, where serving has it (the
        backend reads it there to choose the unpadded path, and copies it only for padded batches)."""
        pv, mask, shapes = host
        if on_device:
            return torch.from_numpy(pv).to(self.device), mask, shapes
        return host

    def encode_images(self, pv, mask, shapes):
        return self.backend.encode_images(pv, mask, shapes)[0]


def bench(runners, inputs, device, iters, rounds):
    """Seconds per batch for each runner: `rounds` interleaved rounds of `iters` calls, best round."""
    for k, r in runners.items():
        for _ in range(3):
            r.encode_images(*inputs[k])
    sync(device)
    best = {k: float("inf") for k in runners}
    for _ in range(rounds):
        for k, r in runners.items():
            sync(device)
            t0 = time.perf_counter()
            for _ in range(iters):
                r.encode_images(*inputs[k])
            sync(device)
            best[k] = min(best[k], (time.perf_counter() - t0) / iters)
    return best


def transfer_probe(device, B, N, iters=10):
    """Milliseconds to move one batch's pixels host -> GPU, alone (best of `iters`)."""
    if not device.startswith("cuda"):
        return {}
    u8 = square_batch(B, N)[0]
    f32 = normalize(u8)
    pinned_f32 = torch.from_numpy(f32).pin_memory()
    ways = {
        "float32 pageable .to()": lambda: torch.from_numpy(f32).to(device),
        "float32 pre-pinned non_blocking": lambda: pinned_f32.to(device, non_blocking=True),
        "uint8 pageable .to() (default)": lambda: torch.from_numpy(u8).to(device),
        "uint8 pin_memory()+non_blocking": lambda: torch.from_numpy(u8).pin_memory().to(device, non_blocking=True),
    }
    out = {}
    for name, fn in ways.items():
        fn()
        sync(device)
        times = []
        for _ in range(iters):
            t0 = time.perf_counter()
            fn()
            sync(device)
            times.append(time.perf_counter() - t0)
        out[name] = 1000 * min(times)
        mb = (f32 if "float32" in name else u8).nbytes / 1e6
        log(f"transfer B={B:<3} {name:<34} {out[name]:7.2f} ms  ({mb:.1f} MB)")
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="full", choices=["tiny", "full"])
    ap.add_argument("--tiny", action="store_true", help="same as --size tiny")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtypes", default=None, help="our backend's precisions to time (default: bf16,fp16 on "
                    "CUDA, fp32 on a CPU)")
    ap.add_argument("--batches", default="8,32,64,128")
    ap.add_argument("--patches", type=int, default=256)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--folder", default=None, help="checkpoint folder (built there if missing)")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    size = "tiny" if a.tiny else a.size
    device = a.device
    cuda = device.startswith("cuda")
    meta = {"torch": torch.__version__, "device": device}
    if cuda:
        meta.update(gpu=torch.cuda.get_device_name(), flash_sdp=torch.backends.cuda.flash_sdp_enabled(),
                    bf16_reduced_precision_reduction=torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction,
                    tf32=torch.backends.cuda.matmul.allow_tf32)
    try:
        import transformers

        meta["transformers"] = transformers.__version__
    except ImportError:
        pass
    log(meta)
    folder = Path(a.folder or tempfile.mkdtemp(prefix="gpu-ckpt-"))
    if not (folder / "model.safetensors").is_file():
        make_checkpoint(folder, size, seed=0)
    log("checkpoint", folder, f"{(folder / 'model.safetensors').stat().st_size / 1e9:.2f} GB")
    checkpoint = resolve(folder)
    half = "bf16" if cuda else "fp32"  # bf16 on CPU is slow here; the CPU run checks logic
    dtypes = (a.dtypes or ("bf16,fp16" if cuda else "fp32")).split(",")
    base = f"transformers-{half}"
    runners = {base: HF(folder, DTYPES[half], device), f"{base}-pinned": HF(folder, DTYPES[half], device, pinned=True)}
    for p in dtypes:
        runners[f"sigserve-{p}"] = Ours(checkpoint, p, device)
    reference = HF(folder, torch.float32, device)
    ours_fp32 = Ours(checkpoint, "fp32", device)
    log("models loaded")
    results = {"meta": meta, "rows": [], "transfer_ms": {}, "exact": {}}
    check_exactness(runners, ours_fp32, reference, a, device, results)
    results["rows"] += run(runners, reference, a, device, base)
    if cuda:
        for B in map(int, a.batches.split(",")):
            results["transfer_ms"][B] = transfer_probe(device, B, a.patches)
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=2))
    log("done")


def check_exactness(runners, ours_fp32, reference, a, device, results):
    """Bit-exact LUT normalisation on the device (every precision), and our fp32 vs transformers fp32."""
    host = square_batch(4, a.patches, seed=1)
    every = np.arange(256, dtype=np.uint8)
    want = torch.from_numpy(normalize(host[0]))
    for k, r in list(runners.items()) + [("sigserve-fp32 (parity)", ours_fp32)]:
        if not isinstance(r, Ours):
            continue
        b = r.backend
        for name, given in (("host uint8", host[0]), ("device uint8", torch.from_numpy(host[0]).to(device))):
            got = b.pixels(given).cpu()
            every_value = torch.equal(b.pixels(every).cpu(), torch.from_numpy(normalize(every)).to(b.dtype))
            ok = torch.equal(got, want.to(b.dtype)) and every_value
            results["exact"][f"{k} LUT {name}"] = ok
            log(f"exact LUT normalisation {k:<24} {name:<13} {'bit-identical' if ok else 'DIFFERENT'}")
    ref = reference.encode_images(*reference.prepare(host, False))
    diff = float(np.abs(ours_fp32.encode_images(*host) - ref).max())
    results["exact"]["fp32 max abs diff vs transformers fp32"] = diff
    log(f"sigserve-fp32 vs transformers-fp32 on {device}: max abs diff {diff:.1e} (pooled, 4 images)")


def run(runners, reference, a, device, base):
    results = []
    for B in map(int, a.batches.split(",")):
        host = square_batch(B, a.patches)
        ref = reference.encode_images(*reference.prepare(host, False))
        dist = {k: max_cosine_distance(r.encode_images(*r.prepare(host, False)), ref) for k, r in runners.items()}
        for mode in ("e2e", "device"):
            inputs = {k: r.prepare(host, mode == "device") for k, r in runners.items()}
            times = bench(runners, inputs, device, a.iters, a.rounds)
            for k, t in times.items():
                row = dict(batch=B, mode=mode, config=k, images_per_s=B / t, ms_per_batch=1000 * t,
                           vs_transformers=times[base] / t, one_minus_cos_to_fp32=dist[k])
                results.append(row)
                log(f"B={B:<3} {mode:<6} {k:<28} {B / t:9.1f} img/s {1000 * t:8.2f} ms  x{times[base] / t:.2f}  "
                    f"1-cos {dist[k]:.1e}")
            del inputs
    return results


if __name__ == "__main__":
    main()
