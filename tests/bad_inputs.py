"""The machinery of the bad-input tables (tests/test_bad_inputs*.py): a world of inputs,
datasets and a trained model built once per session, a `Case` per bad input, and the check
that every case holds: exit 1 (a mypt error) or 2 (a click usage error), no `Traceback`, one
`Error` line naming the offending path, flag or value, and nothing changed outside its output
(no `.partial`, `.tmp`, `.work` or `.old` left anywhere; with a fault injected, not even the
output).

Each table file parametrizes `run_case` over its own list of cases; `world` is the session
fixture of conftest.py.
"""

from __future__ import annotations

import errno  # noqa: F401  (table files take it from here with the helpers)
import gzip
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
from click.testing import CliRunner
from conftest import tree_bytes

from mypt.cli import main
from mypt.steps.clean import CleanSettings, clean

TINY = ["--config_file", "tiny", "--device", "cpu", "--max_iters", "2", "--eval_interval", "2", "--eval_iters", "1"]
LEFTOVERS = (".partial", ".tmp", ".work", ".old", ".carry")


def invoke(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=True)


def build_world(w: Path) -> Path:
    """What the cases start from (copied for each): a corpus, two char datasets with
    different vocabularies, a tiny trained model, and broken inputs."""
    cwd = Path.cwd()
    os.chdir(w)
    try:
        Path("corpus.txt").write_text("".join(f"Line {i} of the king's speech, and the queen's reply {i * 7}.\n"
                                              for i in range(300)))
        Path("other.txt").write_text("xyz XYZ qwerty\n" * 200)
        for inp, out in (("corpus.txt", "ds"), ("other.txt", "other")):
            r = invoke("prepare-dataset", "--input_files", inp, "--out_dir", out, "--tokenization", "char",
                       "--val_fraction", "0.1", "--tokens_per_shard", "2000", "--workers", "1")
            assert r.exit_code == 0, r.output
        r = invoke("train", "--dataset_dir", "ds", "--model_name", "m", "--checkpoints_dir", "ck", *TINY)
        assert r.exit_code == 0, r.output
        data = gzip.compress(Path("corpus.txt").read_bytes() * 4)  # > 8 KiB of text: the sniff reads fine
        Path("truncated.txt.gz").write_bytes(data[: len(data) // 2])
        broken = bytearray(data)
        broken[len(data) // 2: len(data) // 2 + 16] = b"\xff" * 16
        Path("corrupt.txt.gz").write_bytes(bytes(broken))
        Path("fake.txt.gz").write_text("not gzip at all\n")
        Path("binary.txt").write_bytes(bytes(range(256)) * 20)
        Path("empty.txt").write_bytes(b"")
        Path("blank.txt").write_text("  \n\t\n\n")
        Path("nometa").mkdir()
        Path("nometa/notes.txt").write_text("mine")
        configs = {
            "dropout_str": {"model": {"dropout": "0.1"}}, "bias_str": {"model": {"bias": "no"}},
            "batch_bool": {"training": {"batch_size": True}}, "beta1_one": {"training": {"beta1": 1.0}},
            "beta2_neg": {"training": {"beta2": -0.1}}, "min_lr_neg": {"training": {"min_lr": -1e-4}},
            "wd_neg": {"training": {"weight_decay": -0.1}}, "clip_neg": {"training": {"grad_clip": -1}},
            "unknown_key": {"training": {"learning_rat": 1e-3}}, "unknown_section": {"optim": {}},
            "list": [1, 2], "model_list": {"model": [1]},
        }
        for name, obj in configs.items():
            Path(f"{name}.json").write_text(json.dumps(obj))
        Path("notjson.json").write_text("{model: tiny}")
        Path("deep.json").write_text("[" * 100_000 + "]" * 100_000)  # (json's parser recurses)
        clean(["corpus.txt"], Path("cleaned"), CleanSettings(workers=1))  # a step's output, for the stages
    finally:
        os.chdir(cwd)
    return w


@dataclass
class Case:
    id: str
    args: list[str]
    expect: list[str]  # substrings of the message (the path, flag or value, what fixes it)
    code: int = 1
    out: str | None = None  # the command's output: the one path that may change
    setup: Callable[[Path], None] | None = None  # breaks something in the case's copy of the world
    # An environment failure, injected; it may return what lifts it (what monkeypatch cannot undo).
    fault: Callable[[pytest.MonkeyPatch, Path], Callable[[], None] | None] | None = None
    skip: str | None = None


def prep(inp: str, out: str = "new_ds", *extra: str) -> list[str]:
    return ["prepare-dataset", "--input_files", inp, "--out_dir", out, "--tokenization", "char",
            "--val_fraction", "0", "--workers", "1", *extra]


def train(*extra: str, model: str = "n") -> list[str]:
    return ["train", "--model_name", model, "--checkpoints_dir", "ck", *TINY, *extra]


def gen(*extra: str, model: str = "m") -> list[str]:
    return ["generate", "--model_name", model, "--checkpoints_dir", "ck", "--max_new_tokens", "3",
            "--device", "cpu", *extra]


def edit_json(path: str, change: Callable[[dict], object]) -> Callable[[Path], None]:
    def setup(w: Path) -> None:
        p = w / path
        obj = json.loads(p.read_text())
        new = change(obj)
        p.write_text(json.dumps(obj if new is None else new))
    return setup


def write(path: str, text: str) -> Callable[[Path], None]:
    return lambda w: (w / path).write_text(text)


def resealed(setup: Callable[[Path], None], checkpoint: str = "ck/m") -> Callable[[Path], None]:
    """`setup`, then the checkpoint's recorded sha256 made to match its files again: a case that
    tests what a load checks beyond the checksum (a hand-edited file whose sum was edited too)."""
    def run(w: Path) -> None:
        from mypt.checkpoint import CONFIG_FILE, MODEL_SUM, model_sum
        from mypt.io import sha256_file

        setup(w)
        path = w / checkpoint / CONFIG_FILE
        config = json.loads(path.read_text())
        config["sha256"] = {name: model_sum(config["model"]) if name == MODEL_SUM else sha256_file(w / checkpoint / name)
                            for name in config.get("sha256", {})}
        path.write_text(json.dumps(config))
    return run


def remove_train_shards(w: Path) -> None:
    for p in (w / "ds" / "train").glob("*"):
        p.unlink()


def fail_writes(err: int, under: str) -> Callable:
    """open(..., "w"/"a"/"x"), or os.open to write, of a path in the tmp tree whose name holds
    `under` raises `err`. (io.atomic_file then writes by name, as where the system has no
    unnamed files: an unnamed file is opened by its directory, which holds no `under`.)"""
    def fault(monkeypatch: pytest.MonkeyPatch, w: Path) -> None:
        real_open, real_os_open = open, os.open
        monkeypatch.setattr("mypt.io._unnamed_file", lambda directory: None)

        def fake_open(file, mode="r", *args, **kwargs):
            if isinstance(file, (str, Path)) and any(c in mode for c in "wax") and under in str(file):
                raise OSError(err, os.strerror(err), str(file))
            return real_open(file, mode, *args, **kwargs)

        def fake_os_open(path, flags, *args, **kwargs):
            if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and under in os.fsdecode(path):
                raise OSError(err, os.strerror(err), os.fsdecode(path))
            return real_os_open(path, flags, *args, **kwargs)
        monkeypatch.setattr("builtins.open", fake_open)
        monkeypatch.setattr(os, "open", fake_os_open)
    return fault


def disk_full_mid_write(under: str) -> Callable:
    """A file opened to write by open() under a path whose name holds `under` opens, and its
    first write raises ENOSPC naming no file, as a full disk's write, flush or close of a file
    already open does (the open named it). (numpy's tofile writes past this: file_size_limit.)"""
    def fault(monkeypatch: pytest.MonkeyPatch, w: Path) -> None:
        real_open = open

        class Full:
            def __init__(self, f):
                self._f = f

            def write(self, data):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

            def __getattr__(self, name):
                return getattr(self._f, name)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self._f.close()

        def fake_open(file, mode="r", *args, **kwargs):
            f = real_open(file, mode, *args, **kwargs)
            return Full(f) if isinstance(file, (str, Path)) and any(c in mode for c in "wax") and under in str(file) \
                else f
        monkeypatch.setattr("builtins.open", fake_open)
    return fault


def file_size_limit(limit: int) -> Callable:
    """No file may grow past `limit` bytes (RLIMIT_FSIZE, as `ulimit -f`): a write past it fails
    with EFBIG (Python ignores SIGXFSZ, which would kill the writer), or numpy's tofile says a
    write was cut short, as on a full disk; in this process and the workers it starts (they
    inherit the limit). A real fault at every write, numpy's included. Returns what lifts it."""
    def fault(monkeypatch: pytest.MonkeyPatch, w: Path) -> Callable[[], None]:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard))
        return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    return fault


def fail_renames(err: int, src_has: str) -> Callable:
    """os.replace of a source whose name holds `src_has` raises `err`."""
    def fault(monkeypatch: pytest.MonkeyPatch, w: Path) -> None:
        real = os.replace

        def fake(src, dst, *args, **kwargs):
            if src_has in str(src):
                raise OSError(err, os.strerror(err), str(src), None, str(dst))
            return real(src, dst, *args, **kwargs)
        monkeypatch.setattr(os, "replace", fake)
    return fault


def check_refusal(w: Path, before: dict[str, bytes], out: str | None, output: str, code: int, got: int,
                  expect: list[str]) -> None:
    assert got == code, output
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if line.startswith("Error")]
    assert len(lines) == 1, output
    for word in expect:
        assert word in output, f"{word!r} not in {output!r}"
    after = tree_bytes(w)
    leftovers = [p for p in after if any(m in p for m in LEFTOVERS)]
    assert not leftovers, leftovers
    if out is not None:
        before = {p: b for p, b in before.items() if not p.startswith(out)}
        after = {p: b for p, b in after.items() if not p.startswith(out)}
    assert after == before



def run_case(case: Case, world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run `case` in a copy of the world and check the refusal."""
    if case.skip:
        pytest.skip(case.skip)
    w = tmp_path / "w"
    shutil.copytree(world, w, symlinks=True)
    monkeypatch.chdir(w)
    if case.setup:
        case.setup(w)
    before = tree_bytes(w)
    lift = case.fault(monkeypatch, w) if case.fault else None
    try:
        result = CliRunner().invoke(main, case.args, catch_exceptions=True)
    finally:
        monkeypatch.undo()  # the fault off before the tree is read back
        if lift is not None:
            lift()
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    check_refusal(w, before, case.out, result.output, case.code, result.exit_code, case.expect)
