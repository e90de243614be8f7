"""The `sigserve` command. Each sub-module adds its commands through `register(app)`, so the
root stays a list and the commands live beside the layer they drive."""

from __future__ import annotations

import importlib

import typer

# Sub-modules of sigserve.cli, each exposing `register(app: typer.Typer) -> None`.
COMMAND_MODULES = [
    "batch",
    "bench",
    "cache",
    "collections",
    "db",
    "embed",
    "eval",
    "heatmap",
    "keys",
    "prepare",
    "serve",
]


def build_app() -> typer.Typer:
    app = typer.Typer(
        name="sigserve",
        help="SigLIP 2 NaFlex: embeddings, zero-shot classification, retrieval and patch features.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
    )
    app.callback()(_root)
    for name in COMMAND_MODULES:
        importlib.import_module(f"sigserve.cli.{name}").register(app)
    return app


def _print_version(value: bool) -> None:
    if value:
        from sigserve import __version__

        typer.echo(f"sigserve {__version__}")
        raise typer.Exit()


def _root(version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """SigLIP 2 NaFlex: embeddings, zero-shot classification, retrieval and patch features."""


def main() -> None:
    build_app()()
