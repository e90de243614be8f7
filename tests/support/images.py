"""Images for tests: photo-like PNGs per seed, data URIs, and awkward images (every mode and shape
that the pipeline must survive) as encoded files."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def awkward_images(photo: Image.Image) -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    rgba = photo.convert("RGBA")
    alpha = np.zeros((photo.height, photo.width), np.uint8)
    alpha[:, photo.width // 3:] = 255
    alpha[photo.height // 2:, :] = 128
    rgba.putalpha(Image.fromarray(alpha))
    gray16 = (np.asarray(photo.convert("L"), np.uint16) * 257 + rng.integers(0, 200, photo.size[::-1])).astype(np.uint16)
    big = photo.resize((4000, 3000), Image.BICUBIC)
    return {
        "1x1": encode(Image.new("RGB", (1, 1), (200, 30, 90)), "PNG"),
        "3x1000": encode(Image.fromarray(rng.integers(0, 256, (1000, 3, 3), np.uint8)), "PNG"),  # 3 wide
        "1000x3": encode(Image.fromarray(rng.integers(0, 256, (3, 1000, 3), np.uint8)), "PNG"),  # 3 tall
        "4000x3000.jpg": encode(big, "JPEG", quality=90),
        "rgba.png": encode(rgba, "PNG"),
        "palette.png": encode(photo.convert("P", palette=Image.ADAPTIVE, colors=64), "PNG"),
        "palette_transparent.gif": encode(photo.convert("P", palette=Image.ADAPTIVE, colors=64), "GIF", transparency=3),
        "gray16.png": encode(Image.fromarray(gray16), "PNG"),
        "cmyk.jpg": encode(photo.convert("CMYK"), "JPEG", quality=95),
        "gray.jpg": encode(photo.convert("L"), "JPEG", quality=95),
    }


def image_bytes(seed: int, size=(48, 32), fmt="PNG") -> bytes:
    rng = np.random.default_rng(seed)
    # Smooth gradients plus noise: compresses like a photo, differs per seed.
    h, w = size[1], size[0]
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([(x * (seed + 3)) % 256, (y * (seed + 5)) % 256, ((x + y) * 7) % 256], -1)
    arr = np.clip(base + rng.integers(0, 40, (h, w, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def data_uri(data: bytes, mime="image/png") -> str:
    return f"data:{mime};base64,{b64(data)}"


def pngs() -> list[bytes]:
    """Six small PNGs of different shapes."""
    sizes = [(48, 32), (32, 64), (100, 20), (16, 16), (64, 64), (33, 47)]
    return [image_bytes(i, s) for i, s in enumerate(sizes)]
