"""A .txt source (one document) is cut into blocks that gpt2 encodes apart: the ids must be those
of the whole text, and texts without a newline between two ASCII characters (paragraphs between
blank lines, CJK lines) must be cut too, or their memory is ~50x the file's."""

from __future__ import annotations

import random

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import read_tokens

import mypt.steps.tokenize as tokenize_step
import mypt.text
from mypt.cli import main
from mypt.text import split_blocks
from mypt.tokenizers import Tokenizer
from mypt.tokenizers.base import WHITESPACE
from mypt.tokenizers.gpt2 import ascii_safe_boundary, gpt2_safe_boundary, regex_safe_boundary

# Characters the texts are made of: ASCII, CJK, and whitespace that tiktoken's `\s` counts
# (U+3000, U+00A0, U+0085, U+2028, \t, \x0b) or does not (\x1c), contractions, an emoji.
ALPHABET = ["a", "Z", ".", ",", "'", "s", "1", "中", "文", "。", "é", "\n", "\n", " ", " ", "\t", "\u3000", "\xa0",
            "\x85", "\x0b", "\u2028", "\U0001F600", "\x1c", "'s", "ll"]


def random_text(rng: random.Random, length: int) -> str:
    chars = rng.sample(ALPHABET, rng.randint(2, len(ALPHABET)))
    return "".join(rng.choice(chars) * rng.choice([1, 1, 2, 3]) for _ in range(length))


def paragraphs(rng: random.Random, n: int) -> str:
    return "\n\n".join(" ".join(rng.choice(["para", "one", "two.", "Words,"]) for _ in range(rng.randint(1, 12)))
                       for _ in range(n)) + "\n"


def cjk_lines(rng: random.Random, n: int) -> str:
    line = lambda: "".join(rng.choice("中文的句子这是一行。，") for _ in range(rng.randint(1, 30)))
    return "".join(line() + "\n" for _ in range(n))


def blocks_ids(tok: Tokenizer, path, block_bytes: int) -> tuple[int, list[int]]:
    data = path.read_bytes()
    blocks = split_blocks(path, block_bytes, safe=tok.block_boundary)
    return len(blocks), np.concatenate([tok.encode_array(data[a:b].decode()) for a, b in blocks]).tolist()


def test_gpt2_blocks_of_random_texts_give_the_whole_texts_ids(tmp_path):
    tok, rng, path = Tokenizer(None, "gpt2"), random.Random(0), tmp_path / "t.txt"
    cuts = 0
    for _ in range(600):
        text = random_text(rng, rng.randint(1, 200))
        path.write_bytes(text.encode())
        n, ids = blocks_ids(tok, path, rng.randint(1, 16))
        assert ids == tok.encode(text), repr(text)
        cuts += n - 1
    assert cuts > 1000  # (~3.6 a text)


@pytest.mark.parametrize("make", [paragraphs, cjk_lines])
def test_gpt2_cuts_paragraphs_between_blank_lines_and_cjk_lines(tmp_path, make):
    tok, rng, path = Tokenizer(None, "gpt2"), random.Random(1), tmp_path / "t.txt"
    text = make(rng, 200)
    path.write_bytes(text.encode())
    n, ids = blocks_ids(tok, path, 64)
    assert ids == tok.encode(text)
    assert n > len(text.encode()) // 200  # a block every ~64 bytes, give or take a paragraph


INDENTS = ["  ", "    ", "\t\t", "\u3000\u3000", " \t", "\t  ", "\u3000 ", " \xa0", "        \t"]


def indented_lines(rng: random.Random, n: int, newline: str = "\n") -> str:
    """Lines that all start with 2+ whitespace characters (code, poetry, U+3000 paragraph indents)."""
    word = lambda: rng.choice(["if", "x", "return", "'s", "1", "中文", "(", "don't", ".", "é"])
    return "".join(rng.choice(INDENTS) + " ".join(word() for _ in range(rng.randint(1, 6))) + newline
                   for _ in range(n))


def crlf_lines(rng: random.Random, n: int) -> str:
    """Text whose lines end with \r\n (read with --no_normalize), some indented, some blank."""
    line = lambda: (rng.choice(["", "  ", "\t", "\u3000\u3000"])  # noqa: E731
                    + rng.choice(["Word", "a b.", "中文", "x's", "42", ""]))
    return "".join(line() + "\r\n" for _ in range(n))


@pytest.mark.parametrize("make", [indented_lines, crlf_lines,
                                  lambda rng, n: indented_lines(rng, n, "\r\n"),
                                  lambda rng, n: indented_lines(rng, n, "\n\n")])
def test_gpt2_cuts_indented_and_crlf_lines_inside_the_whitespace_run(tmp_path, make):
    """No newline of such text has a character that is not whitespace on both sides (F1: one
    block, memory linear in the file): the cut is before the last character of the run."""
    tok, rng, path = Tokenizer(None, "gpt2"), random.Random(3), tmp_path / "t.txt"
    for block_bytes in (1, 7, 64):
        text = make(rng, 200)
        path.write_bytes(text.encode())
        n, ids = blocks_ids(tok, path, block_bytes)
        assert ids == tok.encode(text), repr(text)
        assert n > 1 and n > len(text.encode()) // (block_bytes + 100), (n, block_bytes)


def test_gpt2_blocks_of_random_whitespace_runs_give_the_whole_texts_ids(tmp_path):
    tok, rng, path = Tokenizer(None, "gpt2"), random.Random(4), tmp_path / "t.txt"
    spaces = ["\r", "\n", "\t", " ", "\u3000", "\xa0", "\x85"]
    others = ["a", "Z9", "1", ".", "'s", "'ll", "'", "中", "é"]
    cuts = 0
    for _ in range(400):
        text = "".join("".join(rng.choice(spaces) for _ in range(rng.choice([1, 2, 3, 5]))) + rng.choice(others)
                       for _ in range(rng.randint(1, 40)))
        path.write_bytes(text.encode())
        n, ids = blocks_ids(tok, path, rng.randint(1, 16))
        assert ids == tok.encode(text), repr(text)
        cuts += n - 1
    assert cuts > 1000


@pytest.mark.parametrize("before, after, at", [
    (b"one.", b"\ntwo", 0), (b"one.", b"\n\ntwo", 1), (b"\n", b"\n", None),  # the last blank line, or its run's end
    (b"one.", b" two", 0), (b"\n", "\u3000中".encode(), 0), (b"\n", "\u3000\n".encode(), 0),
    ("中".encode(), "文".encode(), 0), ("中\u3000".encode(), "文".encode(), -1),
    ("中\xa0".encode(), b"x", -1), (b"x", "\x85x".encode(), 0), (b"x", "\x85".encode(), -1),
    (b"x ", b"y", -1), (b"x", b"\x1cy", 0), (b"x", b"", None),
    (b"x", "中".encode()[:2], None),  # (a character cut off by the window: not judged)
    (b"foo", b"    bar", 3), (b"foo\r", b"bar", -1), (b"x\r", b"  y", 1), (b"x", b"\t \tif", 2),
    (b"x", "\u3000\u3000中".encode(), 3), (b"x", " \u3000中".encode(), 1),
    # An indent the window does not see the end of: cut just after the newline where r50k has no token
    # of the newline and the next byte (not "\n\n", "\n\xa0"), else just before it where none holds the
    # byte before and the newline (any but "\n\n"): lines of U+00A0 are cut, blank lines are not.
    (b"x", b" " * 300, 0), (b"x", b"\t" * 300, 0), (b"x", "\u3000".encode() * 90, 0), (b"x", b"  ", 0),
    (b"x", b"\n" * 300, -1), (b"x", "\xa0".encode() * 150, -1), (b"x", b" " * 70 + "中".encode()[:2], 0),
    ("\xa0".encode(), "\xa0\n".encode() * 100, -1), ("\u3000".encode(), "\xa0\n".encode() * 100, -1),
    (b"\n", b"\n" * 300, None), (b"\n", "\xa0".encode() * 150, None), (b"\n", "\x85\n".encode() * 100, None),
])
def test_gpt2_safe_boundary_decodes_the_characters_around_the_newline(before, after, at):
    assert gpt2_safe_boundary(before, after) == at


def test_the_regex_rule_alone_never_cuts_a_run_whose_end_it_does_not_see():
    """regex_safe_boundary is the rule for any vocabulary (hf's ByteLevel): a BPE trained on code
    merges "\\n " and "  ", so only r50k's rule cuts inside an unseen run."""
    assert regex_safe_boundary(b"x", b" " * 300) is None and gpt2_safe_boundary(b"x", b" " * 300) == 0
    assert regex_safe_boundary(b"x", b"  y") == gpt2_safe_boundary(b"x", b"  y") == 1


def deep_indents(rng: random.Random, n: int) -> str:
    """Lines indented by 270 to 700 characters (spaces, tabs, U+3000, and U+00A0, after a newline
    not cut: r50k has "\\n\\xa0"), deeper than the 256 bytes the boundary rule sees."""
    indent = lambda: "".join(rng.choice([" ", " ", "\t", "\u3000", "\xa0"])  # noqa: E731
                             for _ in range(rng.randint(270, 700)))
    return "".join(indent() + rng.choice(["x = 1", "中文", "'s", "return", "."]) + "\n" for _ in range(n))


def test_gpt2_cuts_lines_indented_deeper_than_the_window(tmp_path):
    """An indent the window after a newline does not see the end of was no cut point: a file of
    such lines was one block (memory of its size)."""
    tok, rng, path = Tokenizer(None, "gpt2"), random.Random(5), tmp_path / "t.txt"
    for block_bytes in (1, 64, 700):
        text = deep_indents(rng, 60)
        path.write_bytes(text.encode())
        n, ids = blocks_ids(tok, path, block_bytes)
        assert ids == tok.encode(text) == tok._enc.encode_ordinary(text)
        assert n > len(text.encode()) // (block_bytes + 1500), (n, block_bytes)


def prepared_block_counts(tmp_path, monkeypatch, text: str) -> list[int]:
    """prepare-dataset (1 KiB blocks, text kept as it is) of one .txt holding text: asserts its ids are the
    whole text's, and returns the number of blocks split_blocks cut, per call."""
    (tmp_path / "in.txt").write_bytes(text.encode())
    counts = []

    def spy(path, *args, **kwargs):
        counts.append(len(blocks := split_blocks(path, *args, **kwargs)))
        return blocks

    monkeypatch.setattr(mypt.text, "BLOCK_BYTES", 1024)
    monkeypatch.setattr(tokenize_step, "split_blocks", spy)
    result = CliRunner().invoke(main, ["prepare-dataset", "--input_files", str(tmp_path / "in.txt"), "--out_dir",
                                       str(tmp_path / "ds"), "--val_fraction", "0", "--workers", "1",
                                       "--no_normalize", "--no_filter", "--no_dedup"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    tok = Tokenizer(None, "gpt2")
    assert read_tokens(tmp_path / "ds" / "train").tolist() == tok._enc.encode_ordinary(text) + [tok.eot_id]
    return counts


def test_prepare_dataset_cuts_deeply_indented_lines_in_blocks_with_the_whole_texts_ids(tmp_path, monkeypatch):
    counts = prepared_block_counts(tmp_path, monkeypatch, deep_indents(random.Random(6), 100))
    assert counts and counts[0] > 20, counts


@pytest.mark.parametrize("line", ["\xa0\n", "\n\xa0"])
def test_prepare_dataset_cuts_a_source_of_whitespace_lines_in_blocks_with_the_whole_texts_ids(line, tmp_path,
                                                                                             monkeypatch):
    """A .txt of nothing but lines of U+00A0 (--no_normalize, which keeps it) is one run of whitespace:
    gpt2 cuts it before a newline, where no r50k token holds the byte before and the newline (after
    it r50k has "\\n\\xa0"). It was one block whatever its size (a whole file held and encoded at once)."""
    text = "Words.\n" + line * 3000
    counts = prepared_block_counts(tmp_path, monkeypatch, text)
    assert counts and counts[0] > len(text.encode()) // 2048, counts


def test_prepare_dataset_cuts_long_runs_of_blank_lines_in_blocks_with_the_whole_texts_ids(tmp_path, monkeypatch):
    """A run of blank lines was one block however long (64 MiB of newlines: 592 MiB peak and 44 s
    against 171 MiB and 13 s for ordinary lines): no newline of it has a cut its window sees. gpt2
    cuts it before every second newline from the run's start (gpt2.blank_lines_period): runs of
    odd and even lengths, after a word, after CRLF, after spaces, and one ending the file."""
    text = "Words.\n" + "\n" * 9_001 + "end.\r\n" + "\n" * 8_000 + "x  " + "\n" * 7_777 + "y" + "\n" * 5_000
    counts = prepared_block_counts(tmp_path, monkeypatch, text)
    assert counts and counts[0] > len(text.encode()) // 2048, counts


def encoded_parts(tok: Tokenizer, monkeypatch) -> list[int]:
    """The lengths of the texts gpt2 hands tiktoken, as it encodes (a list filled as it goes)."""
    parts, real = [], tok._encode
    monkeypatch.setattr(tok, "_encode", lambda part: parts.append(len(part)) or real(part))
    return parts


# Runs of these are cut anywhere (no r50k token holds two of them side by side, but "\n\n").
CUT_SPACES = [" ", " ", "\t", "\r", "\n", "\u3000", "\x0b", "\u2028"]
# Around these, some boundaries are not cut (r50k has " \xa0", "\xa0\xa0", "\n\xa0", byte pairs of U+2000...).
OTHER_SPACES = ["\xa0", "\x85", "\u2000", "\u2005", "\u202f"]


def test_gpt2_encodes_long_runs_of_any_whitespace_in_bounded_pieces_with_tiktokens_ids(monkeypatch):
    """A run of whitespace other than newlines alone was one tiktoken piece (~40 bytes of memory a
    byte): megabytes of spaces inside a line under --no_filter. Runs are cut between characters
    that no r50k token holds side by side; the ids stay tiktoken's on the whole text."""
    import mypt.tokenizers.gpt2 as gpt2

    monkeypatch.setattr(gpt2, "LONG_RUN", 16)
    tok, rng = Tokenizer(None, "gpt2"), random.Random(7)
    enc = tok._enc
    parts = encoded_parts(tok, monkeypatch)
    for i in range(400):
        spaces = rng.sample(CUT_SPACES, rng.randint(1, 4)) + (rng.sample(OTHER_SPACES, 2) if i % 4 == 0 else [])
        run = "".join(rng.choice(spaces) for _ in range(rng.randint(1, 600)))
        text = rng.choice(["", "a", "x.", "中"]) + run + rng.choice(["", "b", " y", "\n", "'s", "文"])
        parts.clear()
        assert tok.encode(text) == enc.encode_ordinary(text), repr(text)
        if i % 4 and len(run) > 200:  # (parts of LONG_RUN and a character or two, with the text around)
            assert max(parts) <= 2 * 16 + 4, (repr(text), parts)


def test_every_r50k_token_of_whitespace_is_what_bpe_makes_of_its_bytes():
    """What cutting runs of whitespace needs of tiktoken's shortcut (a piece that is a token is
    that token, without BPE): for a part of whitespace alone, the same ids as merged in the run."""
    ranks = Tokenizer(None, "gpt2")._enc._mergeable_ranks
    checked = 0
    for token, rank in ranks.items():
        if all(c in WHITESPACE for c in token.decode("utf-8", "replace")):  # (a byte of a character: U+FFFD)
            parts = [bytes([b]) for b in token]
            while len(parts) > 1:  # BPE: merge the pair of lowest rank, leftmost first
                best = min(range(len(parts) - 1), key=lambda i: ranks.get(parts[i] + parts[i + 1], 1 << 30))
                if parts[best] + parts[best + 1] not in ranks:
                    break
                parts[best:best + 2] = [parts[best] + parts[best + 1]]
            assert parts == [token], token
            checked += 1
    assert checked == 19


def test_gpt2_encodes_a_megabyte_of_spaces_in_one_line_in_pieces_of_long_run(monkeypatch):
    import mypt.tokenizers.gpt2 as gpt2

    tok = Tokenizer(None, "gpt2")
    parts = encoded_parts(tok, monkeypatch)
    # (tiktoken alone fails on a run of 999,999 characters followed by another one.)
    text = "begin" + " " * 900_000 + "end\tof \t" * 1000 + "\t \u3000" * 200_000 + "line\n"
    ids = tok.encode_array(text)
    # (A part holds text up to the next run's first cut: "end\\tof \\t" * 1000 is 8,000 characters.)
    assert len(parts) > 14 and max(parts) <= gpt2.LONG_RUN + 8000 + 10, parts
    assert ids.tolist() == tok._enc.encode_ordinary(text)


def test_hf_keeps_the_ascii_rule():
    assert ascii_safe_boundary(b"a.", b"b") == 0 and ascii_safe_boundary(b"one.", b"\ntwo") is None
    assert ascii_safe_boundary("中".encode(), "文".encode()) is None


def test_prepare_dataset_cuts_a_txt_source_of_any_script_in_blocks_with_the_whole_texts_ids(tmp_path, monkeypatch):
    """Through the tokenize step: each text is a .txt source cleaned unchanged (no normalization,
    filter or dedup), cut in blocks of ~64 bytes."""
    rng = random.Random(2)
    texts = {"mixed.txt": "".join(random_text(rng, 300) for _ in range(5)).replace("\r", "") + "\n",
             "paragraphs.txt": paragraphs(rng, 100), "cjk.txt": cjk_lines(rng, 100)}
    for name, text in texts.items():
        (tmp_path / name).write_bytes(text.encode())
    counts = {}

    def spy(path, *args, **kwargs):
        blocks = split_blocks(path, *args, **kwargs)
        counts[len(counts)] = len(blocks)
        return blocks

    monkeypatch.setattr(mypt.text, "BLOCK_BYTES", 64)
    monkeypatch.setattr(tokenize_step, "split_blocks", spy)
    tok = Tokenizer(None, "gpt2")
    for name, text in texts.items():
        out = tmp_path / f"ds_{name}"
        result = CliRunner().invoke(main, ["prepare-dataset", "--input_files", str(tmp_path / name), "--out_dir",
                                           str(out), "--val_fraction", "0", "--workers", "1", "--no_normalize",
                                           "--no_filter", "--no_dedup"])
        assert result.exit_code == 0, result.output + repr(result.exception)
        assert read_tokens(out / "train").tolist() == tok.encode(text) + [tok.eot_id], name
    assert min(counts.values()) > 10, counts


def test_train_tokenizer_reads_old_mac_text_in_lines_as_clean_does(tmp_path, monkeypatch):
    """Lines ended by a lone \\r: one line of the whole file unless \\r ends a line, as in the
    clean step when normalizing (a line over MAX_LINE_BYTES is refused, and held before that)."""
    monkeypatch.setattr(mypt.text, "MAX_LINE_BYTES", 4096)
    (tmp_path / "mac.txt").write_bytes(b"Old Mac lines end with a carriage return.\r" * 1000)
    result = CliRunner().invoke(main, ["train-tokenizer", "--input_files", str(tmp_path / "mac.txt"), "--vocab_size",
                                       "300", "--out", str(tmp_path / "tok.json")])
    assert result.exit_code == 0, result.output + repr(result.exception)
    result = CliRunner().invoke(main, ["train-tokenizer", "--input_files", str(tmp_path / "mac.txt"), "--vocab_size",
                                       "300", "--out", str(tmp_path / "raw.json"), "--no_normalize"])
    assert result.exit_code == 1 and "a line of 42,000 bytes" in result.output, result.output


def test_an_hf_tokenizer_encodes_a_txt_source_in_its_own_smaller_blocks(tmp_path, monkeypatch):
    """The tokenizers library's Encoding took about 1 GB a 4 MiB block in a worker: an hf
    tokenizer's blocks are its own size (block_bytes, 512 KiB), with the whole text's ids."""
    pytest.importorskip("tokenizers")
    from mypt.tokenizers.hf import HFTokenizer

    rng = random.Random(3)
    text = "".join(" ".join(rng.choice(["Some", "words", "here,", "and", "more."]) for _ in range(9)) + "\n"
                   for _ in range(400))
    (tmp_path / "a.txt").write_text(text)
    result = CliRunner().invoke(main, ["train-tokenizer", "--input_files", str(tmp_path / "a.txt"), "--vocab_size",
                                       "300", "--out", str(tmp_path / "tok.json")])
    assert result.exit_code == 0, result.output
    counts = []

    def spy(path, *args, **kwargs):
        counts.append(len(blocks := split_blocks(path, *args, **kwargs)))
        return blocks

    monkeypatch.setattr(HFTokenizer, "block_bytes", 1024)  # (20 KiB of text: 4 MiB blocks would be one)
    monkeypatch.setattr(tokenize_step, "split_blocks", spy)
    result = CliRunner().invoke(main, ["prepare-dataset", "--input_files", str(tmp_path / "a.txt"), "--out_dir",
                                       str(tmp_path / "ds"), "--val_fraction", "0", "--workers", "1", "--no_dedup",
                                       "--tokenization", f"hf:{tmp_path / 'tok.json'}"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    tok = HFTokenizer(tokenizer_json=(tmp_path / "tok.json").read_text())
    assert read_tokens(tmp_path / "ds" / "train").tolist() == tok.encode(text) + [tok.eot_id]
    assert counts and counts[0] > 10, counts
