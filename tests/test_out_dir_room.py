"""An --out_dir whose path fits the system but leaves no room for the names mypt makes beside and
inside it (a lock, a staging, shards): refused before anything is made, naming the flag."""

from __future__ import annotations

import os
from pathlib import Path

from click.testing import CliRunner

from mypt.cli import main


def error_line(result) -> str:
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


def test_an_out_dir_with_no_room_for_the_names_mypt_adds_is_an_error_naming_the_flag(tmp_path, monkeypatch):
    """A path that fits the system, but not with the lock beside it (`.NAME.lock-PID-HEX`) or the
    shards inside: it said "cannot use .../.xxx.lock-...: File name too long", naming no flag, and
    left its new parent folders behind."""
    monkeypatch.chdir(tmp_path)
    Path("a.txt").write_text("The king spoke to the queen.\n" * 20)
    # A relative --out_dir whose absolute path is 15 bytes under the system's limit (4,095 bytes on Linux).
    room = os.pathconf(".", "PC_PATH_MAX") - 1 - len(os.fsencode(os.path.realpath(tmp_path))) - 1 - 15
    parts = ["d" * 200] * ((room - 1) // 201)
    out = "/".join([*parts, "x" * (room - 201 * len(parts))])
    args = ["prepare-dataset", "--input_files", "a.txt", "--out_dir", out, "--tokenization", "char"]
    line = error_line(CliRunner().invoke(main, args))
    assert line.startswith("Error: --out_dir ddd") and "File name too long" in line and \
        line.endswith("choose a shorter --out_dir"), line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]
