"""Multi-node training (issue 22 item 3) on one machine: the README's two-node torchrun
command run as two agents on 127.0.0.1, one process each, meeting through a c10d rendezvous,
with DDP and with FSDP."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import by_hand_env, free_port, mypt_cli, own_session, ranks_by_hand, run_in_session

TEXT = "\n".join(["the cat sat on the mat", "a dog ran to the log", "we see the sea by the tree"] * 400)


def two_nodes(cmd: list[str], cwd: Path | list[Path], timeout: float = 240, second: list[str] | None = None,
              torchrun: tuple[str, ...] = (), env: dict | None = None) -> list[subprocess.CompletedProcess]:
    """`torchrun --nnodes 2 ... cmd` as two agents (the second running `second` when given;
    `torchrun`: more of its flags), each in its own session so that it and its worker are killed
    together if the test ends first. (No --node_rank: the c10d rendezvous numbers the nodes
    itself, and torchrun says it ignores one.)"""
    port, procs = free_port(), []
    with contextlib.ExitStack() as sessions:
        for where, cmd in zip(cwd if isinstance(cwd, list) else [cwd, cwd], [cmd, second or cmd]):
            launch = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
                      "--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{port}", "--rdzv_id", "mypt-test",
                      *torchrun, *cmd]
            procs.append(sessions.enter_context(own_session(
                launch, cwd=where, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                env={**os.environ, **(env or {})})))
        outs = [p.communicate(timeout=timeout) for p in procs]
        return [subprocess.CompletedProcess(p.args, p.returncode, out, err) for p, (out, err) in zip(procs, outs)]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("multinode")
    (root / "corpus.txt").write_text(TEXT)
    mypt_cli("prepare-dataset", "--input_files", "corpus.txt", "--out_dir", "ds", "--tokenization", "char", cwd=root)
    return root / "ds"


@pytest.mark.slow
@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_two_nodes_train_one_model(dataset, tmp_path, parallel):
    nodes = two_nodes(["-m", "mypt.cli", "train", "--dataset_dir", str(dataset), "--model_name", "m", "--config_file",
                       "tiny", "--max_iters", "6", "--eval_interval", "3", "--device", "cpu", "--parallel", parallel],
                      tmp_path)
    for node in nodes:
        assert node.returncode == 0, node.stderr[-3000:]
    logs = "".join(node.stdout for node in nodes)
    assert logs.count("2 process(es)") == 1 and logs.count("step 6: val") == 1  # one rank 0, on one of the nodes
    ckpt = tmp_path / "checkpoints" / "m"
    assert (ckpt / ("dcp" if parallel == "fsdp" else "model.safetensors")).exists()


@pytest.mark.slow
def test_a_node_that_cannot_start_stops_the_other(dataset, tmp_path):
    """One node lacks the dataset (its path is another node's mount): it says so and exits, and
    the node that has it stops too, naming that rank's error (it waited in the process group
    for the missing rank, for 30 minutes)."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    (a / "ds").symlink_to(dataset)
    nodes = two_nodes(["-m", "mypt.cli", "train", "--dataset_dir", "ds", "--model_name", "m", "--config_file", "tiny",
                       "--max_iters", "2", "--device", "cpu"], [a, b], timeout=120)
    assert [node.returncode for node in nodes] == [1, 1], [node.stderr[-2000:] for node in nodes]
    assert "Error: --dataset_dir ds: no directory" in nodes[1].stderr
    assert "could not start: --dataset_dir ds: no directory" in nodes[0].stderr, nodes[0].stderr[-2000:]
    assert "so every rank stops" in nodes[0].stderr, nodes[0].stderr[-3000:]


@pytest.mark.slow
def test_fsdp_checkpoints_not_shared_by_the_nodes_are_refused_at_start(dataset, tmp_path):
    """Under FSDP every rank writes its shards into the checkpoint: with a --checkpoints_dir of
    each node's own, the run trained until its first save, then stopped ("the other ranks'
    shards did not arrive"), the training lost. Now refused at start, on every node."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    nodes = two_nodes(["-m", "mypt.cli", "train", "--dataset_dir", str(dataset), "--model_name", "m", "--config_file",
                       "tiny", "--max_iters", "2", "--device", "cpu", "--parallel", "fsdp"], [a, b], timeout=120)
    assert [node.returncode for node in nodes] == [1, 1], [node.stderr[-2000:] for node in nodes]
    for node in nodes:
        assert re.search(r"Error: --checkpoints_dir checkpoints: rank 1 does not see rank 0's lock file \S+ in it: "
                         r"with --parallel fsdp every rank writes its shards into the checkpoint, so --checkpoints_dir "
                         r"must be one filesystem every node shares", node.stderr), node.stderr[-2000:]
        assert "iter 1" not in node.stdout
    assert not list((a / "checkpoints").glob("*")) and not list((b / "checkpoints").glob("*"))


@pytest.mark.slow
def test_fsdp_ranks_given_other_checkpoints_dirs_are_told_the_flag(dataset, tmp_path):
    """Ranks started with another --checkpoints_dir were told they did not see rank 0's lock file,
    named by their own folder's path, and to share a filesystem: the cause was the flag."""
    args = ["-m", "mypt.cli", "train", "--dataset_dir", str(dataset), "--model_name", "m", "--config_file", "tiny",
            "--max_iters", "2", "--device", "cpu", "--parallel", "fsdp", "--checkpoints_dir"]
    nodes = two_nodes([*args, str(tmp_path / "ck_a")], tmp_path, timeout=120, second=[*args, str(tmp_path / "ck_b")])
    assert [node.returncode for node in nodes] == [1, 1], [node.stderr[-2000:] for node in nodes]
    for node in nodes:
        assert re.search(r"Error: rank 1 was started with --checkpoints_dir \S+/ck_[ab] \(rank 0: \S+/ck_[ab]\), where "
                         r"it does not see rank 0's lock file: .* give every rank the same --checkpoints_dir",
                         node.stderr), node.stderr[-2000:]


@pytest.mark.slow
def test_a_node_whose_flags_click_refuses_stops_the_other(dataset, tmp_path):
    """A flag refused before mypt's own code runs (click's parsing) is told to the other ranks
    as well: the node with good flags stops, naming it, instead of waiting 30 minutes."""
    cmd = ["-m", "mypt.cli", "train", "--dataset_dir", str(dataset), "--model_name", "m", "--config_file", "tiny",
           "--device", "cpu", "--max_iters"]
    nodes = two_nodes(cmd + ["2"], tmp_path, timeout=120, second=cmd + ["abc"])
    assert [node.returncode for node in nodes] == [1, 1], [node.stderr[-2000:] for node in nodes]
    refused = "'abc' is not a valid integer"
    assert refused in nodes[1].stderr, nodes[1].stderr[-2000:]
    assert re.search(r"rank \d could not start: Invalid value for '--max_iters' / '--max-iters': " + refused,
                     nodes[0].stderr), \
        nodes[0].stderr[-3000:]


@pytest.mark.slow
def test_under_max_restarts_a_node_that_cannot_start_stops_the_other(dataset, tmp_path):
    """torchrun --max_restarts (with TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1, which its restarts
    need) shares no store with its ranks: a node whose rank could not start spent its restarts
    and ended, and the other node's rank waited in the process group for it (30 minutes). The
    ranks meet in rank 0's own store of the attempt: every attempt, and so every node, stops."""
    cmd = ["-m", "mypt.cli", "train", "--dataset_dir", str(dataset), "--model_name", "m", "--config_file", "tiny",
           "--device", "cpu", "--max_iters"]
    nodes = two_nodes(cmd + ["2"], tmp_path, timeout=150, second=cmd + ["abc"], torchrun=("--max_restarts", "1"),
                      env={"TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"})
    assert [node.returncode for node in nodes] == [1, 1], [node.stderr[-2000:] for node in nodes]
    assert "'abc' is not a valid integer" in nodes[1].stderr, nodes[1].stderr[-2000:]
    # (Rank 0, where the rendezvous put it on the failing node, may end before the other reads its store.)
    assert re.search(r"^Error: (rank \d could not start: Invalid value for '--max_iters' / '--max-iters': 'abc' is not "
                     r"a valid integer|rank 0 ended before every rank started)", nodes[0].stderr, re.M), \
        nodes[0].stderr[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize("case", ["its loaders", "its --eval_dataset_dir's metadata"])
def test_a_node_that_refuses_its_data_after_the_group_formed_stops_the_other(dataset, tmp_path, case):
    """Once the process group has formed each rank reads its node's copy of the data (the
    --eval_dataset_dir it compares by content with the other ranks', its loaders): a node whose
    copy was refused there stopped, and the other went on into the next collective, to die
    with gloo's traceback (with NCCL: wait out its timeout). Every rank learns it: the other
    node names that rank's error, each node once."""
    args = ["--dataset_dir", str(dataset), "--model_name", "m", "--config_file", "tiny", "--max_iters", "2",
            "--device", "cpu"]
    if case == "its loaders":
        script = tmp_path / "node.py"
        script.write_text("import sys\nimport mypt.train_command\nfrom mypt.errors import DataError\n"
                          "def refused(*args, **kwargs):\n"
                          "    raise DataError('--dataset_dir ds: shard_00000.bin cannot be read on this node')\n"
                          "if sys.argv[1] == 'refuses':\n    mypt.train_command._build_loaders = refused\n"
                          "from mypt.cli import main\nmain(['train', *sys.argv[2:]], prog_name='mypt')\n")
        nodes = two_nodes([str(script), "builds", *args], tmp_path, timeout=120,
                          second=[str(script), "refuses", *args])
    else:  # (the folder is there on both nodes: click's check of the flag passes)
        a, b = tmp_path / "a", tmp_path / "b"
        (a / "ev").mkdir(parents=True), (b / "ev").mkdir(parents=True)
        (a / "ev" / "dataset_metadata.json").write_bytes((dataset / "dataset_metadata.json").read_bytes())
        nodes = two_nodes(["-m", "mypt.cli", "train", *args, "--eval_dataset_dir", "ev"], [a, b], timeout=120)
    assert [node.returncode for node in nodes] == [1, 1], [node.stderr[-2000:] for node in nodes]
    refused = re.findall(r"^Error: (.*)", nodes[1].stderr, re.M)
    assert len(refused) == 1 and ("shard_00000.bin" in refused[0] if case == "its loaders"
                                  else "dataset_metadata.json" in refused[0]), nodes[1].stderr[-2000:]
    assert re.findall(r"^Error: .*", nodes[0].stderr, re.M) == [
        f"Error: rank {1 if 'Vocabulary size' in nodes[0].stdout else 0} could not start: {refused[0]} (so every "
        "rank stops: fix it on that node, then start every node again)"], nodes[0].stderr[-3000:]  # (rank 0 logs)
    assert "Connection closed by peer" not in nodes[0].stderr


# ---------------------------------------------------------------------------------------------
# Ranks launched without torchrun (conftest.ranks_by_hand): the waits that are not a collective's

def with_patch(patch: str, args: list[str]) -> list[str]:
    """The command of `mypt ARGS` with the Python lines `patch` run first (a fault or a slowness
    put into one rank)."""
    return [sys.executable, "-c", f"{patch}\nimport runpy, sys\nsys.argv = ['mypt', *{args!r}]\n"
                                  "runpy.run_module('mypt.cli', run_name='__main__')\n"]


def train_args(dataset: Path, *more: str) -> list[str]:
    return ["train", "--dataset_dir", str(dataset), "--model_name", "m", "--config_file", "tiny", "--device", "cpu",
            "--eval_interval", "3", "--eval_iters", "2", *more]


# Rank 0's save of the first checkpoint takes 20 s, writing a byte a second: what a large model's
# takes on slow storage.
SLOW_SAVE = ("import time, mypt.checkpoint\nreal = mypt.checkpoint.save\nslow = [20]\n"
             "def save(*a, **k):\n    end = time.monotonic() + (slow.pop() if slow else 0)\n"
             "    with open('slow-disk', 'ab', buffering=0) as disk:\n        while time.monotonic() < end:\n"
             "            disk.write(b'.')\n            time.sleep(1)\n    return real(*a, **k)\n"
             "mypt.checkpoint.save = save\n")


# Rank 0's save of the first checkpoint starts with one write() of 1 MiB into a pipe drained only
# after 20 s: a call whose bytes /proc counts only as it returns (safetensors writes a tensor in
# one write(); a close on NFS or a FUSE mount sends the whole file).
LONG_WRITE = ("import os, threading, time, mypt.checkpoint\nreal = mypt.checkpoint.save\nslow = [20]\n"
              "def drain(pipe, after):\n    time.sleep(after)\n    while os.read(pipe, 1 << 20):\n        pass\n"
              "def save(*a, **k):\n    if slow:\n        r, w = os.pipe()\n"
              "        threading.Thread(target=drain, args=(r, slow.pop()), daemon=True).start()\n"
              "        os.write(w, b'.' * (1 << 20))\n        os.close(w)\n    return real(*a, **k)\n"
              "mypt.checkpoint.save = save\n")


@pytest.mark.slow
@pytest.mark.parametrize("patch", [SLOW_SAVE, LONG_WRITE], ids=["slow writes", "one long write"])
def test_rank_0_saving_longer_than_dist_timeout_minutes_ends_no_rank(dataset, tmp_path, patch):
    """Under DDP rank 0 writes the checkpoint alone, and the other ranks waited for it in a
    collective bounded by --dist_timeout_minutes: an 84 GB checkpoint (a 7B model with AdamW) on
    network storage, slower than the timeout, ended the run at its first save. They wait for
    rank 0's save while it writes: a save of 20 s under a timeout of 15 s ends nothing (15 s: far
    past how far two sound ranks drift apart on a loaded machine), whether it writes a byte a
    second or spends the 20 s inside one write() whose bytes are counted only as it returns."""
    args = train_args(dataset, "--max_iters", "4", "--dist_timeout_minutes", "0.25")
    with ranks_by_hand([with_patch(patch, args), [sys.executable, "-m", "mypt.cli", *args]], tmp_path,
                       logs=tmp_path) as procs:
        for proc in procs:
            proc.wait(timeout=180)
    outs = [(tmp_path / f"rank{rank}.out").read_text() for rank in (0, 1)]
    assert [proc.returncode for proc in procs] == [0, 0], [out[-3000:] for out in outs]
    assert json.loads((tmp_path / "checkpoints/m/training_state.json").read_text())["step"] == 4
    assert "step 3: val" in outs[0] and outs[1].count("waiting for rank 0 to write the checkpoint") == 1


def stopped_in(module: str, name: str) -> str:
    """The patch that stops a rank (SIGSTOP: no sign of life) as it calls module.name."""
    return f"import os, signal, {module}\n{module}.{name} = lambda *a, **k: os.kill(os.getpid(), signal.SIGSTOP)\n"


def other_rank_when_one_stops(stopped: int, patch: str, dataset: Path, tmp_path: Path) -> str:
    """Two ranks train to step 4 under a 15 s --dist_timeout_minutes; rank `stopped` runs with
    `patch`, which stops it. The other rank's output, once it ended with status 1 and no traceback."""
    args = train_args(dataset, "--max_iters", "4", "--dist_timeout_minutes", "0.25")
    plain, other = [sys.executable, "-m", "mypt.cli", *args], 1 - stopped
    with ranks_by_hand([with_patch(patch, args) if rank == stopped else plain for rank in (0, 1)], tmp_path,
                       logs=tmp_path) as procs:
        procs[other].wait(timeout=180)
    out = (tmp_path / f"rank{other}.out").read_text()
    assert procs[other].returncode == 1 and "Traceback" not in out, out[-3000:]
    return out


# Rank 0's save waits for good in its main thread, reading and writing nothing, while its other
# threads live on (a futex wait, outside any read or write call): a stuck GPU copy.
STALLED_SAVE = "import threading, mypt.checkpoint\nmypt.checkpoint.save = lambda *a, **k: threading.Event().wait()\n"
# Rank 0's save stuck for good inside one write() (a pipe never drained: a hung mount), with the
# time a write may take unseen cut from 6 timeouts to 1 (an hour and 10 minutes by default).
STUCK_WRITE = ("import os, mypt.checkpoint, mypt.distributed\nmypt.distributed._IN_CALL_TIMEOUTS = 1\n"
               "def save(*a, **k):\n    r, w = os.pipe()\n    os.write(w, b'.' * (1 << 20))\n"
               "mypt.checkpoint.save = save\n")


@pytest.mark.slow
@pytest.mark.parametrize("patch", [stopped_in("mypt.checkpoint", "save"), STALLED_SAVE, STUCK_WRITE],
                         ids=["stopped", "stalled", "stuck in a write"])
def test_rank_0_stopped_in_its_save_ends_the_other_ranks_within_dist_timeout_minutes(dataset, tmp_path, patch):
    """The other side of that wait: rank 0 stopped (SIGSTOP: no sign of life) as it saves, or
    whose save stalls with its process alive (the rank waiting for it waited for good), ends the
    rank waiting for it within --dist_timeout_minutes, in one line naming the timeout; one stuck
    inside a write() ends it too, _IN_CALL_TIMEOUTS timeouts later."""
    out = other_rank_when_one_stops(0, patch, dataset, tmp_path)
    assert re.findall(r"^Error: rank 1: another rank did not take part in the vote or save after step 3 within "
                      r"--dist_timeout_minutes 0.25 \(Timed out waiting 15000ms for rank 0's save to end: it read or "
                      r"wrote nothing in that time \(nor in [16]x that inside a write or close\), or its process "
                      r"stopped\): a rank that hangs .* saving nothing; no checkpoint was written: start the run "
                      r"again$", out, re.M), out[-3000:]


@pytest.mark.slow
def test_a_rank_lost_as_the_ranks_agree_on_a_save_leaves_rank_0_naming_the_checkpoint_it_wrote(dataset, tmp_path):
    """Rank 1 stopped as the ranks agree on the step-3 save, after rank 0 wrote it whole: rank 0
    ends within --dist_timeout_minutes naming that checkpoint and --resume, not 'no checkpoint was
    written: start the run again' (which would send a user back to step 0)."""
    out = other_rank_when_one_stops(1, stopped_in("mypt.train", "rank_0_saved"), dataset, tmp_path)
    assert re.findall(r"^Error: rank 0: another rank did not take part in the vote or save after step 3 within "
                      r"--dist_timeout_minutes 0.25 .* the last checkpoint \(step 3\) is in checkpoints/m: continue "
                      r"from it with --resume$", out, re.M), out[-3000:]
    assert json.loads((tmp_path / "checkpoints/m/training_state.json").read_text())["step"] == 3


@pytest.mark.slow
def test_a_rank_launched_by_hand_refused_by_its_flags_says_so_without_a_rank_0(tmp_path):
    """A rank refused by its own flags tells the others in rank 0's store first: with no rank 0
    started (a typo at one terminal), it tried to reach the store for the 30 minutes a start may
    take, in a connect that takes no Ctrl-C, saying nothing. It tries only _STORE_WAIT_S (patched
    to 2 s here), then says its error."""
    patch = "import mypt.distributed\nmypt.distributed._STORE_WAIT_S = 2\n"
    rank1 = subprocess.run(with_patch(patch, ["train", "--dataset_dir", str(tmp_path / "nothere"), "--model_name",
                                              "m", "--device", "cpu"]),
                           cwd=tmp_path, env=by_hand_env(1, free_port()), capture_output=True, text=True, timeout=60)
    assert rank1.returncode == 1 and re.search(r"^Error: --dataset_dir .*nothere: no directory", rank1.stderr,
                                               re.M), rank1.stderr[-2000:]


# Rank 1 says when it starts to reach rank 0's store, and gives up on it after 1 s where it
# waits as long as under torchrun (_STORE_WAIT_S): a launch of its own waits as long as for any
# rank to start.
CONNECT_SAID = ("import mypt.distributed\nreal = mypt.distributed._start_store\n"
                "def said(*a, **k):\n    print('connecting', flush=True)\n    return real(*a, **k)\n"
                "mypt.distributed._start_store = said\nmypt.distributed._STORE_WAIT_S = 1\n")


@contextlib.contextmanager
def rank_1_connecting(args: list[str], tmp_path: Path, port: int):
    """Rank 1 of `mypt ARGS` launched by hand, once it reaches for rank 0's store (killed if still
    running as the block ends); its output in tmp_path/rank1.out."""
    # (SIGINT as a terminal leaves it: a test run in the background of a shell has it ignored, inherited)
    with own_session(with_patch(CONNECT_SAID, args), cwd=tmp_path, stdout=(tmp_path / "rank1.out").open("w"),
                     stderr=subprocess.STDOUT, env=by_hand_env(1, port),
                     preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)) as rank1:
        deadline = time.monotonic() + 120
        while "connecting" not in (tmp_path / "rank1.out").read_text() and rank1.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        yield rank1


@pytest.mark.slow
def test_ranks_launched_by_hand_wait_for_a_rank_0_started_late(dataset, tmp_path):
    """Launched without torchrun (a cluster's script, a user at two terminals) nothing starts the
    ranks together: rank 1 waited a minute for rank 0's store, then failed ('rank 0 ... was not
    started within 60 s'). It waits as long as for every rank to start (30 minutes); here rank 0
    starts after rank 1's wait, patched to 1 s, would have ended."""
    port, args = free_port(), train_args(dataset, "--max_iters", "2")
    with rank_1_connecting(args, tmp_path, port) as rank1:
        time.sleep(3)  # (rank 0 later than rank 1's patched wait)
        with own_session([sys.executable, "-m", "mypt.cli", *args], cwd=tmp_path,
                         stdout=(tmp_path / "rank0.out").open("w"), stderr=subprocess.STDOUT,
                         env=by_hand_env(0, port)) as rank0:
            for proc in (rank0, rank1):
                proc.wait(timeout=180)
    outs = [(tmp_path / f"rank{rank}.out").read_text() for rank in (0, 1)]
    assert [rank0.returncode, rank1.returncode] == [0, 0], [out[-3000:] for out in outs]
    assert "step 2: val" in outs[0]


@pytest.mark.slow
def test_a_ctrl_c_ends_a_rank_launched_by_hand_waiting_for_its_rank_0(dataset, tmp_path):
    """A rank launched by hand waits up to 30 minutes for rank 0's store: in TCPStore's connect,
    which runs no signal handler, a Ctrl-C did nothing for that long. It says Aborted! at once."""
    # The port held bound, never listening: a connect to it is refused, and no other test's store
    # can take it meanwhile (rank 1 would then connect to that store and wait in C++).
    with socket.socket() as held:
        held.bind(("127.0.0.1", free_port()))
        with rank_1_connecting(train_args(dataset, "--max_iters", "2"), tmp_path, held.getsockname()[1]) as rank1:
            time.sleep(5)  # (into the connect: TCPStore takes a Ctrl-C in its first tries)
            rank1.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                rank1.wait(timeout=30)
            out = (tmp_path / "rank1.out").read_text()
            assert rank1.returncode not in (None, 0), out[-3000:]
    assert out.rstrip().endswith("Aborted!") and "Traceback" not in out, out[-3000:]


@pytest.mark.slow
def test_a_rank_launched_by_hand_whose_rank_0_never_starts_says_so(dataset, tmp_path):
    """The bound of that wait, patched to 3 s: rank 1 says rank 0 was not started within it."""
    patch = "import mypt.distributed\nmypt.distributed._START_TIMEOUT_S = 3\n"
    done = run_in_session(with_patch(patch, train_args(dataset, "--max_iters", "2")), tmp_path, timeout=120,
                          env=by_hand_env(1, free_port()))
    assert done.returncode == 1, done.stderr[-3000:]
    assert re.findall(r"^Error: rank 0 ended before every rank started, or was not started within 0\.05 minutes "
                      r"\(its store at 127\.0\.0\.1:\d+: .*\): see its node's log for why, then start every node "
                      r"again$", done.stderr, re.M), done.stderr[-3000:]


@pytest.mark.parametrize("torchrun", [False, True])
def test_a_rank_lost_before_step_1_says_to_run_the_same_command_again(monkeypatch, torchrun):
    """Before step 1 nothing was written: the same command (a resume's --resume kept) starts it
    again, and torchrun's restarts are named only where torchrun launched the ranks."""
    from mypt.distributed import Dist, before_training
    from mypt.errors import TrainingStopped

    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    if torchrun:
        monkeypatch.setenv("TORCHELASTIC_RUN_ID", "test")
    with pytest.raises(TrainingStopped) as stopped:
        with before_training(Dist(rank=1, world_size=2), "DDP's start"):
            raise RuntimeError("Connection closed by peer [127.0.0.1]:4000")
    said = str(stopped.value)
    assert said.startswith("rank 1: another rank's process ended during DDP's start (Connection closed by peer "), said
    assert said.endswith("; nothing was trained yet: run the same command again" + (
        " (torchrun --max_restarts with --auto_resume does it by itself)" if torchrun else "")), said
