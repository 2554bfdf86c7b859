"""The clean step's counters through prepare-dataset's CLI: `no_letters` drops a line without a
letter (str.isalpha()), numeric characters included, and `invalid_utf8_bytes_replaced`
counts the invalid bytes, not the U+FFFD characters that replace them."""

from __future__ import annotations

import codecs
import json
import random
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import read_tokens

import mypt.text
from mypt.cli import main
from mypt.text import DecodeCounter
from mypt.tokenizers import Tokenizer


def prepare(src: Path, out: Path, *flags: str) -> tuple[dict, str, str]:
    """prepare-dataset of `src` (char tokens, one worker, all in train): the clean stats,
    the printed output and the dataset's text."""
    result = CliRunner().invoke(main, ["prepare-dataset", "--input_files", str(src), "--out_dir", str(out),
                                       "--tokenization", "char", "--workers", "1", "--val_fraction", "0", *flags])
    assert result.exit_code == 0, result.output + repr(result.exception)
    meta = json.loads((out / "dataset_metadata.json").read_text())
    text = Tokenizer.load(out).decode(read_tokens(out / "train").tolist())
    return meta["stats"]["clean"], result.output, text


# Numeric characters that are not letters (str.isalpha() false) though the regular expression
# [^\W\d_] matches them: vulgar fractions, superscript digits, Roman numerals, circled and
# ideographic numbers.
NUMERIC = ["\u00bd", "\u00bc", "\u00be", "\u00b2", "\u00b3", "\u00b9", "\u216b", "\u2167", "\u2460", "\u3007"]


def test_numeric_characters_are_not_letters(tmp_path):
    assert not any(c.isalpha() for c in NUMERIC)
    no_letters = [
        "\u00bd \u00b2 \u216b",          # 1/2 2 XII
        "\u00bc \u00b3",                 # 1/4 3
        "\u2167-\u216b, \u2460 \u3007",  # VIII-XII, circled 1, ideographic zero
        "12 \u00be 3\u00b9 -----",       # ASCII digits among them
        "".join(NUMERIC),
    ]
    kept = [
        "The king is dead.",
        "\u00bd \u00b2 x \u216b",        # one ASCII letter among them
        "\u00bd \u00b2 \u216b \u00e9",   # an accented letter last
        "\u00b2 \u4e2d\u6587",           # CJK letters after a superscript
        "\u2167 \u00c5ngstr\u00f6m \u00bd",
        "\u00bc \u0394",                 # Greek capital delta
        "42 \u00bd \u05d0",              # Hebrew alef, after digits
    ]
    lines = [line for pair in zip(kept, no_letters + [""] * len(kept)) for line in pair if line]
    src = tmp_path / "numbers.txt"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    stats, output, text = prepare(src, tmp_path / "ds", "--no_dedup")
    assert stats["dropped_no_letters"] == len(no_letters)
    assert f"'no_letters': {len(no_letters)}" in output
    assert text.splitlines() == kept


# Five invalid sequences, 8 bytes, each between ASCII text: a lone 0xFF and 0xFE, a 2-byte
# sequence cut after its first byte, a 3-byte one after 2, a 4-byte one after 3.
INVALID = [b"\xff", b"\xfe", b"\xc3", b"\xe2\x82", b"\xf0\x9f\x99"]
RAW = b"Start " + b" and ".join(INVALID) + b" end.\n"


def test_invalid_utf8_counts_bytes_not_replacements(tmp_path):
    assert sum(map(len, INVALID)) == 8 and RAW.decode("utf-8", "replace").count("\ufffd") == 5
    src = tmp_path / "bad.txt"
    src.write_bytes(RAW)
    stats, output, text = prepare(src, tmp_path / "ds", "--no_normalize", "--no_filter", "--no_dedup")
    assert stats["invalid_utf8_bytes_replaced"] == 8 and "Invalid UTF-8 bytes replaced: 8" in output
    assert text == RAW.decode("utf-8", "replace")  # the same U+FFFD in the same places


def test_input_replacement_characters_are_not_counted(tmp_path):
    # A U+FFFD that is valid UTF-8 in the input is text, not a replacement: not counted, alone
    # or in a file that has invalid bytes too (then only those are).
    (tmp_path / "valid.txt").write_bytes("A genuine \ufffd here, and \ufffd\ufffd there.\n".encode())
    stats, output, text = prepare(tmp_path / "valid.txt", tmp_path / "ds1")
    assert stats["invalid_utf8_bytes_replaced"] == 0 and "Invalid UTF-8" not in output
    assert text.count("\ufffd") == 3
    raw = "Genuine \ufffd, then ".encode() + b"\xe2\x82 and \xff\xfe.\n"
    (tmp_path / "mixed.txt").write_bytes(raw)
    stats, _, text = prepare(tmp_path / "mixed.txt", tmp_path / "ds2")
    assert stats["invalid_utf8_bytes_replaced"] == 4 and text == raw.decode("utf-8", "replace")


@pytest.mark.parametrize("block", [16, 64, 1 << 20])
def test_invalid_bytes_counted_whatever_the_blocks(tmp_path, monkeypatch, block):
    # Blocks (and the pieces a reader decodes) end at newlines, and a newline ends any invalid
    # sequence: truncated sequences just before newlines count the same in small blocks.
    monkeypatch.setattr(mypt.text, "BLOCK_BYTES", block)
    rng = random.Random(block)
    lines = [b"Line %d text " % i + rng.choice(INVALID) + (b" more" if i % 2 else b"") for i in range(60)]
    raw = b"\n".join(lines) + b"\n"
    expected = sum(len(line) - len(b"Line %d text " % i) - (5 if i % 2 else 0) for i, line in enumerate(lines))
    for name, data in (("bad.txt", raw), ("bad.jsonl", None)):
        if data is None:  # the same bytes inside JSON strings: one document a line
            data = b"".join(b'{"text": "' + line + b'"}\n' for line in lines)
        src = tmp_path / name
        src.write_bytes(data)
        stats, _, text = prepare(src, tmp_path / f"ds-{name}", "--no_normalize", "--no_filter", "--no_dedup")
        assert stats["invalid_utf8_bytes_replaced"] == expected
        assert text.replace("\n", "") == raw.decode("utf-8", "replace").replace("\n", "")


def test_decode_counter_equals_a_counting_error_handler():
    """DecodeCounter's count against the direct one: an error handler that replaces as
    errors="replace" does and adds up the length of every invalid sequence it replaces."""
    seen = []

    def counting(e: UnicodeDecodeError):
        seen.append(e.end - e.start)
        return "\ufffd", e.end

    codecs.register_error("mypt-test-count-invalid", counting)
    pieces = [b"a", b" ", b"\xff", b"\x80", b"\xbf", b"\xc3", b"\xc3\xa9", b"\xc0\xaf", b"\xe2\x82", b"\xe2\x82\xac",
              b"\xe0\x80", b"\xed\xa0\x80", b"\xef", b"\xef\xbf\xbd", b"\xf0\x9f\x99", b"\xf0\x9f\x99\x82",
              b"\xf4\x90\x80\x80"]
    rng = random.Random(0)
    for i in range(20_000):
        raw = b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 10))) if i % 2 else rng.randbytes(8)
        seen.clear()
        decoder = DecodeCounter()
        text = decoder.decode(raw)
        assert text == raw.decode("utf-8", "mypt-test-count-invalid") == raw.decode("utf-8", "replace")
        assert decoder.replaced == sum(seen), raw
