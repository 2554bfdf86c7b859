"""Live tracking: `mypt train --metrics_dir` writes dvclive's metrics while the run trains."""

from __future__ import annotations

import csv
import json
import os
import shutil
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import REPO, run

from mypt.cli import main
from mypt.config import RunSettings
from mypt.errors import InputError
from mypt.input_text import read_input_text
from mypt.tracking import open_tracker
from mypt.train_command import run_training

SETTINGS = {"device": "cpu", "max_iters": 30, "eval_interval": 10, "eval_iters": 2, "log_interval": 5}


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text("".join(f"Line {i} of the king's speech, and the queen's reply {i * 7}.\n" for i in range(300)))
    return path


def tsv(path: Path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def test_metrics_are_on_disk_after_each_evaluation_while_the_run_goes_on(corpus, tmp_path):
    live = tmp_path / "live"
    seen = {}

    def log(line: str) -> None:  # fit logs an evaluation after handing it to the tracker
        if line.startswith("step 10:"):
            seen["metrics"] = json.loads((live / "metrics.json").read_text())
            seen["val"] = tsv(live / "plots" / "metrics" / "val.tsv")
            seen["png"] = (live / "plots" / "images" / "loss.png").exists()

    req = RunSettings(model_name="m", input_file=corpus, tokenization="char", config_file="tiny",
                       checkpoints_dir=tmp_path / "ck", metrics_dir=live)
    run_training(req, SETTINGS, log=log, read_text=read_input_text)
    assert seen["metrics"]["step"] == 10 and seen["metrics"]["best_val"] == seen["metrics"]["val"]
    assert {"train_loss", "lr", "tokens_per_s"} <= set(seen["metrics"])
    assert [r["step"] for r in seen["val"]] == ["0", "10"]
    assert not seen["png"]  # drawn when the run ends

    final = json.loads((live / "metrics.json").read_text())
    vals = [float(r["val"]) for r in tsv(live / "plots" / "metrics" / "val.tsv")]
    assert final["step"] == 30 and final["best_val"] == min(vals) and len(vals) == 4
    assert [r["step"] for r in tsv(live / "plots" / "metrics" / "train_loss.tsv")] == [str(s) for s in range(5, 31, 5)]
    assert (live / "plots" / "images" / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_mypt_train_metrics_dir_writes_the_files_and_leaves_the_git_repo_alone(corpus, tmp_path, monkeypatch):
    # dvclive alone would `dvc init` a git repository without DVC: mypt train must not.
    run(["git", "init", "-q"], tmp_path)
    run(["git", "commit", "-q", "--allow-empty", "-m", "start"], tmp_path)
    monkeypatch.chdir(tmp_path)
    args = ["train", "--input_file", "corpus.txt", "--tokenization", "char", "--model_name", "m", "--config_file",
            "tiny", *(f"--{k}={v}" for k, v in SETTINGS.items()), "--metrics_dir", "runs/m"]
    done = CliRunner().invoke(main, args)
    assert done.exit_code == 0, done.output
    assert "Initialized DVC" not in done.output and not (tmp_path / ".dvc").exists()
    live = tmp_path / "runs" / "m"
    assert {p.name for p in (live / "plots" / "metrics").iterdir()} == {
        "train_loss.tsv", "val.tsv", "lr.tsv", "tokens_per_s.tsv"}
    assert json.loads((live / "metrics.json").read_text())["step"] == 30
    assert not (live / "dvc.yaml").exists() and not (tmp_path / "dvc.yaml").exists()

    # --resume continues the curves instead of starting them again.
    done = CliRunner().invoke(main, [*args, "--resume", "--max_iters=40"])
    assert done.exit_code == 0, done.output
    assert [r["step"] for r in tsv(live / "plots" / "metrics" / "val.tsv")] == ["0", "10", "20", "30", "40"]
    assert json.loads((live / "metrics.json").read_text())["step"] == 40
    assert run(["git", "status", "--porcelain", "--untracked-files=no"], tmp_path).stdout == ""


def test_metrics_dir_in_a_dvc_project_without_a_commit_yet(corpus, tmp_path, monkeypatch):
    """`git init && dvc init` and a run before the first commit (dvclive 3.49 asks an empty
    repository for its HEAD before it checks for commits: a traceback, no run)."""
    run(["git", "init", "-q"], tmp_path)
    run([sys.executable, "-m", "dvc", "init", "-q"], tmp_path)
    monkeypatch.chdir(tmp_path)
    done = CliRunner().invoke(main, ["train", "--input_file", "corpus.txt", "--tokenization", "char", "--model_name",
                                     "m", "--config_file", "tiny", *(f"--{k}={v}" for k, v in SETTINGS.items()),
                                     "--max_iters=10", "--metrics_dir", "runs/m"])
    assert done.exit_code == 0, done.output
    assert json.loads((tmp_path / "runs" / "m" / "metrics.json").read_text())["step"] == 10


def test_without_metrics_dir_no_tracking_files(corpus, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    req = RunSettings(model_name="m", input_file=corpus, tokenization="char", config_file="tiny",
                       checkpoints_dir=tmp_path / "ck")
    run_training(req, {**SETTINGS, "max_iters": 5}, log=lambda line: None, read_text=read_input_text)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck", "corpus.txt"]


@pytest.mark.slow
def test_resume_after_a_kill_drops_the_rows_past_the_checkpoint(corpus, tmp_path, monkeypatch):
    # A run killed after its checkpoint of step 4 had logged up to step 6: simulated by putting
    # the step-4 checkpoint back after a run to 6. The resumed run logs 5 and 6 again; the
    # curves hold each step once, in order, and best_val is that of the rows kept.
    monkeypatch.chdir(tmp_path)
    args = ["train", "--input_file", "corpus.txt", "--tokenization", "char", "--model_name", "m", "--config_file",
            "tiny", "--device", "cpu", "--eval_interval", "2", "--eval_iters", "1", "--log_interval", "1",
            "--checkpoints_dir", "ck", "--metrics_dir", "live"]
    assert CliRunner().invoke(main, [*args, "--max_iters", "4"]).exit_code == 0
    shutil.copytree(tmp_path / "ck" / "m", tmp_path / "at_4")
    done = CliRunner().invoke(main, [*args, "--max_iters", "6", "--resume"])
    assert done.exit_code == 0, done.output
    live = tmp_path / "live" / "plots" / "metrics"
    assert [r["step"] for r in tsv(live / "val.tsv")] == ["0", "2", "4", "6"]
    # A best val at step 6 that the run after the kill never reaches: it goes with its row.
    rows = tsv(live / "val.tsv")
    with open(live / "val.tsv", "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter="\t")
        writer.writeheader()
        writer.writerows([*rows[:-1], {**rows[-1], "val": "0.001"}])
    summary = json.loads((tmp_path / "live" / "metrics.json").read_text())
    (tmp_path / "live" / "metrics.json").write_text(json.dumps({**summary, "best_val": 0.001}))
    shutil.rmtree(tmp_path / "ck" / "m")
    shutil.copytree(tmp_path / "at_4", tmp_path / "ck" / "m")

    done = CliRunner().invoke(main, [*args, "--max_iters", "8", "--resume"])
    assert done.exit_code == 0, done.output
    for name in ("val", "train_loss", "lr"):
        steps = [int(r["step"]) for r in tsv(live / f"{name}.tsv")]
        assert steps == sorted(set(steps)), (name, steps)  # strictly increasing: no step twice
    assert [r["step"] for r in tsv(live / "val.tsv")] == ["0", "2", "4", "6", "8"]
    assert [int(r["step"]) for r in tsv(live / "train_loss.tsv")] == list(range(1, 9))
    vals = [float(r["val"]) for r in tsv(live / "val.tsv")]
    final = json.loads((tmp_path / "live" / "metrics.json").read_text())
    assert final["step"] == 8 and final["best_val"] == min(vals) > 0.001


def _train(tmp_path: Path, *extra: str) -> "click.testing.Result":
    args = ["train", "--input_file", "corpus.txt", "--tokenization", "char", "--config_file", "tiny", "--device",
            "cpu", "--eval_interval", "2", "--eval_iters", "1", "--log_interval", "1", "--checkpoints_dir", "ck",
            *extra]
    return CliRunner().invoke(main, args)


@pytest.mark.slow
def test_a_resumed_run_reads_each_file_of_its_metrics_dir_once_before_it_trains(corpus, tmp_path, monkeypatch,
                                                                                count_opens):
    """The checks of --metrics_dir (before its lock, under it, as dvclive's logger opens) each
    read metrics.json and every curve again: four reads of metrics.json and nine of each curve
    before the first step. What the check under the lock found is what the loggers start from."""
    import traceback

    import mypt.train_command

    monkeypatch.chdir(tmp_path)
    assert _train(tmp_path, "--model_name", "m", "--max_iters", "4", "--metrics_dir", "live").exit_code == 0
    live = (tmp_path / "live").resolve()

    def key(path, mode):  # mypt's reads (not dvclive's) of the files under live
        path = path.resolve()
        caller = next((f.filename for f in reversed(traceback.extract_stack()[:-1])
                       if f"{os.sep}mypt{os.sep}" in f.filename or "dvclive" in f.filename), "")
        if live in path.parents and path.is_file() and set(mode) <= {"r", "b", "t"} and \
                f"{os.sep}mypt{os.sep}" in caller and not reads.get("training"):
            return path.relative_to(live).as_posix()
        return None

    def fit(*args, **kwargs):
        reads["training"] = True
        return real_fit(*args, **kwargs)

    real_fit = mypt.train_command.fit
    monkeypatch.setattr(mypt.train_command, "fit", fit)
    reads = count_opens(key)
    done = _train(tmp_path, "--model_name", "m", "--max_iters", "6", "--metrics_dir", "live", "--resume")
    monkeypatch.undo()
    assert done.exit_code == 0, done.output
    assert reads.pop("training") and reads == {
        "metrics.json": 1, **{f"plots/metrics/{name}.tsv": 1 for name in ("lr", "tokens_per_s", "train_loss", "val")}}


def files_under(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_metrics_dir_keeps_the_users_files_dvclive_would_delete(corpus, tmp_path, monkeypatch):
    """dvclive clears its plot folders and reports when a run starts: a user's chart, curve or
    report there is refused by name, before anything is built, and nothing changes. A resumed
    run, which cuts mypt's curves back to the checkpoint's step, leaves the user's curve whole;
    the previous run's own curves and loss.png are replaced without a word."""
    monkeypatch.chdir(tmp_path)
    live = tmp_path / "runs" / "m"
    (live / "plots" / "metrics").mkdir(parents=True)
    (live / "plots" / "images").mkdir(parents=True)
    (live / "plots" / "metrics" / "my_eval.tsv").write_text("step\tacc\n1\t0.5\n99\t0.7\n")
    (live / "plots" / "images" / "my_chart.png").write_bytes(b"png")
    (live / "report.html").write_text("<p>mine</p>")
    (live / "notes.md").write_text("mine")
    before = files_under(live)
    done = _train(tmp_path, "--model_name", "m", "--max_iters", "2", "--metrics_dir", "runs/m")
    assert done.exit_code == 1 and "step 0" not in done.output, done.output
    for name in ("plots/metrics/my_eval.tsv", "plots/images/my_chart.png", "report.html"):
        assert name in done.output
    assert files_under(live) == before and not (tmp_path / "ck").exists()

    (live / "plots" / "images" / "my_chart.png").unlink()
    (live / "report.html").unlink()
    (live / "plots" / "metrics" / "my_eval.tsv").rename(tmp_path / "my_eval.tsv")
    assert _train(tmp_path, "--model_name", "m", "--max_iters", "4", "--metrics_dir", "runs/m").exit_code == 0
    (tmp_path / "my_eval.tsv").rename(live / "plots" / "metrics" / "my_eval.tsv")
    shutil.rmtree(tmp_path / "ck" / "m")
    assert _train(tmp_path, "--model_name", "m", "--max_iters", "2", "--metrics_dir", "runs/m").exit_code == 1
    done = _train(tmp_path, "--model_name", "m2", "--max_iters", "2", "--metrics_dir", "runs/m2")
    assert done.exit_code == 0, done.output
    # A resume: the user's curve keeps its row at step 99; mypt's are cut back, then continued.
    assert _train(tmp_path, "--model_name", "m", "--max_iters", "2").exit_code == 0
    done = _train(tmp_path, "--model_name", "m", "--max_iters", "3", "--resume", "--metrics_dir", "runs/m")
    assert done.exit_code == 0, done.output
    assert (live / "plots" / "metrics" / "my_eval.tsv").read_text() == "step\tacc\n1\t0.5\n99\t0.7\n"
    assert [r["step"] for r in tsv(live / "plots" / "metrics" / "val.tsv")] == ["0", "2", "3"]
    assert (live / "notes.md").read_text() == "mine"


def other_tools_run(directory: Path, names: tuple[str, ...]) -> None:
    """A dvclive run another program logged to `directory`: five steps of each metric."""
    from dvclive import Live

    with Live(str(directory), save_dvc_exp=False, dvcyaml=None) as live:
        for step in range(5):
            for i, name in enumerate(names):
                live.log_metric(name, (i + 1) / (step + 1))
            live.next_step()


@pytest.mark.parametrize("names", [("train_loss", "val_loss", "lr"),  # the hostile tester's: val_ as a mixture's
                                   ("train_loss", "lr", "val")])  # mypt's names, but not all a run of it logs
@pytest.mark.parametrize("resume", [False, True])
def test_another_tools_dvclive_run_in_the_metrics_dir_is_refused_and_left_as_it_was(corpus, tmp_path, monkeypatch,
                                                                                     names, resume):
    """A metrics directory is mypt's only where its metrics.json is one a mypt run wrote (it names
    the model): another tool's dvclive run there, which a new run would delete and a resumed run
    cut back and continue, is refused in one line before anything is built, byte for byte kept."""
    monkeypatch.chdir(tmp_path)
    other_tools_run(tmp_path / "dvclive", names)
    before = files_under(tmp_path / "dvclive")
    assert {"metrics.json", *(f"plots/metrics/{name}.tsv" for name in names)} <= set(before)
    if resume:
        assert _train(tmp_path, "--model_name", "m", "--max_iters", "2").exit_code == 0
    checkpoint = files_under(tmp_path / "ck" / "m") if resume else None
    extra = ["--resume", "--max_iters", "4"] if resume else ["--max_iters", "4"]
    done = _train(tmp_path, "--model_name", "m", "--metrics_dir", "dvclive", *extra)
    assert done.exit_code == 1 and len(done.output.strip().splitlines()) == 1, done.output
    assert "--metrics_dir dvclive holds files no mypt run wrote (a metrics.json that no training run " \
        "wrote with mypt: another tool's run?), which " in done.output
    assert "metrics.json, plots/metrics/" in done.output and "choose another --metrics_dir, or move" in done.output
    assert "step 0" not in done.output and files_under(tmp_path / "dvclive") == before
    assert (files_under(tmp_path / "ck" / "m") == checkpoint) if resume else not (tmp_path / "ck").exists()


def test_mypt_reuses_its_own_metrics_dirs_of_this_version_and_of_earlier_ones(corpus, tmp_path, monkeypatch):
    """mypt's own metrics directories stay its own: the demo pipeline's dvclive/base and
    dvclive/adapted (with Muon's muon_lr curve) take their model's next run, and one written
    before metrics.json named the model takes a --resume, its curves cut back and continued."""
    monkeypatch.chdir(tmp_path)
    # The demo's curves are in DVC's cache, not in git (dvc.yaml): those of its runs, by name.
    curves = {"base": ("lr", "muon_lr", "tokens_per_s", "train_loss", "val"),
              "adapted": ("eval_general", "lr", "muon_lr", "tokens_per_s", "train_loss", "val", "val_domain",
                          "val_general")}
    for model in ("base", "adapted"):
        shutil.copytree(REPO / "dvclive" / model, tmp_path / "runs" / model)
        (tmp_path / "runs" / model / "plots" / "metrics").mkdir(exist_ok=True)
        for name in curves[model]:
            (tmp_path / "runs" / model / "plots" / "metrics" / f"{name}.tsv").write_text(f"step\t{name}\n0\t1.5\n")
        done = _train(tmp_path, "--model_name", model, "--max_iters", "2", "--metrics_dir", f"runs/{model}")
        assert done.exit_code == 0, done.output
        assert sorted(p.name for p in (tmp_path / "runs" / model / "plots" / "metrics").iterdir()) == [
            "lr.tsv", "tokens_per_s.tsv", "train_loss.tsv", "val.tsv"]  # (this run: AdamW)

    assert _train(tmp_path, "--model_name", "old", "--max_iters", "4", "--metrics_dir", "runs/old").exit_code == 0
    metrics = tmp_path / "runs" / "old" / "metrics.json"
    summary = json.loads(metrics.read_text())
    del summary["model"]  # as mypt wrote it before it named the model
    assert set(summary) == {"step", "train_loss", "lr", "tokens_per_s", "val", "best_val"}
    metrics.write_text(json.dumps(summary, indent=4))
    shutil.rmtree(tmp_path / "ck" / "old")
    assert _train(tmp_path, "--model_name", "old", "--max_iters", "2").exit_code == 0
    done = _train(tmp_path, "--model_name", "old", "--max_iters", "3", "--resume", "--metrics_dir", "runs/old")
    assert done.exit_code == 0, done.output
    assert [r["step"] for r in tsv(tmp_path / "runs/old/plots/metrics/val.tsv")] == ["0", "2", "3"]
    assert json.loads(metrics.read_text())["model"] == "old"


def test_a_metrics_dir_holds_one_models_curves(corpus, tmp_path, monkeypatch):
    """metrics.json names the model whose curves the directory holds: another model's run, new or
    resumed, is refused it (a resume would cut its curves, a new run delete them). The same
    model's next run replaces its own curves."""
    monkeypatch.chdir(tmp_path)
    assert _train(tmp_path, "--model_name", "long", "--max_iters", "6", "--metrics_dir", "runs/long").exit_code == 0
    assert json.loads((tmp_path / "runs/long/metrics.json").read_text())["model"] == "long"
    before = files_under(tmp_path / "runs" / "long")
    assert _train(tmp_path, "--model_name", "other", "--max_iters", "2").exit_code == 0
    for extra in (["--resume", "--max_iters", "3"], ["--max_iters", "2", "--overwrite"]):
        done = _train(tmp_path, "--model_name", "other", "--metrics_dir", "runs/long", *extra)
        assert done.exit_code == 1 and "holds the curves of model 'long'" in done.output, done.output
    assert files_under(tmp_path / "runs" / "long") == before
    done = _train(tmp_path, "--model_name", "long", "--max_iters", "2", "--overwrite", "--metrics_dir", "runs/long")
    assert done.exit_code == 0, done.output
    assert [r["step"] for r in tsv(tmp_path / "runs/long/plots/metrics/val.tsv")] == ["0", "2"]


def test_a_metrics_dir_inside_a_checkpoint_or_a_dataset_is_refused(corpus, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert _train(tmp_path, "--model_name", "q1", "--max_iters", "1").exit_code == 0
    before = files_under(tmp_path / "ck" / "q1")
    for place in ("ck/q1", "ck/q1/live"):
        done = _train(tmp_path, "--model_name", "q2", "--max_iters", "1", "--metrics_dir", place)
        assert done.exit_code == 1 and "is a mypt checkpoint" in done.output, done.output
    assert files_under(tmp_path / "ck" / "q1") == before
    assert CliRunner().invoke(main, ["prepare-dataset", "--input_files", "corpus.txt", "--out_dir", "ds",
                                     "--tokenization", "char", "--workers", "1"]).exit_code == 0
    done = CliRunner().invoke(main, ["train", "--dataset_dir", "ds", "--model_name", "q3", "--config_file", "tiny",
                                     "--device", "cpu", "--max_iters", "1", "--metrics_dir", "ds/live"])
    assert done.exit_code == 1 and "is a mypt dataset" in done.output, done.output
    assert not (tmp_path / "ds" / "live").exists()


@pytest.mark.slow
def test_a_second_run_on_a_metrics_dir_in_use_is_refused(corpus, tmp_path, monkeypatch):
    """One writer per --metrics_dir, as per checkpoint: a run of another model (another
    checkpoint lock) into a directory a running training holds fails at once, naming the process."""
    import subprocess
    import sys

    monkeypatch.chdir(tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom mypt.lock import output_lock\n"
                               "with output_lock(sys.argv[1], 'x'):\n    print('held', flush=True); time.sleep(30)",
                               "runs/shared"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        done = _train(tmp_path, "--model_name", "c2", "--max_iters", "1", "--metrics_dir", "runs/shared")
        assert done.exit_code == 1 and f"in use by process {holder.pid}" in done.output, done.output
        assert "--metrics_dir" in done.output and not (tmp_path / "ck" / "c2").exists()
    finally:
        holder.kill()
        holder.wait()


def test_a_run_that_logged_nothing_keeps_its_metrics_dir(corpus, tmp_path, monkeypatch):
    """A run with no val split that stops before its first progress line leaves a metrics.json
    with its model and no step: the same model's next run (--resume, --overwrite) takes it."""
    monkeypatch.chdir(tmp_path)
    assert CliRunner().invoke(main, ["prepare-dataset", "--input_files", "corpus.txt", "--out_dir", "ds",
                                     "--tokenization", "char", "--val_fraction", "0", "--workers", "1"]).exit_code == 0
    args = ["train", "--dataset_dir", "ds", "--config_file", "tiny", "--device", "cpu", "--checkpoints_dir", "ck",
            "--model_name", "nv", "--metrics_dir", "mx", "--log_interval", "10"]
    assert CliRunner().invoke(main, [*args, "--max_iters", "2"]).exit_code == 0
    assert "step" not in json.loads((tmp_path / "mx" / "metrics.json").read_text())
    for extra in (["--max_iters", "3", "--resume"], ["--max_iters", "2", "--overwrite"]):
        done = CliRunner().invoke(main, [*args, *extra])
        assert done.exit_code == 0, done.output


@pytest.mark.parametrize("place, said", [("/", "is the root directory"), ("corpus.txt/m", "corpus.txt is a file")])
def test_a_metrics_dir_that_cannot_be_one_is_refused_before_its_lock(corpus, tmp_path, monkeypatch, place, said):
    monkeypatch.chdir(tmp_path)
    done = _train(tmp_path, "--model_name", "m", "--max_iters", "1", "--metrics_dir", place)
    assert done.exit_code == 1 and said in done.output and "Traceback" not in done.output, done.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.txt"]


def test_a_killed_runs_emptied_metrics_json_and_cut_rows_still_resume(corpus, tmp_path, monkeypatch):
    """A kill while dvclive rewrote metrics.json (before mypt wrote it whole) left it empty; a
    crash may cut a curve's last row short. --resume takes the directory as the run's own: the
    rows cut short go, metrics.json is rebuilt from the curves, and the curves continue."""
    monkeypatch.chdir(tmp_path)
    args = ["--model_name", "mk", "--metrics_dir", "mdir/mk"]
    assert _train(tmp_path, *args, "--max_iters", "2").exit_code == 0
    live = tmp_path / "mdir" / "mk"
    (live / "metrics.json").write_text("")
    with open(live / "plots" / "metrics" / "val.tsv", "a") as f:
        f.write("1")  # the start of step 12's row, say: without the fix, the next row is appended to it
    done = _train(tmp_path, *args, "--max_iters", "4", "--resume")
    assert done.exit_code == 0, done.output
    assert [r["step"] for r in tsv(live / "plots" / "metrics" / "val.tsv")] == ["0", "2", "4"]
    assert [r["step"] for r in tsv(live / "plots" / "metrics" / "train_loss.tsv")] == ["1", "2", "3", "4"]
    summary = json.loads((live / "metrics.json").read_text())
    assert summary["model"] == "mk" and summary["step"] == 4
    assert summary["best_val"] == min(float(r["val"]) for r in tsv(live / "plots" / "metrics" / "val.tsv"))


def test_metrics_json_is_replaced_whole_at_each_step_never_rewritten_in_place(tmp_path):
    """dvclive truncated metrics.json, then wrote it, at every step: a kill between the two left
    it empty. Each step's summary is a new file renamed over it: the one seen before is whole."""
    tracker = open_tracker(("dvclive",), tmp_path / "live", "m")
    tracker(0, {"val": 1.0})
    os.link(tmp_path / "live" / "metrics.json", tmp_path / "seen.json")  # the file a reader holds open
    tracker(1, {"val": 0.5})
    tracker.close()
    assert json.loads((tmp_path / "seen.json").read_text()) == {"model": "m", "val": 1.0, "best_val": 1.0, "step": 0}
    assert json.loads((tmp_path / "live" / "metrics.json").read_text())["step"] == 1


SLOW = pytest.mark.slow  # (two cases in the quick loop, all in the full run)


@pytest.mark.parametrize("left, taken", [
    pytest.param("", True, id="emptied by a kill"), pytest.param("\0" * 64, True, id="zeroed by a crash", marks=SLOW),
    pytest.param('{\n    "model": "m",\n    "val": 2', True, id="cut short by a crash", marks=SLOW),
    # killed before its first step (dvclive wrote none; mypt now writes it first thing)
    pytest.param(None, True, id="none yet", marks=SLOW),
    pytest.param('{\n    "model": "other",\n    "val": 2', False, id="another model's cut short", marks=SLOW),
    pytest.param("my notes", False, id="a user's"),
    pytest.param('{"loss": 1.0}', False, id="another tool's", marks=SLOW),
])
@pytest.mark.parametrize("resume", [True, False])
def test_a_resume_takes_a_metrics_json_a_kill_damaged_and_keeps_a_foreign_one(tmp_path, left, taken, resume):
    """A resume takes a metrics.json a kill or a crash damaged (it rebuilds it from the curves);
    a new run does not: such a file names no owner, and the new run's dvclive would delete the
    curves beside it (a reviewer's case: another model's curves, its metrics.json removed)."""
    directory = tmp_path / "live"
    killed = open_tracker(("dvclive",), directory, "m")
    for step in (0, 10, 20):
        killed(step, {"val": 1.0 + step, "train_loss": 2.0 + step, "lr": 0.1, "tokens_per_s": 9.0})
    killed.close(failed=True)
    metrics = directory / "metrics.json"
    if left is None:
        metrics.unlink()
    else:
        metrics.write_text(left)
    before = files_under(directory)
    if not taken or not resume:  # (missing: the curves are named instead of the file)
        refused = r"its metrics.json is (empty|64 NUL bytes) .*pass --resume" if left in ("", "\0" * 64) \
            else r"holds files no mypt run wrote.*: (metrics|plots)"
        with pytest.raises(InputError, match=refused):
            open_tracker(("dvclive",), directory, "m", resume=resume, resume_step=10 if resume else None)
        assert files_under(directory) == before
        return
    if not resume:
        new = open_tracker(("dvclive",), directory, "m")
        new(0, {"val": 0.5})
        new.close()
        assert [r["step"] for r in tsv(directory / "plots" / "metrics" / "val.tsv")] == ["0"]
        assert not (directory / "plots" / "metrics" / "train_loss.tsv").exists()
        return
    resumed = open_tracker(("dvclive",), directory, "m", resume=True, resume_step=10)
    resumed(20, {"val": 0.5, "train_loss": 0.25, "lr": 0.1, "tokens_per_s": 9.0})
    resumed.close()
    assert [r["step"] for r in tsv(directory / "plots" / "metrics" / "val.tsv")] == ["0", "10", "20"]
    assert json.loads(metrics.read_text()) == {"model": "m", "lr": 0.1, "step": 20, "tokens_per_s": 9.0,
                                                "train_loss": 0.25, "val": 0.5, "best_val": 0.5}


@pytest.mark.slow
def test_a_new_run_over_a_metrics_json_a_power_loss_zeroed_says_what_happened_and_deletes_nothing(corpus, tmp_path,
                                                                                                  monkeypatch):
    """A power loss just after metrics.json was written can leave it its size in NUL bytes. A new
    run refused it as a file no mypt run wrote ("another tool's run?"): it names no run, so mypt
    still cannot tell whose curves are beside it and deletes nothing, but says what the file is
    and what to do (--resume rebuilds it from the curves, tested above; or another, or an emptied,
    directory)."""
    monkeypatch.chdir(tmp_path)
    run = open_tracker(("dvclive",), tmp_path / "live", "z")
    for step in (0, 2):
        run(step, {"val": 2.0, "train_loss": 2.5, "lr": 0.1, "tokens_per_s": 9.0})
    run.close(failed=True)
    (tmp_path / "live" / "metrics.json").write_bytes(b"\0" * 180)
    before = files_under(tmp_path / "live")
    done = _train(tmp_path, "--model_name", "z", "--max_iters", "4", "--metrics_dir", "live")
    assert done.exit_code == 1
    assert ("Error: --metrics_dir live: its metrics.json is 180 NUL bytes (what a power loss leaves of a file "
            "written just before it: its size reached the disk, its data did not), so it names no run, and mypt "
            "cannot tell whose curves are beside it: it deletes nothing it cannot tell is its own. To continue that "
            "run, pass --resume (which rebuilds metrics.json from its curves); to start a new one, choose another "
            "--metrics_dir, or empty this one") in " ".join(done.output.split()), done.output
    assert files_under(tmp_path / "live") == before and not (tmp_path / "ck").exists()


@pytest.mark.parametrize("resume", [False, True])
def test_curves_a_killed_step_cannot_have_logged_are_never_taken(tmp_path, resume):
    """A reviewer's cases against taking a killed run's curves: a user's one-row eval_mine.tsv
    beside a whole metrics.json (its row of no step the run was in) was taken, a resume cut its
    row and a new run deleted it; curves beside no metrics.json at all (another model's, its file
    removed) were taken by a new run, whose dvclive deleted them."""
    directory = tmp_path / "live"
    run = open_tracker(("dvclive",), directory, "a")
    run(100, {"train_loss": 2.0, "val": 1.5})
    run.close()
    mine = directory / "plots" / "metrics" / "eval_mine.tsv"
    mine.write_text("step\teval_mine\n5000\t1.25\n")
    before = files_under(directory)
    with pytest.raises(InputError, match=r"holds files no mypt run wrote, .*: plots/metrics/eval_mine.tsv"):
        open_tracker(("dvclive",), directory, "a", resume=resume, resume_step=100 if resume else None)
    assert files_under(directory) == before
    mine.unlink()
    (directory / "metrics.json").unlink()
    if not resume:
        before = files_under(directory)
        with pytest.raises(InputError, match="holds files no mypt run wrote"):
            open_tracker(("dvclive",), directory, "b")
        assert files_under(directory) == before


@pytest.mark.parametrize("resume", [False, True])
@pytest.mark.parametrize("header, taken, earlier", [
    pytest.param("step\tval", True, False, id="first step"),
    pytest.param("step\tval", True, True, id="first evaluation after a step"),
    pytest.param("step\tloss", False, False, id="a foreign header")])
def test_a_run_killed_in_its_first_step_leaves_a_metrics_dir_its_next_run_takes(tmp_path, resume, header, taken,
                                                                               earlier):
    """dvclive appends a curve's row as it is logged and writes metrics.json at the step's end: a
    kill between the two, in every run's first step, left a curve that metrics.json (the model's
    name only) does not list. The model's next run takes it as the run's own, new (--auto_resume's
    before a first checkpoint: it clears it) or resumed (continued); a file of another header is
    not mypt's: still refused."""
    directory = tmp_path / "live"
    killed = open_tracker(("dvclive",), directory, "m")
    if earlier:
        killed(0, {"train_loss": 2.0})
    live = killed.loggers[0].live
    live.step = 5 if earlier else 0
    if earlier:  # (the step's progress row, logged before: what shows which step the kill cut)
        live.log_metric("train_loss", 1.5)
    live.log_metric("val", 3.5)  # killed here, before next_step writes metrics.json
    assert "val" not in json.loads((directory / "metrics.json").read_text())
    val = directory / "plots" / "metrics" / "val.tsv"
    val.write_text(val.read_text().replace("step\tval", header))
    before = files_under(directory)
    if not taken:
        with pytest.raises(InputError, match=r"holds files no mypt run wrote, .*: plots/metrics/val.tsv"):
            open_tracker(("dvclive",), directory, "m", resume=resume, resume_step=0 if resume else None)
        assert files_under(directory) == before
        return
    tracker = open_tracker(("dvclive",), directory, "m", resume=resume, resume_step=0 if resume else None)
    tracker(1, {"val": 2.5})
    tracker.close()
    # (a resume from the step-0 checkpoint drops step 5's row, which the resumed run logs again)
    assert [(r["step"], r["val"]) for r in tsv(val)] == ([("0", "3.5")] if resume and not earlier else []) + \
        [("1", "2.5")]


@pytest.mark.parametrize("killed", [False, True])
def test_a_resume_refuses_a_curve_that_is_not_utf8_past_its_header(tmp_path, killed):
    """A curve whose header is dvclive's but whose rows hold a byte that is not UTF-8 (not
    dvclive's writing) crashed the resume with a traceback as it cut the curve's rows back; it is
    named as a file no mypt run wrote, and nothing changes (metrics.json kept or emptied by a kill)."""
    directory = tmp_path / "live"
    run = open_tracker(("dvclive",), directory, "m")
    for step in (0, 10, 20):
        run(step, {"val": 1.0 + step, "train_loss": 2.0 + step, "lr": 0.1, "tokens_per_s": 9.0})
    run.close(failed=True)
    with open(directory / "plots" / "metrics" / "val.tsv", "ab") as f:
        f.write(b"15\t\xff\n")
    if killed:
        (directory / "metrics.json").write_text("")
    before = files_under(directory)
    with pytest.raises(InputError, match=r"holds files no mypt run wrote.*: plots/metrics/val\.tsv"):
        open_tracker(("dvclive",), directory, "m", resume=True, resume_step=10)
    assert files_under(directory) == before
