"""The `sigserve` command. Each sub-module adds its commands through `register(app)`, so the
root stays a list and the commands live beside the layer they drive."""

from __future__ import annotations

import importlib

import typer

# Sub-modules of sigserve.cli, each exposing `register(app: typer.Typer) -> None`.
COMMAND_MODULES = [
    "bench",
    "collections",
    "db",
    "embed",
    "eval",
    "keys",
    "serve",
]


def build_app() -> typer.Typer:
    app = typer.Typer(
        name="sigserve",
        help="SigLIP 2 NaFlex: embeddings, zero-shot classification, retrieval and patch features.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
    )
    for name in COMMAND_MODULES:
        importlib.import_module(f"sigserve.cli.{name}").register(app)
    return app


def main() -> None:
    build_app()()
