"""An input is checked to be the file it was when resolved by what names a file wherever it
is read: its inode number and file type. Not its device (each node of a Ray cluster mounts
the shared storage with its own), nor its permission bits (a chmod is no other file)."""

from __future__ import annotations

import json
import os
import stat
import types
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

import mypt.steps.clean
from mypt.cli import main
from mypt.errors import InputError
from mypt.readers import reader_for
from mypt.text import DecodeCounter

ARROW = "data-00000-of-00001.arrow"


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


def saved_dataset(path: Path) -> Path:
    """A directory as Dataset.save_to_disk writes it: two rows of text in one Arrow file."""
    pa = pytest.importorskip("pyarrow")
    path.mkdir()
    table = pa.table({"text": ["Some text here.", "More text."]})
    with pa.OSFile(str(path / ARROW), "wb") as f, pa.ipc.new_stream(f, table.schema) as writer:
        writer.write_table(table)
    (path / "state.json").write_text(json.dumps({"_data_files": [{"filename": ARROW}]}))
    (path / "dataset_info.json").write_text("{}")
    return path


def test_a_saved_dataset_is_read_through_its_mapped_arrow_files(tmp_path):
    assert read_all(resolved(saved_dataset(tmp_path / "saved"))) == ["Some text here.", "More text."]


@pytest.mark.timeout(20)
@pytest.mark.parametrize("name", ["state.json", ARROW])
def test_a_file_of_a_saved_dataset_replaced_by_a_fifo_after_it_was_resolved_is_refused(tmp_path, monkeypatch,
                                                                                         name):
    # A FIFO in state.json's place blocked a worker in open() for ever (no writer comes); in an
    # Arrow file's, the message was pyarrow's about memory-mapping it. Each is refused, named.
    saved = saved_dataset(tmp_path / "saved")
    resolved_inputs = mypt.steps.clean.text_sources

    def then_swapped(*args, **kwargs):
        found = resolved_inputs(*args, **kwargs)
        (saved / name).unlink()
        os.mkfifo(saved / name)
        return found

    monkeypatch.setattr(mypt.steps.clean, "text_sources", then_swapped)
    result = CliRunner().invoke(main, ["prepare-dataset", "--input_files", str(saved), "--out_dir",
                                       str(tmp_path / "ds"), "--val_fraction", "0", "--workers", "1",
                                       "--tokenization", "char"])
    assert result.exit_code == 1, result.output + repr(result.exception)
    assert result.output.strip() == (f"Error: {saved / name} is now a FIFO (named pipe), not a regular file: mypt "
                                     "reads only regular files (each more than once); run again once nothing "
                                     "replaces it")


def test_an_arrow_file_of_a_saved_dataset_replaced_by_another_file_is_refused(tmp_path):
    # The same bytes and mtime, another file (a copy renamed over it): found by its identity.
    saved = saved_dataset(tmp_path / "saved")
    reader = resolved(saved)
    copy = tmp_path / "copy.arrow"
    copy.write_bytes((saved / ARROW).read_bytes())
    os.utime(copy, ns=(reader.stamp.mtime_ns, reader.stamp.mtime_ns))
    os.replace(copy, saved / ARROW)
    with pytest.raises(InputError, match=f"^{saved / ARROW} was replaced by another file while mypt read it"):
        read_all(reader)


def test_a_leased_file_is_opened_blocking(tmp_path, monkeypatch):
    # Where a file lease is held (Samba's oplocks, nfsd's delegations), a non-blocking open fails
    # with EWOULDBLOCK: an input and a shard that are regular files are opened again, blocking.
    import errno

    from mypt.shards import open_shard
    real_open = os.open

    def leased(path, flags, *args, **kwargs):
        if flags & os.O_NONBLOCK:
            raise BlockingIOError(errno.EWOULDBLOCK, os.strerror(errno.EWOULDBLOCK), path)
        return real_open(path, flags, *args, **kwargs)

    src = tmp_path / "a.txt"
    src.write_bytes(b"Some text.\n")
    shard = tmp_path / "shard_000000.bin"
    shard.write_bytes(bytes(8))
    reader = resolved(src)
    monkeypatch.setattr(os, "open", leased)
    assert "".join(read_all(reader)) == "Some text.\n"
    fd, st = open_shard(shard)
    os.close(fd)
    assert st.st_size == 8
    os.mkfifo(tmp_path / "fifo")  # (not a regular file: not opened blocking, which would wait for a writer)
    with pytest.raises(BlockingIOError):
        open_shard(tmp_path / "fifo")
