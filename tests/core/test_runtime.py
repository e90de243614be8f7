"""The runtime stands alone: no transformers import; and, marked slow, parity at full size."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest


def test_runtime_never_imports_transformers(tiny_checkpoint):
    code = (
        "import sys, numpy as np, sigserve\n"
        f"m = sigserve.load({str(tiny_checkpoint)!r})\n"
        "m.classify([np.zeros((20, 30, 3), np.uint8)], ['a', 'b']); m.patch_features([np.zeros((8, 8, 3), np.uint8)])\n"
        "bad = sorted(k for k in sys.modules if k.split('.')[0] in ('transformers', 'sentencepiece'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.slow
def test_full_size_parity(tmp_path_factory, photos):
    """The real architecture (375M parameters, random weights): the same 1e-5 bound as the tiny one."""
    import sigserve
    from tests.support.checkpoints import make_checkpoint
    from tests.support.oracle import Oracle

    folder = make_checkpoint(tmp_path_factory.mktemp("full"), "full", seed=1)
    model, oracle = sigserve.load(folder), Oracle(folder)
    images = [photos["astronaut"], photos["china"], photos["camera_gray"]]
    rgb = [im.convert("RGB") for im in images]
    for L in (256, 1024):
        _, pooled, hidden = oracle.vision(rgb, L)
        assert np.abs(model.embed_images(images, max_num_patches=L, normalize=False) - pooled).max() <= 1e-5
    texts = ["a photo of an astronaut", "A PORCELAIN vase", ""]
    assert np.abs(model.embed_texts(texts, normalize=False) - oracle.text(texts)).max() <= 1e-5
