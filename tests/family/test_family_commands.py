"""The commands with fixed-resolution models (NaFlex is every other test's): `sigserve embed`, `classify`,
`eval`, `index`/`search` give the library's results, at the model's own image size; a --max-num-patches
given to such a model is one line and exit code 2, before any work."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

import sigserve
from sigserve.cli import build_app
from tests.eval.conftest import make_dataset
from tests.support.images import image_bytes

FIXED = ["siglip2-fixed", "siglip"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    for i, size in enumerate([(48, 32), (32, 64), (90, 20)]):
        (root / f"p{i}.png").write_bytes(image_bytes(i, size))
    return root


def invoke(*args):
    result = CliRunner().invoke(build_app(), [str(a) for a in args])
    return result


@pytest.mark.parametrize("arch", FIXED)
def test_embed_and_classify_equal_the_library(arch, family_checkpoints, folder, tmp_path):
    ckpt = family_checkpoints[arch]
    lib = sigserve.load(ckpt, backend="torch")
    images = sorted(folder.glob("*.png"))
    out = tmp_path / "e.jsonl"
    r = invoke("embed", *images, "--text", "A cat", "-o", out, "-m", ckpt, "--backend", "torch")
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    vectors = np.array([row["embedding"] for row in rows], np.float32)
    expected = np.concatenate([lib.embed_images(images), lib.embed_texts(["A cat"])])
    assert np.abs(vectors - expected).max() <= 1e-6
    G = lib.image_config.grid
    assert all((row["rows"], row["cols"]) == (G, G) for row in rows if row["type"] == "image")
    r = invoke("classify", *images, "--labels", "cat,dog", "--json", "-m", ckpt, "--backend", "torch")
    assert r.exit_code == 0, r.output
    got = [{p["label"]: p["score"] for p in item["predictions"]} for item in json.loads(r.stdout)]
    for scores, ref in zip(got, lib.classify(images, ["cat", "dog"])):
        assert scores == pytest.approx(dict(ref), abs=1e-6)


@pytest.mark.parametrize("command", [["embed", "--text", "x"], ["classify", "--labels", "a,b"], ["heatmap", "x"]])
def test_a_sequence_length_is_refused_in_one_line(command, family_checkpoints, folder, tmp_path):
    image = folder / "p0.png"
    extra = ["-o", tmp_path / "x.jsonl"] if command[0] == "embed" else ["-o", tmp_path / "x.png"] \
        if command[0] == "heatmap" else []
    r = invoke(command[0], image, *command[1:], *extra, "-m", family_checkpoints["siglip"], "--max-num-patches", "64")
    assert r.exit_code == 2 and "fixed resolution (60x60" in r.output and "Traceback" not in r.output, r.output


def test_eval_runs_at_the_models_resolution(family_checkpoints, tmp_path):
    data = make_dataset(tmp_path)
    out = tmp_path / "zs.json"
    r = invoke("eval", "zeroshot", "-m", family_checkpoints["siglip2-fixed"], "--data", data["folder"], "-o", out,
               "--no-progress", "--no-cache")
    assert r.exit_code == 0, r.output
    [record] = json.loads(out.read_text()) if out.read_text().lstrip().startswith("[") else [json.loads(out.read_text())]
    assert record["max_num_patches"] is None and 0 <= record["metrics"]["acc1"] <= 1
    assert "| fixed |" in r.output
    r = invoke("eval", "zeroshot", "-m", family_checkpoints["siglip2-fixed"], "--data", data["folder"],
               "-o", tmp_path / "sweep.json", "--max-num-patches", "64,256", "--no-progress", "--no-cache")
    assert r.exit_code == 2 and "fixed resolution" in r.output and "Traceback" not in r.output


def test_index_and_search_with_a_fixed_resolution_model(family_checkpoints, folder, tmp_path):
    ckpt, store = family_checkpoints["siglip"], str(tmp_path / "store")
    common = ["-m", ckpt, "--uri", store, "--collection", "pics", "--backend", "torch"]
    first = invoke("index", folder, *common)
    assert first.exit_code == 0 and "3 embedded" in first.output, first.output
    again = invoke("index", folder, *common)
    assert again.exit_code == 0 and "3 unchanged" in again.output, again.output  # the stored length is the model's
    found = invoke("search", "a cat", *common, "--json")
    assert found.exit_code == 0, found.output
    hits = json.loads(found.stdout)
    lib = sigserve.load(ckpt, backend="torch")
    text = lib.embed_texts(["a cat"])[0]
    best = max(sorted(folder.glob("*.png")), key=lambda p: float(lib.embed_images([p])[0] @ text))
    assert hits[0]["source"] == str(best)
