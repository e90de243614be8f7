"""AOTInductor backend (opt-in, CPU, exact fp32): the vision encoder compiled ahead of time, cached on disk.

The vision graph (onnx.VisionGraph: our model's arithmetic, mask as an additive bias, positions fed in)
is exported once with torch.export, dynamic in batch and patch count, and compiled by AOTInductor with
freezing (weights folded in as constants) into one `.pt2` package:
one compile serves every batch size and aspect ratio. First use of a checkpoint compiles in a child
process (about 60 s for the full model on 2 cores, 380 MB on disk); later starts load the package in
about 2 s (compiling needs a C++ compiler, g++). Same distance to the torch reference as onnx fp32
(1-cos about 1e-7).

The text tower runs our torch model (memory-mapped weights), as the torch backend does.
Measured in docs/benchmarks.md ("Exact fp32 on CPU: compilers"); not the default there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import torch

from sigserve.dummy import cache_root
from sigserve.errors import InvalidArgumentError, ModelLoadError
from sigserve.backends.base import PositionCache
from sigserve.weights import Checkpoint, load_model

BUILD_VERSION = "v1"  # bump when the compiled graph changes shape or meaning
CHUNK = 8  # images per call, each chunk cut to its own longest image
MAX_PATCHES = 16384  # the dynamic patch dimension's upper bound in the compiled graph

try:
    from sigserve.images import normalize
except ImportError:  # before pixels arrived as uint8: they were already normalised float32
    def normalize(pixel_values):
        return np.asarray(pixel_values, np.float32)


def package_path(checkpoint: Checkpoint) -> Path:
    tag = torch.__version__.split("+")[0]  # a package is tied to the torch that compiled it
    return cache_root() / "aoti" / checkpoint.fingerprint() / f"vision.{BUILD_VERSION}.torch{tag}.fp32.pt2"


_build_lock = threading.Lock()


def ensure_package(checkpoint: Checkpoint) -> Path:
    path = package_path(checkpoint)
    with _build_lock:
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}.pt2")  # the packager wants the suffix
            args = json.dumps([str(checkpoint.path), checkpoint.source, checkpoint.model_id, str(tmp)])
            code = "import sys, json; from sigserve.backends.aoti import _child; _child(*json.loads(sys.argv[1]))"
            try:
                done = subprocess.run([sys.executable, "-c", code, args], capture_output=True, text=True)
                if done.returncode != 0:
                    tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
                    raise ModelLoadError(f"AOTInductor compile of the vision tower failed: {tail}")
                tmp.replace(path)
            except OSError as exc:
                raise ModelLoadError(f"cannot write the compiled package to {path.parent}: {exc} (set SIGSERVE_CACHE)") from exc
            finally:
                tmp.unlink(missing_ok=True)
    return path


def _child(path: str, source: str, model_id: str, dest: str) -> None:
    """Export and compile in a fresh interpreter: the compiler's transient memory never stays in the server."""
    import torch._inductor
    from torch.export import Dim

    from sigserve.backends.onnx import VisionGraph

    checkpoint = Checkpoint(Path(path), source, model_id)
    cfg = checkpoint.config.vision
    graph = VisionGraph(load_model(checkpoint).vision_model).eval()
    B, N = Dim("batch", min=1, max=1024), Dim("patches", min=2, max=MAX_PATCHES)
    example = (torch.randn(2, 37, cfg.patch_dim), torch.tensor([[1] * 37, [1] * 32 + [0] * 5], dtype=torch.int32),
               torch.randn(2, 37, cfg.hidden_size))
    with torch.no_grad():
        exported = torch.export.export(graph, example, dynamic_shapes=({0: B, 1: N},) * 3)
        torch._inductor.aoti_compile_and_package(exported, package_path=dest, inductor_configs={"freezing": True})


class AotiBackend:
    name = "aoti"

    def __init__(self, checkpoint: Checkpoint, precision: str = "fp32", device: str = "cpu"):
        if precision != "fp32":
            raise InvalidArgumentError(f"the aoti backend offers precision fp32, not {precision!r}", "precision")
        if device != "cpu":
            raise InvalidArgumentError(f"the aoti backend runs on the CPU only, not {device!r}", "device")
        self.checkpoint, self.precision = checkpoint, precision
        self.model = load_model(checkpoint)  # memory-mapped: the text tower, the position table, the scalars
        self._positions = PositionCache(self.model.vision_model.embeddings.position_embedding.weight)
        self.dim = self._positions.table.shape[1]
        self.logit_scale = float(self.model.logit_scale.float().item())
        self.logit_bias = float(self.model.logit_bias.float().item())
        import torch._inductor

        self._vision = torch._inductor.aoti_load_package(str(ensure_package(checkpoint)))
        self._lock = threading.Lock()  # one call at a time into the compiled runner

    @torch.inference_mode()
    def encode_images(self, pixel_values, attention_mask, spatial_shapes, with_features=False):
        B, N, _ = pixel_values.shape
        pooled = np.empty((B, self.dim), np.float32)
        hidden = np.zeros((B, N, self.dim), np.float32) if with_features else None
        for i in range(0, B, CHUNK):
            mask = np.ascontiguousarray(attention_mask[i: i + CHUNK], np.int32)
            n = int(mask.sum(1).max())
            m = max(n, 2)  # the compiled graph takes 2+ patches: a 1-patch batch gets one masked row
            pv = np.zeros((len(mask), m, pixel_values.shape[2]), np.float32)
            pv[:, :n] = normalize(np.ascontiguousarray(pixel_values[i: i + CHUNK, :n]))
            mk = np.zeros((len(mask), m), np.int32)
            mk[:, :n] = mask[:, :n]
            with self._lock:
                p, h = self._vision(torch.from_numpy(pv), torch.from_numpy(mk), self._positions.batch(spatial_shapes[i: i + CHUNK], m))
            pooled[i: i + CHUNK] = p.numpy()
            if with_features:
                hidden[i: i + CHUNK, :n] = h[:, :n].numpy()
        return pooled, hidden

    @torch.inference_mode()
    def encode_texts(self, input_ids):
        return self.model.text_model(torch.from_numpy(np.asarray(input_ids))).float().numpy()

    def describe(self) -> dict:
        return {"backend": self.name, "precision": self.precision, "device": "cpu", "threads": torch.get_num_threads(),
                "package": str(package_path(self.checkpoint))}
