"""Defaults and bounds that users can change, each defined once. The library's signatures, the
server's pydantic fields and the CLI's options all read them from here."""

from __future__ import annotations

from typing import Literal

LoadFormat = Literal["auto", "dummy"]  # dummy: the real architecture with random weights
DEFAULT_MODEL = "google/siglip2-base-patch16-naflex"

# NaFlex sequence length (patches per image): accepted range, the range the model was trained on, default.
MIN_PATCHES = 16
MAX_PATCHES = 4096
TRAINED_MAX_PATCHES = 1024  # beyond this the model extrapolates poorly (paper, Fig. 3)
DEFAULT_MAX_NUM_PATCHES = 256

DEFAULT_MAX_IMAGE_PIXELS = 64_000_000  # decompression-bomb guard, about 8000 x 8000
# Image formats decoded; every other Pillow decoder (EPS through Ghostscript, PSD, ICO, ...) is refused:
# rarely needed, and each one is attack surface. MPO is the multi-picture JPEG that many phones write.
IMAGE_FORMATS = ("JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "TIFF", "AVIF", "HEIF")
DEFAULT_IMAGE_BATCH = 8  # images per forward pass on CPU (measured best, docs/benchmarks.md)
DEFAULT_TEXT_BATCH = 64
DEFAULT_TEXT_CACHE_SIZE = 4096  # normalised prompt embeddings kept (LRU): fixed label sets cost nothing
