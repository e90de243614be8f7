"""Random checkpoints of the family in the exact hub layout, built with transformers (the test oracle).

`make_checkpoint(folder, "tiny", arch=...)` writes config.json, model.safetensors, the tokenizer files
and preprocessor_config.json, as transformers' conversion scripts write them for each architecture:
- "naflex": Siglip2Model, Siglip2ImageProcessor, a Gemma-style tokenizer (tokenizer.model, tokenizer.json):
  a SentencePiece BPE trained here (byte fallback, <pad>=0 <eos>=1 <bos>=2 <unk>=3 <mask>=4), converted by
  transformers exactly as the hub's Gemma tokenizer is;
- "siglip2-fixed": SiglipModel (fixed resolution), SiglipImageProcessor with bilinear resampling, the same
  Gemma-style tokenizer (SigLIP 2's fixed-resolution checkpoints);
- "siglip": SiglipModel, SiglipImageProcessor (bicubic), a T5-style SentencePiece unigram vocabulary
  (spiece.model: <pad>=0 </s>=1 <unk>=2, dummy prefix, nmt_nfkc) behind SiglipTokenizer (SigLIP 1).
  Its tiny variant uses patch 14 on an image size that is not a multiple of it (as So400m/14 at 384),
  16 text positions (as So400m/14 at 224) and per-channel mean/std, so every rule is exercised.
Every parameter is random, LayerNorms and the logit scale/bias included, so no part of the model can
hide behind an init value. Also used by bench/ to build the full-size random checkpoint.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import torch

CORPUS = [
    "a photo of a cat", "a photo of a dog", "This is a photo of a red car.", "ein Hund läuft im Park",
    "une photo d'un chat sur le canapé", "Ελληνικά ΣΟΦΟΣ σοφός", "日本語のテキストと写真", "фото кошки на диване",
    "the quick brown fox jumps over the lazy dog 0123456789", "ÉCOLE Ärger Öl ÜBER straße İstanbul",
    "blue circle with green border on red background", "emoji 🐱🐶 and symbols ©®™",
]

PREPROCESSOR_CONFIG = {
    "do_convert_rgb": None, "do_normalize": True, "do_rescale": True, "do_resize": True,
    "image_mean": [0.5, 0.5, 0.5], "image_processor_type": "Siglip2ImageProcessorFast",
    "image_std": [0.5, 0.5, 0.5], "max_num_patches": 256, "patch_size": 16,
    "processor_class": "Siglip2Processor", "resample": 2, "rescale_factor": 0.00392156862745098,
}

ARCHITECTURES = ("naflex", "siglip2-fixed", "siglip")
# The tiny fixed-resolution geometries: (image_size, patch_size, text positions)
FIXED_TINY = {"siglip2-fixed": (64, 16, 64), "siglip": (60, 14, 16)}

SIZES = {
    # 2 layers, width 64: fast, yet every code path of the real model (4 heads, MAP head, 16x16 table).
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4),
    "full": dict(),  # the base model's defaults: 768 wide, 12 layers, 12 heads
}


def train_sentencepiece(folder: Path) -> Path:
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS * 20), model_writer=model, vocab_size=400, model_type="bpe",
        byte_fallback=True, character_coverage=1.0, add_dummy_prefix=False, remove_extra_whitespaces=False,
        normalization_rule_name="identity", split_digits=True, user_defined_symbols=["<mask>"],
        pad_id=0, eos_id=1, bos_id=2, unk_id=3, pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>",
        unk_piece="<unk>", minloglevel=2)
    path = folder / "tokenizer.model"
    path.write_bytes(model.getvalue())
    return path


def write_tokenizer(folder: Path) -> int:
    """Gemma-style tokenizer files as the hub has them; returns the vocabulary size."""
    from transformers import AutoTokenizer

    spm_dir = folder / "_spm"
    spm_dir.mkdir(parents=True, exist_ok=True)
    train_sentencepiece(spm_dir)
    # As the SigLIP 2 conversion script: GemmaTokenizer, no BOS, EOS appended, right padding.
    (spm_dir / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "GemmaTokenizer", "add_bos_token": False, "add_eos_token": True,
         "padding_side": "right", "model_input_names": ["input_ids"]}))
    tok = AutoTokenizer.from_pretrained(spm_dir)
    tok.save_pretrained(folder)
    (spm_dir / "tokenizer.model").replace(folder / "tokenizer.model")
    for f in spm_dir.iterdir():
        f.unlink()
    spm_dir.rmdir()
    return len(tok)


def write_t5_tokenizer(folder: Path) -> int:
    """SigLIP 1's tokenizer files: a T5-style unigram spiece.model behind SiglipTokenizer, saved as its
    conversion script saves it (input_ids only). Returns the vocabulary size."""
    import sentencepiece as spm
    from transformers import SiglipTokenizer

    spm_dir = folder / "_spm"
    spm_dir.mkdir(parents=True, exist_ok=True)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter([c.lower() for c in CORPUS] * 20), model_writer=model, vocab_size=300,
        model_type="unigram", hard_vocab_limit=False, character_coverage=0.98, pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
        pad_piece="<pad>", eos_piece="</s>", unk_piece="<unk>", minloglevel=2)
    (spm_dir / "spiece.model").write_bytes(model.getvalue())
    tok = SiglipTokenizer(vocab_file=str(spm_dir / "spiece.model"), model_input_names=["input_ids"])
    tok.save_pretrained(folder)
    for f in spm_dir.iterdir():
        f.unlink()
    spm_dir.rmdir()
    return len(tok)


def randomize(model: torch.nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name == "logit_scale":
                p.fill_(math.log(10.0) + 0.3 * torch.rand(1, generator=gen).item())
            elif name == "logit_bias":
                p.fill_(-10.0 + torch.rand(1, generator=gen).item())
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            else:
                std = 0.02 if p.shape[-1] >= 512 else 0.1  # full-size layers stay in a sane range
                p.copy_(std * torch.randn(p.shape, generator=gen))


def make_checkpoint(folder: Path, size: str = "tiny", seed: int = 0, arch: str = "naflex") -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if arch == "naflex":
        return _naflex(folder, size, seed)
    return _fixed(folder, size, seed, arch)


def _naflex(folder: Path, size: str, seed: int) -> Path:
    from transformers import Siglip2Config, Siglip2Model

    vocab = write_tokenizer(folder)
    dims = SIZES[size]
    text = dict(dims, vocab_size=vocab if size == "tiny" else 256000)
    config = Siglip2Config(text_config=text, vision_config=dict(dims, num_patches=256, patch_size=16))
    _save(Siglip2Model, config, folder, seed)
    (folder / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR_CONFIG, indent=2))
    return folder


def _fixed(folder: Path, size: str, seed: int, arch: str) -> Path:
    """A fixed-resolution SiglipModel with the processor and tokenizer of its family (module docstring)."""
    from transformers import SiglipConfig, SiglipImageProcessorPil, SiglipModel

    siglip2 = arch == "siglip2-fixed"
    vocab = write_tokenizer(folder) if siglip2 else write_t5_tokenizer(folder)
    image_size, patch, positions = FIXED_TINY[arch] if size == "tiny" else (224, 16, 64)
    dims = SIZES[size]
    text = dict(dims, vocab_size=vocab if size == "tiny" else (256000 if siglip2 else 32000), max_position_embeddings=positions)
    config = SiglipConfig(text_config=text, vision_config=dict(dims, image_size=image_size, patch_size=patch))
    _save(SiglipModel, config, folder, seed)
    rules: dict = {"size": {"height": image_size, "width": image_size}}
    if siglip2:
        rules["resample"] = 2  # bilinear, as the conversion script sets it for SigLIP 2
    else:
        rules.update(image_mean=[0.48, 0.46, 0.41], image_std=[0.27, 0.26, 0.28])  # not 0.5: each channel its own
    processor = SiglipImageProcessorPil(**rules)
    processor.save_pretrained(folder)
    return folder


def _save(kind, config, folder: Path, seed: int) -> None:
    torch.manual_seed(seed)
    model = kind(config)
    randomize(model, seed)
    model.save_pretrained(folder, safe_serialization=True)
