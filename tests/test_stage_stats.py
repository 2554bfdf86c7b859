"""A stage's --stats report never disagrees with its output: the previous report is set aside
while the output is replaced, so a run stopped between the swap and the new report's write (a
kill, a full disk) leaves none, and one that changes nothing (a refusal) leaves it as it was."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_dvc_params import stage_main


@pytest.fixture
def stages(tmp_path, monkeypatch):
    """The data stages by hand, in-process, each writing its --stats; returns how to run each."""
    monkeypatch.chdir(tmp_path)
    Path("corpus").mkdir()
    Path("corpus/a.txt").write_text("".join(f"Line {i} of the king's long speech to the queen.\n" for i in range(200)))
    flags = {"clean": ["--input_files", "corpus", "--out_dir", "clean", "--stats", "clean_stats.json"],
             "dedup": ["--in_dir", "clean", "--out_dir", "dedup", "--stats", "dedup_stats.json"],
             "vocab": ["--in_dir", "dedup", "--out_dir", "vocab", "--tokenization", "char"],
             "tokenize_corpus": ["--in_dir", "dedup", "--tokenizer_dir", "vocab", "--out_dir", "tok", "--stats",
                                 "tok_stats.json"],
             "shard": ["--in_dir", "tok", "--out_dir", "sh", "--tokens_per_shard", "1000"],
             "split": ["--in_dir", "sh", "--out_dir", "ds", "--stats", "split_stats.json"]}
    run = {name: stage_main(f"stages/{name}.py") for name in flags}
    return {name: (lambda *more, name=name: CliRunner().invoke(run[name], [*flags[name], *more])) for name in run}


def stats_write_fails(monkeypatch, name: str) -> None:
    """Writing the report `name` fails (a full disk), as a kill there would stop it."""
    real = os.replace

    def full(src, dst, *args, **kwargs):
        if Path(dst).name == name:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))
        return real(src, dst, *args, **kwargs)
    monkeypatch.setattr(os, "replace", full)


@pytest.mark.parametrize("stage, stats, change", [
    ("split", "split_stats.json", ["--val_fraction", "0.3", "--overwrite"]),
    ("clean", "clean_stats.json", ["--max_line_chars", "47"]),
])
def test_a_stage_stopped_after_its_swap_leaves_no_report_of_the_previous_output(stages, monkeypatch, stage, stats,
                                                                                 change):
    for run in stages.values():
        assert run().exit_code == 0
    old, here = Path(stats).read_text(), Path.cwd()
    stats_write_fails(monkeypatch, stats)
    result = stages[stage](*change)
    assert result.exit_code == 1 and "No space left on device" in result.output, result.output
    assert not Path(stats).exists()  # (the new output is in place: the old counts would be of another)
    monkeypatch.undo()
    monkeypatch.chdir(here)
    assert stages[stage](*change).exit_code == 0 and Path(stats).read_text() != old


def test_a_stage_that_refuses_leaves_its_report_as_it_was(stages):
    for run in stages.values():
        assert run().exit_code == 0
    before = Path("split_stats.json").read_bytes()
    result = stages["split"]("--val_fraction", "0.3")  # another split: refused without --overwrite
    assert result.exit_code == 1 and "pass --overwrite" in result.output, result.output
    assert Path("split_stats.json").read_bytes() == before


def test_a_stage_killed_during_its_work_leaves_its_report_beside_its_output(stages, monkeypatch):
    """Until the swap, the previous output and its report stay on disk as they were: the report was removed when
    the work began and held in memory, so a kill in the (hours-long) work (SIGKILL, the OOM killer, a preemption)
    left the previous output without its report."""
    import mypt.io

    for run in stages.values():
        assert run().exit_code == 0
    before, real, seen = Path("clean_stats.json").read_bytes(), mypt.io.make_own_dir, []

    def work_begins(path):  # (where a kill in the work finds the disk)
        seen.append(Path("clean_stats.json").read_bytes() if Path("clean_stats.json").exists() else None)
        return real(path)
    monkeypatch.setattr(mypt.io, "make_own_dir", work_begins)
    assert stages["clean"]("--max_line_chars", "47").exit_code == 0
    assert seen == [before] and Path("clean_stats.json").read_bytes() != before
