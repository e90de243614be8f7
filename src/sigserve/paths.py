"""Where sigserve keeps files, defined once.

    cache_dir()  rebuildable artifacts: dummy checkpoints, ONNX exports, compiled packages, eval embeddings
                 $SIGSERVE_CACHE, else $XDG_CACHE_HOME/sigserve, else ~/.cache/sigserve
    data_dir()   state that must survive: the keys and usage database, collections
                 $SIGSERVE_DATA_DIR, else $XDG_DATA_HOME/sigserve, else ~/.local/share/sigserve
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    base = os.environ.get("SIGSERVE_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache") / "sigserve"
    return Path(base, *parts).expanduser()


def data_dir(*parts: str) -> Path:
    base = os.environ.get("SIGSERVE_DATA_DIR") or Path(os.environ.get("XDG_DATA_HOME") or "~/.local/share") / "sigserve"
    return Path(base, *parts).expanduser()
