"""Print sigserve's max abs difference to transformers (the oracle) on a random tiny checkpoint:
pooled embeddings, patch features and probabilities per sequence length, text embeddings, token ids.

    .venv/bin/python -m scripts.parity_report [--size tiny|full]     (from the repository root)
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

import sigserve
from tests.core.test_parity import TEXTS, oracle_rgb
from tests.support.checkpoints import make_checkpoint
from tests.support.images import awkward_images
from tests.support.oracle import Oracle, real_photos


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="tiny", choices=["tiny", "full"])
    parser.add_argument("--checkpoint", type=Path, help="an existing checkpoint folder instead of a new one")
    args = parser.parse_args()
    folder = args.checkpoint or make_checkpoint(Path(tempfile.mkdtemp()) / "ckpt", args.size)
    model, oracle = sigserve.load(folder), Oracle(folder)
    photos = real_photos()
    awkward = awkward_images(photos["chelsea"])
    items = list(photos.values()) + list(awkward.values())
    rgb = [im.convert("RGB") for im in photos.values()] + [oracle_rgb(b) for b in awkward.values()]
    print(f"checkpoint: {args.size}, {len(photos)} photos + {len(awkward)} awkward images")
    for L in (64, 256, 576, 1024):
        inputs, pooled, hidden = oracle.vision(rgb, L)
        ours = model.embed_images(items, max_num_patches=L, normalize=False)
        grids = model.patch_features(items, max_num_patches=L)
        feat = max(float(np.abs(g.reshape(-1, g.shape[-1]) - hidden[b, : g.shape[0] * g.shape[1]]).max())
                   for b, g in enumerate(grids))
        probs = np.abs(model.score(items, TEXTS[:4], L) - oracle.probabilities(rgb, TEXTS[:4], L)).max()
        print(f"L={L:5d}  pooled {np.abs(ours - pooled).max():.2e}  features {feat:.2e}  probabilities {probs:.2e}")
    ids_equal = np.array_equal(model.tokenize(TEXTS).ids, oracle.token_ids(TEXTS))
    text = np.abs(model.embed_texts(TEXTS, normalize=False) - oracle.text(TEXTS)).max()
    print(f"text: {len(TEXTS)} texts, token ids identical: {ids_equal}, embeddings {text:.2e}")


if __name__ == "__main__":
    main()
