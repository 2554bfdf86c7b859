"""Permission denied on a folder or a file, for tests that run as root or not: its mode is taken away, and
where the tests run as root (who passes permission bits) os.scandir and os.stat refuse it as the
kernel refuses anyone else, with the same error."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Callable

import pytest


def deny(monkeypatch: pytest.MonkeyPatch, folder: Path, list_it: bool = False) -> Callable[[], None]:
    """`folder` cannot be listed (mode 0), or with `list_it` is listed but nothing in it looked up
    (mode 0o600: no search permission). Returns what gives its mode back (before the test's
    tmp_path is removed); monkeypatch undoes the rest."""
    folder = Path(os.path.abspath(folder))
    mode = folder.stat().st_mode
    folder.chmod(0o600 if list_it else 0)
    if os.geteuid() == 0:
        real_scandir, real_stat = os.scandir, os.stat

        def refuse(path: object) -> None:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))

        def scandir(path: object = ".") -> object:
            if not list_it and isinstance(path, (str, os.PathLike)) and Path(os.path.abspath(path)) == folder:
                refuse(path)
            return real_scandir(path)

        def stat(path: object, *args, **kwargs) -> os.stat_result:
            if isinstance(path, (str, os.PathLike)) and folder in Path(os.path.abspath(path)).parents:
                refuse(path)
            return real_stat(path, *args, **kwargs)
        monkeypatch.setattr(os, "scandir", scandir)
        monkeypatch.setattr(os, "stat", stat)
    return lambda: folder.chmod(mode)


def deny_file(monkeypatch: pytest.MonkeyPatch, file: Path) -> Callable[[], None]:
    """`file` may not be read (mode 0): under root, os.open refuses it and os.access says so, as
    the kernel does for anyone else. Returns what gives its mode back."""
    file = Path(os.path.abspath(file))
    mode = file.stat().st_mode
    file.chmod(0)
    if os.geteuid() == 0:
        real_open, real_access = os.open, os.access

        def is_it(path: object) -> bool:
            return isinstance(path, (str, os.PathLike)) and Path(os.path.abspath(path)) == file

        def open_(path: object, flags: int, *args, **kwargs) -> int:
            if is_it(path) and kwargs.get("dir_fd") is None:
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))
            return real_open(path, flags, *args, **kwargs)

        def access(path: object, mode: int, *args, **kwargs) -> bool:
            return False if is_it(path) and kwargs.get("dir_fd") is None else real_access(path, mode, *args, **kwargs)
        monkeypatch.setattr(os, "open", open_)
        monkeypatch.setattr(os, "access", access)
    return lambda: file.chmod(mode)
