"""Crash-safe file output: a file appears under its final name only when complete.

Files are written under a temporary name in the same directory and renamed (atomic on
POSIX); directories are built under `.NAME.partial` beside their final place and renamed
at the end, so a killed run leaves nothing that passes for a finished output.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import hashlib
import json
import os
import re
import secrets
import shutil
import stat
import sys
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping, TypeVar

from mypt.errors import (InputError, MyptError, OutputInPlace, file_in_the_way, listed, named_os_error,
                         os_error_message)
from mypt.names import WORK_MARK, sibling
from mypt.signals import stops_held

T = TypeVar("T")


def tmp_name(path: Path) -> Path:
    """A file's name while it is written, inside mypt's own work directories (a shard in
    `.NAME.partial`); beside a user's files, atomic_file's new names."""
    return sibling(path, "tmp")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as f:
        f.write(data)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, obj: object) -> None:
    atomic_write_text(Path(path), _json_text(obj))


def _json_text(obj: object) -> str:
    """Deterministic JSON (sorted keys would reorder sources; we keep insertion order)."""
    return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"


def write_reports(reports: dict[Path, object]) -> None:
    """Several JSON reports of one run (eval's --metrics and --stats), each written whole and
    flushed before any is renamed into place: a full disk leaves the old pair, never a new
    file beside an old one."""
    with contextlib.ExitStack() as stack:
        for path, obj in reports.items():
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            f = stack.enter_context(atomic_file(Path(path)))
            f.write(_json_text(obj).encode("utf-8"))
            f.flush()


@contextlib.contextmanager
def report_set_aside(report: Path, output: Path) -> Iterator[None]:
    """A stage's report (`--stats`) of its previous output, removed by the block's swap of `output` (its --out_dir)
    between its renames (_swap): a kill (or a full disk) between the swap and the new report's write leaves no report,
    never the previous one beside the new output; one before the swap (hours of work: a kill, the OOM killer, a
    refusal) leaves the report beside its output, as it was. The caller writes the new report after the block."""
    key, report = os.path.realpath(output), Path(report).absolute()
    _reports_aside.setdefault(key, []).append(report)
    try:
        yield
    finally:
        _reports_aside[key].remove(report)
        if not _reports_aside[key]:
            del _reports_aside[key]


# The reports of an output (by its real path) that a swap of it removes (report_set_aside).
_reports_aside: dict[str, list[Path]] = {}


def _drop_reports(final: Path) -> None:
    """Remove the reports set aside for `final` (report_set_aside), a link's name, not its target (check_report_paths
    refused a link)."""
    for report in _reports_aside.get(os.path.realpath(final), []):
        Path(report).unlink(missing_ok=True)


# A part of a report's shape (check_report_paths): a name the run chose (a corpus, a token).
ANY_NAME = re.compile(r".*", re.DOTALL)


def check_report_paths(reports: dict[str, tuple[Path | None, object]],
                       dirs: Iterable[tuple[str, os.PathLike | str | None]]) -> None:
    """A stage's report files ({"--stats": (path, shape), "--metrics": (path, shape)}), refused before
    any work when two are one file (the second would replace the first), one lies in a directory the
    stage reads or writes, `dirs` ((flag, path) pairs, a file too): it would overwrite a file
    there (an input's manifest.json, a checkpoint's config.json) or change a DVC output; or
    one could not be written, or would replace a file that is not this report (_check_report_file).

    A shape is what the stage writes there: `float` a number, `int` a count (a whole number >= 0),
    a dict a JSON object whose every key is one of its names, or matches one of its patterns
    (ANY_NAME), its value of that shape; a list, any one of its shapes (an older mypt's report)."""
    from mypt.lock import check_not_tilde  # (lock imports names only: no cycle)

    seen: dict[Path, str] = {}
    dirs = list(dirs)
    for flag, (path, shape) in reports.items():
        if path is None:
            continue
        check_not_tilde(Path(path), flag)
        real = Path(path).resolve()
        if real in seen:
            raise InputError(f"{flag} {path} is the file {seen[real]} names too: the second would replace the "
                             "first; give each its own file (nothing changed)")
        seen[real] = flag
        for dir_flag, d in dirs:
            if d is not None and real.is_relative_to(Path(d).resolve()):
                raise InputError(f"{flag} {path} lies in {dir_flag} {d}: it would write into what this stage "
                                 "reads or writes; put it elsewhere, e.g. stats/ or metrics/ (nothing changed)")
        _check_report_file(flag, Path(path), shape)


def _has_shape(value: object, shape: object) -> bool:
    """Whether `value` (parsed JSON) is a report of `shape` (check_report_paths). Keys may be
    missing: an older mypt's report has fewer, a run with other corpora other names."""
    if isinstance(shape, list):
        return any(_has_shape(value, one) for one in shape)
    if isinstance(shape, dict):
        if not isinstance(value, dict):
            return False
        for key, v in value.items():
            inner = shape[key] if key in shape else next(
                (s for k, s in shape.items() if isinstance(k, re.Pattern) and k.fullmatch(key)), None)
            if inner is None or not _has_shape(v, inner):
                return False
        return True
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return shape is float or (shape is int and isinstance(value, int) and value >= 0)


def _check_report_file(flag: str, path: Path, shape: object) -> None:
    """A report file the stage may write, before its work: a file name, in a folder it can
    make or write, and where a file is already, a report of `shape`, the one this stage writes
    for `flag` (a user's results or notes, a checkpoint's config.json, is never replaced), not
    read-only, not a link (which the new file would replace, its target keeping the old numbers)."""
    fix = f"choose another {flag} (nothing changed)"
    if not path.name or path.name in (".", ".."):
        raise InputError(f"{flag} {str(path)!r}: a file name is needed (e.g. metrics/NAME.json); {fix}")
    if path.is_symlink():
        raise InputError(f"{flag} {path} is a symbolic link: give the file it points to "
                         f"({os.path.realpath(path)}), or {fix}")
    if path.is_dir():
        raise InputError(f"{flag} {path} is a directory: give a file in it (e.g. {path / 'NAME.json'}), or {fix}")
    if (file := file_in_the_way(path.parent)) is not None:
        raise InputError(f"{flag} {path}: {file} is a file, not a folder; {fix}")
    folder = next((p for p in path.parents if p.is_dir()), Path("."))
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"{flag} {path}: {folder} cannot be written (read-only, or not yours); {fix}")
    if os.path.lexists(path):
        data = None
        # (A FIFO is not opened: it would wait for a writer; nor is a large file read: a report
        # is a few KiB, a mistyped --stats corpus.jsonl may be gigabytes.)
        if path.is_file() and path.stat().st_size <= 1 << 20:
            try:
                with open(path, encoding="utf-8") as f:
                    data = json.load(f)
            except (OSError, ValueError):
                pass
        if not _has_shape(data, shape):
            raise InputError(f"{flag} {path} exists and is not a report mypt writes (this stage's {flag}): "
                             f"refused, so as not to replace it; move it, or {fix}")
        if not os.access(path, os.W_OK) or not os.stat(path).st_mode & 0o222:  # (root may write a 444 file)
            raise InputError(f"{flag} {path} is read-only: refused, so as not to replace it; make it writable "
                             f"(chmod u+w), or {fix}")


def read_json(path: Path, error: type[MyptError] = InputError,
              hint: str = "the file is damaged: prepare that directory again") -> dict:
    """A JSON object mypt wrote; a damaged or foreign file is an `error` naming it, then `hint`
    (what the user does about it)."""
    with open(path, "rb") as f:
        return parse_json(f.read(), path, error, hint)


def parse_json(raw: bytes, path: Path, error: type[MyptError] = InputError,
               hint: str = "the file is damaged: prepare that directory again") -> dict:
    """read_json of bytes the caller has read from `path` (and hashed: one reading of a file
    whose sha256 is recorded, checked and parsed as the same bytes)."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
        raise error(f"{path}: not valid JSON ({e}); {hint}") from None
    except RecursionError:  # (arrays nested thousands deep: json's parser recurses)
        raise error(f"{path}: not valid JSON for mypt (nested too deep to read); {hint}") from None
    if not isinstance(data, dict):
        raise error(f"{path}: expected a JSON object, got {type(data).__name__}; {hint}")
    return data


def file_kind(mode: int) -> str:
    """What a file of this st_mode is, for a message that refuses what is not a regular file."""
    return ("a regular file" if stat.S_ISREG(mode) else "a FIFO (named pipe)" if stat.S_ISFIFO(mode)
            else "a character device" if stat.S_ISCHR(mode) else "a block device" if stat.S_ISBLK(mode)
            else "a socket" if stat.S_ISSOCK(mode) else "a directory" if stat.S_ISDIR(mode)
            else "not a regular file")


def open_regular(path: Path, refuse: Callable[[int], BaseException]) -> tuple[int, os.stat_result]:
    """A descriptor open for reading on `path` and its fstat; `refuse(st_mode)` is raised
    unless it is a regular file (an input, a shard). Opened non-blocking: a FIFO blocks open()
    for ever, waiting for a writer (one put in an input's place after the walk hung a worker);
    then checked on the open file itself (fstat), so nothing can swap it in between."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except BlockingIOError:
        # A file lease (Samba's oplocks, nfsd's delegations) fails a non-blocking open (EWOULDBLOCK):
        # a regular file is opened again, waiting for the lease to be broken as any open does.
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise
        fd = os.open(path, os.O_RDONLY)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise refuse(st.st_mode)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def sha256_file(path: Path) -> str:
    """The sha256 hex digest of a file, read in 4 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def cache_dir() -> Path:
    """Where mypt keeps what it fetches (the gpt2 vocabulary, the demo archive):
    $MYPT_CACHE_DIR, else $XDG_CACHE_HOME/mypt, else ~/.cache/mypt. (tiktoken's own default
    is a temp directory that reboots wipe.)"""
    if os.environ.get("MYPT_CACHE_DIR"):
        return Path(os.environ["MYPT_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mypt"


@contextlib.contextmanager
def atomic_file(path: Path, mode: str = "wb") -> Iterator:
    """Open `path` for writing; the file appears there whole, on success only. Where Linux
    offers it (O_TMPFILE) the data is written into a file with no name, which a kill at any
    moment of the write leaves nothing of, then linked under a temporary name and renamed into
    place. Elsewhere it is written under the temporary name, removed on error (a SIGKILL leaves
    it). The name is new (`.NAME.XXXXXXXX.tmp`, created exclusively): beside a user's file
    (`--out tok.json`, `--metrics`) a fixed `.NAME.tmp` could be a file of theirs, or a link
    that the write would follow."""
    path = Path(path)
    unnamed = _unnamed_file(path.parent)
    if unnamed is None:
        tmp, fd = _new_tmp(path)
    else:
        tmp, fd = None, unnamed
    f = os.fdopen(fd, mode)
    try:
        yield f
        f.flush()
        if tmp is None:
            tmp = _link_unnamed(fd, path)
        f.close()  # a full disk may only show here, when the last buffer is written
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            f.close()
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and e.filename is None:  # a write's error (disk full) names no file
            raise named_os_error(e, path) from e
        raise


def _fresh_tmp(path: Path, create: Callable[[Path], T]) -> tuple[Path, T]:
    """`create(name)` with a new temporary name beside `path` (`.NAME.XXXXXXXX.tmp`), tried
    again with another while the name is taken; the name and what create returned."""
    while True:
        tmp = sibling(path, f"{secrets.token_hex(4)}.tmp")
        try:
            return tmp, create(tmp)
        except FileExistsError:
            continue


def _new_tmp(path: Path) -> tuple[Path, int]:
    """A temporary name beside `path`, created exclusively, and its descriptor."""
    return _fresh_tmp(path, lambda tmp: os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))


def _unnamed_file(directory: Path) -> int | None:
    """A file with no name in `directory` (Linux's O_TMPFILE), or None where the system or
    the file system has none (the caller then writes under a temporary name)."""
    flag = getattr(os, "O_TMPFILE", None)
    if flag is None:
        return None
    try:
        return os.open(directory, os.O_RDWR | flag, 0o666)  # (read back if it must be copied)
    except OSError:  # EOPNOTSUPP, EISDIR or EINVAL where the file system has no unnamed files
        return None


def _link_unnamed(fd: int, path: Path) -> Path:
    """The unnamed file `fd` given a new temporary name beside `path` (then renamed into
    place: a link cannot replace a file). Where /proc cannot link it, its bytes are copied
    under that name instead."""
    try:
        # linkat(AT_SYMLINK_FOLLOW) of /proc/self/fd/N. A src_dir_fd makes os.link call linkat;
        # without one it calls link(), which links the /proc entry itself (EXDEV).
        proc = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        proc = None
    if proc is not None:
        try:
            return _fresh_tmp(path, lambda tmp: os.link(str(fd), tmp, src_dir_fd=proc, follow_symlinks=True))[0]
        except OSError:
            pass
        finally:
            os.close(proc)
    tmp, out = _new_tmp(path)
    try:
        with open(fd, "rb", closefd=False) as src, os.fdopen(out, "wb") as dst:
            src.seek(0)
            shutil.copyfileobj(src, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def umask_mode(path: Path) -> None:
    """Give a file a library wrote as 0600 (safetensors' save_file, transformers'
    save_pretrained) the mode every other new file gets under the user's umask (0644 usually):
    a checkpoint or an export on a team's shared storage is readable as a whole, not all but its
    weights."""
    try:
        os.chmod(path, 0o666 & ~current_umask())
    except OSError as e:  # a mount without Unix modes (CIFS, some FUSE): the file is whole all the same
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EROFS):
            raise


def current_umask() -> int:
    """The process's umask, read from /proc (Linux 4.7 and later) where it can be: reading it
    with os.umask means setting it, and a file another thread created in that moment would get
    mode 0666. Elsewhere, os.umask, put back at once."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o077)  # (the briefest, safest setting while it is read)
    os.umask(mask)
    return mask


def make_own_dir(path: Path) -> Path:
    """Create one of mypt's work directories beside an output (`.NAME.partial`, `.NAME.work`),
    marked so that a run killed while it exists leaves something the next run can tell from a
    user's folder of the same name."""
    path.mkdir(parents=True)
    mark_own(path)
    return path


def mark_own(path: Path) -> None:
    (path / WORK_MARK).write_bytes(b"")


def unmark(path: Path) -> None:
    """Once a work directory is renamed into place as the output (or a previous output moved
    aside is put back): an output holds no mark."""
    (path / WORK_MARK).unlink(missing_ok=True)


def built_files(staging: Path) -> list[str]:
    """The files a staged_dir block wrote into `staging` (paths relative to it, sorted), for
    an output that records them: the staging's mark is not one."""
    return sorted(p.relative_to(staging).as_posix() for p in Path(staging).rglob("*")
                  if p.is_file() and p.name != WORK_MARK)


def is_own(path: Path) -> bool:
    """Whether `path` is a work directory mypt made (marked by make_own_dir or _swap)."""
    return path.is_dir() and not path.is_symlink() and (path / WORK_MARK).is_file()


def not_own_message(path: Path, flag: str, aside_of: Path | None = None) -> str:
    """A folder or file under one of mypt's work names that mypt did not make. `aside_of`: the
    output whose previous version mypt moves aside under that name (`.NAME.old`): a mypt from
    before the mark may have left the user's only copy of it there."""
    what = "folder" if path.is_dir() and not path.is_symlink() else "file"
    head = (f"{path}: mypt keeps its work files for {flag} under this name, but it did not make this {what} "
            f"(no {WORK_MARK} in it): refused, nothing changed; ")
    if aside_of is not None:
        return head + (f"if it is {aside_of.name}'s previous version, set aside by an earlier mypt killed while "
                       f"replacing it, put it back by hand (`mv {path} {aside_of}` when {aside_of} is missing, or "
                       "move your files from it into it); else move it elsewhere, and run again")
    return head + ("move it elsewhere and run again (an unfinished output that an earlier mypt's killed run left: "
                   "remove it)")


def remove_work(path: Path, ignore_errors: bool = False) -> None:
    """Remove a marked work directory, its mark last: stopped half-way (a kill, a file that
    cannot be removed, another rank still writing into it), what is left is still marked as
    mypt's, for the next run to remove, never a folder it would refuse as the user's."""
    try:
        for entry in os.scandir(path):
            if entry.name != WORK_MARK:
                if entry.is_dir(follow_symlinks=False):
                    _rmtree(entry.path)
                else:
                    os.unlink(entry.path)
        unmark(path)
        try:
            path.rmdir()
        except OSError:  # an entry came to be meanwhile: keep it marked
            mark_own(path)
            raise
    except FileNotFoundError:
        pass
    except OSError:
        if not ignore_errors:
            raise


def _rmtree(path: str) -> None:
    """shutil.rmtree, its error naming the file by its full path (shutil's names the bare entry:
    it works through folder descriptors)."""
    def named(func, where, exc) -> None:
        exc = exc[1] if isinstance(exc, tuple) else exc  # (onerror's exc_info before Python 3.12)
        if isinstance(exc, OSError) and exc.errno is not None:
            raise OSError(exc.errno, exc.strerror, os.fspath(where)) from exc
        raise exc
    if sys.version_info >= (3, 12):  # (onerror is deprecated there)
        shutil.rmtree(path, onexc=named)
    else:
        shutil.rmtree(path, onerror=named)


def remove_own(path: Path, flag: str, aside_of: Path | None = None) -> None:
    """Remove a work directory a killed run left beside an output: only one mypt made (or an
    empty folder: a run killed before marking it). Anything else under that name is the
    user's: refused, nothing changed (`aside_of`: see not_own_message)."""
    if not os.path.lexists(path):
        return
    if is_own(path):
        remove_work(path)
        return
    if path.is_dir() and not path.is_symlink() and not any(path.iterdir()):
        path.rmdir()
        return
    raise InputError(not_own_message(path, flag, aside_of))


def append_dir(dataset_dir: Path) -> Path:
    """mypt's own work directory of a dataset append (mypt.append): it holds the previous
    dataset (`old/`) between the append's two renames."""
    return sibling(dataset_dir, "append")


def appended_aside(dataset_dir: Path) -> Path | None:
    """`.NAME.append/old` when it holds the dataset an append set aside, killed between its two
    renames: then the grown dataset is still in its staging (`.NAME.partial`). Without the
    staging the swap was done, and `old/` only names the replaced dataset's files (a kill
    before the append renamed it `replaced/`): never a dataset to put back."""
    old = append_dir(dataset_dir) / "old"
    return old if old.is_dir() and partial_dir(dataset_dir).is_dir() else None


def set_aside_hint(dataset_dir: Path) -> str:
    """For a reader's "no directory" error: where a writer killed mid-swap left the missing
    dataset (a swap's `.NAME.old`, an append's `.NAME.append/old`; the next writer puts it
    back), else ""."""
    final = output_target(Path(dataset_dir))
    found = [p for p in (old_dir(final), appended_aside(final)) if p and p.is_dir()] if not final.exists() else []
    return (f"; a killed prepare-dataset set the dataset aside in {found[0]}: run that prepare-dataset command "
            "again (it puts the dataset back first)") if found else ""


def partial_dir(final: Path) -> Path:
    """Where staged_dir builds a new output before it is renamed into place."""
    return sibling(final, "partial")


def check_dir_path(path: Path, flag: str) -> None:
    """Refuse a directory path that runs through a file (`notes.txt`, `notes.txt/m`: no
    directory can be made there, and os would only say "File exists"), or at a literal `~`."""
    from mypt.lock import check_not_tilde  # (lock imports names only: no cycle)

    check_not_tilde(Path(path), flag)
    if (file := file_in_the_way(Path(path))) is not None:
        what = "a symbolic link that loops" if loops(file) else "a file, not a directory"
        raise InputError(f"{flag} {path}: {file} is {what}: choose another {flag}")


def loops(path: Path) -> bool:
    """Whether `path` runs through a symbolic link that loops (Path.resolve raises on one only
    before Python 3.13)."""
    try:
        os.stat(path)
    except OSError as e:
        return e.errno == errno.ELOOP
    return False


def _too_long(path: Path) -> str | None:
    """Why the system refuses the absolute `path` as too long, or the names mypt makes beside and inside it
    (None: it takes them): the whole of it, or a name in it. A stat says so only of the names in folders that
    exist; a name to be made under a new folder is held to the limits of the file system of the nearest folder
    that exists."""
    refused = False
    try:
        os.stat(path)
    except OSError as e:
        refused = e.errno == errno.ENAMETOOLONG
    head = path
    while not os.path.isdir(head):
        head = head.parent
    name_max, path_max = os.pathconf(head, "PC_NAME_MAX"), os.pathconf(head, "PC_PATH_MAX")
    size, longest = len(os.fsencode(path)), max(len(os.fsencode(name)) for name in path.parts)
    if refused or longest > name_max:
        return f"a path of {size:,} bytes, its longest name {longest:,}: more than the system takes"
    # Room for one more name of the longest the system takes: what mypt makes beside the output and in it is
    # shorter (sibling's `.NAME.lock-PID-HEX` at most NAME_MAX; `.NAME.partial/train/shard_00000.bin`; the work
    # directory's `.NAME.work/.clean.partial/00000-STEM.jsonl`), so a mkdir or a lock never meets the limit.
    room = 1 + name_max
    if size + room > path_max - 1:  # (PATH_MAX counts the closing NUL)
        return (f"a path of {size:,} bytes: with the names mypt makes beside and in it, up to {room:,} bytes more, "
                f"more than the {path_max - 1:,} bytes a path the system takes")
    return None


def changed_files(directory: Path, sums: Mapping[str, str | None], whose: str) -> list[tuple[str, str]]:
    """(name, how) of the files of an output whose bytes are not `sums`' (name -> sha256; None:
    no bytes would do), by name: another content, or no longer a regular file (a link, even to
    the same bytes, is the user's: the new file would replace the link). `whose`: what the sums
    are, for the message (an output's record, the new output). A file that is missing is not:
    nothing of the user's would be replaced."""
    changed = []
    for name in sorted(sums):
        path = Path(directory) / name
        if not os.path.lexists(path):
            continue
        how = "now a symbolic link" if path.is_symlink() else "no longer a file" if not path.is_file() else \
            f"not in {whose}" if sums[name] is None else \
            f"its sha256 is not {whose}'s" if sha256_file(path) != sums[name] else None
        if how:
            changed.append((name, how))
    return changed


def shortened(path: str) -> str:
    """A path as an error shows it: whole up to 160 characters, else its start and end (a path
    too long for the system may be 4,096 bytes)."""
    return path if len(path) <= 160 else f"{path[:80]}...{path[-60:]}"


def check_replaceable(out_dir: Path, inputs: Iterable[os.PathLike | str] = (), flag: str = "--out_dir",
                      marker: str | None = None, kind: str = "mypt output") -> None:
    """The one rule of what mypt may delete to put an output in place. Writing an output
    replaces the whole directory (staged_dir; prepare-dataset --overwrite), so a mistyped
    --out_dir would cost the user their files: refuse, before anything is touched, a
    directory that is (or holds) the current, home or root directory, one that is (or
    holds) an input, and a file. With `marker`, also a non-empty directory without that
    file (not mypt's own `kind`). mypt's own work directories (`.NAME.work`,
    `.NAME.partial`) are not outputs: remove_own decides on them.
    """
    if loops(Path(out_dir)):
        raise InputError(f"{flag} {out_dir} is a symbolic link that loops: choose another {flag}")
    target = Path(out_dir).resolve()
    too_long = _too_long(target)
    if too_long:  # (else "cannot use PATH: File name too long" from a stat, a mkdir or a lock, naming no flag)
        raise InputError(f"{flag} {shortened(str(out_dir))}: File name too long ({too_long}): choose a shorter {flag}")
    places = {"the current directory": Path.cwd().resolve(), "the home directory": Path.home().resolve(),
              "the root directory": Path("/")}
    for what, place in places.items():
        if place == target:
            raise InputError(f"{flag} {out_dir} is {what}: refused, mypt replaces the whole {flag}; "
                             "choose a new directory for the output")
    for what, place in places.items():
        if target in place.parents:
            raise InputError(f"{flag} {out_dir} holds {what} ({place}): refused, mypt replaces the whole {flag}; "
                             "choose a new directory for the output")
    # Each input is resolved (its links followed) only where the output is there: no file lies in
    # a directory that does not exist, the usual case of a new output (prepare-dataset's work
    # directories, a first run).
    for given in inputs if os.path.lexists(target) else ():
        path = Path(given).resolve()
        if path == target or target in path.parents:
            raise InputError(f"{flag} {out_dir} {'is' if path == target else 'holds'} the input {given}: refused, "
                             f"mypt replaces the whole {flag}; choose a directory apart from the inputs")
    if target.exists() and not target.is_dir():
        raise InputError(f"{flag} {out_dir} is a file, not a directory: choose another {flag}")
    if marker and target.is_dir() and any(target.iterdir()) and not (target / marker).is_file():
        raise InputError(f"{flag} {out_dir} already holds files that are not a {kind} (no {marker}); "
                         f"mypt replaces only its own {kind} or an empty directory: choose another {flag}")


def old_dir(final: Path) -> Path:
    """Where staged_dir keeps the previous output while the new one is renamed into place."""
    return sibling(final, "old")


def output_target(path: Path) -> Path:
    """The directory an output really is: a symlinked output is replaced at its target (the
    link stays a link and the target gets the new output), never by a directory in place of
    the link."""
    path = Path(path)
    return Path(os.path.realpath(path)) if path.is_symlink() else path


def _owns(rel: str, owned: tuple[str, ...]) -> bool:
    """Whether `rel` matches an owned pattern, path component by component (a `*` never
    crosses a `/`: `train/shard_*.bin` owns no file in a user's folder under train/)."""
    parts = rel.split("/")
    return any(len(pat) == len(parts) and all(fnmatch.fnmatchcase(p, q) for p, q in zip(parts, pat))
               for pat in (pattern.split("/") for pattern in owned))


def _holds_owned(rel: str, owned: tuple[str, ...]) -> bool:
    """Whether directory `rel` is one of the output's own (some owned pattern lies under it)."""
    parts = rel.split("/")
    return any(len(pat) > len(parts) and all(fnmatch.fnmatchcase(p, q) for p, q in zip(parts, pat))
               for pat in (pattern.split("/") for pattern in owned))


def _entries(directory: Path, owned: Iterable[str]) -> tuple[list[str], list[str]]:
    """(the entries of an output directory named as the output's own, the others), by path
    relative to `directory`: an entry (file, link) is the output's when it matches one of the
    `owned` glob patterns, which name files: a folder there is the user's (mypt writes none
    under a file's name; a replace would delete it, and all in it, with mypt's files). The
    search goes inside the output's own folders (train/ of a dataset), never inside a user's
    folder (moved whole)."""
    owned = tuple(owned) + (WORK_MARK,)  # left in an output only by a kill mid-swap (_swap)
    named, others = [], []

    def walk(folder: Path, prefix: str) -> None:
        for entry in sorted(os.scandir(folder), key=lambda e: e.name):
            rel, folder_here = prefix + entry.name, entry.is_dir(follow_symlinks=False)
            if not folder_here and _owns(rel, owned):
                named.append(rel)
            elif folder_here and _holds_owned(rel, owned):
                walk(Path(entry.path), rel + "/")
            else:
                others.append(rel)
    if directory.is_dir():
        walk(directory, "")
    return named, others


def user_entries(directory: Path, owned: Iterable[str]) -> list[str]:
    """What in an output directory mypt did not write: every entry whose path matches none of
    the `owned` glob patterns (see _entries)."""
    return _entries(directory, owned)[1]


def _misplaced(directory: Path, users: list[str], owned: tuple[str, ...]) -> list[str]:
    """Of the user's entries (`users`), those where the output has one of another kind: a folder under one of its
    file names (`model.safetensors/`), a file where it makes a folder (`train`, `dcp`). The new
    output's entry would replace it, and a swap refuses that only after the work. (A user's
    entry named as the output's is of the other kind: see _entries. A link to a folder there,
    a folder moved to another disk, is left to its writer, which names it: --append_to.)"""
    return [rel for rel in users
            if _owns(rel, owned) or (_holds_owned(rel, owned) and not os.path.islink(directory / rel))]


# An output's record of what it holds: the previous output's directory -> the files mypt wrote
# there (read from its marker file), by name or as a mapping of each name to the sha256 recorded
# for it (None: none recorded); None for an output from before such records (its names decide).
# Raises MyptError where the record is not this kind's.
Written = Callable[[Path], Iterable[str] | Mapping[str, str | None] | None]


def check_written(final: Path, owned: Iterable[str], written: Written | None, marker: str | None,
                  flag: str = "--out_dir", kind: str = "mypt output", edited: str = "mypt wrote",
                  sums: bool = True) -> None:
    """For an output whose marker records what it holds (a step's manifest.json, a dataset's
    metadata): refuse, before anything changes, a previous output whose record is not this
    kind's (another tool's manifest.json, another step's, one that cannot be read: mypt cannot
    tell its files from the user's there), an entry named like the output's own files that
    the record does not list: the user's, which replacing the output would delete; and, with
    `sums`, a listed file whose bytes are not the sha256 the record holds for it: mypt wrote it,
    but the user edited it since (a demo text, an export's weights fine-tuned in place), and
    replacing it would lose the edit. `edited`: who wrote the files, in that refusal
    ("fetch-demo extracted")."""
    final = output_target(Path(final))
    _check_record(final, owned, read_record(final, written, marker, flag, kind), marker, flag, kind, edited, sums)


def read_record(final: Path, written: Written | None, marker: str | None, flag: str,
                kind: str) -> dict[str, str | None] | None:
    """The record of the output at `final` (its target), as name -> sha256 (None: none
    recorded); None where nothing records what it holds. Refuses a record that is not this
    kind's (check_written). A writer whose own names come from the record (fetch-demo) reads it
    under the output's lock, once, and hands it to staged_dir (`written`)."""
    if written is None or marker is None or not (final / marker).is_file():
        return None
    try:
        record = written(final)
        if record is None:  # (an output from before records: what is named as its own is)
            return None
        names = list(record)  # (a mapping's keys)
        if not all(isinstance(name, str) for name in [marker, *names]):
            raise InputError(f"its {marker} names something other than files")
        recorded = dict(record) if isinstance(record, Mapping) else dict.fromkeys(names)
        if not all(digest is None or isinstance(digest, str) for digest in recorded.values()):
            raise InputError(f"its {marker} records something other than a sha256 of a file")
        return recorded
    except MyptError as e:
        raise InputError(f"{flag} {final}: {e}; mypt cannot tell its files from yours there: refused, nothing "
                         f"changed; mypt replaces only its own {kind} or an empty directory: choose another {flag} "
                         "(or move the directory's files out)") from None


def _check_record(final: Path, owned: Iterable[str], recorded: dict[str, str | None] | None, marker: str | None,
                  flag: str, kind: str, edited: str, sums: bool = True) -> None:
    """check_written's checks of the output at `final` against its record (_record)."""
    if recorded is None:
        return
    listed_there = {marker, *recorded}
    extra = [str(final / rel) for rel in _entries(final, owned)[0] if rel not in listed_there and rel != WORK_MARK]
    if extra:
        raise InputError(f"{listed(extra, 1)} is named like the {kind}'s own files, but its {marker} does not "
                         "list it: mypt did not write it, and writing the output again would delete it: refused, "
                         "nothing changed; move it out of the directory and run again")
    changed = changed_files(final, {name: digest for name, digest in recorded.items() if digest is not None},
                            marker) if sums else []
    if changed:
        them = "it" if len(changed) == 1 else "them"
        named = listed([f"{name} ({how})" for name, how in changed], 3)
        raise InputError(f"{flag} {final}: {named} changed since {edited} {them}: writing the output again would "
                         "replace your changes: refused, nothing changed; move your version out of the directory (or "
                         f"delete it) and run again, or choose another {flag}")


def check_unsummed(final: Path, new: Mapping[str, str | None], names: Iterable[str], flag: str, why: str) -> None:
    """Files of a previous output (`names`) that no recorded sum vouches for: written by a mypt
    from before sums were recorded, or listed by a record without one. mypt cannot tell whether
    the user changed them since, so only the same bytes may replace them (`new`: name -> the new
    output's sha256, None where it writes no such file); any other is refused, nothing changed.
    `why`: what the output is, for the message (an export from before the sums)."""
    differ = [name for name, _ in changed_files(final, {name: new.get(name) for name in names}, "the new output")]
    if differ:
        is_, it, they = ("is", "it", "it") if len(differ) == 1 else ("are", "them", "they")
        raise InputError(f"{flag} {final} {why}: mypt cannot tell whether {listed(differ, 3)} {is_} as it wrote "
                         f"{it}, and writing the output again would replace {it} with other bytes: refused, nothing "
                         f"changed; if {they} {is_} mypt's, delete {it} and run again, or choose another {flag}")


def previous_output(final: Path) -> Path:
    """Where the previous output of `final` is now, for a writer that reads its record before
    staged_dir: `final` (its target, for a link), or, where a kill between a swap's renames left
    it aside as `.NAME.old` and no output, there (staged_dir puts it back before it decides on it:
    read as missing, its files passed for the user's)."""
    target = output_target(Path(final))
    if target.name in ("", ".", ".."):  # (`.`, `/`: nothing is set aside beside them; check_replaceable refuses them)
        return target
    aside = old_dir(target)
    return aside if not os.path.lexists(target) and aside.is_dir() and is_own(aside) else target


def carry_dir(final: Path) -> Path:
    """Where the previous output waits, once the new one is in place, for the user's files in
    it to be moved into the new one. Unlike `.NAME.old`, never put back as the output."""
    return sibling(final, "carry")


def _carry_over(carry: Path, final: Path, owned: tuple[str, ...]) -> None:
    """Move what the user added to the previous output (`carry`) into the new one (`final`),
    then remove what is left of `carry`: mypt's own files. A run killed half-way leaves the
    rest in `carry`, and the next staged_dir of the same output finishes the move. A user's
    entry that is in both (a file the user made again meanwhile) is never overwritten: it is
    left in `carry`, named in the error."""
    both, stuck = [], []
    try:
        for rel in user_entries(carry, owned):
            dest = final / rel
            if os.path.lexists(dest):
                both.append(rel)
                continue
            try:  # each entry that can move is moved: one that cannot (an immutable file) keeps no other back
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(carry / rel, dest)
            except OSError as e:
                stuck.append((rel, os_error_message(e)))
    except OSError as e:  # (the walk itself)
        raise InputError(not_carried(final, carry, os_error_message(e), owned=owned)) from None
    if stuck:
        raise InputError(not_carried(final, carry, listed([cause for _, cause in stuck], 2, "; "),
                                      [rel for rel, _ in stuck]))
    if both:
        raise InputError(f"{listed(both, 5)} {'is' if len(both) == 1 else 'are'} both in {final} and in "
                         f"{carry} (the previous output, whose other files you added were moved back): keep "
                         f"the one you want, then remove {carry}")
    remove_work(carry, ignore_errors=True)  # mypt's own files now (marked: see remove_work)


def _clashes(previous: Path, staging: Path, owned: tuple[str, ...]) -> list[str]:
    """The user's entries of `previous` that the new output would replace (it has that name)."""
    return [rel for rel in user_entries(previous, owned) if os.path.lexists(staging / rel)]


def _unmovable(previous: Path, users: list[str]) -> list[str]:
    """What would stop a swap half-way: a read-only output (it cannot be renamed aside) or a
    folder of the user's (of `users`, its entries) that cannot be moved into the new output (a
    read-only folder: moving it rewrites its `..`; a mount point: training stopped at its first
    save, half the user's files left in `.NAME.carry`). Root can do the first two."""
    if not os.path.lexists(previous):
        return []
    places = [previous] + [previous / rel for rel in users
                           if (previous / rel).is_dir() and not (previous / rel).is_symlink()]
    return [str(p) for p in places if not os.access(p, os.W_OK)] + _mounts_in(previous)


# Linux's FS_IOC_GETFLAGS, and its flags that forbid a rename, to root too: FS_IMMUTABLE_FL
# (chattr +i) and FS_APPEND_FL (chattr +a; on a folder, no entry may leave it).
_GETFLAGS, _PINNED = 0x80086601, 0x10 | 0x20


def _pinned(previous: Path, rels: list[str], itself: bool = False) -> list[str]:
    """Of the entries `rels` of `previous`, the folders they are in and (`itself`) `previous`, those
    immutable or append-only: a carry-over of the user's entries, or the removal of the previous
    output's own once replaced (best effort, silent), would stop at them (os.access on a file says
    nothing of it: a read-only file moves; root may write any)."""
    if not rels or not os.path.lexists(previous):
        return []
    places = dict.fromkeys([*([previous] if itself else []), *(previous / rel for rel in rels),
                            *(previous / os.path.dirname(rel) for rel in rels if "/" in rel)])
    return [str(p) for p in places if _flags(p) & _PINNED]


def _flags(path: Path) -> int:
    """The file's flags (chattr's on Linux, chflags' elsewhere), 0 where none can be read: a
    link, a FIFO or device (opening one to ask could block or act), a file it cannot open."""
    try:
        st = os.lstat(path)
    except OSError:  # (gone meanwhile: nothing to move)
        return 0
    if hasattr(st, "st_flags"):  # BSD, macOS: chflags uchg, uappnd and their system forms
        return _PINNED if st.st_flags & (stat.UF_IMMUTABLE | stat.UF_APPEND | stat.SF_IMMUTABLE
                                         | stat.SF_APPEND) else 0
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
        return 0
    import fcntl  # (POSIX only)

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except OSError:
        return 0
    try:
        return int.from_bytes(fcntl.ioctl(fd, _GETFLAGS, bytes(8))[:4], sys.byteorder)  # (the kernel writes an int)
    except OSError:  # a file system without such flags (tmpfs has some; NFS none)
        return 0
    finally:
        os.close(fd)


def _mounts_in(directory: Path) -> list[str]:
    """The mount points in `directory` or below it, a file bind-mounted there too (a rename
    of any fails, EBUSY): from /proc/self/mountinfo where there is one (Linux), else the
    directory's own folders that os.path.ismount says are (a bind mount of a file from the
    same filesystem it does not see)."""
    root = os.path.realpath(directory)
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
            points = [re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), line.split()[4]) for line in f]
    except OSError:
        points = [str(p) for p in Path(root).rglob("*") if p.is_dir() and not p.is_symlink() and os.path.ismount(p)]
    return sorted(p for p in points if p == root or p.startswith(root.rstrip("/") + "/"))


def recover_staged(final: Path, owned: Iterable[str] = (), flag: str = "--out_dir") -> None:
    """Finish a staged_dir that a kill interrupted (only a writer holding the output's lock may
    call this: it renames). Killed between the two renames (`.NAME.old` and no output): the
    previous output is put back. Killed after them (`.NAME.old` beside the output, or
    `.NAME.carry`): the user's files left there are moved into the output. A `.NAME.carry`
    without an output (the user or DVC removed it since) is never put back: the next output
    gets the user's files from it."""
    final = output_target(final)
    old, carry = old_dir(final), carry_dir(final)
    for aside in (old, carry):  # a user's folder of that name (a backup `.NAME.old`) is never touched
        if os.path.lexists(aside) and not is_own(aside):
            remove_own(aside, flag, aside_of=final)  # (an empty one: a kill in remove_work's last step)
    if final.is_dir():
        unmark(final)  # left by a kill right after a swap's second rename
    if old.is_dir() and not os.path.lexists(final):
        os.replace(old, final)
        unmark(final)
    if carry.is_dir() and final.is_dir():  # an earlier kill's carry first: `.NAME.old` goes there next
        _carry_over(carry, final, tuple(owned))
    if old.is_dir() and final.is_dir() and not carry.exists():
        os.replace(old, carry)
        _carry_over(carry, final, tuple(owned))


def recover_output(final: Path, owned: Iterable[str], flag: str) -> None:
    """A writer's first step on an output (under its lock): finish a swap a kill interrupted
    (recover_staged) and remove a killed run's `.NAME.partial`, or refuse one of the user's.
    staged_dir does it; a command with long work before its staged_dir (prepare-dataset,
    train) calls it at its start, so what is in the way is named before the work, not after."""
    final = output_target(Path(final))
    recover_staged(final, owned, flag)
    remove_own(partial_dir(final), flag)


@contextlib.contextmanager
def staged_dir(final: Path, inputs: Iterable[os.PathLike | str] = (), marker: str | None = None,
               owned: Iterable[str] = (), flag: str = "--out_dir", written: Written | None = None,
               kind: str = "mypt output", edited: str = "mypt wrote", writes: Iterable[str] = ()) -> Iterator[Path]:
    """Build a directory beside `final` and move it into place when the block succeeds.

    `owned`: glob patterns (relative paths, `train/shard_*.bin`) of what this kind of output
    holds; the marker is one of them. Everything else in the previous output is the user's
    (notes, a model card, samples/) and is carried over into the new one, never deleted; a
    user's entry that the new output would replace is refused before anything changes.

    One writer at a time: the block holds the output's lock (`flag` names the output in the
    message to a second writer). A stale `.NAME.partial` left by a killed run is removed first
    (only if mypt made it: see remove_own),
    and a swap a kill interrupted is finished (recover_staged). On error the partial directory
    is removed and `final` is left as it was. `final` must pass check_replaceable (`inputs`:
    what the block reads; `marker`: the file that marks a previous output of the same kind, so
    a directory of other files is refused) before anything is built. A symlinked `final` is
    replaced at its target. Errors about paths inside the staging directory name the output.
    `written`: where the marker records the files the output holds, how to read them (see
    check_written): then only what it lists is mypt's, and another kind's record is refused;
    where it records their sha256, one the user edited since is refused (`edited`: who wrote it).
    `writes`: glob patterns of what the new output holds, where they are known before the work
    (an export's config.json, the demo's texts): a user's entry there is refused before the work
    (_check_clashes), the rest once the new output is built.
    """
    from mypt.lock import output_lock  # lock imports names only: no cycle

    check_replaceable(final, flag=flag)  # (`.`, a link that loops: before any name beside it is made)
    final = output_target(Path(final))
    owned = tuple(owned) + ((marker,) if marker else ())
    with output_lock(final, flag):
        recover_output(final, owned, flag)
        # The inputs only here, where the output is as a recovery (or another writer) left it: each
        # is resolved once a run, and none for a new output (check_replaceable).
        check_replaceable(final, inputs, flag=flag, marker=marker, kind=kind)
        # The record is read once, under the lock: both checks judge by it.
        recorded = read_record(final, written, marker, flag, kind)
        _check_record(final, owned, recorded, marker, flag, kind, edited)
        if writes := tuple(writes):
            _check_clashes(final, [rel for rel in user_entries(final, owned)
                                   if _owns(rel, writes) or _holds_owned(rel, writes)], flag, marker)
        check_movable(final, owned, flag)
        staging = make_own_dir(partial_dir(final))
        try:
            try:
                yield staging
            except OSError as e:  # name the output the user asked for, not mypt's staging directory
                raise _renamed(e, staging, final) from None
            _check_swappable(final, staging, owned, flag, marker)
            # A file added during the work. Its sums are not read again: an export's weights are
            # gigabytes, hashed once before the work.
            _check_record(final, owned, recorded, marker, flag, kind, edited, sums=False)
        except BaseException:
            remove_work(staging, ignore_errors=True)
            raise
        # Ctrl-C and SIGTERM wait the moments these renames take: one there left the user's files
        # in `.NAME.carry`, out of sight until the next run on that output.
        with stops_held():
            try:
                _swap(final, staging)
            except BaseException:
                remove_work(staging, ignore_errors=True)
                raise
            _settle(final, owned)


def _settle(final: Path, owned: tuple[str, ...]) -> None:
    """A swap's steps once the new output is in place: its mark removed (a kill in between leaves
    a complete output with a stray mark, which user_entries counts as mypt's, never an unmarked
    `.NAME.partial` that the next run refuses), the user's files of the previous output carried
    into it. A failure here (a full disk, an I/O error) is an OutputInPlace: the output is whole,
    and the message says where the user's files wait; the next writer of the output moves them in
    (recover_staged)."""
    old, carry = old_dir(final), carry_dir(final)
    try:
        unmark(final)
        if carry.is_dir():  # a run killed mid-carry, whose output was removed since
            _carry_over(carry, final, owned)
        if old.exists():
            os.replace(old, carry)
            _carry_over(carry, final, owned)
    except InputError as e:  # _carry_over's, naming what is left where
        raise OutputInPlace(str(e)) from None
    except OSError as e:
        aside = next((p for p in (old, carry) if os.path.lexists(p)), None)
        raise OutputInPlace(not_carried(final, aside, os_error_message(e), owned=owned)) from None


def not_carried(final: Path, aside: Path | None, cause: str, names: list[str] | None = None,
                owned: tuple[str, ...] = ()) -> str:
    """What a failure after a swap left: the new output in place, and the previous one, or what is left of it, in
    `aside` (None: only the output's work mark); `names`: the user's files that could not be moved (the others
    were), where known, else those in `aside` by the output's patterns `owned` (none: the previous output alone,
    which the next write removes)."""
    if aside is None:
        return (f"{final} is in place, whole, but its work mark {WORK_MARK} is left in it ({cause}): the next write of "
                f"{final.name} removes it")
    if names is not None:
        what = f"{listed(names, 3)} of the files you added to it {'is' if len(names) == 1 else 'are'}"
    else:
        try:
            users = user_entries(aside, owned)
        except OSError:  # (the folder cannot be read: said as a whole)
            users = None
        if users == []:
            return (f"{final} is in place, whole, but its previous version is still in {aside} ({cause}), with no "
                    f"file of yours in it: the next write of {final.name} removes it; or remove it by hand")
        what = "the files you added to it are" if users is None else \
            f"the files you added to it ({listed(users, 3)}) are"
    return (f"{final} is in place, whole, but {what} still in {aside} ({cause}), with the previous output's own "
            f"files: the next write of {final.name} tries again to move them in; or move them (only them) into "
            f"{final} by hand")


def _check_swappable(final: Path, staging: Path, owned: tuple[str, ...], flag: str, marker: str | None) -> None:
    """Refuse, before anything changes, a swap that would replace a user's file or stop half-way."""
    _check_clashes(final, _clashes(final, staging, owned), flag, marker)
    check_movable(final, owned, flag)


def _check_clashes(final: Path, clashes: list[str], flag: str, marker: str | None) -> None:
    """The refusal of the user's entries of the output (`clashes`, relative paths) that the new
    output would replace: before the work where staged_dir knows the new output's names
    (`writes`), else once it is built."""
    if clashes:
        them, names = ("it", "that name") if len(clashes) == 1 else ("them", "those names")
        unlisted = f" (its {marker} does not list {them})" if marker else ""
        raise InputError(f"{flag} {final} holds {listed(clashes, 3)}, which mypt did not write{unlisted}, where the "
                         f"new output writes {names}: refused, nothing changed; move {them} out of {final}, or choose "
                         f"another {flag}")


def check_movable(final: Path, owned: Iterable[str], flag: str = "--out_dir") -> None:
    """Refuse an output that a swap could not move aside with the user's files in it (see
    _unmovable), or one holding an entry of the user's where the new output has one of another
    kind (_misplaced): staged_dir checks before its work and again before its swap;
    prepare-dataset, --append_to and training at their start, before the work or the first save
    would stop."""
    final, owned = output_target(Path(final)), tuple(owned)
    own, users = _entries(final, owned)  # (one walk for the checks; none where there is no folder)
    misplaced = _misplaced(final, users, owned)
    if misplaced:
        rel = misplaced[0]
        parent = os.path.dirname(rel)
        what = f"a folder in {parent}/, which holds only mypt's files" \
            if any(p.endswith("/*") and _owns(rel, (p,)) for p in owned) else \
            "a folder, where mypt writes a file of that name" if _owns(rel, owned) else \
            "not a folder, where mypt makes one of that name"
        raise InputError(f"{listed([str(final / r) for r in misplaced], 1)} is {what}: mypt did not make it, and "
                         f"writing the output would replace it: refused, nothing changed; move it out of {final} (or "
                         "rename it) and run again")
    stuck = _unmovable(final, users)
    if os.path.realpath(final) in stuck:  # (a container's volume: it cannot be renamed aside)
        inside = f"pass --checkpoints_dir {final}" if flag == "--model_name" else \
            f"give a folder inside it, e.g. {final / 'out'}"
        raise InputError(f"{flag} {final} is a mount point: mypt puts a new output in place by renaming the old "
                         f"one aside, which a mount point refuses; {inside}")
    pinned = _pinned(final, users, itself=True)
    if pinned:
        raise InputError(f"{listed(pinned, 3)}: immutable or append-only (chattr +i or +a), so mypt cannot move your "
                         f"files into its new output: refused, nothing changed; clear the flag (chattr -i -a), move it "
                         f"out of {final}, or choose another output")
    pinned = _pinned(final, own)
    if pinned:
        raise InputError(f"{listed(pinned, 3)}: immutable or append-only (chattr +i or +a), so mypt cannot remove the "
                         f"previous output's files once the new one replaces it (they would stay beside it, in "
                         f"{carry_dir(final).name}): refused, nothing changed; clear the flag (chattr -i -a), or "
                         "choose another output")
    if stuck:
        raise InputError(f"{listed(stuck, 3)}: read-only or a mount point, so mypt cannot put its new output in "
                         "place and keep your files: refused, nothing changed; make it writable (chmod u+w), unmount "
                         "it, or choose another output")


def keep_dir_attributes(previous: Path, new: Path, times: bool = False) -> None:
    """`new`, which takes the place of directory `previous`, gets its permissions (a folder
    made private stays private; setgid, so the group's files stay the group's), its group,
    where the user may give it, and with `times` its times: a replaced output came back
    drwxr-xr-x, the user's."""
    st = os.stat(previous)
    os.chmod(new, stat.S_IMODE(st.st_mode))
    if times:
        os.utime(new, ns=(st.st_atime_ns, st.st_mtime_ns))
    try:
        os.chown(new, -1, st.st_gid)
    except PermissionError:  # (a group the user is not in: the umask's group, as any new folder)
        pass


def _swap(final: Path, staging: Path) -> None:
    """The previous output is moved aside, not deleted, until the new one is in place: a
    rename refused (read-only, busy) leaves it as it was. The new output keeps the previous
    one's permissions and group, and its staging's mark (_settle removes it)."""
    old = old_dir(final)
    if os.path.isdir(final):
        keep_dir_attributes(final, staging)
    if os.path.lexists(final):
        mark_own(final)  # aside, it is mypt's to put back or carry over (recover_staged)
        try:
            os.replace(final, old)
        except BaseException:
            unmark(final)  # left as it was
            raise
    try:
        # Between the renames: a kill before it leaves the previous output aside, which the next run puts back, with
        # its report; after it, neither output has the previous output's report beside it.
        _drop_reports(final)
        os.replace(staging, final)
    except BaseException:
        if old.exists():
            os.replace(old, final)
            unmark(final)
        raise


def _renamed(e: OSError, staging: Path, final: Path) -> OSError:
    """`e` with paths under `staging` shown under `final`."""
    def show(name):
        if name is None:
            return None
        text = os.fsdecode(name)
        return text.replace(str(staging), str(final), 1) if text.startswith(str(staging)) else name
    # (Only those set: an OSError without an errno, numpy's short write, would print None for each.)
    if e.filename is not None:
        e.filename = show(e.filename)
    if e.filename2 is not None:
        e.filename2 = show(e.filename2)
    return e


def concat_files(parts: list[Path], dest) -> int:
    """Append the parts to the open binary file `dest` and delete them; returns bytes copied."""
    total = 0
    for part in parts:
        with open(part, "rb") as src:
            total += os.fstat(src.fileno()).st_size
            shutil.copyfileobj(src, dest, 1 << 20)
        part.unlink()
    return total


def join_parts(parts: list[Path], dest: Path) -> int:
    """The part files tasks wrote, in order, as the file `dest` of a staged dir (io.staged_dir:
    the whole dir appears or nothing does); the parts are deleted. Returns its bytes. A lone
    part, the one block of a small source, is renamed into place: a tiny file's source paid a
    copy and atomic_file's own staging for nothing."""
    if len(parts) == 1:
        os.replace(parts[0], dest)
        return os.stat(dest).st_size
    with atomic_file(dest) as f:
        return concat_files(parts, f)
