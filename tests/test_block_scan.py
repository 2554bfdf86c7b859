"""The block scan (split_blocks) passes over a long run of whitespace where its rule cannot cut there
(RunSkip): asked at each newline of one, 16 MiB of lines of U+3000 took 158 s with an hf ByteLevel
tokenizer, 16 MiB of blank lines 21 s with any tokenizer. Blocks must stay where asking at each
newline puts them, and their ids those of the whole text."""

from __future__ import annotations

import io
import random

import numpy as np
import pytest

import mypt.text
from mypt.text import split_blocks
from mypt.tokenizers import Tokenizer, gpt2
from mypt.tokenizers.base import PERIOD_TAIL, WHITESPACE
from mypt.tokenizers.hf import HFTokenizer

tokenizers = pytest.importorskip("tokenizers")


@pytest.fixture(scope="module")
def byte_level() -> HFTokenizer:
    """A small BPE with GPT-2's ByteLevel pre-tokenizer (train-tokenizer's kind), trained here."""
    tk, pt = tokenizers, tokenizers.pre_tokenizers
    hf = tk.Tokenizer(tk.models.BPE())
    hf.pre_tokenizer = pt.ByteLevel(add_prefix_space=False)
    hf.decoder = tk.decoders.ByteLevel()
    text = "".join(f"Some words, {i}.\n\n    indented\n\u3000\u3000中文的句子。\n \n\t\n" for i in range(300))
    hf.train_from_iterator([text], tk.trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                                          show_progress=False,
                                                          initial_alphabet=pt.ByteLevel.alphabet()))
    tok = HFTokenizer(tokenizer_json=hf.to_str())
    assert tok.cut_rule() is gpt2.regex_safe_boundary
    return tok


def counting(rule, calls: list[int], skip: bool = True, period: bool = True):
    """`rule`, counting its calls in calls[0]; with `skip`, telling the scan what `rule` tells it
    (its run_skip; without its period with `period` False), else nothing: the scan then asks it
    at each newline."""
    def spy(before: bytes, after: bytes):
        calls[0] += 1
        return rule(before, after)

    if skip:
        spy.run_skip = rule.run_skip if period else rule.run_skip._replace(period=None)
    return spy


def blocks_ids(tok: Tokenizer, path, blocks) -> list[int]:
    data = path.read_bytes()
    return np.concatenate([tok.encode_array(data[a:b].decode()) for a, b in blocks]).tolist()


@pytest.mark.parametrize("kind, unit", [("hf", "\u3000\n"), ("hf", "\n"), ("hf", "\xa0\n"), ("hf", " \n\t"),
                                        ("gpt2", "\n"), ("gpt2", "\xa0\n"), ("gpt2", "\n\x85")])
def test_a_run_of_whitespace_lines_is_passed_over_not_asked_at_each_newline(byte_level, kind, unit, tmp_path):
    """The rule is asked a few times a block, not at each of 20,000 newlines of a run (hf's
    rule cuts nowhere inside a run it does not see the end of; gpt2's only after a newline that
    r50k joins to no byte, which these runs do not hold)."""
    tok = byte_level if kind == "hf" else Tokenizer(None, "gpt2")
    text = "Some words.\n" + unit * 20_000 + "More words here.\n" * 300 + unit * 500 + "中文。\n"
    path = tmp_path / "t.txt"
    path.write_bytes(text.encode())
    calls = [0]
    blocks = split_blocks(path, 4096, safe=counting(tok.block_boundary, calls))
    assert len(blocks) > 2 and calls[0] < 200, (len(blocks), calls)  # (20,800 newlines or more)
    assert blocks_ids(tok, path, blocks) == tok.encode(text)


class CountingReads(io.FileIO):
    """A file that counts the bytes read from it."""

    read_bytes = 0

    def read(self, size: int = -1) -> bytes:
        data = super().read(size)
        self.read_bytes += len(data)
        return data


def test_a_long_run_gpt2_cuts_inside_is_read_about_once(tmp_path):
    """gpt2 cuts inside a long run (after a newline before a space), a block's length apart: the
    scan looks for such a newline as far as it has read the run, not from the run's end (which
    read the rest of the run for each block: quadratic)."""
    tok, path = Tokenizer(None, "gpt2"), tmp_path / "t.txt"
    text = "Words.\n" + ("\n" * 1000 + " ") * 4000 + "end.\n"
    path.write_bytes(text.encode())
    with CountingReads(path) as f:
        blocks = split_blocks(path, 1 << 16, safe=tok.block_boundary, f=f)
        read = f.read_bytes
    assert len(blocks) > 50 and read < 5 * len(text), (len(blocks), read)  # (a 64 KiB read a block, twice)
    assert blocks_ids(tok, path, blocks) == tok.encode(text)


# Runs of every whitespace character, alone or in lines, among text of other kinds.
_UNITS = [w * k for w in WHITESPACE for k in (1, 2)] + [w + "\n" for w in WHITESPACE] + ["\n" + w for w in WHITESPACE]
_OTHER = ["a", "Zq", ".", "'s", "1", "中文", "。", "é", "\U0001F600", "\x1c", "x y", "word,", "\n", "\n\n", "\r\n", " ",
          "\t", "\u3000", "\xa0"]


def runs_text(rng: random.Random) -> bytes:
    parts = []
    for _ in range(rng.randint(1, 30)):
        if rng.random() < 0.25:
            parts.append(rng.choice(_UNITS) * (rng.randint(20, 300) if rng.random() < 0.8 else rng.randint(1000, 3000)))
        else:
            parts.append(rng.choice(_OTHER) * rng.choice([1, 1, 2, 3]))
    data = "".join(parts).encode()
    return data[:rng.randint(0, len(data))] if rng.random() < 0.1 else data  # (a character cut off, maybe)


@pytest.mark.slow
def test_blocks_are_where_asking_at_each_newline_puts_them(byte_level, tmp_path):
    """Differential: each rule with its run_skip (less its period, which no rule knows: the run's
    start is not in its window) gives the blocks it gives asked at each newline (what the scan
    did), for texts with long runs of each whitespace character, and far fewer calls; the
    tokenizers' blocks give the whole texts' ids, with their periods too."""
    rules = {"gpt2": gpt2.gpt2_safe_boundary, "hf": byte_level.block_boundary, "regex": gpt2.regex_safe_boundary,
             "newline run": gpt2.newline_run_boundary, "lone newline": gpt2.lone_newline_boundary,
             "ascii": gpt2.ascii_safe_boundary}
    toks = {"gpt2": Tokenizer(None, "gpt2"), "hf": byte_level}
    rng, path = random.Random(0), tmp_path / "t.txt"
    calls = {name: ([0], [0]) for name in rules}  # (with run_skip, asked at each newline)
    for _ in range(40):
        data = runs_text(rng)
        path.write_bytes(data)
        block_bytes = rng.choice([1, 16, 300])
        for name, rule in rules.items():
            skipped = split_blocks(path, block_bytes, safe=counting(rule, calls[name][0], period=False))
            asked = split_blocks(path, block_bytes, safe=counting(rule, calls[name][1], skip=False))
            assert skipped == asked, (name, block_bytes, data)
            if name in toks and data and data.decode(errors="replace").encode() == data:  # (valid UTF-8)
                assert blocks_ids(toks[name], path, skipped) == toks[name].encode(data.decode()), (name, data)
                cut = split_blocks(path, block_bytes, safe=toks[name].block_boundary)
                assert blocks_ids(toks[name], path, cut) == toks[name].encode(data.decode()), (name, data)
    for name, ([skipped], [asked]) in calls.items():
        # (gpt2 cuts inside runs at any newline but between two newlines: asked at most of them, 3/4)
        assert skipped * 3 < asked * (2 if name != "gpt2" else 3), (name, skipped, asked)


def test_a_runs_end_is_where_its_characters_end_decoded_one_at_a_time():
    """RunSkip.run_end bounds the bytes, then decodes: at each offset of random bytes (whitespace of
    each kind, other characters, characters cut off, bytes that are no UTF-8), it ends the run where
    decoding a character at a time ends it."""
    skip, rng = gpt2.NO_CUT_IN_RUNS, random.Random(2)
    pieces = [c.encode() for c in WHITESPACE] + [b"a", "中".encode(), "\U0001F600".encode(), "\u2030".encode(),
                                                 "\xa1".encode(), b"\x80", b"\xe3", b"\xe3\x80", b"\xc2", b"\xff"]

    def char_at(data: bytes, at: int) -> str:
        for size in range(1, 5):
            try:
                return data[at:at + size].decode()
            except UnicodeDecodeError:
                pass
        return ""

    def one_at_a_time(data: bytes, at: int) -> int:
        while at < len(data) and (char := char_at(data, at)) and char in WHITESPACE:
            at += len(char.encode())
        return at

    for _ in range(8000):
        data = b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
        for at in range(len(data) + 1):
            assert skip.run_end(data, at) == one_at_a_time(data, at), (data, at)


# Lines of whitespace as RunSkip.period's units see them: a newline, then the line's whitespace.
UNITS = ["\n", "\n\r", "\n ", "\n\t", "\n\u3000", "\n\xa0", "\n  ", "\n\x85", "\n\u2028", "\n \t"]
AROUND = ["", "a", "word", ".", "中文", "。", " ", "\t", "\r", "\xa0", "\u3000", "x y", "'s", "1", "\U0001F600",
          "    "]
ALL_CHARS = "".join(sorted(set("".join(UNITS + AROUND) + "end")))  # (a char vocabulary for them)


def period_cuts_keep_ids(tok: Tokenizer, rng: random.Random, units=UNITS) -> int:
    """Asserts that a run of each unit, between random text, cut at each multiple of the period its
    tokenizer gives, where in the unit it says (asked as the scan asks, with the bytes before the run), encodes
    to the whole text's ids, PERIOD_TAIL units or more before the run's end (the scan leaves more):
    runs of every length from 1 to 300 (a few cuts each: the first, the last, one between), and of
    random lengths to 20,000. Returns the number of cuts tried."""
    period, tried = tok.block_boundary.run_skip.period, 0
    for unit in units:
        for lengths in (range(1, 301), [rng.randint(300, 20_000) for _ in range(8)]):
            before = "".join(rng.choice(AROUND) for _ in range(rng.randint(0, 3)))
            after = "".join(rng.choice(AROUND) for _ in range(rng.randint(1, 3)))
            if (found := period(unit.encode(), before.encode()[-8:], len(before.encode()) <= 8)) is None:
                continue
            p, (shift, into) = found[0], divmod(found[1], len(unit.encode()))
            head = unit.encode()[:into].decode()  # (the unit's part before the cut)
            for n in lengths:
                whole = tok.encode(before + unit * n + after)
                for k in {p, (n - PERIOD_TAIL - 1) // p * p, rng.randrange(p, n + p, p)}:
                    if p <= k and k + shift <= n - PERIOD_TAIL - 1:
                        tried += 1
                        left = before + unit * (k + shift) + head
                        right = unit[len(head):] + unit * (n - k - shift - 1) + after
                        assert tok.encode(left) + tok.encode(right) == whole, (unit, found, before, after, n, k)
    return tried


@pytest.mark.slow
def test_runs_of_one_line_of_whitespace_cut_at_their_period_keep_the_ids(byte_level):
    """gpt2 (blank lines only: its `cuts` find cuts in the others) and a ByteLevel BPE (each unit,
    probed)."""
    rng = random.Random(5)
    assert period_cuts_keep_ids(Tokenizer(None, "gpt2"), rng) > 500
    assert period_cuts_keep_ids(byte_level, rng) > 5000


@pytest.mark.parametrize("unit", UNITS)
def test_a_long_run_of_one_line_of_whitespace_is_cut_into_blocks_with_the_whole_texts_ids(byte_level, unit,
                                                                                        tmp_path):
    """Runs of blank lines (or of another line of whitespace, which gpt2 cuts already) were one
    block however long (64 MiB of newlines: 592 MiB and 44 s with gpt2, 14.2 GB with an hf
    tokenizer): cut at the tokenizer's period from the run's start, for char at any newline. Runs
    of the unit at each length, after text and another run, between other runs, then one after a word
    (hf cuts a run only where the piece that holds it starts within the 8 bytes before it, as it does
    after a word: not after other whitespace, whose piece may start anywhere before)."""
    toks = {"gpt2": Tokenizer(None, "gpt2"), "hf": byte_level, "char": Tokenizer("char", chars=ALL_CHARS)}
    rng, path = random.Random(unit), tmp_path / "t.txt"
    for _ in range(4):
        parts = [rng.choice(AROUND) + unit * rng.randint(1, 40) + rng.choice(UNITS) * rng.randint(0, 300)
                 + unit * rng.randint(3000, 9000) + rng.choice(AROUND) for _ in range(3)]
        text = "".join(parts) + "end." + unit * rng.randint(20_000, 30_000) + "end"
        path.write_bytes(text.encode())
        for name, tok in toks.items():
            blocks = split_blocks(path, rng.choice([100, 1000, 4096]), safe=tok.block_boundary)
            assert len(blocks) > (len(text.encode()) if name != "hf" else 20_000) // 8192, (name, len(blocks))
            assert blocks_ids(tok, path, blocks) == tok.encode(text), name



def test_without_a_period_runs_of_blank_lines_are_not_cut(byte_level, monkeypatch, tmp_path):
    """An hf tokenizer whose probe finds no period (here faked: no cut keeps the ids) keeps no cut
    inside a run of blank lines: the run stays in one block, as the rule alone leaves it."""
    tok, path = HFTokenizer(tokenizer_json=byte_level.tokenizer_json), tmp_path / "t.txt"
    path.write_text("Words.\n" + "\n" * 20_000 + "end.\n")
    assert len(split_blocks(path, 1000, safe=tok.block_boundary)) > 10
    tok = HFTokenizer(tokenizer_json=byte_level.tokenizer_json)
    monkeypatch.setattr(tok, "_period_keeps", lambda unit, period, at, before: False)
    blocks = split_blocks(path, 1000, safe=tok.block_boundary)
    assert len(blocks) == 2 and blocks_ids(tok, path, blocks) == tok.encode(path.read_text())


def test_a_unit_cut_leaves_period_tail_units_after_it():
    """The scan leaves BOUNDARY_AHEAD bytes of a repetition after a cut at its period: units of RUN_LOOK
    bytes at most, PERIOD_TAIL of them or more, as RunSkip.period asks."""
    assert mypt.text.BOUNDARY_AHEAD >= PERIOD_TAIL * mypt.text.RUN_LOOK


def test_the_period_is_asked_only_about_repetitions_long_enough_for_a_cut(byte_level, tmp_path):
    """A run of short repetitions (17 blank lines, a space, again) holds no unit cut: hf's period, ~100
    encodes a question, was asked at each (3.1 MiB of them: 180 s)."""
    rule, asked = byte_level.block_boundary, []

    def period(unit: bytes, before: bytes, opens: bool):
        asked.append(unit)
        return rule.run_skip.period(unit, before, opens)

    spy = counting(rule, [0])
    spy.run_skip = rule.run_skip._replace(period=period)
    path = tmp_path / "t.txt"
    path.write_bytes(b"Words.\n" + (b"\n" * 17 + b" ") * 3000 + b"Words." + b"\n" * 30_000 + b"end.\n")
    blocks = split_blocks(path, 4096, safe=spy)
    assert len(asked) < 10 and len(blocks) > 3, (len(asked), len(blocks))
    assert blocks_ids(byte_level, path, blocks) == byte_level.encode(path.read_text())
