#!/usr/bin/env bash
# The main job: set up .venv, then run the DVC pipeline on the demo corpus (Shakespeare as
# the general corpus, Milton as the domain corpus). Extra arguments go to `dvc repro`.
# It ends with the headline numbers: each model's val loss on both corpora (base: before
# adaptation, adapted: after), and each training's tokens and seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export DVC_NO_ANALYTICS=1 PATH="$PWD/.venv/bin:$PATH"
dvc repro "$@"
echo
dvc metrics show metrics
echo "(loss: val loss per corpus; each step's counters: dvc metrics show stats; curves: dvc plots show)"
echo "To keep this run as the baseline: git add dvc.lock metrics stats dvclive && git commit"
