"""`sigserve serve`: load the model, then run the OpenAI-compatible HTTP server (uvicorn).

Only the flags given on the command line are passed to Settings, so SIGSERVE_* environment
variables fill in everything else."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

Opt = typer.Option


def register(app: typer.Typer) -> None:
    app.command("serve", help="Serve the model over HTTP (OpenAI-compatible embeddings, classify, rerank).")(serve)


def serve(
    model: Annotated[Optional[str], Opt("--model", "-m", help="Hub id, HF cache name or local folder.")] = None,
    host: Annotated[Optional[str], Opt(help="Address to bind (default: 127.0.0.1).")] = None,
    port: Annotated[Optional[int], Opt(help="Port (default: 8000).")] = None,
    api_key: Annotated[Optional[str], Opt("--api-key", help="A static bearer key clients must send.")] = None,
    load_format: Annotated[Optional[str], Opt(help="auto, or dummy (random weights, for load tests).")] = None,
    backend: Annotated[Optional[str], Opt(help="Inference backend: torch, onnx or auto (default: auto).")] = None,
    precision: Annotated[Optional[str], Opt(help="Numeric precision (default: fp32; bf16/fp16 on a GPU).")] = None,
    device: Annotated[Optional[str], Opt(help="cpu, cuda, cuda:N or auto (default: cuda when available).")] = None,
    served_model_name: Annotated[Optional[str], Opt(help="The model id clients send (default: --model).")] = None,
    data_dir: Annotated[Optional[Path], Opt(help="Folder of the default SQLite database (keys, usage).")] = None,
    database_url: Annotated[Optional[str], Opt(help="SQLAlchemy URL for keys and usage.")] = None,
    max_batch_images: Annotated[Optional[int], Opt(help="Images per inference batch (default: 8 on CPU, 64 on GPU).")] = None,
    max_batch_texts: Annotated[Optional[int], Opt(help="Texts per inference batch (default: 32).")] = None,
    max_wait_ms: Annotated[Optional[float], Opt(help="How long a batch may wait to fill (default: 5).")] = None,
    max_pending_items: Annotated[Optional[int], Opt(help="Backlog bound; beyond it, 429 (default: 256).")] = None,
    preprocess_threads: Annotated[Optional[int], Opt(help="Image decode/resize threads (default: 2).")] = None,
    max_items: Annotated[Optional[int], Opt(help="Input items per request (default: 256).")] = None,
    max_body_bytes: Annotated[Optional[int], Opt(help="Request body cap in bytes (default: 32 MiB).")] = None,
    max_image_pixels: Annotated[Optional[int], Opt(help="Decompression-bomb guard, pixels per image.")] = None,
    jpeg_draft: Annotated[Optional[bool], Opt(help="Decode large JPEGs at reduced scale (faster, not bit-exact).")] = None,
    default_max_num_patches: Annotated[Optional[int], Opt(help="NaFlex patches when a request says none (default: 256).")] = None,
    price_per_1k_images: Annotated[Optional[float], Opt(help="Advertised price, also used for usage cost.")] = None,
    allow_private_urls: Annotated[Optional[bool], Opt(help="Let image URLs reach private networks.")] = None,
    log_level: Annotated[Optional[str], Opt(help="uvicorn log level (default: info).")] = None,
) -> None:
    """Load the model first (a bad path fails here, before a port is bound), then serve."""
    import uvicorn

    from sigserve.errors import SigserveError
    from sigserve.server.app import create_app, load_model
    from sigserve.server.settings import Settings

    from pydantic import ValidationError

    given: dict[str, Any] = {k: v for k, v in locals().items() if v is not None and k in Settings.model_fields}
    try:
        settings = Settings(**given)
    except ValidationError as exc:
        problems = "; ".join(f"--{'-'.join(map(str, e['loc'])).replace('_', '-')}: {e['msg']}" for e in exc.errors())
        typer.echo(f"error: {problems}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"loading {settings.model} ({'dummy weights' if settings.dummy else settings.load_format}) ...", err=True)
    try:
        loaded = load_model(settings)
    except SigserveError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    uvicorn.run(create_app(settings, loaded), host=settings.host, port=settings.port, log_level=settings.log_level)
