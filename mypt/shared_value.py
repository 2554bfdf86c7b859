"""A value every task of a map needs (`shared` of mypt.parallel.parallel_map: a tokenizer's
state, MBs for an hf tokenizer.json), in a worker process: sent once, not with each task (the
local engine's workers load it from a file, Ray's from the object store: mypt.ray_engine), then
kept for the map's other tasks there. Its own module: both engines use it, and neither imports
the other at load time."""

from __future__ import annotations

from typing import Any, Callable, TypeVar

T = TypeVar("T")
R = TypeVar("R")

_KEPT: dict[str, Any] = {}  # this process's last shared value, by its map's token


def with_shared(fn: Callable[[T, Any], R], where: Any, task: T) -> R:
    """fn(task, the shared value `where` locates), in a worker: `where` has a token, new for each
    map, and a load() (parallel's file, ray_engine's object reference). Loaded at the map's first
    task here, then kept (a worker runs one map at a time: the one before's is dropped), so a value
    kept is never another map's."""
    if where.token not in _KEPT:
        _KEPT.clear()
        _KEPT[where.token] = where.load()
    return fn(task, _KEPT[where.token])
