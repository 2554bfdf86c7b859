"""A run killed mid-way (SIGKILL) leaves nothing that passes for a finished shard or
metadata, and a rerun gives the bytes of an uninterrupted run."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import mypt_cli, tree_bytes

pytestmark = pytest.mark.slow  # subprocesses, kills and DVC runs: minutes

TOKENS_PER_SHARD = 2000


def write_corpus(root: Path, lines_per_file: int = 60_000) -> None:
    rng = random.Random(3)
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi".split()
    root.mkdir()
    for name in ("a", "b", "c"):
        lines = (" ".join(rng.choice(words) for _ in range(rng.randint(3, 16))) for _ in range(lines_per_file))
        (root / f"{name}.txt").write_text("\n".join(lines) + "\n")


def args(corpus: Path, out: Path) -> list[str]:
    return ["prepare-dataset", "--input_files", str(corpus), "--out_dir", str(out), "--workers", "1",
            "--tokens_per_shard", str(TOKENS_PER_SHARD)]


def kill_when(cmd: list[str], cwd: Path, ready) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "mypt.cli", *cmd], cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not ready() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    if proc.poll() is not None:
        pytest.fail("the run finished before the kill point: make the corpus bigger")
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def assert_nothing_looks_complete(root: Path, out: Path) -> None:
    assert not out.exists()
    assert not list(root.rglob("dataset_metadata.json"))
    # In the dataset being built, only shards that were filled are under their final name
    # (the intermediate .ds.work directory is removed by the next run, never read as a dataset).
    for shard in (root / ".ds.partial").rglob("shard_*.bin"):
        assert shard.stat().st_size == 4 * TOKENS_PER_SHARD, shard


@pytest.mark.parametrize("kill_point", ["tokenize", "split"])
def test_killed_run_leaves_no_complete_looking_output_and_rerun_matches(tmp_path, kill_point):
    corpus = tmp_path / "corpus"
    write_corpus(corpus)
    runs = tmp_path / "runs"
    runs.mkdir()
    out = runs / "ds"
    if kill_point == "tokenize":
        ready = lambda: any((runs / ".ds.work").glob(".tokens.partial/.t_*"))  # noqa: E731
    else:
        ready = lambda: len(list((runs / ".ds.partial" / "train").glob("shard_*.bin"))) > 5  # noqa: E731
    kill_when(args(corpus, out), tmp_path, ready)
    assert_nothing_looks_complete(runs, out)

    mypt_cli(*args(corpus, out), cwd=tmp_path)
    mypt_cli(*args(corpus, tmp_path / "clean_run" / "ds"), cwd=tmp_path)
    assert tree_bytes(out) == tree_bytes(tmp_path / "clean_run" / "ds")
    assert sorted(p.name for p in runs.iterdir()) == ["ds"]  # the partial and work directories are gone


@pytest.mark.parametrize("shared", [False, True])
def test_a_worker_process_that_dies_stops_the_step_with_an_error_not_a_hang(shared):
    """A worker killed mid-task (the OOM killer, a kill -9) lost its task: multiprocessing.Pool
    waited for it for ever (prepare-dataset hung). The step fails, naming it, and its other
    workers are gone."""
    import functools
    import os
    from types import SimpleNamespace

    from mypt.parallel import WorkerDied, parallel_map, shared_pool

    how = SimpleNamespace(workers=2, engine="local", ray_address=None)
    exit_now = functools.partial(os._exit)  # each task ends its worker at once
    with pytest.raises(WorkerDied, match="a worker process of the clean step died"):
        with shared_pool(how) if shared else contextlib.nullcontext():
            parallel_map(exit_now, [3, 4, 5, 6], how, "clean")
    assert parallel_map(abs, [-1, -2, 3], how, "next") == [1, 2, 3]  # and the next step runs


class _TwoArgumentError(Exception):
    def __init__(self, a, b):  # pickles as E(str), then fails to rebuild: it broke the executor
        super().__init__(f"{a} and {b}")


def _raise_unpicklable(task):
    raise _TwoArgumentError("bad", task)


def test_a_task_error_that_cannot_cross_processes_is_named_not_called_a_dead_worker():
    from types import SimpleNamespace

    from mypt.parallel import parallel_map

    how = SimpleNamespace(workers=2, engine="local", ray_address=None)
    with pytest.raises(RuntimeError, match="_TwoArgumentError: bad and 1"):
        parallel_map(_raise_unpicklable, [1, 2], how, "clean")


def test_workers_exit_when_the_main_process_is_killed():
    """kill -9 of mypt left its spawned workers waiting for tasks for ever, orphans (PPID 1)
    holding their memory: each now ends within about a second of its parent."""
    psutil = pytest.importorskip("psutil")
    code = ("import time; from types import SimpleNamespace; from mypt.parallel import parallel_map; "
            "parallel_map(time.sleep, [60, 60, 60], SimpleNamespace(workers=2, engine='local', ray_address=None), "
            "'clean')")
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 60
        workers = []
        while len(workers) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
            workers = [p for p in psutil.Process(proc.pid).children() if "spawn_main" in " ".join(p.cmdline())]
        assert len(workers) == 2
        time.sleep(2)  # into their tasks
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 10
    alive = workers
    while alive and time.monotonic() < deadline:
        time.sleep(0.2)
        alive = [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    for p in alive:
        p.kill()
    assert alive == []


@pytest.mark.parametrize("after, sig, group", [(0.3, signal.SIGINT, True), (1.5, signal.SIGINT, True),
                                               (1.5, signal.SIGTERM, True), (1.5, signal.SIGTERM, False)])
def test_ctrl_c_stops_prepare_and_its_workers_without_their_tracebacks(tmp_path, after, sig, group):
    """Ctrl-C reaches every process of the terminal's group: each spawned worker printed a
    KeyboardInterrupt traceback (the first seconds: while it started). The parent alone stops
    and ends its workers; nothing is left that looks complete. SIGTERM (a scheduler's, to the
    group or to mypt alone) stops it the same way, with its work directory removed: it ended
    the process at once, silently, leaving `.ds.work` the size of the corpus."""
    psutil = pytest.importorskip("psutil")
    corpus = tmp_path / "corpus"
    write_corpus(corpus, 240_000)  # (a run of 4 s or so: 1.5 s after the workers start is within it)
    out = tmp_path / "ds"
    cmd = args(corpus, out)
    cmd[cmd.index("--workers") + 1] = "2"
    # SIGINT as a terminal's command has it: a test run started in the background (`.ci/run &`)
    # passes it on ignored, and Python then installs no handler.
    proc = subprocess.Popen([sys.executable, "-m", "mypt.cli", *cmd], cwd=tmp_path, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline, workers = time.monotonic() + 60, []
    while len(workers) < 2 and proc.poll() is None and time.monotonic() < deadline:
        workers = [p for p in psutil.Process(proc.pid).children() if "spawn_main" in " ".join(p.cmdline())]
    assert len(workers) == 2, "the run ended before its workers started: make the corpus bigger"
    time.sleep(after)  # 0.3 s: the workers are still importing; 1.5 s: in their tasks
    if group:
        os.killpg(proc.pid, sig)  # what Ctrl-C does: the whole foreground group
    else:
        proc.send_signal(sig)
    err = proc.communicate(timeout=60)[1]
    said = "Aborted" if sig == signal.SIGINT else "Error: stopped by SIGTERM before it finished"
    assert proc.returncode != 0 and said in err and "Traceback" not in err, err
    assert psutil.wait_procs(workers, timeout=10)[1] == []
    assert_nothing_looks_complete(tmp_path, out)
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".ds.")]


def test_a_write_cut_short_while_tokenizing_is_one_line_that_says_so(tmp_path):
    """numpy's tofile raises an OSError without an errno for a write cut short (a full disk):
    the message was `cannot use a file: [Errno None] None: None -> None` (the staging paths'
    renaming set each missing name to None). In a process whose files may not grow past
    64 KiB (the clean step's 20 KB fit, the tokenize step's 80 KB do not), it says what
    happened, and no dataset is left."""
    import resource

    (tmp_path / "t.txt").write_text("".join(f"{w} line number {i} of the text\n"
                                            for i, w in enumerate(["alpha", "beta", "gamma"] * 200)))

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # (else the kernel kills the writer)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 10, 64 << 10))
    run = subprocess.run([sys.executable, "-m", "mypt.cli", "prepare-dataset", "--input_files", "t.txt", "--out_dir",
                          "ds", "--tokenization", "char", "--workers", "1"], cwd=tmp_path, capture_output=True,
                         text=True, preexec_fn=limit, timeout=300)
    lines = [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]
    assert run.returncode == 1 and len(lines) == 1, run.stdout + run.stderr
    assert "a write cut short" in lines[0] and "None" not in lines[0], lines
    assert "the file reached this process's file-size limit (ulimit -f: 65,536 bytes), or the disk is full" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.txt"]
