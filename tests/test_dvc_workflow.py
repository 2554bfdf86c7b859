"""The DVC workflows as users drive them, on the whole default pipeline (a slice of the demo
corpus, a tiny model), offline in temporary git repositories."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import run, tree_bytes
from test_dvc_pipeline import SMALL, dvc, make_project, ran

pytestmark = pytest.mark.slow  # subprocesses, kills and DVC runs: minutes

TINY_PIPELINE = {
    **SMALL,
    "train.n_layer": 1, "train.n_head": 2, "train.n_embd": 16, "train.block_size": 32, "train.batch_size": 8,
    "train.max_iters": 20, "train.eval_interval": 10, "train.eval_iters": 2, "train.device": "cpu",
    "adapt.max_iters": 10, "adapt.eval_interval": 5, "eval.max_tokens": 4000,
}
DATA = {f"{s}@{c}" for s in ("clean", "dedup", "tokenize", "shard", "split") for c in ("general", "domain")}
ALL = DATA | {"fetch", "vocab", "train", "adapt", "eval@base", "eval@adapted"}


def set_param(project: Path, key: str, value) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    section, name = key.split(".")
    params[section][name] = value
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def commit(project: Path, message: str) -> None:
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", message], project)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The whole pipeline reproduced once and committed, with a local remote holding its outputs."""
    root = tmp_path_factory.mktemp("workflow")
    project = make_project(root / "project", **TINY_PIPELINE)
    first = dvc("repro", cwd=project)
    assert ran(first) == ALL
    dvc("remote", "add", "-d", "local", str(root / "remote"), cwd=project)
    commit(project, "pipeline run")
    dvc("push", cwd=project)
    return project


def test_second_repro_runs_nothing_and_metrics_are_reported(built, tmp_path):
    assert ran(dvc("repro", cwd=built)) == set()
    assert "Data and pipelines are up to date" in dvc("status", cwd=built)
    # The headline numbers: one short table, the demo's last output.
    metrics = json.loads(dvc("metrics", "show", "--json", "metrics", cwd=built))
    files = {path: f["data"] for path, f in next(iter(metrics.values()))["data"].items()}
    assert set(files) == {f"metrics/{kind}_{m}.json" for kind in ("train", "eval") for m in ("base", "adapted")}
    assert set(files["metrics/eval_adapted.json"]["loss"]) == {"general", "domain"}
    assert files["metrics/train_adapted.json"]["tokens"] == 10 * 8 * 32  # steps x batch x block
    assert files["metrics/train_base.json"]["seconds"] > 0
    table = dvc("metrics", "show", "metrics", cwd=built).splitlines()
    assert len(table) == 5 and max(map(len, table)) <= 100, "\n".join(table)
    # Each step's counters and a training's latest per-step values are metrics too.
    every = json.loads(dvc("metrics", "show", "--json", cwd=built))
    every = {path: f["data"] for path, f in next(iter(every.values()))["data"].items()}
    assert every["stats/dedup_general.json"]["lines"] > 0
    assert every["stats/eval_base.json"]["domain"]["perplexity"] > 1
    adapted = every["dvclive/adapted/metrics.json"]
    assert adapted["step"] == 10 and {"val", "eval_general", "best_val", "train_loss"} <= set(adapted)
    live = built / "dvclive" / "base" / "plots"
    assert (live / "images" / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (live / "metrics" / "train_loss.tsv").read_text().splitlines()[0] == "step\ttrain_loss"
    # The plots are the PNGs: the page `dvc plots show` writes draws them with no network.
    dvc("plots", "show", "-o", str(tmp_path / "plots"), cwd=built)  # -o: not into the project
    page = (tmp_path / "plots" / "index.html").read_text()
    assert page.count("<img") == 2 and "<script" not in page and "http" not in page.replace(
        "http-equiv", ""), page


def test_param_edits_rerun_exactly_what_depends_on_them(built, tmp_path):
    project = tmp_path / "p"
    run(["git", "clone", "-q", str(built), str(project)], tmp_path)
    dvc("pull", cwd=project)
    set_param(project, "train.learning_rate", 0.01)
    assert "train.learning_rate" in dvc("params", "diff", cwd=project)
    assert ran(dvc("repro", cwd=project)) == {"train", "adapt", "eval@base", "eval@adapted"}
    set_param(project, "adapt_mixture.general", 0.3)  # the adaptation's replay share
    assert "adapt_mixture.general" in dvc("params", "diff", cwd=project)
    assert ran(dvc("repro", cwd=project)) == {"adapt", "eval@adapted"}
    set_param(project, "shard.tokens_per_shard", 7000)
    assert ran(dvc("repro", cwd=project)) == ALL - DATA - {"fetch", "vocab"} | {
        "shard@general", "shard@domain", "split@general", "split@domain"}


def test_with_dvc_lock_removed_repro_restores_every_stage_from_the_run_cache(built, tmp_path):
    """The README's recovery from a dvc.lock a kill left empty: nothing reruns, training included."""
    project = tmp_path / "p"
    shutil.copytree(built, project, symlinks=True)  # .dvc/cache with it: the run cache is local
    (project / "dvc.lock").unlink()
    out = dvc("repro", cwd=project)
    assert ran(out) == set() and "Stage 'train' is cached - skipping run" in out, out
    assert "Data and pipelines are up to date" in dvc("status", cwd=project)
    for model in ("base", "adapted"):
        assert tree_bytes(project / "checkpoints" / model) == tree_bytes(built / "checkpoints" / model)
    assert (project / "dvc.lock").read_text() == (built / "dvc.lock").read_text()


def test_a_changed_count_shows_in_metrics_diff(built, tmp_path):
    project = tmp_path / "p"
    run(["git", "clone", "-q", str(built), str(project)], tmp_path)
    dvc("pull", cwd=project)
    set_param(project, "dedup.min_chars", 200)  # fewer lines are long enough to be dropped
    assert ran(dvc("repro", "dedup@general", cwd=project)) == {"dedup@general"}
    diff = dvc("metrics", "diff", cwd=project).splitlines()
    assert any(line.split()[:1] == ["stats/dedup_general.json"] for line in diff), diff


def test_experiment_run_reports_metrics(built, tmp_path):
    project = tmp_path / "p"
    run(["git", "clone", "-q", str(built), str(project)], tmp_path)
    dvc("pull", cwd=project)
    out = dvc("exp", "run", "-S", "train.max_iters=30", cwd=project)
    assert "Running stage 'train'" in out
    rows = list(csv.DictReader(io.StringIO(dvc("exp", "show", "--only-changed", "--csv", cwd=project))))
    param = next(c for c in rows[0] if c.endswith("train.max_iters"))
    tokens = "metrics/train_base.json:tokens"  # steps x batch 8 x block 32
    assert {(r[param], r[tokens]) for r in rows} >= {("20", "5120"), ("30", "7680")}
    diff = dvc("metrics", "diff", cwd=project).splitlines()
    assert any(line.split()[:4] == ["metrics/train_base.json", "tokens", "5120", "7680"] for line in diff), diff
    # The README's view of experiments for 80-100 columns: the adapted model's losses only.
    kept = dvc("exp", "show", "--drop", ".*", "--keep", "Experiment|metrics/eval_adapted", "--csv", cwd=project)
    assert set(kept.splitlines()[0].split(",")) == {"Experiment", "metrics/eval_adapted.json:loss.general",
                                                   "metrics/eval_adapted.json:loss.domain"}


def test_push_clone_pull_dataset_and_train_without_preparing(built, tmp_path):
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(built), str(clone)], tmp_path)
    dvc("pull", "split@general", "split@domain", cwd=clone)
    for corpus in ("general", "domain"):
        assert tree_bytes(clone / "data/datasets" / corpus) == tree_bytes(built / "data/datasets" / corpus)
    assert not (clone / "data" / "demo").exists()
    out = dvc("repro", "--single-item", "train", cwd=clone)
    assert ran(out) == {"train"}


def test_stage_by_hand_then_commit_leaves_status_clean(built, tmp_path):
    project = tmp_path / "p"
    run(["git", "clone", "-q", str(built), str(project)], tmp_path)
    dvc("pull", cwd=project)
    set_param(project, "eval.batch_size", 16)
    for model in ("base", "adapted"):  # the README's "Running a stage by hand"
        run([sys.executable, "stages/eval.py", "--model_name", f"checkpoints/{model}", "--dataset",
             "general=data/datasets/general", "--dataset", "domain=data/datasets/domain", "--metrics",
             f"metrics/eval_{model}.json", "--stats", f"stats/eval_{model}.json", "--batch_size", "16",
             "--max_tokens", "4000", "--device", "cpu"], project)
        assert f"eval@{model}" in dvc("status", cwd=project)
        dvc("commit", "-f", f"eval@{model}", cwd=project)
    assert "Data and pipelines are up to date" in dvc("status", cwd=project)


def test_repro_recovers_after_a_stage_is_killed(built, tmp_path):
    project = tmp_path / "p"
    run(["git", "clone", "-q", str(built), str(project)], tmp_path)
    dvc("pull", cwd=project)
    set_param(project, "train.max_iters", 400)
    set_param(project, "train.eval_interval", 10)
    started = time.time()
    proc = subprocess.Popen([sys.executable, "-m", "dvc", "repro", "train"], cwd=project,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    state = project / "checkpoints" / "base" / "training_state.json"

    def mid_way() -> bool:  # a checkpoint of this run, past its first evaluation
        try:
            return state.stat().st_mtime > started and json.loads(state.read_text())["step"] >= 20
        except (OSError, ValueError):
            return False

    deadline = time.monotonic() + 120
    while not mid_way() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.005)
    assert proc.poll() is None, "the stage ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)  # dvc and the stage it runs
    proc.wait()
    # The run's metrics were on disk while it trained (what `dvc exp show` and VS Code read).
    assert json.loads((project / "dvclive" / "base" / "metrics.json").read_text())["step"] >= 20
    status = dvc("status", cwd=project)
    assert "train:" in status  # the half-trained checkpoint is not taken for the stage's output
    out = dvc("repro", cwd=project)  # no stale-lock error: DVC's lock is released with the dead process
    assert {"train", "adapt", "eval@base", "eval@adapted"} <= ran(out)
    assert json.loads(state.read_text())["step"] == 400
    assert "Data and pipelines are up to date" in dvc("status", cwd=project)
