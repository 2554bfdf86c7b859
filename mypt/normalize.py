"""Normalization and line filters: the clean step's rules for text (train-tokenizer's
normalization too, so a tokenizer learns from text as prepare-dataset cleans it).

The per-line rules (normalize, LineFilter.reason) are applied to whole blocks by C-level
passes (str and bytes methods, map over lists of lines): a Python call per line cost more
than tokenizing the line. Tests hold each block function to its per-line rule.
"""

from __future__ import annotations

import operator
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from itertools import chain, compress, count

# Control characters other than \n and \t (C0, DEL, C1), and U+FEFF (a byte-order mark
# left in the text by some editors). \r is handled first as a newline.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ufeff]")
_ASCII_CONTROL = bytes([*range(0x00, 0x09), *range(0x0b, 0x20), 0x7f])  # _CONTROL's ASCII part
# Every letter (str.isalpha()), and numeric characters that are not decimal digits too
# (vulgar fractions, superscript digits, Roman numerals: U+00BD, U+00B2, U+216B), which
# LineFilter.reason tells apart.
_LETTER = re.compile(r"[^\W\d_]")
# bytes.translate's delete table that keeps only ASCII letters and newlines: what is left of a
# line is empty exactly when it has no ASCII letter.
_ALL_BUT_ASCII_LETTERS = bytes(b for b in range(256) if not (b == 10 or chr(b).isascii() and chr(b).isalpha()))


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
    - `no_letters`: it has no letter at all, no character with str.isalpha() (page numbers,
      rulers like `-----`, digit tables; fractions, superscript digits and Roman numerals are
      numbers, not letters). Blank lines are kept: they separate paragraphs.
    """

    max_line_chars: int = 100_000
    REASONS = ("too_long", "no_letters")

    def reason(self, line: str) -> str | None:
        if len(line) > self.max_line_chars:
            return "too_long"
        # No letter: no character with str.isalpha(). The regular expression's first match is
        # a letter in nearly every line (or there is none); only after a numeric character is
        # the rest of the line checked exactly. (Inline: a call per line cost 15% more.)
        if line and not line.isspace() and ((found := _LETTER.search(line)) is None or not found[0].isalpha()
                                            and not any(map(str.isalpha, line[found.end():]))):
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
    if not text:  # no line: a file's last line without its end that normalized to nothing (spaces, DOS's \x1a)
        return []
    if text.endswith("\n"):
        text = text[:-1]
    lines = text.split("\n")
    if line_filter is None:
        return lines
    letters = text.encode("utf-8", "surrogatepass").translate(None, _ALL_BUT_ASCII_LETTERS)
    # Lazily, not as a set of indices: a block of blank lines (4 MiB of \n, or of \r once
    # normalized) made a set of 4 million ints, 333 MB.
    if letters and b"\n\n" not in letters and not letters.startswith(b"\n") and not letters.endswith(b"\n"):
        no_letters = iter(())  # every line has an ASCII letter
    else:
        no_letters = compress(count(), map(operator.not_, letters.split(b"\n")))
    too_long = compress(count(), map(line_filter.max_line_chars.__lt__, map(len, lines))) \
        if max(map(len, lines)) > line_filter.max_line_chars else iter(())
    keep = None
    for i in chain(no_letters, too_long):  # (a line in both: dropped by the first, skipped by the second)
        if lines[i] and (keep is None or keep[i]) and (why := line_filter.reason(lines[i])) is not None:
            drops[why] += 1
            keep = keep or bytearray(b"\x01") * len(lines)
            keep[i] = 0
    return lines if keep is None else list(compress(lines, keep))
