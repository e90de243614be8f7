"""Dummy loads: the real architecture with random weights and a stand-in tokenizer, for benchmarks
and load tests on machines that cannot reach the hub.

The random checkpoint is written once to a cache folder in the hub layout and then loaded like any
other, memory-mapped: a dummy load has the same code path and the same memory profile as a real one.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from pathlib import Path

import torch

from sigserve.artifacts import ensure
from sigserve.config import ModelConfig
from sigserve.family import HUB_CHECKPOINTS
from sigserve.model import Siglip2
from sigserve.paths import cache_dir
from sigserve.weights import DTYPE_NAMES, Checkpoint

DUMMY_MARKER = "SIGSERVE_DUMMY"
SPECIAL_TOKENS = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]  # Gemma's ids 0..4


def dummy_checkpoint(model: str, seed: int = 0) -> Checkpoint:
    """A random checkpoint with the architecture and image rules of `model`: a local folder's config.json
    and preprocessor_config.json, a released checkpoint's shapes by hub id (sigserve.family), else the
    SigLIP 2 base NaFlex config (which is what the hub's config.json resolves to). The tokenizer is always
    the stand-in (SigLIP 2's text rules), whatever the model's own."""
    local = Path(model).expanduser()
    known = HUB_CHECKPOINTS.get(str(model), {})
    if (local / "config.json").is_file():
        config = ModelConfig.from_file(local / "config.json")
        pre = local / "preprocessor_config.json"
        preprocessor = json.loads(pre.read_text()) if pre.is_file() else None
    else:
        config = ModelConfig.from_dict(known["config"]) if known else ModelConfig()
        preprocessor = known.get("preprocessor")
    key = hashlib.sha256(json.dumps([config.to_dict(), preprocessor, seed], sort_keys=True).encode()).hexdigest()[:12]
    folder = cache_dir("dummy", key)
    # The marker is written last (atomically): a folder without it is an interrupted build, redone.
    ensure(folder / DUMMY_MARKER, lambda marker: _write(folder, marker, config, preprocessor, seed), "the dummy checkpoint")
    return Checkpoint(folder, "dummy", str(model))


def _write(folder: Path, marker: Path, config: ModelConfig, preprocessor: dict | None, seed: int) -> None:
    write_random_safetensors(folder / "model.safetensors", config, seed)
    (folder / "config.json").write_text(json.dumps(config.to_hf_dict(), indent=2))
    if preprocessor is not None:
        (folder / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2))
    (folder / "tokenizer.json").write_text(stand_in_tokenizer_json())
    marker.write_text("random weights, stand-in tokenizer: not a real model\n")


def _random_tensor(name: str, shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    if name == "logit_scale":
        return torch.full(shape, math.log(10.0))  # SigLIP's training init: t' = log 10, b = -10
    if name == "logit_bias":
        return torch.full(shape, -10.0)
    if "norm" in name:  # LayerNorms: near identity, so activations stay in a realistic range
        return (1.0 if name.endswith("weight") else 0.0) + 0.02 * torch.randn(shape, generator=gen)
    return 0.02 * torch.randn(shape, generator=gen)


def write_random_safetensors(path: Path, config: ModelConfig, seed: int) -> None:
    """Stream random tensors to a safetensors file one at a time (never the whole model in memory)."""
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in Siglip2(config).state_dict().items()}
    header, offset = {}, 0
    for name, shape in shapes.items():
        size = math.prod(shape) * 4
        header[name] = {"dtype": DTYPE_NAMES[torch.float32], "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)  # keep tensor data 8-byte aligned
    gen = torch.Generator().manual_seed(seed)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob)
        for name, shape in shapes.items():
            f.write(_random_tensor(name, shape, gen).numpy().tobytes())


def stand_in_tokenizer_json() -> str:
    """A byte-level tokenizer with Gemma's special ids: every text maps to its UTF-8 bytes."""
    from tokenizers import Tokenizer, normalizers
    from tokenizers.models import BPE

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    vocab.update({f"<0x{b:02X}>": len(SPECIAL_TOKENS) + b for b in range(256)})
    tok = Tokenizer(BPE(vocab=vocab, merges=[], unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.add_special_tokens(SPECIAL_TOKENS)
    return tok.to_str()
