"""The long mode of the reliability campaign, for docs/reliability.md:

    python -m tests.reliability --minutes 30 --json bench/results/reliability.json

(from the repository root, with the test extra installed). Prints the figures as JSON."""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from tests.reliability.campaign import checkpoint_for, run_campaign


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=30, help="time budget; the fuzz phase takes about half")
    ap.add_argument("--size", choices=["tiny", "full"], default="tiny", help="random checkpoint to serve")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sigserve-campaign-"))
    start = time.monotonic()
    report = run_campaign(checkpoint_for(a.size, work / "checkpoint"), work / "data", scale=50, minutes=a.minutes)
    report["minutes"] = round((time.monotonic() - start) / 60, 1)
    report["size"] = a.size
    text = json.dumps(report, indent=2)
    print(text)
    if a.json:
        a.json.write_text(text)


if __name__ == "__main__":
    main()
