"""Bad inputs to what reads the corpus: `prepare-dataset` (its clean step) and
`train-tokenizer` refuse the same inputs with the same one-line message (one rule:
mypt.readers.text_sources), naming the input: no text at all (empty files, empty .gz/.zst,
blank lines only), binary files, FIFOs, devices, a file that changes while it is read, and a
vocabulary size the tokenizers library cannot allocate.

The machinery (world, Case, run_case) is tests/bad_inputs.py's.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest
from bad_inputs import Case, prep, run_case, train
from click.testing import CliRunner
from denied import deny

import mypt.readers.txt
from mypt.cli import main


def tok(inp: str, *extra: str) -> list[str]:
    return ["train-tokenizer", "--input_files", inp, "--out", "tok.json", "--vocab_size", "300", *extra]


def empty_compressed(w: Path) -> None:
    (w / "e.txt.gz").write_bytes(gzip.compress(b""))
    zstandard = pytest.importorskip("zstandard")
    (w / "e.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(b""))


def fifo(name: str) -> callable:
    def setup(w: Path) -> None:
        (w / name).parent.mkdir(parents=True, exist_ok=True)
        os.mkfifo(w / name)
    return setup


def corpus_dir_with_fifo(w: Path) -> None:
    (w / "corp").mkdir()  # (a FIFO beside text is skipped: tests/test_inputs.py)
    os.mkfifo(w / "corp" / "pipe.txt")


def link_to_dev_zero(w: Path) -> None:
    (w / "zero.txt").symlink_to("/dev/zero")


def link(name: str, target: str) -> callable:
    def setup(w: Path) -> None:
        (w / name).symlink_to(target)
    return setup


def file_in(folder: str) -> callable:
    def setup(w: Path) -> None:
        (w / folder).mkdir()
        (w / folder / "a.txt").write_text("The king spoke to the queen.\n")
    return setup


def rewritten_while_read(monkeypatch: pytest.MonkeyPatch, w: Path) -> None:
    """The input gets a new mtime as soon as its first text is read (its bytes stay the same,
    so the table's check that nothing else changed still holds)."""
    real = mypt.readers.txt.TxtReader.texts

    def texts(self, *args, **kwargs):
        for text in real(self, *args, **kwargs):
            st = os.stat(self.path)
            os.utime(self.path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
            yield text
    monkeypatch.setattr(mypt.readers.txt.TxtReader, "texts", texts)


NO_TEXT = "no text in"
BOM_AND_BLANK = b"\xef\xbb\xbf\n  \n\n"  # a UTF-8 byte-order mark (Notepad's), then blank lines

# Each input refused by both commands, with the words its message must hold.
BOTH = {
    "empty": ("empty.txt", ["empty.txt", NO_TEXT], None),
    "blank_lines": ("blank.txt", ["blank.txt", NO_TEXT], None),
    "binary": ("binary.txt", ["binary.txt", "binary"], None),
    "empty_gz": ("e.txt.gz", ["e.txt.gz", NO_TEXT], empty_compressed),
    "empty_zst": ("e.jsonl.zst", ["e.jsonl.zst", NO_TEXT], empty_compressed),
    "empty_gz_and_zst": ("e.*", ["e.jsonl.zst", "e.txt.gz", NO_TEXT], empty_compressed),
    "dev_zero": ("/dev/zero", ["'/dev/zero'", "character device"], None),
    "dev_null": ("/dev/null", ["'/dev/null'", "character device"], None),
    "link_to_dev_zero": ("zero.txt", ["'zero.txt'", "character device"], link_to_dev_zero),
    "fifo": ("pipe.txt", ["'pipe.txt'", "FIFO"], fifo("pipe.txt")),
    "fifo_in_dir": ("corp", ["corp/pipe.txt", "FIFO"], corpus_dir_with_fifo),
    "dev_stdin": ("/dev/stdin", ["/dev/stdin"], None),  # whatever fd 0 is here, it is named
    "empty_path": ("", ["--input_files", "empty path"], None),
    # Each said what it is (all three were said not to exist). A broken link found by a walk is
    # skipped (tests/test_inputs.py).
    "broken_link": ("dead.txt", ["--input_files: 'dead.txt' is a symbolic link to 'missing.txt', which does not "
                                 "exist"], link("dead.txt", "missing.txt")),
    "link_loop": ("loop.txt", ["--input_files: 'loop.txt' is a symbolic link that loops"],
                  link("loop.txt", "loop.txt")),
}
# A file in a folder without search permission (locked/a.txt: stat refused).
DENIED = ["--input_files: 'locked/a.txt' cannot be read: permission denied; check the permissions"]

CASES = [
    *[Case(f"prepare_{name}", prep(inp), words, out="new_ds", setup=setup)
      for name, (inp, words, setup) in BOTH.items()],
    *[Case(f"tokenizer_{name}", tok(inp), words, out="tok.json", setup=setup)
      for name, (inp, words, setup) in BOTH.items()],
    Case("prepare_denied", prep("locked/a.txt"), DENIED, out="new_ds", setup=file_in("locked"),
         fault=lambda monkeypatch, w: deny(monkeypatch, w / "locked", list_it=True)),
    Case("tokenizer_denied", tok("locked/a.txt"), DENIED, out="tok.json", setup=file_in("locked"),
         fault=lambda monkeypatch, w: deny(monkeypatch, w / "locked", list_it=True)),
    # A UTF-8 byte-order mark and blank lines are no text either, whatever normalize and the filter
    # would have removed: under --no_normalize the BOM was the text of a document.
    Case("prepare_bom_and_blank_lines", prep("bom.txt", "new_ds", "--no_normalize", "--no_filter"),
         ["bom.txt", NO_TEXT], out="new_ds", setup=lambda w: (w / "bom.txt").write_bytes(BOM_AND_BLANK)),
    Case("tokenizer_bom_and_blank_lines", tok("bom.txt", "--no_normalize"), ["bom.txt", NO_TEXT], out="tok.json",
         setup=lambda w: (w / "bom.txt").write_bytes(BOM_AND_BLANK)),
    # Only the lines of one input, all filtered away: the filter is named, with --no_filter.
    Case("prepare_all_filtered", prep("digits.txt"), ["dropped_no_letters", "--no_filter"], out="new_ds",
         setup=lambda w: (w / "digits.txt").write_text("123\n\n456\n")),
    # An input that changes while it is read is named (here: rewritten in place, same size).
    Case("prepare_input_rewritten", prep("corpus.txt"), ["corpus.txt", "rewritten", "while mypt read it"],
         out="new_ds", fault=rewritten_while_read),
    Case("tokenizer_input_rewritten", tok("corpus.txt"), ["corpus.txt", "rewritten", "while mypt read it"],
         out="tok.json", fault=rewritten_while_read),
    # A vocabulary the tokenizers library cannot allocate (it aborted the process in Rust).
    Case("tokenizer_vocab_size_too_big", tok("corpus.txt", "--vocab_size", "4294967295"),
         ["--vocab_size", "4294967295", "1048576"], code=2),
    Case("tokenizer_vocab_size_too_small", tok("corpus.txt", "--vocab_size", "100"), ["--vocab_size", "100"],
         code=2),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line(case: Case, world, tmp_path, monkeypatch):
    run_case(case, world, tmp_path, monkeypatch)


def test_a_txt_byte_order_mark_is_not_text(tmp_path, monkeypatch):
    """A .txt that starts with a UTF-8 byte-order mark: under --no_normalize --no_filter its U+FEFF
    entered the char vocabulary and the first document (and train --input_file's vocabulary).
    What is read is the text alone: the same vocabulary and tokens as the file without the mark."""
    monkeypatch.chdir(tmp_path)
    line = "Line {} of the king's speech.\n"
    Path("bom.txt").write_bytes(b"\xef\xbb\xbf" + "".join(map(line.format, range(40))).encode())
    Path("plain.txt").write_text("".join(map(line.format, range(40))))
    for inp, out in (("bom.txt", "ds"), ("plain.txt", "plain")):
        result = CliRunner().invoke(main, prep(inp, out, "--no_normalize", "--no_filter", "--no_dedup"))
        assert result.exit_code == 0, result.output
    state, plain = (json.loads(Path(d, "tokenizer_state.json").read_text()) for d in ("ds", "plain"))
    assert "\ufeff" not in state["chars"] and state == plain
    meta = json.loads(Path("ds/dataset_metadata.json").read_text())
    assert meta["total_tokens"] == len("".join(map(line.format, range(40))))
    result = CliRunner().invoke(main, train("--input_file", "bom.txt", "--tokenization", "char"))
    assert result.exit_code == 0, result.output
    assert f"Vocabulary size: {plain['vocab_size']}\n" in result.output, result.output
