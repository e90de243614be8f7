"""The parts of `sigserve batch` that need no Ray: listing SRC, reading bytes and tar shards, the
Parquet sink's commit and resume rules. (The whole job on a real cluster: test_batch_ray.py.)"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sigserve.batch.read import read_files, read_shards
from sigserve.batch.schema import DATA, DONE, ERROR, ID, LOCATION, PATH
from sigserve.batch.sink import MANIFEST, ParquetSink
from sigserve.batch.sources import open_source
from sigserve.errors import BatchError
from tests.batch.batch_support import BAD_IMAGES, good_images, write_shard


def test_folder_lists_images_recursively_with_relative_ids(image_folder):
    source = open_source(str(image_folder))
    ids = source.table[ID].to_pylist()
    assert ids == sorted(good_images(image_folder) + list(BAD_IMAGES))  # notes.txt is not an image
    assert source.total == len(ids) and source.metadata.names == []
    assert all(loc == str(image_folder / i) for i, loc in zip(ids, source.table[LOCATION].to_pylist()))


def test_glob_and_missing_input(image_folder):
    source = open_source(str(image_folder / "sub*" / "*.png"))
    assert source.total and all(i.endswith(".png") and "/sub" in i for i in source.table[ID].to_pylist())
    with pytest.raises(BatchError, match="no such file"):
        open_source(str(image_folder / "nowhere"))
    with pytest.raises(BatchError, match="nothing matches"):
        open_source(str(image_folder / "*.heic"))


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_manifest_paths_ids_and_metadata(tmp_path, image_folder, fmt):
    rows = {"id": ["0007", "0008", "0009"], "image_path": [str(image_folder / "img000.jpg"), "rel/x.jpg", None],
            "label": ["cat", "dog", "none"]}
    path = tmp_path / f"items.{fmt}"
    if fmt == "csv":
        path.write_text(f"id,image_path,label\n0007,{rows['image_path'][0]},cat\n0008,rel/x.jpg,dog\n0009,,none\n")
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps({k: v[i] for k, v in rows.items()}) + "\n" for i in range(3)))
    else:
        pq.write_table(pa.table(rows), path)
    source = open_source(str(path))
    table = source.table
    assert table[ID].to_pylist() == ["0007", "0008", "0009"]  # CSV text stays text: not the number 7
    assert table["label"].to_pylist() == ["cat", "dog", "none"] and source.metadata.names == ["label"]
    locations = table[LOCATION].to_pylist()
    assert locations[0] == rows["image_path"][0]
    assert locations[1] == str(tmp_path / "rel/x.jpg")  # relative to the manifest's folder
    assert locations[2] == ""  # no path: this row becomes an error row, the job goes on


def test_manifest_errors(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"where": "a.jpg"}\n')
    with pytest.raises(BatchError, match="no path column"):
        open_source(str(path))
    assert open_source(str(path), path_column="where").table[ID].to_pylist() == ["a.jpg"]
    path.write_text('{"path": "a.jpg", "error": "x"}\n')
    with pytest.raises(BatchError, match="clash"):
        open_source(str(path))
    path.write_text('{"path": "a.jpg"}\n{"path": "a.jpg"}\n')
    with pytest.raises(BatchError, match="unique.*'a.jpg' appears 2 times"):
        open_source(str(path))


def test_read_files_never_raises(tmp_path):
    (tmp_path / "ok.bin").write_bytes(b"12345")
    (tmp_path / "big.bin").write_bytes(b"x" * 100)
    batch = pa.table({ID: ["a", "b", "c", "d"], PATH: ["a", "b", "c", "d"],
                      LOCATION: [str(tmp_path / "ok.bin"), str(tmp_path / "missing.jpg"), str(tmp_path / "big.bin"), ""]})
    out = read_files(batch, max_bytes=50)
    assert out[DATA].to_pylist() == [b"12345", None, None, None]
    errors = out[ERROR].to_pylist()
    assert errors[0] is None
    assert errors[1].startswith("image_fetch_failed: cannot read") and "missing.jpg" in errors[1]
    assert errors[2].startswith("image_fetch_too_large:")
    assert errors[3] == "image_fetch_failed: no path or URL given"


def test_tar_shards_samples_sidecars_resume_and_breaks(tmp_path):
    samples = [{f"d/k{i}.jpg": b"img%d" % i, f"d/k{i}.json": b'{"i": %d}' % i, f"d/k{i}.txt": b"text %d" % i}
               for i in range(4)]
    samples.append({"d/k4.json": b"{}"})  # no image: an error row
    write_shard(tmp_path / "s0.tar", samples)
    write_shard(tmp_path / "s1.tar", [{"k.png": b"x" * 4000}, {"j.png": b"y" * 4000}], truncate=True)
    source = open_source(str(tmp_path / "s{0..1}.tar"))
    assert source.kind == "tar" and source.total is None
    done = {f"{tmp_path}/s0.tar/d/k1"}  # an earlier run wrote this one
    todo = source.pending(done)
    assert todo[DONE].to_pylist() == [["d/k1"], []]
    rows = pa.concat_tables(list(read_shards(todo))).to_pylist()
    by_key = {(r["shard"].rsplit("/", 1)[1], r["key"]): r for r in rows}
    assert ("s0.tar", "d/k1") not in by_key  # skipped: resume
    k0 = by_key[("s0.tar", "d/k0")]
    assert k0[ID] == f"{tmp_path}/s0.tar/d/k0" and k0[DATA] == b"img0" and k0["json"] == '{"i": 0}'
    assert k0["txt"] == "text 0" and k0[ERROR] is None and k0[PATH] == f"{tmp_path}/s0.tar/d/k0.jpg"
    assert by_key[("s0.tar", "d/k4")][ERROR] == "image_fetch_failed: sample 'd/k4' has no image member"
    broken = by_key[("s1.tar", "#shard")]  # the truncated shard: what was read, then one error row
    assert broken[ERROR].startswith("image_fetch_failed: cannot read tar shard")
    assert by_key[("s1.tar", "k")][DATA] == b"x" * 4000


# -- the Parquet sink -------------------------------------------------------------------------

SETTINGS = {"input": "in", "model": "m", "dummy": False, "backend": "auto", "precision": "fp32", "max_num_patches": 64}


def rows(ids: list[str], dim: int = 4) -> pa.Table:
    vectors = np.arange(len(ids) * dim, dtype=np.float32)
    return pa.table({ID: ids, PATH: ids, "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors), dim),
                     "max_num_patches": pa.array([64] * len(ids), pa.int32()), ERROR: [None] * len(ids),
                     "label": ["x"] * len(ids)})


def sink(dest, part_rows=3):
    return ParquetSink(str(dest), pa.schema([("label", pa.string())]), part_rows, part_seconds=3600)


def test_sink_parts_manifest_and_resume_rules(tmp_path):
    dest = tmp_path / "out"
    s = sink(dest)
    assert s.prepare(SETTINGS, resume=False) == set()
    s.begin()
    s.write(rows(["a", "b", "c", "d"]))  # 3 rows make a part; 1 waits
    assert [p.name for p in dest.glob("part-*")] == ["part-00000.parquet"]
    s.write(rows(["e"]))
    s.finish({"rows": 5})
    manifest = json.loads((dest / MANIFEST).read_text())
    assert [p["rows"] for p in manifest["parts"]] == [3, 2] and manifest["complete"]
    part = pq.read_table(dest / "part-00000.parquet")
    assert part.schema.field("embedding").type == pa.list_(pa.float32(), 4) and part.column_names[-1] == "label"

    with pytest.raises(BatchError, match="already holds a batch output.*--resume"):
        sink(dest).prepare(SETTINGS, resume=False)
    with pytest.raises(BatchError, match="different job.*max_num_patches: 64 -> 256"):
        sink(dest).prepare({**SETTINGS, "max_num_patches": 256}, resume=True)
    again = sink(dest)
    assert again.prepare({**SETTINGS, "backend": "torch"}, resume=True) == {"a", "b", "c", "d", "e"}


def test_sink_drops_uncommitted_parts_and_refuses_foreign_folders(tmp_path):
    dest = tmp_path / "out"
    s = sink(dest)
    s.prepare(SETTINGS, resume=False)
    s.begin()
    s.write(rows(["a", "b", "c"]))
    pq.write_table(rows(["x"]), dest / "part-00001.parquet")  # written, never listed: a killed run
    (dest / "_part-00002.parquet.tmp").write_bytes(b"half a part")  # killed while writing
    resumed = sink(dest)
    assert resumed.prepare(SETTINGS, resume=True) == {"a", "b", "c"}
    resumed.begin()
    assert sorted(p.name for p in dest.iterdir()) == [MANIFEST, "part-00000.parquet"]
    assert pd.read_parquet(dest)["id"].tolist() == ["a", "b", "c"]  # readers skip the "_" manifest

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    pq.write_table(rows(["z"]), foreign / "part-00000.parquet")
    with pytest.raises(BatchError, match="no _manifest.json"):
        sink(foreign).prepare(SETTINGS, resume=True)


def test_collection_destination_is_not_there_yet():
    from sigserve.batch.sink import open_sink

    with pytest.raises(BatchError, match="cannot write into a collection yet"):
        open_sink("collection:photos", pa.schema([]))


def test_uris_take_the_object_store_path(tmp_path, image_folder):
    """file:// goes through pyarrow's filesystem layer exactly as s3:// or gs:// would (listing, glob,
    reading, writing), which this machine cannot reach."""
    local = open_source(str(image_folder))
    remote = open_source(f"file://{image_folder}")
    assert remote.table[ID].to_pylist() == local.table[ID].to_pylist()
    assert remote.table[LOCATION][0].as_py() == f"file://{image_folder}/{local.table[ID][0].as_py()}"
    globbed = open_source(f"file://{image_folder}/sub*/*.png")
    assert globbed.table[ID].to_pylist() == [f"file://{image_folder}/{i}" for i in local.table[ID].to_pylist()
                                             if i.startswith("sub") and i.endswith(".png")]
    read = read_files(remote.table.slice(0, 2))
    assert read[DATA].to_pylist() == [(image_folder / i).read_bytes() for i in local.table[ID][:2].to_pylist()]
    dest = f"file://{tmp_path}/out"
    s = ParquetSink(dest, pa.schema([("label", pa.string())]), 2, part_seconds=3600)
    s.prepare(SETTINGS, resume=False)
    s.begin()
    s.write(rows(["a", "b", "c"]))
    s.finish({})
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [MANIFEST, "part-00000.parquet", "part-00001.parquet"]


def test_manifest_urls_are_fetched_over_http(tmp_path):
    """http(s) rows of a manifest: fetched (here from a server on loopback); a 404 or an oversized
    body is that row's error."""
    import functools
    import http.server
    import threading

    served = tmp_path / "www"
    served.mkdir()
    (served / "small.jpg").write_bytes(b"s" * 100)
    (served / "big.jpg").write_bytes(b"b" * 1000)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        (tmp_path / "m.jsonl").write_text("".join(json.dumps({"url": f"{base}/{n}"}) + "\n"
                                                  for n in ("small.jpg", "nothing.jpg", "big.jpg")))
        source = open_source(str(tmp_path / "m.jsonl"))
        out = read_files(source.table, max_bytes=500)
    finally:
        server.shutdown()
        server.server_close()
    assert out[DATA].to_pylist() == [b"s" * 100, None, None]
    errors = out[ERROR].to_pylist()
    assert errors[0] is None and errors[1].startswith("image_fetch_failed:") and "404" in errors[1]
    assert errors[2].startswith("image_fetch_too_large:")
