"""Inference backends: the numeric work behind one small interface (see base.py).

    torch  our model (model.py) on memory-mapped weights: fp32 everywhere, bf16/fp16 on CUDA
    onnx   ONNX Runtime on graphs exported from that model (CPU): fp32, or opt-in dynamic int8
    openvino  OpenVINO on the same exported graphs (CPU default): fp32, or opt-in int8 (NNCF
           post-training static int8 calibrated on a mix of lengths; building it needs the int8 extra),
           or opt-in bf16 on CPUs with bf16 instructions
    aoti   (opt-in) the vision encoder compiled ahead of time by AOTInductor, cached (CPU, exact fp32)
The defaults were chosen by measurement (docs/benchmarks.md).
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import Literal, get_args

from sigserve.backends.base import Backend
from sigserve.errors import InvalidArgumentError

BackendName = Literal["torch", "onnx", "openvino", "aoti"]
BackendChoice = Literal["auto", BackendName]  # what users may ask for: auto picks the measured default
Precision = Literal["fp32", "bf16", "fp16", "int8"]
BACKENDS: tuple[str, ...] = get_args(BackendName)
PRECISIONS: tuple[str, ...] = get_args(Precision)

# backend -> device kind -> precisions it offers
SUPPORTED: dict[str, dict[str, tuple[str, ...]]] = {
    "torch": {"cpu": ("fp32",), "cuda": ("fp32", "bf16", "fp16")},
    "onnx": {"cpu": ("fp32", "int8")},
    "openvino": {"cpu": ("fp32", "bf16", "int8")},
    "aoti": {"cpu": ("fp32",)},
}
# On CPU, the first of these that is installed: exact fp32 measured fastest first (docs/benchmarks.md,
# "Speed, round 2": openvino 1.20x transformers, onnx 1.11x, in one run); torch otherwise, and on CUDA.
CPU_DEFAULTS = ("openvino", "onnx")
# Resident copies of the weights a (backend, precision) holds, for memory estimates: OpenVINO's CPU
# plugin keeps its repacked fp32 weights beside the mapped IR (base model: +1.5 GB, onnx +0.75 GB). Its
# int8 copies are a quarter of the size each, so the fp32 estimate of one copy stays an upper bound.
# bf16 runs the mapped fp32 IR: measured +1.50 GB for the base model, two copies at bf16's 2 bytes.
WEIGHT_COPIES = {("openvino", "fp32"): 2, ("openvino", "bf16"): 2}


# backend -> the package it needs beyond torch, and how to get it (building openvino's int8 model also
# needs nncf: openvino.py says so when it is missing, as serving a built one does not)
PACKAGES = {"onnx": ("onnxruntime", "pip install onnxruntime (a sigserve dependency)"),
            "openvino": ("openvino", "pip install openvino (a sigserve dependency)")}


def _installed(name: str) -> bool:
    return name not in PACKAGES or importlib.util.find_spec(PACKAGES[name][0]) is not None


def default_backend(device: str = "cpu") -> str:
    """The measured best backend for `device` that is installed (torch when none is, and on CUDA)."""
    if device.startswith("cpu"):
        for name in CPU_DEFAULTS:
            if _installed(name):
                return name
    return "torch"


def resolve_backend(name: str | None, device: str = "cpu") -> str:
    """`name`, or for None / "auto" the measured default for `device`."""
    return default_backend(device) if name in (None, "auto") else name


def weight_copies(name: str | None, precision: str = "fp32", device: str = "cpu") -> int:
    """How many resident copies of its weights `name` (None/auto: the default) holds at `precision`."""
    return WEIGHT_COPIES.get((resolve_backend(name, device), precision), 1)


def check_selection(name: str, precision: str, device: str = "cpu") -> None:
    """Raise InvalidArgumentError for an unknown backend, precision, a combination not offered, or a
    backend whose package is not installed. The one place a selection is validated."""
    if name not in SUPPORTED:
        raise InvalidArgumentError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}", "backend")
    if precision not in PRECISIONS:
        raise InvalidArgumentError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}", "precision")
    kind = device.split(":")[0]
    if kind not in SUPPORTED[name]:
        raise InvalidArgumentError(f"backend {name!r} does not run on {device!r}; it runs on {', '.join(SUPPORTED[name])}",
                                   "device")
    offered = SUPPORTED[name][kind]
    if precision not in offered:
        raise InvalidArgumentError(f"backend {name!r} on {kind} offers precision {', '.join(offered)}, not {precision!r}",
                                   "precision")
    if not _installed(name):
        raise InvalidArgumentError(f"the {name} backend needs {PACKAGES[name][0]}: {PACKAGES[name][1]}", "backend")


def prepare(name: str | None, checkpoint, precision: str = "fp32", device: str = "cpu") -> list[Path]:
    """Build every cached artifact that (name, precision) loads (exports, conversions, calibrations,
    compiled packages), without loading them: for images that bake them in. Returns their paths;
    already cached ones are reused as they are."""
    name = resolve_backend(name, device)
    check_selection(name, precision, device)
    if name == "torch":
        return []  # runs the checkpoint's own tensors
    module = importlib.import_module(f"sigserve.backends.{name}")
    return module.prepare(checkpoint, precision)


def create_backend(name: str | None, checkpoint, precision: str = "fp32", device: str = "cpu") -> Backend:
    """Instantiate the backend `name` (None: the measured default for `device`) for a resolved checkpoint."""
    name = resolve_backend(name, device)
    check_selection(name, precision, device)
    if name == "onnx":
        from sigserve.backends.onnx import OnnxBackend

        return OnnxBackend(checkpoint, precision=precision, device=device)
    if name == "openvino":
        from sigserve.backends.openvino import OpenVinoBackend

        return OpenVinoBackend(checkpoint, precision=precision, device=device)
    if name == "aoti":
        from sigserve.backends.aoti import AotiBackend

        return AotiBackend(checkpoint, precision=precision, device=device)
    from sigserve.backends.torch import TorchBackend

    return TorchBackend(checkpoint, precision=precision, device=device)
