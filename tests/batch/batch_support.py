"""Inputs and checks shared by the batch tests (and nothing Ray-specific)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from sigserve.batch.sink import MANIFEST

# name -> why it cannot be embedded (the start of the error code in its row)
BAD_IMAGES = {
    "broken/truncated.jpg": "invalid_image",
    "broken/garbage.jpg": "invalid_image",
    "broken/empty.png": "invalid_image",
    "broken/text.png": "invalid_image",
    "huge.png": "image_too_large",  # more pixels than the model's cap: refused before decoding
}
GOOD_COUNT = 45


def make_images(root: Path) -> Path:
    """GOOD_COUNT small images of varied sizes, aspect ratios, formats and modes (some in subfolders),
    plus the BAD_IMAGES."""
    rng = np.random.default_rng(7)
    formats = [("jpg", "RGB"), ("png", "RGBA"), ("png", "L"), ("webp", "RGB"), ("jpg", "RGB")]
    for i in range(GOOD_COUNT):
        ext, mode = formats[i % len(formats)]
        h, w = int(rng.integers(8, 160)), int(rng.integers(8, 160))
        pixels = rng.integers(0, 256, (h, w, 4), dtype=np.uint8)
        image = Image.fromarray(pixels, "RGBA").convert(mode)
        path = root / (f"sub{i % 3}/" if i % 2 else "") / f"img{i:03d}.{ext}"
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path)
    (root / "broken").mkdir()
    jpeg = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(jpeg, "JPEG")
    (root / "broken/truncated.jpg").write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
    (root / "broken/garbage.jpg").write_bytes(rng.integers(0, 256, 500, dtype=np.uint8).tobytes())
    (root / "broken/empty.png").write_bytes(b"")
    (root / "broken/text.png").write_text("not an image at all")
    Image.new("1", (9000, 8000)).save(root / "huge.png")  # 72 MP in a few kB: over the 64 MP cap
    (root / "notes.txt").write_text("not an image: skipped by extension")
    return root


def good_images(folder: Path) -> list[str]:
    """Ids (relative paths) of the decodable images, sorted."""
    ids = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.*") if p.suffix != ".txt")
    return [i for i in ids if i not in BAD_IMAGES]


def read_output(dest: Path) -> pa.Table:
    """Every committed part, in part order, with the manifest's part list checked against the folder."""
    manifest = json.loads((dest / MANIFEST).read_text())
    names = [p["file"] for p in manifest["parts"]]
    assert sorted(p.name for p in dest.glob("part-*.parquet")) == names
    tables = [pq.read_table(dest / n) for n in names]
    for part, table in zip(manifest["parts"], tables):
        assert part["rows"] == table.num_rows
    return pa.concat_tables(tables)


def embeddings(table: pa.Table) -> np.ndarray:
    return np.array(table["embedding"].to_pylist(), np.float32)


def write_shard(path, samples: list[dict[str, bytes]], truncate: bool = False):
    """A WebDataset tar: per sample, members named <key>.<ext>."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for sample in samples:
            for name, data in sample.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    data = buf.getvalue()
    path.write_bytes(data[: len(data) * 2 // 3] if truncate else data)
