"""Where the openvino backend's vision time goes (a benchmark, never a test): OpenVINO's per-node
performance counters, summed by node type and kernel, for the cached fp32 and int8 IR of the full-size
random checkpoint at B images x N patches, compiled as the backend serves each precision; and the
achieved rate of the encoder's linear layers (FullyConnected: q/k/v/out projections and the MLP), in
GOP/s, against fp32's.

    python -m bench.openvino_profile --batch 8 --patches 256 1024 --precisions fp32 bf16 int8

An IR not yet cached is built first (int8's needs the `int8` extra: NNCF)."""

from __future__ import annotations

import argparse
import collections
import time

import numpy as np


def profile(path: str, precision: str, threads: int, B: int, N: int, d: int, rounds: int = 3) -> tuple[float, dict, float]:
    """Over `rounds` timed calls, the fastest: (its wall seconds, {(node type, kernel): seconds}, seconds
    in the encoder's linear layers: FullyConnected nodes named /encoder/...)."""
    import openvino as ov

    from sigserve.backends.openvino import compile_config

    core = ov.Core()
    compiled = core.compile_model(core.read_model(path), "CPU", {**compile_config(threads, precision), "PERF_COUNT": "YES"})
    request = compiled.create_infer_request()
    rng = np.random.default_rng(0)
    feeds = {"pixel_values": rng.random((B, N, d), np.float32), "positions": 0.02 * rng.standard_normal((B, N, d), np.float32),
             "attention_mask": np.ones((B, N), np.int32)}
    request.infer(feeds)  # this shape once, untimed
    best: tuple = (float("inf"), {}, 0.0)
    for _ in range(rounds):
        t0 = time.perf_counter()
        request.infer(feeds)
        wall = time.perf_counter() - t0
        if wall < best[0]:
            nodes: collections.Counter = collections.Counter()
            linear = 0.0
            for p in request.profiling_info:
                nodes[(p.node_type, p.exec_type)] += p.real_time.total_seconds()
                if p.node_type.startswith("FullyConnected") and p.node_name.startswith("/encoder/"):
                    linear += p.real_time.total_seconds()
            best = (wall, nodes, linear)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--patches", type=int, nargs="+", default=[256, 1024])
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16", "int8"],
                    help="as served (int8's unquantized layers in bf16 where the CPU has it; bf16 needs it)")
    ap.add_argument("--top", type=int, default=8, help="node types listed per run")
    a = ap.parse_args()

    import torch

    from bench.bench import full_checkpoint
    from bench.speed import linear_flop
    from sigserve.backends.openvino import ensure_ir
    from sigserve.pipeline import resolve_checkpoint

    checkpoint = resolve_checkpoint(str(full_checkpoint()))
    cfg = checkpoint.config.vision
    d, mlp, layers = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    for N in a.patches:
        linear_gop = layers * linear_flop(a.batch * N, d, mlp) / 1e9  # the encoder's FullyConnected work
        rates = {}
        for precision in a.precisions:
            wall, nodes, fc = profile(str(ensure_ir(checkpoint, "vision", precision)), precision,
                                      torch.get_num_threads(), a.batch, N, d)
            total = sum(nodes.values())
            rates[precision] = linear_gop / fc
            print(f"\n{precision} B{a.batch} N{N}: one call {1000 * wall:.0f} ms ({a.batch / wall:.2f} img/s); "
                  f"encoder linear layers {1000 * fc:.0f} ms = {100 * fc / total:.0f}% of node time, "
                  f"{rates[precision]:.0f} GOP/s")
            for (kind, kernel), s in nodes.most_common(a.top):
                print(f"  {1000 * s:7.1f} ms {100 * s / total:5.1f}%  {kind:30s} {kernel}")
        print(f"N{N}: linear layers at " + ", ".join(f"{rates[p] / rates['fp32']:.2f}x ({p})" for p in rates)
              + " the fp32 rate")


if __name__ == "__main__":
    main()
