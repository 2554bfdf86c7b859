"""Dedup stays exact (first occurrence kept, across files) when its keys exceed the budget."""

from __future__ import annotations

import pytest

import json
import random

import numpy as np

from mypt.steps.clean import CleanSettings, clean
from mypt.steps.dedup import REC, DedupSettings, Hashing, _duplicate_lines, dedup, dedup_key


def reference_dedup(lines: list[str], min_chars: int) -> list[str]:
    seen, kept = set(), []
    for line in lines:
        key = dedup_key(line)
        if len(key) < min_chars or not key:
            kept.append(line)
        elif key not in seen:
            seen.add(key)
            kept.append(line)
    return kept


@pytest.mark.slow
def test_dedup_exact_across_files_far_beyond_memory_budget(tmp_path):
    rng = random.Random(7)
    pool = [f"line number {i} of a corpus with {rng.randint(0, 10**9)} words" for i in range(60_000)]
    files = []
    for f in range(3):
        lines = []
        for _ in range(70_000):
            r = rng.random()
            if r < 0.05:
                lines.append("")
            elif r < 0.1:
                lines.append("Exit.")  # short: never dropped
            else:
                line = rng.choice(pool)
                # Variants of one key: case and whitespace differ, the key does not.
                lines.append(line.upper() if r < 0.2 else line.replace(" ", "  ") if r < 0.3 else line)
        (tmp_path / f"part{f}.txt").write_text("\n".join(lines) + "\n")
        files.append(lines)
    with open(tmp_path / "part3.jsonl", "w") as f:  # documents too: lines inside records are deduped
        docs = [[rng.choice(pool) for _ in range(3)] for _ in range(2000)]
        for d in docs:
            f.write(json.dumps({"text": "\n".join(d) + "\n"}) + "\n")
    clean([str(tmp_path / "part*")], tmp_path / "clean", CleanSettings(filter=False))
    small = dedup(tmp_path / "clean", tmp_path / "small", DedupSettings(memory_mb=1, workers=2))  # ~16k keys a run
    big = dedup(tmp_path / "clean", tmp_path / "big", DedupSettings(memory_mb=512))

    assert small["stats"]["dedup"]["runs"] >= 8 and big["stats"]["dedup"]["runs"] == 1
    expected = reference_dedup([line for lines in files for line in lines] + [line for d in docs for line in d], 24)
    got = []
    for s in small["sources"]:
        text = (tmp_path / "small" / s["file"]).read_text()
        if s["jsonl"]:
            got += [line for rec in text.splitlines() for line in json.loads(rec)["text"][:-1].split("\n")]
        else:
            got += text[:-1].split("\n")
        assert (tmp_path / "small" / s["file"]).read_bytes() == (tmp_path / "big" / s["file"]).read_bytes()
    assert got == expected
    stats = small["stats"]["dedup"]
    assert stats["duplicate_lines_dropped"] == 3 * 70_000 + 6000 - len(expected)
    assert stats["unique_keys"] == len({dedup_key(x) for x in expected if len(dedup_key(x)) >= 24})
    # Documents whose every line was a duplicate are dropped, and counted.
    n_docs = len((tmp_path / "small" / small["sources"][-1]["file"]).read_text().splitlines())
    assert n_docs == 2000 - stats["documents_emptied"] and stats["documents_emptied"] > 0


def test_duplicates_found_by_full_hash_even_when_first_halves_collide():
    # Two keys share their first 64 bits (b = 1 and 2 under a = 5): duplicates are records
    # whose full 128-bit hash a lower line has, whatever order the records come in.
    rec = np.zeros(7, dtype=REC)
    rec["a"] = [5, 7, 5, 5, 7, 5, 9]
    rec["b"] = [1, 3, 2, 1, 3, 2, 1]
    for idx in ([0, 1, 2, 3, 4, 5, 6], [5, 1, 4, 0, 3, 2, 6]):
        rec["idx"] = idx
        first: dict = {}
        for a, b, i in sorted(zip(rec["a"], rec["b"], rec["idx"]), key=lambda r: r[2]):
            first.setdefault((a, b), i)
        expected = sorted(i for a, b, i in zip(rec["a"], rec["b"], rec["idx"]) if first[(a, b)] != i)
        assert sorted(_duplicate_lines(rec).tolist()) == expected
    rec["a"] = [5, 7, 6, 5, 7, 6, 9]  # no collision of first halves: the stable-sort path
    rec["idx"] = range(7)
    assert sorted(_duplicate_lines(rec).tolist()) == [3, 4, 5]


@pytest.mark.parametrize("normalize", [True, False])
def test_hashing_while_cleaning_gives_the_bytes_of_dedup_reading_back(tmp_path, monkeypatch, normalize):
    """prepare-dataset chains dedup's hashing into the clean step's pass (clean(sink=Hashing));
    the DVC stages run dedup on clean's output: the same files and stats, over many clean
    blocks, hash flushes and write pieces (normalize and filter off: the text passes unchanged)."""
    import mypt.steps.dedup as dedup_step
    import mypt.text

    monkeypatch.setattr(mypt.text, "BLOCK_BYTES", 700)  # many clean blocks
    monkeypatch.setattr(dedup_step, "BLOCK_BYTES", 300)  # several write pieces a block
    monkeypatch.setattr(dedup_step, "HASH_FLUSH_LINES", 5)
    rng = random.Random(3)
    pool = [f"a line of the corpus that recurs, number {i}" for i in range(40)]
    lines = [rng.choice(pool) if rng.random() < 0.7 else f"unique line {i} of text" for i in range(400)]
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "book.txt").write_text("\n".join(lines[:250]) + "\nlast line without newline")
    with open(tmp_path / "in" / "docs.jsonl", "w") as f:
        for i in range(0, 150, 3):
            f.write(json.dumps({"text": "\n".join(lines[250 + i:253 + i])}) + "\n")
    settings = CleanSettings(normalize=normalize, filter=normalize, workers=1)
    clean([str(tmp_path / "in")], tmp_path / "clean", settings)
    (tmp_path / "hashed").mkdir()
    clean([str(tmp_path / "in")], tmp_path / "clean_hashed", settings, sink=Hashing(tmp_path / "hashed", 24))
    read_back = dedup(tmp_path / "clean", tmp_path / "dedup", DedupSettings(workers=1))
    chained = dedup(tmp_path / "clean_hashed", tmp_path / "dedup_chained", DedupSettings(workers=1),
                    hashed=tmp_path / "hashed")
    assert chained == read_back and read_back["stats"]["dedup"]["duplicate_lines_dropped"] > 100
    assert len(list((tmp_path / "hashed").glob("*.json"))) > 5  # one a clean block (the records are read)
    for s in read_back["sources"]:
        assert (tmp_path / "dedup_chained" / s["file"]).read_bytes() == (tmp_path / "dedup" / s["file"]).read_bytes()


def test_dedup_off_copies_the_files_and_starts_no_ray(tmp_path, monkeypatch):
    """dedup.enabled false with the ray engine: the cleaned files pass through byte for byte, and
    no Ray session is started for work that has no task (a Ray start takes seconds)."""
    import mypt.ray_engine

    def no_ray(*args, **kwargs):
        raise AssertionError("a Ray session was started with dedup off")

    monkeypatch.setattr(mypt.ray_engine, "ray_session", no_ray)
    (tmp_path / "a.txt").write_text("same line here\nsame line here\nother\n")
    clean([str(tmp_path / "a.txt")], tmp_path / "clean", CleanSettings(filter=False))
    out = dedup(tmp_path / "clean", tmp_path / "dedup", DedupSettings(enabled=False, engine="ray"))
    assert "dedup" not in out["stats"] and out["settings"]["dedup"] is False  # (as --no_dedup records it)
    for s in out["sources"]:
        assert (tmp_path / "dedup" / s["file"]).read_bytes() == (tmp_path / "clean" / s["file"]).read_bytes()


def test_a_txt_input_that_dedup_removes_whole_counts_as_emptied_and_is_named(tmp_path, monkeypatch):
    """A .txt input all of whose lines are duplicates (a copy of another) ends with no document:
    dedup's documents_emptied counts it (it said 0), whether its lines were in one block or
    many, and the summary names the inputs left without text (a few, then a count)."""
    import mypt.text
    from click.testing import CliRunner

    from mypt.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(mypt.text, "BLOCK_BYTES", 100)  # several blocks a file
    # Paragraphs: dedup keeps blank lines, so a copy is left a file of newlines (and counted as
    # emptied only when those count as no text).
    text = "".join(f"This is a fairly long line number {i} used for dedup testing.\n\n" for i in range(10))
    (tmp_path / "a.txt").write_text(text)
    for i in range(7):
        (tmp_path / f"b{i}.txt").write_text(text)
    (tmp_path / "c.txt").write_text("Another document that is unique and long enough.\n")
    result = CliRunner().invoke(main, ["prepare-dataset", "--input_files", "a.txt", "b*.txt", "c.txt", "--out_dir",
                                       "ds", "--tokenization", "char", "--val_fraction", "0", "--workers", "1"])
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "ds" / "dataset_metadata.json").read_text())
    assert [s["documents"] for s in meta["sources"]] == [1, 0, 0, 0, 0, 0, 0, 0, 1]
    assert meta["stats"]["dedup"]["documents_emptied"] == 7 and meta["stats"]["clean"]["documents_emptied"] == 0
    assert "Inputs left without text (empty, or emptied by the filter or dedup): b0.txt, b1.txt, b2.txt, b3.txt, " \
           "b4.txt (and 2 more)\n" in result.output, result.output
    # The dedup stage (dedup reading clean's output back) counts them alike.
    clean(["a.txt", "b0.txt", "c.txt"], tmp_path / "clean", CleanSettings(workers=1))
    assert dedup(tmp_path / "clean", tmp_path / "dedup", DedupSettings(workers=1))["stats"]["dedup"][
        "documents_emptied"] == 1
