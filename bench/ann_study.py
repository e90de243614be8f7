"""ANN query settings at scale (a benchmark, never a test): p50/p99 latency and recall@10 of a
collection's indexed search for several (nprobes, refine_factor) pairs, on the clustered synthetic
vectors of bench/collections_bench.py. The pairs run interleaved for --passes passes on one index
(the first pass also warms the caches: compare the later ones).

    python -m bench.ann_study --rows 1000000 --pairs 20:30,10:10,20:10,10:5 --passes 3

Chose collections/ann.py's REFINE_FACTOR (docs/collections.md)."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.collections_bench import CHUNK, DIM, ann_queries, clustered_vectors, percentiles


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--pairs", default="20:30,10:10,20:10,10:5", help="nprobes:refine_factor, comma separated")
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--queries", type=int, default=200)
    a = ap.parse_args()

    import sigserve
    from sigserve.collections import Collection, Store, ann, create_collection

    model = sigserve.load("bench", dummy=True)  # only its identity: the vectors are given
    store = Store(Path(tempfile.mkdtemp(prefix="ann-study-")) / "store")
    create_collection(store, model, "study")
    col = Collection(store, "study", model)
    data = np.empty((a.rows, DIM), np.float32)
    for start in range(0, a.rows, CHUNK):
        n = min(CHUNK, a.rows - start)
        data[start: start + n] = clustered_vectors(n, seed=start + 1)
        ids = [f"v{i}" for i in range(start, start + n)]
        col.add_embeddings(data[start: start + n], ids=ids, hashes=ids, auto_index=False)
    qs = clustered_vectors(a.queries, seed=10**9)
    truth = np.argsort(-(qs @ data.T), axis=1, kind="stable")[:, :10]
    began = time.perf_counter()
    col.optimize(index=True)
    print(f"{a.rows} rows, index built in {time.perf_counter() - began:.0f} s", flush=True)
    pairs = [tuple(map(int, p.split(":"))) for p in a.pairs.split(",")]
    for run in range(a.passes):
        for nprobes, refine in pairs:
            ann.NPROBES, ann.REFINE_FACTOR = nprobes, refine
            lat, recall = ann_queries(col, qs, truth)
            p50, p99 = percentiles(lat)
            print(f"pass {run + 1} nprobes {nprobes:3d} refine {refine:3d}: p50 {p50:5.1f} ms, p99 {p99:5.1f} ms, "
                  f"recall@10 {recall:.3f}", flush=True)


if __name__ == "__main__":
    main()
