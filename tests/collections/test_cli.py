"""`sigserve index` is incremental (spy on the model), prunes, and joins CSV/JSONL metadata by path;
`sigserve search` and `sigserve collections ...` read it back."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from sigserve.cli import build_app
from sigserve.pipeline import Pipeline
from tests.collections.collection_images import png


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture
def spy(monkeypatch):
    """Counts the images the model embeds (every CLI path goes through encode_patches)."""
    seen = []
    original = Pipeline.encode_patches

    def counting(self, patches, with_features=False):
        seen.append(len(patches))
        return original(self, patches, with_features)

    monkeypatch.setattr(Pipeline, "encode_patches", counting)
    return seen


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "photos"
    (root / "sub").mkdir(parents=True)
    for i in range(4):
        (root / f"p{i}.png").write_bytes(png(i))
    (root / "sub" / "deep.png").write_bytes(png(10))
    (root / "broken.jpg").write_bytes(b"not a jpeg")
    return root


def run(runner, tiny_checkpoint, store, *args):
    result = runner.invoke(build_app(), [*args, "--model", str(tiny_checkpoint), "--uri", store])
    assert result.exit_code == 0, result.output
    return result


def index(runner, tiny_checkpoint, store, *args):
    return run(runner, tiny_checkpoint, store, "index", *args, "--collection", "photos")


def test_second_run_embeds_nothing_and_changes_are_re_embedded(runner, tiny_checkpoint, store_uri, folder, spy):
    first = index(runner, tiny_checkpoint, store_uri, str(folder))
    assert sum(spy) == 4  # top level only; broken.jpg reported and skipped
    assert "broken.jpg" in first.output and "4 embedded" in first.output and "1 skipped" in first.output
    spy.clear()
    second = index(runner, tiny_checkpoint, store_uri, str(folder))
    assert sum(spy) == 0 and "4 unchanged" in second.output
    (folder / "p2.png").write_bytes(png(99))  # changed content
    third = index(runner, tiny_checkpoint, store_uri, str(folder), "--recursive")
    assert sum(spy) == 2 and "2 embedded" in third.output and "3 unchanged" in third.output  # p2 + sub/deep
    spy.clear()
    index(runner, tiny_checkpoint, store_uri, str(folder), "--max-num-patches", "64")
    assert sum(spy) == 4  # another sequence length is another embedding


def test_prune_removes_entries_whose_files_are_gone(runner, tiny_checkpoint, store_uri, folder):
    index(runner, tiny_checkpoint, store_uri, str(folder))
    (folder / "p0.png").unlink()
    kept = index(runner, tiny_checkpoint, store_uri, str(folder))
    assert "4 items" in kept.output  # without --prune nothing is removed
    pruned = index(runner, tiny_checkpoint, store_uri, str(folder), "--prune")
    assert "1 pruned" in pruned.output and "3 items" in pruned.output


@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_metadata_joined_by_path(runner, tiny_checkpoint, store_uri, folder, spy, kind):
    meta = folder / f"meta.{kind}"
    if kind == "csv":
        meta.write_text("path,brand,price,sale\np0.png,acme,12.5,true\np1.png,\"it's\",3,false\n")
    else:
        meta.write_text('{"path": "p0.png", "brand": "acme", "price": 12.5, "sale": true, "tags": ["red"]}\n'
                        '{"path": "p1.png", "brand": "it\'s", "price": 3, "sale": false}\n')
    index(runner, tiny_checkpoint, store_uri, str(folder), "--metadata", str(meta))
    found = run(runner, tiny_checkpoint, store_uri, "search", "a red car", "--collection", "photos",
                "--filter", '{"price": {"$lt": 20}, "sale": true}', "--json")
    hits = json.loads(found.stdout)
    assert [h["source"] for h in hits] == [str(folder / "p0.png")]
    assert hits[0]["metadata"]["brand"] == "acme" and hits[0]["metadata"]["price"] == 12.5
    # metadata edits alone reuse the stored vectors
    spy.clear()
    meta.write_text(meta.read_text().replace("acme", "ACME"))
    again = index(runner, tiny_checkpoint, store_uri, str(folder), "--metadata", str(meta))
    assert sum(spy) == 0 and "1 metadata_updated" in again.output
    hits = json.loads(run(runner, tiny_checkpoint, store_uri, "search", "x", "--collection", "photos",
                          "--filter", '{"brand": "ACME"}', "--json").stdout)
    assert len(hits) == 1


def test_search_table_and_collections_commands(runner, tiny_checkpoint, store_uri, folder):
    index(runner, tiny_checkpoint, store_uri, str(folder))
    table = run(runner, tiny_checkpoint, store_uri, "search", "a red car", "--collection", "photos", "--top-k", "2")
    lines = table.stdout.strip().splitlines()
    assert lines[0].split()[:3] == ["rank", "id", "/"] and len(lines) == 3
    by_image = json.loads(run(runner, tiny_checkpoint, store_uri, "search", "--image", str(folder / "p3.png"),
                              "--collection", "photos", "--json").stdout)
    assert by_image[0]["source"] == str(folder / "p3.png") and by_image[0]["probability"] is None
    app = build_app()
    listed = runner.invoke(app, ["collections", "list", "--uri", store_uri])
    assert "photos" in listed.output and "4 items" in listed.output
    info = json.loads(runner.invoke(app, ["collections", "info", "photos", "--uri", store_uri]).output)
    assert info["count"] == 4 and info["index"]["type"] is None
    assert runner.invoke(app, ["collections", "optimize", "photos", "--uri", store_uri]).exit_code == 0
    assert runner.invoke(app, ["collections", "delete", "photos", "--yes", "--uri", store_uri]).exit_code == 0
    missing = runner.invoke(app, ["collections", "info", "photos", "--uri", store_uri])
    assert missing.exit_code == 2 and "no collection named 'photos'" in missing.output


def test_bad_metadata_rows_are_skipped_not_fatal(runner, tiny_checkpoint, store_uri, folder):
    meta = folder / "meta.jsonl"
    meta.write_text('{"path": "p0.png", "price": 3}\n{"path": "p1.png", "price": "cheap"}\n'
                    '{"path": "p2.png", "price": {"nested": 1}}\n{"path": "gone.png", "price": 1}\n')
    result = index(runner, tiny_checkpoint, store_uri, str(folder), "--metadata", str(meta))
    assert "2 skipped" not in result.output and "3 skipped" in result.output  # p1, p2 and broken.jpg
    assert "metadata.price" in result.output and "1 metadata row(s) name no file" in result.output
    assert "2 embedded" in result.output  # p0 and p3


def test_csv_words_that_look_like_numbers_stay_words(tmp_path):
    from sigserve.cli.collections import _csv_value

    assert [_csv_value(v) for v in ("3", "2.5", "1e3", "nan", "Infinity", "true", "FALSE", "0012", "0.5")] == \
        [3, 2.5, 1000.0, "nan", "Infinity", True, False, "0012", 0.5]
