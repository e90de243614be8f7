"""`sigserve batch`: embed a whole corpus to Parquet on Ray Data (a local instance or a cluster)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from sigserve.cli.common import (
    BackendChoice,
    BackendOpt,
    BatchSizeOpt,
    LoadFormat,
    LoadFormatOpt,
    MaxPatchesOpt,
    ModelOpt,
    Precision,
    PrecisionOpt,
    fail,
)

Opt = typer.Option


def register(app: typer.Typer) -> None:
    app.command("batch", help="Embed a corpus (folder, glob, manifest or tar shards) to Parquet on Ray, resumably.")(batch)


def batch(
    src: str = Opt(..., "--input", "-i", help="A folder (recursive), a glob, a Parquet/CSV/JSONL manifest with a "
                   "path or URL column, or WebDataset tar shards ('shards/{0000..0099}.tar'); local or s3:// gs://."),
    dest: str = Opt(..., "--output", "-o", help="Folder (local or object store) for the Parquet parts and _manifest.json."),
    model: str = ModelOpt, load_format: LoadFormat = LoadFormatOpt, backend: BackendChoice = BackendOpt,
    precision: Precision = PrecisionOpt, max_num_patches: Optional[int] = MaxPatchesOpt, batch_size: int = BatchSizeOpt,
    ray_address: Optional[str] = Opt(None, "--ray-address", envvar="RAY_ADDRESS",
                                     help="A Ray cluster (host:port or ray://...). Default: a local Ray instance."),
    workers: Optional[int] = Opt(None, "--workers", help="Model actors (default: one per node's CPUs)."),
    threads: Optional[int] = Opt(None, "--threads", help="Threads per actor (default: the CPUs of the smallest node)."),
    resume: bool = Opt(False, "--resume", help="Continue the job in --output: skip the inputs it already holds."),
    path_column: Optional[str] = Opt(None, "--path-column", help="The manifest's path/URL column (default: path, url, ...)."),
    id_column: Optional[str] = Opt(None, "--id-column", help="The manifest's id column (default: id if present, else the path)."),
    part_rows: Optional[int] = Opt(None, "--part-rows", help="Rows per Parquet part, at most what a kill costs "
                                   "(default: about 30 MB of embeddings; a part is also cut every two minutes)."),
    summary_json: Optional[Path] = Opt(None, "--summary-json", help="Also write the summary as JSON to this file."),
    progress: bool = Opt(True, "--progress/--no-progress", help="A progress bar with images/s and ETA."),
):
    """Embed every image of --input into Parquet parts in --output. Bad images become rows with their
    error; a killed job continues where it stopped when rerun with --resume."""
    from sigserve.batch import embed, require_ray
    from sigserve.errors import SigserveError

    try:
        require_ray()  # before any work: without Ray, nothing is listed, loaded or written
        summary = embed(src, dest, model=model, dummy=load_format == "dummy",
                        backend=None if backend == "auto" else backend, precision=precision,
                        max_num_patches=max_num_patches, batch_size=batch_size, workers=workers, threads=threads,
                        ray_address=ray_address, resume=resume, path_column=path_column, id_column=id_column,
                        progress=progress, **({"part_rows": part_rows} if part_rows else {}))
    except SigserveError as exc:
        fail(exc)
    except KeyboardInterrupt:
        typer.secho("interrupted; the rows written so far are kept: rerun with --resume to finish", err=True)
        raise typer.Exit(130) from None
    typer.echo(str(summary), err=True)
    if summary_json:
        summary_json.write_text(json.dumps(summary.as_dict(), indent=2))
