"""Shared fixtures: a tiny random checkpoint in the hub layout, the library on it, transformers on it
(the oracle), and real photos from scikit-image and scikit-learn."""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from checkpoints import make_checkpoint  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Dummy checkpoints and other caches go to a temporary folder, never the user's."""
    os.environ["SIGSERVE_CACHE"] = str(tmp_path_factory.mktemp("sigserve-cache"))
    os.environ["HF_HUB_OFFLINE"] = "1"
    yield


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("tiny-siglip2"), "tiny", seed=0)


@pytest.fixture(scope="session")
def tiny_model(tiny_checkpoint):
    import sigserve

    return sigserve.load(tiny_checkpoint)


class Oracle:
    """transformers' Siglip2Model, PIL image processor and Siglip2Tokenizer on the same checkpoint."""

    def __init__(self, folder: Path):
        import torch
        from transformers import Siglip2ImageProcessorPil, Siglip2Model, Siglip2Tokenizer
        from transformers.utils import logging

        logging.set_verbosity_error()
        self.torch = torch
        self.model = Siglip2Model.from_pretrained(folder).eval()
        self.processor = Siglip2ImageProcessorPil.from_pretrained(folder)
        self.tokenizer = Siglip2Tokenizer.from_pretrained(folder)

    def preprocess(self, images, max_num_patches):
        rgb = [np.asarray(im) for im in images]  # the oracle gets RGB arrays: its do_convert_rgb is off
        return self.processor(rgb, max_num_patches=max_num_patches, return_tensors="pt",
                              input_data_format="channels_last")

    def vision(self, images, max_num_patches):
        inputs = self.preprocess(images, max_num_patches)
        with self.torch.no_grad():
            out = self.model.vision_model(**inputs)
        return inputs, out.pooler_output.numpy(), out.last_hidden_state.numpy()

    def token_ids(self, texts):
        return self.tokenizer(texts, padding="max_length", max_length=64, truncation=True,
                              return_tensors="np")["input_ids"]

    def text(self, texts):
        ids = self.torch.from_numpy(self.token_ids(texts))
        with self.torch.no_grad():
            return self.model.text_model(input_ids=ids).pooler_output.numpy()

    def probabilities(self, images, texts, max_num_patches=256):
        inputs = self.preprocess(images, max_num_patches)
        ids = self.torch.from_numpy(self.token_ids(texts))
        with self.torch.no_grad():
            out = self.model(input_ids=ids, **inputs)
        return self.torch.sigmoid(out.logits_per_image).numpy()


@pytest.fixture(scope="session")
def oracle(tiny_checkpoint) -> Oracle:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Oracle(tiny_checkpoint)


def _photos() -> dict[str, Image.Image]:
    from skimage import data
    from sklearn.datasets import load_sample_images

    photos = {name: Image.fromarray(getattr(data, name)()) for name in ("astronaut", "coffee", "chelsea", "rocket")}
    photos["camera_gray"] = Image.fromarray(data.camera())  # a real grayscale photo
    china, flower = load_sample_images().images
    photos["china"], photos["flower"] = Image.fromarray(china), Image.fromarray(flower)
    return photos


@pytest.fixture(scope="session")
def photos() -> dict[str, Image.Image]:
    return _photos()
