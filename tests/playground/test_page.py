"""The page as served (no browser): at / and /playground with its Content-Security-Policy, off with
--no-playground, every static file shipped in the package, and no address of another host in them."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path

import httpx

from sigserve.server.playground import STATIC_DIR
from tests.support.server import LiveServer, make_settings

ROOT = Path(__file__).resolve().parents[2]


def test_page_and_assets_are_served(site):
    for path in ("/", "/playground"):
        r = httpx.get(site.url + path)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        csp = r.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "connect-src 'self'" in csp
        assert r.headers["referrer-policy"] == "no-referrer"
    assets = re.findall(r'(?:src|href)="(/playground/static/[^"]+)"', httpx.get(site.url + "/").text)
    assert assets
    for asset in assets:
        assert httpx.get(site.url + asset).status_code == 200, asset
    js = httpx.get(site.url + "/playground/static/panels/inside.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]


def test_no_playground_serves_no_page(tmp_path, tiny_checkpoint, playground_model):
    from sigserve.server.app import create_app

    with LiveServer(create_app(make_settings(tmp_path, tiny_checkpoint, playground=False), playground_model)) as server:
        for path in ("/", "/playground", "/playground/static/app.js"):
            assert httpx.get(server.url + path).status_code == 404, path
        assert httpx.get(server.url + "/health").status_code == 200


def test_every_static_file_is_package_data():
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["sigserve.server"]
    files = [p.relative_to(STATIC_DIR.parent).as_posix() for p in STATIC_DIR.rglob("*") if p.is_file()]
    assert len(files) >= 10
    missing = [f for f in files if not any(fnmatch.fnmatch(f, g) and f.count("/") == g.count("/") for g in globs)]
    assert not missing, f"add to [tool.setuptools.package-data] in pyproject.toml: {missing}"


def test_static_files_name_no_other_host():
    for path in STATIC_DIR.rglob("*"):
        if path.is_file():
            assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", path.read_text()), path.name
