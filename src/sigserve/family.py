"""The released checkpoints of the family by hub id, with the shapes their config.json gives: for dummy
loads (`--load-format dummy --model google/siglip2-so400m-patch16-384` builds that architecture with
random weights, to measure memory and speed without the download) and for the README's list.

A real load never reads this table: it reads the checkpoint's own config.json, preprocessor_config.json
and tokenizer files. The shapes are big_vision's ViT variants (B, L, So400m, g-opt) as transformers'
conversion scripts write them; they could not be checked against the hub from this machine.
"""

from __future__ import annotations

from typing import Any

# width, MLP, layers, heads (big_vision vit.decode_variant)
VARIANTS = {"base": (768, 3072, 12, 12), "large": (1024, 4096, 24, 16), "so400m": (1152, 4304, 27, 16),
            "giant-opt": (1536, 6144, 40, 16)}
GEMMA_VOCAB = 256_000
BILINEAR, BICUBIC = 2, 3


def _tower(variant: str) -> dict[str, int]:
    width, mlp, layers, heads = VARIANTS[variant]
    return {"hidden_size": width, "intermediate_size": mlp, "num_hidden_layers": layers, "num_attention_heads": heads}


def _naflex(variant: str) -> dict[str, Any]:
    config = {"model_type": "siglip2", "vision_config": _tower(variant),
              "text_config": {**_tower(variant), "vocab_size": GEMMA_VOCAB}}
    return {"config": config, "preprocessor": {"image_processor_type": "Siglip2ImageProcessor", "resample": BILINEAR,
                                               "max_num_patches": 256, "patch_size": 16}}


def _fixed(variant: str, patch: int, size: int, siglip2: bool, vocab: int = GEMMA_VOCAB, text_length: int = 64) -> dict:
    text = {**_tower("so400m" if variant == "giant-opt" else variant), "vocab_size": vocab,
            "max_position_embeddings": text_length}
    if variant == "giant-opt":  # the giant vision tower pairs with an So400m text tower projected to its width
        text["projection_size"] = VARIANTS["giant-opt"][0]
    config = {"model_type": "siglip", "vision_config": {**_tower(variant), "image_size": size, "patch_size": patch},
              "text_config": text}
    resample = BILINEAR if siglip2 else BICUBIC  # the conversion scripts' SiglipImageProcessor(resample=...)
    return {"config": config, "preprocessor": {"image_processor_type": "SiglipImageProcessor", "resample": resample,
                                               "size": {"height": size, "width": size}}}


def _siglip2_fixed() -> dict[str, dict]:
    out = {}
    for variant, patch, sizes in [("base", 16, (224, 256, 384, 512)), ("base", 32, (256,)), ("large", 16, (256, 384, 512)),
                                  ("so400m", 14, (224, 384)), ("so400m", 16, (256, 384, 512)), ("giant-opt", 16, (256, 384))]:
        for size in sizes:
            out[f"google/siglip2-{variant}-patch{patch}-{size}"] = _fixed(variant, patch, size, siglip2=True)
    return out


HUB_CHECKPOINTS: dict[str, dict] = {
    "google/siglip2-base-patch16-naflex": _naflex("base"),
    "google/siglip2-so400m-patch16-naflex": _naflex("so400m"),
    **_siglip2_fixed(),
    # SigLIP (1): English SentencePiece vocabulary of 32000; So400m/14 at 224 reads 16 text tokens.
    **{f"google/siglip-base-patch16-{s}": _fixed("base", 16, s, siglip2=False, vocab=32_000) for s in (224, 256, 384, 512)},
    **{f"google/siglip-large-patch16-{s}": _fixed("large", 16, s, siglip2=False, vocab=32_000) for s in (256, 384)},
    "google/siglip-so400m-patch14-224": _fixed("so400m", 14, 224, siglip2=False, vocab=32_000, text_length=16),
    "google/siglip-so400m-patch14-384": _fixed("so400m", 14, 384, siglip2=False, vocab=32_000),
}
