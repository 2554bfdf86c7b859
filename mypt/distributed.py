"""DDP and FSDP under torchrun: the process group, the model inside its wrappers, and the ranks
agreeing on when to stop and save (so that every rank's collectives meet)."""

from __future__ import annotations

import atexit
import collections
import contextlib
import hashlib
import json
import os
import pickle
import re
import socket
import sys
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Iterator

import torch

from mypt.errors import ConfigError, MyptError, TrainingStopped, error_line


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    timeout: timedelta | None = None  # how long a collective waits for every rank (None: torch's default)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: torch.device, timeout_minutes: float | None = None) -> Dist:
    """Join the torchrun process group when WORLD_SIZE > 1 (NCCL on GPU, gloo on CPU), once
    every rank has started (see _wait_for_every_rank). `timeout_minutes` (--dist_timeout_minutes):
    how long a collective waits for a rank that does not come (see collective_timed_out); None:
    torch's default (30 minutes for gloo, 10 for NCCL)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist()
    import torch.distributed as dist

    timeout = None if timeout_minutes is None else timedelta(minutes=timeout_minutes)
    if not dist.is_initialized():
        _wait_for_every_rank(world)
        backend = "nccl" if device.type == "cuda" else "gloo"
        if _own_store():
            store = _start_store()
            # The process group keeps the store's timeout for its own waits (gloo's connections
            # at its start): its own from here on, not the start's (see _connect_wait_s).
            store.set_timeout(timeout or dist.default_pg_timeout)
            # (the group's keys apart from mypt's, as init_process_group keeps those of a store it makes)
            dist.init_process_group(backend, store=dist.PrefixStore("default_pg", store),
                                    rank=int(os.environ["RANK"]), world_size=world, timeout=timeout)
        else:
            dist.init_process_group(backend=backend, timeout=timeout)
    ranks = Dist(dist.get_rank(), world, int(os.environ.get("LOCAL_RANK", "0")), timeout)
    if ranks.is_main:
        _start_beat(ranks)
    return ranks


# Start-up, before the process group: a rank whose checks fail (its node has no --dataset_dir,
# rank 0 finds the checkpoint locked by another run) exits, and the others would wait in
# init_process_group for it until its timeout (30 minutes). So each rank says, in a store every
# rank reaches, that it is ready or why it cannot start, and each waits for all to be ready
# before joining. The store is the one torchrun's agent hosts; where torchrun shares none with
# its ranks (TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1, what --max_restarts needs: restart_warning),
# and in a launch other than torchrun's (MASTER_ADDR, RANK, WORLD_SIZE set by hand or a
# cluster's script), the attempt's own at MASTER_ADDR:MASTER_PORT, which rank 0 hosts from its
# start (host_start_store) and the process group then forms in: a new one each attempt. (Off
# under --max_restarts with the agent's store: it outlives an attempt, and each node's agent
# counts its own restarts, so no key would be the attempt's.) Rank 0, whose process the store
# lives in, keeps it up at its exit until every rank has learnt why the start failed
# (_keep_store_up): the others read it only once their own checks are done.
_READY, _FAILED, _STOPPED = "mypt/start/ready", "mypt/start/failed", "mypt/start/stopped"
_START_TIMEOUT_S = 1800
# How long a rank tries to reach rank 0's store under torchrun, which starts the ranks together
# (see _connect_wait_s), and rank 0 keeps it up for the ranks that have not yet read a failed
# start: a minute is far past their skew.
_STORE_WAIT_S = 60
# How long a rank waits for the start store to answer a claim of its error (_first_on_node): one
# in a stopped rank 0's process never does, and the rank says its error.
_STORE_ANSWER_S = 10
_stopped = False  # this process counted itself among the ranks that know the start failed
_joined = False  # this process counted itself ready: from then on the others no longer look
_told = False  # this process told its failure (run_training, then its command, may both try)
_store = None  # this process's client of the start store, once it has one (None: not yet, or none there)
_unreachable = None  # why the start store could not be reached, once tried (a second try would wait as long again)
_says: bool | None = None  # whether this rank says its error, where deciding it came with telling or learning it


def restart_warning() -> str | None:
    """What rank 0 says at the start of a run under `torchrun --max_restarts N` whose restarts
    would fail: torch (2.5 on) shares the rendezvous store with the process group, and a
    restarted attempt read the last attempt's addresses (gloo: `connectFullMesh failed ...
    Connection refused`; pytorch issue 135712), unless torchrun runs with
    TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1."""
    restarts = os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0")
    if restarts == "0" or os.environ.get("TORCH_DISABLE_SHARE_RDZV_TCP_STORE") == "1":
        return None
    return (f"warning: torchrun --max_restarts {restarts}: a restart fails to connect its ranks (torch's store keeps "
            "the last attempt's addresses, pytorch issue 135712) unless torchrun runs with "
            "TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1: start it as `TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 torchrun ...`")


def _own_store() -> bool:
    """Whether the ranks meet in the attempt's own store, rank 0's: under torchrun where its agent
    shares no store with them, and in a launch other than torchrun's (RANK, WORLD_SIZE,
    MASTER_ADDR and MASTER_PORT set by hand or by a cluster's script), where no agent stops the
    other ranks when one exits."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or "MASTER_ADDR" not in os.environ:
        return False
    return not os.environ.get("TORCHELASTIC_RUN_ID") or os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "False"


def host_start_store() -> None:
    """Rank 0, first thing, where the ranks meet in the attempt's own store: host it, so that a
    rank that fails before rank 0 has finished its checks can tell it."""
    if _own_store() and os.environ.get("RANK") == "0":
        _start_store()


def has_start_store() -> bool:
    """Whether the ranks meet in a start store (see _start_store), where a rank learns another's
    refusal to start; without one, each rank must check for itself what it can."""
    agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True" and \
        os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0") == "0"
    return "MASTER_ADDR" in os.environ and (_own_store() or agent)


def _start_store(wait_s: int | None = None):
    """A client of the store the ranks meet in before the process group (rank 0's own: the
    store itself), or None where there is none (torchrun --max_restarts with its agent's store:
    see has_start_store). `wait_s`: how long to try to reach it (default _connect_wait_s)."""
    global _store, _unreachable
    own = _own_store()
    if not has_start_store():
        return None
    if _unreachable is not None:
        raise _unreachable
    if _store is None:
        from torch.distributed import TCPStore

        host = own and os.environ.get("RANK") == "0"
        address, port, wait_s = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), wait_s or _connect_wait_s()
        try:
            if not host:
                _reach(address, port, wait_s)
            _store = TCPStore(address, port, is_master=host, wait_for_workers=False, timeout=timedelta(seconds=wait_s))
        except Exception as e:
            _unreachable = e
            raise
        if host:
            atexit.register(_keep_store_up, _store, int(os.environ["WORLD_SIZE"]))
    return _store


def _reach(address: str, port: int, wait_s: float) -> None:
    """Wait until something listens at address:port (rank 0's store, or torchrun's), up to
    `wait_s`, in short tries from Python: TCPStore's own connect retries in C++ for its whole
    timeout (30 minutes in a launch by hand) and runs no signal handler meanwhile, so a Ctrl-C
    or a SIGTERM at a rank whose rank 0 was never started did nothing for that long. Raises as
    TCPStore does (torch's DistNetworkError) where nothing answered."""
    from torch.distributed import DistNetworkError

    deadline = time.monotonic() + wait_s
    while True:
        try:
            with socket.create_connection((address, port), timeout=min(1.0, wait_s)):
                return  # (TCPStore then connects at once; a probe's closed connection is nothing to the store)
        except OSError as e:
            if time.monotonic() >= deadline:
                raise DistNetworkError(f"no answer within {wait_s:g} s ({e.strerror or e})") from None
        time.sleep(0.5)  # (a Ctrl-C here, or in the connect, raises KeyboardInterrupt: click's Aborted!)


def _connect_wait_s() -> int:
    """How long a rank tries to reach the start store: under torchrun, which started every rank
    (and hosts its store) together, _STORE_WAIT_S, past which rank 0 has ended; in a launch of
    its own (a cluster's script, a user at two terminals), as long as it waits for every rank to
    start (_START_TIMEOUT_S): nothing started rank 0 with it."""
    return _STORE_WAIT_S if os.environ.get("TORCHELASTIC_RUN_ID") else _START_TIMEOUT_S


def _stopping(store) -> None:
    """This rank stops before the process group formed, knowing why (its own failure told, or
    another's learnt): counted once, so that rank 0 may end (_keep_store_up)."""
    global _stopped
    if not _stopped:
        _stopped = True
        store.add(_STOPPED, 1)


def _keep_store_up(store, world: int) -> None:
    """Rank 0, as its process exits: where the start failed, its store, the one place the other
    ranks learn why, stays up until every rank has read it, or _STORE_WAIT_S (a rank killed
    before it could look never will; one that looks later finds rank 0 ended, and says so)."""
    if not store.check([_FAILED]):
        return
    _stopping(store)
    started, told = time.monotonic(), False
    while (stopped := store.add(_STOPPED, 0)) < world and time.monotonic() < started + _STORE_WAIT_S:
        if not told and time.monotonic() > started + 2:  # (the others read it at once unless still checking)
            print(f"rank 0: waiting up to {_STORE_WAIT_S} s for the other ranks to learn why the start failed "
                  f"({stopped} of {world} have): they read it once their own checks are done", file=sys.stderr,
                  flush=True)
            told = True
        time.sleep(0.05)


def _first_on_node(line: str) -> bool:
    """Whether this rank is the first of its node to stop with the error `line`, claimed in the
    start store; True where there is none (each rank says its own)."""
    me = os.environ.get("RANK", "?")
    node = os.environ.get("GROUP_RANK") or socket.gethostname()  # (torchrun's number of the node, else its name)
    key = f"mypt/said/{node}/{hashlib.sha256(line.encode()).hexdigest()}"
    try:
        store = _start_store(_STORE_WAIT_S)  # (a rank telling its own error: see tell_ranks_start_failed)
        return store is None or _answer(lambda: store.compare_set(key, "", me), _STORE_ANSWER_S).decode() == me
    except Exception:  # (the store gone, torchrun or rank 0 ended, or stopped: say it)
        return True


def says_error(message: str) -> bool:
    """Whether this rank prints `message`, the error it stops with: under torchrun the first rank
    of its node to stop with that error says it, the others exit quietly (one line a node, not
    one a rank: 8 on a node of 8 GPUs). A start-up failure is one error on its node wherever it is
    said: the failing rank's own message, or another rank's `rank R could not start: ...`.
    Decided in the start store; always True once the store is gone (torchrun or rank 0 ended)
    or where there is none (--max_restarts with the agent's store: each rank says its own).
    Who prints on a node has three rules: this one for errors, mypt.signals.stop_said_here for
    a stop by a signal, mypt.options._leave_quietly for the commands of one process."""
    if _says is not None:
        return _says
    # (Never connected: not now, at the end, where the agent may be gone.)
    return _store is None or _first_on_node(message)


def _could_not_start(rank, line: str) -> ConfigError:
    """The error a rank stops with when rank `rank` could not start (`line`: its error), said on
    this node unless another rank of it said that error first (the failing rank, on its own)."""
    global _says
    _says = _first_on_node(line)
    return ConfigError(f"rank {rank} could not start: {line} (so every rank stops: fix it on that node, then start "
                       "every node again)")


def _wait_for_every_rank(world: int) -> None:
    try:
        _wait_in_store(world)
    except RuntimeError as e:  # (torch's DistError: rank 0's own store gone, or never up)
        if not _own_store():
            raise
        # (Outside torchrun nothing started the ranks together: rank 0 may not have been started at all.)
        unstarted = "" if os.environ.get("TORCHELASTIC_RUN_ID") else \
            f", or was not started within {_connect_wait_s() / 60:g} minutes"
        raise ConfigError(f"rank 0 ended before every rank started{unstarted} (its store at "
                          f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}: {error_line(e).splitlines()[0]}): "
                          "see its node's log for why, then start every node again") from None


def _wait_in_store(world: int) -> None:
    global _joined
    store = _start_store()
    if store is None:
        return
    store.add(_READY, 1)
    _joined = True
    told, started, pause = False, time.monotonic(), 0.05
    while True:
        if store.check([_FAILED]):
            error = _could_not_start(*json.loads(store.get(_FAILED)))
            _stopping(store)  # (after _could_not_start has claimed the line or not: rank 0 may end now)
            raise error
        ready = store.add(_READY, 0)
        if ready >= world:
            return
        waited = time.monotonic() - started
        if waited > _START_TIMEOUT_S:  # (a rank killed before it could tell: the process group's own wait)
            raise ConfigError(f"only {ready} of {world} ranks started in {_START_TIMEOUT_S // 60} minutes: "
                              "see the other nodes' logs for why, then start every node again")
        if not told and waited > 60 and os.environ.get("RANK") == "0":
            print(f"waiting for the other ranks to start: {ready} of {world} ready", flush=True)
            told = True
        # Backing off to 2 s: a thousand ranks polling the start store every 0.2 s would be
        # ten thousand requests a second to one process.
        time.sleep(pause)
        pause = min(2.0, pause * 1.5)


def tell_ranks_start_failed(error: BaseException) -> None:
    """Under torchrun, before this rank joined: tell the others why it cannot start, so they
    stop with it (the first failure told is the one they name)."""
    global _told, _says
    if _joined or _told or int(os.environ.get("WORLD_SIZE", "1")) == 1 or not isinstance(error, Exception):
        return
    _told = True
    try:
        # (Only _STORE_WAIT_S to reach rank 0's store: a rank refused by its own flags, with no
        # rank 0 started, would say nothing for 30 minutes.)
        store = _start_store(_STORE_WAIT_S)
        if store is not None:
            line = error_line(error)
            _says = _first_on_node(line)  # (before the others can learn it: this rank says it on its node)
            store.compare_set(_FAILED, "", json.dumps([os.environ.get("RANK", "?"), line]))
            _stopping(store)
    except Exception:  # (the store gone: the others have ended already)
        pass


@contextlib.contextmanager
def built_on_every_rank(group) -> Iterator[None]:
    """Start-up work each rank does on its own once the process group has formed (its loaders,
    from its node's copy of the data), after which every rank learns whether all did it: a rank
    that refused raises its error, the others `rank R could not start: ...`, where they would go
    on into the first collective of training, there to fail with gloo's traceback (`Connection
    closed by peer`) or, with NCCL, to wait out its timeout."""
    global _says
    failure = None
    try:
        yield
    except (MyptError, OSError) as e:
        if group is None:
            raise
        failure = e
        _says = _first_on_node(error_line(e))  # (before the others learn it: this rank says it on its node)
    if group is None:
        return
    lines = all_ranks(None if failure is None else error_line(failure), group)
    if failure is not None:
        raise failure
    for rank, line in enumerate(lines):
        if line is not None:
            raise _could_not_start(rank, line)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model itself, inside its DDP (`.module`) and torch.compile (`._orig_mod`) wrappers:
    the one whose parameters and state_dict keys are the checkpoint's."""
    raw = model.module if hasattr(model, "module") else model
    return getattr(raw, "_orig_mod", raw)


def sync_gradients(model: torch.nn.Module, on: bool) -> None:
    """Whether the next backward all-reduces DDP's gradients: only on the last micro-step of
    gradient accumulation. FSDP reduce-scatters on every micro-step, on purpose: skipping it
    would keep every parameter's gradient whole on each rank until the last one (4 bytes a
    parameter, what sharding saves), while its all-gathers of the weights happen on every
    micro-step anyway."""
    if hasattr(model, "require_backward_grad_sync"):  # DDP
        model.require_backward_grad_sync = on


def cpu_group(dist: Dist):
    """The process group that agrees on stopping and saving: gloo, so that the flags are CPU
    tensors and agreeing on them every step never waits for the GPU."""
    if dist.world_size == 1:
        return None
    import torch.distributed as tdist

    if tdist.get_backend() == "gloo":
        return tdist.group.WORLD
    global _gloo  # one per process group: each new_group opens connections between all nodes
    if _gloo is None or _gloo[0] is not tdist.group.WORLD:
        # (The timeout given, or gloo's 30 minutes: a new group does not take the process group's.)
        _gloo = (tdist.group.WORLD, tdist.new_group(backend="gloo", timeout=dist.timeout))
    return _gloo[1]


_gloo = None  # (the process group, its gloo group)


# The save's wait. Under DDP rank 0 writes a checkpoint alone while the others wait for it: an
# 84 GB one (a 7B model with AdamW) written to network storage and hashed can take longer than
# --dist_timeout_minutes, which a collective's wait would end the run at. So the others wait for
# rank 0's "saved" in the process group's store, not in a collective, for as long as rank 0's
# save makes progress: a thread of rank 0's (_beat) counts in the store every few seconds while
# the thread writing the checkpoint (saving) has read or written a byte since it last looked, and
# outside a save, and while that thread is inside a read, write, close or fsync (_in_io_call):
# /proc counts a call's bytes only as it returns, and one call can be long in a sound save
# (safetensors writes each tensor in one write(), minutes for a large one on slow storage; a close
# on NFS or a FUSE mount such as gcsfuse or s3fs sends the whole file then). A rank 0 stopped
# (SIGSTOP) or ended, or whose save waits outside such calls (a stuck GPU copy, a futex: its
# process lives on), ends them within the timeout; one inside such calls with no byte counted for
# _IN_CALL_TIMEOUTS timeouts (a write stuck on a hung mount) ends them one timeout later; a save
# that goes on writing, however slowly, ends nothing. Its steps that read and write nothing (the
# weights copied to CPU memory, seconds even for a 7B model) must stay within the timeout. Where
# the bytes cannot be counted (no /proc: macOS), any sign of rank 0's process is taken as progress.
_saves = 0  # the saves this rank has come to the end of (every rank counts the same ones)
_beating = False
_writer: int | None = None  # the native id of the thread writing a checkpoint (saving), while it does


@contextlib.contextmanager
def saving() -> Iterator[None]:
    """The block in which this thread writes a checkpoint: on rank 0, while it runs, the ranks
    waiting for the save (rank_0_saved) get a sign of progress only when the block has read or
    written since the last one, or is inside a read, write or close (bounded: _IN_CALL_TIMEOUTS)."""
    global _writer
    _writer = threading.get_native_id()
    try:
        yield
    finally:
        _writer = None


def _bytes_moved(thread: int) -> int | None:
    """The bytes `thread` (a native id) has read and written (read/write calls: a file's, served
    from the page cache too), plus those this process has had read from or written to storage (a
    writer thread of torch's among them): /proc's counts, None where there are none. Not the
    process's read/write calls: its store's server answers the waiting ranks through them."""
    try:
        with open(f"/proc/self/task/{thread}/io") as f:
            mine = dict(line.split(": ") for line in f.read().splitlines())
        with open("/proc/self/io") as f:
            process = dict(line.split(": ") for line in f.read().splitlines())
        return int(mine["rchar"]) + int(mine["wchar"]) + int(process["read_bytes"]) + int(process["write_bytes"])
    except (OSError, KeyError, ValueError):
        return None


# The system calls, by number, in which a save's thread is writing though its bytes stand still:
# read, write, open, close, pread64, pwrite64, readv, writev, fsync, fdatasync, openat, and the
# ways a library moves bytes or sizes a file without them: sendfile, copy_file_range, preadv,
# pwritev, preadv2, pwritev2, fallocate, ftruncate, msync (an mmap's flush). Linux's tables:
# x86_64's (asm/unistd_64.h), and the generic one aarch64 uses (asm-generic/unistd.h). Not futex
# or poll: a thread waiting on another (a stuck GPU copy, threading's waits) is no write. Another
# machine: none (bytes only).
_IO_CALLS = {"x86_64": {0, 1, 2, 3, 17, 18, 19, 20, 74, 75, 257,
                        40, 326, 295, 296, 327, 328, 285, 77, 26},
             "aarch64": {63, 64, 57, 67, 68, 65, 66, 82, 83, 56,
                         71, 285, 69, 70, 286, 287, 47, 46, 227}}
# How many --dist_timeout_minutes a save's thread may spend inside those calls with no byte counted
# (a close sending 56 GB to NFS at 100 MB/s: 9 minutes), before it is taken as stuck (a hung mount):
# an hour at the default 10, after which the waiting ranks end one timeout later.
_IN_CALL_TIMEOUTS = 6


def _in_io_call(thread: int) -> bool:
    """Whether `thread` (a native id) is inside one of _IO_CALLS: the number that starts its /proc
    syscall file ('running' in user space, -1 blocked outside a call). False where /proc cannot say."""
    try:
        with open(f"/proc/self/task/{thread}/syscall") as f:
            return int(f.read().split()[0]) in _IO_CALLS.get(os.uname().machine, ())
    except (OSError, IndexError, ValueError):
        return False


def _key(name: str) -> str:
    # (Under torchrun --max_restarts: the attempt's own, where a store outlives an attempt.)
    return f"mypt/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}/{name}"


def _limit_s(dist: Dist) -> float:
    """The timeout, in seconds: --dist_timeout_minutes, else torch's default (gloo's, the group
    that agrees on saves: cpu_group)."""
    import torch.distributed as tdist

    return (dist.timeout or tdist.default_pg_timeout).total_seconds()


def _default_store():
    from torch.distributed.distributed_c10d import _get_default_store

    return _get_default_store()


def _start_beat(dist: Dist) -> None:
    """Rank 0: its sign of progress for the ranks that wait for its save (see rank_0_saved),
    looked for four times within the timeout, at most every 5 s (a thousand waiting ranks read
    it: the store is one process)."""
    global _beating
    if _beating:
        return
    _beating = True
    store, stop = _default_store(), threading.Event()
    store.add(_key("alive"), 1)
    every, in_call = min(5.0, _limit_s(dist) / 4), _limit_s(dist) * _IN_CALL_TIMEOUTS

    def beat() -> None:
        last, since = None, time.monotonic()  # (the writer's bytes when last looked, and since when)
        try:
            while not stop.wait(every):
                writer = _writer
                moved = None if writer is None else _bytes_moved(writer)
                if moved is None or moved != last:
                    last, since = moved, time.monotonic()
                    store.add(_key("alive"), 1)
                elif time.monotonic() - since < in_call and _in_io_call(writer):
                    store.add(_key("alive"), 1)
        except Exception:  # (the store gone: the run ends)
            pass

    thread = threading.Thread(target=beat, name="mypt-alive", daemon=True)
    thread.start()
    atexit.register(lambda: (stop.set(), thread.join(timeout=every + 1)))  # (not inside a store call at exit)


def rank_0_saved(dist: Dist) -> None:
    """Every rank at the end of a save, before the collective on its outcome (mypt.train's
    _agree_saved): rank 0 says its write is done, and each other rank waits for that in the
    store, unbounded by --dist_timeout_minutes while rank 0's save reads or writes, or is inside
    a read, write or close for up to _IN_CALL_TIMEOUTS timeouts (see _start_beat). Raises as a
    collective that timed out (collective_timed_out) where it did neither within the timeout. A
    store that is gone (torchrun's agent killed: the ranks live on, stopping at a checkpoint)
    leaves the outcome to the collective that follows, which also says a rank 0 that ended."""
    global _saves
    if dist.world_size == 1:
        return
    _saves += 1
    store, saved = _default_store(), _key(f"saved/{_saves}")
    if dist.is_main:
        with contextlib.suppress(Exception):  # (the store gone: see above)
            store.set(saved, "1")
        return
    limit, started, told = _limit_s(dist), time.monotonic(), False
    alive, seen, pause = -1, started, 0.01
    timed_out = RuntimeError(f"{_TIMED_OUT} {limit * 1000:.0f}ms for rank 0's save to end: it read or wrote "
                             f"nothing in that time (nor in {_IN_CALL_TIMEOUTS}x that inside a write or close), or "
                             "its process stopped")  # (lost_rank keeps 160 characters of it)
    while True:
        try:
            if _answer(lambda: store.check([saved]), seen + limit - time.monotonic()):
                return
            beat = _answer(lambda: store.add(_key("alive"), 0), seen + limit - time.monotonic())
        except TimeoutError:
            raise timed_out from None
        except Exception:  # (the store gone: see above)
            return
        now = time.monotonic()
        if beat != alive:
            alive, seen = beat, now
        elif now - seen > limit:
            raise timed_out
        if not told and now - started > limit and (dist.local_rank == 0 or dist.rank == 1):  # (once a node)
            print(f"rank {dist.rank}: waiting for rank 0 to write the checkpoint, {(now - started) / 60:.1f} "
                  f"minutes so far, longer than {_limit_words(dist)}: rank 0's save is still writing, so this "
                  "rank waits on (slow writes to the checkpoint's storage)", flush=True)
            told = True
        time.sleep(pause)
        pause = min(1.0, pause * 1.5)  # (a quick save ends within the first few reads)


def _answer(read, within: float):
    """read(), a call to a store, in a thread of its own: its result, or TimeoutError where it has
    not returned within `within` seconds. A store in a stopped process (rank 0's own, SIGSTOP)
    never answers, and torch's reads (check, add, compare_set) have no timeout: the thread is left
    to its read, a daemon, and ends with the process."""
    out: list = []

    def call() -> None:
        try:
            out.append((True, read()))
        except BaseException as e:  # (torch's DistError: the store gone)
            out.append((False, e))

    thread = threading.Thread(target=call, name="mypt-store-read", daemon=True)
    thread.start()
    thread.join(max(within, 0.0))
    if not out:
        raise TimeoutError(f"the store did not answer within {within:.0f} s")
    ok, value = out[0]
    if not ok:
        raise value
    return value

# The last collectives' work handles, held: a gloo worker thread that drops the last reference
# to a collective's tensors needs the GIL (torch keeps a tensor's Python object alive while C++
# holds it), and a gloo group's destructor joins those threads holding the GIL, so a rank whose
# worker had not yet let go of a collective of the last save (descheduled on a loaded CPU) hung
# there for good as the run ended (1 run in 8 with the CPU busy). With the handle held here, the
# worker's release frees nothing. 1,024 handles reach back far past what a worker thread lags.
_held: collections.deque = collections.deque(maxlen=1024)


def _collective(work) -> None:
    """Wait for an async collective's `work` and hold its handle (see _held)."""
    work.wait()
    _held.append(work)


def any_rank(flags: list[int], group) -> list[int]:
    """Each flag (a bool, or a whole number 0 for none), its largest over the ranks: set when
    it is set on any rank, so all ranks stop (and save) at the same step."""
    if group is None:
        return [int(f) for f in flags]
    import torch.distributed as tdist

    t = torch.tensor([int(f) for f in flags])
    _collective(tdist.all_reduce(t, op=tdist.ReduceOp.MAX, group=group, async_op=True))
    return t.tolist()


# What a collective raises when another rank's process has ended (a kill, the OOM killer, a lost
# node): gloo says it in a RuntimeError's text; torch's DistError subclasses say it by type.
_PEER_GONE = ("Connection reset by peer", "Connection closed by peer")


def peer_lost(e: BaseException) -> bool:
    """Whether `e` is a collective that failed because another rank's process ended."""
    import torch.distributed as tdist

    return isinstance(e, getattr(tdist, "DistNetworkError", ())) or \
        isinstance(e, RuntimeError) and any(text in str(e) for text in _PEER_GONE)


# What a collective raises when another rank did not take part within the process group's
# timeout (a stopped process, a stalled mount): gloo's receive gives up ("Timed out waiting
# 600000ms for recv operation to complete"), in the process group and in new groups given the
# timeout; under NCCL, torch's watchdog may end the process at that timeout first, with its own lines.
_TIMED_OUT = "Timed out waiting"


def collective_timed_out(e: BaseException) -> bool:
    """Whether `e` is a collective that gave up waiting for another rank (--dist_timeout_minutes)."""
    return isinstance(e, RuntimeError) and _TIMED_OUT in str(e)


def _limit_words(dist: Dist) -> str:
    return "torch's process-group timeout" if dist.timeout is None else \
        f"--dist_timeout_minutes {dist.timeout.total_seconds() / 60:g}"


def lost_rank(e: BaseException, dist: Dist, doing: str, left: str) -> TrainingStopped | None:
    """The one line a rank stops with where a collective of `doing` (what every rank was doing
    together) failed because another rank's process ended or hung past --dist_timeout_minutes:
    that rank's own log says why, and this rank's traceback (40 lines of a collective's
    internals) said nothing more. `left`: what the run leaves and how to go on. None where `e`
    is no such failure. One message for the training loop (mypt.train.fit) and the collectives
    before it (before_training)."""
    if dist.world_size == 1 or not (peer_lost(e) or collective_timed_out(e)):
        return None
    said = re.sub(r"^\[\S+:\d+\] ", "", str(e).splitlines()[0])  # (gloo's source file and line: no help)
    said = said if len(said) <= 160 else said[:160].rsplit(" ", 1)[0] + " ..."  # (not cut mid-word)
    if peer_lost(e):
        what = (f"another rank's process ended during {doing} ({said}): this rank stopped there, saving nothing; "
                "that rank's own log may say why (nothing, when a SIGKILL or the system's out-of-memory killer "
                "ended it)")
    else:
        what = (f"another rank did not take part in {doing} within {_limit_words(dist)} ({said}): a rank that hangs "
                "(a stopped process, a stalled mount, a stuck GPU) holds up every other, so this rank stopped there, "
                "saving nothing")
    # (torchrun's restarts only where torchrun launched the ranks)
    restarts = " (torchrun --max_restarts with --auto_resume does it by itself)" \
        if os.environ.get("TORCHELASTIC_RUN_ID") else ""
    return TrainingStopped(f"rank {dist.rank}: {what}; {left}{restarts}")


@contextlib.contextmanager
def before_training(dist: Dist, doing: str) -> Iterator[None]:
    """The collectives of `doing`, between the process group's start and the first step (the
    ranks' settings compared, a checkpoint's restore, DDP's first copy of the weights): a rank
    that ends or hangs there stops every other with lost_rank's line, as it does in training."""
    try:
        yield
    except RuntimeError as e:
        # (The same command: a resume's --resume kept, a fresh run's without --overwrite, nothing was written.)
        error = lost_rank(e, dist, doing, "nothing was trained yet: run the same command again")
        if error is None:
            raise
        raise error from None


def failed_and_mean(failed: bool, value: float, group) -> tuple[bool, float]:
    """One collective for a step: whether any rank failed, and `value`'s mean over the ranks
    (each rank's own; float64, so the mean of equal values is that value)."""
    if group is None:
        return failed, value
    import torch.distributed as tdist

    t = torch.tensor([float(failed), value], dtype=torch.float64)
    _collective(tdist.all_reduce(t, group=group, async_op=True))
    return bool(t[0] > 0), t[1].item() / tdist.get_world_size(group)


def all_ranks(obj, group) -> list:
    """[obj of rank 0, obj of rank 1, ...] on every rank: pickled, as all_gather_object does,
    through collectives whose handles are held (see _held; all_gather_object's are not)."""
    if group is None:
        return [obj]
    import torch.distributed as tdist

    ranks = tdist.get_world_size(group)
    data = torch.frombuffer(bytearray(pickle.dumps(obj)), dtype=torch.uint8)
    size, sizes = torch.tensor([data.numel()]), [torch.zeros(1, dtype=torch.long) for _ in range(ranks)]
    _collective(tdist.all_gather(sizes, size, group=group, async_op=True))
    padded = torch.zeros(max(int(n) for n in sizes), dtype=torch.uint8)
    padded[:data.numel()] = data
    out = [torch.empty_like(padded) for _ in range(ranks)]
    _collective(tdist.all_gather(out, padded, group=group, async_op=True))
    return [pickle.loads(o[:int(n)].numpy().tobytes()) for o, n in zip(out, sizes)]
