import os, sys; sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import *
from torch.export import Dim
pkg = os.path.join(os.environ["SIGSERVE_CACHE"], "vision_dyn.pt2")
model = load_model(ck).eval(); v = model.vision_model
table = v.embeddings.position_embedding.weight.detach()
g = G(v).eval()
if "build" in sys.argv:
    B, N = Dim("batch", min=1, max=256), Dim("patches", min=2, max=4096)
    ex = (torch.randn(2, 37, 768), torch.tensor([[1]*37, [1]*32+[0]*5], dtype=torch.int32), torch.randn(2, 37, 768))
    t0 = time.time()
    with torch.no_grad():
        ep = torch.export.export(g, ex, dynamic_shapes=({0: B, 1: N}, {0: B, 1: N}, {0: B, 1: N}))
        t1 = time.time()
        torch._inductor.aoti_compile_and_package(ep, package_path=pkg, inductor_configs={"freezing": True})
    print(f"export {t1-t0:.1f}s, aoti compile {time.time()-t1:.1f}s, size {os.path.getsize(pkg)/1e6:.0f} MB", flush=True)
    sys.exit()
t0 = time.time()
m = torch._inductor.aoti_load_package(pkg)
print(f"load {time.time()-t0:.1f}s", flush=True)
def inp(B, N, pad=0):
    mk = torch.ones(B, N, dtype=torch.int32)
    if pad: mk[0, N - pad:] = 0
    return torch.randn(B, N, 768), mk, torch.randn(B, N, 768)
with torch.no_grad():
    for B, N, pad in [(1, 256, 0), (3, 100, 7), (2, 1024, 50)]:
        x = inp(B, N, pad); out = m(*x); ref = g(*x)
        print(f"B{B} N{N} pad{pad}: maxabs pooled {float((out[0]-ref[0]).abs().max()):.1e} hidden {float((out[1]-ref[1]).abs().max()):.1e}", flush=True)
runners = {"transformers": TransformersVision(str(FOLDER)), "onnx": create_backend("onnx", ck), "torch": create_backend("torch", ck),
           "aoti_dyn": ModRunner(m, table)}
report(runners, [int(b) for b in sys.argv[1].split(",")], rounds=int(sys.argv[2]))
