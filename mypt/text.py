"""Streaming text input: finding files, reading them in blocks, normalization, line filters.

A `.txt` file is one document; each line of a `.jsonl` file is one document (its `text`
field); `.gz` of either is read the same way. Nothing here holds more than one block of
one file in memory: a block is a byte range of a plain file that starts and ends at a
line boundary (gzip files cannot be seeked, so each is a single block).

Every line mypt writes ends with a newline, so every document ends with one too.
"""

from __future__ import annotations

import glob
import gzip
import json
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator, Sequence

TEXT_SUFFIXES = (".txt", ".jsonl", ".txt.gz", ".jsonl.gz")
BLOCK_BYTES = 4 << 20  # 4 MiB: big enough to amortize per-block work, small enough to bound memory
_SNIFF_BYTES = 8192

# Control characters other than \n and \t (C0, DEL, C1), and U+FEFF (a byte-order mark
# left in the text by some editors). \r is handled first as a newline.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ufeff]")
_TRAILING_WS = re.compile(r"[^\S\n]+$", re.MULTILINE)
_LETTER = re.compile(r"[^\W\d_]")  # any Unicode letter


class InputError(ValueError):
    """Bad input named for the user: the message says what was seen and what fixes it."""


def is_jsonl(path: Path) -> bool:
    return path.name.endswith((".jsonl", ".jsonl.gz"))


def is_gzip(path: Path) -> bool:
    return path.name.endswith(".gz")


def resolve_inputs(patterns: Sequence[str]) -> list[Path]:
    """Expand files, directories (searched recursively for text files) and globs.

    Returns the sorted, de-duplicated list of files; the sort order is the corpus order.
    """
    if not patterns:
        raise InputError("no input given: pass --input_files FILE_OR_DIR_OR_GLOB (several allowed)")
    found: set[Path] = set()
    for pattern in patterns:
        if glob.has_magic(pattern):
            matches = [Path(p) for p in glob.glob(pattern, recursive=True)]
            if not matches:
                raise InputError(f"--input_files: the glob {pattern!r} matches nothing")
        else:
            matches = [Path(pattern)]
            if not matches[0].exists():
                raise InputError(f"--input_files: {pattern!r} does not exist")
        for path in matches:
            if path.is_dir():
                inside = [p for p in path.rglob("*") if p.is_file() and p.name.endswith(TEXT_SUFFIXES)]
                if not inside:
                    raise InputError(
                        f"--input_files: the directory {str(path)!r} holds no text files "
                        f"(looked for {', '.join(TEXT_SUFFIXES)})"
                    )
                found.update(inside)
            elif path.is_file():
                found.add(path)
    return sorted(found, key=lambda p: str(p))


def looks_binary(path: Path) -> bool:
    """A NUL byte in the first 8 KiB (after decompression) marks a binary file."""
    try:
        with open_binary(path) as f:
            head = f.read(_SNIFF_BYTES)
    except (OSError, EOFError, gzip.BadGzipFile):
        return True
    return b"\x00" in head


def open_binary(path: Path) -> BinaryIO:
    return gzip.open(path, "rb") if is_gzip(path) else open(path, "rb")


def split_blocks(path: Path, block_bytes: int | None = None, safe=None) -> list[tuple[int, int]]:
    """Byte ranges [start, end) covering a file, each ending just after a newline.

    `safe(prev_byte, next_byte)` may narrow which newlines may end a block (the gpt2
    tokenizer needs boundaries where its pre-tokenizer splits anyway). A gzip file is
    one block (-1 means "to the end").
    """
    if is_gzip(path):
        return [(0, -1)]
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
    with open_binary(path) as f:
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
    full-width forms and superscripts, which changes what the model learns."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.isascii():
        text = unicodedata.normalize("NFC", text)
    text = _CONTROL.sub("", text)
    return _TRAILING_WS.sub("", text)


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
    """Normalize (optionally) and filter a block of text; returns kept lines without newlines."""
    if normalize_text:
        text = normalize(text)
    if text.endswith("\n"):
        text = text[:-1]
    lines = text.split("\n")
    if line_filter is None:
        return lines
    kept = []
    for line in lines:
        why = line_filter.reason(line)
        if why is None:
            kept.append(line)
        else:
            drops[why] += 1
    return kept


def dedup_key(line: str) -> str:
    """The dedup key: case folded and runs of whitespace collapsed, so that
    "The  King" and "the king " are one line. Separate from the output text."""
    return " ".join(line.casefold().split())


def block_docs(path: Path, start: int, end: int, jsonl: bool) -> Iterator[list[str]]:
    """The lines of each document (or, for .txt, of the block) of a file mypt wrote (every
    line ends with a newline)."""
    if not jsonl:
        with open(path, "rb") as f:
            f.seek(start)
            text = f.read(end - start).decode("utf-8")
        if text:
            yield text[:-1].split("\n")
        return
    for raw in read_lines(path, start, end):
        yield json.loads(raw)["text"][:-1].split("\n")


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
