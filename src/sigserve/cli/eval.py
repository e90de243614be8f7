"""`sigserve eval zeroshot|retrieval`: benchmarks on the user's data, clip_benchmark JSON out."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from sigserve.cli.common import (
    BackendChoice,
    BackendOpt,
    LoadFormat,
    LoadFormatOpt,
    ModelOpt,
    Precision,
    PrecisionOpt,
    fail,
    load_or_exit,
)
from sigserve.defaults import MAX_PATCHES, MIN_PATCHES
from sigserve.errors import SigserveError

HELP = "Zero-shot classification and retrieval benchmarks (clip_benchmark JSON, Markdown, sweep plot)."

eval_app = typer.Typer(name="eval", help=HELP, no_args_is_help=True)

OUTPUT = typer.Option(..., "--output", "-o",
                      help="clip_benchmark JSON (a list of records for a sweep / several languages).")
PATCHES = typer.Option(None, "--max-num-patches",
                       help="NaFlex sequence length, or a comma list for a sweep (e.g. 64,144,256,576,784,1024); "
                            "'paper' = all of Table 7's. Default: the model's own (256); fixed-resolution models take none.")
BATCH = typer.Option(32, "--batch-size", min=1, help="Items per model call (and per cache commit).")
CACHE_DIR = typer.Option(None, "--cache-dir",
                         help="Embedding cache folder (default $SIGSERVE_CACHE/eval or ~/.cache/sigserve/eval).")
NO_CACHE = typer.Option(False, "--no-cache", help="Keep embeddings in memory only.")
PLOT = typer.Option(None, "--plot", help="Metric-vs-length PNG (default for a sweep: OUTPUT with .png).")
SUMMARY = typer.Option(None, "--summary", help="Markdown summary (default: OUTPUT with .md).")
SERVER = typer.Option(None, "--server", help="Use a running sigserve server (base URL) instead of the library.")
API_KEY = typer.Option(None, "--api-key", envvar="SIGSERVE_API_KEY", help="Bearer key for --server.")
DATASET = typer.Option(None, "--dataset",
                       help="Data set name in the JSON; imagenet1k, imagenetv2 and mscoco_captions get the paper's "
                            "numbers beside ours.")
PROGRESS = typer.Option(True, "--progress/--no-progress", help="tqdm progress bars on stderr.")
STRICT = typer.Option(False, "--strict", help="Stop at the first unreadable image (default: skip it, count it, "
                      "name it in the summary).")


def register(app: typer.Typer) -> None:
    app.add_typer(eval_app, name="eval")


def parse_lengths(spec: str | None) -> list[int | None]:
    """The lengths to evaluate at; [None] when none is given (the model's default, see _lengths)."""
    from sigserve.eval.paper import LENGTHS

    if spec is None:
        return [None]
    if spec.strip().lower() == "paper":
        return list(LENGTHS)
    try:
        values = [int(x) for x in spec.replace(" ", "").split(",") if x]
    except ValueError:
        raise typer.BadParameter(f"not a comma-separated list of integers: {spec!r}",
                                 param_hint="--max-num-patches") from None
    if not values or any(not MIN_PATCHES <= v <= MAX_PATCHES for v in values):
        raise typer.BadParameter(f"each length must be between {MIN_PATCHES} and {MAX_PATCHES}",
                                 param_hint="--max-num-patches")
    return list(dict.fromkeys(values))


def _lengths(source, lengths: list[int | None]) -> list[int | None]:
    """None (nothing given) becomes the model's default length: 256 for NaFlex, None for a fixed resolution."""
    return [source.default_length()] if lengths == [None] else lengths


def _source(model: str, server: str | None, api_key: str | None, load_format: str, backend: str, precision: str):
    from sigserve.eval.sources import LibrarySource, ServerSource

    if server:
        return ServerSource(server, model, api_key)
    loaded = load_or_exit(model, load_format, backend, precision)
    return LibrarySource(loaded, model, "dummy" if load_format == "dummy" else None)


def _outputs(output, summary, plot, cache_dir, no_cache, batch_size, progress, strict, lengths):
    """Where results go; a plot that would need matplotlib, when it is missing, fails here, before any work."""
    import importlib.util

    from sigserve.eval.api import Outputs

    out = Outputs(output, summary, plot, cache_dir, not no_cache, batch_size, progress, strict)
    if out.wants_plot(lengths) and importlib.util.find_spec("matplotlib") is None:
        fail("the sweep's plot needs matplotlib, from the eval extra: pip install -e '.[eval]' in the sigserve "
             "checkout (or scripts/setup.sh eval); or pass a single --max-num-patches")
    return out


def _report(result) -> None:
    from sigserve.eval.report import markdown_table

    typer.echo(markdown_table(result.records))
    s = result.stats
    typer.echo(f"embedded {s.images_embedded} images / {s.texts_embedded} texts; "
               f"cached {s.images_cached} images / {s.texts_cached} texts", err=True)
    for kind, path in result.files.items():
        typer.echo(f"{kind}: {path}", err=True)
    if result.skipped:
        typer.secho(f"warning: skipped {len(result.skipped)} unreadable image(s), left out of the metrics "
                    "(--strict stops at the first):", fg=typer.colors.YELLOW, err=True)
        for path, why in list(result.skipped.items())[:10]:
            typer.echo(f"  {path}: {why}", err=True)


def _zeroshot_name(data, classnames: str | None) -> str | None:
    if classnames != "imagenet" or len(data.classnames) != 1000:
        return None
    numeric = Path(data.source).is_dir() and all(p.parent.name.isdigit() for p in data.paths[:50])
    return "imagenetv2" if numeric else "imagenet1k"


@eval_app.command("zeroshot")
def zeroshot(
    model: str = ModelOpt,
    data: Path = typer.Option(..., "--data", help="Image folder (one sub-folder per class) or CSV/JSONL "
                                                 "manifest (path,label)."),
    output: Path = OUTPUT,
    templates: str = typer.Option("clip", "--templates", help="File with one template a line ('{}' = class "
                                                               "name), or 'clip' (80 CLIP templates + '{}')."),
    classnames: Optional[str] = typer.Option(None, "--classnames", help="File with one class name a line "
                                             "(class-index order), or 'imagenet'. Default: folder names / labels."),
    images: Optional[Path] = typer.Option(None, "--images", help="Base folder for relative manifest paths "
                                                                 "(default: the manifest's folder)."),
    raw_templates: bool = typer.Option(False, "--raw-templates",
                                       help="Use templates and class names as written (no canonicalisation)."),
    max_num_patches: str = PATCHES, dataset: Optional[str] = DATASET, load_format: LoadFormat = LoadFormatOpt,
    backend: BackendChoice = BackendOpt, precision: Precision = PrecisionOpt, batch_size: int = BATCH,
    cache_dir: Optional[Path] = CACHE_DIR, no_cache: bool = NO_CACHE, plot: Optional[Path] = PLOT,
    summary: Optional[Path] = SUMMARY, server: Optional[str] = SERVER, api_key: Optional[str] = API_KEY,
    progress: bool = PROGRESS, strict: bool = STRICT,
) -> None:
    """Zero-shot classification: acc1, acc5, mean_per_class_recall."""
    from sigserve.eval import evaluate_zeroshot, load_classification, load_templates

    lengths = parse_lengths(max_num_patches)
    try:
        ds = load_classification(data, classnames, images, canonical=not raw_templates)
        prompts = load_templates(templates, canonical=not raw_templates)
        source = _source(model, server, api_key, load_format, backend, precision)
        lengths = _lengths(source, lengths)
        out = _outputs(output, summary, plot, cache_dir, no_cache, batch_size, progress, strict, lengths)
        result = evaluate_zeroshot(source, ds, prompts, lengths, out, dataset or _zeroshot_name(ds, classnames))
    except (SigserveError, OSError) as exc:
        fail(exc)
    _report(result)


@eval_app.command("retrieval")
def retrieval(
    model: str = ModelOpt,
    data: Path = typer.Option(..., "--data", help="Captions: COCO annotations JSON or a Karpathy split file "
                                                 "(dataset_coco.json, dataset_flickr30k.json)."),
    images: Path = typer.Option(..., "--images", help="Image folder the captions file refers to."),
    output: Path = OUTPUT,
    split: str = typer.Option("test", "--split", help="Karpathy split to evaluate."),
    max_num_patches: str = PATCHES, dataset: Optional[str] = DATASET, load_format: LoadFormat = LoadFormatOpt,
    backend: BackendChoice = BackendOpt, precision: Precision = PrecisionOpt, batch_size: int = BATCH,
    cache_dir: Optional[Path] = CACHE_DIR, no_cache: bool = NO_CACHE, plot: Optional[Path] = PLOT,
    summary: Optional[Path] = SUMMARY, server: Optional[str] = SERVER, api_key: Optional[str] = API_KEY,
    progress: bool = PROGRESS, strict: bool = STRICT,
) -> None:
    """Image-text retrieval: recall@1/5/10 both directions, one record per caption language."""
    from sigserve.eval import evaluate_retrieval, load_retrieval

    lengths = parse_lengths(max_num_patches)
    try:
        ds = load_retrieval(data, images, split, dataset)
        source = _source(model, server, api_key, load_format, backend, precision)
        lengths = _lengths(source, lengths)
        out = _outputs(output, summary, plot, cache_dir, no_cache, batch_size, progress, strict, lengths)
        result = evaluate_retrieval(source, ds, lengths, out)
    except (SigserveError, OSError) as exc:
        fail(exc)
    _report(result)
