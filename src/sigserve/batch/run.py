"""`sigserve.batch.embed`: the job, on Ray Data.

    names of the inputs (driver) -> actor pool (Ray: read + decode + model) -> rows -> sink (driver)

The driver lists SRC (sources.py) and drops what DEST already holds (resume); Ray Data streams the
rest to an actor pool of `workers` actors, each loading the model once and reading, decoding and
embedding with `threads` threads; the driver commits the rows as they arrive (sink.py). Ray Data's
streaming executor keeps memory bounded: the actors only run ahead while the object store budget allows.
Reading happens in the actors, not in separate Ray tasks: a task's worker process would import
sigserve (torch, onnxruntime: seconds and hundreds of MB per process) only to read files.
"""

from __future__ import annotations

import logging
import math
import re
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import pyarrow as pa
from tqdm.auto import tqdm

from sigserve.batch.read import DEFAULT_MAX_BYTES
from sigserve.batch.schema import BUSY_S, ERROR, PEAK_RSS, STATS_COLUMNS, WORKER
from sigserve.batch.sink import DEFAULT_PART_ROWS, open_sink
from sigserve.batch.sources import open_source
from sigserve.batch.worker import Embedder
from sigserve.defaults import DEFAULT_IMAGE_BATCH, DEFAULT_MODEL
from sigserve.errors import BatchError, InvalidArgumentError
from sigserve.images import check_max_num_patches
from sigserve.pipeline import BUCKET_BATCHES, MAX_WINDOW

INSTALL_HINT = ('sigserve batch needs Ray, which is not installed: pip install "sigserve[batch]" '
                '(in a checkout: pip install -e ".[batch]", or scripts/setup.sh batch)')
# Inputs per read task at most (fewer when that would leave workers idle). The rows of one read block
# come back to the driver together, so this is also the grain of progress and of commits.
BLOCK_ROWS = MAX_WINDOW


@dataclass
class Summary:
    output: str
    rows: int = 0  # rows written by this run (errors included)
    errors: int = 0
    skipped: int = 0  # inputs already in DEST from an earlier run (resume)
    seconds: float = 0.0  # the whole call: listing, Ray start and model loading included
    startup_s: float = 0.0  # until the first rows arrived
    images_per_s: float = 0.0  # rows / seconds
    steady_images_per_s: float = 0.0  # after the first rows: the rate once every stage runs
    workers: dict[str, dict] = field(default_factory=dict)  # actor -> rows, busy_s, images_per_s, peak_rss_mb

    def as_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        lines = [f"{self.rows} rows ({self.errors} errors) written to {self.output} in {self.seconds:.1f} s: "
                 f"{self.images_per_s:.2f} images/s ({self.steady_images_per_s:.2f} after a {self.startup_s:.1f} s start)"
                 + (f"; {self.skipped} inputs were already done" if self.skipped else "")]
        for name, w in sorted(self.workers.items()):
            lines.append(f"  worker {name}: {w['rows']} rows, {w['images_per_s']:.2f} images/s while busy, "
                         f"peak memory {w['peak_rss_mb']:.0f} MB")
        return "\n".join(lines)


def require_ray():
    """The `ray` module, or BatchError with the install hint."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise BatchError(INSTALL_HINT) from exc
    return ray


def embed(src: str, dest: str, *, model: str = DEFAULT_MODEL, dummy: bool = False, backend: str | None = None,
          precision: str = "fp32", max_num_patches: int | None = None, batch_size: int = DEFAULT_IMAGE_BATCH,
          workers: int | None = None,
          threads: int | None = None, ray_address: str | None = None, resume: bool = False,
          part_rows: int = DEFAULT_PART_ROWS, path_column: str | None = None, id_column: str | None = None,
          max_image_bytes: int = DEFAULT_MAX_BYTES, progress: bool = True) -> Summary:
    """Embed every image of `src` into `dest` on Ray (a local instance unless `ray_address` is given,
    or the one this process is already connected to). Returns the Summary; bad images are error rows.
    `resume=True` continues an interrupted job in `dest`, skipping the inputs it already holds.
    `max_num_patches`: NaFlex only (None: the model's default); a fixed-resolution model's workers refuse one."""
    start = time.perf_counter()
    ray = require_ray()
    if max_num_patches is not None:
        check_max_num_patches(max_num_patches)
    for name, value in (("batch_size", batch_size), ("workers", workers), ("threads", threads), ("part_rows", part_rows)):
        if value is not None and (not isinstance(value, int) or value < 1):
            raise InvalidArgumentError(f"{name} must be a positive integer, got {value!r}", name)
    source = open_source(src, path_column, id_column)
    sink = open_sink(str(dest), source.metadata, part_rows)
    settings = {"input": str(src), "model": str(model), "dummy": dummy, "backend": backend or "auto",
                "precision": precision, "max_num_patches": max_num_patches}
    done = sink.prepare(settings, resume)
    todo = source.pending(done)
    total = todo.num_rows if source.total is not None else None  # tar shards: unknown until read
    skipped = len(done) if source.total is None else source.total - todo.num_rows
    with ray_session(ray, ray_address):
        workers, threads = plan_workers(ray, workers, threads)
        options = dict(model=str(model), dummy=dummy, backend=backend, precision=precision, threads=threads,
                       max_num_patches=max_num_patches, batch_size=batch_size, kind=source.kind,
                       window=max(batch_size, min(batch_size * BUCKET_BATCHES, MAX_WINDOW)), max_bytes=max_image_bytes)
        dataset = build_dataset(ray, todo, workers, threads, options)
        sink.begin()
        summary = Summary(output=sink.description, skipped=skipped)
        try:
            drive(dataset, sink, summary, start, total, progress)
        except (KeyboardInterrupt, ray.exceptions.RayError) as exc:
            sink.flush()  # the rows already here are complete: keep them for --resume
            if isinstance(exc, KeyboardInterrupt):
                raise
            raise BatchError(f"a worker failed: {_last_line(exc)} (the rows written so far are kept: "
                             "fix the cause and rerun with --resume)") from exc
    sink.finish(summary.as_dict())
    return summary


def _last_line(exc: Exception) -> str:
    """Ray brings a worker's error back as the text of its traceback: its last line names the error."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in str(exc).splitlines()]
    return next((line for line in reversed(lines) if line), type(exc).__name__)


@contextmanager
def ray_session(ray, address: str | None):
    """Connect (or start a local instance), quiet Ray Data's own progress output (ours has the ETA),
    and leave the process as it was."""
    from ray.data import DataContext

    owned = not ray.is_initialized()
    if owned:
        if address:
            ray.init(address=address, logging_level=logging.WARNING)
        else:  # "local": a new instance on this machine, never someone else's cluster found on it
            ray.init(address="local", include_dashboard=False, logging_level=logging.WARNING)
    ctx = DataContext.get_current()
    saved = (ctx.enable_progress_bars, ctx.print_on_execution_start)
    ctx.enable_progress_bars, ctx.print_on_execution_start = False, False
    quiet, handlers = _DropNotices(), logging.getLogger("ray.data").handlers  # Ray Data logs through its own
    for h in handlers:
        h.addFilter(quiet)
    try:
        yield
    finally:
        for h in handlers:
            h.removeFilter(quiet)
        ctx.enable_progress_bars, ctx.print_on_execution_start = saved
        if owned:
            ray.shutdown()


class _DropNotices(logging.Filter):
    """Ray Data's notices that only repeat what our progress bar and summary say."""

    NOTICES = ("Progress bars disabled", "execution finished", "Starting execution", "Execution plan")

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(n in record.getMessage() for n in self.NOTICES)


def plan_workers(ray, workers: int | None, threads: int | None) -> tuple[int, int]:
    """Defaults from the cluster: threads per actor = the CPUs of the smallest node, one actor per
    that many CPUs. A request larger than the cluster waits for nodes (an autoscaler may add them)."""
    cpus = [int(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n.get("Alive")]
    cpus = [c for c in cpus if c > 0] or [1]
    threads = threads or min(cpus)
    workers = workers or max(1, sum(c // threads for c in cpus))
    if workers * threads > sum(cpus):
        logging.getLogger(__name__).warning("%d workers x %d threads need %d CPUs; the cluster has %d now",
                                            workers, threads, workers * threads, sum(cpus))
    return workers, threads


def build_dataset(ray, todo: pa.Table, workers: int, threads: int, options: dict):
    """Blocks of input names (files: up to BLOCK_ROWS, at least 8 blocks per worker when there are
    enough; tar: one shard each) into the actor pool, `window` files or one shard per call."""
    tar = options["kind"] == "tar"
    per_block = 1 if tar else max(1, min(BLOCK_ROWS, math.ceil(todo.num_rows / (8 * workers))))
    blocks = [todo.slice(i, per_block) for i in range(0, todo.num_rows, per_block)] or [todo]
    return ray.data.from_arrow(blocks).map_batches(
        Embedder, batch_format="pyarrow", batch_size=1 if tar else options["window"], fn_constructor_kwargs=options,
        num_cpus=threads, compute=ray.data.ActorPoolStrategy(size=workers))


def drive(dataset, sink, summary: Summary, start: float, total: int | None, progress: bool) -> None:
    """Pull the rows as the actors finish them, commit them, keep the books (times from `start`)."""
    first_at = first_rows = None
    busy: dict[str, tuple[int, float, int]] = {}  # worker -> rows, busy seconds, peak RSS bytes
    with tqdm(total=total, desc="sigserve batch", unit="img", disable=not progress, smoothing=0.05) as bar:
        for table in dataset.iter_batches(batch_format="pyarrow", batch_size=None):
            if first_at is None:
                first_at, first_rows = time.perf_counter(), table.num_rows
            _account(summary, busy, table)
            sink.write(table.drop_columns(list(STATS_COLUMNS)))
            bar.update(table.num_rows)
            bar.set_postfix(errors=summary.errors, refresh=False)
    end = time.perf_counter()
    summary.seconds = end - start
    summary.startup_s = (first_at or end) - start
    summary.images_per_s = summary.rows / summary.seconds if summary.seconds else 0.0
    steady = end - (first_at or end)
    summary.steady_images_per_s = (summary.rows - (first_rows or 0)) / steady if steady > 0 else 0.0
    summary.workers = {name: {"rows": rows, "busy_s": round(s, 3), "images_per_s": rows / s if s else 0.0,
                              "peak_rss_mb": rss / 2**20} for name, (rows, s, rss) in busy.items()}


def _account(summary: Summary, busy: dict, table: pa.Table) -> None:
    summary.rows += table.num_rows
    summary.errors += table.num_rows - table[ERROR].null_count
    names, seconds, rss = (table[c].to_pylist() for c in (WORKER, BUSY_S, PEAK_RSS))
    for name, s, r in zip(names, seconds, rss):
        rows, total_s, peak = busy.get(name, (0, 0.0, 0))
        busy[name] = (rows + 1, total_s + s, max(peak, r))
