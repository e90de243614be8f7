"""Every `bash`, `console` and `python` code block of README.md and docs/*.md runs, as a user would run it.
(A `console` block is a transcript: its `$ ` lines, with their continuations, are the commands.)

The blocks run in a scratch folder holding the pictures they name (cat.jpg, dog.jpg, photos/, ...),
with .venv's `sigserve` and `python` first on PATH, the Hugging Face hub offline, and a server that the
README's quick start would have started (`sigserve serve --model google/siglip2-base-patch16-naflex
--api-key sk-local`) on a free port; `localhost:8000` in a block is rewritten to it. The hub id resolves
from a Hugging Face cache in which the tiny test checkpoint stands under that name, so the examples run
unchanged (their numbers come from random weights). A block preceded by `<!-- not run: why -->` is
skipped with that reason (servers that run until stopped, the hub, data sets we do not have); every
other block must exit 0.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.support.server import free_port

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
HUB_ID = "google/siglip2-base-patch16-naflex"
FENCE = re.compile(r"(?:<!--\s*not run:\s*(?P<why>.*?)\s*-->\s*\n)?```(?P<lang>[a-z]*)\n(?P<code>.*?)```", re.S)
BLOCK_TIMEOUT_S = 300


def blocks() -> list:
    params = []
    for doc in DOCS:
        for m in FENCE.finditer(doc.read_text()):
            if m["lang"] not in ("bash", "console", "python"):
                continue
            marks = [pytest.mark.skip(reason=f"not run: {m['why']}")] if m["why"] else []
            line = doc.read_text()[: m.start("code")].count("\n") + 1
            params.append(pytest.param(doc.name, m["lang"], m["code"], id=f"{doc.name}:{line}", marks=marks))
    return params


def console_commands(transcript: str) -> str:
    """The commands of a shell transcript: `$ ` lines and the lines that a trailing backslash continues."""
    commands, continued = [], False
    for line in transcript.splitlines():
        if line.startswith("$ ") or continued:
            commands.append(line[2:] if line.startswith("$ ") else line)
            continued = line.rstrip().endswith("\\")
    return "\n".join(commands) + "\n"


@pytest.fixture(scope="session")
def hub_cache(tmp_path_factory, tiny_checkpoint) -> Path:
    """A Hugging Face cache in which the tiny checkpoint is `google/siglip2-base-patch16-naflex`."""
    cache = tmp_path_factory.mktemp("hf-cache")
    repo = cache / f"models--{HUB_ID.replace('/', '--')}"
    revision = "0" * 40
    shutil.copytree(tiny_checkpoint, repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    return cache


@pytest.fixture(scope="session")
def template(tmp_path_factory, photos) -> Path:
    """The files the examples name: cat.jpg, dog.jpg, photos/ (with photos.csv), and .venv."""
    folder = tmp_path_factory.mktemp("docs-template")
    (folder / ".venv").symlink_to(Path(sys.executable).parent.parent)  # the README calls .venv/bin/sigserve
    photos["chelsea"].save(folder / "cat.jpg")
    photos["coffee"].save(folder / "dog.jpg")
    (folder / "photos").mkdir()
    for name in ("astronaut", "rocket", "china", "flower"):
        photos[name].convert("RGB").save(folder / "photos" / f"{name}.jpg")
    (folder / "photos.csv").write_text("path,brand,price\n" + "".join(
        f"photos/{n}.jpg,acme,{10 * i}\n" for i, n in enumerate(("astronaut", "rocket", "china", "flower"))))
    return folder


@pytest.fixture(scope="session")
def workspaces(tmp_path_factory, template):
    """One scratch folder per document, copied from the template on first use: a document's blocks
    build on each other (an index, then a search of it), documents do not."""
    made: dict[str, Path] = {}

    def get(doc: str) -> Path:
        if doc not in made:
            made[doc] = Path(shutil.copytree(template, tmp_path_factory.mktemp("docs-ws") / doc, symlinks=True))
        return made[doc]

    return get


@pytest.fixture(scope="session")
def doc_env(tmp_path_factory, hub_cache) -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}", "HF_HUB_CACHE": str(hub_cache),
            "HF_HUB_OFFLINE": "1", "SIGSERVE_CACHE": str(tmp_path_factory.mktemp("docs-cache")),
            "SIGSERVE_DATA_DIR": str(tmp_path_factory.mktemp("docs-data")), "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "NO_COLOR": "1", "KEY": "sk-local", "ADMIN": "sk-local", "ADMIN_KEY": "sk-local"}  # the server's key


@pytest.fixture(scope="session")
def quick_start_server(doc_env, template):
    """The README's quick-start server, on a free port."""
    port = free_port()
    cmd = [str(Path(sys.executable).parent / "sigserve"), "serve", "--model", HUB_ID, "--api-key", "sk-local",
           "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    proc = subprocess.Popen(cmd, cwd=template, env=doc_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"the quick-start server exited: {proc.stderr.read()[-2000:]}")
            try:
                if httpx.get(url + "/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        else:
            raise RuntimeError("the quick-start server did not become ready")
        yield port
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.mark.parametrize("doc, lang, code", blocks())
def test_doc_block_runs(doc, lang, code, quick_start_server, workspaces, doc_env):
    code = re.sub(r"(localhost|127\.0\.0\.1):8000", f"127.0.0.1:{quick_start_server}", code)
    code = console_commands(code) if lang == "console" else code
    cmd = [sys.executable, "-c", code] if lang == "python" else ["bash", "-euo", "pipefail", "-c", code]
    done = subprocess.run(cmd, cwd=workspaces(doc), env=doc_env, capture_output=True, text=True, timeout=BLOCK_TIMEOUT_S)
    assert done.returncode == 0, f"exit {done.returncode}\n--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}"
