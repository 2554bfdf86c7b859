"""The commands of one process (all but train) refuse to run as several under torchrun, and say
an error once a node, not once a rank: the ranks other than local rank 0 exit with its status,
quietly."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

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
