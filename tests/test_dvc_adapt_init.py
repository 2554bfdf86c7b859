"""The adapt stage (stages/train.py with --init_from_model) and a base whose run stopped early."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from conftest import REPO, mypt_cli, run

STAGE = [sys.executable, str(REPO / "stages" / "train.py")]
TINY = ["--config_file", "tiny", "--device", "cpu", "--no_compile", "--batch_size", "2", "--eval_iters", "1",
        "--checkpoints_dir", "checkpoints"]


@pytest.mark.slow
def test_adapting_a_base_whose_run_stopped_early_is_refused_unless_allowed(tmp_path):
    """A base run stopped (here by SIGTERM: its checkpoint at the step it reached) stays in the
    workspace; `dvc repro -s adapt` then adapted the half-trained base, saying only `init from
    checkpoints/base (step N)`. Refused, naming the step, the planned steps and the fixes;
    --allow_unfinished_init starts from it as it is."""
    (tmp_path / "c.txt").write_text("".join(f"Line {i} of the text, said the king {i * 3}.\n" for i in range(400)))
    mypt_cli("prepare-dataset", "--input_files", "c.txt", "--out_dir", "ds", "--tokenization", "char",
             "--tokens_per_shard", "4000", "--workers", "1", cwd=tmp_path)
    base = subprocess.Popen([*STAGE, "--dataset_dir", "ds", "--model_name", "base", *TINY, "--max_iters", "100000",
                             "--eval_interval", "2", "--log_interval", "1"], cwd=tmp_path, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        for line in base.stdout:
            if line.startswith("step 2: val"):  # (its first checkpoint is the stop's)
                base.send_signal(signal.SIGTERM)
                break
        _, err = base.communicate(timeout=120)
    finally:
        if base.poll() is None:
            base.kill()
            base.wait()
    assert base.returncode == 1 and "--resume" in err, err
    step = json.loads((tmp_path / "checkpoints/base/training_state.json").read_text())["step"]
    assert 2 <= step < 100000

    adapt = [*STAGE, "--dataset_dir", "ds", "--model_name", "adapted", "--init_from_model", "checkpoints/base",
             *TINY, "--max_iters", "1", "--metrics", "adapted.json"]
    refused = subprocess.run(adapt, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert f"trained to step {step} of the 100000 its run planned" in refused.stderr, refused.stderr
    assert "`dvc repro -f train`" in refused.stderr and "--resume" in refused.stderr
    assert "--allow_unfinished_init" in refused.stderr
    assert not (tmp_path / "checkpoints/adapted").exists() and not (tmp_path / "adapted.json").exists()

    allowed = run([*adapt, "--allow_unfinished_init"], tmp_path)
    assert f"init from checkpoints/base (step {step}" in allowed.stdout, allowed.stdout
    assert (tmp_path / "adapted.json").is_file()


@pytest.mark.parametrize("allow", [True, False])
def test_params_yaml_allows_it_in_the_adapt_section(tmp_path, monkeypatch, allow):
    """What the refusal says to write, `allow_unfinished_init: true` in params.yaml's adapt
    section, reaches the stage as its flag (and false as the flag's off form)."""
    from test_dvc_params import parse, rendered

    _, cmds = rendered(tmp_path, lambda p: p["adapt"].update(allow_unfinished_init=allow))
    monkeypatch.chdir(tmp_path)
    assert parse(cmds["adapt"])[1].params["allow_unfinished_init"] is allow


@pytest.mark.slow
def test_an_unfinished_base_is_refused_under_auto_resume_and_warned_of_by_mypt_train(tmp_path):
    """The stage's --auto_resume with no checkpoint of its own yet is a new run from the base:
    refused as one (it was let through whenever --auto_resume was given). `mypt train
    --init_from_model` of such a base says so in a warning, and trains."""
    (tmp_path / "c.txt").write_text("".join(f"Line {i} of the text, said the king {i * 3}.\n" for i in range(400)))
    mypt_cli("prepare-dataset", "--input_files", "c.txt", "--out_dir", "ds", "--tokenization", "char",
             "--tokens_per_shard", "4000", "--workers", "1", cwd=tmp_path)
    mypt_cli("train", "--dataset_dir", "ds", "--model_name", "base", *TINY, "--max_iters", "2", cwd=tmp_path)
    # A base of 2 steps of the 8 its run planned, as a stop leaves it (its config.json's planned steps raised).
    config_file = tmp_path / "checkpoints/base/config.json"
    config = json.loads(config_file.read_text())
    config["training"]["max_iters"] = 8
    config_file.write_text(json.dumps(config, indent=2) + "\n")
    adapt = [*STAGE, "--dataset_dir", "ds", "--model_name", "adapted", "--init_from_model", "checkpoints/base",
             *TINY, "--max_iters", "1", "--auto_resume"]
    refused = subprocess.run(adapt, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 1 and "trained to step 2 of the 8 its run planned" in refused.stderr, \
        refused.stdout + refused.stderr
    assert not (tmp_path / "checkpoints/adapted").exists()
    warned = mypt_cli("train", "--dataset_dir", "ds", "--model_name", "a2", "--init_from_model", "checkpoints/base",
                      *TINY, "--max_iters", "1", cwd=tmp_path)
    assert "warning: --init_from_model checkpoints/base: trained to step 2 of the 8 its run planned" in warned.stdout, \
        warned.stdout
    assert (tmp_path / "checkpoints/a2/model.safetensors").is_file()
