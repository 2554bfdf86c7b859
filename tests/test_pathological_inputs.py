"""Inputs no corpus was meant to hold, but a scrape does: a megabyte of blank lines, a word of a
megabyte, a thousand nested folders. Each is read, or refused in one line naming the file."""

from __future__ import annotations

import json
import os
import random
import re
import sys

import numpy as np
import pytest
import tiktoken
from click.testing import CliRunner
from conftest import read_tokens

import mypt.text
import mypt.tokenizers.gpt2 as gpt2
import mypt.train_tokenizer as train_tokenizer
from mypt.cli import main
from mypt.readers import resolve_inputs, text_sources
from mypt.tokenizers import Tokenizer

# tiktoken's pattern fails on a whitespace run followed by a character from 999,999 characters.
MEGA = 1 << 20


def cli(*args: str):
    return CliRunner().invoke(main, list(args))


def r50k():
    return tiktoken.get_encoding("r50k_base")


# (One kind in the quick loop: the LONG_RUN=2 fuzz below covers the kinds of whitespace.)
@pytest.mark.parametrize("run", ["\n", *(pytest.param(run, marks=pytest.mark.slow)
                                         for run in (" ", "\t", " \n\t", "\u3000", "\u2028\xa0"))])
def test_gpt2_encodes_a_megabyte_of_whitespace_and_decodes_it_back(run):
    tok = Tokenizer(None, "gpt2")
    text = "hello there" + run * (MEGA // len(run)) + "world again" + run * (MEGA // len(run)) + "."
    assert tok.decode(tok.encode_array(text)) == text


def test_gpt2_ids_are_tiktokens_whatever_runs_are_cut(monkeypatch):
    """Runs are encoded apart from LONG_RUN characters; with it at 2, every run is: the ids of
    any text must still be tiktoken's own (the DVC demo's shards, recorded in dvc.lock, stay)."""
    enc, tok = r50k(), Tokenizer(None, "gpt2")
    text = "The quick brown fox's tail,\n\n  jumps  over\t\tthe lazy dog.\n \n\u3000x 123  456\n"
    assert tok.encode(text) == enc.encode_ordinary(text) == [
        464, 2068, 7586, 21831, 338, 7894, 11, 628, 220, 18045, 220, 625, 197, 197, 1169, 16931, 3290, 13, 198,
        220, 198, 5099, 222, 87, 17031, 220, 604, 3980, 198]
    monkeypatch.setattr(gpt2, "LONG_RUN", 2)
    rng = random.Random(0)
    pieces = [" ", "\n", "\t", "\r", "\u3000", "\xa0", "\x85", "\x1c", "a", "B", "1", ".", "'", "'s", "é", "中", " x"]
    for _ in range(3000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 30)))
        assert tok.encode(text) == enc.encode_ordinary(text), repr(text)


def test_gpt2_encodes_blank_lines_in_pieces_with_tiktokens_ids(monkeypatch):
    """A run of newlines alone is encoded in pieces of LONG_RUN (made even) characters: one
    piece of 16 MiB of blank lines took 900 MB in tiktoken. n newlines are n // 2 of "\n\n"
    and a "\n" when n is odd, so the ids are tiktoken's whatever the run's length and place."""
    enc, tok = r50k(), Tokenizer(None, "gpt2")
    monkeypatch.setattr(gpt2, "LONG_RUN", 7)
    encoded = []
    real = tok._encode
    monkeypatch.setattr(tok, "_encode", lambda part: encoded.append(len(part)) or real(part))
    for n in (7, 8, 9, 15, 16, 17, 101):
        for text in ("\n" * n, "a." + "\n" * n, "\n" * n + "b", "a." + "\n" * n + "b\n", "a." + "\n" * n + " b",
                     "\n" * n + "\ty"):
            encoded.clear()
            assert tok.encode(text) == enc.encode_ordinary(text), (n, text)
            if " " not in text and "\t" not in text:  # (a run with other whitespace: cut before its last only)
                assert max(encoded) <= 8 + 2, (n, text, encoded)  # (pieces of 8 newlines, with the text around)


@pytest.mark.slow  # (2 s: the full run's)
def test_prepare_dataset_reads_a_megabyte_of_blank_lines_the_same_in_any_blocks(tmp_path, monkeypatch):
    doc = "hello there\n" + "\n" * MEGA + "world again\n" + "\n" * 3000 + "The end.\n"
    (tmp_path / "blank.txt").write_text(doc)
    (tmp_path / "blank.jsonl").write_text(json.dumps({"text": doc.rstrip("\n")}) + "\n")
    tok = Tokenizer(None, "gpt2")
    for name, text in (("blank.txt", doc), ("blank.jsonl", doc.rstrip("\n") + "\n")):
        out = tmp_path / f"ds_{name}"
        result = cli("prepare-dataset", "--input_files", str(tmp_path / name), "--out_dir", str(out),
                     "--val_fraction", "0", "--workers", "1")
        assert result.exit_code == 0, result.output + repr(result.exception)
        ids = read_tokens(out / "train")
        assert ids[-1] == tok.eot_id and tok.decode(ids[:-1]) == text  # (not shown: a megabyte)
    enc = r50k()
    # .txt cut in blocks of 4 KiB, runs encoded apart from 1,000 characters: the same ids.
    monkeypatch.setattr(mypt.text, "BLOCK_BYTES", 4096)
    monkeypatch.setattr(gpt2, "LONG_RUN", 1000)
    text = "".join(f"line {i}\n" + "\n" * (i * 97 % 2500) for i in range(200))
    (tmp_path / "runs.txt").write_text(text)
    result = cli("prepare-dataset", "--input_files", str(tmp_path / "runs.txt"), "--out_dir", str(tmp_path / "ds"),
                 "--val_fraction", "0", "--workers", "1")
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert np.array_equal(read_tokens(tmp_path / "ds" / "train"), enc.encode_ordinary(text) + [enc.eot_token])


def test_a_text_tiktoken_cannot_encode_is_one_line_naming_the_file(tmp_path, monkeypatch):
    """A guard: no known text fails since gpt2 cuts long whitespace runs; tiktoken's own
    failure (the runs left whole, as before that fix) stands in for an unknown one."""
    monkeypatch.setattr(gpt2, "LONG_RUN", 10 ** 9)
    (tmp_path / "blank.txt").write_text("hello\n" + "\n" * MEGA + "world\n")
    result = cli("prepare-dataset", "--input_files", str(tmp_path / "blank.txt"), "--out_dir", str(tmp_path / "ds"),
                 "--workers", "1")
    assert result.exit_code == 1 and "Traceback" not in result.output
    line = result.output.strip()
    assert "\n" not in line and "blank.txt" in line and "gpt2 (tiktoken) cannot encode" in line, line
    assert "--tokenization" in line, line


@pytest.mark.slow  # (trains in a child process, and encodes 1.25 MiB: 1.2 s; hf.py needs no cut)
def test_hf_tokenizer_encodes_a_megabyte_of_whitespace(tmp_path):
    (tmp_path / "small.txt").write_text("hello world, hello there\n\n  foo bar\n" * 50)
    result = cli("train-tokenizer", "--input_files", str(tmp_path / "small.txt"), "--vocab_size", "300",
                 "--out", str(tmp_path / "tok.json"))
    assert result.exit_code == 0, result.output + repr(result.exception)
    from mypt.tokenizers.hf import HFTokenizer

    tok = HFTokenizer.from_file(tmp_path / "tok.json")
    text = "hello" + "\n" * MEGA + "world" + " \t" * (MEGA // 8) + "."
    assert tok.decode(tok.encode_array(text)) == text


@pytest.mark.parametrize("runs, run_of", [("whitespace_runs", "[{}]"), ("non_whitespace_runs", "[^{}]")])
def test_the_runs_gpt2_and_train_tokenizer_cut_are_every_long_run_of_their_kind(runs, run_of):
    """whitespace_runs (where gpt2 cuts long runs) and non_whitespace_runs (train-tokenizer's long
    words), which look at a few windows only, find each maximal run of at least min_chars, as a
    regular expression over every character does, in random mixes of each kind of character."""
    from mypt.tokenizers import base

    find, pieces = getattr(base, runs), [" ", "\t", "\r", "\n", "\xa0", "\u3000", "\u2028", "\x85", "x", "中",
                                         "\U0001F600", "\x1c", ".", "é"]
    rng, compared = random.Random(5), 0
    for _ in range(3000):
        kinds = rng.sample(pieces, rng.randint(1, 4))
        text = "".join(rng.choice(kinds) * rng.choice([1, 1, 2, 5, 30]) for _ in range(rng.randint(0, 80)))
        for min_chars in (2, 3, 4, 7, 16, 33):
            expected = [m.span() for m in re.finditer(run_of.format(base.WHITESPACE) + f"{{{min_chars},}}", text)]
            assert list(find(text, min_chars)) == expected, (text, min_chars)
            compared += 1
    assert compared == 18_000


def pre_tokenizer():
    import tokenizers

    return train_tokenizer._pre_tokenizer(tokenizers)


@pytest.mark.parametrize("word", ["\n", " ", " \t", "=", "a", "7", "ab", ".'", "é", "中", "\u3000", "ж"])
def test_train_tokenizer_hands_the_trainer_no_word_longer_than_max_word(word):
    """BpeTrainer is quadratic in a word's length (1 MB of blank lines: > 300 s): no word it
    sees is longer than MAX_WORD (+1: a cut moved off a quote), and nothing is lost."""
    pre, limit = pre_tokenizer(), train_tokenizer.MAX_WORD
    text = "hello there " + word * (3 * limit) + " world's end\n" + word * (limit // len(word))
    parts = train_tokenizer.short_words(text, pre, limit)
    assert "".join(parts) == text and len(parts) > 1
    assert max(b - a for part in parts for _, (a, b) in pre.pre_tokenize_str(part)) <= limit + 1


def test_train_tokenizer_splits_no_word_of_ordinary_text():
    pre = pre_tokenizer()
    rng = random.Random(1)
    words = ["the", "cat's", "  ", "\n\n\n", "\t", "3.14159", "...", "naïve", "中文", "'ll", " ", "x" * 300]
    text = " ".join(rng.choice(words) for _ in range(20000)) + "\n" * 4000 + "=" * 4000
    assert train_tokenizer.short_words(text, pre, train_tokenizer.MAX_WORD) == [text]


class CountingPreTokenizer:
    def __init__(self):
        self.pre, self.calls = pre_tokenizer(), 0

    def pre_tokenize_str(self, text):
        self.calls += 1
        return self.pre.pre_tokenize_str(text)


def test_train_tokenizer_pre_tokenizes_no_cjk_text_without_long_words():
    """Paragraphs of 3,000 characters without whitespace (Chinese: "，" is punctuation) hold no
    word over MAX_WORD: the text goes to the trainer whole, never pre-tokenized in this process
    (4 MiB of it took 3 s and 430 MB in tuples). Only a stretch as long as a word over it is."""
    rng, pre = random.Random(3), CountingPreTokenizer()
    text = "\n".join("".join(rng.choice("中文字词语句，。") for _ in range(3000)) for _ in range(100))
    assert train_tokenizer.short_words(text, pre, train_tokenizer.MAX_WORD) == [text] and pre.calls == 0
    long = "中" * (train_tokenizer.MAX_WORD + 1)
    assert train_tokenizer.short_words(text + long + text, pre, train_tokenizer.MAX_WORD) != [text] and pre.calls == 1


def test_train_tokenizer_reads_a_megabyte_of_blank_lines_as_words_no_longer_than_max_word(tmp_path):
    """What the trainer gets from the corpus: the run of blank lines in pieces (one word of a
    megabyte before, which BpeTrainer took > 300 s over), the text all there."""
    text = "hello there\n" + "\n" * MEGA + "world again\n"
    (tmp_path / "blank.txt").write_text(text)
    readers, _ = text_sources([str(tmp_path / "blank.txt")])
    parts = list(train_tokenizer.CorpusTexts(readers, train_tokenizer.TokenizerTrainSettings()))
    assert "".join(parts) == text and len(parts) >= MEGA // train_tokenizer.MAX_WORD
    pre = pre_tokenizer()
    assert max(b - a for part in parts for _, (a, b) in pre.pre_tokenize_str(part)) <= train_tokenizer.MAX_WORD


@pytest.mark.slow  # (a training process: before words were cut, > 300 s)
def test_train_tokenizer_finishes_on_a_megabyte_of_blank_lines(tmp_path):
    (tmp_path / "blank.txt").write_text("hello there\n" + "\n" * MEGA + "world again\n")
    result = cli("train-tokenizer", "--input_files", str(tmp_path / "blank.txt"), "--vocab_size", "300",
                 "--out", str(tmp_path / "tok.json"))
    assert result.exit_code == 0, result.output + repr(result.exception)
    vocab = json.loads((tmp_path / "tok.json").read_text())["model"]["vocab"]
    assert "Ċ" * 64 in vocab  # (it learned the runs of newlines, in pieces)


def test_deeply_nested_folders_are_walked_without_recursion(tmp_path):
    """os.walk recursed once per level before Python 3.12 (CI runs 3.11): 1,000 nested folders
    raised a RecursionError traceback. With the recursion limit 100 frames above this one's,
    200 levels tell the same in a fraction of the time (and shutil.rmtree, which recurses
    too, can still remove them)."""
    top = deep = tmp_path / "top"
    deep.mkdir()
    for _ in range(200):
        deep = deep / "d"
        deep.mkdir()
    (deep / "a.txt").write_text("hello from the bottom\n")
    (top / "b.txt").write_text("hello from the top\n")
    frames, frame = 0, sys._getframe()
    while frame:
        frames, frame = frames + 1, frame.f_back
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(frames + 100)
    try:
        found = resolve_inputs([str(top)])
    finally:
        sys.setrecursionlimit(limit)
    assert found == [top / "b.txt", deep / "a.txt"]


def test_the_walk_is_os_walks_order(tmp_path):
    from mypt.readers import walk_tree

    rng = random.Random(2)
    for i in range(60):  # folders, files, hidden ones, links to folders, in random nests
        folder = tmp_path / "/".join(rng.choice(["a", "b", ".h", "c d", "Z"]) for _ in range(rng.randint(0, 4)))
        folder.mkdir(parents=True, exist_ok=True)
        (folder / rng.choice(["x.txt", ".y.txt", "z.jsonl", "w.bin"])).write_text("t\n")
    (tmp_path / "link").symlink_to(tmp_path / "a")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")

    def pruned(walk):  # as the caller does: prune hidden folders, and the link's second visit
        seen = []
        for root, dirs, names in walk:
            seen.append((root, list(dirs), names))
            dirs[:] = [d for d in dirs if not d.startswith(".") and d != "b"]
        return seen

    assert pruned(walk_tree(tmp_path)) == pruned(os.walk(tmp_path, followlinks=True))
