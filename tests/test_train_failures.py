"""A run that fails in the middle (a shard it cannot read, a NaN loss) leaves the checkpoint of
the step it met, and `mypt train --resume` continues from it to the end. (The messages: the
table in tests/test_bad_inputs_train.py; exact resumption: tests/test_train_paths.py.)"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from bad_inputs import invoke, train
from test_bad_inputs_train import RUN4, nan_loss_from, unreadable_batch


def step_of(w: Path) -> int:
    return json.loads((w / "ck" / "n" / "training_state.json").read_text())["step"]


@pytest.mark.parametrize("fault, step", [(unreadable_batch(5), 3), (nan_loss_from(4), 3)], ids=["eio", "nan"])
@pytest.mark.slow
def test_a_run_that_fails_mid_way_resumes_from_the_step_it_met(fault, step, world, tmp_path, monkeypatch):
    w = tmp_path / "w"
    shutil.copytree(world, w)
    monkeypatch.chdir(w)
    with monkeypatch.context() as patched:
        fault(patched, w)
        failed = invoke(*train(*RUN4))
    assert failed.exit_code == 1 and f"checkpoint of step {step} is saved in ck/n" in failed.output, failed.output
    # (step 3: between the evaluations of steps 2 and 4, so the failure's own save)
    assert step_of(w) == step
    done = invoke(*train(*RUN4, "--resume"))
    assert done.exit_code == 0, done.output
    assert f"resuming n from step {step}" in done.output and step_of(w) == 4
