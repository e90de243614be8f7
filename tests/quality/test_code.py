"""The codebase's own rules, checked like behaviour: ruff and mypy pass, layers point one way, docs
never send users to files they do not have."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "sigserve"

# Lower layers never import higher ones. Top-level modules and packages of sigserve, bottom first.
LAYERS = [
    {"errors", "defaults", "paths", "memory"},
    {"config", "family", "artifacts", "scoring", "textcache"},
    {"model", "images", "tokenizer", "prompts"},
    {"weights", "dummy"},
    {"backends"},
    {"pipeline"},
    {"engine", "accounts", "eval", "collections", "batch"},
    {"server"},
    {"cli"},
]
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}


def _unit(path: Path) -> str:
    """sigserve/server/app.py -> server; sigserve/model.py -> model."""
    return path.relative_to(SRC).parts[0].removesuffix(".py")


def _imported_units(tree: ast.AST) -> set[str]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "sigserve" and len(parts) > 1:
                found.add(parts[1])
    return found


def test_every_module_has_a_layer():
    units = {_unit(p) for p in SRC.rglob("*.py") if p.name != "__init__.py" or p.parent != SRC}
    assert units <= set(LAYER), f"place these in LAYERS: {sorted(units - set(LAYER))}"


def test_layers_point_one_way():
    upward = []
    for path in SRC.rglob("*.py"):
        if path.parent == SRC and path.name == "__init__.py":
            continue  # the package's front door re-exports the library
        unit = _unit(path)
        for target in _imported_units(ast.parse(path.read_text())):
            if target in LAYER and LAYER[target] > LAYER[unit]:
                upward.append(f"{path.relative_to(ROOT)} imports sigserve.{target}")
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_ruff_passes():
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (pip install -e '.[test]')")
    done = subprocess.run([ruff, "check", "src", "tests", "bench", "scripts"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_mypy_passes_on_src():
    pytest.importorskip("mypy", reason="mypy is not installed (pip install -e '.[test]')")
    done = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_docs_never_point_outside_the_repository():
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    offenders = [str(p.relative_to(ROOT)) for p in docs if re.search(r"\.\./shared|shared/reference", p.read_text())]
    assert not offenders, offenders
