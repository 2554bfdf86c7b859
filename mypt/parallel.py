"""Ordered parallel map over worker processes, with a progress bar.

Results come back in task order, and every task writes its own output, so the bytes
produced never depend on the number of workers.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections import Counter
from typing import Callable, Iterable, TypeVar

from tqdm import tqdm

T = TypeVar("T")
R = TypeVar("R")


def progress(total: int | None, desc: str, unit: str = "block") -> tqdm:
    # Shown on a terminal, silent in logs and tests (tqdm's disable=None).
    return tqdm(total=total, desc=desc, unit=unit, disable=None, file=sys.stderr, leave=False)


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
        # spawn, not fork: a forked tiktoken/torch runtime can deadlock in the child.
        ctx = multiprocessing.get_context("spawn")
        # Thousands of small files make thousands of tiny tasks: send them in chunks to cut
        # the per-task round trips, while keeping enough chunks to balance the workers.
        chunksize = max(1, len(tasks) // (workers * 32))
        with ctx.Pool(min(workers, len(tasks))) as pool:
            for result in pool.imap(fn, tasks, chunksize=chunksize):
                results.append(result)
                bar.update()
    return results


def merge_counts(counters: Iterable[Counter]) -> Counter:
    """Sum of counters that keeps zero counts (Counter's + drops them, and metrics files
    should have the same keys whatever the data)."""
    total = Counter()
    for c in counters:
        total.update(c)
    return total
