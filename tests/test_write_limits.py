"""What stops a write is named as it is: a file-size limit (ulimit -f) is not called a full disk,
and a file in a work folder that cannot be removed is named by its full path."""

from __future__ import annotations

import random
import resource
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from mypt.cli import main


def test_a_write_cut_short_by_a_file_size_limit_names_the_limit_not_only_a_full_disk(tmp_path):
    """numpy's tofile past the limit writes part of its buffer and says so, with no errno (a
    write past it fails with EFBIG: "File too large"): it was said to be a full disk alone."""
    rng = random.Random(1)
    words = "alpha beta gamma delta epsilon zeta eta theta".split()
    lines = (" ".join(rng.choice(words) for _ in range(10)) + "\n" for _ in range(20000))
    (tmp_path / "c.txt").write_text("".join(lines))
    limit = 2000 << 10  # (the clean step's 1.1 MB fit, the tokenize step's 4.6 MB do not)
    run = subprocess.run([sys.executable, "-m", "mypt.cli", "prepare-dataset", "--input_files", "c.txt", "--out_dir",
                          "ds", "--tokenization", "char", "--workers", "1", "--tokens_per_shard", "1000000"],
                         cwd=tmp_path, capture_output=True, text=True,
                         preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)))
    assert run.returncode == 1 and "a write cut short (" in run.stderr, run.stderr
    assert ("written): the file reached this process's file-size limit (ulimit -f: 2,048,000 bytes), or the disk is "
            "full; raise the limit (ulimit -f unlimited)") in run.stderr, run.stderr


def test_a_work_folder_file_that_cannot_be_removed_is_named_by_its_full_path(tmp_path, monkeypatch):
    """A killed run's `.ds.work` (marked, mypt's to remove) holding a file no one may remove
    (chattr +i): shutil.rmtree's error named only `f.bin`."""
    monkeypatch.chdir(tmp_path)
    Path("s.txt").write_text("hello world\n" * 50)
    stuck = Path(".ds.work/clean/sub/f.bin")
    stuck.parent.mkdir(parents=True)
    stuck.write_text("x")
    Path(".ds.work/.mypt-work").write_text("")
    if subprocess.run(["chattr", "+i", str(stuck)], capture_output=True).returncode:
        pytest.skip("no chattr +i here (not root, or a file system without the flag)")
    try:
        r = CliRunner().invoke(main, ["prepare-dataset", "--input_files", "s.txt", "--out_dir", "ds", "--tokenization",
                                      "char", "--workers", "1"])
    finally:
        subprocess.run(["chattr", "-i", str(stuck)], check=True)
    assert r.exit_code == 1 and f"cannot use {stuck.resolve()}: Operation not permitted" in r.output, r.output
