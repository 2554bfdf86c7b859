"""A write that fails after its swap (the new output renamed into place, the user's files of the
previous one not yet moved into it) says so: the output is in place and whole, and the message
names where the user's files wait; training does not call such a checkpoint unsaved."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import tree_bytes

from mypt.cli import main
from mypt.io import mark_own

TINY = ["--config_file", "tiny", "--device", "cpu", "--eval_iters", "1"]


def cli(*args: str, ok: bool = True) -> str:
    r = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert (r.exit_code == 0) == ok, r.output
    return r.output


@pytest.fixture
def corpus(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    Path("corpus.txt").write_text("".join(f"Line {i} of the text, said the king {i * 3}.\n" for i in range(300)))
    Path("more.txt").write_text("".join(f"Another line {i}, said the queen.\n" for i in range(200)))
    return tmp_path


def prepare(*extra: str, ok: bool = True) -> str:
    return cli("prepare-dataset", "--input_files", "corpus.txt", "--out_dir", "ds", "--tokenization", "char",
               "--tokens_per_shard", "2000", "--workers", "1", *extra, ok=ok)


@contextlib.contextmanager
def full_disk_on(name: str, when):
    """Within the block, os.`name` (replace, unlink) fails with ENOSPC where `when(*args)` holds."""
    real = getattr(os, name)

    def failing(*args, **kwargs):
        if when(*map(str, args[:2])):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), args[0])
        return real(*args, **kwargs)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(os, name, failing)
        yield


def test_prepare_overwrite_failing_after_its_swap_says_the_dataset_is_in_place(corpus):
    prepare()
    Path("ds/NOTES.md").write_text("mine")
    Path("corpus.txt").write_text(Path("corpus.txt").read_text() + Path("more.txt").read_text())
    with full_disk_on("replace", lambda src, dst="": src.endswith(".ds.old") and dst.endswith(".ds.carry")):
        out = prepare("--overwrite", ok=False)
    assert "ds is in place, whole, but the files you added to it (NOTES.md) are still in .ds.old" in out, out
    cli("verify-dataset", "ds")  # the new dataset, whole
    assert json.loads(Path("ds/dataset_metadata.json").read_text())["total_tokens"] > 17_000  # (12,152 before)
    prepare("--overwrite")  # the next writer moves the user's file in
    assert Path("ds/NOTES.md").read_text() == "mine" and not Path(".ds.old").exists()


def test_a_failure_after_a_swap_of_an_output_you_added_nothing_to_says_so(corpus):
    """The previous output set aside, holding no file of the user's: said so, where the message said "the files you
    added to it are still in .ds.old" (none: .ds.old is the whole previous dataset, for the user to move in)."""
    prepare()
    Path("corpus.txt").write_text(Path("corpus.txt").read_text() + Path("more.txt").read_text())
    with full_disk_on("replace", lambda src, dst="": src.endswith(".ds.old") and dst.endswith(".ds.carry")):
        out = prepare("--overwrite", ok=False)
    assert "ds is in place, whole, but its previous version is still in .ds.old" in out and "with no file of yours" \
        in out and "you added" not in out, out
    prepare("--overwrite")  # the next writer removes it
    assert sorted(os.listdir()) == ["corpus.txt", "ds", "more.txt"]


def test_an_append_failing_after_its_swap_says_the_dataset_is_grown(corpus):
    prepare()
    swapped = Path(".ds.append/old")  # (the mark of the grown dataset, once it is renamed into place)
    with full_disk_on("unlink", lambda path, *_: path == "ds/.mypt-work" and swapped.is_dir()):
        out = cli("prepare-dataset", "--input_files", "more.txt", "--append_to", "ds", "--workers", "1", ok=False)
    assert "--append_to ds is grown: ds is in place, whole, but its work mark" in out and "by hand" not in out, out
    assert not Path(".ds.append").exists()  # (the old dataset's files, mypt's: removed, never the user's to move)
    meta = json.loads(Path("ds/dataset_metadata.json").read_text())
    assert [s["name"] for s in meta["sources"]] == ["corpus.txt", "more.txt"]


@pytest.mark.slow
def test_a_save_failing_after_its_swap_is_saved_and_training_says_so(corpus):
    prepare()
    train = ["train", "--dataset_dir", "ds", "--model_name", "m", *TINY, "--eval_interval", "1"]
    cli(*train, "--max_iters", "1")
    Path("checkpoints/m/NOTES.md").write_text("mine")
    with full_disk_on("replace", lambda src, dst="": src.endswith(".m.old") and dst.endswith(".m.carry")):
        out = cli(*train, "--max_iters", "2", "--resume")
    assert "the checkpoint of step 2 is saved; checkpoints/m is in place, whole, but the files you added" in out, out
    assert "not saved" not in out
    assert json.loads(Path("checkpoints/m/training_state.json").read_text())["step"] == 2
    assert Path("checkpoints/.m.old/NOTES.md").read_text() == "mine"
    cli(*train, "--max_iters", "3", "--resume")  # its first save moves the user's file in
    assert Path("checkpoints/m/NOTES.md").read_text() == "mine" and not Path("checkpoints/.m.old").exists()


@contextlib.contextmanager
def immutable(path: Path):
    """`path` made immutable (chattr +i: no one, root neither, may rename it) within the block."""
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode:
        pytest.skip("no chattr +i here (not root, or a file system without the flag)")
    try:
        yield
    finally:  # wherever the file went (a failed run may have moved it), else pytest cannot remove it
        subprocess.run(["chattr", "-R", "-i", "."], capture_output=True)


def test_an_immutable_file_of_yours_in_an_output_is_refused_before_the_work(corpus):
    prepare()
    Path("ds/notes.txt").write_text("mine")
    Path("ds/sub").mkdir()
    Path("ds/sub/x.txt").write_text("mine too")
    before = tree_bytes(Path("ds"))
    with immutable(Path("ds/notes.txt")):
        out = prepare("--overwrite", ok=False)
        assert "ds/notes.txt: immutable or append-only (chattr +i or +a)" in out and "nothing changed" in out, out
        assert tree_bytes(Path("ds")) == before and sorted(os.listdir()) == ["corpus.txt", "ds", "more.txt"]


def test_an_immutable_file_of_mypts_in_an_output_is_refused_before_the_work(corpus):
    """An immutable file of the output's own (its metadata): the new output went in place, the previous one could
    not be removed, and the run exited 0 leaving `.ds.carry` (the whole previous dataset) beside it, at every
    later write too."""
    prepare()
    before = tree_bytes(Path("ds"))
    with immutable(Path("ds/dataset_metadata.json")):
        out = prepare("--overwrite", ok=False)
        assert "ds/dataset_metadata.json: immutable or append-only (chattr +i or +a)" in out \
            and "nothing changed" in out, out
        assert tree_bytes(Path("ds")) == before and sorted(os.listdir()) == ["corpus.txt", "ds", "more.txt"]


def test_a_carry_over_moves_every_file_that_can_move_and_names_the_one_that_cannot(corpus):
    """A killed swap's `.ds.carry` (the previous output, marked) holding an immutable file and a
    folder: the next writer moves the folder in, and names the file it could not move."""
    prepare()
    carry = Path(".ds.carry")
    (carry / "sub").mkdir(parents=True)
    (carry / "notes.txt").write_text("mine")
    (carry / "sub" / "x.txt").write_text("mine too")
    mark_own(carry)
    with immutable(carry / "notes.txt"):
        out = prepare("--overwrite", ok=False)
        assert "notes.txt of the files you added to it is still in .ds.carry" in out, out
        assert Path("ds/sub/x.txt").read_text() == "mine too" and not (carry / "sub").exists()
    prepare("--overwrite")  # (the flag cleared) the next writer moves the file in
    assert Path("ds/notes.txt").read_text() == "mine" and not carry.exists()
