"""Nothing a user owns is ever lost: --out_dir never replaces inputs or foreign files, a
trained model is replaced only when asked, and two runs never write the same output."""

from __future__ import annotations

import json
import fcntl
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import REPO, mypt_cli, run, tree_bytes

from mypt.io import make_own_dir, mark_own
from mypt.lock import lock_path, output_lock

TINY = ["--config_file", "tiny", "--device", "cpu", "--max_iters", "2", "--eval_interval", "2", "--eval_iters", "1"]


def corpus(root: Path, name: str = "corpus.txt") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / name
    path.write_text("".join(f"Line {i} of the king's speech, and the queen's reply {i * 7}.\n" for i in range(300)))
    return path


def refused(*args: str, cwd: Path) -> str:
    """Run the CLI expecting a one-line refusal: exit 1, no traceback; returns stderr."""
    done = mypt_cli(*args, cwd=cwd, check=False)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr, done.stderr
    return done.stderr


def prepare_args(inp: Path | str, out: Path | str, *extra: str) -> list[str]:
    return ["prepare-dataset", "--input_files", str(inp), "--out_dir", str(out), "--tokenization", "char",
            "--val_fraction", "0", *extra]


# ---------------------------------------------------------------------------------------------
# --out_dir

@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_out_dir_holding_an_input_is_refused(tmp_path, overwrite):
    inp = corpus(tmp_path / "dir")
    (tmp_path / "dir" / "notes.md").write_text("mine")
    before = tree_bytes(tmp_path)
    err = refused(*prepare_args(inp, tmp_path / "dir", *overwrite), cwd=tmp_path)
    assert "--out_dir" in err and str(tmp_path / "dir") in err and "input" in err and str(inp) in err
    assert tree_bytes(tmp_path) == before
    # the input directory itself as --out_dir
    err = refused(*prepare_args(tmp_path / "dir", tmp_path / "dir", *overwrite), cwd=tmp_path)
    assert "--out_dir" in err and "input" in err
    assert tree_bytes(tmp_path) == before


@pytest.mark.parametrize("where", ["cwd", "parent_of_cwd", "home", "root"])
def test_out_dir_is_never_the_current_home_or_root_directory(tmp_path, where):
    cwd = tmp_path / "a" / "b"
    inp = corpus(tmp_path / "in")
    cwd.mkdir(parents=True)
    (cwd / "work.txt").write_text("my work")
    home = Path(os.environ["HOME"])  # conftest's temporary home
    (home / "diary.md").write_text("mine")
    out = {"cwd": ".", "parent_of_cwd": str(tmp_path / "a"), "home": str(home), "root": "/"}[where]
    before, home_before = tree_bytes(tmp_path), tree_bytes(home)
    err = refused(*prepare_args(inp, out, "--overwrite"), cwd=cwd)
    what = {"cwd": "the current directory", "parent_of_cwd": "holds the current directory",
            "home": "the home directory", "root": "the root directory"}[where]
    assert f"--out_dir {out} " in err and what in err, err
    assert tree_bytes(tmp_path) == before and tree_bytes(home) == home_before


def test_overwrite_replaces_only_a_mypt_dataset_or_an_empty_directory(tmp_path):
    inp = corpus(tmp_path / "in")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.md").write_text("mine")
    before = tree_bytes(tmp_path)
    err = refused(*prepare_args(inp, foreign, "--overwrite"), cwd=tmp_path)
    assert "--out_dir" in err and str(foreign) in err and "not a mypt dataset" in err
    assert tree_bytes(tmp_path) == before

    empty = tmp_path / "empty"
    empty.mkdir()
    mypt_cli(*prepare_args(inp, empty, "--overwrite"), cwd=tmp_path)
    assert (empty / "dataset_metadata.json").is_file()
    # mypt's own leftovers of a killed run stay removable
    for leftover in (".empty.work", ".empty.partial"):
        make_own_dir(tmp_path / leftover)
        (tmp_path / leftover / "junk").write_text("x")
    other = corpus(tmp_path / "in2", "other.txt")
    mypt_cli(*prepare_args(other, empty, "--overwrite", "--no_dedup"), cwd=tmp_path)
    meta = json.loads((empty / "dataset_metadata.json").read_text())
    assert [s["name"].rsplit("/", 1)[-1] for s in meta["sources"]] == ["other.txt"]
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())


@pytest.mark.slow
def test_stage_script_refuses_to_replace_its_input(tmp_path):
    """io.staged_dir applies the same rule: a stage run by hand cannot delete its input."""
    inp = corpus(tmp_path / "dir")
    before = tree_bytes(tmp_path)
    done = run([sys.executable, str(REPO / "stages" / "clean.py"), "--input_files", str(inp), "--out_dir",
                str(tmp_path / "dir"), "--stats", str(tmp_path / "stats.json")], tmp_path, check=False)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "--out_dir" in done.stderr and "input" in done.stderr
    assert tree_bytes(tmp_path) == before
    # a fresh output (what DVC leaves after emptying a stage's outs) still works
    run([sys.executable, str(REPO / "stages" / "clean.py"), "--input_files", str(inp), "--out_dir",
         str(tmp_path / "clean"), "--stats", str(tmp_path / "stats.json")], tmp_path)
    assert (tmp_path / "clean" / "manifest.json").is_file()


# ---------------------------------------------------------------------------------------------
# a trained model

@pytest.mark.slow
def test_training_over_a_trained_model_needs_resume_or_overwrite(tmp_path):
    mypt_cli(*prepare_args(corpus(tmp_path / "in"), tmp_path / "ds"), cwd=tmp_path)
    args = ["train", "--dataset_dir", str(tmp_path / "ds"), "--model_name", "m", *TINY]
    mypt_cli(*args, cwd=tmp_path)
    before = tree_bytes(tmp_path)
    err = refused(*args, cwd=tmp_path)
    assert "--model_name m" in err and str(Path("checkpoints") / "m") in err and "already holds a trained model" in err
    assert "--resume" in err and "--overwrite" in err and "new --model_name" in err
    assert tree_bytes(tmp_path) == before
    assert "pick one" in refused(*args, "--resume", "--overwrite", cwd=tmp_path)
    assert tree_bytes(tmp_path) == before
    mypt_cli(*args, "--overwrite", "--seed", "7", cwd=tmp_path)
    assert (tmp_path / "checkpoints/m/model.safetensors").read_bytes() != before["checkpoints/m/model.safetensors"]


# ---------------------------------------------------------------------------------------------
# one writer per output

def test_second_prepare_on_the_same_out_dir_fails_at_once(tmp_path):
    inp = corpus(tmp_path / "in")
    out = tmp_path / "ds"
    with output_lock(out, "--out_dir"):  # this process plays the first run
        assert lock_path(out).read_text() == f"mypt lock of pid {os.getpid()}\n"
        before = tree_bytes(tmp_path)
        start = time.monotonic()
        err = refused(*prepare_args(inp, out), cwd=tmp_path)
        assert time.monotonic() - start < 60
        assert f"{out} is in use by process {os.getpid()}" in err and "--out_dir" in err
        assert tree_bytes(tmp_path) == before and not out.exists()
    assert not lock_path(out).exists()  # released and removed
    mypt_cli(*prepare_args(inp, out), cwd=tmp_path)


@pytest.mark.slow
def test_second_training_of_the_same_model_fails_at_once(tmp_path):
    mypt_cli(*prepare_args(corpus(tmp_path / "in"), tmp_path / "ds"), cwd=tmp_path)
    ckpt = tmp_path / "checkpoints" / "m"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom mypt.lock import output_lock\n"
                               f"with output_lock({str(ckpt)!r}, '--model_name'):\n"
                               "    print('held', flush=True)\n    time.sleep(120)\n"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        err = refused("train", "--dataset_dir", str(tmp_path / "ds"), "--model_name", "m", *TINY, cwd=tmp_path)
        assert f"{Path('checkpoints', 'm')} is in use by process {holder.pid}" in err and "--model_name" in err
        assert not ckpt.exists()
    finally:
        holder.kill()
        holder.wait()
    # the kernel released the dead holder's lock: its leftover file does not block
    assert lock_path(ckpt).exists()
    mypt_cli("train", "--dataset_dir", str(tmp_path / "ds"), "--model_name", "m", *TINY, cwd=tmp_path)
    assert (ckpt / "model.safetensors").is_file() and not lock_path(ckpt).exists()


def test_lock_file_of_a_dead_process_does_not_block(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "ds"
    lock_path(out).write_text(f"mypt lock of pid {dead.pid}\n")
    mypt_cli(*prepare_args(corpus(tmp_path / "in"), out), cwd=tmp_path)
    assert (out / "dataset_metadata.json").is_file() and not lock_path(out).exists()


def test_a_users_file_at_the_lock_name_holding_a_number_is_refused_and_kept(tmp_path):
    """A lock file held only its pid: a user's `.ds.lock` holding a number (a note, a count) was
    taken for a lock a dead run left, and replaced, then removed."""
    out = tmp_path / "ds"
    inp = corpus(tmp_path / "in")
    lock_path(out).write_text("42\n")
    before = tree_bytes(tmp_path)
    err = refused(*prepare_args(inp, out), cwd=tmp_path)
    assert f"{lock_path(out)}: mypt locks --out_dir with a file of this name" in err and "nothing changed" in err
    assert "a lock a killed run of an older mypt left" in err
    assert tree_bytes(tmp_path) == before
    # Held (an older mypt, which wrote the bare pid, running now): busy, not "remove it".
    with open(lock_path(out), "rb") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        err = refused(*prepare_args(inp, out), cwd=tmp_path)
    assert f"{out} is in use by process 42" in err and "remove it" not in err, err
    assert tree_bytes(tmp_path) == before


@pytest.mark.parametrize("links", [True, False])
def test_a_full_disk_as_the_lock_is_written_names_it_and_leaves_no_empty_lock(tmp_path, monkeypatch, links):
    """The lock's pid could not be written (a disk already full): the message said "a file", and
    where hard links fail (made in place) an empty lock file stayed, which the next run refused
    as a user's file."""
    import errno

    import mypt.lock
    from mypt.errors import os_error_message

    if not links:
        monkeypatch.setattr(mypt.lock.os, "link", lambda *a: (_ for _ in ()).throw(OSError(errno.EPERM, "no links")))
    monkeypatch.setattr(mypt.lock.os, "pwrite",
                        lambda *a: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device")))
    out = tmp_path / "ds"
    with pytest.raises(OSError) as e:
        with output_lock(out, "--out_dir"):
            pass
    assert os_error_message(e.value) == f"cannot write {lock_path(out)}: No space left on device; free some space, " \
        "or choose an output on another disk"
    assert list(tmp_path.iterdir()) == []  # (no lock, no name of the process's, no folder made for them)
    monkeypatch.undo()
    with output_lock(out, "--out_dir"):
        pass


def test_an_empty_file_at_the_lock_name_is_the_users_refused_and_kept(tmp_path):
    """mypt's lock file holds its pid from the moment it has the lock's name (written under a
    name of the process's, then linked): an empty file there is a user's, not a lock."""
    out = tmp_path / "ds"
    inp = corpus(tmp_path / "in")
    lock_path(out).touch()
    before = tree_bytes(tmp_path)
    err = refused(*prepare_args(inp, out), cwd=tmp_path)
    assert f"{lock_path(out)}: mypt locks --out_dir with a file of this name" in err and "nothing changed" in err
    assert tree_bytes(tmp_path) == before
    lock_path(out).unlink()
    with output_lock(out, "--out_dir"):
        assert sorted(p.name for p in tmp_path.iterdir()) == [".ds.lock", "in"]  # its own name is gone
        assert lock_path(out).read_text() == f"mypt lock of pid {os.getpid()}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_on_a_filesystem_without_hard_links_the_lock_is_made_in_place(tmp_path, monkeypatch):
    """exFAT and some FUSE filesystems refuse os.link: the lock is made at its name, locked,
    then its pid written; seen empty and held meanwhile, it is busy (not a user's file)."""
    import errno
    import fcntl

    from mypt.errors import BusyError

    def no_links(src, dst, **kw):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    out = tmp_path / "ds"
    with output_lock(out, "--out_dir"):
        assert lock_path(out).read_text() == f"mypt lock of pid {os.getpid()}\n"
        assert sorted(p.name for p in tmp_path.iterdir()) == [".ds.lock"]
    assert list(tmp_path.iterdir()) == []
    with open(lock_path(out), "w") as held:  # another run's, between making it and writing its pid
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        with pytest.raises(BusyError, match="ds is in use by another process"):
            with output_lock(out, "--out_dir"):
                pass
    assert sorted(p.name for p in tmp_path.iterdir()) == [".ds.lock"]  # (its own, for it to remove)


@pytest.mark.parametrize("name", [".", "..", "", "../elsewhere", "a/b", ".hidden"])
def test_model_name_is_a_plain_name_so_a_save_never_replaces_another_directory(tmp_path, name):
    from click.testing import CliRunner

    from mypt.cli import main

    (tmp_path / "checkpoints" / "other").mkdir(parents=True)
    (tmp_path / "checkpoints" / "other" / "model.safetensors").write_bytes(b"trained")
    before = tree_bytes(tmp_path)
    result = CliRunner().invoke(main, ["train", "--input_file", __file__, "--model_name", name,
                                       "--checkpoints_dir", str(tmp_path / "checkpoints")])
    assert result.exit_code == 2 and "--model_name" in result.output and "Traceback" not in result.output
    assert tree_bytes(tmp_path) == before


@pytest.mark.parametrize("command, flag", [("train", "--model_name"), ("train", "--checkpoints_dir"),
                                           ("generate", "--model_name"), ("export-hf", "--checkpoints_dir"),
                                           ("export-hf", "--out_dir")])
def test_a_checkpoint_place_that_is_not_utf8_is_refused_before_a_save_no_load_could_read(tmp_path, command, flag):
    """safetensors opens only UTF-8 paths: a model trained as $'m\\xff' was saved, then every
    load said its model.safetensors was "not a safetensors file"."""
    from click.testing import CliRunner

    from mypt.cli import main

    bad = os.fsdecode(b"m\xff")  # (the name a shell passes, as Python sees it)
    args = {"train": ["--input_file", __file__, *TINY, "--max_iters", "1"], "generate": [],
            "export-hf": ["--out_dir", str(tmp_path / "ex")]}
    names = {"--model_name": bad, "--checkpoints_dir": str(tmp_path / bad), "--out_dir": str(tmp_path / bad)}
    rest = {"--model_name": "m", "--checkpoints_dir": str(tmp_path / "checkpoints")}
    if command == "export-hf":
        args[command] = []
        rest["--out_dir"] = str(tmp_path / "ex")
    rest[flag] = names[flag]
    result = CliRunner().invoke(main, [command, *args[command], *(x for kv in rest.items() for x in kv)])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert f"{flag} b'" in result.output and "not valid UTF-8" in result.output, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_step_run_by_hand_never_replaces_a_directory_of_other_files(tmp_path):
    from mypt.steps.clean import clean

    (tmp_path / "a.txt").write_text("some text here\n")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.md").write_text("mine")
    with pytest.raises(Exception, match="--out_dir"):
        clean([str(tmp_path / "a.txt")], tmp_path / "notes")
    assert (tmp_path / "notes" / "todo.md").read_text() == "mine"
    clean([str(tmp_path / "a.txt")], tmp_path / "cleaned")
    clean([str(tmp_path / "a.txt")], tmp_path / "cleaned")  # its own previous output is replaced


def test_a_checkpoint_left_by_a_killed_save_is_put_back_not_replaced(tmp_path):
    """A save killed between its two renames leaves the previous checkpoint as .NAME.old: a new
    run must put it back and refuse to replace it, not delete it with its first save."""
    from click.testing import CliRunner

    from mypt import checkpoint
    from mypt.config import GPTConfig
    from mypt.cli import main
    from mypt.model import GPT
    from mypt.tokenizers.char import CharTokenizer

    ck = tmp_path / "checkpoints"
    checkpoint.save(ck / "m", GPT(GPTConfig(vocab_size=4, block_size=8, n_layer=1, n_head=1, n_embd=8)),
                    CharTokenizer(chars="abc\n"), {})
    before = tree_bytes(ck / "m")
    mark_own(ck / "m")  # as a save marks the checkpoint it moves aside
    (ck / "m").rename(ck / ".m.old")
    (tmp_path / "t.txt").write_text("abc\n" * 100)
    result = CliRunner().invoke(main, ["train", "--input_file", str(tmp_path / "t.txt"), "--model_name", "m",
                                       "--checkpoints_dir", str(ck), "--tokenization", "char"])
    assert result.exit_code == 1 and "already holds a trained model" in result.output
    assert tree_bytes(ck / "m") == before and not (ck / ".m.old").exists()


def test_each_input_is_resolved_once_a_run_by_the_output_checks(tmp_path, monkeypatch):
    """Where an output may go is checked against every input (none may lie in it): prepare-dataset
    resolved each input three times (its own check, then the clean step's staged_dir before and
    under its lock), 30,000 resolves for 10,000 inputs. Now once where the output is there (an
    --overwrite), and not at all for a new one: no input lies in a directory that does not exist."""
    from click.testing import CliRunner

    from mypt.cli import main

    monkeypatch.chdir(tmp_path)
    Path("inp").mkdir()
    for i in range(20):
        Path(f"inp/{i:02d}.txt").write_text(f"text {i} of the corpus, with a few words in it\n" * 3)
    names = {f"{i:02d}.txt" for i in range(20)}
    resolved = Counter()
    real_resolve = Path.resolve

    def counted(self, *args, **kwargs):
        if self.name in names and sys._getframe(1).f_code.co_filename.endswith(os.path.join("mypt", "io.py")):
            resolved[self.name] += 1
        return real_resolve(self, *args, **kwargs)
    monkeypatch.setattr(Path, "resolve", counted)
    for extra, most in (([], 0), (["--overwrite"], 1)):
        resolved.clear()
        r = CliRunner().invoke(main, prepare_args("inp", "ds", "--workers", "1", *extra))
        assert r.exit_code == 0, r.output
        assert max(resolved.values(), default=0) == most, (extra, resolved)
