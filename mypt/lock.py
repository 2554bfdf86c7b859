"""One writer per output: a dataset directory or a checkpoint.

Two runs writing the same output would delete each other's work directories (`.NAME.work`,
`.NAME.partial`) and both die half-way. `output_lock` takes an exclusive flock on
`.NAME.lock` beside the output and writes the holder's pid into it, so a second run fails at
once and names the process. The kernel releases a flock when its process dies, so a lock
file left by a killed run never blocks anyone.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import stat
from pathlib import Path
from typing import Iterator

from mypt.errors import BusyError, InputError
from mypt.names import sibling


def _foreign(content: bytes) -> bool:
    """A lock file holds its holder's pid (or nothing yet): anything else is a user's file."""
    return not re.fullmatch(rb"\d*\n?", content)  # (a pid written part-way is still a lock's)


def _refuse_foreign(lock: Path, flag: str) -> None:
    """A file of the user's at the lock's name is neither written nor removed: its name is
    `.NAME.lock`, which a user may choose for a note of their own."""
    try:
        st = os.lstat(lock)
    except FileNotFoundError:
        return
    if not stat.S_ISREG(st.st_mode):
        foreign = True
    else:
        with open(lock, "rb") as f:
            foreign = _foreign(f.read(64))
    if foreign:
        raise InputError(f"{lock}: mypt locks {flag} with a file of this name, but this one is not mypt's "
                         "lock file: refused, nothing changed; move it elsewhere and run again")


def lock_path(output: Path) -> Path:
    return sibling(Path(output).resolve(), "lock")  # `ds`, `./ds` and a link to ds are one output


_held: dict[Path, int] = {}  # the locks this process holds, with their depth


@contextlib.contextmanager
def output_lock(output: Path, flag: str) -> Iterator[None]:
    """Hold the lock of `output` for the block; BusyError (naming `flag` and the holder's pid)
    when another process holds it. Re-entrant within a process: a checkpoint save takes the lock
    its training run already holds."""
    lock = lock_path(output)
    if lock in _held:
        _held[lock] += 1
        try:
            yield
        finally:
            _held[lock] -= 1
        return
    # The folders made for the lock go again with it when nothing else came to be in them: a run
    # refused after taking the lock leaves no empty `checkpoints/` behind.
    made = [p for p in (lock.parent, *lock.parent.parents) if not p.exists()]
    lock.parent.mkdir(parents=True, exist_ok=True)
    while True:
        _refuse_foreign(lock, flag)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            os.close(fd)
            raise BusyError(f"{output} is in use by process {holder or '(unknown)'} (lock file {lock}): "
                            f"wait for it to finish, or choose another {flag}") from None
        # The previous holder removes the file when it is done: a lock on the file it removed
        # guards nothing, so start again with the file now at that path.
        try:
            same_file = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same_file = False
        if same_file and not _foreign(os.pread(fd, 64, 0)):
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        _held[lock] = 1
        yield
    finally:
        _held.pop(lock, None)
        lock.unlink(missing_ok=True)  # while still held: see the check above
        os.close(fd)
        for folder in made:  # innermost first
            try:
                folder.rmdir()
            except OSError:  # not empty (the output is there), or gone: keep it
                break
