"""Crash-safe file output: a file appears under its final name only when complete.

Files are written under a temporary name in the same directory and renamed (atomic on
POSIX); directories are built under `.NAME.partial` beside their final place and renamed
at the end, so a killed run leaves nothing that passes for a finished output.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Iterable, Iterator

from mypt.errors import InputError

def tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as f:
        f.write(data)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, obj: object) -> None:
    """Deterministic JSON (sorted keys would reorder sources; we keep insertion order)."""
    atomic_write_text(Path(path), json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def read_json(path: Path) -> dict:
    """A JSON object mypt wrote; a damaged or foreign file is an InputError naming it."""
    from mypt.errors import InputError

    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
        raise InputError(f"{path}: not valid JSON ({e}); the file is damaged: prepare that directory again") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: not a JSON object; the file is damaged: prepare that directory again")
    return data


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
    """Open `path` for writing under a temporary name; renamed into place on success,
    removed on error."""
    path = Path(path)
    tmp = tmp_name(path)
    f = open(tmp, mode)
    try:
        yield f
        f.close()  # a full disk may only show here, when the last buffer is written
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            f.close()
        tmp.unlink(missing_ok=True)
        raise


def partial_dir(final: Path) -> Path:
    final = Path(final)
    return final.parent / f".{final.name}.partial"


def check_replaceable(out_dir: Path, inputs: Iterable[os.PathLike | str] = (), flag: str = "--out_dir",
                      marker: str | None = None, kind: str = "mypt output") -> None:
    """The one rule of what mypt may delete to put an output in place. Writing an output
    replaces the whole directory (staged_dir; prepare-dataset --overwrite), so a mistyped
    --out_dir would cost the user their files: refuse, before anything is touched, a
    directory that is (or holds) the current, home or root directory, one that is (or
    holds) an input, and a file. With `marker`, also a non-empty directory without that
    file (not mypt's own `kind`). mypt's own work directories (`.NAME.work`,
    `.NAME.partial`) are not outputs and stay removable.
    """
    target = Path(out_dir).resolve()
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
    for given in inputs:
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
    return Path(final).parent / f".{Path(final).name}.old"


@contextlib.contextmanager
def staged_dir(final: Path, inputs: Iterable[os.PathLike | str] = (), marker: str | None = None) -> Iterator[Path]:
    """Build a directory beside `final` and move it into place when the block succeeds.

    A stale `.NAME.partial` left by a killed run is removed first. On error the partial
    directory is removed and `final` is left as it was. `final` is replaced whole, so it
    must pass check_replaceable (`inputs`: what the block reads; `marker`: the file that
    marks a previous output of the same kind, so a directory of other files is refused)
    before anything is built. The DVC stages' outputs pass: DVC removes them first.
    """
    final = Path(final)
    old = old_dir(final)
    if not final.exists() and old.is_dir():  # a run killed between the two renames below
        os.replace(old, final)
    check_replaceable(final, inputs, marker=marker)
    staging = partial_dir(final)
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        yield staging
        # The previous output is moved aside, not deleted, until the new one is in place:
        # a rename refused (read-only, busy) leaves it as it was.
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            os.replace(final, old)
        try:
            os.replace(staging, final)
        except BaseException:
            if old.exists():
                os.replace(old, final)
            raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)


def concat_files(parts: list[Path], dest) -> int:
    """Append the parts to the open binary file `dest` and delete them; returns bytes copied."""
    total = 0
    for part in parts:
        with open(part, "rb") as src:
            total += os.fstat(src.fileno()).st_size
            shutil.copyfileobj(src, dest, 1 << 20)
        part.unlink()
    return total
