"""Text: blocks of files, decoding, normalization, line filters, dedup keys and their hash
records, and the intermediate text format the data steps pass along.

The per-line rules (normalize, LineFilter.reason, the dedup key) are applied to whole blocks
by C-level passes (str and bytes methods, map over lists of lines): a Python call per line
cost more than tokenizing the line. Tests hold each block function to its per-line rule.

Input formats are read by mypt.readers. Nothing here holds more than one block of one file
in memory: a block is a byte range of a plain file that starts and ends at a line boundary.
Every line mypt writes ends with a newline, so every document ends with one too, except
the last line of a .txt document cleaned with normalize and filter off, which passes
unchanged (block_text reads it back exactly).
"""

from __future__ import annotations

import functools
import hashlib
import json
import operator
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from itertools import compress, count
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np

BLOCK_BYTES = 4 << 20  # 4 MiB: big enough to amortize per-block work, small enough to bound memory

# Control characters other than \n and \t (C0, DEL, C1), and U+FEFF (a byte-order mark
# left in the text by some editors). \r is handled first as a newline.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ufeff]")
_ASCII_CONTROL = bytes([*range(0x00, 0x09), *range(0x0b, 0x20), 0x7f])  # _CONTROL's ASCII part
_ASCII_OTHER_WS = "\t\r\x0b\x0c\x1c\x1d\x1e\x1f"  # ASCII whitespace (isspace) other than space and newline
_LETTER = re.compile(r"[^\W\d_]")  # any Unicode letter
_OTHER_WS = re.compile(r"[^\S \n]")  # whitespace other than a space (tab, \r, NBSP, ...), newlines aside
# bytes.translate's delete table that keeps only ASCII letters and newlines: what is left of a
# line is empty exactly when it has no ASCII letter.
_ALL_BUT_ASCII_LETTERS = bytes(b for b in range(256) if not (b == 10 or chr(b).isascii() and chr(b).isalpha()))


def split_blocks(path: Path, block_bytes: int | None = None, safe=None) -> list[tuple[int, int]]:
    """Byte ranges [start, end) covering a file, each ending just after a newline.

    `safe(prev_byte, next_byte)` may narrow which newlines may end a block (the gpt2
    tokenizer needs boundaries where its pre-tokenizer splits anyway). Plain files only:
    a compressed input is one block (mypt.readers).
    """
    block_bytes = block_bytes or BLOCK_BYTES
    size = path.stat().st_size
    blocks, start = [], 0
    with open(path, "rb") as f:
        while start < size:
            end = _next_boundary(f, start + block_bytes, size, safe)
            blocks.append((start, end))
            start = end
    return blocks


def _next_boundary(f: BinaryIO, pos: int, size: int, safe) -> int:
    while pos < size:
        f.seek(pos - 1)
        chunk = f.read(1 << 16)
        i = chunk.find(b"\n", 1)
        while i != -1:
            if i + 1 >= len(chunk):
                break  # need the byte after the newline: continue in the next read
            if safe is None or safe(chunk[i - 1], chunk[i + 1]):
                return pos - 1 + i + 1
            i = chunk.find(b"\n", i + 1)
        pos += max(len(chunk) - 2, 1)
    return size


def read_lines(path: Path, start: int = 0, end: int = -1) -> Iterator[bytes]:
    """Raw lines (with their b"\\n" when present) of the byte range [start, end)."""
    with open(path, "rb") as f:
        if start:
            f.seek(start)
        remaining = None if end < 0 else end - start
        while remaining is None or remaining > 0:
            line = f.readline() if remaining is None else f.readline(remaining)
            if not line:
                return
            if remaining is not None:
                remaining -= len(line)
            yield line


@dataclass
class DecodeCounter:
    """Counts bytes of invalid UTF-8 replaced by U+FFFD while decoding."""

    replaced: int = 0

    def decode(self, raw: bytes) -> str:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("utf-8", errors="replace")
            # The fast path failed, so count replacement characters that were not in the input.
            self.replaced += text.count("\ufffd") - raw.count("\ufffd".encode())
            return text


def normalize(text: str) -> str:
    """Output normalization: NFC, \\r\\n and \\r to \\n, control characters removed,
    trailing whitespace removed from every line. Never NFKC: it rewrites ligatures,
    full-width forms and superscripts, which changes what the model learns.

    ASCII text (most blocks) is checked with C-level passes and left alone when clean: the
    regular expressions cost 10 times more than the checks (40 and 160 ms a 4 MiB block)."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.isascii():
        text = unicodedata.normalize("NFC", text)
        text = _CONTROL.sub("", text)
    elif len(text.encode("ascii").translate(None, _ASCII_CONTROL)) != len(text):
        text = _CONTROL.sub("", text)
    # Now the only ASCII whitespace left is space, tab and newline.
    if text.isascii() and " \n" not in text and "\t\n" not in text and not text.endswith((" ", "\t")):
        return text
    return "\n".join(map(str.rstrip, text.split("\n")))  # rstrip's whitespace is isspace(), as regex \\s


@dataclass(frozen=True)
class LineFilter:
    """Line filter. A non-blank line is dropped when:

    - `too_long`: it has more than `max_line_chars` characters (default 100,000: minified
      code, base64 blobs and table dumps; no prose paragraph comes close);
    - `no_letters`: it has no letter at all (page numbers, rulers like `-----`, digit
      tables). Blank lines are kept: they separate paragraphs.
    """

    max_line_chars: int = 100_000
    REASONS = ("too_long", "no_letters")

    def reason(self, line: str) -> str | None:
        if len(line) > self.max_line_chars:
            return "too_long"
        if line and not line.isspace() and _LETTER.search(line) is None:
            return "no_letters"
        return None


def clean_lines(text: str, normalize_text: bool, line_filter: LineFilter | None, drops: Counter) -> list[str]:
    """Normalize (optionally) and filter a block of text; returns kept lines without newlines.

    The filter's test (LineFilter.reason) runs only on the lines that may fail it, found over
    the whole block by C-level passes: lines longer than max_line_chars, and lines without an
    ASCII letter (blank ones included). A Python call per line cost more than tokenizing it.
    """
    if normalize_text:
        text = normalize(text)
    if text.endswith("\n"):
        text = text[:-1]
    lines = text.split("\n")
    if line_filter is None:
        return lines
    letters = text.encode("utf-8", "surrogatepass").translate(None, _ALL_BUT_ASCII_LETTERS)
    if letters and b"\n\n" not in letters and not letters.startswith(b"\n") and not letters.endswith(b"\n"):
        candidates = set()  # every line has an ASCII letter
    else:
        candidates = set(compress(count(), map(operator.not_, letters.split(b"\n"))))
    if max(map(len, lines)) > line_filter.max_line_chars:
        candidates.update(compress(count(), map(line_filter.max_line_chars.__lt__, map(len, lines))))
    keep = None
    for i in sorted(candidates):
        if lines[i] and (why := line_filter.reason(lines[i])) is not None:
            drops[why] += 1
            keep = keep or bytearray(b"\x01") * len(lines)
            keep[i] = 0
    return lines if keep is None else list(compress(lines, keep))


def dedup_keys(lines: list[str]) -> list[str]:
    """The dedup key of each line: case folded and runs of whitespace collapsed to one space,
    ends stripped, so that "The  King" and "the king " are one line. Separate from the output
    text. One casefold over the block (it maps each character alone, never to a newline);
    the per-line split and join only when the block's whitespace is not already single
    spaces between words."""
    if not lines:
        return []
    text = "\n".join(lines).casefold()
    other_ws = any(c in text for c in _ASCII_OTHER_WS) if text.isascii() else _OTHER_WS.search(text)
    if other_ws or "  " in text or " \n" in text or "\n " in text or text.startswith(" ") or text.endswith(" "):
        return list(map(" ".join, map(str.split, text.split("\n"))))
    return text.split("\n")


def dedup_key(line: str) -> str:
    """The dedup key of one line (see dedup_keys)."""
    return dedup_keys([line])[0]


DEDUP_RECORD = np.dtype([("a", "<u8"), ("b", "<u8"), ("idx", "<u8")])  # a key's 128-bit hash, its line
_HASH = functools.partial(hashlib.blake2b, digest_size=16)
_DIGEST = operator.methodcaller("digest")


def hash_records(lines: list[str], min_chars: int) -> tuple[np.ndarray, Counter]:
    """The dedup record (BLAKE2b-128 of the key, index in `lines`) of every line whose key has
    at least `min_chars` characters (and one), and the counts of lines, keyed lines and, when
    seen, blank and short lines. C-level passes over the lines (keys, lengths, hashes through
    map): no Python call per line."""
    keys = dedup_keys(lines)
    lens = np.fromiter(map(len, keys), dtype=np.int64, count=len(keys))
    keyed = lens >= max(1, min_chars)
    digests = b"".join(map(_DIGEST, map(_HASH, map(str.encode, compress(keys, keyed.tolist())))))
    rec = np.empty(int(keyed.sum()), dtype=DEDUP_RECORD)
    if rec.size:
        h = np.frombuffer(digests, dtype="<u8").reshape(-1, 2)
        rec["a"], rec["b"], rec["idx"] = h[:, 0], h[:, 1], np.flatnonzero(keyed)
    blank = int((lens == 0).sum())
    stats = Counter(lines=len(lines), keyed_lines=rec.size)
    # Counted only when seen, as the stats of datasets prepared so far were.
    stats.update(+Counter(blank_lines=blank, short_lines_kept=len(lines) - blank - rec.size))
    return rec, stats


def block_docs(path: Path, start: int, end: int, jsonl: bool) -> Iterator[list[str]]:
    """The lines of each document (or, for .txt, of the block) of a file mypt wrote (every
    line ends with a newline)."""
    if not jsonl:
        text = block_text(path, start, end)
        if text:
            yield text.removesuffix("\n").split("\n")
        return
    for raw in read_lines(path, start, end):
        yield json.loads(raw)["text"][:-1].split("\n")


def block_text(path: Path, start: int, end: int) -> str:
    """The text of [start, end) of a .txt file mypt wrote, exactly."""
    with open(path, "rb") as f:
        f.seek(start)
        return f.read(end - start).decode("utf-8")


def doc_text(lines: list[str], jsonl: bool) -> str:
    """The inverse of block_docs for one document: each line ends with a newline."""
    if not lines:
        return ""
    text = "\n".join(lines) + "\n"
    return json.dumps({"text": text}, ensure_ascii=False) + "\n" if jsonl else text


def display_name(path: Path) -> str:
    """How a source is named in metadata: relative to the working directory when inside it
    (so a dataset's metadata does not depend on where the project is checked out)."""
    path = Path(path).absolute()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
