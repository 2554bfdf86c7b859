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
installed() {  # whether the named distributions are installed (metadata only: no slow imports)
  "$VPY" -c 'import sys
from importlib import metadata
try:
    [metadata.version(name) for name in sys.argv[1:]]
except metadata.PackageNotFoundError:
    sys.exit(1)' "$@"
}
if ! installed torch; then
  # The CPU build 2.13.0 first (small, and on this project's build machines already on disk);
  # a plain `torch` would pull a several-GB CUDA build. GPU users: install your torch first.
  "$VPY" -m pip install --quiet "torch==2.13.0" || "$VPY" -m pip install --quiet "torch>=2.4"
fi
# pip resolves every requirement on each call (about 10 s): skip it while pyproject.toml is the
# one last installed and every requirement of it, [dev] included, is still there (Python 3.10,
# without tomllib, always runs pip).
STAMP=.venv/.mypt-installed
WANT=$("$VPY" -c 'import hashlib; print(hashlib.sha256(open("pyproject.toml", "rb").read()).hexdigest())')
REQS=$("$VPY" -c 'import re, tomllib
p = tomllib.load(open("pyproject.toml", "rb"))["project"]
print(" ".join(re.match(r"[A-Za-z0-9_.-]+", r).group(0) for r in p["dependencies"] + p["optional-dependencies"]["dev"]))' \
  2>/dev/null) || REQS=""
if [ -z "$REQS" ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ] || ! installed mypt $REQS; then
  # uv installs the ~200 packages in about 1 minute where pip takes about 4 (measured on a 2-core
  # build machine, both with empty caches). It compiles them to bytecode as pip does: where
  # PYTHONDONTWRITEBYTECODE is set (as on that machine), each import would compile them again,
  # making every dvc command a second slower. pip does it wherever uv cannot (not
  # installable, no route to its index, any error). The torch installed above is pinned, so
  # neither installer replaces it. pip where its configuration names an index of its own (uv
  # would not use it), or in a venv that sees the system's packages (uv may not count the torch
  # there as installed, and would download another).
  PIP_CONFIG=$("$VPY" -m pip config list 2>/dev/null || true)
  if [[ $PIP_CONFIG != *.index-url=* ]] \
      && ! grep -q "include-system-site-packages = true" .venv/pyvenv.cfg \
      && "$VPY" -m pip install --quiet uv \
      && "$VPY" -c 'from importlib.metadata import version; print("torch==" + version("torch"))' > .venv/.torch-pin \
      && UV_LINK_MODE=copy "$VPY" -m uv pip install --quiet --compile-bytecode --python "$VPY" \
           --constraint .venv/.torch-pin -e ".[dev]"; then
    :
  else
    "$VPY" -m pip install --quiet -e ".[dev]"
  fi
  echo "$WANT" > "$STAMP"
fi
