"""The browser playground: one page at / and /playground, plain ES modules and CSS shipped in the
package (static/), no build step. The page talks only to this server's own API; a Content-Security-
Policy makes that structural: scripts, styles, fonts and API calls may come from here alone. Images
are the exception a user asks for: a URL they type is previewed from that URL, as a browser does."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).parent / "static"
ASSETS = "/playground/static"  # where index.html finds its modules and styles
PAGE_HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' data: blob: http: https:; connect-src 'self'; "
                               "object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "referrer-policy": "no-referrer",
    "x-content-type-options": "nosniff",
    "cache-control": "no-cache",
}


def install(app: FastAPI, enabled: bool) -> None:
    """Serve the page (unless --no-playground): GET / and /playground, assets under ASSETS."""
    if not enabled:
        return
    app.mount(ASSETS, StaticFiles(directory=STATIC_DIR), name="playground-static")

    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers=PAGE_HEADERS)

    for path in ("/", "/playground"):
        app.add_api_route(path, page, methods=["GET"], include_in_schema=False)
