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


def test_classify_prints_a_readable_table(tiny_checkpoint, tiny_model, image_folder):
    """A header, the labels best first, probabilities with significant digits (this random model's are
    about 2e-5: a fixed four decimals printed 0.0000 for all), equal to the library's."""
    result = run("classify", image_folder / "coffee.jpg", "--labels", "cup,rocket,cat", "-m", tiny_checkpoint)
    lines = result.stdout.strip().splitlines()
    assert lines[0].endswith("coffee.jpg") and lines[1].split() == ["LABEL", "PROBABILITY"]
    table = [line.split() for line in lines[2:5]]
    want = dict(tiny_model.classify([image_folder / "coffee.jpg"], ["cup", "rocket", "cat"])[0])
    assert [row[0] for row in table] == sorted(want, key=want.get, reverse=True)
    for label, shown, *_ in table:
        assert float(shown) == pytest.approx(want[label], rel=1e-2) and float(shown) > 0
    assert "need not sum to 1" in result.output


def test_info_and_dummy_flag(tiny_checkpoint):
    out = run("info", "-m", tiny_checkpoint, "--json").output
    assert json.loads(out)["parameters"]["total"] > 0
    dummy = run("info", "-m", tiny_checkpoint, "--load-format", "dummy").output
    assert "DUMMY LOAD" in dummy and "parameters" in dummy


def test_missing_model_is_a_clean_error(tmp_path):
    result = runner.invoke(build_app(), ["info", "-m", str(tmp_path / "nowhere")])
    assert result.exit_code == 2 and "not a checkpoint folder" in result.output


# -- the first hour's rough edges (each failed before its fix) ------------------------------------


def invoke(*args):
    return runner.invoke(build_app(), [str(a) for a in args])


def test_embed_format_follows_the_extension_and_never_overwrites(tiny_checkpoint, image_folder, tmp_path):
    out = tmp_path / "e.npy"
    run("embed", image_folder / "coffee.jpg", "-o", out, "-m", tiny_checkpoint)  # no --format: .npy means npy
    assert np.load(out).shape[0] == 1 and (tmp_path / "e.jsonl").is_file()
    again = invoke("embed", image_folder / "coffee.jpg", "-o", out, "-m", tiny_checkpoint)
    assert again.exit_code == 2 and "--overwrite" in again.output  # the array and its index stay untouched
    (tmp_path / "f.jsonl").write_text("someone's notes\n")  # an index that would be clobbered
    clash = invoke("embed", image_folder / "coffee.jpg", "-o", tmp_path / "f.npy", "-m", tiny_checkpoint)
    assert clash.exit_code == 2 and "f.jsonl exists" in clash.output
    assert (tmp_path / "f.jsonl").read_text() == "someone's notes\n"
    run("embed", image_folder / "coffee.jpg", "-o", out, "-m", tiny_checkpoint, "--overwrite")
    wrong = invoke("embed", "--text", "a", "-o", tmp_path / "x.npy", "--format", "jsonl", "-m", tiny_checkpoint)
    assert wrong.exit_code == 2 and "does not match" in wrong.output
    unknown = invoke("embed", "--text", "a", "-o", tmp_path / "x.bin", "-m", tiny_checkpoint)
    assert unknown.exit_code == 2 and "cannot tell the format" in unknown.output


def test_embed_errors_are_one_line_and_nothing_is_exit_1(tiny_checkpoint, tmp_path):
    missing = invoke("embed", "--texts-file", tmp_path / "missing.txt", "-o", tmp_path / "o.jsonl", "-m", tiny_checkpoint)
    assert missing.exit_code == 2 and "missing.txt" in missing.output and "Traceback" not in missing.output
    zero = invoke("embed", "--text", "a", "-o", tmp_path / "o.jsonl", "-m", tiny_checkpoint, "--batch-size", "0")
    assert zero.exit_code == 2 and "batch-size" in zero.output
    gone = invoke("embed", tmp_path / "nope1.jpg", tmp_path / "nope2.jpg", "-o", tmp_path / "o.jsonl", "-m", tiny_checkpoint)
    assert gone.exit_code == 1 and "nothing written" in gone.output and not (tmp_path / "o.jsonl").exists()


def test_classify_bad_arguments_fail_and_dummy_is_announced(tiny_checkpoint, image_folder, tmp_path):
    bad = invoke("classify", image_folder / "coffee.jpg", "--labels", "a,b", "--template", "no slot", "-m", tiny_checkpoint)
    assert bad.exit_code == 2 and "{}" in bad.output and "skipped" not in bad.output
    unreadable = invoke("classify", image_folder / "sub" / "broken.jpg", "--labels", "a,b", "-m", tiny_checkpoint)
    assert unreadable.exit_code == 1 and "broken.jpg" in unreadable.output
    for command in (["classify", image_folder / "coffee.jpg", "--labels", "a"],
                    ["embed", "--text", "a", "-o", tmp_path / "d.jsonl"]):
        result = invoke(*command, "-m", tiny_checkpoint, "--load-format", "dummy")
        assert result.exit_code == 0 and "DUMMY" in result.output, result.output


def test_version_and_cache_commands(tiny_checkpoint, tmp_path, monkeypatch):
    from sigserve import __version__

    assert run("--version").output.strip() == f"sigserve {__version__}"
    monkeypatch.setenv("SIGSERVE_CACHE", str(tmp_path / "cache"))
    run("info", "-m", tiny_checkpoint, "--load-format", "dummy")  # writes a dummy checkpoint into the cache
    listing = run("cache", "list").output
    assert "dummy" in listing and "total" in listing
    run("cache", "clear", "dummy", "--yes")
    assert not (tmp_path / "cache" / "dummy").exists()
    nothing = invoke("cache", "clear", "aoti", "--yes")
    assert nothing.exit_code == 0 and "nothing to clear" in nothing.output
    assert invoke("cache", "clear", "onxx", "--yes").exit_code == 2  # a typo is not "nothing to clear"


def test_serve_checks_the_port_before_loading(monkeypatch):
    import socket

    import sigserve.server.models as models_module

    def never(settings, say=None):
        raise AssertionError("the model was loaded although the port is taken")

    monkeypatch.setattr(models_module, "load_models", never)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = invoke("serve", "--port", taken.getsockname()[1], "--host", "127.0.0.1")
    assert result.exit_code == 2 and "cannot listen" in result.output
