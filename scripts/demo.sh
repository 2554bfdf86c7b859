#!/usr/bin/env bash
# The main job: set up .venv, then run the DVC pipeline on the demo corpus (Shakespeare as
# the general corpus, Milton as the domain corpus). Extra arguments go to `dvc repro`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export DVC_NO_ANALYTICS=1 PATH="$PWD/.venv/bin:$PATH"
dvc repro "$@"
dvc metrics show
