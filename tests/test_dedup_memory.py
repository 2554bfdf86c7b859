"""Dedup holds its records within --dedup_memory_mb whatever the shape of the corpus: one line
repeated thousands of times (all its copies hash alike), a few lines repeated, a compressed
input (one block, so one record file), long lines; through both entry points (the stage's
dedup() on clean's output, and prepare-dataset's hashing as clean writes). The budget is
shrunk to a few hundred records a run, and the largest array of records dedup reads is
recorded; the output stays exactly the set-based reference's."""

from __future__ import annotations

import gzip
import json
import os
import random

import numpy as np
import pytest
from test_dedup import reference_dedup

import mypt.steps.dedup as dedup_step
from mypt.steps.clean import CleanSettings, clean
from mypt.errors import InputError
from mypt.steps.dedup import REC, DedupSettings, Hashing, dedup

PER_RUN = 256  # records a run may hold at --dedup_memory_mb 1 in these tests


@pytest.fixture
def largest_read(monkeypatch) -> list[int]:
    """A budget of PER_RUN records a run at memory_mb 1; [0] is the most records dedup held
    in one array read from its files (a block's hash records, a batch of them, or a run)."""
    monkeypatch.setattr(dedup_step, "BYTES_PER_RECORD_SORTED", 2**20 // PER_RUN)
    largest = [0]
    fromfile = np.fromfile

    def spy(*args, **kwargs):
        out = fromfile(*args, **kwargs)
        if out.dtype == REC:
            largest[0] = max(largest[0], out.size)
        return out

    monkeypatch.setattr(np, "fromfile", spy)
    return largest


def corpus(seed: int) -> list[str]:
    """One line 4000 times (in case and spacing variants: one key), seven lines 300 times
    each, 1500 distinct lines, blank and short lines; shuffled."""
    rng = random.Random(seed)
    footer = "The same footer line of every page, over and over"
    lines = [footer.upper() if i % 5 == 0 else footer.replace(" ", "  ") if i % 7 == 0 else footer
             for i in range(4000)]
    lines += [f"boilerplate sentence number {i % 7} of seven, again" for i in range(2100)]
    lines += [f"a distinct line, number {i}, of the corpus text" for i in range(1500)]
    lines += [""] * 200 + ["Exit."] * 200
    rng.shuffle(lines)
    return lines


def dedup_lines(out_dir, manifest) -> list[str]:
    got = []
    for s in manifest["sources"]:
        text = (out_dir / s["file"]).read_text()
        if s["jsonl"]:
            got += [line for rec in text.splitlines() for line in json.loads(rec)["text"][:-1].split("\n")]
        else:
            got += text[:-1].split("\n")
    return got


def test_heavy_repetition_stays_in_budget_and_exact(tmp_path, largest_read):
    lines = corpus(1)
    (tmp_path / "in").mkdir()
    for f, part in enumerate((lines[:5000], lines[5000:])):  # across files
        (tmp_path / "in" / f"part{f}.txt").write_text("\n".join(part) + "\n")
    clean([str(tmp_path / "in")], tmp_path / "clean", CleanSettings(filter=False, workers=1))
    small = dedup(tmp_path / "clean", tmp_path / "small", DedupSettings(memory_mb=1, workers=1))

    # Without the batches' reduction the footer's 4000 records fill one run; without the
    # batches, a block's 5000 records are read at once.
    assert largest_read[0] <= PER_RUN and small["stats"]["dedup"]["runs"] >= 20
    assert dedup_lines(tmp_path / "small", small) == reference_dedup(lines, 24)
    stats = small["stats"]["dedup"]
    assert stats["unique_keys"] == 1 + 7 + 1500 and stats["duplicate_lines_dropped"] == 3999 + 2093


def test_compressed_input_prepared_with_hashing_stays_in_budget_and_exact(tmp_path, largest_read, monkeypatch):
    """prepare-dataset's way: clean hashes as it writes (Hashing). A .gz input is one block, so
    one record file of all its lines; and its lines, long ones included, are hashed a piece
    (BLOCK_BYTES of output) at a time, not HASH_FLUSH_LINES lines at a time whatever their
    length (clean gives them a document at a time)."""
    lines = [line for line in corpus(2) if line]  # (blank lines at a document's ends are clean's to drop)
    lines[::50] = [f"a long line {i} " + "of many words " * 40 + "end" for i in range(len(lines[::50]))]
    (tmp_path / "in").mkdir()
    for name, part in (("a", lines[:5000]), ("b", lines[5000:])):  # documents of 5 lines, in two files
        with gzip.open(tmp_path / "in" / f"{name}.jsonl.gz", "wt") as f:
            for i in range(0, len(part), 5):
                f.write(json.dumps({"text": "\n".join(part[i:i + 5]) + "\n"}) + "\n")
    monkeypatch.setattr(dedup_step, "BLOCK_BYTES", 3000)  # a write piece, and a hashing flush, of about 3 kB
    hashed_chars = []  # of the lines each flush of the Hashing sink hashes
    hash_records = dedup_step.hash_records

    def spy(lines, min_chars):
        hashed_chars.append(sum(map(len, lines)))
        return hash_records(lines, min_chars)

    monkeypatch.setattr(dedup_step, "hash_records", spy)
    settings = CleanSettings(filter=False, workers=1)
    (tmp_path / "hashed").mkdir()
    clean([str(tmp_path / "in")], tmp_path / "clean", settings, sink=Hashing(tmp_path / "hashed", 24))
    chained = dedup(tmp_path / "clean", tmp_path / "chained", DedupSettings(memory_mb=1, workers=1),
                    hashed=tmp_path / "hashed")

    assert largest_read[0] <= PER_RUN and chained["stats"]["dedup"]["runs"] >= 20
    assert max(hashed_chars) <= 3000  # a piece's lines (documents are about 1 kB)
    # The write phase's blocks, clean's output in pieces: each within BLOCK_BYTES.
    assert max(size for p in (tmp_path / "hashed").glob("*.json") for size, _ in json.loads(p.read_text())["pieces"]) \
        <= 3000
    assert dedup_lines(tmp_path / "chained", chained) == reference_dedup(lines, 24)
    read_back = dedup(tmp_path / "clean", tmp_path / "read_back", DedupSettings(workers=1))  # one run
    assert read_back["stats"]["dedup"]["runs"] == 1
    for s in read_back["sources"]:
        assert (tmp_path / "chained" / s["file"]).read_bytes() == (tmp_path / "read_back" / s["file"]).read_bytes()
    assert {k: v for k, v in chained["stats"]["dedup"].items() if k != "runs"} == \
        {k: v for k, v in read_back["stats"]["dedup"].items() if k != "runs"}


def test_a_corpus_of_repeated_lines_is_sized_by_what_its_runs_hold(tmp_path, largest_read, monkeypatch):
    """Runs were sized from every record, duplicates included: a corpus whose lines repeat was
    refused for needing more than MAX_RUNS runs (at the default 256 MB, over 2 G keyed lines),
    while its runs, each batch reduced to one record a hash, would hold a few records."""
    monkeypatch.setattr(dedup_step, "MAX_RUNS", 4)  # 1,024 records in all at PER_RUN 256
    lines = [line for line in corpus(3) if not line.startswith("a distinct line")]  # 6,100 keyed: 24 runs
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.txt").write_text("\n".join(lines) + "\n")
    clean([str(tmp_path / "in")], tmp_path / "clean", CleanSettings(filter=False, workers=1))
    out = dedup(tmp_path / "clean", tmp_path / "out", DedupSettings(memory_mb=1, workers=1))
    stats = out["stats"]["dedup"]
    assert stats["keyed_lines"] > 4 * PER_RUN * 5  # sized from every record, 20 runs and more
    assert stats["runs"] <= 4 and largest_read[0] <= PER_RUN
    assert dedup_lines(tmp_path / "out", out) == reference_dedup(lines, 24)
    assert stats["unique_keys"] == 1 + 7


def test_a_corpus_of_distinct_lines_beyond_the_runs_is_refused_naming_the_flag(tmp_path, largest_read, monkeypatch):
    monkeypatch.setattr(dedup_step, "MAX_RUNS", 4)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.txt").write_text("".join(f"a distinct line, number {i}, of the corpus\n"
                                                   for i in range(1500)))
    clean([str(tmp_path / "in")], tmp_path / "clean", CleanSettings(filter=False, workers=1))
    with pytest.raises(InputError, match=r"^dedup needs 6 runs at --dedup_memory_mb 1; raise it to at least 2$"):
        dedup(tmp_path / "clean", tmp_path / "out", DedupSettings(memory_mb=1, workers=1))


def test_a_tiny_files_records_are_read_into_no_more_room_than_they_take(tmp_path, monkeypatch):
    """fromfile allocates `count` records before it reads: asked for a batch's worth, a tiny
    file's few records took a page and a memory map each until the batch was joined (65,530
    maps at most: a corpus of 200,000 tiny files crashed). Each read asks for what is left."""
    (tmp_path / "in").mkdir()
    for i in range(30):
        (tmp_path / "in" / f"doc{i:02d}.txt").write_text(f"the line of tiny file number {i}\n"
                                                          f"a footer line of every file, one of seven: {i % 7}\n")
    asked_beyond = []  # of each read of records: the records asked for less those left in the file
    fromfile = np.fromfile

    def spy(file, dtype=float, count=-1, **kwargs):
        if np.dtype(dtype) == REC and count > 0:
            asked_beyond.append(count - (os.fstat(file.fileno()).st_size - file.tell()) // REC.itemsize)
        return fromfile(file, dtype=dtype, count=count, **kwargs)

    monkeypatch.setattr(np, "fromfile", spy)
    clean([str(tmp_path / "in")], tmp_path / "clean", CleanSettings(filter=False, workers=1))
    manifest = dedup(tmp_path / "clean", tmp_path / "dedup", DedupSettings(workers=1))

    assert len(asked_beyond) >= 30 and max(asked_beyond) <= 0, asked_beyond[:5]
    assert manifest["stats"]["dedup"]["duplicate_lines_dropped"] == 30 - 7
