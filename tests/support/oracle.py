"""The test oracle (transformers on the same checkpoint) and real photos, as a plain module so that
tests and scripts import them by name (several conftest.py files exist in this tree)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


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


def real_photos() -> dict[str, Image.Image]:
    from skimage import data
    from sklearn.datasets import load_sample_images

    photos = {name: Image.fromarray(getattr(data, name)()) for name in ("astronaut", "coffee", "chelsea", "rocket")}
    photos["camera_gray"] = Image.fromarray(data.camera())  # a real grayscale photo
    china, flower = load_sample_images().images
    photos["china"], photos["flower"] = Image.fromarray(china), Image.fromarray(flower)
    return photos
