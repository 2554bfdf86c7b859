#!/usr/bin/env bash
# Set-up shared by demo.sh and test.sh: a virtual environment in .venv with mypt (editable,
# so DVC's deps on mypt/*.py are the code that runs) and its [dev] extra. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  if "$PY" -c "import torch" 2>/dev/null; then
    # A torch is already installed for this Python: reuse it instead of downloading another.
    "$PY" -m venv --system-site-packages .venv
  else
    "$PY" -m venv .venv
  fi
fi
VPY=.venv/bin/python
if ! "$VPY" -c "import torch" 2>/dev/null; then
  # The CPU build 2.13.0 first (small, and on this project's build machines already on disk);
  # a plain `torch` would pull a several-GB CUDA build. GPU users: install your torch first.
  "$VPY" -m pip install --quiet "torch==2.13.0" || "$VPY" -m pip install --quiet "torch>=2.4"
fi
"$VPY" -m pip install --quiet -e ".[dev]"
