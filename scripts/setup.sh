#!/usr/bin/env bash
# Create .venv with the CPU build of torch and sigserve (editable). Usage: scripts/setup.sh [extras]
# e.g. scripts/setup.sh test   or   scripts/setup.sh test,eval,batch   (batch: Ray, for `sigserve batch`)
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
# The CPU build first: an unpinned torch would pull a CUDA build of several GB.
python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".${extras:+[$extras]}"
