"""OpenVINO backend (CPU): the onnx backend's exported graphs, converted once and run by OpenVINO.

fp32  the graphs of onnx.ensure_graph (model.py's forwards, exported once) converted to OpenVINO IR:
      exact (max |diff| to the torch reference about 1e-6), dynamic in batch and patch count. The
      inference precision is pinned to f32: on CPUs with bf16 instructions (avx512_bf16, AMX)
      OpenVINO would otherwise compute in bf16 by default.
int8  (opt-in) static post-training quantization by NNCF: int8 weights per output channel, int8
      activations with ranges calibrated once on a mix of sequence lengths (64 to 1024 patches) of
      photos shipped with the package (calibration.py), so that no length is favoured. Three settings
      made the difference between 1-cos ~1e-2 and ~2e-4 on our measurements (docs/benchmarks.md):
      asymmetric activations (preset MIXED: GELU outputs are one-sided), no SmoothQuant, and the
      patch embedding and the pooling head left in fp32 (they are 2% of the work). Where the CPU has
      bf16 instructions, the layers left in floating point (attention, norms, those two) run in bf16:
      measured +17% at 1024 patches, +2% at 256, +7% on text, the same cosine to exact.
bf16  (opt-in, CPUs with bf16 instructions: AVX512_BF16 or AMX) the fp32 IR, run by the CPU plugin in
      bf16: about 1.9x fp32 with cosine 0.9999+ to exact; no artifact of its own. Refused, naming the
      instructions, on a CPU without them (OpenVINO would quietly run fp32).

Everything around the graphs is the onnx backend's (this class extends it): position embeddings per
grid fed in, the token table looked up in the mapped checkpoint, chunked batches, the text tower
loaded on first use. IR files are cached under paths.cache_dir()/openvino/<checkpoint fingerprint>/,
converted in a child process (the converter holds the whole model in memory for a moment).
"""

from __future__ import annotations

import functools
import importlib.util
import threading
from pathlib import Path

from sigserve.artifacts import ensure, run_in_child
from sigserve.backends.onnx import EXPORT_VERSION, OnnxBackend, ensure_graph
from sigserve.errors import ModelLoadError
from sigserve.paths import cache_dir
from sigserve.weights import Checkpoint

BUILD_VERSION = "v1"  # bump when the conversion or the compression changes
KEEP_FP32 = [r".*patch_embedding.*", r".*head.*"]  # node name patterns that int8 leaves in fp32
IR_OF = {"fp32": "fp32", "bf16": "fp32", "int8": "int8"}  # precision -> the IR it runs (bf16: fp32's)


def ir_dir(checkpoint: Checkpoint) -> Path:
    return cache_dir("openvino", checkpoint.fingerprint())


def ir_path(checkpoint: Checkpoint, tower: str, precision: str) -> Path:
    """The IR's .xml (its weights: the .bin beside it). Named after the ONNX export it comes from."""
    return ir_dir(checkpoint) / f"{tower}.{EXPORT_VERSION}-{BUILD_VERSION}.{IR_OF[precision]}.xml"


def ensure_ir(checkpoint: Checkpoint, tower: str, precision: str) -> Path:
    """The cached IR for (tower, precision), converted (and compressed) first from the fp32 ONNX graph."""
    dest, precision = ir_path(checkpoint, tower, precision), IR_OF[precision]

    def build(tmp: Path) -> None:
        if precision == "int8" and importlib.util.find_spec("nncf") is None:
            raise ModelLoadError("building the openvino int8 model needs nncf: pip install 'sigserve[int8]' "
                                 "(or build it where nncf is installed: sigserve prepare)")
        source = ensure_graph(checkpoint, tower, "fp32")
        run_in_child("sigserve.backends.openvino:_convert", str(checkpoint.path), checkpoint.source,
                     checkpoint.model_id, tower, str(source), precision, str(tmp), dest.with_suffix(".bin").name,
                     what=f"OpenVINO {'quantization' if precision == 'int8' else 'conversion'} of the {tower} tower")

    return ensure(dest, build, "the OpenVINO model")


def prepare(checkpoint: Checkpoint, precision: str) -> list[Path]:
    return [ensure_ir(checkpoint, tower, precision) for tower in ("vision", "text")]


def _convert(path: str, source: str, model_id: str, tower: str, graph: str, precision: str, dest: str,
             weights_name: str) -> None:
    """In a child interpreter: ONNX -> IR at dest (.xml), its weights moved to their final name beside it
    at once (read_model finds them by the .xml's name; the .xml's atomic rename is the commit point)."""
    import openvino as ov

    model = ov.Core().read_model(graph)
    if precision == "int8":
        model = _quantize(model, Checkpoint(Path(path), source, model_id), tower)
    ov.save_model(model, dest, compress_to_fp16=False)  # the default would halve the fp32 weights
    Path(dest).with_suffix(".bin").replace(Path(dest).with_name(weights_name))


def _quantize(model, checkpoint: Checkpoint, tower: str):
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, AdvancedSmoothQuantParameters

    from sigserve.backends.calibration import samples

    data = samples(checkpoint, tower)
    no_smooth_quant = AdvancedQuantizationParameters(smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=-1))
    return nncf.quantize(model, nncf.Dataset(data), subset_size=len(data), model_type=nncf.ModelType.TRANSFORMER,
                         preset=nncf.QuantizationPreset.MIXED, advanced_parameters=no_smooth_quant,
                         ignored_scope=nncf.IgnoredScope(patterns=KEEP_FP32, validate=False))


@functools.cache
def cpu_has_bf16() -> bool:
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def inference_precision(precision: str) -> str:
    """The CPU plugin's floating-point precision for our `precision`: f32 for exact fp32; bf16 for bf16
    (ModelLoadError on a CPU without bf16 instructions) and for int8's unquantized layers where it can."""
    if precision == "fp32":
        return "f32"
    if cpu_has_bf16():
        return "bf16"
    if precision == "bf16":
        raise ModelLoadError("precision bf16 on the openvino backend needs a CPU with bf16 instructions "
                             "(AVX512_BF16 or AMX); this one has none: use fp32 (exact) or int8")
    return "f32"


def compile_config(threads: int, precision: str = "fp32") -> dict[str, str]:
    """The CPU plugin's settings: one stream of `threads` threads (the engine calls from one worker)."""
    return {"INFERENCE_PRECISION_HINT": inference_precision(precision), "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": "1", "INFERENCE_NUM_THREADS": str(threads)}


class CompiledTower:
    """One compiled IR behind ORT's `run(output names, feeds)`, so OnnxBackend's code drives it. An
    infer request runs one call at a time: the lock serialises callers from several threads."""

    def __init__(self, path: Path, config: dict[str, str]):
        import openvino as ov

        core = ov.Core()
        self.compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.lock = threading.Lock()

    def run(self, outputs: list[str], feeds: dict) -> list:
        with self.lock:
            # share_inputs: no copy of the feeds (they outlive this synchronous call); outputs are copied.
            result = self.request.infer(feeds, share_inputs=True)
            return [result[self.compiled.output(name)] for name in outputs]


class OpenVinoBackend(OnnxBackend):
    name = "openvino"

    def _load(self, tower: str) -> CompiledTower:
        return CompiledTower(ensure_ir(self.checkpoint, tower, self.precision),
                             compile_config(self.threads, self.precision))

    def describe(self) -> dict:
        import openvino as ov

        return {"backend": self.name, "precision": self.precision, "device": "cpu", "threads": self.threads,
                "inference_precision": inference_precision(self.precision), "openvino": ov.__version__,
                "ir_dir": str(ir_dir(self.checkpoint))}
