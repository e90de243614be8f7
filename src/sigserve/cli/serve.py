"""`sigserve serve`: load the models (each measured against --memory-budget-mb), then run the
OpenAI-compatible HTTP server (uvicorn).

Its flags are generated from the server's Settings (one per field, same name, help and bounds), so
they cannot drift from it. Only the flags given on the command line are passed on: SIGSERVE_*
environment variables, then the Settings defaults, fill in everything else."""

from __future__ import annotations

import inspect
import socket
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import typer
from pydantic.fields import FieldInfo

from sigserve.server.settings import Settings, env_var, flag

SHORT = {"model": "-m"}


def register(app: typer.Typer) -> None:
    app.command("serve", help="Serve models over HTTP (OpenAI-compatible embeddings, classify, rerank); "
                              "repeat --model to serve several.")(serve)


def serve(**given: Any) -> None:
    """Load every model first (a bad path or a blown memory budget fails here, before a port is bound), then serve."""
    import uvicorn
    from pydantic import ValidationError

    from sigserve.errors import SigserveError
    from sigserve.server.app import create_app, server_options
    from sigserve.server.models import load_models

    try:
        settings = Settings(**{k: v for k, v in given.items() if v not in (None, [])})
        specs = settings.model_specs()
    except ValidationError as exc:
        problems = "; ".join(f"{flag(str(e['loc'][0])) if e['loc'] else 'settings'}: {e['msg']}" for e in exc.errors())
        typer.echo(f"error: {problems}", err=True)
        raise typer.Exit(2) from None
    except ValueError as exc:  # the models to serve do not add up (a duplicate name, a bad models file)
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    sock = _bind(settings.host, settings.port)  # before the minutes of loading: a taken port fails at once
    for spec in specs:
        typer.echo(f"loading {spec.model} as {spec.served_name} "
                   f"({'dummy weights' if spec.dummy else spec.load_format}) ...", err=True)
    try:
        loaded = load_models(settings, say=lambda line: typer.echo(line, err=True))
    except SigserveError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    config = uvicorn.Config(create_app(settings, loaded), host=settings.host, port=settings.port,
                            **server_options(settings))
    uvicorn.Server(config).run(sockets=[sock])


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound now and handed to uvicorn (no window for another process to take it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=2048)
    except OSError as exc:
        typer.echo(f"error: cannot listen on {host}:{port}: {exc.strerror or exc} "
                   "(is another server running there? pick another --port)", err=True)
        raise typer.Exit(2) from None


def _parameter(name: str, field: FieldInfo) -> inspect.Parameter:
    """A keyword parameter whose typer Option mirrors the Settings field (None when not given)."""
    kind = _cli_type(field.annotation)
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    shown = extra.get("shown", field.default)
    help_text = f"{field.description} [default: {'none' if shown is None else shown}; env: {env_var(name)}]"
    decls = [flag(name) + (f"/--no-{flag(name)[2:]}" if kind is bool else ""), *([SHORT[name]] if name in SHORT else [])]
    option = typer.Option(*decls, help=help_text, show_default=False, **_bounds(field))
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None,
                             annotation=Annotated[Optional[kind], option])


def _cli_type(annotation: Any) -> Any:
    """The flag's type: the field's own (a Literal gives the choices, a list a repeatable flag), a secret
    read as a string."""
    if typing.get_origin(annotation) is Literal:
        return annotation
    if typing.get_origin(annotation) is Annotated:
        return _cli_type(typing.get_args(annotation)[0])
    if typing.get_origin(annotation) is list:
        return list[str]
    base = ([a for a in typing.get_args(annotation) if a is not type(None)] or [annotation])[0]
    return base if base in (str, int, float, bool, Path) else str


def _bounds(field: FieldInfo) -> dict[str, Any]:
    """ge / le of the field as click's min / max (gt as min: close enough for a help text; pydantic decides)."""
    out: dict[str, Any] = {}
    for meta in field.metadata:
        for attr, key in (("ge", "min"), ("gt", "min"), ("le", "max")):
            if getattr(meta, attr, None) is not None and not isinstance(getattr(meta, attr), float):
                out[key] = getattr(meta, attr)
    return out


serve.__signature__ = inspect.Signature([_parameter(n, f) for n, f in Settings.model_fields.items()])  # type: ignore[attr-defined]
serve.__annotations__ = {p.name: p.annotation for p in serve.__signature__.parameters.values()}  # type: ignore[attr-defined]
