"""ONNX Runtime backend: graphs exported from our own torch model (model.py), cached on disk.

What lives outside the graphs, on purpose:
- the vision position embeddings: the learned 16x16 table resized to each image's (rows, cols) grid is
  computed here (base.PositionCache, once per grid) and fed as an input, so one graph with
  dynamic batch and sequence length serves every aspect ratio;
- the text token embedding (256000 x 768, 786 MB): looked up in the memory-mapped checkpoint, so the
  few rows used are all that is ever read, and the text graph stays at the encoder's 340 MB.
Pixels arrive as uint8 (images.pack) and are normalised on the host through images.LUT, chunk by
chunk, before ORT sees them (the graph takes float32, exactly as before).
The padding mask is an explicit input turned into an additive bias inside the graph (ORT's attention
fusion is deliberately not applied: it drops an unwired mask, see docs/benchmarks.md).

Graphs are cached under cache_root()/onnx/<checkpoint fingerprint>/ and rebuilt when the weights change
(the fingerprint covers the weight files' names, sizes and mtimes) or when EXPORT_VERSION changes.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sigserve.dummy import cache_root
from sigserve.errors import InvalidArgumentError, ModelLoadError
from sigserve.images import normalize
from sigserve.backends.base import PositionCache
from sigserve.weights import Checkpoint, load_model, mmap_safetensors, weight_files

EXPORT_VERSION = "v3"  # bump when the exported graphs change shape or meaning
OPSET = 17  # LayerNormalization as one op
PRECISIONS = ("fp32", "int8")
CHUNK = {"fp32": 4, "int8": 8}  # images per ORT call, measured on the project's 2-core CPUs


class VisionGraph(nn.Module):
    """pixel_values (B, N, 768), attention_mask (B, N) int32, positions (B, N, D) -> pooled, hidden."""

    def __init__(self, vision):
        super().__init__()
        self.vision = vision

    def forward(self, pixel_values, attention_mask, positions):
        v = self.vision
        # Additive key bias (B, 1, 1, N): 0 for valid patches, float32 min for padding (softmax weight 0).
        bias = (1.0 - attention_mask.to(torch.float32))[:, None, None, :] * torch.finfo(torch.float32).min
        x = v.embeddings.patch_embedding(pixel_values) + positions
        x = v.post_layernorm(v.encoder(x, bias))
        return v.head(x, bias), x


class TextGraph(nn.Module):
    """Embedded tokens (B, T, D) (token + position embeddings, added outside) -> pooled (B, D)."""

    def __init__(self, text):
        super().__init__()
        self.text = text

    def forward(self, embeddings):
        t = self.text
        x = t.encoder(embeddings)
        return t.head(t.final_layer_norm(x[:, -1]))


def export_dir(checkpoint: Checkpoint) -> Path:
    return cache_root() / "onnx" / checkpoint.fingerprint()


def graph_path(checkpoint: Checkpoint, tower: str, precision: str) -> Path:
    return export_dir(checkpoint) / f"{tower}.{EXPORT_VERSION}.{precision}.onnx"


_export_lock = threading.RLock()  # re-entered: int8 first needs the fp32 graph


def ensure_graph(checkpoint: Checkpoint, tower: str, precision: str) -> Path:
    """The cached graph for (tower, precision), exported (and quantized) first if missing."""
    path = graph_path(checkpoint, tower, precision)
    with _export_lock:
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            path.with_suffix(".data").unlink(missing_ok=True)  # a leftover of an interrupted build
            try:
                if precision == "fp32":
                    _export(checkpoint, tower, tmp)
                else:
                    _isolated("quantize", checkpoint, tower, str(ensure_graph(checkpoint, tower, "fp32")), str(tmp))
                tmp.replace(path)  # the commit point: the weights file beside it is complete by now
            except OSError as exc:
                raise ModelLoadError(f"cannot write the ONNX export to {path.parent}: {exc} (set SIGSERVE_CACHE)") from exc
            finally:
                tmp.unlink(missing_ok=True)
    return path


def _export(checkpoint: Checkpoint, tower: str, dest: Path) -> None:
    _isolated("export", checkpoint, tower, str(dest))


def _isolated(step: str, checkpoint: Checkpoint, tower: str, *paths: str) -> None:
    """Run an export or quantization step in a fresh interpreter: the exporter's and quantizer's
    transient copies (peak 1.8 GB for the full model) never stay in the serving process's heap. A plain
    subprocess, not multiprocessing: spawn would re-run the caller's unguarded __main__."""
    args = json.dumps([step, str(checkpoint.path), checkpoint.source, checkpoint.model_id, tower, *paths])
    code = "import sys, json; from sigserve.backends.onnx import _child; _child(*json.loads(sys.argv[1]))"
    done = subprocess.run([sys.executable, "-c", code, args], capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise ModelLoadError(f"ONNX {step} of the {tower} tower failed: {tail}")


def _child(step: str, path: str, source: str, model_id: str, tower: str, *paths: str) -> None:
    checkpoint = Checkpoint(Path(path), source, model_id)
    dest = Path(paths[-1])
    if step == "export":
        _export_here(checkpoint, tower, dest)
    else:
        cfg = checkpoint.config.vision if tower == "vision" else checkpoint.config.text
        _quantize(Path(paths[0]), dest, cfg)
    _weights_beside(dest, dest.with_suffix(".data").name)


def _weights_beside(graph: Path, data_name: str) -> None:
    """Move the weights out of the graph file into `data_name` beside it (ONNX external data): ORT then
    reads them straight into its tensors instead of parsing a 370 MB protobuf first, which cut the
    peak RSS of building the text session from 634 to 395 MB."""
    import onnx

    model = onnx.load(str(graph))
    (graph.parent / data_name).unlink(missing_ok=True)  # onnx appends to an existing data file
    onnx.save_model(model, str(graph), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=data_name, size_threshold=1024)


def _export_here(checkpoint: Checkpoint, tower: str, dest: Path) -> None:
    model = load_model(checkpoint)  # memory-mapped: no copy until the exporter serialises the weights
    D = checkpoint.config.vision.hidden_size if tower == "vision" else checkpoint.config.text.hidden_size
    if tower == "vision":
        graph, B, N = VisionGraph(model.vision_model), 2, 7
        P = checkpoint.config.vision.patch_dim
        args = (torch.randn(B, N, P), torch.ones(B, N, dtype=torch.int32), torch.randn(B, N, D))
        names, outputs = ["pixel_values", "attention_mask", "positions"], ["pooled", "hidden"]
        axes = {"pixel_values": {0: "batch", 1: "patches"}, "attention_mask": {0: "batch", 1: "patches"},
                "positions": {0: "batch", 1: "patches"}, "pooled": {0: "batch"}, "hidden": {0: "batch", 1: "patches"}}
    else:
        graph = TextGraph(model.text_model)
        args = (torch.randn(2, checkpoint.config.text.max_position_embeddings, D),)
        names, outputs = ["embeddings"], ["pooled"]
        axes = {"embeddings": {0: "batch", 1: "tokens"}, "pooled": {0: "batch"}}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        # The TorchScript exporter: no onnxscript dependency, and it keeps Linear as MatMul+Add that
        # ORT's optimizer and quantizer handle well.
        torch.onnx.export(graph.eval(), args, str(dest), dynamo=False, input_names=names, output_names=outputs,
                          dynamic_axes=axes, opset_version=OPSET, do_constant_folding=True)


def _quantize(src: Path, dest: Path, cfg) -> None:
    """Dynamic int8: weights per output channel, activations quantized per call (no calibration, so no
    sequence length is favoured). Signed int8 weights x uint8 activations is the VNNI kernel's format
    (unsigned weights measured 1.6x slower). Before quantizing, ORT's transformer optimizer fuses
    residual+LayerNorm and the tanh GELU (+8% for int8, where the fp32 element-wise work weighs more);
    its attention fusion stays off, since the fused node would drop our padding mask."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    options = FusionOptions("bert")
    options.enable_attention = False
    fused = dest.with_suffix(".fused.tmp")
    root, level = logging.getLogger(), logging.getLogger().level
    root.setLevel(max(level, logging.ERROR))  # the quantizer logs advice to pre-process on every call
    try:
        optimize_model(str(src), model_type="bert", num_heads=cfg.num_attention_heads, hidden_size=cfg.hidden_size,
                       optimization_options=options, opt_level=0).save_model_to_file(str(fused))
        quantize_dynamic(str(fused), str(dest), weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=["MatMul"], extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    finally:
        root.setLevel(level)
        fused.unlink(missing_ok=True)


def _release_freed_heap() -> None:
    """Building a session parses the whole model and copies its weights; glibc keeps the freed parse
    buffers. Trimming returns them: measured 1.43 -> 1.09 GB RSS with both full fp32 towers loaded."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim, or no way to
        pass


class OnnxBackend:
    name = "onnx"

    def __init__(self, checkpoint: Checkpoint, precision: str = "fp32", device: str = "cpu", threads: int | None = None):
        if precision not in PRECISIONS:
            raise InvalidArgumentError(f"the onnx backend offers precision {' or '.join(PRECISIONS)}, not {precision!r}", "precision")
        if device != "cpu":
            raise InvalidArgumentError(f"the onnx backend runs on the CPU only, not {device!r}", "device")
        try:
            import onnxruntime  # noqa: F401
        except ImportError as exc:
            raise InvalidArgumentError("the onnx backend needs onnxruntime (a sigserve dependency): pip install onnxruntime", "backend") from exc
        self.checkpoint, self.precision = checkpoint, precision
        self.threads = threads or torch.get_num_threads()
        tensors: dict[str, torch.Tensor] = {}
        for f in weight_files(checkpoint.path):
            tensors.update(mmap_safetensors(f))
        self._positions = PositionCache(tensors["vision_model.embeddings.position_embedding.weight"].float())
        self._tokens = tensors["text_model.embeddings.token_embedding.weight"].numpy()  # mmap'd, rows read on use
        self._text_pos = tensors["text_model.embeddings.position_embedding.weight"].numpy()
        self.logit_scale = float(tensors["logit_scale"].float().item())
        self.logit_bias = float(tensors["logit_bias"].float().item())
        self.dim = self._positions.table.shape[1]
        self._vision = self._session(ensure_graph(checkpoint, "vision", precision))
        self._text = None  # built on first use: an image-only service never holds the text graph
        self._text_lock = threading.Lock()

    def _session(self, path: Path):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        _release_freed_heap()
        return session

    def encode_images(self, pixel_values, attention_mask, spatial_shapes, with_features=False):
        # Large batches run as chunks, each cut to its own longest image: on 2 cores ORT measured best at
        # 2-4 images per call in fp32 (+18% over 16) and about 8 in int8 (docs/benchmarks.md).
        B, N, _ = pixel_values.shape
        chunk = CHUNK[self.precision]
        pooled = np.empty((B, self.dim), np.float32)
        hidden = np.zeros((B, N, self.dim), np.float32) if with_features else None
        outputs = ["pooled", "hidden"] if with_features else ["pooled"]
        for i in range(0, B, chunk):
            mask = np.ascontiguousarray(attention_mask[i: i + chunk], np.int32)
            n = int(mask.sum(1).max())
            # uint8 -> float32 through images.LUT here, per chunk (only its own rows are ever float32).
            feeds = {"pixel_values": normalize(np.ascontiguousarray(pixel_values[i: i + chunk, :n])),
                     "attention_mask": np.ascontiguousarray(mask[:, :n]),
                     "positions": self._positions.batch(spatial_shapes[i: i + chunk], n).numpy()}
            result = self._vision.run(outputs, feeds)
            pooled[i: i + chunk] = result[0]
            if with_features:
                hidden[i: i + chunk, :n] = result[1]
        return pooled, hidden

    def encode_texts(self, input_ids):
        with self._text_lock:
            if self._text is None:
                self._text = self._session(ensure_graph(self.checkpoint, "text", self.precision))
        T = input_ids.shape[1]
        embeddings = (self._tokens[input_ids] + self._text_pos[:T]).astype(np.float32, copy=False)
        return self._text.run(["pooled"], {"embeddings": embeddings})[0]

    def describe(self) -> dict:
        import onnxruntime as ort

        return {"backend": self.name, "precision": self.precision, "device": "cpu", "threads": self.threads,
                "onnxruntime": ort.__version__, "export_dir": str(export_dir(self.checkpoint))}
