import os, time, sys, torch, numpy as np, warnings
from pathlib import Path
os.environ.setdefault("SIGSERVE_CACHE", "/tmp/perf4/cache")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "src"))
from sigserve.weights import resolve, load_model
from sigserve.model import resize_position_grid
from sigserve.cli.bench import TransformersVision, square_batch, cosine_distance
from sigserve.backends import create_backend
from sigserve.images import normalize
from sigserve.backends.onnx import VisionGraph as G  # (pv, mask, pos) -> (pooled, hidden), as exported
FOLDER = Path(os.environ.get("SIGSERVE_BENCH_CKPT", "/tmp/sigbench/full"))  # tests/checkpoints.py full, seed 0
ck = resolve(FOLDER)

class ModRunner:
    """wraps a (pv, mask, pos)->(pooled, hidden) torch callable with cached positions"""
    def __init__(self, fn, table, chunk=None):
        self.fn, self.table, self.cache, self.chunk = fn, table, {}, chunk
    def pos(self, shapes, N):
        out = torch.zeros(len(shapes), N, self.table.shape[1])
        for b, (r, c) in enumerate(shapes.tolist()):
            k = (r, c)
            if k not in self.cache: self.cache[k] = resize_position_grid(self.table, r, c)
            out[b, : r * c] = self.cache[k]
        return out
    def encode_images(self, pv, mask, shapes, with_features=False):
        B = pv.shape[0]; ch = self.chunk or B
        res = []
        with torch.no_grad():
            for i in range(0, B, ch):
                m = torch.from_numpy(np.ascontiguousarray(mask[i:i+ch], np.int32))
                res.append(self.fn(torch.from_numpy(normalize(pv[i:i+ch])), m, self.pos(shapes[i:i+ch], pv.shape[1]))[0])
        return torch.cat(res).numpy(), None

def interleaved(runners, args, rounds):
    times = {k: [] for k in runners}
    outs = {k: r.encode_images(*args)[0] for k, r in runners.items()}
    for _ in range(rounds):
        for k, r in runners.items():
            t0 = time.perf_counter(); r.encode_images(*args); times[k].append(time.perf_counter() - t0)
    return times, outs

def report(runners, batches, rounds=3, N=256, ref="torch"):
    print(f"load {os.getloadavg()[0]:.2f}", flush=True)
    for B in batches:
        args = square_batch(B, N)
        times, outs = interleaved(runners, args, rounds)
        base = min(times["transformers"]) if "transformers" in times else None
        print(f"-- batch {B}, {N} patches")
        for k, ts in times.items():
            t = min(ts)
            print(f"  {k:<18} {B/t:6.2f} img/s  x{(base/t if base else 0):.2f} vs tf   1-cos {cosine_distance(outs[k], outs[ref]):.1e}  maxabs {np.abs(outs[k]-outs[ref]).max():.1e}", flush=True)
    print(f"load {os.getloadavg()[0]:.2f}", flush=True)
