"""Ordered parallel map over worker processes or Ray tasks, with a progress bar.

Results come back in task order, and every task writes its own output, so the bytes
produced never depend on the number of workers, nor on the engine (local processes, or
Ray tasks on a cluster: mypt.ray_engine) nor on the order tasks finish in.

A value that every task of a map needs (`shared`: a tokenizer's state, MBs for an hf
tokenizer.json) goes to each worker once, not with each task: the local engine's workers
read it from a file the parent writes once a map (a worker of a shared pool, or one started
mid-map, finds it there whatever it ran before), Ray's get it from the object store
(mypt.ray_engine); each process keeps the last one it was given (mypt.shared_value).
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
import os
import pickle
import tempfile
import threading
import time
import traceback
import uuid
from collections import Counter
from concurrent.futures import InvalidStateError, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Iterable, Iterator, Protocol, TypeVar

from mypt.errors import MyptError
from mypt.progress import progress
from mypt.shared_value import with_shared
from mypt.signals import stops_held

T = TypeVar("T")
R = TypeVar("R")


class Parallelism(Protocol):
    """How a step's tasks run: the `workers`, `engine` and `ray_address` fields of its settings."""

    workers: int | None
    engine: str
    ray_address: str | None


def worker_count(how: Parallelism) -> int:
    """The worker processes (or Ray CPUs) a run uses: --workers, or one per core."""
    return how.workers or os.cpu_count() or 1


@contextlib.contextmanager
def engine_session(how: Parallelism) -> Iterator[None]:
    """Inside the block, every parallel_map of the ray engine uses one Ray connection (a local
    Ray started once for the whole block when no --ray_address is given): prepare-dataset
    maps four times, and a Ray start takes seconds. Nothing for the local engine."""
    if how.engine != "ray":
        yield
        return
    from mypt.ray_engine import ray_session

    with ray_session(how.ray_address, worker_count(how)):
        yield


class WorkerDied(MyptError):
    """A worker process of a parallel step ended without its task's result."""


_SHARED: dict[int, ProcessPoolExecutor | None] = {}  # workers -> the pool of an open shared_pool block


@contextlib.contextmanager
def shared_pool(how: Parallelism) -> Iterator[None]:
    """Inside the block, every parallel_map of the local engine with this worker count runs in
    one pool, started on first use: prepare-dataset maps four times, and each fresh pool of
    spawned workers re-imports numpy and re-loads the tokenizer (about 0.5 s of CPU a worker).
    The ray engine's workers are Ray's (engine_session)."""
    workers = worker_count(how)
    if how.engine != "local" or workers <= 1 or workers in _SHARED:
        yield
        return
    _SHARED[workers] = None
    failed = True
    try:
        yield
        failed = False
    finally:
        pool = _SHARED.pop(workers)
        if pool is not None:
            _close(pool, now=failed)


def parallel_map(fn: Callable[..., R], tasks: Iterable[T], how: Parallelism, desc: str,
                 shared: Any = None, shared_dir: os.PathLike | str | None = None) -> list[R]:
    """fn over tasks, results in task order: in `how.workers` processes (None: all cores), or
    as Ray tasks with engine ray. `fn` must be a module-level function (it is pickled by name).
    With `shared` (not None), fn is called as fn(task, shared), and `shared` is sent to each
    worker once, not with every task (the module's docstring), through a file in `shared_dir`:
    a folder of the step's own (its work folder, which a killed run's next run removes; not the
    system's temporary folder, where a kill -9 left MBs behind)."""
    if shared is not None and shared_dir is None:  # (checked on every path, not only where it is used)
        raise ValueError("parallel_map: a shared value needs a shared_dir of the step's own")
    tasks = list(tasks)
    workers = worker_count(how)
    results: list[R] = []
    with progress(len(tasks), desc) as bar:
        if how.engine == "ray":
            from mypt.ray_engine import ray_map

            return ray_map(fn, tasks, how.ray_address, workers, desc, bar.update, shared)
        if workers <= 1 or len(tasks) <= 1:
            for task in tasks:
                results.append(fn(task) if shared is None else fn(task, shared))
                bar.update()
            return results
        # Thousands of small files make thousands of tiny tasks: send them in chunks to cut
        # the per-task round trips, while keeping enough chunks to balance the workers.
        chunksize = max(1, len(tasks) // (workers * 32))
        pooled = workers in _SHARED
        if pooled and _SHARED[workers] is None:
            _SHARED[workers] = _new_pool(workers)
        pool = _SHARED[workers] if pooled else _new_pool(min(workers, len(tasks)))
        failed = True
        try:
            with _handed_over(shared, shared_dir) as given:
                call = functools.partial(_call, fn if given is None else functools.partial(with_shared, fn, given))
                # Ctrl-C reaches every process of the terminal's group, as a scheduler's SIGTERM of a
                # job's group does: each worker printed a KeyboardInterrupt traceback, or died before
                # the parent (whose executor then raced its own shutdown: an InvalidStateError
                # traceback), and a parent interrupted between starting a worker and sending it its
                # task left it one (EOFError). The workers started here inherit both blocked: the
                # parent alone stops, and kills them (_close). (The mask alone does not hold the
                # parent: another of its threads takes the signal, and Python raises it in the main
                # thread; so the handlers are swapped too.)
                with stops_held(mask=True):
                    done = pool.map(call, tasks, chunksize=chunksize)
                for result in done:
                    results.append(result)
                    bar.update()
            failed = False
        except BrokenProcessPool:
            raise WorkerDied(f"a worker process of the {desc} step died before it finished (killed by a signal, or "
                             "by the system when memory ran out): nothing was kept; run again (with fewer "
                             "--workers if memory is short)") from None
        finally:
            if not pooled:
                _close(pool, now=failed)
    return results


class _SharedFile:
    """Where a local map's shared value waits for its workers: its token and a file of its pickle."""

    def __init__(self, token: str, path: str):
        self.token, self.path = token, path

    def load(self) -> Any:
        with open(self.path, "rb") as f:
            return pickle.load(f)


@contextlib.contextmanager
def _handed_over(shared: Any, where: os.PathLike | str | None) -> Iterator[_SharedFile | None]:
    """`shared` pickled once into a file in folder `where` for the workers of one map (None:
    nothing shared), removed at the end of the map."""
    if shared is None:
        yield None
        return
    fd, path = tempfile.mkstemp(prefix=".shared-", suffix=".pickle", dir=where)
    try:
        with os.fdopen(fd, "wb") as f:
            pickle.dump(shared, f, protocol=pickle.HIGHEST_PROTOCOL)
        # (A token of its own: a later map's file may get this one's name once it is removed.)
        yield _SharedFile(uuid.uuid4().hex, path)
    finally:
        os.unlink(path)


def _call(fn: Callable[[T], R], task: T) -> R:
    """fn(task) in a worker, its error made one the parent can rebuild (rebuildable)."""
    try:
        return fn(task)
    except MyptError:
        raise
    except Exception as e:
        if (error := rebuildable(e)) is e:
            raise
        raise error from None


def rebuildable(error: BaseException) -> BaseException:
    """A child process's `error` (being handled) as one its parent can rebuild: itself, or where
    it does not survive pickling (another library's, with a constructor of its own: it broke
    the executor, and was reported as a dead worker) a RuntimeError that says the same."""
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}\n{traceback.format_exc()}")


def _new_pool(workers: int) -> ProcessPoolExecutor:
    # spawn, not fork: a forked tiktoken/torch runtime can deadlock in the child. An executor,
    # not multiprocessing.Pool: a worker that dies (the OOM killer, a kill) breaks it and the
    # map raises, where a Pool waits for the lost task for ever.
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=exit_with_parent, initargs=(os.getpid(),))


def exit_with_parent(parent: int) -> None:
    """A worker's initializer: the worker ends when its parent has (a kill -9 of mypt), where it
    would wait for its next task for ever, an orphan holding its memory."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(1)

    threading.Thread(target=watch, name="mypt-exit-with-parent", daemon=True).start()


def _close(pool: ProcessPoolExecutor, now: bool) -> None:
    """Shut the pool down; `now` (an error, Ctrl-C): its workers are stopped, not waited for."""
    if not now:
        pool.shutdown(wait=True, cancel_futures=True)
        return
    # The interrupted map cancelled the tasks not yet started; the executor's manager thread
    # then fails each pending task on seeing its workers killed, and before Python 3.12 raises
    # InvalidStateError on a cancelled one: a traceback after the stop's line (a Ctrl-C as the
    # workers started). Quiet for the shutdown, which joins that thread.
    hook = threading.excepthook

    def quiet(args) -> None:
        if not issubclass(args.exc_type, InvalidStateError):
            hook(args)

    threading.excepthook = quiet
    try:
        # (The executor's own process table.) Killed, not terminated: they hold SIGTERM
        # blocked (stops_held).
        for process in list((getattr(pool, "_processes", None) or {}).values()):
            process.kill()
        pool.shutdown(wait=True, cancel_futures=True)
    finally:
        threading.excepthook = hook


def merge_counts(counters: Iterable[Counter]) -> Counter:
    """Sum of counters that keeps zero counts (Counter's + drops them, and metrics files
    should have the same keys whatever the data)."""
    total = Counter()
    for c in counters:
        total.update(c)
    return total
