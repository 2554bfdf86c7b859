"""SIGTERM and Ctrl-C under torchrun before training begins, through the CLI as torchrun runs it."""

from __future__ import annotations

import os
import re
from pathlib import Path
import signal
import subprocess
import sys

import pytest

import mypt

TINY = ["--config_file", "tiny", "--device", "cpu"]

# `mypt train` as torchrun runs it, with a start-up that lasts: reading --input_file (as a
# large dataset or model takes its time to load) says so, then waits.
SLOW_START = '''
import os, sys, time
import mypt.input_text
from mypt.cli import main

def read_input_text(path):
    print(f"rank {os.environ['RANK']} reading", flush=True)
    time.sleep(600)

mypt.input_text.read_input_text = read_input_text
main(sys.argv[1:], prog_name="mypt")
'''


@pytest.mark.slow
@pytest.mark.parametrize("sig, said", [(signal.SIGTERM, "Error: stopped by SIGTERM before it finished"),
                                       (signal.SIGINT, "Aborted!")])
def test_a_stop_during_start_up_is_said_once_not_once_a_rank(tmp_path, sig, said):
    """torchrun forwards a SIGTERM or Ctrl-C it gets to each rank: stopped while its ranks were
    loading (before training's own stop takes the signals over), each rank printed mypt's line,
    so the log said it once per rank (before torchrun's own traceback). Local rank 0 says it;
    the others end quietly. Nothing of the run is written."""
    (tmp_path / "input.txt").write_text("the king and the queen and the crown\n" * 200)
    script = tmp_path / "slow_start.py"
    script.write_text(SLOW_START)
    # SIGINT as a terminal's command has it (a test run started in the background passes it ignored).
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             str(script), "train", "--input_file", "input.txt", "--tokenization", "char",
                             "--model_name", "m", *TINY, "--max_iters", "4"], cwd=tmp_path, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        reading = set()
        for line in proc.stdout:
            if line.endswith(" reading\n"):
                reading.add(line.split()[1])
                if len(reading) == 2:
                    break
        assert reading == {"0", "1"}, proc.communicate(timeout=60)
        os.killpg(proc.pid, sig)  # torchrun's group (a Ctrl-C's, a scheduler's): torchrun forwards it
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    mypts = [line for line in err.splitlines() if line.startswith(("Error", "Aborted"))]
    assert len(mypts) == 1 and mypts[0].startswith(said), err
    assert str(Path(mypt.__file__).parent) not in err, err  # (no traceback through mypt: torchrun's own is its own)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["input.txt", "slow_start.py"]


@pytest.mark.slow
def test_a_stop_while_training_is_said_once_a_node_and_the_checkpoint_resumes(tmp_path):
    """A SIGTERM to torchrun's group mid-training: every rank got it (and torchrun's copy) and
    stops after the same step with a checkpoint; each rank printed the same line. Local rank 0
    says it once; the run resumes from the checkpoint it names."""
    (tmp_path / "input.txt").write_text("the king and the queen and the crown\n" * 200)
    train = ["train", "--input_file", "input.txt", "--tokenization", "char", "--model_name", "m", *TINY,
             "--eval_interval", "2", "--eval_iters", "1", "--log_interval", "1"]
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             "-m", "mypt.cli", *train, "--max_iters", "100000"], cwd=tmp_path, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:
            if line.startswith("step 2: val"):
                break
        os.killpg(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    said = [line for line in err.splitlines() if line.startswith("Error")]
    # (on another rank: where the signal reached rank 0 inside the vote of that step)
    assert len(said) == 1 and re.match(r"Error: SIGTERM(?: on another rank)?: stopped at step \d+; continue with "
                                       r"--resume", said[0]), err
    step = int(re.search(r"stopped at step (\d+)", said[0]).group(1))
    resumed = subprocess.run([sys.executable, "-m", "mypt.cli", *train, "--max_iters", str(step + 1), "--resume"],
                             cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0 and f"from step {step}" in resumed.stdout, resumed.stdout + resumed.stderr
