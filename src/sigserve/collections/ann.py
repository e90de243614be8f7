"""Approximate nearest-neighbour search for large collections.

Below `INDEX_THRESHOLD` rows LanceDB scans every vector (exact). Past it an IVF index with RaBitQ
codes (LanceDB's IvfRq) is built; a query probes `NPROBES` partitions, takes `REFINE_FACTOR` x
top_k candidates from the compressed codes, and re-ranks them on the full float32 vectors, so the
order and scores returned are exact for the candidates found. Rows added after the build are
searched exhaustively and folded into the index by `optimize` (LanceDB merges them).

Why IvfRq: measured on clustered synthetic 768-d vectors (bench/collections_bench.py; docs/
collections.md has the table), it builds in seconds where IVF-PQ took 50-90 s at 50k rows on
2 cores, and with refinement reaches the same recall at lower latency. Partition size: at 200k rows,
130 partitions (~1540 rows each) gave recall@10 0.994 with a 28 s build, 260 partitions 0.999 with a
49 s build; training cost grows with the square of the partition count, so ~1536 rows per partition
keeps a 1M-row build to minutes on 2 cores."""

from __future__ import annotations

from typing import Literal

INDEX_THRESHOLD = 100_000  # rows: exact search below, an ANN index from here on
MIN_INDEX_ROWS = 5_000  # an IVF index needs enough rows to train its partitions
ROWS_PER_PARTITION = 1536
NPROBES = 20
REFINE_FACTOR = 10  # 1M rows (bench/ann_study.py): recall@10 1.000 at 10 as at 30, p50 11-13 ms against 16-21 ms
UNINDEXED_FRACTION = 0.1  # re-optimise when this share of rows is not in the index yet
DISTANCE: Literal["dot"] = "dot"  # vectors are L2-normalised: dot = cosine, without recomputing norms


def vector_index(table):
    for index in table.list_indices():
        if list(index.columns) == ["vector"]:
            return index
    return None


def index_state(table, threshold: int) -> dict:
    index = vector_index(table)
    rows = table.count_rows()
    if index is None:
        return {"type": None, "rows": rows, "threshold": threshold, "unindexed_rows": rows}
    stats = table.index_stats(index.name)
    return {"type": stats.index_type if stats else index.index_type, "rows": rows, "threshold": threshold,
            "unindexed_rows": stats.num_unindexed_rows if stats else None}


def needs_work(table, threshold: int) -> bool:
    """True when an index should be built (past the threshold) or brought up to date."""
    state = index_state(table, threshold)
    if state["rows"] < max(threshold, MIN_INDEX_ROWS):
        return False
    if state["type"] is None:
        return True
    return (state["unindexed_rows"] or 0) > UNINDEXED_FRACTION * state["rows"]


def build(table) -> None:
    """Train and write a fresh index over every row (minutes at 1M rows on 2 cores)."""
    from lancedb.index import IvfRq  # lazily, as store.py imports lancedb

    rows = table.count_rows()
    partitions = max(1, rows // ROWS_PER_PARTITION)
    table.create_index("vector", config=IvfRq(distance_type=DISTANCE, num_partitions=partitions), replace=True)


def tune(query, indexed: bool):
    """Search parameters for a LanceDB vector query."""
    query = query.distance_type(DISTANCE)
    return query.nprobes(NPROBES).refine_factor(REFINE_FACTOR) if indexed else query
