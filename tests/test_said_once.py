"""The commands of one process (all but train) refuse to run as several under torchrun, and say
an error once a node, not once a rank: the ranks other than local rank 0 exit with its status,
quietly. mypt train's ranks run together: an error is said by the first rank of a node to stop
with it, a start-up failure of one rank by that rank on its node."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import char_dataset, ranks_by_hand, run_in_session

from mypt.cli import main

TORCHRUN = {"TORCHELASTIC_RUN_ID": "test", "WORLD_SIZE": "2"}


@pytest.mark.parametrize("args, said", [
    (["eval", "--model_name", "nosuch", "--dataset", "x=nodir"], "Error: mypt eval runs in one process, and "
                                                                  "torchrun started 2 (WORLD_SIZE)"),
    (["export-hf", "--model_name", "nosuch", "--out_dir", "out"], "Error: mypt export-hf runs in one process"),
    (["generate", "--model_name", "nosuch", "--prompt", "x"], "Error: mypt generate runs in one process"),
    (["prepare-dataset", "--input_files", "nodir", "--out_dir", "out"], "Error: mypt prepare-dataset runs in one "
                                                                        "process"),
    (["eval", "--model_name", "nosuch", "--dataset", "x=nodir", "--batch_size", "abc"], "Error: Invalid value"),
])
@pytest.mark.parametrize("local_rank", ["0", "1"])
def test_an_error_is_said_by_local_rank_0_and_the_other_ranks_exit_with_its_status(args, said, local_rank, tmp_path,
                                                                                   monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name, value in {**TORCHRUN, "RANK": local_rank, "LOCAL_RANK": local_rank}.items():
        monkeypatch.setenv(name, value)
    done = CliRunner().invoke(main, args)
    assert done.exit_code == (2 if "Invalid value" in said else 1), done.output
    assert (said in done.output) == (local_rank == "0") and (local_rank == "0" or done.output == ""), done.output
    assert "Traceback" not in done.output and not (tmp_path / "out").exists()


def test_outside_torchrun_a_rank_variable_silences_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    done = CliRunner().invoke(main, ["eval", "--model_name", "nosuch", "--dataset", "x=nodir"])
    assert done.exit_code == 1 and "Error: no checkpoint 'nosuch'" in done.output, done.output


def test_under_torchrun_with_one_process_the_command_runs(tmp_path, monkeypatch):
    """torchrun --nproc_per_node 1 is one process: the command runs (here, to its own error)."""
    monkeypatch.chdir(tmp_path)
    for name, value in {**TORCHRUN, "WORLD_SIZE": "1", "RANK": "0", "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(name, value)
    done = CliRunner().invoke(main, ["export-hf", "--model_name", "nosuch", "--out_dir", "out"])
    assert done.exit_code == 1 and "Error: no checkpoint 'nosuch'" in done.output, done.output


# ---------------------------------------------------------------------------------------------
# mypt train under torchrun: its ranks run together, and each error is said once a node

@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return char_dataset(tmp_path_factory.mktemp("said-once"))


def two_ranks(args: list[str], cwd: Path, rank1: list[str] = ()) -> subprocess.CompletedProcess:
    """`torchrun --nproc_per_node 2 mypt train ARGS` on the CPU (gloo), rank 1 given `rank1` on top.
    Its own session, killed whole if a rank hangs past the timeout."""
    script = cwd / "rank.py"
    script.write_text("import os, sys\nfrom mypt.cli import main\n"
                      "extra = sys.argv[sys.argv.index('--rank1') + 1:] if os.environ['RANK'] == '1' else []\n"
                      "main(['train', *sys.argv[1:sys.argv.index('--rank1')], *extra], prog_name='mypt')\n")
    return run_in_session([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(script), *args, "--model_name", "m", "--config_file", "tiny", "--device", "cpu",
                           "--max_iters", "2", "--rank1", *rank1], cwd, timeout=180)


def said(done: subprocess.CompletedProcess) -> list[str]:
    return re.findall(r"^Error: .*$", done.stdout + done.stderr, re.M)


@pytest.mark.slow
def test_a_metrics_dir_rank_0_refuses_stops_every_rank_said_once(dataset, tmp_path):
    """Rank 0 checks --metrics_dir (its logs go there) and the others learn its refusal as they
    wait to start: they checked it themselves, each printing the same refusal (on another node,
    judging another filesystem's folder). Said once, no rank left waiting, nothing deleted."""
    live = tmp_path / "live"
    live.mkdir()
    (live / "params.yaml").write_text("mine: 1\n")
    done = two_ranks(["--dataset_dir", str(dataset), "--metrics_dir", str(live)], tmp_path)
    assert done.returncode != 0
    assert said(done) == [f"Error: --metrics_dir {live} holds params.yaml, which dvclive would delete: choose a "
                          "directory of its own for the run's metrics"], done.stderr[-3000:]
    assert (live / "params.yaml").read_text() == "mine: 1\n" and not (tmp_path / "checkpoints" / "m").exists()


@pytest.mark.slow
@pytest.mark.parametrize("case", ["before the group", "after the group"])
def test_ranks_of_a_node_that_stop_alike_say_it_once(dataset, tmp_path, case):
    """Every rank refusing the same --dataset_dir (before the process group), or every rank
    refusing rank 1's other --eval_interval (the ranks' agreement, after it), printed the line
    once a rank: 8 lines on 8 GPUs."""
    if case == "before the group":
        done = two_ranks(["--dataset_dir", "nosuch"], tmp_path)
        line = "Error: --dataset_dir nosuch: no directory nosuch"
    else:
        done = two_ranks(["--dataset_dir", str(dataset)], tmp_path, rank1=["--eval_interval", "4"])
        line = "Error: rank 1 was started with other settings than rank 0: --eval_interval 4"
    assert done.returncode != 0
    assert len(said(done)) == 1 and said(done)[0].startswith(line), done.stderr[-3000:]


def by_hand(args: list[str], cwd: Path, rank1: list[str] = ()) -> list[subprocess.CompletedProcess]:
    """Two ranks of `mypt train ARGS` launched without torchrun (conftest.ranks_by_hand), rank 1
    given `rank1` on top."""
    cmd = [sys.executable, "-m", "mypt.cli", "train", *args, "--model_name", "m", "--config_file", "tiny",
           "--device", "cpu", "--max_iters", "2"]
    with ranks_by_hand([cmd, [*cmd, *rank1]], cwd) as procs:
        outs = [p.communicate(timeout=120) for p in procs]
    return [subprocess.CompletedProcess(p.args, p.returncode, out, err) for p, (out, err) in zip(procs, outs)]


@pytest.mark.slow
@pytest.mark.parametrize("case", ["a locked checkpoint", "a refused --metrics_dir", "rank 1's flag"])
def test_ranks_launched_without_torchrun_stop_together_when_one_cannot_start(dataset, tmp_path, case):
    """Launched without torchrun the ranks met in no start store: rank 0 refusing to start (the
    checkpoint locked by another run) exited, and rank 1 waited for it in init_process_group until
    its timeout (30 minutes); rank 1 refusing its flag left rank 0 waiting so. They meet in rank
    0's own store: every rank stops, the error said once (the ranks share a machine here)."""
    args, rank1 = ["--dataset_dir", str(dataset)], []
    with contextlib.ExitStack() as held:
        if case == "a locked checkpoint":
            from mypt.lock import output_lock

            held.enter_context(output_lock(tmp_path / "checkpoints" / "m", "--model_name"))
            line = f"Error: checkpoints/m is in use by process {os.getpid()}"
        elif case == "a refused --metrics_dir":
            live = tmp_path / "live"
            live.mkdir()
            (live / "params.yaml").write_text("mine: 1\n")
            args += ["--metrics_dir", str(live)]
            line = f"Error: --metrics_dir {live} holds params.yaml, which dvclive would delete"
        else:
            rank1 = ["--eval_iters", "abc"]
            line = "Invalid value for '--eval_iters' / '--eval-iters': 'abc' is not a valid integer"
        ranks = by_hand(args, tmp_path, rank1)
    assert [rank.returncode for rank in ranks] == [1, 2 if rank1 else 1], [rank.stderr[-2000:] for rank in ranks]
    errors = [e for rank in ranks for e in said(rank)]
    assert len(errors) == 1 and line in errors[0], [rank.stderr[-2000:] for rank in ranks]
    assert "Traceback" not in ranks[0].stderr + ranks[1].stderr
    assert case == "a locked checkpoint" or not (tmp_path / "checkpoints" / "m").exists()


@pytest.mark.slow
def test_a_rank_started_with_another_boolean_flag_is_told_it_as_typed(dataset, tmp_path):
    """A boolean setting that differs between the ranks is said as the flags given (--qk_norm,
    --no_qk_norm), not as its Python value (`--qk_norm True (rank 0: False)`)."""
    done = two_ranks(["--dataset_dir", str(dataset)], tmp_path, rank1=["--qk_norm"])
    assert done.returncode != 0
    assert said(done) == ["Error: rank 1 was started with other settings than rank 0: --qk_norm (rank 0: "
                          "--no_qk_norm); start every node with the same mypt train command and flags"], \
        done.stderr[-3000:]
