"""The test oracle (transformers on the same checkpoint) and real photos, as a plain module so that
tests and scripts import them by name (several conftest.py files exist in this tree)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image


class Oracle:
    """transformers on the same checkpoint, per architecture (config.json's model_type):
    NaFlex: Siglip2Model, Siglip2ImageProcessorPil, Siglip2Tokenizer;
    fixed resolution: SiglipModel, SiglipImageProcessorPil, and the family's tokenizer: Siglip2Tokenizer
    for SigLIP 2's Gemma vocabulary (its text rules: lowercase, EOS, pad to 64), SiglipTokenizer for SigLIP 1.
    Texts are padded to the text tower's length with padding="max_length" and truncation, as its docs ask."""

    def __init__(self, folder: Path):
        import torch
        import transformers
        from transformers.utils import logging

        logging.set_verbosity_error()
        self.torch = torch
        folder = Path(folder)
        config = json.loads((folder / "config.json").read_text())
        self.naflex = config["model_type"] == "siglip2"
        family = "Siglip2" if self.naflex else "Siglip"
        self.model = getattr(transformers, f"{family}Model").from_pretrained(folder).eval()
        self.processor = getattr(transformers, f"{family}ImageProcessorPil").from_pretrained(folder)
        tokenizer = "SiglipTokenizer" if (folder / "spiece.model").is_file() else "Siglip2Tokenizer"
        self.tokenizer = getattr(transformers, tokenizer).from_pretrained(folder)
        self.context_length = self.model.config.text_config.max_position_embeddings

    def preprocess(self, images, max_num_patches=256):
        rgb = [np.asarray(im) for im in images]  # the oracle gets RGB arrays (the NaFlex do_convert_rgb is off)
        options = {"max_num_patches": max_num_patches} if self.naflex else {}
        return self.processor(rgb, return_tensors="pt", input_data_format="channels_last", **options)

    def vision(self, images, max_num_patches=256):
        """-> inputs, pooled (B, D), patch features (B, N, D); fixed resolution: inputs gain the
        `spatial_shapes` (G, G) of every image, so that callers read grids alike."""
        inputs = self.preprocess(images, max_num_patches)
        with self.torch.no_grad():
            out = self.model.vision_model(**inputs)
        if not self.naflex:
            side = int(round(out.last_hidden_state.shape[1] ** 0.5))
            inputs = {**inputs, "spatial_shapes": self.torch.tensor([[side, side]] * len(images))}
        return inputs, out.pooler_output.numpy(), out.last_hidden_state.numpy()

    def token_ids(self, texts):
        return self.tokenizer(texts, padding="max_length", max_length=self.context_length, truncation=True,
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
