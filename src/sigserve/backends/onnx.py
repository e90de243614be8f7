"""ONNX Runtime backend: graphs exported from our own torch model (model.py), cached on disk.

What lives outside the graphs, on purpose:
- the vision position embeddings: the learned 16x16 table resized to each image's (rows, cols) grid is
  computed here (base.PositionCache, once per grid) and fed as an input, so one graph with
  dynamic batch and sequence length serves every aspect ratio (a fixed-resolution model gets its
  table as is, through the same input: one graph shape for both architectures);
- the text token embedding (256000 x 768, 786 MB): looked up in the memory-mapped checkpoint, so the
  few rows used are all that is ever read, and the text graph stays at the encoder's 340 MB.
Pixels arrive as uint8 (images.pack) and are normalised on the host through the checkpoint's LUT,
chunk by chunk, before ORT sees them (the graph takes float32, exactly as before).
The padding mask is an explicit input turned into an additive bias inside the graph (ORT's attention
fusion is deliberately not applied: it drops an unwired mask, see docs/benchmarks.md).

Graphs are cached under paths.cache_dir()/onnx/<checkpoint fingerprint>/ and rebuilt when the weights change
(the fingerprint is a digest of the weight files' contents) or when EXPORT_VERSION changes.
"""

from __future__ import annotations

import logging
import threading
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sigserve.artifacts import ensure, run_in_child
from sigserve.backends.base import PositionCache, encode_in_chunks
from sigserve.images import normalize
from sigserve.memory import release_freed_heap
from sigserve.model import position_grid
from sigserve.paths import cache_dir
from sigserve.weights import Checkpoint, build_model, mapped_tensors

EXPORT_VERSION = "v4"  # bump when the exported graphs change shape or meaning
OPSET = 17  # LayerNormalization as one op
# Images per call, measured on the project's 2-core CPUs (bench/chunk_study.py; openvino's bf16 too).
CHUNK = {"fp32": 4, "bf16": 4, "int8": 8}


class TextPool(nn.Module):
    """TextTransformer.pool as a module's forward, for the exporter: embedded tokens (B, T, D) -> (B, D)."""

    def __init__(self, text):
        super().__init__()
        self.text = text

    def forward(self, embeddings):
        return self.text.pool(embeddings)


def export_dir(checkpoint: Checkpoint) -> Path:
    return cache_dir("onnx", checkpoint.fingerprint())


def graph_path(checkpoint: Checkpoint, tower: str, precision: str) -> Path:
    return export_dir(checkpoint) / f"{tower}.{EXPORT_VERSION}.{precision}.onnx"


def ensure_graph(checkpoint: Checkpoint, tower: str, precision: str) -> Path:
    """The cached graph for (tower, precision), exported (and quantized) first if missing. Both steps
    run in a child interpreter: their transient copies (peak 1.8 GB for the full model) never stay here."""
    dest = graph_path(checkpoint, tower, precision)
    step = "export" if precision == "fp32" else "quantize"

    def build(tmp: Path) -> None:
        source = "" if precision == "fp32" else str(ensure_graph(checkpoint, tower, "fp32"))
        run_in_child("sigserve.backends.onnx:_child", step, str(checkpoint.path), checkpoint.source,
                     checkpoint.model_id, tower, source, str(tmp), dest.with_suffix(".data").name,
                     what=f"ONNX {step} of the {tower} tower")

    return ensure(dest, build, "the ONNX export")


def prepare(checkpoint: Checkpoint, precision: str) -> list[Path]:
    return [ensure_graph(checkpoint, tower, precision) for tower in ("vision", "text")]


def _child(step: str, path: str, source: str, model_id: str, tower: str, src: str, dest: str, data: str) -> None:
    checkpoint = Checkpoint(Path(path), source, model_id)
    if step == "export":
        _export_here(checkpoint, tower, Path(dest))
    else:
        cfg = checkpoint.config.vision if tower == "vision" else checkpoint.config.text
        _quantize(Path(src), Path(dest), cfg)
    _weights_beside(Path(dest), data)


def _weights_beside(graph: Path, data_name: str) -> None:
    """Move the weights out of the graph file into `data_name` beside it (ONNX external data): ORT then
    reads them straight into its tensors instead of parsing a 370 MB protobuf first, which cut the
    peak RSS of building the text session from 634 to 395 MB. The data file gets its final name at
    once; the graph's atomic rename (artifacts.ensure) is the commit point."""
    import onnx

    model = onnx.load(str(graph))
    (graph.parent / data_name).unlink(missing_ok=True)  # onnx appends to an existing data file
    onnx.save_model(model, str(graph), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=data_name, size_threshold=1024)


def _export_here(checkpoint: Checkpoint, tower: str, dest: Path) -> None:
    model = build_model(checkpoint)  # memory-mapped: no copy until the exporter serialises the weights
    graph: nn.Module
    if tower == "vision":
        cfg = checkpoint.config.vision
        B, N, D = 2, (7 if cfg.naflex else cfg.num_patches), cfg.hidden_size  # fixed: its one grid
        graph = model.vision_model  # its forward, exactly as the torch backend calls it
        args: tuple = (torch.randn(B, N, cfg.patch_dim), torch.randn(B, N, D), torch.ones(B, N, dtype=torch.int32))
        names, outputs = ["pixel_values", "positions", "attention_mask"], ["pooled", "hidden"]
        seq = {0: "batch", 1: "patches"} if cfg.naflex else {0: "batch"}  # fixed resolution: one sequence length
        axes = {"pixel_values": seq, "attention_mask": seq, "positions": seq, "pooled": {0: "batch"}, "hidden": seq}
    else:
        graph = TextPool(model.text_model)
        args = (torch.randn(2, checkpoint.config.text.max_position_embeddings, checkpoint.config.text.hidden_size),)
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


class OnnxBackend:
    name = "onnx"

    def __init__(self, checkpoint: Checkpoint, precision: str = "fp32", device: str = "cpu", threads: int | None = None):
        self.checkpoint, self.precision = checkpoint, precision
        self.threads = threads or torch.get_num_threads()
        tensors = mapped_tensors(checkpoint)
        self._positions = PositionCache(tensors["vision_model.embeddings.position_embedding.weight"].float(),
                                        on_grid=position_grid(checkpoint.config.vision))
        self.lut = checkpoint.image.lut()  # (3, 256): uint8 -> normalised, per channel
        self._tokens = tensors["text_model.embeddings.token_embedding.weight"].numpy()  # mmap'd, rows read on use
        self._text_pos = tensors["text_model.embeddings.position_embedding.weight"].numpy()
        self.logit_scale = float(tensors["logit_scale"].float().item())
        self.logit_bias = float(tensors["logit_bias"].float().item())
        self._vision = self._load("vision")
        self._text = None  # built on first use: an image-only service never holds the text graph
        self._text_lock = threading.Lock()

    def _load(self, tower: str):
        """The runner of one tower's graph: anything with ORT's run(output names, feeds) -> arrays."""
        return self._session(ensure_graph(self.checkpoint, tower, self.precision))

    def _session(self, path: Path):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        release_freed_heap()
        return session

    def encode_images(self, pixel_values, attention_mask, spatial_shapes, with_features=False):
        outputs = ["pooled", "hidden"] if with_features else ["pooled"]

        def run(pixels, mask, shapes, n):
            # uint8 -> float32 through the checkpoint's LUT here, per chunk (only its own rows are ever float32).
            feeds = {"pixel_values": normalize(pixels, self.lut), "attention_mask": mask,
                     "positions": self._positions.batch(shapes, n).numpy()}
            result = self._vision.run(outputs, feeds)
            return result[0], (result[1] if with_features else None)

        return encode_in_chunks(pixel_values, attention_mask, spatial_shapes, CHUNK[self.precision],
                                with_features, run)

    def encode_texts(self, input_ids):
        with self._text_lock:
            if self._text is None:
                self._text = self._load("text")
        T = input_ids.shape[1]
        embeddings = (self._tokens[input_ids] + self._text_pos[:T]).astype(np.float32, copy=False)
        return self._text.run(["pooled"], {"embeddings": embeddings})[0]

    def describe(self) -> dict:
        import onnxruntime as ort

        return {"backend": self.name, "precision": self.precision, "device": "cpu", "threads": self.threads,
                "onnxruntime": ort.__version__, "export_dir": str(export_dir(self.checkpoint))}
