"""Print sigserve's max abs difference to transformers (the oracle) on a random checkpoint of each
architecture: pooled embeddings, patch features and probabilities (NaFlex: per sequence length), text
embeddings, token ids, per backend.

    .venv/bin/python -m scripts.parity_report [--size tiny|full] [--arch naflex|siglip2-fixed|siglip|all]
                                              [--backend torch|onnx|aoti ...]     (from the repository root)
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

import sigserve
from tests.core.test_parity import TEXTS, oracle_rgb
from tests.family.test_family_parity import MORE_TEXTS
from tests.support.checkpoints import ARCHITECTURES, make_checkpoint
from tests.support.images import awkward_images
from tests.support.oracle import Oracle, real_photos


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="tiny", choices=["tiny", "full"])
    parser.add_argument("--arch", default="all", choices=[*ARCHITECTURES, "all"])
    parser.add_argument("--backend", nargs="+", default=["torch", "openvino"], choices=["torch", "onnx", "openvino", "aoti"])
    parser.add_argument("--checkpoint", type=Path, help="an existing checkpoint folder instead of a new one")
    args = parser.parse_args()
    photos = real_photos()
    awkward = awkward_images(photos["chelsea"])
    items = list(photos.values()) + list(awkward.values())
    rgb = [im.convert("RGB") for im in photos.values()] + [oracle_rgb(b) for b in awkward.values()]
    print(f"checkpoint: {args.size}, {len(photos)} photos + {len(awkward)} awkward images")
    for arch in ARCHITECTURES if args.arch == "all" else [args.arch]:
        folder = args.checkpoint or make_checkpoint(Path(tempfile.mkdtemp()) / "ckpt", args.size, arch=arch)
        oracle = Oracle(folder)
        for backend in args.backend:
            report(f"{arch}/{backend}", sigserve.load(folder, backend=backend), oracle, items, rgb)


def report(name: str, model, oracle: Oracle, items: list, rgb: list) -> None:
    for L in (64, 256, 576, 1024) if model.naflex else (None,):
        inputs, pooled, hidden = oracle.vision(rgb, L or 256)
        ours = model.embed_images(items, max_num_patches=L, normalize=False)
        grids = model.patch_features(items, max_num_patches=L)
        feat = max(float(np.abs(g.reshape(-1, g.shape[-1]) - hidden[b, : g.shape[0] * g.shape[1]]).max())
                   for b, g in enumerate(grids))
        probs = np.abs(model.score(items, TEXTS[:4], L) - oracle.probabilities(rgb, TEXTS[:4], L or 256)).max()
        length = f"L={L:5d}" if L else f"{model.image_config.size}px"
        print(f"{name:20s} {length:8s} pooled {np.abs(ours - pooled).max():.2e}  features {feat:.2e}  "
              f"probabilities {probs:.2e}")
    texts = TEXTS + MORE_TEXTS
    ids_equal = np.array_equal(model.tokenize(texts).ids, oracle.token_ids(texts))
    text = np.abs(model.embed_texts(texts, normalize=False) - oracle.text(texts)).max()
    print(f"{name:20s} text: {len(texts)} texts, token ids identical: {ids_equal}, embeddings {text:.2e}")


if __name__ == "__main__":
    main()
