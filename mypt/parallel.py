"""Ordered parallel map over worker processes, with a progress bar.

Results come back in task order, and every task writes its own output, so the bytes
produced never depend on the number of workers.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.pool
import os
import sys
from collections import Counter
from typing import Callable, Iterable, Iterator, TypeVar

from tqdm import tqdm

T = TypeVar("T")
R = TypeVar("R")


def progress(total: int | None, desc: str, unit: str = "block") -> tqdm:
    # Shown on a terminal, silent in logs and tests (tqdm's disable=None).
    return tqdm(total=total, desc=desc, unit=unit, disable=None, file=sys.stderr, leave=False)


_SHARED: dict[int, multiprocessing.pool.Pool] = {}  # workers -> the pool of an open shared_pool block


@contextlib.contextmanager
def shared_pool(workers: int | None) -> Iterator[None]:
    """Inside the block, every parallel_map with this worker count runs in one pool, started
    on first use: prepare-dataset maps four times, and each fresh pool of spawned workers
    re-imports numpy and re-loads the tokenizer (about 0.5 s of CPU a worker)."""
    workers = workers or os.cpu_count() or 1
    if workers <= 1 or workers in _SHARED:
        yield
        return
    _SHARED[workers] = None
    try:
        yield
    finally:
        pool = _SHARED.pop(workers)
        if pool is not None:
            pool.terminate()
            pool.join()


def parallel_map(fn: Callable[[T], R], tasks: Iterable[T], workers: int | None, desc: str) -> list[R]:
    """fn over tasks in `workers` processes (None: all cores), results in task order."""
    tasks = list(tasks)
    workers = workers or os.cpu_count() or 1
    results: list[R] = []
    with progress(len(tasks), desc) as bar:
        if workers <= 1 or len(tasks) <= 1:
            for task in tasks:
                results.append(fn(task))
                bar.update()
            return results
        # Thousands of small files make thousands of tiny tasks: send them in chunks to cut
        # the per-task round trips, while keeping enough chunks to balance the workers.
        chunksize = max(1, len(tasks) // (workers * 32))
        with contextlib.ExitStack() as stack:
            if workers in _SHARED:
                if _SHARED[workers] is None:
                    _SHARED[workers] = _new_pool(workers)
                pool = _SHARED[workers]
            else:
                pool = stack.enter_context(_new_pool(min(workers, len(tasks))))
            for result in pool.imap(fn, tasks, chunksize=chunksize):
                results.append(result)
                bar.update()
    return results


def _new_pool(workers: int) -> multiprocessing.pool.Pool:
    # spawn, not fork: a forked tiktoken/torch runtime can deadlock in the child.
    return multiprocessing.get_context("spawn").Pool(workers)


def merge_counts(counters: Iterable[Counter]) -> Counter:
    """Sum of counters that keeps zero counts (Counter's + drops them, and metrics files
    should have the same keys whatever the data)."""
    total = Counter()
    for c in counters:
        total.update(c)
    return total
