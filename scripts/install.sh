#!/usr/bin/env bash
# Create .venv and install latentcast into it, CPU build of torch first.
#   bash scripts/install.sh            # CPU (torch 2.13.0, from the local wheel cache here)
#   TORCH_SPEC="torch" bash scripts/install.sh   # GPU machine: let pip pick the CUDA build
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "${TORCH_SPEC:-torch==2.13.0}"
.venv/bin/python -m pip install -q -e ".[test]"
echo "installed: $(.venv/bin/latentcast --version)"
