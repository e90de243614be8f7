"""The columns of a batch job, named once: what the output rows hold, and the internal columns that
travel between the steps (listing -> reading -> embedding -> driver) and are dropped before anything
is written."""

from __future__ import annotations

import pyarrow as pa

from sigserve.errors import InputError

# Output columns, in this order, then the input's metadata columns.
ID, PATH, EMBEDDING, MAX_NUM_PATCHES, ERROR = "id", "path", "embedding", "max_num_patches", "error"
OUTPUT_COLUMNS = (ID, PATH, EMBEDDING, MAX_NUM_PATCHES, ERROR)

# Internal columns (prefixed so that they cannot clash with a manifest's own columns).
LOCATION = "_sigserve_location"  # where the actor reads the bytes (absolute path or URI)
DATA = "_sigserve_data"  # the image file's bytes, between reading and decoding
DONE = "_sigserve_done"  # tar shards: keys already written by an earlier run (resume)
WORKER = "_sigserve_worker"  # which actor embedded the row
BUSY_S = "_sigserve_busy_s"  # the actor's seconds for the row's batch, divided over its rows
PEAK_RSS = "_sigserve_peak_rss"  # the actor's peak resident memory so far, bytes
STATS_COLUMNS = (WORKER, BUSY_S, PEAK_RSS)
RESERVED = set(OUTPUT_COLUMNS) | {LOCATION, DATA, DONE, *STATS_COLUMNS}


def output_schema(metadata: pa.Schema, dim: int) -> pa.Schema:
    """The Parquet schema of every part: the fixed columns, then the input's metadata columns.
    `embedding` is null on error rows; L2-normalised float32 otherwise."""
    fixed = [
        pa.field(ID, pa.string(), nullable=False),
        pa.field(PATH, pa.string()),
        pa.field(EMBEDDING, pa.list_(pa.float32(), dim)),
        pa.field(MAX_NUM_PATCHES, pa.int32()),
        pa.field(ERROR, pa.string()),
    ]
    return pa.schema(fixed + list(metadata))


def error_text(exc: Exception) -> str:
    """The `error` cell for a failed row: the typed error's code and reason, e.g.
    "invalid_image: cannot decode image: ...". Anything unexpected keeps its type name."""
    if isinstance(exc, InputError):
        return f"{exc.code}: {exc.reason}"
    return f"internal_error: {type(exc).__name__}: {exc}"
