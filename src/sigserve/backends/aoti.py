"""AOTInductor backend (opt-in, CPU, exact fp32): the vision encoder compiled ahead of time, cached on disk.

model.py's vision forward (mask always given, positions fed in, as the onnx export has them) is
exported once with torch.export, dynamic in batch and patch count, and compiled by AOTInductor with
freezing (weights folded in as constants) into one `.pt2` package: one compile serves every batch
size and aspect ratio. First use of a checkpoint compiles in a child
process (about 60 s for the full model on 2 cores, 380 MB on disk); later starts load the package in
about 2 s (compiling needs a C++ compiler, g++). Same distance to the torch reference as onnx fp32
(1-cos about 1e-7).

A fixed-resolution model compiles the same way with one sequence length (its grid), dynamic in batch only.
The text tower runs our torch model (memory-mapped weights), as the torch backend does.
Measured in docs/benchmarks.md ("Exact fp32 on CPU: compilers"); not the default there.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import torch

from sigserve.artifacts import ensure, run_in_child
from sigserve.backends.base import PositionCache, encode_in_chunks
from sigserve.defaults import MAX_PATCHES
from sigserve.images import normalize
from sigserve.model import position_grid
from sigserve.paths import cache_dir
from sigserve.weights import Checkpoint, build_model

BUILD_VERSION = "v2"  # bump when the compiled graph changes shape or meaning
CHUNK = 8  # images per call, each chunk cut to its own longest image


def package_path(checkpoint: Checkpoint) -> Path:
    tag = torch.__version__.split("+")[0]  # a package is tied to the torch that compiled it
    return cache_dir("aoti", checkpoint.fingerprint()) / f"vision.{BUILD_VERSION}.torch{tag}.fp32.pt2"


def ensure_package(checkpoint: Checkpoint) -> Path:
    def build(tmp: Path) -> None:  # tmp keeps the .pt2 suffix, which the packager wants
        run_in_child("sigserve.backends.aoti:_child", str(checkpoint.path), checkpoint.source,
                     checkpoint.model_id, str(tmp), what="AOTInductor compile of the vision tower")

    return ensure(package_path(checkpoint), build, "the compiled package")


def prepare(checkpoint: Checkpoint, precision: str) -> list[Path]:
    return [ensure_package(checkpoint)]  # the text tower runs the checkpoint's own tensors


def _child(path: str, source: str, model_id: str, dest: str) -> None:
    """Export model.py's vision forward (mask always given) and compile it, in a fresh interpreter."""
    import torch._inductor
    from torch.export import Dim

    checkpoint = Checkpoint(Path(path), source, model_id)
    cfg = checkpoint.config.vision
    vision = build_model(checkpoint).vision_model
    B = Dim("batch", min=1, max=1024)
    # NaFlex: dynamic in patches too; a fixed resolution has one sequence length, its grid.
    n, shape = (37, {0: B, 1: Dim("patches", min=2, max=MAX_PATCHES)}) if cfg.naflex else (cfg.num_patches, {0: B})
    example = (torch.randn(2, n, cfg.patch_dim), torch.randn(2, n, cfg.hidden_size),
               torch.tensor([[1] * n, [1] * (n - 1) + [0]], dtype=torch.int32))
    with torch.no_grad():
        exported = torch.export.export(vision, example, dynamic_shapes=(shape,) * 3)
        torch._inductor.aoti_compile_and_package(exported, package_path=dest, inductor_configs={"freezing": True})


class AotiBackend:
    name = "aoti"

    def __init__(self, checkpoint: Checkpoint, precision: str = "fp32", device: str = "cpu"):
        self.checkpoint, self.precision = checkpoint, precision
        self.model = build_model(checkpoint)  # memory-mapped: the text tower, the position table, the scalars
        self._positions = PositionCache(self.model.vision_model.embeddings.position_embedding.weight,
                                        on_grid=position_grid(checkpoint.config.vision))
        self.lut = checkpoint.image.lut()  # (3, 256): uint8 -> normalised, per channel
        self.logit_scale = float(self.model.logit_scale.float().item())
        self.logit_bias = float(self.model.logit_bias.float().item())
        import torch._inductor

        self._vision = torch._inductor.aoti_load_package(str(ensure_package(checkpoint)))
        self._lock = threading.Lock()  # one call at a time into the compiled runner

    @torch.inference_mode()
    def encode_images(self, pixel_values, attention_mask, spatial_shapes, with_features=False):
        def run(pixels, mask, shapes, n):
            m = max(n, 2)  # the compiled graph takes 2+ patches: a 1-patch batch gets one masked row
            pv = np.zeros((len(mask), m, pixels.shape[2]), np.float32)
            pv[:, :n] = normalize(pixels, self.lut)
            mk = np.zeros((len(mask), m), np.int32)
            mk[:, :n] = mask
            with self._lock:
                p, h = self._vision(torch.from_numpy(pv), self._positions.batch(shapes, m), torch.from_numpy(mk))
            return p.numpy(), (h.numpy() if with_features else None)

        return encode_in_chunks(pixel_values, attention_mask, spatial_shapes, CHUNK, with_features, run)

    @torch.inference_mode()
    def encode_texts(self, input_ids):
        return self.model.text_model(torch.from_numpy(np.asarray(input_ids))).float().numpy()

    def describe(self) -> dict:
        return {"backend": self.name, "precision": self.precision, "device": "cpu", "threads": torch.get_num_threads(),
                "package": str(package_path(self.checkpoint))}
