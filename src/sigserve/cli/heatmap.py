"""`sigserve heatmap IMAGE "a dog" -o dog.png`: where in the image a text matches, drawn over it.

One colour per NaFlex patch (model.heatmap: each patch through the pooling head alone, scored with the
model's calibrated sigmoid), on the playground's colour scale, with a legend strip giving the
probabilities at its two ends."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal, Optional

import numpy as np
import typer
from PIL import Image, ImageDraw, ImageFont

from sigserve.cli.common import (
    BackendChoice,
    BackendOpt,
    LoadFormat,
    LoadFormatOpt,
    MaxPatchesOpt,
    ModelOpt,
    Precision,
    PrecisionOpt,
    fail,
    length_or_exit,
    load_or_exit,
)
from sigserve.errors import SigserveError

Scale = Literal["relative", "absolute"]
LEGEND_HEIGHT = 28  # pixels of the strip under the picture


def register(app: typer.Typer) -> None:
    app.command()(heatmap)


def heatmap(
    image: Path = typer.Argument(..., help="The image file."),
    texts: list[str] = typer.Argument(..., help="One or more texts; one picture per text."),
    output: Path = typer.Option(..., "--output", "-o", help="The PNG to write; with several texts, NAME-0.png, "
                                                             "NAME-1.png, ..."),
    opacity: float = typer.Option(0.6, "--opacity", min=0.0, max=1.0, help="Opacity of the colours over the image."),
    scale: Scale = typer.Option("relative", "--scale", help="relative: colours span this map's lowest to highest "
                                                             "probability; absolute: they span 0 to 1."),
    as_json: bool = typer.Option(False, "--json", help="Also print the probabilities as JSON."),
    model: str = ModelOpt, load_format: LoadFormat = LoadFormatOpt, backend: BackendChoice = BackendOpt,
    precision: Precision = PrecisionOpt, max_num_patches: Optional[int] = MaxPatchesOpt,
):
    """Draw where TEXTS match IMAGE: per NaFlex patch, the probability that the text matches that region."""
    from sigserve.images import open_image

    pipe = load_or_exit(model, load_format, backend, precision)
    max_num_patches = length_or_exit(pipe, max_num_patches)
    try:
        # Decoded once, as the model decodes it (EXIF orientation, RGB): the grid lies on these pixels.
        picture = open_image(image, max_pixels=pipe.max_image_pixels, exif_transpose=pipe.exif_transpose)
        maps = pipe.heatmap(picture, texts, max_num_patches=max_num_patches)  # (T, rows, cols)
    except SigserveError as exc:
        fail(exc)
    outputs = [output] if len(texts) == 1 else [output.with_name(f"{output.stem}-{i}{output.suffix}")
                                                for i in range(len(texts))]
    output.parent.mkdir(parents=True, exist_ok=True)
    for text, probs, path in zip(texts, maps, outputs):
        overlay(picture, probs, text, opacity, scale).save(path)
        r, c = np.unravel_index(int(probs.argmax()), probs.shape)
        typer.echo(f"{path}: {text!r} on a {probs.shape[0]}x{probs.shape[1]} grid, highest {probs.max():.4g} "
                   f"at row {r}, column {c}; lowest {probs.min():.4g}")
    if as_json:
        typer.echo(json.dumps([{"text": t, "probabilities": m.tolist()} for t, m in zip(texts, maps)]))


def colormap() -> np.ndarray:
    """(K, 3) colour stops of the playground's scale (one file for the page and this command)."""
    from sigserve.server.playground import STATIC_DIR

    return np.array(json.loads((STATIC_DIR / "colormap.json").read_text())["stops"], np.float64)


def colorize(t: np.ndarray, stops: np.ndarray) -> np.ndarray:
    """Values in [0, 1] (any shape) -> uint8 RGB (shape + (3,)), linear between evenly spaced stops."""
    x = np.clip(t, 0, 1) * (len(stops) - 1)
    i = np.minimum(x.astype(int), len(stops) - 2)
    f = (x - i)[..., None]
    return np.rint(stops[i] * (1 - f) + stops[i + 1] * f).astype(np.uint8)


def overlay(picture: Image.Image, probs: np.ndarray, text: str, opacity: float, scale: Scale) -> Image.Image:
    """The picture with one colour per patch blended over it, and a legend strip below."""
    lo, hi = (0.0, 1.0) if scale == "absolute" else (float(probs.min()), float(probs.max()))
    stops = colormap()
    spread = (probs - lo) / (hi - lo) if hi > lo else np.zeros_like(probs)
    cells = Image.fromarray(colorize(spread, stops)).resize(picture.size, Image.Resampling.NEAREST)  # one block per patch
    blended = Image.blend(picture.convert("RGB"), cells, opacity)
    out = Image.new("RGB", (picture.width, picture.height + LEGEND_HEIGHT), "white")
    out.paste(blended, (0, 0))
    draw = ImageDraw.Draw(out)
    font = ImageFont.load_default()
    low, high = f"{lo:.3g}", f"{hi:.3g}"
    bar_left = 8 + int(draw.textlength(low, font=font)) + 6
    bar_right = max(bar_left + 20, picture.width // 2)
    gradient = colorize(np.linspace(0, 1, bar_right - bar_left), stops)[None].repeat(10, 0)
    out.paste(Image.fromarray(gradient), (bar_left, picture.height + 9))
    draw.text((8, picture.height + 8), low, fill="black", font=font)
    draw.text((bar_right + 6, picture.height + 8), f"{high}  p({text!r})", fill="black", font=font)
    return out
