"""A run that fails in the middle leaves a checkpoint `mypt train --resume` continues from to the
end: a shard it cannot read, the checkpoint of the step it met; a NaN loss, the last checkpoint
before it (the weights of the step it met give the NaN again). A resume of a complete run says
so and changes nothing. (The messages: the table in tests/test_bad_inputs_train.py;
exact resumption: tests/test_train_paths.py.)"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from bad_inputs import invoke, train
from conftest import tree_bytes
from test_bad_inputs_train import RUN4, nan_loss_from, unreadable_batch


def step_of(w: Path) -> int:
    return json.loads((w / "ck" / "n" / "training_state.json").read_text())["step"]


@pytest.mark.parametrize("fault, step, kept", [(unreadable_batch(5), 3, "the checkpoint of step 3 is saved in ck/n"),
                                               (nan_loss_from(4), 2, "the last checkpoint (step 2) is in ck/n")],
                         ids=["eio", "nan"])
@pytest.mark.slow
def test_a_run_that_fails_mid_way_resumes_from_its_checkpoint(fault, step, kept, world, tmp_path, monkeypatch):
    w = tmp_path / "w"
    shutil.copytree(world, w)
    monkeypatch.chdir(w)
    with monkeypatch.context() as patched:
        fault(patched, w)
        failed = invoke(*train(*RUN4))
    assert failed.exit_code == 1 and kept in failed.output, failed.output
    # (step 3: between the evaluations of steps 2 and 4, so the I/O failure's own save)
    assert step_of(w) == step
    done = invoke(*train(*RUN4, "--resume"))
    assert done.exit_code == 0, done.output
    assert f"resuming n from step {step}" in done.output and step_of(w) == 4


def test_resume_of_a_complete_run_says_so_and_changes_nothing(world, tmp_path, monkeypatch):
    # ck/m is trained to step 2 = --max_iters 2: a job that resumes until it succeeds (killed
    # after its last save) ends with exit 0; the checkpoint stays byte for byte.
    w = tmp_path / "w"
    shutil.copytree(world, w)
    monkeypatch.chdir(w)
    before = tree_bytes(w)
    done = invoke(*train("--dataset_dir", "ds", "--resume", model="m"))
    assert done.exit_code == 0, done.output
    assert "m is already trained to --max_iters 2" in done.output and "the run is complete" in done.output
    assert tree_bytes(w) == before


def test_a_ctrl_c_during_the_stop_acts_at_once_and_a_second_sigterm_does_not():
    """The first SIGTERM asks the run to stop after its step. A second SIGTERM is the same
    request again (a scheduler signals every process of the job, and torchrun forwards its own
    to each rank): the stop goes on. A Ctrl-C then stops it at once, with a line saying the
    last checkpoint saved is kept."""
    import signal
    import subprocess
    import sys

    code = ("import signal, time\nfrom mypt.signals import StopSignals\nwith StopSignals() as s:\n"
            "    signal.raise_signal(signal.SIGTERM)\n    print(s.received, flush=True)\n"
            "    signal.raise_signal(signal.SIGTERM)\n    print('still stopping', flush=True)\n"
            "    signal.raise_signal(signal.SIGINT)\n    time.sleep(10)\n    print('not stopped')\n")
    # (SIGINT at its default, as a terminal's command has it: a backgrounded test run passes it ignored)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert done.stdout == "SIGTERM\nstill stopping\n", (done.stdout, done.stderr)
    assert done.returncode != 0 and "KeyboardInterrupt" in done.stderr
    assert "SIGINT after SIGTERM: stopping at once" in done.stderr
    assert "a checkpoint saved before is kept" in done.stderr


def test_a_rank_whose_torchrun_is_killed_before_training_exits_with_one_line():
    """A rank not yet training when torchrun is killed (building the run, waiting on torchrun's
    store for the other ranks: up to 30 minutes) exits within seconds, saying so; nothing of
    the run is written yet. The rank here is a process whose parent is SIGKILLed."""
    import signal
    import subprocess
    import sys
    import time

    rank = ("import os, time\nos.environ.update(TORCHELASTIC_RUN_ID='test', RANK='1')\n"
            "from mypt.signals import watch_torchrun\nwatch_torchrun()\nprint('watching', flush=True)\n"
            "time.sleep(60)\nprint('still here', flush=True)\n")
    agent = subprocess.Popen([sys.executable, "-c", f"import subprocess, sys\n"
                              f"subprocess.Popen([sys.executable, '-c', {rank!r}]).wait()"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert agent.stdout.readline() == "watching\n"
    started = time.monotonic()
    agent.send_signal(signal.SIGKILL)
    out, err = agent.communicate(timeout=30)  # (the rank holds the pipes: EOF when it exits)
    assert out == "" and time.monotonic() - started < 10
    assert err == ("Error: torchrun ended (its process was killed) before training began: rank 1 stops, no "
                   "checkpoint written; run the command again\n")


@pytest.mark.slow
def test_a_rank_that_hangs_ends_the_run_within_dist_timeout_minutes_keeping_its_checkpoint(tmp_path):
    """A rank that hangs, not dies (SIGSTOP here; a stalled mount, a stuck GPU), left the others
    waiting in their collective for torch's timeout, 30 minutes with gloo. gloo gives up after
    --dist_timeout_minutes (the process group's timeout, and the new group's for the votes under
    NCCL): the rank left says so in one line, the last checkpoint intact, and --resume continues it."""
    import re
    import signal
    import subprocess
    import sys
    import time

    from conftest import char_dataset, ranks_by_hand

    char_dataset(tmp_path)
    args = [sys.executable, "-m", "mypt.cli", "train", "--dataset_dir", "ds", "--model_name", "m", "--config_file",
            "tiny", "--device", "cpu", "--eval_interval", "3", "--eval_iters", "2"]
    # (15 s: far past how far two sound ranks drift apart on a loaded machine, so only the stop times out)
    with ranks_by_hand([[*args, "--max_iters", "100000", "--dist_timeout_minutes", "0.25"]] * 2, tmp_path,
                       logs=tmp_path) as procs:
        deadline = time.monotonic() + 120
        # (The checkpoint's file, not the line `step 3: val`: its save comes after, and needs rank 1.)
        while not (tmp_path / "checkpoints/m/training_state.json").is_file() and procs[0].poll() is None:
            assert time.monotonic() < deadline, (tmp_path / "rank0.out").read_text()[-3000:]
            time.sleep(0.2)
        procs[1].send_signal(signal.SIGSTOP)
        procs[0].wait(timeout=120)
    out = (tmp_path / "rank0.out").read_text()
    assert procs[0].returncode == 1, out[-3000:]
    # (gloo times out on a send as on a receive: which one rank 0 was in depends on where the stop landed)
    stopped = re.findall(r"^Error: rank 0: another rank did not take part in (?:step \d+|the evaluation of step "
                         r"\d+|the vote or save after step \d+) within --dist_timeout_minutes 0.25 \(Timed out "
                         r"waiting 15000ms for (?:recv|send) operation to complete\): a rank that hangs \(a stopped "
                         r"process, a stalled mount, a stuck GPU\) holds up every other, so this rank stopped there, "
                         r"saving nothing; the last checkpoint \(step (\d+)\) is in checkpoints/m: continue from it "
                         r"with --resume", out, re.M)
    assert len(stopped) == 1 and "Traceback" not in out, out[-3000:]
    step = int(stopped[0])
    assert step >= 3 and json.loads((tmp_path / "checkpoints/m/training_state.json").read_text())["step"] == step
    done = subprocess.run([*args, "--resume", "--max_iters", str(step + 1)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and f"resuming m from step {step}" in done.stdout, done.stdout + done.stderr


@pytest.mark.slow
@pytest.mark.parametrize("at, signal_name, resume, doing, said", [
    ("mypt.train_command._rank_settings", "SIGSTOP", False, "the ranks' check that they have the same settings",
     r" did not take part in {doing} within --dist_timeout_minutes 0.25 \(Timed out waiting 15000ms for \w+ "
     r"operation to complete\): a rank that hangs .* so this rank stopped there, saving nothing"),
    ("mypt.checkpoint.load_training_state", "SIGKILL", True, r"DDP's start \(rank 0's weights copied to every rank\)",
     r"'s process ended during {doing} \(.*Connection (?:closed|reset) by peer.*\): this rank stopped there, saving "
     r"nothing; that rank's own log may say why")], ids=["hung-in-the-settings-check", "killed-in-the-restore"])
def test_a_rank_lost_before_the_first_step_ends_the_others_with_one_line(at, signal_name, resume, doing, said,
                                                                          tmp_path):
    """A rank that hangs or dies between the process group's start and step 1 (here rank 1, as it
    reads its settings for the ranks' check, or restores the checkpoint while rank 0 does) left
    rank 0 with 40 lines of a collective's traceback: it says so in one line, as in training, and
    the checkpoint it was resuming is untouched."""
    import re
    import sys

    from conftest import char_dataset, mypt_cli, ranks_by_hand, tree_bytes

    char_dataset(tmp_path)
    args = ["train", "--dataset_dir", "ds", "--model_name", "m", "--config_file", "tiny", "--device", "cpu",
            "--eval_interval", "3", "--eval_iters", "2", "--max_iters", "3"]
    if resume:
        mypt_cli(*args, cwd=tmp_path)
        args = [*args[:-1], "6", "--resume"]
    args += ["--dist_timeout_minutes", "0.25"]
    before = tree_bytes(tmp_path / "checkpoints/m")
    # Rank 1 stops or dies as it enters `at`: the signal sent to itself.
    module, name = at.rsplit(".", 1)
    fault = (f"import importlib, os, runpy, signal, sys\nmodule = importlib.import_module({module!r})\n"
             f"real = getattr(module, {name!r})\n"
             f"def at(*a, **k):\n    os.kill(os.getpid(), signal.{signal_name})\n    return real(*a, **k)\n"
             f"setattr(module, {name!r}, at)\nsys.argv = ['mypt', *{args!r}]\n"
             "runpy.run_module('mypt.cli', run_name='__main__')\n")
    with ranks_by_hand([[sys.executable, "-m", "mypt.cli", *args], [sys.executable, "-c", fault]], tmp_path,
                       logs=tmp_path) as procs:
        procs[0].wait(timeout=120)
    out = (tmp_path / "rank0.out").read_text()
    assert procs[0].returncode == 1 and "Traceback" not in out, out[-3000:]
    line = re.findall(r"^Error: rank 0: another rank" + said.format(doing=doing) + r".*; nothing was trained yet: "
                      r"run the same command again$", out, re.M)  # (launched without torchrun: no --max_restarts)
    assert len(line) == 1, out[-3000:]
    assert tree_bytes(tmp_path / "checkpoints/m") == before  # (a fresh run's: none)
