#!/usr/bin/env bash
# The GPU figures of issue 20 (time to a good model) in one run, about 8 minutes on an H200,
# each part's output also written to OUT_DIR (default gpu_check_out/):
#   1. MFU at default flags: GPT-2 124M at batch 12 and 32, the 150M_1024 preset and the
#      modern/150M_1024 preset (bench/gpu_suite.py; targets 50% and 45%)
#   2. Muon's step alone, torch.optim.Muon's loop against mypt's batched step, eager and from a
#      CUDA graph (bench/muon_step.py)
#   3. time to quality on the baby GPT (6 x 384, block 256, the demo's Shakespeare as chars), 60 s
#      per recipe, compiled with --cuda_graphs (the baby GPT's steps wait on the host otherwise:
#      README "Time to quality on a GPU"): time to val 1.47 (target: the modern recipe in at most
#      half the GPT-2 recipe's time), 40 evaluations a run (the crossing is interpolated between
#      two: 20 left 3 s between them, a quarter of the modern recipe's time to 1.47)
#
#   bash bench/gpu_check.sh                    # needs the demo archive cached: mypt fetch-demo once
#   MYPT_CACHE_DIR=.cache/mypt bash bench/gpu_check.sh   # where the cache travels with the checkout
#   bash bench/gpu_check.sh --smoke            # tiny shapes on the CPU: checks the script (a test runs it)
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
python="${PYTHON:-python3}"
out="${OUT_DIR:-gpu_check_out}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1
status=0
run() {  # name, command...: a part that fails is said and the others still run
    local name=$1
    shift
    echo "== $name: $*"
    "$@" 2>&1 | tee "$out/$name.txt" || { echo "FAILED: $name"; status=1; }
}
suite=() muon=() quality=(--size baby --budget_s 60 --points 40 --cuda_graphs)
if [ "${1:-}" = --smoke ]; then
    suite=(--smoke) muon=(--sizes tiny --steps 2) quality=(--size tiny --points 2 --cuda_graphs)
fi
run suite timeout 220 "$python" "$here/gpu_suite.py" --only fit124,mem150,modern150 "${suite[@]}"
run muon_step timeout 60 "$python" "$here/muon_step.py" "${muon[@]}"
run quality timeout 300 "$python" "$here/quality.py" "${quality[@]}" --target 1.47 --target 1.5 --recipes gpt2,modern
exit $status
