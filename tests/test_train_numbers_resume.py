"""The numbers a resumed run reports: the resume line names an --eval_dataset_dir that is not
the checkpoint's run's, metrics.json holds only what the run still logs, a resume that finds
the run complete cuts back a killed run's rows, and an evaluation a stop cut short is the
resumed run's first."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import run

import mypt.train
from mypt.cli import main


def invoke(*args) -> str:
    r = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return r.output


def dataset(tmp_path: Path, name: str = "ds", salt: int = 0, tokenizer_from: Path | None = None) -> Path:
    (tmp_path / f"{name}.txt").write_text("".join(f"Line {i} of the text, said the king {i * 3 + salt}.\n"
                                                  for i in range(400)))
    invoke("prepare-dataset", "--input_files", tmp_path / f"{name}.txt", "--out_dir", tmp_path / name,
           "--tokenization", "char", "--tokens_per_shard", "4000", "--workers", "1",
           *(["--tokenizer_from", tokenizer_from] if tokenizer_from else []))
    return tmp_path / name


def train_args(tmp_path: Path, *extra) -> list:
    return ["train", "--dataset_dir", tmp_path / "ds", "--model_name", "m", "--checkpoints_dir", tmp_path / "ck",
            "--config_file", "tiny", "--device", "cpu", "--no_compile", "--batch_size", "2", "--eval_iters", "2",
            "--eval_interval", "5", "--log_interval", "1", "--metrics_dir", tmp_path / "live", *extra]


def summary(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "live" / "metrics.json").read_text())


def test_a_resume_names_another_eval_dataset_and_metrics_json_drops_what_it_no_longer_logs(tmp_path):
    ds = dataset(tmp_path)
    one = dataset(tmp_path, "e1", 1, tokenizer_from=ds)
    two = dataset(tmp_path, "e2", 2, tokenizer_from=ds)
    invoke(*train_args(tmp_path, "--max_iters", "5", "--eval_dataset_dir", one))
    out = invoke(*train_args(tmp_path, "--max_iters", "10", "--resume", "--eval_dataset_dir", two))
    resumed = next(line for line in out.splitlines() if line.startswith("resuming"))
    assert f"--eval_dataset_dir {two} (was {one})" in resumed, resumed
    out = invoke(*train_args(tmp_path, "--max_iters", "15", "--resume", "--eval_dataset_dir", tmp_path / "e2"))
    resumed = next(line for line in out.splitlines() if line.startswith("resuming"))
    assert "eval" not in resumed, resumed  # (the same data: nothing to say)
    out = invoke(*train_args(tmp_path, "--max_iters", "20", "--resume"))
    resumed = next(line for line in out.splitlines() if line.startswith("resuming"))
    assert f"--eval_dataset_dir {two} of the checkpoint's run not given" in resumed, resumed
    latest = summary(tmp_path)
    assert latest["step"] == 20 and "val" in latest and "eval_general" not in latest, latest


def rows(tmp_path: Path, name: str) -> list[int]:
    lines = (tmp_path / "live" / "plots" / "metrics" / f"{name}.tsv").read_text().splitlines()[1:]
    return [int(line.split("\t")[0]) for line in lines]


def test_a_resume_that_finds_the_run_complete_cuts_back_a_killed_runs_rows(tmp_path):
    """A run killed past its last checkpoint (step 10) logged rows to step 15; `--resume
    --max_iters 10` has nothing to train, and leaves the curves and metrics.json at step 10."""
    dataset(tmp_path)
    invoke(*train_args(tmp_path, "--max_iters", "10"))
    kept = tmp_path / "ck10"
    shutil.copytree(tmp_path / "ck" / "m", kept)
    invoke(*train_args(tmp_path, "--max_iters", "15", "--resume"))
    assert rows(tmp_path, "train_loss")[-1] == 15
    shutil.rmtree(tmp_path / "ck" / "m")  # (the checkpoint of step 10 back, as a kill before the next save left it)
    shutil.copytree(kept, tmp_path / "ck" / "m")
    out = invoke(*train_args(tmp_path, "--max_iters", "10", "--resume"))
    assert "nothing to do" in out
    assert rows(tmp_path, "train_loss")[-1] == 10 and rows(tmp_path, "val")[-1] == 10
    latest = summary(tmp_path)
    assert latest["step"] == 10 and latest["best_val"] == min(
        float(line.split("\t")[1]) for line in
        (tmp_path / "live/plots/metrics/val.tsv").read_text().splitlines()[1:]), latest


@pytest.mark.slow
def test_a_resume_that_finds_the_run_complete_opens_no_remote_logger(tmp_path, monkeypatch):
    """The complete run's resume cuts back dvclive's rows but does not open its MLflow run again
    (a network round trip, or a wait offline, on each resubmission of a finished job)."""
    import mypt.logger_clients

    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    real, opened = mypt.logger_clients.CLIENTS["mlflow"], []

    def counted(*args, **kwargs):
        opened.append(1)
        return real(*args, **kwargs)

    monkeypatch.setitem(mypt.logger_clients.CLIENTS, "mlflow", counted)
    dataset(tmp_path)
    invoke(*train_args(tmp_path, "--max_iters", "5", "--logger", "dvclive,mlflow"))
    assert len(opened) == 1
    out = invoke(*train_args(tmp_path, "--max_iters", "5", "--resume", "--logger", "dvclive,mlflow"))
    assert "nothing to do" in out and len(opened) == 1


def test_an_evaluation_a_stop_cut_short_is_the_resumed_runs_first(tmp_path, monkeypatch):
    """A SIGTERM during the evaluation of the last step (10) cuts it short and saves step 10; the
    stop says --resume evaluates it first, and so it does with a larger --max_iters, though 10
    is then neither the last step nor one of --eval_interval's."""
    dataset(tmp_path)
    evaluate_all, calls = mypt.train.evaluate_all, []

    def stopped_in_the_last(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # (steps 0, 7, then 10)
            os.kill(os.getpid(), signal.SIGTERM)
        return evaluate_all(*args, **kwargs)

    monkeypatch.setattr(mypt.train, "evaluate_all", stopped_in_the_last)
    r = CliRunner().invoke(main, [str(a) for a in train_args(tmp_path, "--max_iters", "10", "--eval_interval", "7")])
    assert r.exit_code != 0 and "stopped at step 10 (its evaluation cut short: --resume evaluates it first)" \
        in r.output, r.output
    monkeypatch.setattr(mypt.train, "evaluate_all", evaluate_all)
    out = invoke(*train_args(tmp_path, "--max_iters", "15", "--eval_interval", "7", "--resume"))
    assert re.findall(r"^step (\d+): val", out, re.M) == ["10", "14", "15"], out
    assert rows(tmp_path, "val") == [0, 7, 10, 14, 15]


@pytest.mark.slow
def test_a_resume_on_more_processes_says_the_seed_starts_the_new_ranks_streams(tmp_path):
    """--seed on a resume seeds the ranks the checkpoint did not save (their windows and dropout):
    onto two processes from one, rank 1's, which the resume line says (it said 'no effect')."""
    dataset(tmp_path)
    args = [str(a) for a in train_args(tmp_path, "--max_iters", "2", "--dropout", "0.1")]
    invoke(*args)
    done = run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
                "mypt.cli", *args[:args.index("--max_iters")], "--max_iters", "4", "--dropout", "0.1", "--seed", "7",
                "--resume"], tmp_path, timeout=300)
    line = next(line for line in done.stdout.splitlines() if line.startswith("resuming m"))
    assert "seed 7 (was 1337; it seeds only rank 1, new to this resume: the others continue the checkpoint's " \
           "random state)" in line, line
