"""One writer per output: a dataset directory or a checkpoint.

Two runs writing the same output would delete each other's work directories (`.NAME.work`,
`.NAME.partial`) and both die half-way. `output_lock` takes an exclusive flock on
`.NAME.lock` beside the output and writes the holder's pid into it (`mypt lock of pid N`), so
a second run fails at once and names the process. The kernel releases a flock when its process dies, so a lock
file left by a killed run never blocks anyone.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import secrets
import stat
import time
from pathlib import Path
from typing import Iterator

from mypt.errors import BusyError, InputError, naming
from mypt.names import sibling


def _content() -> bytes:
    # Named as mypt's, not a bare number: a user's `.NAME.lock` holding only a number (a note, a
    # count) was taken for a lock a dead run left, and replaced.
    return f"mypt lock of pid {os.getpid()}\n".encode()


def _holder(content: bytes) -> str | None:
    """The pid a lock file of mypt's names; None for anything else (an empty file too: a user's)."""
    m = re.fullmatch(rb"mypt lock of pid (\d+)\n", content)
    return m[1].decode() if m else None


def _foreign(content: bytes) -> bool:
    """A lock file holds its holder's pid, written before the file takes the lock's name:
    anything else, an empty file too, is a user's."""
    return _holder(content) is None


def _locked_elsewhere(fd: int) -> bool:
    """Whether another process holds the flock of the open file `fd`."""
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    fcntl.flock(fd, fcntl.LOCK_UN)
    return False


def _busy(output: Path, lock: Path, flag: str, who: str) -> BusyError:
    return BusyError(f"{output} is in use by {who} (lock file {lock}): wait for it to finish, or choose another {flag}")


def _refuse_foreign(lock: Path, output: Path, flag: str) -> None:
    """A file of the user's at the lock's name is neither written nor removed: its name is
    `.NAME.lock`, which a user may choose for a note of their own."""
    try:
        st = os.lstat(lock)
    except FileNotFoundError:
        return
    older = False  # (a regular file holding a bare pid: the lock an older mypt wrote)
    if not stat.S_ISREG(st.st_mode):
        foreign = True
    else:
        try:
            f = open(lock, "rb")
        except FileNotFoundError:  # its holder removed it just now
            return
        with f:
            # Empty: a user's file, or a lock being made in place (_make_in_place: locked within
            # microseconds of its making, its pid next), which is busy. Looked at twice.
            for look in range(2):
                content = os.pread(f.fileno(), 64, 0)
                foreign = _foreign(content)
                if not foreign or content:
                    break
                if _locked_elsewhere(f.fileno()):
                    raise _busy(output, lock, flag, "another process")
                if look == 0:
                    time.sleep(0.05)
            older = foreign and re.fullmatch(rb"\d+\n", content) is not None
            if older and _locked_elsewhere(f.fileno()):  # (an older mypt, which wrote the bare pid, holds it now)
                raise _busy(output, lock, flag, f"process {content.decode().strip()}")
    if foreign:
        # (mypt before the lock named itself wrote the bare pid: such a file is a user's too, or the
        # lock of a killed run of an older mypt, which the user may remove.)
        hint = " (if it is a lock a killed run of an older mypt left, remove it)" if older else ""
        raise InputError(f"{lock}: mypt locks {flag} with a file of this name, but this one is not mypt's "
                         f"lock file: refused, nothing changed; move it elsewhere and run again{hint}")


def _take(lock: Path, output: Path, flag: str) -> int:
    """Make `lock` this process's and return its held fd. The lock file is locked and written (the
    pid) under a name of this process's (_own_file), then linked to the lock's name: a lock file is never
    seen empty, so an empty file there is a user's (refused, kept). A lock file a finished or
    killed run left is replaced by this one, atomically."""
    _remove_dead_takers(output.resolve())
    own, fd = _own_file(output, lock)

    def renew() -> None:  # own removed before it took the lock's name: a fresh one
        nonlocal own, fd
        os.close(fd)
        fd = -1  # (closed: the error path below closes only an open one)
        own, fd = _own_file(output, lock)

    try:
        while True:
            _refuse_foreign(lock, output, flag)
            try:
                os.link(own, lock)
                return fd
            except FileExistsError:
                pass
            except FileNotFoundError:  # own removed meanwhile (a user, or a reaper that misjudged it): a fresh one
                renew()
                continue
            except OSError as e:  # a filesystem without hard links (exFAT, some FUSE): made in place
                if e.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS):
                    raise
                made = _make_in_place(lock, output, flag)
                if made is not None:
                    os.close(fd)
                    return made
            try:
                old = os.open(lock, os.O_RDONLY)
            except FileNotFoundError:  # its holder removed it just now
                continue
            try:
                try:
                    fcntl.flock(old, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    holder = _holder(os.pread(old, 64, 0))
                    raise _busy(output, lock, flag, f"process {holder or '(unknown)'}") from None
                # Its holder removes the file when done: a lock on a file already removed guards
                # nothing, so look again at what is at the name now.
                try:
                    same_file = os.stat(lock).st_ino == os.fstat(old).st_ino
                except FileNotFoundError:
                    same_file = False
                if same_file and not _foreign(os.pread(old, 64, 0)):
                    try:
                        os.replace(own, lock)
                        return fd
                    except FileNotFoundError:  # own removed meanwhile, as above
                        renew()
            finally:
                os.close(old)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        raise
    finally:
        own.unlink(missing_ok=True)  # linked: the lock's second name; replaced: gone already


def _own_file(output: Path, lock: Path) -> tuple[Path, int]:
    """This process's name of the lock file, made, locked and written (the pid), and its fd. Locked the moment it is
    made, before the write (slow on a network disk): a taker on another host or in another pid namespace, whose pid
    _dead cannot see, holds it locked from its first moment, so _remove_dead_takers leaves it."""
    # pid and a random part: a pod's pid is the same run after run, and another pod's may be too.
    own = sibling(output.resolve(), f"lock-{os.getpid()}-{secrets.token_hex(4)}")
    fd = os.open(own, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a flock is the file's: it holds under the lock's name
        with naming(lock):  # (a full disk: said of the lock beside the output, not of "a file")
            os.pwrite(fd, _content(), 0)
    except BaseException:
        os.close(fd)
        own.unlink(missing_ok=True)
        raise
    return own, fd


# A taker's own name older than this (by its mtime) is a killed run's: a live taker holds it for moments. Younger,
# it may be a live taker's not yet locked (os.open and flock are two calls), whose pid _dead cannot see.
DEAD_TAKER_AGE_S = 60


def _remove_dead_takers(output: Path) -> None:
    """Remove the files `.NAME.lock-PID-HEX` (_take's own name, for a moment) that a run killed
    while it took the lock left beside `output`, for ever otherwise: only a name _take makes for
    this output, a regular file empty or holding that pid's lock line, whose pid is no process
    of this host and which no process holds locked (another host's run, taking the lock on a
    shared disk, holds its own locked) and which is older than DEAD_TAKER_AGE_S. Best effort: one that cannot be
    removed stays."""
    try:
        entries = list(os.scandir(output.parent))
    except OSError:
        return
    for entry in entries:
        m = re.search(r"lock-(\d+)-([0-9a-f]{8})$", entry.name)
        if not m or sibling(output, f"lock-{m[1]}-{m[2]}").name != entry.name or not _dead(int(m[1])):
            continue
        try:
            if time.time() - entry.stat(follow_symlinks=False).st_mtime < DEAD_TAKER_AGE_S:
                continue
        except OSError:
            continue
        try:
            fd = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            content = os.pread(fd, 64, 0)
            if stat.S_ISREG(os.fstat(fd).st_mode) and (content == b"" or _holder(content) == m[1]) \
                    and not _locked_elsewhere(fd):
                os.unlink(entry.path)
        except OSError:
            pass
        finally:
            os.close(fd)


def _dead(pid: int) -> bool:
    """Whether no process of this host has the id `pid`."""
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OverflowError:  # (an id no process can have)
        return True
    except PermissionError:  # another user's
        return False
    return False


def _make_in_place(lock: Path, output: Path, flag: str) -> int | None:
    """The lock made at its name, locked, then its pid written (None: a file is there, or this
    one was looked at by another run in the moment before it was locked: removed, never left
    empty, for the caller to look again)."""
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with naming(lock):  # (a full disk: removed below, not left empty, which reads as a user's file)
            os.pwrite(fd, _content(), 0)
    except BlockingIOError:
        lock.unlink(missing_ok=True)
        os.close(fd)
        return None
    except BaseException:
        lock.unlink(missing_ok=True)
        os.close(fd)
        raise
    return fd


def lock_path(output: Path) -> Path:
    return sibling(Path(output).resolve(), "lock")  # `ds`, `./ds` and a link to ds are one output


_held: dict[Path, int] = {}  # the locks this process holds, with their depth


@contextlib.contextmanager
def output_lock(output: Path, flag: str) -> Iterator[None]:
    """Hold the lock of `output` for the block; BusyError (naming `flag` and the holder's pid)
    when another process holds it. Re-entrant within a process: a checkpoint save takes the lock
    its training run already holds. An output at a literal `~` is refused (check_not_tilde)."""
    check_not_tilde(Path(output), flag)
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
    fd = _take(lock, Path(output), flag)
    try:
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


def check_not_tilde(path: Path, flag: str) -> None:
    """Refuse an output whose path starts with a literal `~` or `~USER` that a shell would
    expand (`--out_dir '~/data'` quoted, a params.yaml value: nothing expands it there, only the
    shell, unquoted). It made a folder named `~` in the current directory, and the `rm -rf ~`
    that removes it deletes the home. (`~notes`, no user of that name, is a name like another.)"""
    # As written and normalized: `a/../~/x` makes `./~/x` as surely as `~/x` does (pathlib keeps
    # the `..`), and `~/../x`, which is `x` normalized, makes `./~` on the way.
    for first in dict.fromkeys(Path(p).parts[0] for p in (path, os.path.normpath(path)) if Path(p).parts):
        if first.startswith("~") and os.path.expanduser(first) != first:
            raise InputError(f"{flag} {path}: the path starts with a literal '{first}', which only a shell expands "
                             f"(unquoted; never in params.yaml or a config file): it would make a folder named "
                             f"'{first}' here, not in a home directory; write the path in full (or $HOME/..., "
                             "unquoted)")
