"""SIGTERM and Ctrl-C under torchrun before training begins, through the CLI as torchrun runs it."""

from __future__ import annotations

import os
import re
from pathlib import Path
import signal
import subprocess
import sys
import threading

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
    assert len(said) == 1 and re.match(r"Error: SIGTERM(?: on another rank)?: stopped at step \d+(?: \(its evaluation "
                                       r"(?:skipped|cut short)[^)]*\))?; continue with --resume", said[0]), err
    step = int(re.search(r"stopped at step (\d+)", said[0]).group(1))
    resumed = subprocess.run([sys.executable, "-m", "mypt.cli", *train, "--max_iters", str(step + 1), "--resume"],
                             cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0 and f"from step {step}" in resumed.stdout, resumed.stdout + resumed.stderr


# `mypt train` whose run gets a SIGTERM from itself: after the step that ends at step 5 (an
# evaluation is due there: eval_interval 5), or as the first evaluation begins.
STOPPED = '''
import os, signal, sys
import mypt.train
from mypt.cli import main

step, evaluate_all = mypt.train._Run.train_step, mypt.train.evaluate_all
def train_step(self):
    step(self)
    if self.step == 5 and sys.argv[1] == "before":
        os.kill(os.getpid(), signal.SIGTERM)
def evaluate_during(*args, **kwargs):
    if sys.argv[1] == "during":
        os.kill(os.getpid(), signal.SIGTERM)
    return evaluate_all(*args, **kwargs)
mypt.train._Run.train_step, mypt.train.evaluate_all = train_step, evaluate_during
main(sys.argv[2:], prog_name="mypt")
'''


@pytest.mark.slow  # (6-7 s each: the full run's; the quick loop's stops are test_crash's and the ones above)
@pytest.mark.parametrize("when, eval_iters, step, said, max_iters", [
    ("before", 2, 5, "skipped", 10),
    ("during", 100000, 0, "cut short", 10),
    ("before", 2, 5, "skipped", 5)])
def test_a_stop_skips_or_cuts_short_the_evaluation_and_the_resume_runs_it(tmp_path, when, eval_iters, step, said,
                                                                         max_iters):
    """A SIGTERM that came before a due evaluation, or during one, waited for the whole
    evaluation before the checkpoint was written: under torchrun, whose agent kills the ranks
    30 s after a SIGTERM, an evaluation of a minute lost the checkpoint. Now the stop skips the
    evaluation (or cuts it short within a few batches) and saves at once, and the resumed run
    evaluates that step first: the loss an uninterrupted run logs there. Stopped in the last step,
    the run is not complete: it exited 0 with no checkpoint of its end."""
    (tmp_path / "input.txt").write_text("the king and the queen and the crown\n" * 200)
    (tmp_path / "stopped.py").write_text(STOPPED)
    train = ["train", "--input_file", "input.txt", "--tokenization", "char", *TINY, "--eval_interval", "5",
             "--log_interval", "1"]
    run = subprocess.run([sys.executable, "stopped.py", when, *train, "--model_name", "m", "--eval_iters",
                          str(eval_iters), "--max_iters", str(max_iters)], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 1 and f"Error: SIGTERM: stopped at step {step} (its evaluation {said}: --resume " \
        "evaluates it first); continue with --resume" in run.stderr, run.stdout + run.stderr
    resumed = subprocess.run([sys.executable, "-m", "mypt.cli", *train, "--model_name", "m", "--eval_iters", "2",
                              "--max_iters", str(max_iters), "--resume"], cwd=tmp_path, capture_output=True, text=True,
                             timeout=300)
    whole = subprocess.run([sys.executable, "-m", "mypt.cli", *train, "--model_name", "w", "--eval_iters", "2",
                            "--max_iters", str(max_iters)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    val = lambda out: re.findall(r"^step (\d+): val ([\d.]+)", out, re.M)  # noqa: E731
    assert resumed.returncode == 0 and whole.returncode == 0, resumed.stderr + whole.stderr
    assert val(resumed.stdout) == [v for v in val(whole.stdout) if int(v[0]) >= step], resumed.stdout


# A command run as `mypt` runs it, with a wait (for the test's Ctrl-Cs) among the exit-time work:
# with the atexit handlers (as torch's run there), and at the modules' teardown (a global's
# finalizer), where Python has put SIGINT back to its default. "aborted": a Ctrl-C during the command.
AT_EXIT = '''
import atexit, os, signal, sys
import mypt.prepare
from mypt.cli import main

def wait(where, write=os.write, read=os.read):
    write(1, where.encode() + b"\\n")
    read(0, 1)  # the test's Ctrl-Cs come here, then a byte

class Teardown:
    def __del__(self, wait=wait):
        wait("teardown")

if sys.argv[1] == "aborted":
    def prepare_dataset(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
    mypt.prepare.prepare_dataset = prepare_dataset
if sys.argv[1] == "late":  # a Ctrl-C once the command returned, as click closes its context
    import click
    def prepare_dataset(*args, done=mypt.prepare.prepare_dataset, **kwargs):
        click.get_current_context().call_on_close(lambda: os.kill(os.getpid(), signal.SIGINT))
        return done(*args, **kwargs)
    mypt.prepare.prepare_dataset = prepare_dataset
if os.environ.get("HANG"):  # a hang at exit (a thread never done, a library's teardown)
    atexit.register(lambda: (wait("hanging"), wait("hanging still")))
atexit.register(wait, "atexit")
teardown = Teardown()
main(sys.argv[2:], prog_name="mypt")
'''


@pytest.mark.parametrize("how, status, last", [("done", 0, "Duplicate lines dropped: 0"), ("aborted", 1, "Aborted!")])
def test_a_ctrl_c_at_exit_is_ignored(tmp_path, how, status, last):
    """Ctrl-Cs that came once the command had ended (said its line) and Python was exiting: one
    during torch's atexit handlers printed their traceback (a KeyboardInterrupt in
    torch.library's _del_library, in dynamo's dump_compile_times importing tabulate) after
    mypt's line; one during the modules' teardown killed the process, silently (status -2, the
    command's own status lost: a completed command, or Aborted!'s 1). Now they are ignored (a
    first one with the atexit handlers: a second would end the process, test_a_second_ctrl_c...)."""
    (tmp_path / "c.txt").write_text("".join(f"line {i} of the king and the queen\n" for i in range(20)))
    (tmp_path / "at_exit.py").write_text(AT_EXIT)
    proc = subprocess.Popen([sys.executable, "at_exit.py", how, "prepare-dataset", "--input_files", "c.txt",
                             "--out_dir", "ds", "--tokenization", "char", "--workers", "1"], cwd=tmp_path,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    waits, out = [], None
    try:
        for line in proc.stdout:
            if line in ("atexit\n", "teardown\n"):
                waits.append(line.strip())
                for _ in range(1 if line == "atexit\n" else 3):
                    proc.send_signal(signal.SIGINT)
                try:
                    proc.stdin.write("\n")
                    proc.stdin.flush()
                except BrokenPipeError:  # (killed by the Ctrl-C)
                    pass
            elif line.strip():
                out = line.strip()
        err = proc.communicate(timeout=120)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    said = err.strip().splitlines()
    assert proc.returncode == status and "Traceback" not in err and waits == ["atexit", "teardown"], err
    assert (said[-1] if how == "aborted" else out) == last, err


@pytest.mark.parametrize("how, status, last", [("done", 0, "Duplicate lines dropped: 0"), ("aborted", 1, "Aborted!"),
                                               ("late", 1, "Aborted!")])
def test_a_second_ctrl_c_ends_a_hang_at_exit_with_the_commands_status(tmp_path, how, status, last):
    """A first Ctrl-C at exit is ignored (test_a_ctrl_c_at_exit_is_ignored); all of them were, and
    a hang there (a thread never done, wandb's teardown) was only for SIGTERM or kill to end. A
    second ends the process at once, with the command's status and what it said, no traceback.
    "late": a Ctrl-C after the command returned, as click closed its context, made click say
    Aborted! (status 1), but the status kept was the command's 0, and the hang ended with it."""
    (tmp_path / "c.txt").write_text("".join(f"line {i} of the king and the queen\n" for i in range(20)))
    (tmp_path / "at_exit.py").write_text(AT_EXIT)
    proc = subprocess.Popen([sys.executable, "at_exit.py", how, "prepare-dataset", "--input_files", "c.txt",
                             "--out_dir", "ds", "--tokenization", "char", "--workers", "1"], cwd=tmp_path,
                            env={**os.environ, "HANG": "1"},
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    said = []
    watchdog = threading.Timer(30, proc.kill)  # (a hang the second Ctrl-C does not end: killed, the test fails)
    watchdog.start()
    try:
        for line in proc.stdout:
            said.append(line.strip())
            if line in ("atexit\n", "hanging\n"):
                if line == "hanging\n":  # the first Ctrl-C (taken before its wait returns)
                    proc.send_signal(signal.SIGINT)
                proc.stdin.write("\n")
                proc.stdin.flush()
            elif line == "hanging still\n":  # waits for good: the second ends it
                proc.send_signal(signal.SIGINT)
        err = proc.communicate(timeout=60)[1]
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == status and "Traceback" not in err, err
    assert said[-1] == "hanging still" and (err.strip().splitlines()[-1] if how != "done" else said[-4]) == last, \
        (said, err)


# Training's stop (StopSignals) and two Ctrl-Cs: the first asks for the stop, the second quits at
# once; a third comes as that one's line is about to be said.
THIRD_CTRL_C = '''
import os, signal
import mypt.signals

said_here = mypt.signals.stop_said_here
def stop_said_here():
    os.kill(os.getpid(), signal.SIGINT)
    return said_here()
mypt.signals.stop_said_here = stop_said_here
try:
    with mypt.signals.StopSignals():
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)
        print("went on", flush=True)
except KeyboardInterrupt:
    print("interrupted", flush=True)
'''


def test_a_third_ctrl_c_does_not_cut_the_line_of_the_second(tmp_path):
    """A Ctrl-C during training's stop quits at once with its line; a third, while that line was
    being said, interrupted it (the line lost, or cut short). It is ignored until said; the
    KeyboardInterrupt of the second follows (click's Aborted!)."""
    (tmp_path / "third.py").write_text(THIRD_CTRL_C)
    run = subprocess.run([sys.executable, "third.py"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert run.returncode == 0 and run.stdout == "interrupted\n", run.stdout + run.stderr
    assert run.stderr == ("\nSIGINT after SIGINT: stopping at once, without a checkpoint of the step in flight; a "
                          "checkpoint saved before is kept (continue it with --resume)\n"), run.stderr
