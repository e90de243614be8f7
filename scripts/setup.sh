#!/usr/bin/env bash
# Create .venv with torch and sigserve (editable).
#
#   scripts/setup.sh [extras]           the CPU build of torch (e.g. scripts/setup.sh test,eval,batch,int8)
#   scripts/setup.sh --cuda [extras]    the CUDA build of torch instead (several GB)
#
# A plain `pip install torch` resolves to the CUDA build on Linux, so the CPU build is asked for
# explicitly: from PyTorch's CPU wheel index first, falling back to the plain pin (which is the CPU
# build where a local wheel or mirror provides one) when that index cannot be reached.
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH="torch==2.13.0"
CPU_INDEX="https://download.pytorch.org/whl/cpu"
cuda=0
if [ "${1:-}" = "--cuda" ]; then cuda=1; shift; fi
extras="${1:-}"
step() { printf '\n==> %s\n' "$*"; }

step "creating .venv"
python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip

if [ "$cuda" = 1 ]; then
  step "installing $TORCH (CUDA build, several GB)"
  python -m pip install --progress-bar on "$TORCH"
elif python -c "import torch" 2>/dev/null; then
  step "torch is already installed: $(python -c 'import torch; print(torch.__version__)')"
else
  step "installing $TORCH, CPU build, from $CPU_INDEX"
  if ! python -m pip install --progress-bar on --timeout 20 --retries 1 --index-url "$CPU_INDEX" "$TORCH"; then
    step "the CPU index cannot be reached: installing the plain pin $TORCH"
    python -m pip install --progress-bar on "$TORCH"
  fi
fi

step "installing sigserve${extras:+ with extras [$extras]}"
python -m pip install --progress-bar on -e ".${extras:+[$extras]}"
step "done: $(.venv/bin/sigserve --version) in .venv (source .venv/bin/activate, or call .venv/bin/sigserve)"
