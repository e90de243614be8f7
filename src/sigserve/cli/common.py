"""Options shared by every command that loads a model, so that they read the same everywhere."""

from __future__ import annotations

from enum import Enum

import typer

from sigserve.images import DEFAULT_MAX_PIXELS

DEFAULT_MODEL = "google/siglip2-base-patch16-naflex"


class LoadFormat(str, Enum):
    auto = "auto"
    dummy = "dummy"


ModelOpt = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Hub id (fetched once, then cached) or a local folder.")
LoadFormatOpt = typer.Option(LoadFormat.auto, "--load-format",
                             help="'dummy': real architecture, random weights, stand-in tokenizer (no download).")
BackendOpt = typer.Option("auto", "--backend", help="torch, onnx, or auto: the measured fastest (onnx on CPU "
                          "when onnxruntime is installed, else torch).")
PrecisionOpt = typer.Option("fp32", "--precision", help="fp32 (exact) or int8 where the backend offers it.")
MaxPatchesOpt = typer.Option(256, "--max-num-patches", help="Sequence length per image (16-4096; trained up to 1024).")
BatchSizeOpt = typer.Option(8, "--batch-size", help="Images per forward pass.")


def load_model(model: str, load_format: LoadFormat = LoadFormat.auto, backend: str = "auto",
               precision: str = "fp32", max_image_pixels: int = DEFAULT_MAX_PIXELS, exif_transpose: bool = True):
    """Load with the CLI's options; errors become a one-line message and exit code 2."""
    import sigserve

    try:
        return sigserve.load(model, dummy=load_format == LoadFormat.dummy, backend=backend, precision=precision,
                             max_image_pixels=max_image_pixels, exif_transpose=exif_transpose)
    except sigserve.SigserveError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from exc
