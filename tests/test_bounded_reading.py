"""Reading stays bounded whatever the lines: a line too long to hold is dropped as it is read
(line filter on) or refused (naming file:line, its size and the fix), never held whole; a
lone \\r ends a line when normalizing; a .zst of very compressible data is decompressed in
bounded steps; an input that is no longer the regular file it was is refused, not read
(a FIFO blocked the run for ever). The limits are made small here (mypt.text.MAX_LINE_BYTES, BLOCK_BYTES) so
that what the reader hands on shows the bound."""

from __future__ import annotations

import gzip
import json
import os
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import read_tokens, tree_bytes

import mypt.readers.base
import mypt.steps.clean
import mypt.text
from mypt.cli import main
from mypt.errors import InputError
from mypt.readers import reader_for
from mypt.tokenizers import Tokenizer

LIMIT = 64  # MAX_LINE_BYTES in these tests
PIECE = 16  # BLOCK_BYTES: blocks of plain files, pieces of streams
FILTER = "15"  # --max_line_chars under LIMIT / 4: a line over LIMIT is certainly too long

TEXT = b"First line.\n" + b"x" * 200 + b"\n" + b"Last line.\n"  # line 2, from byte 12, is 200 bytes


@pytest.fixture
def small(monkeypatch):
    monkeypatch.setattr(mypt.text, "MAX_LINE_BYTES", LIMIT)
    monkeypatch.setattr(mypt.text, "BLOCK_BYTES", PIECE)


def prepare(*args: str) -> object:
    return CliRunner().invoke(main, ["prepare-dataset", "--val_fraction", "0", "--no_dedup", "--workers", "1",
                                     "--tokenization", "char", *args])


def ok(result) -> object:
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def refused(result, message: str) -> None:
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output + repr(result.exception)
    assert result.output.strip() == f"Error: {message}"


def dataset_text(ds: Path) -> str:
    return Tokenizer.load(ds).decode(read_tokens(ds / "train"))


def clean_stats(ds: Path) -> dict:
    return json.loads((ds / "dataset_metadata.json").read_text())["stats"]["clean"]


def write(path: Path, data: bytes) -> Path:
    """`data` as `path`, compressed as its suffix says."""
    if path.suffix == ".gz":
        data = gzip.compress(data)
    elif path.suffix == ".zst":
        data = pytest.importorskip("zstandard").ZstdCompressor().compress(data)
    elif path.suffix == ".parquet":  # one row of the text
        pa, pq = pytest.importorskip("pyarrow"), pytest.importorskip("pyarrow.parquet")
        pq.write_table(pa.table({"text": [data.decode()]}), path)
        return path
    path.write_bytes(data)
    return path


def pieces(reader, stats: Counter) -> list[bytes]:
    return [p for start, end in reader.checked_blocks() for p in reader.chunks(start, end, stats)]


@pytest.mark.parametrize("name", ["a.txt", "a.txt.gz", "a.txt.zst"])
def test_a_line_over_the_limit_is_dropped_as_it_is_read(tmp_path, small, name):
    src = write(tmp_path / name, TEXT)
    reader, stats = reader_for(src), Counter()
    reader.filter_chars = int(FILTER)  # as the clean step sets it
    got = pieces(reader, stats)
    assert b"".join(got) == b"First line.\nLast line.\n" and stats == {"dropped_too_long": 1}
    assert max(map(len, got)) <= LIMIT + PIECE  # a held line start and one read
    ok(prepare("--input_files", str(src), "--out_dir", str(tmp_path / "ds"), "--max_line_chars", FILTER))
    assert dataset_text(tmp_path / "ds") == "First line.\nLast line.\n"
    assert clean_stats(tmp_path / "ds")["dropped_too_long"] == 1


@pytest.mark.parametrize("name, where", [("a.txt", "byte 12"), ("a.txt.zst", "byte 12 of the decompressed text")])
def test_a_line_over_the_limit_is_refused_when_kept(tmp_path, small, name, where):
    # --no_filter keeps every line: one too long to hold is an error naming it, not an
    # allocation of its size; so is one the filter would not drop (--max_line_chars above LIMIT / 4).
    src = write(tmp_path / name, TEXT)
    message = (f"{src}:2: a line of 200 bytes (from {where}), more than the 64 bytes mypt holds of one line: "
               "break it into shorter lines (fold -w 10000 FILE > FOLDED); prepare-dataset drops such lines "
               "(counted as too_long) when the line filter is on (no --no_filter)")
    for flags in (["--no_filter"], ["--max_line_chars", "16"]):
        refused(prepare("--input_files", str(src), "--out_dir", str(tmp_path / "ds"), *flags), message)
    with pytest.raises(InputError, match="a line of 200 bytes"):
        pieces(reader_for(src), Counter())  # any reader, without the clean step's filter


def test_a_jsonl_record_over_the_limit_is_refused(tmp_path, small):
    record = json.dumps({"text": "word " * 5}).encode() + b"\n"
    src = write(tmp_path / "b.jsonl", record + json.dumps({"text": "word " * 40}).encode() + b"\n" + record)
    size = len(json.dumps({"text": "word " * 40}))
    refused(prepare("--input_files", str(src), "--out_dir", str(tmp_path / "ds")),
            f"{src}:2: a line of {size} bytes (from byte {len(record)}), more than the 64 bytes mypt holds of one "
            "line: split the document into several records (lines)")


def test_a_lone_cr_ends_a_line_when_normalizing(tmp_path, small):
    # Old Mac text (and a file of \r only) has no \n: its pieces are cut at lone \r, never
    # between \r and \n, and the dataset is the one of its lines ended by \n.
    lines = [f"Line {i} of old Mac text." for i in range(30)]
    data = "\r".join(lines).encode() + b"\r\n" + b"\r" * 300 + b"\r\n".join(x.encode() for x in lines)
    src = write(tmp_path / "mac.txt", data)
    reader = reader_for(src)
    reader.cr_ends_lines = True  # as the clean step sets it when normalizing
    got = pieces(reader, Counter())
    assert b"".join(got) == data and max(map(len, got)) <= LIMIT + PIECE
    assert not any(a.endswith(b"\r") and b.startswith(b"\n") for a, b in zip(got, got[1:]))
    ok(prepare("--input_files", str(src), "--out_dir", str(tmp_path / "ds"), "--no_filter"))
    assert dataset_text(tmp_path / "ds") == "\n".join(lines) + "\n" + "\n" * 300 + "\n".join(lines) + "\n"
    # Not normalized, a \r is text: the first line runs to the first \n, too long to hold.
    first = data.index(b"\n")
    refused(prepare("--input_files", str(src), "--out_dir", str(tmp_path / "ds2"), "--no_filter", "--no_normalize"),
            f"{src}:1: a line of {first:,} bytes (from byte 0), more than the 64 bytes "
            "mypt holds of one line: break it into shorter lines (fold -w 10000 FILE > FOLDED); prepare-dataset "
            "drops such lines (counted as too_long) when the line filter is on (no --no_filter)")


@pytest.mark.parametrize("flags", [[], ["--no_normalize"], ["--no_filter"], ["--no_normalize", "--no_filter"]])
@pytest.mark.parametrize("last", ["No newline at the end", " \x1a"])
def test_small_pieces_give_the_same_dataset(tmp_path, monkeypatch, flags, last):
    # Ordinary text read in pieces of 16 bytes gives the dataset it gives in 4 MiB blocks:
    # \r\n, lone \r, a BOM, trailing whitespace, control characters, a last line without \n
    # (one that normalizes to nothing, as DOS's end-of-file mark in the demo's Paradise Lost: a
    # blank line of its own when a block or piece held it alone).
    data = ("\ufeffA first line.  \r\nSecond\tline\x07 here.\rThird line.\n\n12345\nUne ligne d'été."
            + "".join(f"\nMore text, line {i}. " for i in range(40)) + "\n" + last).encode()
    src = write(tmp_path / "a.txt", data)
    ok(prepare("--input_files", str(src), "--out_dir", str(tmp_path / "big"), *flags))
    monkeypatch.setattr(mypt.text, "MAX_LINE_BYTES", LIMIT)
    monkeypatch.setattr(mypt.text, "BLOCK_BYTES", PIECE)
    ok(prepare("--input_files", str(src), "--out_dir", str(tmp_path / "small"), *flags))
    assert tree_bytes(tmp_path / "small") == tree_bytes(tmp_path / "big")
    if last == " \x1a" and "--no_normalize" not in flags:
        assert dataset_text(tmp_path / "big").endswith("line 39.\n")  # no blank line for the mark


def test_zstd_bomb_is_decompressed_in_bounded_steps(tmp_path, monkeypatch):
    # 48 MiB of one repeated line compress to about 2 KB, one 64 KiB read: it was decompressed
    # in one step (and each read of it copied the rest: quadratic). A step now gets 1 KiB of
    # input, at most 32 MiB of output (a zstd block of 128 KiB takes 4 bytes or more).
    zstandard = pytest.importorskip("zstandard")
    line = b"the same line again\n"
    data = line * ((48 << 20) // len(line))
    src = tmp_path / "bomb.txt.zst"
    src.write_bytes(zstandard.ZstdCompressor().compress(data))
    sizes, feed = [], mypt.readers.base._ZstdStream._feed

    def spied(self, raw) -> bytes:
        out = feed(self, raw)
        sizes.append(len(out))
        return out

    monkeypatch.setattr(mypt.readers.base._ZstdStream, "_feed", spied)
    total = sum(len(p) for p in pieces(reader_for(src), Counter()))
    assert total == len(data) and max(sizes) <= 32 << 20 and len(sizes) > 1


@pytest.mark.timeout(20)
@pytest.mark.parametrize("name", ["a.txt", "a.txt.gz", "a.txt.zst", "a.parquet"])
def test_an_input_replaced_by_a_fifo_after_it_was_resolved_is_refused(tmp_path, monkeypatch, name):
    # A FIFO put in an input's place after the walk blocked a worker in open() for ever
    # (no writer comes). It is opened without blocking and refused, naming the file.
    src = write(tmp_path / name, b"Some text.\n")
    resolved = mypt.steps.clean.text_sources

    def then_swapped(*args, **kwargs):
        found = resolved(*args, **kwargs)
        src.unlink()
        os.mkfifo(src)
        return found

    monkeypatch.setattr(mypt.steps.clean, "text_sources", then_swapped)
    refused(prepare("--input_files", str(src), "--out_dir", str(tmp_path / "ds")),
            f"{src} is now a FIFO (named pipe), not a regular file: mypt reads only regular files (each more than "
            "once); run again once nothing replaces it")


def test_an_input_replaced_by_another_file_is_refused(tmp_path):
    # The same size and mtime, another file (a copy renamed over it): found by its identity.
    src = write(tmp_path / "a.txt", b"Some text.\n")
    reader = reader_for(src)
    reader.stamp = reader.current_stamp()
    (tmp_path / "b.txt").write_bytes(b"Other text\n")
    os.utime(tmp_path / "b.txt", ns=(reader.stamp.mtime_ns, reader.stamp.mtime_ns))
    os.replace(tmp_path / "b.txt", src)
    with pytest.raises(InputError, match=f"^{src} was replaced by another file while mypt read it"):
        reader.checked_blocks()


def test_the_filter_counts_each_line_once_among_many_blank_ones():
    # clean_lines finds its candidates lazily (a set of every blank line's index was 333 MB for a
    # 4 MiB block of newlines): a line both too long and without letters is still counted once.
    from mypt.normalize import LineFilter, clean_lines

    drops = Counter()
    text = "\n" * 1000 + "1" * 30 + "\n" + "\r" * 500 + "Kept line.\n" + "x" * 30 + "\n----\n"
    lines = clean_lines(text, True, LineFilter(20), drops)
    assert lines == [""] * 1000 + [""] * 500 + ["Kept line."] and drops == {"too_long": 2, "no_letters": 1}


def test_a_stream_is_read_in_pieces_of_the_one_block_bytes(tmp_path, monkeypatch):
    """mypt.text.BLOCK_BYTES sizes a stream's pieces (a .gz input) as it sizes a plain file's
    blocks: one lookup. The readers took their own copy of it at import (tests patched both)."""
    monkeypatch.setattr(mypt.text, "BLOCK_BYTES", PIECE)
    data = b"".join(b"line %d of a compressed input\n" % i for i in range(200))
    (tmp_path / "a.txt.gz").write_bytes(gzip.compress(data))
    pieces = list(reader_for(tmp_path / "a.txt.gz").chunks(0, -1))
    assert b"".join(pieces) == data and len(pieces) == 200  # (a line of ~30 bytes is over a piece: one a piece)
