"""Calibration samples for static int8: exactly the inputs each tower's graph gets when serving.

The samples are recorded through OnnxBackend's own input preparation (normalised pixels, position
embeddings per grid, token embeddings looked up outside the graph): a recorder stands in for the
runtime and keeps the feeds instead of running them, so calibration can never drift from serving.

Vision: the photos in calibration_data/ at every length of LENGTHS, one image per sample (a mix of
lengths: ranges calibrated at one length only degrade at others). Text: calibration_data/texts.txt
in batches of TEXT_BATCH. Sources and licences: calibration_data/README.md.
"""

from __future__ import annotations

from importlib import resources

import numpy as np

from sigserve.backends.onnx import OnnxBackend
from sigserve.images import image_to_patches, open_image, pack
from sigserve.tokenizer import load_tokenizer
from sigserve.weights import Checkpoint

LENGTHS = (64, 256, 576, 1024)  # patches per image; 144 and 784 are measured too, never calibrated
TEXT_BATCH = 8
DATA = "calibration_data"


class _Recorder:
    """Stands in for an ORT session: keeps each call's feeds and answers zeros of the right shape."""

    def __init__(self, samples: list[dict]):
        self.samples = samples

    def run(self, outputs: list[str], feeds: dict) -> list[np.ndarray]:
        self.samples.append({k: np.array(v) for k, v in feeds.items()})  # a copy: callers may reuse buffers
        first = next(iter(feeds.values()))
        B, width = first.shape[0], first.shape[-1]
        shapes = {"pooled": (B, width), "hidden": (B, first.shape[1], width)}
        return [np.zeros(shapes[name], np.float32) for name in outputs]


class FeedRecorder(OnnxBackend):
    """OnnxBackend whose towers record their feeds (per tower, in call order) instead of running."""

    def __init__(self, checkpoint: Checkpoint):
        self.feeds: dict[str, list[dict]] = {"vision": [], "text": []}
        super().__init__(checkpoint, precision="fp32")

    def _load(self, tower: str) -> _Recorder:
        return _Recorder(self.feeds[tower])


def _files(suffix: str) -> list:
    folder = resources.files("sigserve.backends").joinpath(DATA)
    return sorted((f for f in folder.iterdir() if f.name.endswith(suffix)), key=lambda f: f.name)


def calibration_texts() -> list[str]:
    [path] = _files("texts.txt")
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def samples(checkpoint: Checkpoint, tower: str) -> list[dict]:
    """The feeds of `tower`'s graph for every calibration input, as serving would send them."""
    recorder = FeedRecorder(checkpoint)
    if tower == "vision":
        rules = checkpoint.image  # NaFlex: every length of LENGTHS; a fixed resolution: its one size
        for path in _files(".jpg"):
            image = open_image(path.read_bytes())
            for length in (LENGTHS if rules.naflex else (None,)):
                recorder.encode_images(*pack([image_to_patches(image, rules, length)]))
    else:
        tokenizer = load_tokenizer(checkpoint.path, checkpoint.config.text.max_position_embeddings)
        ids = tokenizer(calibration_texts()).ids
        for i in range(0, len(ids), TEXT_BATCH):
            recorder.encode_texts(ids[i: i + TEXT_BATCH])
    return recorder.feeds[tower]
