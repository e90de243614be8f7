"""Finding a checkpoint and putting its tensors into the model without copying them.

A checkpoint is a folder in the Hugging Face hub layout: config.json, model.safetensors (or a sharded
index), tokenizer.json (SigLIP 2) or spiece.model (SigLIP), preprocessor_config.json. It comes from a
local folder, the HF cache, or a hub download. Tensors are memory-mapped copy-on-write: the file's
pages are the model's weights, read only where used (most of the 256000-row token embedding is never
touched) and never held twice.
"""

from __future__ import annotations

import hashlib
import json
import math
import mmap
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from sigserve.config import ImageConfig, ModelConfig
from sigserve.errors import ModelLoadError
from sigserve.model import MAPHead, Siglip2
from sigserve.paths import cache_dir

HUB_FILES = ["config.json", "model.safetensors", "model.safetensors.index.json", "tokenizer.json", "spiece.model",
             "preprocessor_config.json", "tokenizer_config.json", "special_tokens_map.json"]
SAFETENSORS_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64,
                      "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
                      "U8": torch.uint8, "BOOL": torch.bool}
DTYPE_NAMES = {v: k for k, v in SAFETENSORS_DTYPES.items()}
IGNORED_KEYS = ("position_ids",)  # non-persistent buffers that some exporters still write


@dataclass
class Checkpoint:
    """A resolved checkpoint folder and where it came from."""

    path: Path
    source: str  # "local", "hf-cache", "hub" or "dummy"
    model_id: str
    config: ModelConfig = field(init=False)
    image: ImageConfig = field(init=False)  # preprocessor_config.json: the image rules
    _fingerprint: str | None = field(init=False, default=None, repr=False)

    def __post_init__(self):
        self.config = ModelConfig.from_file(self.path / "config.json")
        self.image = ImageConfig.from_file(self.path / "preprocessor_config.json", self.config)

    def fingerprint(self) -> str:
        """Names the weights by their content: the same for every copy of the same files (replicas that
        each downloaded the model agree, so they can share caches and collections), and different as
        soon as one tensor changes. Derived caches (ONNX exports, compiled packages) are keyed by it."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            for f in weight_files(self.path):
                h.update(f"{f.name}:{content_digest(f)}\n".encode())
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint


def resolve(model: str | os.PathLike, revision: str | None = None, cache_dir: str | None = None) -> Checkpoint:
    """A local folder if `model` is one; else a hub id, taken from the HF cache or downloaded once."""
    path = Path(model).expanduser()
    if path.is_dir():
        _require(path, "config.json")
        return Checkpoint(path.resolve(), "local", str(model))
    if path.exists() or str(model).startswith((".", "/")):
        raise ModelLoadError(f"{model} is not a checkpoint folder (expected config.json, model.safetensors, "
                             "tokenizer.json or spiece.model)")
    return _from_hub(str(model), revision, cache_dir)


def _from_hub(model_id: str, revision: str | None, cache_dir: str | None) -> Checkpoint:
    from huggingface_hub import snapshot_download

    def snapshot(local_only: bool) -> Path:
        return Path(snapshot_download(model_id, revision=revision, cache_dir=cache_dir, allow_patterns=HUB_FILES,
                                      local_files_only=local_only))

    try:
        return Checkpoint(snapshot(local_only=True), "hf-cache", model_id)
    except Exception:  # not cached (or cache incomplete): fall through to a download
        pass
    try:
        return Checkpoint(snapshot(local_only=False), "hub", model_id)
    except Exception as exc:
        raise ModelLoadError(
            f"cannot fetch {model_id!r} from the Hugging Face hub and it is not in the local cache "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). "
            f"If this machine is offline, download the model elsewhere and pass its folder instead, "
            f"e.g. `sigserve.load('/models/siglip2-base-patch16-naflex')` or `--model /models/siglip2-base-patch16-naflex`; "
            f"or use a dummy load (`dummy=True`, `--load-format dummy`) for tests and benchmarks."
        ) from exc


def content_digest(path: Path) -> str:
    """SHA-256 of a file's bytes. A file in the HF cache is a link to a blob named by that digest (read
    for free); otherwise the file is hashed once (about a second per GB) and the result remembered
    under the cache folder, keyed by the file's path, size and modification time."""
    target = path.resolve()
    if path.is_symlink() and re.fullmatch(r"[0-9a-f]{64}", target.name):
        return target.name
    st = target.stat()
    memo = cache_dir("digests", hashlib.sha256(f"{target}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:32])
    if memo.is_file():
        return memo.read_text().strip()
    with open(target, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        memo.write_text(digest)
    except OSError:  # a read-only cache only costs the hash again next time
        pass
    return digest


def _require(folder: Path, name: str) -> None:
    if not (folder / name).is_file():
        raise ModelLoadError(f"{folder} has no {name}")


# ---------------------------------------------------------------------------------------------
# safetensors, memory-mapped


def read_header(path: Path) -> tuple[dict, int]:
    """The safetensors JSON header and the byte offset where tensor data starts."""
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ModelLoadError(f"{path} is not a safetensors file (too short)")
        (n,) = struct.unpack("<Q", raw)
        try:
            header = json.loads(f.read(n))
        except (ValueError, UnicodeDecodeError) as exc:
            raise ModelLoadError(f"{path} has a corrupt safetensors header") from exc
    header.pop("__metadata__", None)
    return header, 8 + n


def mmap_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of one file as a view into a private (copy-on-write) mapping of it."""
    header, start = read_header(path)
    with open(path, "rb") as f:
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    tensors = {}
    for name, meta in header.items():
        dtype = SAFETENSORS_DTYPES.get(meta["dtype"])
        if dtype is None:
            raise ModelLoadError(f"{path.name}: tensor {name} has unsupported dtype {meta['dtype']}")
        begin, end = meta["data_offsets"]
        count = math.prod(meta["shape"])
        if end - begin != count * dtype.itemsize or start + end > len(mm):
            raise ModelLoadError(f"{path.name}: tensor {name} is truncated or its header is wrong")
        t = torch.frombuffer(mm, dtype=dtype, count=count, offset=start + begin) if count else torch.empty(0, dtype=dtype)
        tensors[name] = t.view(meta["shape"])
    return tensors


def weight_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [folder / s for s in shards]
    _require(folder, "model.safetensors")
    return [folder / "model.safetensors"]


def mapped_tensors(ckpt: Checkpoint) -> dict[str, torch.Tensor]:
    """Every tensor of the checkpoint (all shards), memory-mapped."""
    tensors: dict[str, torch.Tensor] = {}
    for f in weight_files(ckpt.path):
        tensors.update(mmap_safetensors(f))
    return tensors


TOKEN_TABLE = "text_model.embeddings.token_embedding.weight"
PRECISION_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2, "int8": 4}  # int8: quantized graphs, fp32 tables: fp32 bounds it


def resident_estimate(ckpt: Checkpoint, precision: str = "fp32") -> int:
    """Bytes a loaded model will hold resident once both towers ran: every tensor at the served
    precision, except a token table kept in its stored dtype, which stays memory-mapped and is read a
    few rows at a time (converted, it is materialised whole). An estimate, from the files' headers."""
    size = PRECISION_BYTES.get(precision, 4)
    total = 0
    for f in weight_files(ckpt.path):
        header, _ = read_header(f)
        for name, meta in header.items():
            stored = SAFETENSORS_DTYPES.get(meta["dtype"], torch.float32).itemsize
            if name == TOKEN_TABLE and stored == size:
                continue
            total += math.prod(meta["shape"]) * size
    return total


def build_model(ckpt: Checkpoint, dtype: torch.dtype = torch.float32) -> Siglip2:
    """Build the torch model on the meta device and assign the mapped tensors to it (no copy, no init)."""
    tensors = mapped_tensors(ckpt)
    with torch.device("meta"):
        model = Siglip2(ckpt.config)
    state = {k: v for k, v in tensors.items() if not k.endswith(IGNORED_KEYS)}
    check_state(model, state)
    state = {k: v if v.dtype == dtype else v.to(dtype) for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval().requires_grad_(False)


HEAD_PREFIX = "vision_model.head."


def build_head(ckpt: Checkpoint) -> MAPHead:
    """Only the vision tower's pooling head, fp32 on the CPU, on its memory-mapped tensors: for region
    embeddings (MAPHead.per_patch) beside a backend that holds no torch model (onnx, aoti)."""
    state = {k.removeprefix(HEAD_PREFIX): v.float() for k, v in mapped_tensors(ckpt).items() if k.startswith(HEAD_PREFIX)}
    with torch.device("meta"):
        head = MAPHead(ckpt.config.vision)
    check_state(head, state)
    head.load_state_dict(state, strict=True, assign=True)
    return head.eval().requires_grad_(False)


def check_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    misshaped = [f"{k}: checkpoint {tuple(state[k].shape)}, model {expected[k]}"
                 for k in sorted(set(expected) & set(state)) if tuple(state[k].shape) != expected[k]]
    problems = []
    if missing:
        problems.append("missing tensors: " + ", ".join(missing))
    if unexpected:
        problems.append("unexpected tensors: " + ", ".join(unexpected))
    if misshaped:
        problems.append("mis-shaped tensors: " + "; ".join(misshaped))
    if problems:
        raise ModelLoadError("checkpoint does not match the architecture in its config.json: " + " | ".join(problems))
