"""verify-dataset's check runs inside eval (verify.check_split): importing it must not bring the
data steps' worker machinery, so the eval stage's DVC deps (derived from imports) do not list it
and an edit there does not rerun eval."""

from __future__ import annotations

import json
import subprocess
import sys

import yaml
from conftest import REPO

WORKER_MACHINERY = ("mypt.parallel", "mypt.ray_engine", "mypt.shared_value")


def test_verify_imports_no_worker_machinery_and_eval_does_not_depend_on_it():
    code = "import json, sys\nimport mypt.verify\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    modules = set(json.loads(done.stdout.strip().splitlines()[-1]))
    assert "mypt.progress" in modules
    assert not modules & set(WORKER_MACHINERY)
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    eval_deps = stages["eval"]["do"]["deps"]  # a foreach stage: one per model
    assert not {name.replace(".", "/") + ".py" for name in WORKER_MACHINERY} & set(eval_deps)
