"""The reference backend: our own torch model (model.py) on memory-mapped weights.

The vision forward is driven from here rather than through VisionTransformer.forward, for two
serving-only savings that leave the arithmetic unchanged: resized position embeddings are cached per
(rows, cols) grid (on the model's device, in its dtype), and a batch without padding runs attention with
no mask at all (SDPA then picks its fastest kernel: flash attention on CUDA).

Pixels arrive as uint8 (images.pack) and are normalised here through images.LUT: on the host for the
CPU, and on CUDA by a gather from a device-resident copy of LUT (in the model's dtype), after the uint8
batch crossed PCIe: 4x fewer bytes than float32 (a plain copy: measured faster than our page-locked
staging, see TRANSFERS). The values are bit-identical to normalising on the host. Float input is taken as already normalised."""

from __future__ import annotations

import threading

import numpy as np
import torch

from sigserve.images import LUT, normalize
from sigserve.backends.base import PositionCache
from sigserve.weights import Checkpoint, load_model

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# How a host uint8 batch reaches CUDA. "pageable" (a plain copy) is the default: on an H200 it beat "staged"
# end to end by 5-8% at batch 8-128 (bench/results/gpu2.log), the driver's own staging being faster than ours.
TRANSFERS = ("pageable", "staged")


class StagedUploader:
    """Host arrays -> one CUDA device through a reused page-locked buffer, in chunks, so that the host
    copy of chunk k+1 into the buffer overlaps the DMA of chunk k. Not the default: measured slower than
    a plain pageable copy (1.22 vs 1.00 ms for 12.6 MB on an H200, bench/results/gpu2.log).
    Thread-safe: a lock covers the buffer, and an event recorded after the last DMA keeps the next
    caller from overwriting it early."""

    CHUNK = 1 << 21  # bytes per DMA

    def __init__(self, device: torch.device):
        self.device = device
        self._buf: torch.Tensor | None = None
        self._view: np.ndarray | None = None
        self._done: torch.cuda.Event | None = None
        self._lock = threading.Lock()

    def __call__(self, a: np.ndarray) -> torch.Tensor:
        """A uint8 array -> the same values on the device (the DMAs are queued on the current stream)."""
        a = np.ascontiguousarray(a, dtype=np.uint8)
        flat = a.reshape(-1)
        n = flat.size
        out = torch.empty(n, dtype=torch.uint8, device=self.device)
        with self._lock:
            if self._done is not None:
                self._done.synchronize()
            if self._buf is None or self._buf.numel() < n:
                self._buf = self._view = None
                self._buf = torch.empty(n + n // 4, dtype=torch.uint8, pin_memory=True)
                self._view = self._buf.numpy()
            for s in range(0, n, self.CHUNK):
                e = min(n, s + self.CHUNK)
                self._view[s:e] = flat[s:e]
                out[s:e].copy_(self._buf[s:e], non_blocking=True)
            self._done = torch.cuda.Event()
            self._done.record()
        return out.view(a.shape)


class TorchBackend:
    name = "torch"

    def __init__(self, checkpoint: Checkpoint, precision: str = "fp32", device: str = "cpu",
                 transfer: str = "pageable", compile: bool = False):
        """`transfer`: how a uint8 batch reaches a CUDA device ("pageable" or "staged"; ignored on CPU).
        `compile=True` (opt-in): torch.compile the vision encoder; the first calls per new batch shape
        compile (about 10 s each on an H200), and it measured no faster there (docs/benchmarks.md)."""
        if transfer not in TRANSFERS:
            raise ValueError(f"transfer must be one of {TRANSFERS}, not {transfer!r}")
        self.precision = precision
        self.device = torch.device(device)
        self.dtype = DTYPES[precision]
        self.model = load_model(checkpoint, self.dtype).to(self.device)
        self._positions = PositionCache(self.model.vision_model.embeddings.position_embedding.weight)
        self.logit_scale = float(self.model.logit_scale.float().item())
        self.logit_bias = float(self.model.logit_bias.float().item())
        self.cuda = self.device.type == "cuda"
        self.transfer = transfer if self.cuda else "host"
        self._lut = torch.from_numpy(LUT.copy()).to(self.device, self.dtype)  # exact LUT, then cast: as cast after
        self._upload = StagedUploader(self.device) if self.transfer == "staged" else None
        self.compiled = bool(compile)
        if compile:
            v = self.model.vision_model
            v.encoder = torch.compile(v.encoder)

    def _batch_positions(self, spatial_shapes: np.ndarray, N: int) -> torch.Tensor:
        shapes = np.asarray(spatial_shapes).tolist()
        rows, cols = shapes[0]
        if all(s == shapes[0] for s in shapes) and rows * cols == N:
            return self._positions.grid(int(rows), int(cols))  # (N, D), broadcast over the batch
        return self._positions.batch(spatial_shapes, N)

    def pixels(self, pixel_values) -> torch.Tensor:
        """(B, N, P) uint8 pixel values (numpy, or a tensor on any device) -> normalised, in the model's
        dtype, on its device. Floating-point input is taken as already normalised."""
        if isinstance(pixel_values, torch.Tensor):
            if pixel_values.dtype == torch.uint8:
                return self._gather(pixel_values.to(self.device, non_blocking=True))
            return pixel_values.to(self.device, self.dtype, non_blocking=True)
        pixel_values = np.asarray(pixel_values)
        if not self.cuda or pixel_values.dtype != np.uint8:
            return torch.from_numpy(normalize(pixel_values)).to(self.device, self.dtype)
        if self._upload is not None:
            x = self._upload(pixel_values)
        else:
            x = torch.from_numpy(np.ascontiguousarray(pixel_values)).to(self.device)
        return self._gather(x)

    def _gather(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 on the device -> LUT values in the model's dtype (int32 indices: index_select takes them as is)."""
        return self._lut.index_select(0, x.reshape(-1).int()).view(x.shape)

    @torch.inference_mode()
    def encode_images(self, pixel_values, attention_mask, spatial_shapes, with_features=False):
        v = self.model.vision_model
        B, N, _ = pixel_values.shape
        x = v.embeddings.patch_embedding(self.pixels(pixel_values)) + self._batch_positions(spatial_shapes, N)
        padded = not bool(attention_mask.all())
        key_mask = torch.as_tensor(attention_mask).to(self.device).bool()[:, None, None, :] if padded else None
        x = v.post_layernorm(v.encoder(x, key_mask))
        pooled = v.head(x, key_mask)
        return _numpy(pooled), (_numpy(x) if with_features else None)

    @torch.inference_mode()
    def encode_texts(self, input_ids):
        return _numpy(self.model.text_model(torch.from_numpy(input_ids).to(self.device)))

    def describe(self) -> dict:
        return {"backend": self.name, "precision": self.precision, "device": str(self.device),
                "threads": torch.get_num_threads(), "transfer": self.transfer, "compiled": self.compiled}


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.float().cpu().numpy()
