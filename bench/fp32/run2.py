import os, sys; sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import *
import torch._inductor.config as ic
model = load_model(ck).eval(); v = model.vision_model
table = v.embeddings.position_embedding.weight.detach()
g = G(v).eval()
with torch.no_grad():
    ex = (torch.randn(2, 37, 768), torch.tensor([[1]*37, [1]*32+[0]*5], dtype=torch.int32), torch.randn(2, 37, 768))
    opt = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(g, ex, check_trace=False).eval()))
import collections
print(collections.Counter(n.kind() for n in opt.graph.nodes()).most_common(12))
runners = {"transformers": TransformersVision(str(FOLDER)), "torch": create_backend("torch", ck),
           "onnx": create_backend("onnx", ck), "jit_opt": ModRunner(opt, table)}
if "compile" in sys.argv:
    ic.freezing = True
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = "/tmp/perf4/inductor-default"
    c = torch.compile(G(load_model(ck).eval().vision_model).eval(), dynamic=True)
    t0 = time.time()
    with torch.no_grad(): c(*ex)
    print(f"compile (inductor disk cache warm) {time.time()-t0:.1f}s", flush=True)
    runners["compiled_dyn"] = ModRunner(c, table)
report(runners, [int(b) for b in sys.argv[1].split(",")], rounds=int(sys.argv[2]))
