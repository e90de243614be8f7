"""`sigserve embed`, `sigserve classify` and `sigserve info`: the library from the shell."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np
import typer
from tqdm.auto import tqdm

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
    length_or_exit,
    load_or_exit,
)
from sigserve.defaults import DEFAULT_IMAGE_BATCH
from sigserve.errors import InputError, SigserveError
from sigserve.images import IMAGE_EXTENSIONS
from sigserve.scoring import l2_normalize

FORMATS = {".jsonl": "jsonl", ".npy": "npy", ".parquet": "parquet"}  # output extension -> format


def register(app: typer.Typer) -> None:
    app.command()(embed)
    app.command()(classify)
    app.command()(info)


def find_images(paths: list[Path]) -> list[Path]:
    """Files as given; folders searched recursively for image extensions, in a stable order."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS))
        else:
            found.append(path)
    return found


def embed(
    paths: list[Path] = typer.Argument(None, help="Image files and folders (searched recursively)."),
    text: list[str] = typer.Option(None, "--text", "-t", help="A text to embed (repeatable)."),
    texts_file: Path = typer.Option(None, "--texts-file", help="A file with one text per line."),
    output: Path = typer.Option(..., "--output", "-o", help="Where to write the embeddings (.jsonl, .npy or .parquet)."),
    fmt: str = typer.Option(None, "--format", help="jsonl, npy (plus a .jsonl index beside it) or parquet "
                            "(default: from the output's extension)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing output files."),
    normalize: bool = typer.Option(True, "--normalize/--raw", help="L2-normalised (default) or raw pooled outputs."),
    exif: bool = typer.Option(True, "--exif/--no-exif", help="Apply EXIF orientation."),
    model: str = ModelOpt, load_format: LoadFormat = LoadFormatOpt, backend: BackendChoice = BackendOpt,
    precision: Precision = PrecisionOpt, max_num_patches: Optional[int] = MaxPatchesOpt, batch_size: int = BatchSizeOpt,
):
    """Embed images and texts to JSONL, .npy or Parquet. Unreadable files are reported and skipped;
    the exit code is 1 when nothing could be embedded."""
    fmt = _output_format(output, fmt, overwrite)
    texts = list(text or []) + _read_texts(texts_file)
    images = find_images(list(paths or []))
    if not images and not texts:
        fail("nothing to embed: give image paths or folders, --text or --texts-file")
    pipe = load_or_exit(model, load_format, backend, precision, exif_transpose=exif)
    rows, vectors, skipped = _embed_images(pipe, images, length_or_exit(pipe, max_num_patches), batch_size)
    if not rows and not texts:
        typer.secho(f"error: none of the {len(images)} image(s) could be read; nothing written", fg="red", err=True)
        raise typer.Exit(1)
    if texts:
        vectors.append(pipe.embed_texts(texts, normalize=False, progress=True))
        rows.extend({"type": "text", "text": t} for t in texts)
    matrix = np.concatenate(vectors) if vectors else np.zeros((0, pipe.embedding_dim), np.float32)
    _write(output, fmt, rows, l2_normalize(matrix) if normalize else matrix)
    typer.echo(f"wrote {len(rows)} embeddings ({len(rows) - len(texts)} images, {len(texts)} texts) to {output}; "
               f"skipped {skipped} unreadable file(s)", err=True)


def _output_format(output: Path, fmt: str | None, overwrite: bool) -> str:
    """The format asked for, else the one the extension names; a mismatch or an existing file (output,
    or the .npy's index beside it) without --overwrite is an error before any work."""
    implied = FORMATS.get(output.suffix.lower())
    if fmt is not None and fmt not in FORMATS.values():
        fail(f"--format must be one of {', '.join(FORMATS.values())}, not {fmt!r}")
    if fmt is None and implied is None:
        fail(f"cannot tell the format from {output.name!r}: name it .jsonl, .npy or .parquet, or pass --format")
    if fmt is not None and implied is not None and fmt != implied:
        fail(f"--format {fmt} does not match the output's extension {output.suffix!r}")
    chosen = fmt or implied
    assert chosen is not None
    targets = [output, output.with_suffix(".jsonl")] if chosen == "npy" else [output]
    if not overwrite and (taken := [t for t in targets if t.exists()]):
        fail(f"{taken[0]} exists; pass --overwrite to replace it")
    return chosen


def _read_texts(path: Path | None) -> list[str]:
    if path is None:
        return []
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"cannot read --texts-file {path}: {exc}")


def _embed_images(pipe, images: list[Path], max_num_patches: int | None, batch_size: int):
    rows: list[dict] = []
    vectors: list[np.ndarray] = []
    skipped = 0
    with tqdm(total=len(images), desc="images", unit="img", disable=not images) as bar:
        for start in range(0, len(images), batch_size):
            good, patches = [], []
            for path in images[start: start + batch_size]:
                try:
                    patches.append(pipe.preprocess(path, None, max_num_patches))
                    good.append(path)
                except InputError as exc:
                    skipped += 1
                    tqdm.write(f"skipped {path}: {exc.reason}")
            if patches:
                vectors.append(pipe.encode_patches(patches)[0])
                rows.extend({"type": "image", "path": str(p), "rows": q.rows, "cols": q.cols} for p, q in zip(good, patches))
            bar.update(min(batch_size, len(images) - start))
    return rows, vectors, skipped


def _write(output: Path, fmt: str, rows: list[dict], matrix: np.ndarray) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "jsonl":
        with open(output, "w") as f:
            for row, vec in zip(rows, matrix):
                f.write(json.dumps({**row, "embedding": vec.tolist()}) + "\n")
    elif fmt == "npy":
        np.save(output, matrix.astype(np.float32))
        with open(output.with_suffix(".jsonl"), "w") as f:  # row i of the array is line i here
            f.writelines(json.dumps(row) + "\n" for row in rows)
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table({
            "type": [r["type"] for r in rows],
            "source": [r.get("path", r.get("text")) for r in rows],
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(matrix.astype(np.float32).ravel()), matrix.shape[1]),
        })
        pq.write_table(table, output)


def classify(
    images: list[Path] = typer.Argument(..., help="Image files or folders."),
    labels: str = typer.Option(..., "--labels", "-l", help="Comma-separated candidate labels."),
    template: list[str] = typer.Option(None, "--template", help="Prompt template with {} (repeatable). "
                                       "Default: 'This is a photo of {}.'"),
    top_k: int = typer.Option(5, "--top-k", min=1, help="Labels shown per image."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    model: str = ModelOpt, load_format: LoadFormat = LoadFormatOpt, backend: BackendChoice = BackendOpt,
    precision: Precision = PrecisionOpt, max_num_patches: Optional[int] = MaxPatchesOpt,
):
    """Zero-shot classification. Scores are SigLIP's independent sigmoid probabilities: each says how
    likely the image matches that label on its own, so they do not sum to 1. Unreadable images are
    reported and skipped; the exit code is 1 when none could be classified."""
    from sigserve.prompts import check_templates

    names = [s.strip() for s in labels.split(",") if s.strip()]
    if not names:
        fail("--labels needs at least one label")
    try:
        templates = check_templates(template or None)
    except SigserveError as exc:
        fail(str(exc).replace("templates[", "--template ["))
    paths = find_images(images)
    pipe = load_or_exit(model, load_format, backend, precision)
    length = length_or_exit(pipe, max_num_patches)
    rows, vectors, _ = _embed_images(pipe, paths, length, DEFAULT_IMAGE_BATCH)  # bad files: reported
    probs = pipe.probabilities(l2_normalize(np.concatenate(vectors)), pipe.label_embeddings(names, templates)) \
        if vectors else np.zeros((0, len(names)))
    results = [(Path(row["path"]), [(names[j], float(p[j])) for j in np.argsort(-p, kind="stable")[:top_k]])
               for row, p in zip(rows, probs)]
    if as_json:
        typer.echo(json.dumps([{"image": str(p), "predictions": [{"label": lab, "score": s} for lab, s in r]}
                               for p, r in results], indent=2))
    else:
        typer.echo(_classify_table(results))
    if not results:
        raise typer.Exit(1)


def _classify_table(results: list[tuple[Path, list[tuple[str, float]]]]) -> str:
    """One block per image, best label first; probabilities with significant digits (4.5e-05, not 0.0000)."""
    width = max([len(lab) for _, ranked in results for lab, _ in ranked] + [len("LABEL")])
    lines = []
    for path, ranked in results:
        lines += [str(path), f"  {'LABEL':<{width}}  {'PROBABILITY':>11}"]
        lines += [f"  {lab:<{width}}  {_probability(p):>11}  {'#' * round(p * 30)}" for lab, p in ranked]
    return "\n".join(lines) + ("\n\n(independent sigmoid probabilities: they need not sum to 1)" if results else "")


def _probability(p: float) -> str:
    return f"{p:.4f}" if p >= 1e-3 else f"{p:.2e}"


def info(
    model: str = ModelOpt, load_format: LoadFormat = LoadFormatOpt, backend: BackendChoice = BackendOpt,
    precision: Precision = PrecisionOpt, as_json: bool = typer.Option(False, "--json", help="Print JSON."),
):
    """The model's configuration, parameter counts and where it was loaded from."""
    details = load_or_exit(model, load_format, backend, precision).describe()
    if as_json:
        typer.echo(json.dumps(details, indent=2))
        return
    if details["dummy"]:
        typer.secho("DUMMY LOAD: random weights and a stand-in tokenizer; outputs are meaningless.",
                    fg=typer.colors.YELLOW, bold=True)
    p, v, t = details["parameters"], details["config"]["vision_config"], details["config"]["text_config"]
    lines = [
        ("model", details["model"]), ("loaded from", f"{details['path']} ({details['source']})"),
        ("backend", f"{details['backend']} / {details['precision']} on {details['device']}"),
        ("parameters", f"{p['total']:,} (vision {p['vision']:,}, text {p['text']:,}, "
                       f"of which token embedding {p['text_token_embedding']:,})"),
        ("vision", f"{v['num_hidden_layers']} layers x {v['hidden_size']} wide, {v['num_attention_heads']} heads, "
                   f"patch {v['patch_size']}, position grid {int(v['num_patches'] ** 0.5)}x{int(v['num_patches'] ** 0.5)}"),
        ("text", f"{t['num_hidden_layers']} layers x {t['hidden_size']} wide, vocabulary {t['vocab_size']:,}, "
                 f"{t['max_position_embeddings']} tokens"),
        ("embedding", f"{details['embedding_dim']} dimensions"),
        ("scores", f"sigmoid(exp({details['logit_scale']:.4f}) * cos + {details['logit_bias']:.4f})"),
    ]
    for key, value in lines:
        typer.echo(f"{key:>12}: {value}")
