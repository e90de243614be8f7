"""Image preprocessing: decode, convert to RGB, resize, patchify, by the checkpoint's rules (ImageConfig).

Faithful to transformers' PIL image processors, the project's oracle:
- NaFlex (Siglip2ImageProcessorPil): uint8 RGB -> PIL resize (BILINEAR on the hub) to the size found by
  the NaFlex search, keeping the aspect ratio -> PxP patches in raster order, channels-last in a patch;
- fixed resolution (SiglipImageProcessorPil): uint8 RGB -> PIL resize (BICUBIC for SigLIP, BILINEAR for
  SigLIP 2, as the preprocessor config says) to size x size, aspect not kept -> the same patches (the
  model's convolution puts them back in place; a remainder of size beyond G*P is dropped, as its
  stride-P convolution without padding does).
Then x * rescale_factor (float64, cast to float32) and (x - mean) / std in float32.

That last step, normalisation, is deferred: patches and packed batches hold the resized uint8 values
(4x fewer bytes to keep, prefetch and copy to a GPU), and each backend maps them to float32 through
its checkpoint's LUT (ImageConfig.lut) where a batch enters it (`normalize` on the host, or a gather
from a device-resident copy). The values are bit-identical to normalising here: the LUT is exactly the
oracle's arithmetic per value and channel.
"""

from __future__ import annotations

import io
import math
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from sigserve.config import ImageConfig
from sigserve.defaults import (
    DEFAULT_MAX_IMAGE_PIXELS,
    DEFAULT_MAX_NUM_PATCHES,
    IMAGE_FORMATS,
    MAX_PATCHES,
    MIN_PATCHES,
    TRAINED_MAX_PATCHES,
)
from sigserve.errors import ImageDecodeError, ImageTooLargeError, InvalidArgumentError

PATCH_SIZE = 16  # SigLIP 2 NaFlex's; a checkpoint's own comes from its config (ImageConfig.patch_size)
SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}
# File extensions of the accepted formats: what folder scans (embed, index, eval, batch) pick up.
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".avif", ".heic", ".heif"}
STRIP_ROWS = 256  # rows converted at a time (16-bit to 8-bit, transparency onto white)

# uint8 -> normalised float32 under the default rules (1/255, mean 0.5, std 0.5: every released SigLIP):
# the same value for the three channels. A checkpoint's own is ImageConfig.lut(), (3, 256).
LUT = ImageConfig().lut()[0]
LUT.flags.writeable = False


def normalize(pixel_values: np.ndarray, lut: np.ndarray = LUT) -> np.ndarray:
    """Resized uint8 pixel values -> the oracle's normalised float32 values, exactly. `lut` is (256,),
    or (3, 256) per channel (then the last axis holds channels-last pixels: index % 3 is the channel).
    Floating-point input is taken as already normalised and returned as float32 (no copy if it is)."""
    pixel_values = np.asarray(pixel_values)
    if pixel_values.dtype == np.uint8:
        if lut.ndim == 2 and (lut == lut[:1]).all():
            lut = lut[0]  # one table for all channels: the fast path
        if lut.ndim == 1:
            return lut[pixel_values]  # measured faster than np.take here; both exact
        return lut[np.arange(pixel_values.shape[-1]) % len(lut), pixel_values]
    if pixel_values.dtype.kind != "f":
        raise TypeError(f"pixel_values must be uint8 (resized pixels) or float (normalised), got {pixel_values.dtype}")
    return pixel_values.astype(np.float32, copy=False)


@dataclass
class Patches:
    pixels: np.ndarray  # (rows*cols, 3*16*16) uint8 resized pixel values, raster order (normalize() -> float32)
    rows: int
    cols: int

    @property
    def num_patches(self) -> int:
        return self.rows * self.cols


def check_max_num_patches(max_num_patches: int) -> int:
    """Validated here, where every path (library, CLI, server engine) passes: to_patches calls it."""
    if isinstance(max_num_patches, bool) or not isinstance(max_num_patches, (int, np.integer)):
        raise InvalidArgumentError(f"max_num_patches must be an integer, got {max_num_patches!r}", "max_num_patches")
    if not MIN_PATCHES <= max_num_patches <= MAX_PATCHES:
        raise InvalidArgumentError(
            f"max_num_patches must be between {MIN_PATCHES} and {MAX_PATCHES} (the model was trained up to "
            f"{TRAINED_MAX_PATCHES}), got {max_num_patches}", "max_num_patches")
    return int(max_num_patches)


def naflex_size(height: int, width: int, max_num_patches: int, patch: int = PATCH_SIZE, eps: float = 1e-5) -> tuple[int, int]:
    """Target (height, width) in pixels, multiples of `patch`, with at most max_num_patches patches.
    One scale for both axes, found by bisection; each side rounded up separately (at least 1 patch)."""

    def side(scale: float, n: int) -> int:
        return max(patch, patch * math.ceil(n * scale / patch))

    lo, hi = eps / 10, 100.0
    while hi - lo >= eps:
        mid = (lo + hi) / 2
        if (side(mid, height) / patch) * (side(mid, width) / patch) <= max_num_patches:
            lo = mid
        else:
            hi = mid
    return side(lo, height), side(lo, width)


# ---------------------------------------------------------------------------------------------
# Decoding


def open_image(item, index: int | None = None, *, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
               exif_transpose: bool = True, draft_max_num_patches: int | None = None,
               formats: Sequence[str] = IMAGE_FORMATS, draft: SizeFn | None = None) -> Image.Image:
    """A path, bytes, PIL image or (H, W[, 3|4]) uint8 array -> a decoded RGB PIL image.
    Raises ImageDecodeError / ImageTooLargeError naming `index`; only `formats` are decoded.
    `draft_max_num_patches`: for a JPEG much larger than its NaFlex target at that many patches, decode
    at a reduced DCT scale (1/2..1/8, still at least twice the target per side). Faster, but no longer
    bit-exact with the reference preprocessing (docs/benchmarks.md gives the distance): opt-in.
    `draft`: the same, for any target (height, width) -> (target height, target width) (fixed resolution)."""
    if draft is None and draft_max_num_patches:
        draft = lambda h, w: naflex_size(h, w, draft_max_num_patches)
    image = _open(item, index, formats)
    if image.width * image.height > max_pixels:
        raise ImageTooLargeError(index, f"image has {image.width}x{image.height} pixels, more than the limit of {max_pixels}")
    try:
        if draft is not None and image.format == "JPEG":
            _draft(image, draft, exif_transpose)
        image.load()  # decode now, so that truncated or corrupt data fails here, with its index
        if exif_transpose:
            image = ImageOps.exif_transpose(image)
        return to_rgb(image)
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(index, str(exc)) from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageDecodeError(index, f"cannot decode {describe(item)}: {exc}") from exc


def image_size(item, index: int | None = None, formats: Sequence[str] = IMAGE_FORMATS) -> tuple[int, int]:
    """(width, height) from the header alone, without decoding: what a decode will cost before it runs."""
    if isinstance(item, Image.Image):
        return item.size
    if isinstance(item, np.ndarray):
        return (item.shape[1], item.shape[0]) if item.ndim >= 2 else (0, 0)
    with _open(item, index, formats) as image:
        return image.size


SizeFn = Callable[[int, int], tuple[int, int]]  # (height, width) -> the resize target (height, width)


def _draft(image: Image.Image, target: SizeFn, exif_transpose: bool) -> None:
    """Ask the JPEG decoder for the smallest DCT scale that keeps both sides >= 2x the resize target
    (so the antialiased resize still averages over real pixels). No-op when the target is not much smaller."""
    transposed = exif_transpose and image.getexif().get(0x0112, 1) in (5, 6, 7, 8)  # rotated by 90 degrees
    h, w = (image.width, image.height) if transposed else (image.height, image.width)
    th, tw = target(h, w)
    if transposed:
        th, tw = tw, th
    if image.width >= 4 * tw and image.height >= 4 * th:  # at least one halving step is possible
        image.draft(image.mode, (2 * tw, 2 * th))


def _open(item, index: int | None, formats: Sequence[str] = IMAGE_FORMATS) -> Image.Image:
    if isinstance(item, Image.Image):
        return item
    if isinstance(item, np.ndarray):
        return _from_array(item, index)
    if isinstance(item, (bytes, bytearray, memoryview)):
        if len(item) == 0:
            raise ImageDecodeError(index, "empty image data")
        source: io.BytesIO | Path = io.BytesIO(bytes(item))
    elif isinstance(item, (str, os.PathLike)):
        path = Path(item)
        if not path.is_file():
            raise ImageDecodeError(index, f"no such file: {item}")
        if path.stat().st_size == 0:
            raise ImageDecodeError(index, f"empty file: {item}")
        source = path
    else:
        raise ImageDecodeError(index, f"expected a path, bytes, PIL image or numpy array, got {type(item).__name__}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own cap decides
            return Image.open(source, formats=_decoders(formats))
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(index, str(exc)) from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageDecodeError(index, f"{describe(item)} is not a readable image in an accepted format "
                                      f"({', '.join(formats)})") from exc


def _decoders(formats: Sequence[str]) -> list[str]:
    """The accepted formats this Pillow can decode (HEIF, for one, needs the pillow-heif plugin)."""
    Image.init()  # registers every installed plugin (idempotent)
    return [f for f in formats if f in Image.OPEN]


def describe(item) -> str:
    """What an input item was, for an error message (never a Python repr of a buffer)."""
    if isinstance(item, (bytes, bytearray, memoryview)):
        data = bytes(item[:8])
        head = data.decode("ascii") if data.isascii() and data.decode("ascii").isprintable() else data.hex(" ")
        return f"the data ({len(item):,} bytes, starting {head!r})"
    if isinstance(item, (str, os.PathLike)):
        return f"the file {item}"
    return f"the {type(item).__name__}"


def _from_array(a: np.ndarray, index: int | None) -> Image.Image:
    if a.dtype != np.uint8:
        raise ImageDecodeError(index, f"numpy images must be uint8, got {a.dtype}")
    if a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (1, 3, 4)):
        if a.size == 0:
            raise ImageDecodeError(index, "empty image array")
        return Image.fromarray(a[:, :, 0] if a.ndim == 3 and a.shape[2] == 1 else np.ascontiguousarray(a))
    raise ImageDecodeError(index, f"numpy images must be (H, W), (H, W, 3) or (H, W, 4), got shape {a.shape}")


def to_rgb(image: Image.Image) -> Image.Image:
    """As transformers' convert_to_rgb: transparency is composited onto white. One deliberate
    difference: 16-bit images are scaled to 8 bits (PIL's own conversion clips them to white).
    Both steps work in strips of rows, so a large image never holds more than one extra full-size
    copy (its 8-bit RGB result) beside the decoded original."""
    if image.mode in SIXTEEN_BIT_MODES:
        image = _sixteen_to_eight(image)
    if image.mode == "RGB":
        return image
    if "A" in image.getbands() or image.info.get("transparency") is not None:
        return _on_white(image)
    return image.convert("RGB")


def _sixteen_to_eight(image: Image.Image) -> Image.Image:
    """rint(v / 257) in integers ((2v + 257) // 514: no ties, 257 being odd), one strip at a time."""
    out = np.empty((image.height, image.width), np.uint8)
    for top in range(0, image.height, STRIP_ROWS):
        strip = np.asarray(image.crop((0, top, image.width, min(top + STRIP_ROWS, image.height))), np.int64)
        out[top: top + len(strip)] = (2 * np.clip(strip, 0, 65535) + 257) // 514
    return Image.fromarray(out)


def _on_white(image: Image.Image) -> Image.Image:
    """alpha_composite over opaque white, strip by strip: per-pixel arithmetic, so the same bytes as
    compositing the whole image at once (the reference), at a fraction of the memory."""
    out = Image.new("RGB", image.size)
    for top in range(0, image.height, STRIP_ROWS):
        box = (0, top, image.width, min(top + STRIP_ROWS, image.height))
        rgba = image.crop(box).convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        out.paste(Image.alpha_composite(white, rgba).convert("RGB"), box[:2])
    return out


# ---------------------------------------------------------------------------------------------
# Patches


def to_patches(image: Image.Image, max_num_patches: int = DEFAULT_MAX_NUM_PATCHES, patch: int = PATCH_SIZE,
               resample: int = Image.Resampling.BILINEAR) -> Patches:
    """An RGB image -> its NaFlex patches (no padding: batching pads)."""
    max_num_patches = check_max_num_patches(max_num_patches)
    height, width = naflex_size(image.height, image.width, max_num_patches, patch)
    resized = np.asarray(image.resize((width, height), resample))  # (H, W, 3) uint8
    return _patchify(resized, patch)


def to_fixed_patches(image: Image.Image, size: int, patch: int, resample: int) -> Patches:
    """An RGB image -> the patches of its size x size resize (aspect ratio not kept), G x G of them."""
    grid = size // patch
    resized = np.asarray(image.resize((size, size), resample))[: grid * patch, : grid * patch]  # (G*P, G*P, 3)
    return _patchify(resized, patch)


def _patchify(resized: np.ndarray, patch: int) -> Patches:
    """(H, W, 3) uint8, both multiples of patch -> (rows*cols, P*P*3) in raster order, channels-last."""
    rows, cols = resized.shape[0] // patch, resized.shape[1] // patch
    x = resized.reshape(rows, patch, cols, patch, 3).transpose(0, 2, 1, 3, 4)  # (rows, cols, py, px, c)
    return Patches(np.ascontiguousarray(x.reshape(rows * cols, patch * patch * 3)), rows, cols)


# ---------------------------------------------------------------------------------------------
# A checkpoint's rules


def resolve_max_num_patches(rules: ImageConfig, max_num_patches: int | None) -> int | None:
    """The sequence length a call runs at: NaFlex, the caller's (checked) or the processor's default;
    fixed resolution, None: the image size is the model's, and asking for another is an error."""
    if not rules.naflex:
        if max_num_patches is not None:
            raise InvalidArgumentError(
                f"max_num_patches does not apply to this model: it has a fixed resolution ({rules.size}x{rules.size} "
                f"pixels, {rules.grid}x{rules.grid} patches); omit max_num_patches", "max_num_patches")
        return None
    return check_max_num_patches(rules.max_num_patches if max_num_patches is None else max_num_patches)


def resize_target(rules: ImageConfig, max_num_patches: int | None) -> SizeFn:
    """(height, width) -> the (height, width) an image of that size is resized to under `rules`."""
    if not rules.naflex:
        return lambda h, w: (rules.size or 0, rules.size or 0)
    length = resolve_max_num_patches(rules, max_num_patches)
    assert length is not None
    return lambda h, w: naflex_size(h, w, length, rules.patch_size)


def image_to_patches(image: Image.Image, rules: ImageConfig, max_num_patches: int | None = None) -> Patches:
    """An RGB image -> its patches under the checkpoint's rules (max_num_patches: NaFlex only)."""
    length = resolve_max_num_patches(rules, max_num_patches)
    if length is None:
        assert rules.size is not None
        return to_fixed_patches(image, rules.size, rules.patch_size, rules.resample)
    return to_patches(image, length, rules.patch_size, rules.resample)


def pack(patches: list[Patches], length: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Batch images of different grids: zero-pad to `length` (default: the longest in the batch).
    -> pixel_values (B, N, P) uint8 (not yet normalised: backends apply LUT), attention_mask (B, N)
    int32, spatial_shapes (B, 2) int64. Padding rows are 0 (masked out, so their value is irrelevant)."""
    N = length or max(p.num_patches for p in patches)
    B, P = len(patches), patches[0].pixels.shape[1]
    pixel_values = np.zeros((B, N, P), dtype=patches[0].pixels.dtype)
    mask = np.zeros((B, N), dtype=np.int32)
    for b, p in enumerate(patches):
        pixel_values[b, : p.num_patches] = p.pixels
        mask[b, : p.num_patches] = 1
    shapes = np.array([[p.rows, p.cols] for p in patches], dtype=np.int64)
    return pixel_values, mask, shapes
