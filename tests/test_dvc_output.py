"""What the pipeline gives a person to read, as DVC resolves dvc.yaml (no stage runs; the
slow tests/test_dvc_workflow.py reads the real files after `dvc repro`): the metrics are the
files of numbers, the plots draw without network, every output kept in git is one of those
(so DVC's run cache keeps each stage's runs), and the files DVC leaves to git are the ones the
README's commit command adds."""

from __future__ import annotations

import re
import shlex

import pytest
from conftest import REPO
from test_dvc_params import project_copy


@pytest.fixture(scope="module")
def outs(tmp_path_factory) -> tuple[dict[str, list], dict[str, str]]:
    """({stage: its outputs (DVC Output objects)}, {stage: cmd}), as DVC resolves them."""
    from dvc.repo import Repo

    root, _ = project_copy(tmp_path_factory.mktemp("outs"))
    with Repo(str(root)) as repo:
        stages = list(repo.index.stages)
        return {s.addressing: list(s.outs) for s in stages}, {s.addressing: s.cmd for s in stages}


def test_metrics_are_the_headline_numbers_the_counters_and_the_latest_training_values(outs):
    by_stage, _ = outs
    metrics = {o.def_path for stage in by_stage.values() for o in stage if o.metric}
    headline = {f"metrics/{kind}_{model}.json" for kind in ("train", "eval") for model in ("base", "adapted")}
    counters = {f"stats/{step}_{c}.json" for step in ("clean", "dedup", "tokenize", "split")
                for c in ("general", "domain")} | {"stats/eval_base.json", "stats/eval_adapted.json"}
    assert metrics == headline | counters | {"dvclive/base/metrics.json", "dvclive/adapted/metrics.json"}


def test_every_output_dvc_leaves_to_git_is_a_metric_or_a_plot(outs):
    """DVC saves no run of a stage with another uncached output to its run cache (Stage.run:
    run_cache=not no_cache_outs), so such a stage reruns where DVC could restore it."""
    by_stage, _ = outs
    for address, stage in by_stage.items():
        for o in stage:
            assert o.use_cache or o.metric or o.plot, f"{address}: {o.def_path} is cache: false, not a metric or plot"


def test_every_stats_file_a_stage_writes_is_a_metric(outs):
    """The step counters (--stats) are metrics kept in git: `dvc status` sees an edit, `dvc
    metrics diff` a changed count."""
    by_stage, cmds = outs
    for address, cmd in cmds.items():
        words = shlex.split(cmd)
        written = {words[i + 1] for i, w in enumerate(words[:-1]) if w == "--stats"}
        declared = {o.def_path: o for o in by_stage[address]}
        for path in written:
            assert path.startswith("stats/") and path in declared, f"{address}: --stats {path} is not an output"
            assert declared[path].metric and not declared[path].use_cache


def test_plots_are_images_that_draw_offline(outs):
    by_stage, _ = outs
    plots = {o.def_path for stage in by_stage.values() for o in stage if o.plot}
    assert plots == {"dvclive/base/plots/images", "dvclive/adapted/plots/images"}  # loss.png, no Vega


def test_the_readme_commit_command_adds_every_file_dvc_leaves_to_git(outs):
    """cache: false outputs live in git: a fresh clone needs them (and dvc.lock) for `dvc
    status`, `dvc metrics diff` and `dvc exp show` to have a baseline."""
    by_stage, _ = outs
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    [added] = re.findall(r"^git add (dvc\.lock [^&\n]+?) &&", readme, flags=re.M)
    roots = added.split()
    for stage in by_stage.values():
        for o in stage:
            if not o.use_cache:
                assert o.def_path.split("/")[0] in roots, f"{o.def_path} is left out of `git add {added}`"
    ignored = (REPO / ".gitignore").read_text(encoding="utf-8").split()
    assert not {f"/{r}/" for r in roots} & set(ignored)
