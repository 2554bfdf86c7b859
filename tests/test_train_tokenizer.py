"""`mypt train-tokenizer` stopped by Ctrl-C or SIGTERM, through the CLI as a subprocess."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time

import pytest
from conftest import mypt_cli

pytest.importorskip("tokenizers")


@pytest.mark.slow
@pytest.mark.parametrize("how", ["ctrl-c", "sigterm", "training killed"])
def test_a_stop_acts_at_once_mid_training_and_leaves_the_users_tokenizer(tmp_path, how):
    """The tokenizers library's training is Rust code that held the main thread, where alone
    Python runs a signal's handler: a Ctrl-C or SIGTERM waited for the training's end (12 s of
    a 37 MB corpus). Here a corpus the library takes many minutes on (its merges are quadratic
    in a word's length: one word of 1.5 M random letters), stopped once the command has spent
    2 s of CPU (inside the training): it ends at once with its one line, the training
    process (Ctrl-C reaches the terminal's whole group) without a traceback and gone, and the
    tokenizer.json --overwrite would replace, as it was, alone in its folder. The training
    process killed (the OOM killer) is one line too."""
    psutil = pytest.importorskip("psutil")
    (tmp_path / "small.txt").write_text("the king and the queen and the crown\n" * 50)
    out = tmp_path / "out"
    out.mkdir()
    mypt_cli("train-tokenizer", "--input_files", "small.txt", "--vocab_size", "270", "--out", "out/tok.json",
             cwd=tmp_path)
    before = (out / "tok.json").read_bytes()
    rng = random.Random(0)
    (tmp_path / "word.txt").write_text("".join(rng.choices("ab", k=1_500_000)) + "\n")
    # SIGINT as a terminal's command has it (a test run started in the background passes it ignored).
    proc = subprocess.Popen([sys.executable, "-m", "mypt.cli", "train-tokenizer", "--input_files", "word.txt",
                             "--vocab_size", str(1 << 20), "--out", "out/tok.json", "--overwrite"], cwd=tmp_path,
                            start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        tree, deadline = psutil.Process(proc.pid), time.monotonic() + 300

        def cpu() -> float:
            total = 0.0
            for p in [tree, *tree.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):  # (one that ended meanwhile)
                    t = p.cpu_times()
                    total += t.user + t.system
            return total

        while cpu() < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert proc.poll() is None, proc.communicate()
        children = tree.children(recursive=True)
        if how == "ctrl-c":
            os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does: the terminal's whole foreground group
        elif how == "sigterm":
            proc.send_signal(signal.SIGTERM)  # a `kill` of mypt alone
        else:
            # (multiprocessing's resource tracker is a child too)
            next(p for p in children if "spawn_main" in " ".join(p.cmdline())).kill()
        _, err = proc.communicate(timeout=60)  # (at once here; the training had many minutes to go)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    said = {"ctrl-c": "Aborted!", "sigterm": "Error: stopped by SIGTERM before it finished",
            "training killed": "Error: the tokenizer's training process died before it finished"}[how]
    assert proc.returncode == {"ctrl-c": 1, "sigterm": 128 + signal.SIGTERM, "training killed": 1}[how], err
    lines = [line for line in err.splitlines() if line.strip()]  # (click's Ctrl-C line comes after a newline)
    assert len(lines) == 1 and lines[0].startswith(said), err
    assert psutil.wait_procs(children, timeout=30)[1] == []
    assert (out / "tok.json").read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == ["tok.json"]
