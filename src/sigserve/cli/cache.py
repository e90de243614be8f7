"""`sigserve cache list|clear`: what sigserve keeps in its cache folder, how big it is, and removing it.

Everything there can be rebuilt: dummy checkpoints, ONNX exports, OpenVINO models and compiled packages per weights
fingerprint, eval embeddings, file digests. Keys, usage and collections live in the data folder, which
this command never touches. (Hub downloads are in Hugging Face's own cache: `huggingface-cli delete-cache`.)
"""

from __future__ import annotations

import shutil
from pathlib import Path

import typer

from sigserve.paths import cache_dir

KINDS = ("aoti", "bench", "digests", "dummy", "eval", "onnx", "openvino")  # what sigserve writes under the cache folder
cache_app = typer.Typer(help="List or clear sigserve's cache (rebuildable files only).", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(cache_app, name="cache")


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


@cache_app.command("list")
def list_cache() -> None:
    """Each kind of cached file (dummy, onnx, aoti, eval, ...) with its size."""
    root = cache_dir()
    kinds = sorted(p for p in root.iterdir()) if root.is_dir() else []
    typer.echo(f"{root}")
    total = 0
    for kind in kinds:
        size = _size(kind)
        total += size
        entries = len(list(kind.iterdir())) if kind.is_dir() else 1
        typer.echo(f"  {kind.name:<12} {_human(size):>10}  ({entries} entr{'y' if entries == 1 else 'ies'})")
    typer.echo(f"  {'total':<12} {_human(total):>10}")


@cache_app.command("clear")
def clear_cache(
    kind: list[str] = typer.Argument(None, help="Only these kinds (e.g. onnx dummy); default: everything."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
) -> None:
    """Remove cached files (they are rebuilt when needed: the next start re-exports, for one)."""
    root = cache_dir()
    if unknown := [k for k in kind or [] if k not in KINDS]:
        typer.echo(f"error: unknown kind {unknown[0]!r}; the cache holds {', '.join(KINDS)}", err=True)
        raise typer.Exit(2)
    targets = [t for t in ([root / k for k in kind] if kind else [root]) if t.exists()]
    if not targets:
        typer.echo("nothing to clear")
        return
    size = sum(_size(t) for t in targets)
    if not yes and not typer.confirm(f"remove {', '.join(map(str, targets))} ({_human(size)})?"):
        raise typer.Exit(1)
    for target in targets:
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    typer.echo(f"removed {_human(size)}")
