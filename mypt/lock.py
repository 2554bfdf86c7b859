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
from pathlib import Path
from typing import Iterator

from mypt.errors import BusyError


def lock_path(output: Path) -> Path:
    output = Path(output).resolve()  # `ds` and `./ds` are one output
    return output.parent / f".{output.name}.lock"


@contextlib.contextmanager
def output_lock(output: Path, flag: str) -> Iterator[None]:
    """Hold the lock of `output` for the block; BusyError (naming `flag` and the holder's pid)
    when another process holds it."""
    lock = lock_path(output)
    lock.parent.mkdir(parents=True, exist_ok=True)
    while True:
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
        if same_file:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        lock.unlink(missing_ok=True)  # while still held: see the check above
        os.close(fd)
