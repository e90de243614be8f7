"""The library's commands: embed (files, folders, texts; JSONL, npy, Parquet), classify, info."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from sigserve.cli import build_app

runner = CliRunner()


@pytest.fixture()
def image_folder(tmp_path, photos):
    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    photos["coffee"].save(folder / "coffee.jpg")
    photos["rocket"].save(folder / "sub" / "rocket.png")
    (folder / "sub" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    (folder / "notes.txt").write_text("not an image, and not picked up by extension")
    return folder


def run(*args):
    result = runner.invoke(build_app(), [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def test_embed_folder_skips_bad_files_and_writes_jsonl(tiny_checkpoint, tiny_model, image_folder, photos, tmp_path):
    out = tmp_path / "out.jsonl"
    result = run("embed", image_folder, "--text", "a cat", "--text", "ΣΟΦΟΣ", "-o", out, "-m", tiny_checkpoint)
    assert "skipped 1" in result.output and "broken.jpg" in result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["type"] for r in rows] == ["image", "image", "text", "text"]
    expected = tiny_model.embed_images([image_folder / "coffee.jpg", image_folder / "sub" / "rocket.png"])
    assert np.abs(np.array([r["embedding"] for r in rows[:2]]) - expected).max() <= 1e-6
    assert np.abs(np.array(rows[2]["embedding"]) - tiny_model.embed_texts(["a cat"])[0]).max() <= 1e-6


def test_embed_npy_and_parquet(tiny_checkpoint, tiny_model, image_folder, tmp_path):
    import pyarrow.parquet as pq

    run("embed", image_folder, "-o", tmp_path / "e.npy", "--format", "npy", "-m", tiny_checkpoint, "--raw")
    matrix = np.load(tmp_path / "e.npy")
    index = [json.loads(line) for line in (tmp_path / "e.jsonl").read_text().splitlines()]
    assert matrix.shape == (2, tiny_model.embedding_dim) and len(index) == 2
    assert np.abs(matrix - tiny_model.embed_images([r["path"] for r in index], normalize=False)).max() <= 1e-6
    run("embed", image_folder, "-o", tmp_path / "e.parquet", "--format", "parquet", "-m", tiny_checkpoint)
    table = pq.read_table(tmp_path / "e.parquet").to_pydict()
    assert len(table["embedding"]) == 2 and len(table["embedding"][0]) == tiny_model.embedding_dim


def test_classify_prints_a_table(tiny_checkpoint, image_folder):
    result = run("classify", image_folder / "coffee.jpg", "--labels", "cup,rocket,cat", "-m", tiny_checkpoint)
    lines = result.output.strip().splitlines()
    assert lines[0].endswith("coffee.jpg") and len(lines) == 4
    scores = [float(line.split()[1]) for line in lines[1:]]
    assert scores == sorted(scores, reverse=True)


def test_info_and_dummy_flag(tiny_checkpoint):
    out = run("info", "-m", tiny_checkpoint, "--json").output
    assert json.loads(out)["parameters"]["total"] > 0
    dummy = run("info", "-m", tiny_checkpoint, "--load-format", "dummy").output
    assert "DUMMY LOAD" in dummy and "parameters" in dummy


def test_missing_model_is_a_clean_error(tmp_path):
    result = runner.invoke(build_app(), ["info", "-m", str(tmp_path / "nowhere")])
    assert result.exit_code == 2 and "not a checkpoint folder" in result.output
