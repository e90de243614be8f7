"""Where a batch job's rows go, and what makes it resumable.

A sink receives complete rows on the driver and commits them durably; `prepare` tells the driver which
input ids are already committed, so that a rerun with --resume skips exactly those. The Parquet sink
writes numbered parts and a manifest that lists the committed ones:

    DEST/part-00000.parquet ...   id, path, embedding fixed_size_list<float32>[D], max_num_patches, error, metadata...
    DEST/_manifest.json           the job's settings, the committed parts, and the summary once complete

A part is written to a temporary name, renamed, and only then listed in the manifest (itself replaced
atomically). A kill at any point leaves every listed part whole; a part written but not yet listed is
deleted by the next run, and its rows are redone.

Another destination (a sigserve collection, `collection:NAME`) is a class with the methods of `Sink`
and a branch in `open_sink`.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from typing import Protocol

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from sigserve.batch.schema import EMBEDDING, ERROR, ID, output_schema
from sigserve.batch.sources import filesystem
from sigserve.errors import BatchError

# Names that start with "_" are skipped by Parquet readers (pyarrow, pandas, Spark, Ray), so that
# `pd.read_parquet(DEST)` reads the parts alone, even while a job is writing.
MANIFEST = "_manifest.json"
FORMAT = "sigserve-batch/1"
PART_NAME = "part-{:05d}.parquet"
PART_PATTERN = re.compile(r"part-\d{5}\.parquet$")
TMP_PATTERN = re.compile(r"_(part-\d{5}\.parquet|_manifest\.json)\.tmp$")  # ours, from a killed run
DEFAULT_PART_ROWS = 10_000  # about 30 MB per part at 768 dimensions
DEFAULT_PART_SECONDS = 120.0  # a part at least this often, so a slow job loses little when killed
RESUME_KEYS = ("input", "model", "dummy", "precision", "max_num_patches")  # what changes the rows
CRASH_ENV = "SIGSERVE_BATCH_TEST_CRASH"  # tests only: "written:N" / "committed:N" kills the driver there


class Sink(Protocol):
    description: str

    def prepare(self, settings: dict, resume: bool) -> set[str]:
        """Check DEST against this job (writing nothing); the ids already committed when resuming."""

    def begin(self) -> None:
        """The job starts (Ray is up): claim DEST, drop anything uncommitted from a killed run."""

    def write(self, table: pa.Table) -> None:
        """Rows with the output columns (embedding typed fixed_size_list<float32>[D]); may buffer them."""

    def flush(self) -> None:
        """Commit every row written so far."""

    def finish(self, summary: dict) -> None:
        """Commit the rest and mark the job complete."""


def open_sink(dest: str, metadata: pa.Schema, part_rows: int = DEFAULT_PART_ROWS,
              part_seconds: float = DEFAULT_PART_SECONDS) -> Sink:
    if dest.startswith("collection:"):
        # Not built yet: a CollectionSink with the Sink methods goes here (prepare: the ids the collection
        # holds; write: Collection.add_embeddings, which also wants each image's content hash).
        raise BatchError(f"{dest}: sigserve batch cannot write into a collection yet; write Parquet to a folder instead")
    return ParquetSink(dest, metadata, part_rows, part_seconds)


class ParquetSink:
    def __init__(self, dest: str, metadata: pa.Schema, part_rows: int, part_seconds: float):
        self.description = dest
        self.fs, self.root = filesystem(dest)
        self.metadata = metadata
        self.part_rows, self.part_seconds = part_rows, part_seconds
        self.manifest: dict = {}
        self.buffer: list[pa.Table] = []
        self.buffered = 0
        self.last_flush = time.monotonic()
        self.schema: pa.Schema | None = None

    # -- the Sink methods ---------------------------------------------------------------------

    def prepare(self, settings: dict, resume: bool) -> set[str]:
        old = self._read_manifest()
        if old is None:
            ours = [p for p in self._listing() if PART_PATTERN.match(p)]
            if ours:
                raise BatchError(f"{self.description} holds {ours[0]} but no {MANIFEST}: not a sigserve batch "
                                 "output; choose an empty folder")
            self.manifest = {"format": FORMAT, "settings": settings, "parts": [], "complete": False}
            return set()
        if old["parts"] and not resume:
            rows = sum(p["rows"] for p in old["parts"])
            raise BatchError(f"{self.description} already holds a batch output ({rows} rows in {len(old['parts'])} "
                             "parts); add --resume to continue it, or choose another folder")
        if old["parts"]:
            _check_same_job(old["settings"], settings, self.description)
        self.manifest = {**old, "settings": settings if not old["parts"] else old["settings"], "complete": False}
        self.manifest.pop("summary", None)
        return self._committed_ids()

    def write(self, table: pa.Table) -> None:
        if self.schema is None:
            self.schema = output_schema(self.metadata, table.schema.field(EMBEDDING).type.list_size)
        self.buffer.append(table.select(self.schema.names).cast(self.schema))
        self.buffered += table.num_rows
        while self.buffered >= self.part_rows:
            self._commit(self.part_rows)
        if self.buffered and time.monotonic() - self.last_flush >= self.part_seconds:
            self.flush()

    def flush(self) -> None:
        self._commit(self.buffered)

    def _commit(self, rows: int) -> None:
        """Write the first `rows` buffered rows as the next part and list it in the manifest."""
        self.last_flush = time.monotonic()
        if not rows:
            return
        buffered = pa.concat_tables(self.buffer)
        table, rest = buffered.slice(0, rows), buffered.slice(rows)
        number = len(self.manifest["parts"])
        name = PART_NAME.format(number)
        self._ensure_root()
        tmp = f"{self.root}/_{name}.tmp"
        pq.write_table(table, tmp, filesystem=self.fs)
        self.fs.move(tmp, f"{self.root}/{name}")
        _test_crash("written", number + 1)
        errors = table.num_rows - table[ERROR].null_count
        self.manifest["parts"].append({"file": name, "rows": table.num_rows, "errors": errors})
        self._write_manifest()
        _test_crash("committed", number + 1)
        self.buffer, self.buffered = ([rest] if rest.num_rows else []), rest.num_rows

    def finish(self, summary: dict) -> None:
        self.flush()
        self.manifest.update(complete=True, summary=summary)
        self._write_manifest()

    # -- files ---------------------------------------------------------------------------------

    def begin(self) -> None:
        """Write the manifest (this folder is now a batch output) and delete parts it does not list."""
        self._ensure_root()
        listed = {p["file"] for p in self.manifest["parts"]}
        for name in self._listing():
            if (PART_PATTERN.match(name) and name not in listed) or TMP_PATTERN.match(name):
                self.fs.delete_file(f"{self.root}/{name}")
        self._write_manifest()

    def _committed_ids(self) -> set[str]:
        done: set[str] = set()
        for part in self.manifest["parts"]:
            try:
                done.update(pq.read_table(f"{self.root}/{part['file']}", columns=[ID], filesystem=self.fs)[ID].to_pylist())
            except (OSError, pa.ArrowInvalid) as exc:
                raise BatchError(f"{self.description}: {part['file']} is listed in {MANIFEST} but cannot be read: {exc}") from exc
        return done

    def _read_manifest(self) -> dict | None:
        path = f"{self.root}/{MANIFEST}"
        if self.fs.get_file_info(path).type == pafs.FileType.NotFound:
            return None
        with self.fs.open_input_stream(path) as f:
            manifest = json.loads(f.read())
        if manifest.get("format") != FORMAT:
            raise BatchError(f"{self.description}/{MANIFEST} is not a sigserve batch manifest ({FORMAT})")
        return manifest

    def _write_manifest(self) -> None:
        tmp = f"{self.root}/_{MANIFEST}.tmp"
        with self.fs.open_output_stream(tmp) as f:
            f.write(json.dumps(self.manifest, indent=1).encode())
        self.fs.move(tmp, f"{self.root}/{MANIFEST}")

    def _listing(self) -> list[str]:
        infos = self.fs.get_file_info(pafs.FileSelector(self.root, allow_not_found=True))
        return [os.path.basename(i.path) for i in infos if i.type == pafs.FileType.File]

    def _ensure_root(self) -> None:
        self.fs.create_dir(self.root, recursive=True)


def _check_same_job(old: dict, new: dict, dest: str) -> None:
    """A resumed job must produce the same rows as the first run, or the output would mix them."""
    changed = [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in RESUME_KEYS if old.get(k) != new.get(k)]
    if changed:
        raise BatchError(f"{dest} was written by a different job; --resume needs the same {', '.join(RESUME_KEYS)} "
                         f"({'; '.join(changed)})")


def _test_crash(point: str, parts: int) -> None:
    """For the resume tests: die like a killed job, exactly at a commit step (SIGKILL: no clean-up)."""
    if os.environ.get(CRASH_ENV) == f"{point}:{parts}":
        os.kill(os.getpid(), signal.SIGKILL)
