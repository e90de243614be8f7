"""Options shared by every command that loads a model, so that they read (and default) the same
everywhere; their defaults and bounds come from sigserve.defaults and sigserve.backends."""

from __future__ import annotations

from typing import NoReturn

import typer

from sigserve.backends import BackendChoice, Precision
from sigserve.defaults import (
    DEFAULT_IMAGE_BATCH,
    DEFAULT_MAX_NUM_PATCHES,
    DEFAULT_MODEL,
    MAX_PATCHES,
    MIN_PATCHES,
    TRAINED_MAX_PATCHES,
    LoadFormat,
)

__all__ = ["BackendChoice", "LoadFormat", "Precision"]  # the option types, re-exported for the commands

ModelOpt = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Hub id (fetched once, then cached) or a local folder.")
LoadFormatOpt = typer.Option("auto", "--load-format",
                             help="dummy: real architecture, random weights, stand-in tokenizer (no download).")
BackendOpt = typer.Option("auto", "--backend",
                          help="auto: the measured fastest exact backend (onnx on CPU when onnxruntime is installed).")
PrecisionOpt = typer.Option("fp32", "--precision", help="fp32 (exact), or int8 / bf16 / fp16 where the backend offers it.")
MaxPatchesOpt = typer.Option(None, "--max-num-patches", min=MIN_PATCHES, max=MAX_PATCHES,
                             help=f"NaFlex sequence length per image ({MIN_PATCHES}-{MAX_PATCHES}; trained up to "
                                  f"{TRAINED_MAX_PATCHES}; default: the model's, {DEFAULT_MAX_NUM_PATCHES}). "
                                  "Fixed-resolution models take none.")
BatchSizeOpt = typer.Option(DEFAULT_IMAGE_BATCH, "--batch-size", min=1, help="Images per forward pass.")


def fail(message: object) -> NoReturn:
    """Every CLI error: one line on stderr, exit code 2."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def length_or_exit(pipe, max_num_patches: int | None) -> int | None:
    """The sequence length images run at (NaFlex: the option or the model's default; a fixed resolution:
    None); a length given to a fixed-resolution model is one line and exit code 2, before any work."""
    from sigserve.errors import InvalidArgumentError
    from sigserve.images import resolve_max_num_patches

    try:
        return resolve_max_num_patches(pipe.image_config, max_num_patches)
    except InvalidArgumentError as exc:
        fail(f"--max-num-patches: {exc}")


def load_or_exit(model: str, load_format: str = "auto", backend: str = "auto", precision: str = "fp32", **options):
    """sigserve.load with the CLI's options; a load error becomes one line and exit code 2."""
    import sigserve

    try:
        loaded = sigserve.load(model, dummy=load_format == "dummy", backend=backend, precision=precision, **options)
    except sigserve.SigserveError as exc:
        fail(exc)
    if loaded.dummy:
        typer.secho("DUMMY LOAD: random weights and a stand-in tokenizer; outputs are meaningless.",
                    fg=typer.colors.YELLOW, bold=True, err=True)
    return loaded
