import os, sys; sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import *
import torch._inductor.config as ic
ic.freezing = True
mode = sys.argv[1] if len(sys.argv) > 1 else "default"
ic.cpp_wrapper = "cpp" in sys.argv
os.environ["TORCHINDUCTOR_CACHE_DIR"] = "/tmp/perf4/inductor-" + mode
model = load_model(ck).eval(); v = model.vision_model
table = v.embeddings.position_embedding.weight.detach()
g = G(v).eval()
c = torch.compile(g, dynamic=True, mode=None if mode == "default" else mode)
def inp(B, N, pad=0):
    m = torch.ones(B, N, dtype=torch.int32)
    if pad: m[0, N - pad:] = 0
    return torch.randn(B, N, 768), m, torch.randn(B, N, 768)
with torch.no_grad():
    for B, N, pad in [(2, 256, 10), (4, 256, 0), (1, 256, 0), (3, 100, 7), (8, 1024, 50)]:
        x = inp(B, N, pad)
        t0 = time.time(); out = c(*x); t1 = time.time(); out = c(*x); t2 = time.time()
        ref = g(*x)
        print(f"B{B} N{N}: first {t1-t0:.1f}s, second {t2-t1:.2f}s, maxabs pooled {float((out[0]-ref[0]).abs().max()):.1e} hidden {float((out[1]-ref[1]).abs().max()):.1e}", flush=True)
