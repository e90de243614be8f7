"""`sigserve index`, `sigserve search` and `sigserve collections list|info|delete|optimize`:
collections from the shell. Indexing is incremental: files are hashed, and only new or changed
ones (by content hash and max_num_patches) are embedded; metadata-only changes reuse the stored
vectors."""

from __future__ import annotations

import csv
import json
import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional

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
from sigserve.errors import InputError, InvalidArgumentError, SigserveError
from sigserve.images import IMAGE_EXTENSIONS

CollectionOpt = typer.Option(..., "--collection", "-c", help="Collection name.")
UriOpt = typer.Option(None, "--uri", help="LanceDB URI of the store (default: <data folder>/collections; "
                      "another folder or s3://bucket/prefix).")
COMMIT_EVERY = 256  # images per commit: a crash loses at most this much work, never acknowledged items

collections_app = typer.Typer(help="List, inspect, delete and optimise collections.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command("index")(index)
    app.command("search")(search)
    app.add_typer(collections_app, name="collections")


# -- sigserve index ---------------------------------------------------------------------------------


def index(
    paths: list[Path] = typer.Argument(..., help="Image files and folders."),
    collection: str = CollectionOpt,
    metadata: Path = typer.Option(None, "--metadata", help="CSV or JSONL with a 'path' column/key (relative to "
                                  "the metadata file's folder) and one column/key per metadata field."),
    recursive: bool = typer.Option(False, "--recursive", "-r", help="Descend into sub-folders."),
    prune: bool = typer.Option(False, "--prune", help="Remove entries under PATHS whose files are gone."),
    uri: str = UriOpt,
    model: str = ModelOpt, load_format: LoadFormat = LoadFormatOpt, backend: BackendChoice = BackendOpt,
    precision: Precision = PrecisionOpt, max_num_patches: Optional[int] = MaxPatchesOpt, batch_size: int = BatchSizeOpt,
):
    """Add images to a collection (created when absent). Re-runs embed only new or changed files."""
    from sigserve import collections

    files = find_files(paths, recursive)
    extra = read_metadata(metadata) if metadata else {}
    if unmatched := len(set(extra) - set(map(str, files))):
        typer.secho(f"note: {unmatched} metadata row(s) name no file being indexed", fg=typer.colors.YELLOW, err=True)
    pipe = load_or_exit(model, load_format, backend, precision)
    max_num_patches = length_or_exit(pipe, max_num_patches)
    try:
        col = collections.open(pipe, collection, uri)
        col.check_model()
        summary = Indexer(col, pipe, max_num_patches, batch_size).run(files, extra)
        if prune:
            summary["pruned"] = prune_missing(col, paths, set(map(str, files)))
        state = col.optimize() if summary["embedded"] or summary.get("pruned") else None
    except SigserveError as exc:
        fail(str(exc))
    parts = [f"{summary[k]} {k}" for k in ("embedded", "metadata_updated", "unchanged", "skipped", "pruned") if k in summary]
    typer.echo(f"{collection}: {', '.join(parts)}; {col.count()} items"
               + (f" (ANN index: {state['type']})" if state and state["type"] else ""), err=True)


def find_files(paths: list[Path], recursive: bool) -> list[Path]:
    """Absolute paths of the image files given or inside the folders given, in a stable order."""
    found: list[Path] = []
    for path in paths:
        path = path.expanduser().resolve()
        if path.is_dir():
            walk = path.rglob("*") if recursive else path.iterdir()
            found.extend(sorted(p for p in walk if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS))
        elif path.exists():
            found.append(path)
        else:
            typer.secho(f"skipped {path}: no such file or folder", fg=typer.colors.YELLOW, err=True)
    return list(dict.fromkeys(found))


def read_metadata(path: Path) -> dict[str, dict]:
    """{absolute image path: metadata} from a CSV (values typed: numbers, true/false, text) or JSONL."""
    base = path.expanduser().resolve().parent
    if path.suffix.lower() == ".jsonl":
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    elif path.suffix.lower() == ".csv":
        with open(path, newline="") as f:
            rows = [{k: _csv_value(v) for k, v in row.items() if v not in (None, "")} for row in csv.DictReader(f)]
    else:
        fail(f"--metadata must be a .csv or .jsonl file, got {path}")
    out = {}
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or not isinstance(row.get("path"), str):
            fail(f"{path}: row {i + 1} has no 'path'")
        out[str((base / row.pop("path")).resolve())] = row
    return out


def _csv_value(text: str):
    """CSV cells are text: numbers and true/false become JSON numbers and booleans (filterable as such)."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    if text.lstrip("-+")[:1] == "0" and text.lstrip("-+")[1:2].isdigit():
        return text  # leading zeros (postcodes, SKUs) are identifiers, not numbers
    try:
        number = float(text)
    except ValueError:
        return text
    if not math.isfinite(number):  # "nan", "inf", "Infinity" are words here, not numbers
        return text
    return int(number) if number.is_integer() and "." not in text and "e" not in text.lower() else number


class Indexer:
    """Plans (hash every file, compare with what is stored) and then embeds what changed."""

    def __init__(self, col, pipe, max_num_patches: int | None, batch_size: int):
        self.col, self.pipe = col, pipe
        # resolved (the model's default for None; fixed resolution: None), as the stored rows hold it
        self.max_num_patches, self.batch_size = col.sequence_length(max_num_patches), batch_size
        self.bad = 0  # files that could not be decoded

    def run(self, files: list[Path], extra: dict[str, dict]) -> dict:
        with ThreadPoolExecutor(4) as pool:
            hashes = list(tqdm(pool.map(_safe_hash, files), total=len(files), desc="hashing", unit="file",
                               disable=len(files) < 1000))
        stored = {row["id"]: row for row in self.col.get([str(f) for f in files]) if row}
        todo, retag, unchanged, skipped = [], [], 0, 0
        known = self.col.fields
        for path, digest in zip(files, hashes):
            meta, row = extra.get(str(path)), stored.get(str(path))
            if digest is None or not self._metadata_ok(path, meta, known):
                skipped += 1
                continue
            if row is None or row["content_hash"] != digest or row["max_num_patches"] != self.max_num_patches:
                todo.append((path, digest, meta))
            elif meta is not None and meta != row["metadata"]:
                retag.append((path, meta))
            else:
                unchanged += 1
        if retag:
            self.col.update_metadata([str(p) for p, _ in retag], [m for _, m in retag])
        embedded = self._embed(todo)
        return {"embedded": embedded, "metadata_updated": len(retag), "unchanged": unchanged,
                "skipped": skipped + self.bad}

    @staticmethod
    def _metadata_ok(path: Path, meta: dict | None, known: dict[str, str]) -> bool:
        """Check a file's metadata before any work (types must agree across files); report and skip it if bad."""
        from sigserve.collections import fields as fieldmod

        try:
            known.update(fieldmod.check_metadata(meta, known, "metadata"))
            return True
        except InvalidArgumentError as exc:
            tqdm.write(f"skipped {path}: {exc}")
            return False

    def _embed(self, todo: list) -> int:
        """Embed in batches, committing every COMMIT_EVERY images; bad files are reported and skipped."""
        done, pending = 0, list[tuple]()
        with tqdm(total=len(todo), desc="embedding", unit="img", disable=not todo) as bar:
            for start in range(0, len(todo), self.batch_size):
                batch, patches = [], []
                for path, digest, meta in todo[start: start + self.batch_size]:
                    try:
                        patches.append(self.pipe.preprocess(path, None, self.max_num_patches))
                        batch.append((path, digest, meta))
                    except InputError as exc:
                        self.bad += 1
                        tqdm.write(f"skipped {path}: {exc.reason}")
                if patches:
                    vectors = self.pipe.encode_patches(patches)[0]
                    pending.extend(zip(batch, vectors))
                bar.update(min(self.batch_size, len(todo) - start))
                if len(pending) >= COMMIT_EVERY or (start + self.batch_size >= len(todo) and pending):
                    done += self._commit(pending)
                    pending = []
        return done

    def _commit(self, pending: list) -> int:
        import numpy as np

        items = [item for item, _ in pending]
        self.col.add_embeddings(np.stack([v for _, v in pending]), ids=[str(p) for p, _, _ in items],
                                hashes=[d for _, d, _ in items], sources=[str(p) for p, _, _ in items],
                                metadata=[m for _, _, m in items], max_num_patches=self.max_num_patches,
                                auto_index=False)  # the index is brought up to date once, at the end
        return len(items)


def _safe_hash(path: Path) -> str | None:
    from sigserve.collections import content_hash

    try:
        return content_hash(path)
    except InputError as exc:
        tqdm.write(f"skipped {path}: {exc.reason}")
        return None


def prune_missing(col, roots: list[Path], seen: set[str]) -> int:
    """Delete entries under `roots` that this run did not find and whose file no longer exists."""
    prefixes = [str(r.expanduser().resolve()) for r in roots]
    gone = [item_id for item_id, source in col.sources().items()
            if source not in seen and any(source == r or source.startswith(r.rstrip("/") + "/") for r in prefixes)
            and not Path(source).exists()]
    return col.delete(gone) if gone else 0


# -- sigserve search --------------------------------------------------------------------------------


def search(
    text: str = typer.Argument(None, help="What to look for, in words."),
    collection: str = CollectionOpt,
    image: Path = typer.Option(None, "--image", help="Search by this image (with a text too: both, weighted)."),
    filter: str = typer.Option(None, "--filter", help='Metadata filter as JSON, e.g. \'{"price": {"$lt": 50}}\'.'),
    top_k: int = typer.Option(None, "--top-k", "-k", help="Hits shown (default 10; all above --threshold)."),
    threshold: float = typer.Option(None, "--threshold", help="Keep hits with probability >= this (text queries)."),
    text_weight: float = typer.Option(0.5, "--text-weight", help="Weight of the text in a text+image query."),
    show: str = typer.Option(None, "--show", help="Comma-separated metadata fields to show (default: all)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    uri: str = UriOpt,
    model: str = ModelOpt, load_format: LoadFormat = LoadFormatOpt, backend: BackendChoice = BackendOpt,
    precision: Precision = PrecisionOpt, max_num_patches: Optional[int] = MaxPatchesOpt,
):
    """Search a collection by text, by image, or both. Probabilities are SigLIP's calibrated sigmoid."""
    from sigserve import collections

    if text is None and image is None:
        raise typer.BadParameter("give a text, --image, or both")
    try:
        flt = json.loads(filter) if filter else None
    except json.JSONDecodeError as exc:
        fail(f"--filter is not valid JSON: {exc}")
    pipe = load_or_exit(model, load_format, backend, precision)
    max_num_patches = length_or_exit(pipe, max_num_patches)
    try:
        col = collections.open(pipe, collection, uri, create=False)
        hits = col.search(text, image, top_k=top_k, filter=flt, threshold=threshold, text_weight=text_weight,
                          max_num_patches=max_num_patches)
    except SigserveError as exc:
        fail(str(exc))
    if as_json:
        typer.echo(json.dumps([{"rank": r, "id": h.id, "source": h.source, "probability": h.probability,
                                "score": h.score, "metadata": h.metadata} for r, h in enumerate(hits, 1)], indent=2))
        return
    print_hits(hits, [s.strip() for s in show.split(",")] if show else None)


def print_hits(hits, fields: list[str] | None) -> None:
    if not hits:
        typer.echo("no matches")
        return
    names = [h.source or h.id for h in hits]
    width = min(max(len(n) for n in names), 60)
    typer.echo(f"{'rank':>4}  {'id / path':<{width}}  {'prob':>8}  {'score':>7}  metadata")
    for rank, (hit, name) in enumerate(zip(hits, names), 1):
        shown = {k: hit.metadata[k] for k in fields if k in hit.metadata} if fields else hit.metadata
        prob = f"{hit.probability:8.4f}" if hit.probability is not None else f"{'-':>8}"
        name = name if len(name) <= width else "..." + name[-(width - 3):]
        typer.echo(f"{rank:>4}  {name:<{width}}  {prob}  {hit.score:7.4f}  {json.dumps(shown, ensure_ascii=False)}")


# -- sigserve collections ... -------------------------------------------------------------------------


def _store(uri: str | None):
    from sigserve.collections import Store

    return Store(uri)


@collections_app.command("list")
def list_collections(uri: str = UriOpt, as_json: bool = typer.Option(False, "--json", help="Print JSON.")):
    """Every collection in the store, with its size and model."""
    store = _store(uri)
    infos = []
    for name in store.names():
        try:
            infos.append(store.info(name))
        except SigserveError:
            continue  # a LanceDB table that is not a collection
    if as_json:
        typer.echo(json.dumps(infos, indent=2))
        return
    if not infos:
        typer.echo(f"no collections in {store.uri}")
    for info in infos:
        index = info["index"]["type"] or "exact"
        typer.echo(f"{info['name']:<24} {info['count']:>9} items  {index:<8} {info['model']}"
                   + (f"  - {info['description']}" if info["description"] else ""))


@collections_app.command("info")
def info(name: str = typer.Argument(..., help="Collection name."), uri: str = UriOpt):
    """Everything a collection remembers: model, fields, size, index state (JSON)."""
    try:
        typer.echo(json.dumps(_store(uri).info(name), indent=2))
    except SigserveError as exc:
        fail(str(exc))


@collections_app.command("delete")
def delete(name: str = typer.Argument(..., help="Collection name."), uri: str = UriOpt,
           yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation.")):
    """Delete a collection and its data."""
    store = _store(uri)
    if not yes:
        typer.confirm(f"delete collection {name!r} from {store.uri}?", abort=True)
    try:
        store.drop(name)
    except SigserveError as exc:
        fail(str(exc))
    typer.echo(f"deleted {name}", err=True)


@collections_app.command("optimize")
def optimize(name: str = typer.Argument(..., help="Collection name."), uri: str = UriOpt,
             build_index: bool = typer.Option(None, "--index/--no-index", help="Build the ANN index even below "
                                               "the threshold (or never); default: past the threshold.")):
    """Compact the table and build or update the ANN index."""
    from sigserve.collections import Collection

    store = _store(uri)
    try:
        state = Collection(store, name, model=None).optimize(index=build_index)
    except SigserveError as exc:
        fail(str(exc))
    typer.echo(json.dumps(state, indent=2))
    from sigserve.collections.ann import MIN_INDEX_ROWS

    if state["type"] is None and build_index is not False:
        typer.echo(f"no ANN index: exact search is used below {state['threshold']} rows "
                   f"(--index builds one from {MIN_INDEX_ROWS} rows)", err=True)
