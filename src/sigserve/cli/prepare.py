"""`sigserve prepare`: build a model's cached artifacts ahead of time (ONNX exports, OpenVINO models,
int8 calibrations, compiled packages), so that a container image can bake them in and a later
`sigserve serve` or `sigserve.load` builds nothing. Artifacts are keyed by the weights' fingerprint
and land in the cache folder (SIGSERVE_CACHE), as a first load would put them there."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from sigserve.cli.common import BackendChoice, BackendOpt, LoadFormat, LoadFormatOpt, ModelOpt, Precision, PrecisionOpt, fail


def register(app: typer.Typer) -> None:
    app.command("prepare")(prepare)


def prepare(
    model: str = ModelOpt,
    load_format: LoadFormat = LoadFormatOpt,
    backend: BackendChoice = BackendOpt,
    precision: Precision = PrecisionOpt,
) -> None:
    """Build the cached artifacts for --backend/--precision now (run once per combination to serve)."""
    from sigserve import backends
    from sigserve.dummy import dummy_checkpoint
    from sigserve.errors import SigserveError
    from sigserve.paths import cache_dir
    from sigserve.weights import resolve

    started = time.perf_counter()
    try:
        checkpoint = dummy_checkpoint(model) if load_format == "dummy" else resolve(model)
        name = backends.resolve_backend(backend)
        typer.echo(f"preparing {checkpoint.model_id} ({checkpoint.fingerprint()}) for {name}/{precision} in {cache_dir()}",
                   err=True)
        paths = backends.prepare(name, checkpoint, precision)
    except SigserveError as exc:
        fail(exc)
    for path in paths:
        typer.echo(f"{path}  ({_size(path) / 2**20:.0f} MB)")
    if not paths:
        typer.echo(f"nothing to build: the {name} backend runs the checkpoint's own weights", err=True)
    typer.echo(f"ready in {time.perf_counter() - started:.1f} s", err=True)


def _size(path: Path) -> int:
    """The artifact and the weights stored beside it under the same name (.data, .bin)."""
    return sum(p.stat().st_size for p in path.parent.glob(f"{path.stem}.*") if p.suffix != ".lock")
