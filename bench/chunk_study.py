"""Images per backend call on the CPU backends (a benchmark, never a test): model-only throughput of
`backend.encode_images` on one preprocessed batch of 1080p photos, for several chunk sizes, rounds
interleaved. Chose onnx.py's CHUNK (shared by the openvino backend) on the project's 2-core CPUs.

    python -m bench.chunk_study --configs openvino:fp32,openvino:int8 --chunks 1,2,4,8,16 --rounds 3

Full-size random checkpoint (bench/bench.py); the int8 paths must have been built (`sigserve prepare`)."""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", default="openvino:fp32,openvino:int8")
    ap.add_argument("--chunks", default="1,2,4,8,16")
    ap.add_argument("--lengths", default="256,1024", help="max_num_patches per workload")
    ap.add_argument("--images", type=int, default=16, help="images per batch")
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()

    import sigserve
    from bench.bench import full_checkpoint
    from bench.http_bench import hd_jpegs
    from sigserve.backends import onnx
    from sigserve.images import pack

    folder = full_checkpoint()
    configs = a.configs.split(",")
    pipes = {c: sigserve.load(folder, backend=c.split(":")[0], precision=c.split(":")[1]) for c in configs}
    jpegs = hd_jpegs(a.images)
    first = pipes[configs[0]]
    batches = {n: pack([first.preprocess(j, i, n) for i, j in enumerate(jpegs)]) for n in map(int, a.lengths.split(","))}
    chunks = [int(c) for c in a.chunks.split(",")]
    saved = dict(onnx.CHUNK)
    rates: dict = {}
    try:
        for r in range(a.rounds):
            for config, pipe in pipes.items():
                precision = config.split(":")[1]
                for n, batch in batches.items():
                    for chunk in chunks:
                        onnx.CHUNK[precision] = chunk
                        pipe.backend.encode_images(*[x[:chunk] for x in batch])  # this shape once, untimed
                        t0 = time.perf_counter()
                        pipe.backend.encode_images(*batch)
                        rate = len(jpegs) / (time.perf_counter() - t0)
                        rates.setdefault((config, n, chunk), []).append(rate)
                        print(f"round {r + 1} {config} {n} patches chunk {chunk:2d}: {rate:6.2f} img/s", flush=True)
    finally:
        onnx.CHUNK.update(saved)
    print("\nmedian over rounds (img/s):")
    for (config, n, chunk), xs in rates.items():
        print(f"{config:14s} {n:5d} patches chunk {chunk:2d}: {np.median(xs):6.2f}")


if __name__ == "__main__":
    main()
