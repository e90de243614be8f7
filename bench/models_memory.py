"""Resident memory of each model as `sigserve serve` loads it (sigserve.server.models.load_models: the
growth of this process's RSS over each model's load and one pass of each tower), in one fresh process.

    python -m bench.models_memory --model google/siglip2-base-patch16-naflex=naflex \\
        --model google/siglip2-base-patch16-224=fixed224 --load-format dummy --backend onnx

Dummy loads by hub id take that checkpoint's architecture (sigserve.family) with random weights: the
memory is the real one's, the numbers are not. The first dummy load of a full-size model writes its
random checkpoint (1.5 GB for B/16) and, with onnx, exports its graphs: minutes, on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import time

from sigserve.memory import resident_bytes
from sigserve.server.models import load_models
from sigserve.server.settings import Settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", required=True, help="SOURCE[=NAME], repeatable")
    parser.add_argument("--load-format", default="auto", choices=["auto", "dummy"])
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    settings = Settings(model=args.model, load_format=args.load_format, backend=args.backend)
    start = time.perf_counter()
    baseline = (resident_bytes() or 0) / 2**20
    print(f"# {time.strftime('%Y-%m-%d %H:%M:%S')}; process before loading: {baseline:.0f} MB resident")
    loaded = load_models(settings, say=print)
    report = {"baseline_mb": round(baseline), "seconds": round(time.perf_counter() - start, 1),
              "models": [{"name": m.spec.served_name, "model": m.spec.model, "load_format": m.spec.load_format,
                          "backend": m.pipeline.backend.name, "architecture": m.pipeline.describe()["architecture"],
                          "parameters": m.pipeline.describe()["parameters"]["total"],
                          "rss_mb": None if m.rss_mb is None else round(m.rss_mb)} for m in loaded],
              "total_mb": round((resident_bytes() or 0) / 2**20)}
    for m in report["models"]:
        print(f"{m['name']:>16}: {m['rss_mb']:>6} MB  ({m['architecture']}, {m['parameters'] / 1e6:.0f}M parameters, "
              f"{m['backend']}, {m['load_format']})")
    print(f"{'all':>16}: {report['total_mb']:>6} MB resident (process included), {report['seconds']} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
