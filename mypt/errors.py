"""Every error a user can cause derives from MyptError.

Commands and stage scripts catch MyptError once (mypt.options.MyptCommand) and print its
message on one line, exit status 1: no traceback for a mistake the user can fix. A message
names what was seen (path, flag, value) and what fixes it, often as a `HINT:` line.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
from pathlib import Path
from typing import Iterator, Sequence


class MyptError(Exception):
    """Base of every error a user can cause and fix."""


# ValueError stays a base of the input-side errors: library callers that caught
# ValueError before the common base existed keep working.
class InputError(MyptError, ValueError):
    """Bad input files or data-preparation settings."""


class ConfigError(MyptError, ValueError):
    """A setting of the wrong type or out of range, or settings that contradict each other."""


class TokenizerError(MyptError, ValueError):
    """A tokenizer that cannot be built or loaded, or text it cannot encode."""


class ShardError(MyptError, ValueError):
    """A damaged or foreign shard or dataset directory."""


class DataError(MyptError, ValueError):
    """A dataset that cannot feed training (missing split, windows too long, wrong tokenizer)."""


class CheckpointError(MyptError, ValueError):
    """A missing or unreadable checkpoint."""


class FetchError(MyptError):
    """A download from the package index failed or did not verify."""


class TrainingDiverged(MyptError, RuntimeError):
    """The loss became NaN or infinite."""


class TrainingStopped(MyptError):
    """Training stopped between steps (SIGTERM or SIGINT, a data error, a non-finite loss) after
    saving a checkpoint to resume from. `signalled`: stopped by a signal (or torchrun's end),
    which every rank of a node received: said once a node (mypt.signals.stop_said_here)."""

    def __init__(self, message: str, signalled: bool = False):
        super().__init__(message)
        self.signalled = signalled


class OutputInPlace(MyptError):
    """A write whose new output is in place, whole, that failed after its swap (io.staged_dir,
    an append): the user's files of the previous output are still set aside, where the message
    says. The caller must not say the output was not written."""


class BusyError(MyptError):
    """An output (a dataset directory, a checkpoint) that another mypt process is writing."""


# What fixes an environment error while mypt writes or reads its files.
_OS_HINTS = {
    errno.ENOSPC: "free some space, or choose an output on another disk",
    errno.EDQUOT: "free some space, or choose an output on another disk",
    errno.EROFS: "choose an output on a writable file system",
    errno.EACCES: "check its permissions, or choose another path",
    errno.EPERM: "check its permissions, or choose another path",
    errno.EBUSY: "close what holds it open, or choose another path",
    errno.ELOOP: "a symbolic link on the way loops (to itself, or through others): fix it, or choose another path",
}
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG}


def listed(items: Sequence[object], cap: int, sep: str = ", ") -> str:
    """The first `cap` of `items`, joined by `sep` ("; " where an item holds commas), and how many
    more there are: a refusal names enough to find them, on one line however many there are."""
    more = f" (and {len(items) - cap:,} more)" if len(items) > cap else ""
    return sep.join(map(str, items[:cap])) + more


def file_in_the_way(path: Path) -> Path | None:
    """The file that stops `path` being (or being made) a directory: the first of path and its
    parents that exists, where that is not a directory (`notes.txt` for `notes.txt/m`); else
    None. The flags that take a folder check with it before their work (io.check_dir_path, a
    report's folder); os_error_message names it where an OSError found it first."""
    found = next((p for p in (path, *path.parents) if os.path.lexists(p)), None)
    return found if found is not None and not found.is_dir() else None


def error_line(e: Exception) -> str:
    """An error as one line: an OSError as the commands print it (os_error_message), another
    error its text."""
    return os_error_message(e) if isinstance(e, OSError) else str(e)


def os_error_message(e: OSError) -> str:
    """One line for an OSError that reached a command: the path, what went wrong (the
    errno's meaning), what fixes it. Disk full, read-only file systems and permissions are
    the environment's, not bugs: no traceback."""
    reason = e.strerror or (os.strerror(e.errno) if e.errno else str(e))
    path = e.filename if e.filename is not None else "a file"
    if e.errno is None and _short_write(e):  # numpy's tofile: "N requested and M written", no errno
        # Under a file-size limit numpy says no EFBIG, and the file, removed since, cannot say its size: both named.
        if (limit := _size_limit()) is not None:
            return (f"cannot write {path}: a write cut short ({reason}): the file reached this process's file-size "
                    f"limit (ulimit -f: {limit:,} bytes), or the disk is full; raise the limit (ulimit -f "
                    "unlimited), free some space, or choose an output on another disk")
        return (f"cannot write {path}: a write cut short ({reason}): the disk is likely full; free some space, or "
                "choose an output on another disk")
    if e.errno is None and _numpy_no_space(e):  # numpy's tofile, where its fallocate found the disk full
        return f"cannot write {path}: No space left on device ({reason}); {_OS_HINTS[errno.ENOSPC]}"
    if e.errno in (errno.EEXIST, errno.ENOTDIR) and e.filename is not None and e.filename2 is None:
        # A folder to make or go through is a file (`--out_dir corpus.txt/x`): "File exists" said nothing.
        if (found := file_in_the_way(Path(os.fsdecode(e.filename)))) is not None:
            return f"cannot use {found}: it is a file, where a folder is needed; choose another path"
    verb = "cannot write" if e.errno in _WRITE_ERRNOS else "cannot use"
    paths = f"{path} -> {e.filename2}" if e.filename2 is not None else str(path)
    hint = _OS_HINTS.get(e.errno)
    return f"{verb} {paths}: {reason}" + (f"; {hint}" if hint else "")


def _size_limit() -> int | None:
    """The process's file-size limit (ulimit -f; RLIMIT_FSIZE) in bytes, None where there is none."""
    try:
        import resource
    except ImportError:  # (not POSIX)
        return None
    soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    return None if soft == resource.RLIM_INFINITY else soft


def _short_write(e: OSError) -> bool:
    # (Its text is its strerror once named_os_error named its file, else its only argument.)
    return re.fullmatch(r"\d+ requested and \d+ written", e.strerror or str(e)) is not None


def _numpy_no_space(e: OSError) -> bool:
    return re.fullmatch(r"Not enough free space to write \d+ bytes after offset \d+", e.strerror or str(e)) is not None


def named_os_error(e: OSError, path: os.PathLike | str) -> OSError:
    """`e` as an error that names `path`, where it names no file: a write, flush or close of a
    file already open (a full disk: ENOSPC; a file size limit: EFBIG) raises one without, and
    numpy's tofile one without an errno either (a write cut short, or a disk its fallocate found
    full). Its errno and strerror are kept (numpy's text as its strerror); one that names a file
    already is returned as it is. A new error, not `e` with its filename set: an OSError pickles its filename only
    beside an errno and a strerror, and a worker's error reaches the parent pickled
    (mypt.parallel)."""
    if e.filename is not None:
        return e
    return OSError(e.errno, e.strerror or str(e), os.fspath(path))  # (OSError picks the errno's subclass)


@contextlib.contextmanager
def naming(path: os.PathLike | str) -> Iterator[None]:
    """An OSError that names no file, raised in the block, re-raised naming `path`
    (named_os_error): around the writes and the close of one file, so a full disk is said of
    the file it stopped. The block should hold no other file's I/O that could fail without a
    name (a read of another file): the error would be said of `path`."""
    try:
        yield
    except OSError as e:
        if e.filename is not None:
            raise
        raise named_os_error(e, path) from e


def safetensors_os_error(e: Exception, path) -> OSError | None:
    """The OSError a safetensors write failure is (a full disk: one line, as every command's),
    or None for another failure. The Rust error carries the OS error code, as
    "IoError(Os { code: 28, ... })" or as "I/O error: No space left on device (os error 28)"
    depending on where it failed."""
    code = re.search(r"(?:code: |os error )(\d+)", str(e))
    return OSError(int(code.group(1)), os.strerror(int(code.group(1))), str(path)) if code else None
