"""The playground in a real browser: Debian's chromium driven by Playwright for Python, against a live
server on the tiny checkpoint. Every page records the requests it made and the console's errors; a
test ends by checking that all requests went to the server and that the console stayed clean.

Chromium is missing on a developer machine: these tests skip, saying so. In CI (.ci/run installs
chromium and sets SIGSERVE_REQUIRE_BROWSER=1) they fail instead of skipping."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.support.server import LiveServer, make_settings

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-background-networking"]
DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="session")
def browser():
    if not CHROMIUM.exists():
        if os.environ.get("SIGSERVE_REQUIRE_BROWSER"):
            pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def playground_model(tiny_checkpoint):
    import sigserve

    return sigserve.load(tiny_checkpoint, max_image_pixels=4_000_000)


@pytest.fixture(scope="session")
def site(tmp_path_factory, tiny_checkpoint, playground_model):
    from sigserve.server.app import create_app

    settings = make_settings(tmp_path_factory.mktemp("playground-data"), tiny_checkpoint)
    with LiveServer(create_app(settings, playground_model)) as server:
        yield server


class Visit:
    """A page of the playground with what it did: requests (URLs) and console errors."""

    def __init__(self, page, base: str, expected_errors: tuple[str, ...] = ()):
        self.page, self.base = page, base
        self.expected_errors = expected_errors  # console errors a test provokes on purpose (a 401, a 400)
        self.requests: list[str] = []
        self.console_errors: list[str] = []
        page.on("request", lambda r: self.requests.append(r.url))
        page.on("console", lambda m: self.console_errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.console_errors.append(f"uncaught: {e}"))

    def open(self, path: str = "/") -> None:
        self.page.goto(self.base + path)
        self.page.wait_for_selector("body[data-ready=true]", timeout=30_000)

    def foreign_requests(self) -> list[str]:
        """Requests that went anywhere but the server (scheme, host and port), data: and blob: aside."""
        server = urlsplit(self.base)
        return [u for u in self.requests if not u.startswith(("data:", "blob:"))
                and (urlsplit(u).scheme, urlsplit(u).netloc) != (server.scheme, server.netloc)]


@pytest.fixture
def visit(browser, site):
    """visit(server=site, viewport=DESKTOP) -> Visit; afterwards: no foreign request, no console error."""
    contexts, visits = [], []

    def open_visit(server=site, viewport=DESKTOP, expected_errors: tuple[str, ...] = ()) -> Visit:
        context = browser.new_context(viewport=viewport)
        contexts.append(context)
        v = Visit(context.new_page(), server.url, expected_errors)
        visits.append(v)
        return v

    yield open_visit
    for v in visits:
        assert v.requests, "the page made no request at all"
        assert not v.foreign_requests(), v.foreign_requests()
        unexpected = [e for e in v.console_errors if not any(x in e for x in v.expected_errors)]
        assert not unexpected, unexpected
    for context in contexts:
        context.close()
