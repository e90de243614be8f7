"""Reading, in the embed actors on the cluster: the bytes of each input, never raising for one input.

A file that is missing, unreadable or larger than `max_bytes` gets its error in the row's `error`
column and no data; the embedder passes such rows straight through. Only names travel to the actors
(the driver lists them), and each actor reads its own rows, so reading is spread like the model.
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import pyarrow as pa

from sigserve.batch.schema import DATA, DONE, ERROR, ID, LOCATION, PATH, error_text
from sigserve.batch.sources import KEY, SHARD, TAR_METADATA, TAR_SIDECARS, filesystem
from sigserve.errors import ImageFetchError, ImageFetchTooLargeError
from sigserve.images import IMAGE_EXTENSIONS

if TYPE_CHECKING:
    import httpx

DEFAULT_MAX_BYTES = 64 * 1024 * 1024  # per image file: a guard against reading huge non-images whole
READ_THREADS = 8  # concurrent reads per batch: object stores and HTTP answer slowly but in parallel
HTTP_TIMEOUT_S = 60.0
SHARD_ERROR_KEY = "#shard"  # the key of the row that reports a shard which cannot be read (to its end)


def read_files(batch: pa.Table, max_bytes: int = DEFAULT_MAX_BYTES) -> pa.Table:
    """(id, path, location, metadata...) -> (id, path, metadata..., data, error)."""
    reader = Reader(max_bytes)
    try:
        with ThreadPoolExecutor(READ_THREADS) as pool:
            results = list(pool.map(reader.read, batch[LOCATION].to_pylist()))
    finally:
        reader.close()
    return _with_data(batch.drop_columns([LOCATION]), [d for d, _ in results], [e for _, e in results])


def read_shards(batch: pa.Table, max_bytes: int = DEFAULT_MAX_BYTES, chunk_rows: int = 32) -> Iterator[pa.Table]:
    """(shard, location, done) rows -> the shards' samples not yet done, in chunks of rows
    (id, path, shard, key, json, txt, cls, data, error). A shard that cannot be read, or breaks off,
    adds one error row, id "<shard>/#shard", after the samples read before the break."""
    reader = Reader(max_bytes)
    try:
        for shard, location, done in zip(*(batch[c].to_pylist() for c in (SHARD, LOCATION, DONE))):
            chunk: list[dict] = []
            for row in _samples(reader, shard, location, set(done), max_bytes):
                chunk.append(row)
                if len(chunk) >= chunk_rows:
                    yield _shard_table(chunk)
                    chunk = []
            if chunk:
                yield _shard_table(chunk)
    finally:
        reader.close()


class Reader:
    """Bytes from a local path, an object-store URI (pyarrow) or an http(s) URL, as (data, error)."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._http: httpx.Client | None = None
        self._filesystems: dict[str, tuple] = {}

    def read(self, location: str) -> tuple[bytes | None, str | None]:
        try:
            if not location:
                raise ImageFetchError(None, "no path or URL given")
            if location.startswith(("http://", "https://")):
                return self._read_http(location), None
            with self.open(location) as f:
                return self._bounded(f, location), None
        except Exception as exc:  # noqa: BLE001 - any failure is this row's, never the job's
            if not isinstance(exc, ImageFetchError):
                exc = ImageFetchError(None, f"cannot read {location}: {exc}")
            return None, error_text(exc)

    def open(self, location: str):
        if "://" not in location:
            return open(location, "rb")
        # One client per scheme://bucket (making one can cost a request); pyarrow's path for a URI is
        # the URI minus a prefix that is the same for every object of that bucket.
        root = "/".join(location.split("/", 3)[:3])
        if root not in self._filesystems:
            fs, path = filesystem(location)
            self._filesystems[root] = (fs, len(location) - len(path))
        fs, strip = self._filesystems[root]
        return fs.open_input_stream(location[strip:])

    def _bounded(self, f, location: str) -> bytes:
        data = f.read(self.max_bytes + 1)
        if len(data) > self.max_bytes:
            raise ImageFetchTooLargeError(None, f"{location} is larger than the limit of {self.max_bytes} bytes")
        return data

    def _read_http(self, url: str) -> bytes:
        import httpx

        if self._http is None:
            self._http = httpx.Client(timeout=HTTP_TIMEOUT_S, follow_redirects=True)
        with self._http.stream("GET", url) as response:
            response.raise_for_status()
            data = bytearray()
            for piece in response.iter_bytes():
                data += piece
                if len(data) > self.max_bytes:
                    raise ImageFetchTooLargeError(None, f"{url} is larger than the limit of {self.max_bytes} bytes")
        return bytes(data)

    def close(self) -> None:
        if self._http is not None:
            self._http.close()


# -- tar shards --------------------------------------------------------------------------------

def _samples(reader: Reader, shard: str, location: str, done: set[str], max_bytes: int) -> Iterator[dict]:
    """WebDataset samples of one shard, streamed: members sharing a key (the path up to the first dot
    of the file name) are consecutive; the first with an image suffix is the image."""
    sample: dict | None = None
    try:
        with reader.open(location) as f, tarfile.open(fileobj=f, mode="r|*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                key, ext = _split(member.name)
                if sample is not None and key != sample[KEY]:
                    yield from _finish(sample, shard, done)
                    sample = None
                if sample is None:
                    sample = {KEY: key, "image": None, "error": None}
                if key in done:
                    continue  # written by an earlier run: not even read
                _take(sample, ext, member, tar, max_bytes)
        if sample is not None:
            yield from _finish(sample, shard, done)
    except (OSError, tarfile.TarError, EOFError) as exc:
        if sample is not None:
            yield from _finish(sample, shard, done)
        if SHARD_ERROR_KEY not in done:
            row = _row(f"{shard}/{SHARD_ERROR_KEY}", shard, None,
                       error_text(ImageFetchError(None, f"cannot read tar shard {shard}: {exc}")))
            yield {**row, SHARD: shard, KEY: SHARD_ERROR_KEY}


def _split(name: str) -> tuple[str, str]:
    folder, base = os.path.split(name)
    stem, _, ext = base.partition(".")
    return os.path.join(folder, stem), ext.lower()


def _take(sample: dict, ext: str, member: tarfile.TarInfo, tar: tarfile.TarFile, max_bytes: int) -> None:
    if f".{ext}" in IMAGE_EXTENSIONS and sample["image"] is None and sample["error"] is None:
        if member.size > max_bytes:
            sample["error"] = error_text(ImageFetchTooLargeError(None, f"{member.name} has {member.size} bytes, "
                                                                       f"more than the limit of {max_bytes}"))
        else:
            sample["image"], sample["member"] = _contents(tar, member), member.name
    elif ext in TAR_SIDECARS:
        sample[ext] = _contents(tar, member).decode("utf-8", errors="replace")


def _contents(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    f = tar.extractfile(member)  # None only for what is not a regular file, which _samples skips
    return f.read() if f is not None else b""


def _finish(sample: dict, shard: str, done: set[str]) -> Iterator[dict]:
    if sample[KEY] in done:
        return
    error = sample["error"]
    if sample["image"] is None and error is None:
        error = error_text(ImageFetchError(None, f"sample {sample[KEY]!r} has no image member"))
    row = _row(f"{shard}/{sample[KEY]}", f"{shard}/{sample.get('member', sample[KEY])}", sample["image"], error)
    row.update({SHARD: shard, KEY: sample[KEY], **{ext: sample.get(ext) for ext in TAR_SIDECARS}})
    yield row


def _row(id_: str, path: str, data: bytes | None, error: str | None) -> dict:
    return {ID: id_, PATH: path, DATA: data, ERROR: error}


def _shard_table(rows: list[dict]) -> pa.Table:
    columns = {ID: pa.string(), PATH: pa.string(), **{f.name: f.type for f in TAR_METADATA}}
    table = pa.table({name: pa.array([r.get(name) for r in rows], kind) for name, kind in columns.items()})
    return _with_data(table, [r[DATA] for r in rows], [r[ERROR] for r in rows])


def _with_data(table: pa.Table, data: list, errors: list) -> pa.Table:
    return table.append_column(DATA, pa.array(data, pa.large_binary())).append_column(ERROR, pa.array(errors, pa.string()))
