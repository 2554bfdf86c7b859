#!/usr/bin/env bash
# Every GPU figure of mypt in one run (see bench/gpu_suite.py for what is measured).
#
#   bash bench/gpu_suite.sh               # on a CUDA GPU: 193 s on an H200 (torch 2.11)
#   bash bench/gpu_suite.sh --profile     # also a torch.profiler summary of the 124M fit step
#   PYTHON=.venv/bin/python bash bench/gpu_suite.sh --smoke   # tiny shapes on the CPU
set -euo pipefail
exec "${PYTHON:-python3}" "$(dirname "$0")/gpu_suite.py" "$@"
