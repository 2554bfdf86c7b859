"""A resumed checkpoint through `mypt train`: config.json read once by each check of the folder a
save replaces; a link where a save makes a folder, refused before training."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from mypt import checkpoint
from mypt.cli import main


def _flags(tmp_path: Path, max_iters: int) -> list[str]:
    (tmp_path / "t.txt").write_text("some text to learn from\n" * 40)
    return ["train", "--input_file", str(tmp_path / "t.txt"), "--tokenization", "char", "--config_file", "tiny",
            "--checkpoints_dir", str(tmp_path / "ck"), "--model_name", "m", "--device", "cpu", "--max_iters",
            str(max_iters), "--eval_iters", "1", "--eval_interval", "100", "--batch_size", "2"]


def _train(tmp_path: Path, *extra: str, max_iters: int = 2) -> str:
    result = CliRunner().invoke(main, [*_flags(tmp_path, max_iters), *extra])
    assert result.exit_code == 0, result.output
    return result.output


def test_check_ours_and_each_save_read_config_json_once(tmp_path, count_opens):
    """The checks of the folder a save replaces (check_ours at the start, each save's) read
    config.json once each: whose it is and what it records are one reading."""
    from mypt.model import load_model

    _train(tmp_path)
    ckpt = tmp_path / "ck" / "m"
    reads = lambda path, mode: "config" if path == ckpt / "config.json" and "r" in mode else None  # noqa: E731
    ours = count_opens(reads)
    checkpoint.check_ours(ckpt)
    assert ours == {"config": 1}
    loading = count_opens(reads)
    load_model(ckpt)
    loaded = loading["config"]
    opens = count_opens(reads)
    _train(tmp_path, "--resume", max_iters=4)  # one save, at its end (--eval_interval 100)
    # The run's settings, check_ours, the weights (load_model's reading), the save.
    assert opens == {"config": 1 + 1 + loaded + 1}


@pytest.mark.parametrize("link", ["dcp", "dcp/model"])
def test_a_link_where_a_save_makes_a_folder_is_refused_before_training(tmp_path, link):
    """A user's link named dcp (or dcp/model in a dcp/ folder of theirs) in a whole checkpoint:
    any save of it may make that folder (a --parallel fsdp resume does), and a link cannot be
    merged with it: refused before training, whatever the run, nothing changed."""
    _train(tmp_path)
    ckpt = tmp_path / "ck" / "m"
    (tmp_path / "elsewhere").mkdir()
    (ckpt / link).parent.mkdir(exist_ok=True)
    os.symlink(tmp_path / "elsewhere", ckpt / link)
    before = {p: p.read_bytes() for p in ckpt.iterdir() if p.is_file()}
    for extra in (["--resume"], ["--overwrite"]):
        result = CliRunner().invoke(main, [*_flags(tmp_path, 4), *extra])
        assert result.exit_code == 1 and f"{ckpt / link} is a link, where a save of the checkpoint makes a folder" \
            in result.output and "step 1" not in result.output, result.output
        assert {p: p.read_bytes() for p in ckpt.iterdir() if p.is_file()} == before
