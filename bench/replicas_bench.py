"""Requests/s through nginx with two replicas against one (a benchmark, never a test).

    python -m bench.replicas_bench                                    # full-size model: the figures
    python -m bench.replicas_bench --model tiny --seconds 3 --clients 4 --rounds 1 --cores-per-replica 1  # smoke

The fleet is what docs/deploy.md describes and tests/replicas tests: `sigserve serve` replicas sharing
a throw-away PostgreSQL (keys, usage) and Redis (rate limits), behind nginx configured by the doc's own
block. Two nginx instances run side by side, one with replica 0 only and one with replicas 0 and 1, so
both set-ups are measured in the same run, interleaved round by round (the machine may be shared).

Each replica is pinned to its own `--cores-per-replica` cores (taskset, and that many inference
threads), so "two replicas" means twice the cores, as it would on a fleet; the machine needs
2 x cores-per-replica free cores for the ratio to mean anything (the script says when it has fewer).
Load: `--clients` concurrent clients in a closed loop, each posting one 640x480 JPEG per request
(data URI) to /v1/embeddings with one API key (no limits), for `--seconds` after a warm-up.
Printed: requests/s per set-up and round, the median, the ratio two/one, errors, and the load average.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.bench import full_checkpoint, jpeg, photos
from sigserve.accounts.keys import KeyStore
from tests.support.fleet import Replica, nginx_site
from tests.support.server import MODEL, free_port
from tests.support.services import Nginx, Postgres, Redis


def _image_uri() -> str:
    photo = next(iter(photos().values()))
    return "data:image/jpeg;base64," + base64.b64encode(jpeg(photo, size=(640, 480))).decode()


async def _load(url: str, key: str, clients: int, seconds: float, warmup_s: float) -> tuple[int, int, float]:
    """(successes, errors, seconds measured) of a closed loop of `clients` concurrent clients."""
    import httpx

    body = {"model": MODEL, "input": [{"type": "image_url", "image_url": {"url": _image_uri()}}]}
    counts = {"ok": 0, "errors": 0}
    measuring = asyncio.Event()

    async def client(http: httpx.AsyncClient, stop_at: float) -> None:
        while time.monotonic() < stop_at:
            try:
                r = await http.post(url + "/v1/embeddings", json=body)
                ok = r.status_code == 200
            except httpx.HTTPError:
                ok = False
            if measuring.is_set():
                counts["ok" if ok else "errors"] += 1

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(headers={"authorization": f"Bearer {key}"}, timeout=120, limits=limits) as http:
        stop_at = time.monotonic() + warmup_s + seconds
        tasks = [asyncio.create_task(client(http, stop_at)) for _ in range(clients)]
        await asyncio.sleep(warmup_s)
        measuring.set()
        started = time.monotonic()
        await asyncio.gather(*tasks)
        return counts["ok"], counts["errors"], time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["full", "tiny"], default="full")
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--warmup", type=float, default=5)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cores-per-replica", type=int, default=4)
    args = parser.parse_args()

    cores = os.cpu_count() or 1
    if 2 * args.cores_per_replica > cores:
        print(f"WARNING: {cores} cores here, two replicas of {args.cores_per_replica} need "
              f"{2 * args.cores_per_replica}: the ratio below measures contention, not scaling")
    if args.model == "full":
        checkpoint = full_checkpoint()
    else:
        from tests.support.checkpoints import make_checkpoint

        checkpoint = make_checkpoint(Path(tempfile.mkdtemp(prefix="bench-tiny-")), "tiny")
    folder = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    with Postgres() as pg, Redis() as redis:
        database_url = pg.create_database()
        store = KeyStore(database_url)
        _, key = store.create("bench")
        store.close()
        replicas = []
        for i in range(2):
            first = i * args.cores_per_replica % cores
            cpus = ",".join(str((first + c) % cores) for c in range(args.cores_per_replica))
            replica = Replica(checkpoint, folder / f"r{i}", "--database-url", database_url, "--redis-url", redis.url,
                              "--log-level", "warning", name=f"replica{i}")
            replica.env = {"OMP_NUM_THREADS": str(args.cores_per_replica)}
            replica.prefix = ["taskset", "-c", cpus] if shutil.which("taskset") else []
            replicas.append(replica.start(wait=False))
        for replica in replicas:
            replica.wait_ready()
        ports = [free_port(), free_port()]
        one = Nginx(nginx_site([f"127.0.0.1:{replicas[0].port}"], ports[0]), ports[0])
        two = Nginx(nginx_site([f"127.0.0.1:{r.port}" for r in replicas], ports[1]), ports[1])
        results: dict[str, list[float]] = {"one replica": [], "two replicas": []}
        errors = 0
        try:
            with one, two:
                for round_ in range(args.rounds):
                    for name, nginx in (("one replica", one), ("two replicas", two)):
                        ok, failed, took = asyncio.run(_load(nginx.url, key, args.clients, args.seconds, args.warmup))
                        errors += failed
                        results[name].append(ok / took)
                        print(f"round {round_ + 1}  {name:13s} {ok / took:8.2f} req/s  ({ok} ok, {failed} errors, "
                              f"load average {os.getloadavg()[0]:.2f})", flush=True)
        finally:
            for replica in replicas:
                replica.stop()
        med = {name: statistics.median(values) for name, values in results.items()}
        print(f"\nmodel {args.model}, {args.clients} clients, {args.seconds:g} s x {args.rounds} rounds, "
              f"{args.cores_per_replica} cores per replica, {cores} cores here, python {sys.version.split()[0]}")
        print(f"one replica   {med['one replica']:8.2f} req/s (median)")
        print(f"two replicas  {med['two replicas']:8.2f} req/s (median)")
        print(f"ratio two/one {med['two replicas'] / med['one replica']:.2f}   errors {errors}")
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
