"""`sigserve batch` end to end on a real two-node Ray cluster (head + worker started with `ray start`):
output rows against `model.embed_images`, broken images as error rows, manifests, tar shards, resume
after a kill, and the CLI without Ray installed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sigserve.batch import INSTALL_HINT, embed
from sigserve.batch.sink import CRASH_ENV, MANIFEST
from sigserve.errors import BatchError
from tests.batch.batch_support import BAD_IMAGES, embeddings, good_images, read_output, write_shard

PATCHES = 64  # not the default (so the setting is seen to travel to the actors), and quick


def run_embed(cluster, src, dest, tiny_checkpoint, **kwargs):
    """One actor unless asked (each actor costs seconds to start); the folder test asks for two."""
    options = dict(model=str(tiny_checkpoint), ray_address=cluster.address, workers=1, threads=1, batch_size=2,
                   max_num_patches=PATCHES, progress=False)
    return embed(str(src), str(dest), **{**options, **kwargs})


def test_folder_on_two_nodes_equals_embed_images(ray_cluster, image_folder, tiny_checkpoint, tiny_model, tmp_path):
    # 1024 patches: the trained maximum, and enough work per batch for the readers to keep both actors fed.
    summary = run_embed(ray_cluster, image_folder, tmp_path / "out", tiny_checkpoint, part_rows=16, workers=2,
                        max_num_patches=1024)
    table = read_output(tmp_path / "out")
    good, bad = good_images(image_folder), sorted(BAD_IMAGES)
    assert sorted(table["id"].to_pylist()) == sorted(good + bad)  # every input exactly once
    assert summary.rows == table.num_rows == len(good) + len(bad) and summary.errors == len(bad)
    assert len(list((tmp_path / "out").glob("part-*.parquet"))) == -(-table.num_rows // 16)
    assert set(table["max_num_patches"].to_pylist()) == {1024}

    ok = table.filter(pa.compute.is_null(table["error"])).sort_by("id")
    assert ok["id"].to_pylist() == good
    assert ok["path"].to_pylist() == [str(image_folder / i) for i in good]
    expected = tiny_model.embed_images([image_folder / i for i in good], max_num_patches=1024)
    assert np.abs(embeddings(ok) - expected).max() <= 1e-6

    failed = table.filter(pa.compute.invert(pa.compute.is_null(table["error"]))).sort_by("id")
    assert failed["id"].to_pylist() == bad and failed["embedding"].null_count == len(bad)
    for id_, error in zip(bad, failed["error"].to_pylist()):
        assert error.startswith(BAD_IMAGES[id_] + ": "), (id_, error)

    # Both nodes ran an actor, and each actor embedded some of the rows.
    assert len(summary.workers) == 2 and len({name.split("/")[0] for name in summary.workers}) == 2
    assert sum(w["rows"] for w in summary.workers.values()) == summary.rows
    assert all(w["rows"] > 0 and w["peak_rss_mb"] > 50 for w in summary.workers.values())
    manifest = json.loads((tmp_path / "out" / MANIFEST).read_text())
    assert manifest["complete"] and manifest["summary"]["rows"] == summary.rows


def test_manifest_metadata_is_carried_through(ray_cluster, image_folder, tiny_checkpoint, tiny_model, tmp_path):
    names = good_images(image_folder)[:6]
    manifest = pa.table({
        "sku": [f"SKU-{i:04d}" for i in range(8)],
        "url": [str(image_folder / n) for n in names] + [str(image_folder / "gone.jpg"), "broken/garbage.jpg"],
        "price": [1.5 * i for i in range(8)],
        "tags": [[f"t{i}", "all"] for i in range(8)],
    })
    pq.write_table(manifest, image_folder / "manifest.parquet")  # relative paths: beside the manifest
    try:
        run_embed(ray_cluster, image_folder / "manifest.parquet", tmp_path / "out", tiny_checkpoint, id_column="sku")
    finally:
        (image_folder / "manifest.parquet").unlink()
    table = read_output(tmp_path / "out").sort_by("id")
    assert table.column_names == ["id", "path", "embedding", "max_num_patches", "error", "price", "tags"]
    assert table.schema.field("price").type == pa.float64() and table.schema.field("tags").type == pa.list_(pa.string())
    assert table["id"].to_pylist() == manifest["sku"].to_pylist()
    assert table["path"].to_pylist() == manifest["url"].to_pylist()  # as written in the manifest
    assert table["price"].to_pylist() == manifest["price"].to_pylist()
    assert table["tags"].to_pylist() == manifest["tags"].to_pylist()
    errors = table["error"].to_pylist()
    assert errors[:6] == [None] * 6
    assert errors[6].startswith("image_fetch_failed: cannot read") and "gone.jpg" in errors[6]
    assert errors[7].startswith("invalid_image: ")
    expected = tiny_model.embed_images([image_folder / n for n in names], max_num_patches=PATCHES)
    assert np.abs(embeddings(table.slice(0, 6)) - expected).max() <= 1e-6


def test_tar_shards(ray_cluster, image_folder, tiny_checkpoint, tiny_model, tmp_path):
    names = good_images(image_folder)[:10]
    shards = tmp_path / "shards"
    shards.mkdir()
    for s in range(2):
        samples = [{f"{i:05d}.{Path(n).suffix[1:]}": (image_folder / n).read_bytes(),
                    f"{i:05d}.json": json.dumps({"name": n}).encode()} for i, n in enumerate(names) if i % 2 == s]
        samples.append({f"bad{s}.jpg": b"not a jpeg", f"bad{s}.txt": b"broken on purpose"})
        write_shard(shards / f"shard-{s:03d}.tar", samples)
    summary = run_embed(ray_cluster, f"{shards}/shard-{{000..001}}.tar", tmp_path / "out", tiny_checkpoint)
    table = read_output(tmp_path / "out").sort_by("id")
    assert summary.rows == 12 and summary.errors == 2
    ok = table.filter(pa.compute.is_null(table["error"]))
    order = [json.loads(j)["name"] for j in ok["json"].to_pylist()]
    assert sorted(order) == sorted(names)
    assert ok["id"].to_pylist() == sorted(f"{shards}/shard-{i % 2:03d}.tar/{i:05d}" for i in range(10))
    expected = tiny_model.embed_images([image_folder / n for n in order], max_num_patches=PATCHES)
    assert np.abs(embeddings(ok) - expected).max() <= 1e-6
    bad = table.filter(pa.compute.invert(pa.compute.is_null(table["error"])))
    assert bad["key"].to_pylist() == ["bad0", "bad1"] and bad["txt"].to_pylist() == ["broken on purpose"] * 2


def test_a_worker_that_cannot_load_fails_the_job_clearly(ray_cluster, image_folder, tmp_path):
    """Not a hang, not a Ray traceback: a BatchError naming the worker's own error."""
    with pytest.raises(BatchError, match=r"a worker failed: sigserve.errors.ModelLoadError: .*missing.* is not a checkpoint"):
        run_embed(ray_cluster, image_folder, tmp_path / "out", tmp_path / "missing")


def cli(args: list[str], env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    code = "import sys; from sigserve.cli import main; sys.argv[0] = 'sigserve'; main()"
    return subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=timeout)


def test_killed_job_resumes_every_input_exactly_once(ray_cluster, image_folder, tiny_checkpoint, tmp_path):
    """The same command twice: first killed (SIGKILL) after one part is committed and a second one is
    written but not yet listed; then rerun with --resume, to the end."""
    dest = tmp_path / "out"
    args = ["batch", "--input", str(image_folder), "--output", str(dest), "--model", str(tiny_checkpoint),
            "--ray-address", ray_cluster.address, "--workers", "1", "--threads", "1", "--batch-size", "2",
            "--max-num-patches", str(PATCHES), "--part-rows", "8", "--no-progress"]
    env = {**os.environ, **ray_cluster.env}

    killed = cli(args, {**env, CRASH_ENV: "written:2"})
    assert killed.returncode == -9, killed.stderr[-3000:]
    manifest = json.loads((dest / MANIFEST).read_text())
    assert [p["file"] for p in manifest["parts"]] == ["part-00000.parquet"] and not manifest["complete"]
    assert (dest / "part-00001.parquet").exists()  # written, never listed: its rows are not done
    kept = (dest / "part-00000.parquet").read_bytes()

    refused = cli(args, env)  # without --resume, an output already there is refused, before Ray starts
    assert refused.returncode == 2 and "add --resume" in refused.stderr

    resumed = cli(args + ["--resume", "--summary-json", str(tmp_path / "summary.json")], env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    table = read_output(dest)  # also: the part files are exactly the listed ones
    ids = table["id"].to_pylist()
    everything = sorted(good_images(image_folder) + list(BAD_IMAGES))
    assert sorted(ids) == everything and len(ids) == len(set(ids))  # every input exactly once
    assert (dest / "part-00000.parquet").read_bytes() == kept  # the committed part was not redone
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["skipped"] == 8 and summary["rows"] == len(everything) - 8
    assert json.loads((dest / MANIFEST).read_text())["complete"]


def test_cli_without_ray_says_how_to_install(tmp_path, image_folder):
    """`ray` made unimportable (as when the extra is not installed): one line with the hint, exit 2,
    before anything is listed, loaded or written."""
    code = ("import sys; sys.modules['ray'] = None; from sigserve.cli import main; sys.argv[0] = 'sigserve'; main()")
    dest = tmp_path / "out"
    done = subprocess.run([sys.executable, "-c", code, "batch", "--input", str(image_folder), "--output", str(dest),
                           "--model", "/nonexistent"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"error: {INSTALL_HINT}"]
    assert 'pip install -e ".[batch]"' in INSTALL_HINT and "scripts/setup.sh batch" in INSTALL_HINT
    assert not dest.exists()
