"""Collections at scale (a benchmark, never a test): the figures of docs/collections.md.

    python bench/collections_bench.py --rows 100000 1000000     # the documented table (quiet machine)
    python bench/collections_bench.py --rows 20000 --queries 50   # a quick check of the script

Per size, on synthetic clustered, L2-normalised 768-d vectors (`clustered_vectors`: 2-level
clusters plus noise, so that the 10 nearest neighbours are a real, close-call ranking, not
uniform noise):

  ingest      Collection.add_embeddings in commits of 100k rows (vectors only: no image decoding
              or embedding, which docs/benchmarks.md measures), rows/s
  exact       LanceDB's exhaustive scan (what a collection uses below the index threshold), p50
  build       Collection.optimize(index=True): IvfRq index training and writing, seconds
  ANN         Collection.search_vectors (top 10) through the index with refinement: p50/p99 latency
              and recall@10 against an exact numpy ranking of the same vectors
  HTTP        POST /v1/collections/{name}/search with a text query, end to end (text embedding on the
              full-size dummy model + search + JSON), one client, p50/p99; beside it the text
              embedding alone (`model.embed_texts`) as the reference measured in the same run
  disk        size of the collection's folder, scaled to 1M rows

Prints a markdown table and writes JSON (--out). Uses its own temporary store (--workdir)."""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

DIM = 768
CHUNK = 100_000


def clustered_vectors(n: int, seed: int, dim: int = DIM, clusters: int = 1024, sub: int = 8) -> np.ndarray:
    """(n, dim) unit vectors: cluster centre + sub-cluster offset + noise. Centres come from a fixed
    seed (the same space for data and queries); `seed` draws the points."""
    space = np.random.default_rng(1234)
    centres = space.standard_normal((clusters, dim)).astype(np.float32)
    offsets = 0.7 * space.standard_normal((clusters, sub, dim)).astype(np.float32)
    rng = np.random.default_rng(seed)
    k, s = rng.integers(0, clusters, n), rng.integers(0, sub, n)
    x = centres[k] + offsets[k, s] + rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def percentiles(samples: list[float]) -> tuple[float, float]:
    return float(np.percentile(samples, 50) * 1e3), float(np.percentile(samples, 99) * 1e3)


def folder_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def ann_queries(col, qs: np.ndarray, truth: np.ndarray) -> tuple[list[float], float]:
    """Each query's latency through the collection's indexed search (top 10), and the mean recall@10
    against `truth` (row numbers of the exact top 10; ids are "v<row>")."""
    lat, recall = [], []
    for q, expected in zip(qs, truth):
        began = time.perf_counter()
        hits = col.search_vectors(image_vector=q, top_k=10)
        lat.append(time.perf_counter() - began)
        recall.append(len({int(h.id[1:]) for h in hits} & set(expected.tolist())) / 10)
    return lat, float(np.mean(recall))


def measure(rows: int, model, workdir: Path, queries: int, flat_queries: int, http_queries: int) -> dict:
    from sigserve.collections import Collection, Store, create_collection

    store = Store(workdir / f"store-{rows}")
    name = f"bench{rows}"
    create_collection(store, model, name)
    col = Collection(store, name, model)
    data = np.empty((rows, DIM), np.float32)
    spent = 0.0
    for start in range(0, rows, CHUNK):
        n = min(CHUNK, rows - start)
        data[start: start + n] = clustered_vectors(n, seed=start + 1)
        ids = [f"v{i}" for i in range(start, start + n)]
        began = time.perf_counter()
        col.add_embeddings(data[start: start + n], ids=ids, hashes=ids, auto_index=False)
        spent += time.perf_counter() - began
    out = {"rows": rows, "ingest_rows_per_s": rows / spent}
    qs = clustered_vectors(queries, seed=10**9)
    truth = np.argsort(-(qs @ data.T), axis=1, kind="stable")[:, :10]

    flat = []
    for q in qs[:flat_queries]:
        began = time.perf_counter()
        col.table.search(q).distance_type("dot").select(["id", "_distance"]).limit(10).to_arrow()
        flat.append(time.perf_counter() - began)
    out["exact_p50_ms"] = percentiles(flat)[0]

    began = time.perf_counter()
    out["index"] = col.optimize(index=True)
    out["build_s"] = time.perf_counter() - began

    lat, out["recall_at_10"] = ann_queries(col, qs, truth)
    out["ann_p50_ms"], out["ann_p99_ms"] = percentiles(lat)
    out["disk_gb_per_1m"] = folder_size(Path(store.uri) / f"{name}.lance") / 1e9 * (1_000_000 / rows)
    out.update(http_latency(model, store, name, http_queries))
    return out


def http_latency(model, store, name: str, n: int) -> dict:
    """Text queries over HTTP against an in-process uvicorn, and the text embedding alone."""
    import httpx
    import uvicorn

    from sigserve.server.app import create_app
    from sigserve.server.settings import Settings

    texts = [f"a photo of item number {i}" for i in range(n)]
    alone = []
    for t in texts:
        began = time.perf_counter()
        model.embed_texts([t + " (reference)"])
        alone.append(time.perf_counter() - began)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    settings = Settings(model="bench", load_format="dummy", collections_uri=store.uri,
                        data_dir=Path(store.uri).parent / "server-data")
    server = uvicorn.Server(uvicorn.Config(create_app(settings, model), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1/collections/{name}/search"
    lat = []
    with httpx.Client(timeout=120) as client:
        client.post(url, json={"query": {"text": "warm-up"}}).raise_for_status()
        for t in texts:
            began = time.perf_counter()
            client.post(url, json={"query": {"text": t}, "top_k": 10}).raise_for_status()
            lat.append(time.perf_counter() - began)
    server.should_exit = True
    thread.join(30)
    p50, p99 = percentiles(lat)
    return {"http_text_p50_ms": p50, "http_text_p99_ms": p99, "text_embed_p50_ms": percentiles(alone)[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=200, help="ANN queries per size (recall and latency)")
    parser.add_argument("--flat-queries", type=int, default=10, help="exhaustive-scan queries (slow at 1M)")
    parser.add_argument("--http-queries", type=int, default=50)
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temporary folder, removed after")
    parser.add_argument("--out", type=Path, default=Path("bench/results/collections.json"))
    args = parser.parse_args()

    import sigserve

    model = sigserve.load("google/siglip2-base-patch16-naflex", dummy=True)  # the real 768-d architecture
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="sigserve-collections-bench-"))
    results = []
    try:
        for rows in args.rows:
            results.append(measure(rows, model, workdir, args.queries, args.flat_queries, args.http_queries))
            print(json.dumps(results[-1]), flush=True)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print("\n| rows | ingest (rows/s) | exact p50 | index build | ANN p50 / p99 | recall@10 | HTTP text query "
          "p50 / p99 (text embedding alone) | disk per 1M |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['rows']:,} | {r['ingest_rows_per_s']:,.0f} | {r['exact_p50_ms']:.0f} ms | {r['build_s']:.0f} s "
              f"| {r['ann_p50_ms']:.1f} / {r['ann_p99_ms']:.1f} ms | {r['recall_at_10']:.3f} "
              f"| {r['http_text_p50_ms']:.0f} / {r['http_text_p99_ms']:.0f} ms ({r['text_embed_p50_ms']:.0f} ms) "
              f"| {r['disk_gb_per_1m']:.2f} GB |")


if __name__ == "__main__":
    main()
