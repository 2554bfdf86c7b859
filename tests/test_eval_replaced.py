"""`mypt eval` scores the dataset it checked: a dataset replaced between the val split's check
(verify.check_split, which reads the shards by path) and the loader's opening of them again is
refused, never scored as the one checked."""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

import mypt.eval_command
from mypt.cli import main


def cli(*args: str):
    return CliRunner().invoke(main, list(args))


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """ds (from a.txt) and ds2 (the same lines shuffled and reversed: the same sizes, other
    tokens, ds's tokenizer), and a model m trained one step on ds."""
    root = tmp_path_factory.mktemp("eval_replaced")
    lines = [f"line {i:04d} of text abc\n" for i in range(2000)]
    (root / "a.txt").write_text("".join(lines))
    random.Random(0).shuffle(lines)
    (root / "b.txt").write_text("".join(line[::-1][1:] + "\n" for line in lines))
    here = os.getcwd()
    os.chdir(root)
    try:
        for args in (["--input_files", "a.txt", "--out_dir", "ds"],
                     ["--input_files", "b.txt", "--out_dir", "ds2", "--tokenizer_from", "ds"]):
            r = cli("prepare-dataset", *args, "--tokenization", "char", "--workers", "1")
            assert r.exit_code == 0, r.output
        r = cli("train", "--dataset_dir", "ds", "--model_name", "m", "--config_file", "tiny", "--device", "cpu",
                "--max_iters", "1", "--eval_iters", "1")
        assert r.exit_code == 0, r.output
    finally:
        os.chdir(here)
    return root


@pytest.fixture
def world(built, tmp_path, monkeypatch) -> Path:
    for name in ("ds", "ds2", "checkpoints"):
        shutil.copytree(built / name, tmp_path / name, symlinks=True)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def loss_line(output: str) -> str:
    return next(line for line in output.splitlines() if line.startswith("g: loss "))


def checked_then(monkeypatch, change) -> None:
    """verify.check_split as eval calls it, then `change` (what a concurrent writer does)."""
    real = mypt.eval_command.check_split

    def check_then_change(*args, **kwargs):
        real(*args, **kwargs)
        change()
    monkeypatch.setattr(mypt.eval_command, "check_split", check_then_change)


@pytest.mark.slow
def test_a_dataset_swapped_in_after_the_check_is_refused_not_scored(world, monkeypatch):
    theirs = cli("eval", "--model_name", "m", "--dataset", "g=ds2", "--device", "cpu")
    assert theirs.exit_code == 0, theirs.output

    def swap():  # a prepare-dataset --overwrite swapping another dataset into place
        os.rename("ds", "ds_old")
        os.rename("ds2", "ds")
    checked_then(monkeypatch, swap)
    result = cli("eval", "--model_name", "m", "--dataset", "g=ds", "--device", "cpu")
    assert result.exit_code != 0, result.output
    assert "--dataset g=ds: the dataset was replaced while eval ran" in result.output, result.output
    assert "run eval again" in result.output
    assert loss_line(theirs.output) not in result.output  # ds2's loss never said as ds's


@pytest.mark.slow
def test_a_val_shard_replaced_after_the_check_is_refused(world, monkeypatch):
    ours = cli("eval", "--model_name", "m", "--dataset", "g=ds", "--device", "cpu")
    assert ours.exit_code == 0, ours.output
    [shard], [other] = Path("ds/val").iterdir(), Path("ds2/val").iterdir()
    assert shard.stat().st_size == other.stat().st_size and shard.read_bytes() != other.read_bytes()
    checked_then(monkeypatch, lambda: os.replace(other, shard))  # a shard of the same size moved in by hand
    result = cli("eval", "--model_name", "m", "--dataset", "g=ds", "--device", "cpu")
    assert result.exit_code != 0, result.output
    assert "the dataset was replaced while eval ran" in result.output, result.output
