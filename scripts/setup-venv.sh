#!/usr/bin/env bash
# Create the virtual environment and install evo into it.
# On a machine without CUDA, CPU torch goes in first, so that nothing pulls a multi-GB CUDA build.
set -euo pipefail
VENV=${VENV:-.venv}
TORCH=2.13.0
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
PY="$VENV/bin/python"
"$PY" -m pip install -q --upgrade pip
if ! "$PY" -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1; then
    "$PY" -m pip install -q "torch==$TORCH"
  else
    echo "no CUDA here: installing the CPU build of torch $TORCH"
    "$PY" -m pip install -q "torch==$TORCH+cpu" 2>/dev/null \
      || "$PY" -m pip install -q "torch==$TORCH" --index-url https://download.pytorch.org/whl/cpu
  fi
fi
"$PY" -m pip install -q -e ".[test]"
touch "$VENV/.installed"
