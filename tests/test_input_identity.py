"""An input is checked to be the file it was when resolved by what names a file wherever it
is read: its inode number and file type. Not its device (each node of a Ray cluster mounts
the shared storage with its own), nor its permission bits (a chmod is no other file)."""

from __future__ import annotations

import os
import stat
import types
from collections import Counter
from pathlib import Path

import pytest

from mypt.readers import reader_for
from mypt.text import DecodeCounter


def read_all(reader) -> list[str]:
    """Every text of the reader, through the checks a worker makes (checked_blocks, checked_texts)."""
    texts = []
    for start, end in reader.checked_blocks():
        texts += reader.checked_texts(start, end, DecodeCounter(), Counter())
    return texts


def resolved(path: Path):
    reader = reader_for(path)
    reader.stamp = reader.current_stamp()  # as text_sources does
    return reader


def on_another_device(monkeypatch) -> None:
    """os.stat and os.fstat answer as on another node: the same files, another st_dev."""
    def moved(real):
        def answer(*args, **kwargs):
            st = real(*args, **kwargs)
            fields = {k: getattr(st, k) for k in dir(st) if k.startswith("st_")}
            return types.SimpleNamespace(**{**fields, "st_dev": st.st_dev + 1})
        return answer

    monkeypatch.setattr(os, "stat", moved(os.stat))
    monkeypatch.setattr(os, "fstat", moved(os.fstat))


def test_an_input_read_where_its_device_number_differs_is_read(tmp_path, monkeypatch):
    # A Ray worker on another node sees the input at the same path on its own NFS mount: another
    # st_dev. Every input read there was refused as "replaced by another file".
    src = tmp_path / "a.txt"
    src.write_bytes(b"Some text.\nMore text.\n")
    reader = resolved(src)
    on_another_device(monkeypatch)
    assert "".join(read_all(reader)) == "Some text.\nMore text.\n"


def test_an_input_made_read_only_while_it_is_read_is_read(tmp_path):
    # chmod 444 during a run changed st_mode's permission bits: refused as "replaced by another file".
    src = tmp_path / "a.txt"
    src.write_bytes(b"Some text.\n")
    reader = resolved(src)
    os.chmod(src, stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    assert "".join(read_all(reader)) == "Some text.\n"
