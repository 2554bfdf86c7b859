"""The ray engine of parallel_map (`--engine ray`): the data steps' work units as Ray tasks.

The same function runs on the same tasks as with the local engine's processes, and the
results are put back in task order, so the output is byte-identical whatever the shape of
the cluster and whatever order the tasks finish in. Ray is imported here only, and only when
the engine is ray (mypt.parallel imports this module inside the functions that need it).

Failures: Ray runs a task again (up to MAX_RETRIES times) when its worker or its node dies,
and when it raised an OSError (an NFS hiccup, a timeout): each task writes its own files
whole, from its inputs alone, so a second run of it writes the same bytes. A MyptError (a
user's mistake) is never retried: it would fail the same way again.

Storage: the tasks read the inputs and write their files themselves, so the inputs and the
output must be on storage that every node sees at the same path (NFS, Lustre, a shared
disk). Tasks run in the driver's working directory where their node has it, and must when
they name relative paths (prepare-dataset's own work directory is absolute).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import socket
import uuid
from pathlib import PurePath
from typing import Any, Callable, Iterator, Sequence

from mypt.errors import MyptError
from mypt.shared_value import with_shared

MAX_RETRIES = 3
TRANSIENT = [OSError]  # what a retry can mend (ConnectionError and TimeoutError are OSErrors)
CONNECT_TIMEOUT_S = 10
TASKS_PER_CPU = 2  # in flight per CPU of the cluster: a node has its next task queued when one ends
# The tasks exchange only small values (counts, paths), and a map's shared value (a tokenizer's
# state, MBs) is put once: a local Ray needs no more object store than this (its default takes
# 30% of the machine's memory, and warns when /dev/shm is smaller).
LOCAL_OBJECT_STORE_BYTES = 128 << 20


class EngineError(MyptError):
    """Ray not installed, a cluster that does not answer, a task lost for good."""


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise EngineError("--engine ray needs Ray, which is not installed: pip install 'mypt[ray]' "
                          "(or pass --engine local)") from None
    return ray


@contextlib.contextmanager
def ray_session(address: str | None, cpus: int) -> Iterator[None]:
    """Connected to Ray inside the block: to the cluster at `address`, else to a local Ray
    started with `cpus` CPUs and stopped at the end. A connection that is already open (a
    caller's own ray.init, or an enclosing session) is used as it is and left open."""
    ray = import_ray()
    if ray.is_initialized():
        yield
        return
    where = {"address": address} if address else \
        {"address": "local", "num_cpus": cpus, "object_store_memory": LOCAL_OBJECT_STORE_BYTES}
    try:
        _check_reachable(address)
        ray.init(**where, include_dashboard=False, logging_level=logging.WARNING)
    except ConnectionError as e:
        raise EngineError(f"--ray_address {address}: no Ray cluster answers there ({_first_line(e)}); start one "
                          "with `ray start --head` on its head node, or leave --ray_address out to start a local "
                          "Ray for the run") from None
    try:
        yield
    finally:
        ray.shutdown()


# The start of an HTTP/2 connection (the client preface, then an empty SETTINGS frame): Ray's
# GCS is a gRPC server, which answers it with a SETTINGS frame of its own (type 4, the 4th byte).
_HTTP2_HELLO = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])


def _check_reachable(address: str | None) -> None:
    """A HOST:PORT where no Ray cluster answers is a ConnectionError within seconds: ray.init
    itself keeps retrying for minutes, where nothing listens and where another server does (a
    web server, another service's port)."""
    host, _, port = (address or "").rpartition(":")
    if not host or not port.isdigit() or "://" in address:
        return  # a local Ray, `auto`, or a ray:// client address: Ray's own checks
    if host.startswith("[") and host.endswith("]"):  # an IPv6 address, [::1]:6379
        host = host[1:-1]
    silent = False
    try:
        with socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S) as conn:
            if os.environ.get("RAY_USE_TLS", "0") not in ("0", ""):
                return  # (a TLS handshake comes first: Ray's own checks)
            conn.sendall(_HTTP2_HELLO)
            answer = b""
            try:
                while len(answer) < 9 and (chunk := conn.recv(9 - len(answer))):
                    answer += chunk
            except TimeoutError:
                silent = not answer
            except OSError:  # (a reset: not gRPC either)
                pass
    except OSError as e:
        raise ConnectionError(e.strerror or str(e)) from None
    if silent:
        raise ConnectionError(f"a server accepted the connection but sent nothing in {CONNECT_TIMEOUT_S:g} s, where "
                              "Ray's answers at once")
    if len(answer) < 9 or answer[3] != 4:
        raise ConnectionError("a server listens there, but it does not speak gRPC as Ray's does")


def run_task(fn: Callable[[Any], Any], task: Any, cwd: str) -> Any:
    """One work unit on a Ray worker, in the driver's working directory `cwd` (a Ray worker
    starts wherever its node's Ray was started), so that relative paths, and the names of
    inputs in error messages (text.display_name), are the driver's. A node without that
    directory is an error only when the task names relative paths."""
    try:
        here = os.getcwd()
    except FileNotFoundError:  # a directory removed since the worker went there
        here = None
    if here != cwd:
        if os.path.isdir(cwd):
            os.chdir(cwd)
        elif has_relative_path(task):
            raise EngineError(f"the Ray node {socket.gethostname()} has no directory {cwd}, the working directory "
                              "that the task's relative paths are read against: put the inputs and the output on "
                              "storage every node sees at the same path")
    return fn(task)


def has_relative_path(obj: Any, depth: int = 3) -> bool:
    """Whether a task names a relative path (in its tuple, or an object's attributes in it)."""
    if isinstance(obj, PurePath):
        return not obj.is_absolute()
    if depth == 0 or isinstance(obj, (str, bytes, type)):
        return False
    if isinstance(obj, (tuple, list)):
        items = obj
    elif isinstance(obj, dict):
        items = obj.values()
    else:
        items = getattr(obj, "__dict__", {}).values()
    return any(has_relative_path(item, depth - 1) for item in items)


class SharedRef:
    """A map's shared value in Ray's object store, put there once by the driver: its token and
    its object reference, which each worker gets once (mypt.shared_value). The reference
    travels in a list: Ray would fetch and unpickle a task's top-level reference for every task."""

    def __init__(self, token: str, ref: Any):
        self.token, self.refs = token, [ref]

    def load(self) -> Any:
        return import_ray().get(self.refs[0])


def ray_map(fn: Callable[..., Any], tasks: Sequence[Any], address: str | None, workers: int, desc: str,
            advance: Callable[[], Any], shared: Any = None) -> list:
    """fn over tasks as Ray tasks (see the module's docstring), results in task order;
    `advance()` after each one that finishes. A failure raises the error of the earliest
    failed task in task order, as the local engine does, so the message does not depend on
    which task finished first. With `shared` (not None): fn(task, shared), `shared` put in the
    object store once (parallel_map)."""
    ray = import_ray()
    with ray_session(address, workers):
        if shared is not None:
            fn = functools.partial(with_shared, fn, SharedRef(uuid.uuid4().hex, ray.put(shared)))
        remote = ray.remote(run_task).options(max_retries=MAX_RETRIES, retry_exceptions=TRANSIENT,
                                              name=f"mypt {desc}")
        window = max(1, int(ray.cluster_resources().get("CPU", 1))) * TASKS_PER_CPU
        cwd, results, pending = os.getcwd(), [None] * len(tasks), {}
        todo, failed = iter(range(len(tasks))), None  # failed: (index, error) of the earliest failure
        while True:
            while failed is None and len(pending) < window and (i := next(todo, None)) is not None:
                pending[remote.remote(fn, tasks[i], cwd)] = i
            if not pending:
                break
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            i = pending.pop(ref)
            try:
                results[i] = ray.get(ref)
            except ray.exceptions.RayError as e:
                failed = (i, e) if failed is None or i < failed[0] else failed
                for later in [r for r, j in pending.items() if j > failed[0]]:  # their results are not needed
                    ray.cancel(later)
                    del pending[later]
                continue
            advance()
        if failed is not None:
            raise _task_error(ray, failed[1], desc)
    return results


def _task_error(ray: Any, e: Exception, desc: str) -> BaseException:
    """What a failed task raises in the driver: the task's own MyptError or OSError (a command
    prints it as one line), Ray's error with the task's traceback for anything else (a bug),
    an EngineError when Ray lost the task itself more often than it retries."""
    if isinstance(e, ray.exceptions.RayTaskError):
        return e.cause if isinstance(e.cause, (MyptError, OSError)) else e
    return EngineError(f"a Ray task of {desc} was lost {MAX_RETRIES + 1} times ({type(e).__name__}: "
                       f"{_first_line(e)}): check the cluster's nodes (`ray status`), then run the command again")


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]
