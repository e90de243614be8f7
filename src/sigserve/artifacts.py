"""Files built once and then reused (dummy checkpoints, ONNX exports, compiled packages).

A build writes to a temporary name and renames it into place (atomic on POSIX): a reader never sees
half a file, and an interrupted build leaves nothing that looks finished. An exclusive file lock beside
the artifact makes concurrent builders (threads, or several replicas starting at once) wait for the
first one instead of building twice. Heavy builds run in a fresh interpreter (`run_in_child`), so the
exporter's or compiler's transient memory never stays in a serving process.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from sigserve.errors import ModelLoadError


def ensure(dest: Path, build: Callable[[Path], None], what: str) -> Path:
    """`dest`, built first by `build(tmp_path)` if it does not exist yet."""
    if dest.is_file():
        return dest
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with open(dest.with_name(dest.name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, even on a crash
            if not dest.is_file():  # another builder may have finished while we waited
                tmp = dest.with_name(f"{dest.stem}.tmp{os.getpid()}{dest.suffix}")
                try:
                    build(tmp)
                    tmp.replace(dest)
                finally:
                    tmp.unlink(missing_ok=True)
    except OSError as exc:
        raise ModelLoadError(f"cannot write {what} to {dest.parent}: {exc} (set SIGSERVE_CACHE)") from exc
    return dest


def run_in_child(function: str, *args: str, what: str) -> None:
    """Call `module:function(*args)` (string arguments) in a fresh interpreter; ModelLoadError with the
    child's last line of stderr if it fails. A plain subprocess, not multiprocessing: spawn would re-run
    the caller's unguarded __main__."""
    module, name = function.split(":")
    code = f"import sys, json; from {module} import {name}; {name}(*json.loads(sys.argv[1]))"
    done = subprocess.run([sys.executable, "-c", code, json.dumps(list(args))], capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise ModelLoadError(f"{what} failed: {tail}")
