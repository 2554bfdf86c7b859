"""Text files in blocks: the byte ranges the data steps work in, decoding, and the
intermediate text format the data steps pass along (one .txt or .jsonl file per source).

The rules applied to the text live apart: normalization and line filters in mypt.normalize,
the dedup key in mypt.steps.dedup. Input formats are read by mypt.readers. Nothing here holds
more than one block of one file in memory: a block is a byte range of a plain file that
starts and ends at a line boundary (or, by split_blocks' `safe`, in the whitespace run around
one), read in pieces of BLOCK_BYTES (line_pieces); a line is held whole only up to MAX_LINE_BYTES.
Every line mypt writes ends with a newline, so every document ends with one too, except
the last line of a .txt document cleaned with normalize and filter off, which passes
unchanged (block_text reads it back exactly).
"""

from __future__ import annotations

import json
import os
import re
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Callable, Iterable, Iterator, NamedTuple, Sequence

if TYPE_CHECKING:  # (the tokenizers define their rules' RunSkip; a runtime import would make every
    # reader of a tokenizer, the train and eval stages among them, depend on this module)
    from mypt.tokenizers.base import RunSkip

BLOCK_BYTES = 4 << 20  # 4 MiB: big enough to amortize per-block work, small enough to bound memory
# The longest line (a JSONL record: a whole document) a reader holds in memory; a worker's peak is
# a few times this. Books are a few MiB as one line, the longest documents of common web and code
# corpora tens of MiB; a longer line is dropped as it is read (the line filter would drop it) or
# refused (line_pieces), never held: a 2 GiB file without a newline would take 8 GiB.
MAX_LINE_BYTES = 64 << 20


# How many bytes on each side of a newline a block boundary rule (`safe` of split_blocks) sees:
# before it, two UTF-8 characters at most (4 bytes each); after it, BOUNDARY_AHEAD, enough to see
# where an indent of up to 256 bytes ends (gpt2 cuts inside the whitespace run).
BOUNDARY_CONTEXT = 8
BOUNDARY_AHEAD = 256 + BOUNDARY_CONTEXT


RUN_LOOK = 16  # (how far past a newline a RunSkip's `cuts` may look: gpt2's looks one byte; room to spare)
_RUN_READ = 1 << 20  # (the most a run's search reads at once)


def _repeated(skip: RunSkip) -> re.Pattern:
    """A RunSkip's `period` unit: a newline and up to RUN_LOOK - 1 bytes of whitespace after it, repeated
    PERIOD_TAIL + 1 times or more (fewer are not looked at). A cut leaves BOUNDARY_AHEAD bytes of the repetition
    after it: PERIOD_TAIL units or more, and past the rule's windows, which see where the run ends."""
    return re.compile(rb"(\n[^\n]{0,%d})\1{%d,}" % (RUN_LOOK - 1, skip.PERIOD_TAIL))  # (re caches it)


def _past_period(skip: RunSkip) -> int:
    """How far past where a repetition is found the scan reads at once: its first cut (up to two periods
    on, of at most MAX_PERIOD units) and BOUNDARY_AHEAD bytes after it."""
    return BOUNDARY_AHEAD + 2 * skip.MAX_PERIOD * RUN_LOOK


def split_blocks(path: Path, block_bytes: int | None = None, safe=None, f: BinaryIO | None = None
                 ) -> list[tuple[int, int]]:
    """Byte ranges [start, end) covering a file, each ending just after a newline (without `safe`).

    `safe(before, after)` may narrow which newlines may end a block, and move the end near them
    (the gpt2 tokenizer needs boundaries where its pre-tokenizer splits anyway): `before` holds
    the BOUNDARY_CONTEXT bytes before the newline, `after` the BOUNDARY_AHEAD bytes after it
    (fewer only at the file's ends; never empty). It returns None (no block ends there) or
    where the block ends, in bytes from just after the newline (0: just after it; -1: before
    it; at most len(after) - 1, so that no block is empty). Its `run_skip` (tokenizers.base.RunSkip),
    where it has one, lets the scan pass over newlines where it cannot cut, and (its `period`) cut
    inside a run of one line of whitespace repeated, which no window shows a cut in (blank lines:
    one block however long); `cuts_nowhere`, true for a rule that never cuts, makes the file one
    block unscanned.
    Plain files only: a compressed input is one block (mypt.readers). `f`: the file open already
    (an input, opened as mypt.readers opens one).
    """
    block_bytes = block_bytes or BLOCK_BYTES
    with open(path, "rb") if f is None else nullcontext(f) as f:
        size = os.fstat(f.fileno()).st_size
        if getattr(safe, "cuts_nowhere", False):  # (a rule that never cuts: one block, its newlines unread)
            return [(0, size)] if size else []
        blocks, start = [], 0
        while start < size:
            end = _next_boundary(f, start + block_bytes, size, safe, start)
            blocks.append((start, end))
            start = end
    return blocks


def _next_boundary(f: BinaryIO, pos: int, size: int, safe, first: int) -> int:
    """Where `safe` places the end for the first newline at or after `pos` that it accepts and
    that is not the file's last byte (without `safe`: just after that newline), or the first cut
    its RunSkip's `period` allows in a run of whitespace (in the block that starts at `first`);
    `size` where there is none."""
    skip = getattr(safe, "run_skip", None)
    while pos < size:
        low = max(pos - BOUNDARY_CONTEXT, 0)
        f.seek(low)
        chunk = f.read(1 << 16)
        whole = low + len(chunk) >= size  # (the chunk runs to the file's end)
        i, past = chunk.find(b"\n", pos - low), None
        while i != -1:
            if i + 1 >= len(chunk) or (not whole and i + 1 + BOUNDARY_AHEAD > len(chunk)):
                break  # need the bytes after the newline: continue in the next read
            if safe is None:
                return low + i + 1
            at = safe(chunk[max(i - BOUNDARY_CONTEXT, 0):i], chunk[i + 1:i + 1 + BOUNDARY_AHEAD])
            if at is not None:
                return low + i + 1 + at
            if skip is not None and chunk[i + 1] in skip.starts and \
                    (found := _past_run(f, chunk, low, i + 1, size, skip, first)) is not None:
                past, cut = found
                if cut:
                    return past
                if past - low >= len(chunk):
                    break  # (the run goes on past this read)
                i, past = chunk.find(b"\n", past - low), None  # (on in the bytes in hand, not read again)
                continue
            i = chunk.find(b"\n", i + 1)
        if past is not None:
            pos = past
        elif whole:
            break
        else:
            pos = low + i if i != -1 else low + len(chunk)
    return size


def _past_run(f: BinaryIO, chunk: bytes, low: int, i: int, size: int, skip: RunSkip,
              first: int) -> tuple[int, bool] | None:
    """Where the scan goes on after the newline just before `chunk[i]` (`chunk` is read from byte
    `low` of the file), at which the rule found no cut, when its window (BOUNDARY_AHEAD bytes) lies
    inside a run of whitespace (RunSkip): next to the first later newline of the run where `skip.cuts`
    matches, else where the newlines whose window sees the run's end begin (`size` for a run to
    the file's end), and False; or, before any of those, the first cut that `skip.period` allows
    (_unit_cut, in the block from `first`), and True. None where the window sees the run's end."""
    start = low + i
    # The run is followed in the bytes in hand, then read on in growing pieces (it is often short:
    # an indent), and `cuts` looked for as far as it is known, not from its end: gpt2 cuts a long
    # run every block, each search read the rest of it.
    data, offset, piece, searched, units = chunk, i, 4 << 10, start, start
    while True:
        at = low + offset  # (the file's byte of data[offset])
        n = skip.run_end(data, offset) - offset
        ended = n < len(data) - offset - 3 or low + len(data) >= size  # (else it may go on past a character cut off)
        if ended and at + n < start + BOUNDARY_AHEAD and at + n < size:
            return None
        stop = size if ended and at + n >= size else at + n - BOUNDARY_AHEAD  # (a window before it is in the run)
        if skip.cuts is not None and searched < stop:
            # (A match may lie just after the newline it tells of: searched one byte further, and the
            # scan goes on from the byte before it, never back to the newline it was asked at.)
            if (cut := _first_match(f, skip.cuts, searched, min(stop + 1, size), size)) is not None:
                if skip.period is not None and units < cut and \
                        (unit_cut := _unit_cut(f, units, cut, first, skip)[0]) is not None:
                    return unit_cut, True
                return max(cut - 1, start), False
            searched = stop
        if skip.period is not None and units < stop:
            unit_cut, units = _unit_cut(f, units, stop, first, skip)
            if unit_cut is not None:
                return unit_cut, True
        if ended:
            return stop, False
        low, offset = at + n, 0
        f.seek(low)
        data = f.read(piece)
        piece = min(piece * 2, _RUN_READ)


def _unit_cut(f: BinaryIO, lo: int, hi: int, first: int, skip: RunSkip) -> tuple[int | None, int]:
    """(The first cut in [lo, hi] that `skip.period` allows, None) in a run of whitespace known to go on
    BOUNDARY_AHEAD bytes past `hi`: in a repetition of one unit (RunSkip), P units (its period) or a
    multiple of them from where the repetition starts in the block that starts at `first` (and the
    bytes into a unit the period says), BOUNDARY_AHEAD bytes or more before the repetition ends. Else
    (None, where a later search goes on: a repetition that may hold a cut past `hi`, or `hi` or after)."""
    repeated, past = _repeated(skip), _past_period(skip)
    while lo < hi:
        end = after = min(hi, lo + _RUN_READ)
        f.seek(lo)
        data = f.read(end - lo + past + RUN_LOOK)  # (each unit's cut and the repetition after it)
        at = 0
        while (m := repeated.search(data, at)) and lo + m.start() < end:
            unit, found = m.group(1), lo + m.start()
            # (A unit just before it, after where the search began, would have been found first: the repetition
            # starts here, or before that, where the search began or the last repetition took its newline.)
            start = _unit_run_end(f, found, unit, first) if found - len(unit) < lo + at else found
            if lo + m.end() - max(start, lo) <= BOUNDARY_AHEAD and m.end() + len(unit) <= len(data):
                at = m.end()  # (too short for a cut: the period, which may cost an hf probe, not asked)
                continue
            f.seek(max(start - BOUNDARY_CONTEXT, first))
            period = skip.period(unit, f.read(start - max(start - BOUNDARY_CONTEXT, first)),
                                 start - BOUNDARY_CONTEXT <= first)
            if period:
                step, into = period[0] * len(unit), period[1]
                cut = start + into + step * max(1, -(-(lo - start - into) // step))  # (the first at `lo` or after)
                if cut > hi:
                    return None, found  # (looked for again when the run is known further)
                if lo + m.end() >= cut + BOUNDARY_AHEAD:
                    return cut, cut
            elif m.end() + len(unit) > len(data):  # (it may go on past the bytes read: read on to its end, once)
                after = _unit_run_end(f, lo + m.end(), unit)
                break
            at = m.end()
        lo = after
    return None, lo


def _unit_run_end(f: BinaryIO, at: int, unit: bytes, first: int | None = None) -> int:
    """Where the repetition of `unit` that goes on from byte `at` ends; with `first`, where it starts,
    `first` or after."""
    back = first is not None
    pattern = re.compile(b"(?:" + re.escape(unit[::-1] if back else unit) + b")*")
    while True:
        n = (min(_RUN_READ, at - first) if back else _RUN_READ) // len(unit) * len(unit)
        f.seek(at - n if back else at)
        data = f.read(n)
        held = pattern.match(data[::-1] if back else data).end()  # (whole units, from `at` on or back)
        at += -held if back else held
        if held < n or not data:
            return at


def _first_match(f: BinaryIO, pattern: re.Pattern, start: int, stop: int, size: int) -> int | None:
    """Where the first match of `pattern` that starts in [start, stop) starts; None if none does.
    A match may look RUN_LOOK bytes past its start, and one byte before it."""
    while start < stop:
        back = min(start, 1)  # (the byte before, for a lookbehind)
        f.seek(start - back)
        data = f.read(back + min(_RUN_READ, stop - start) + RUN_LOOK)
        # (matches that saw what they look at)
        sure = len(data) if start - back + len(data) >= size else len(data) - RUN_LOOK
        limit = min(sure - back, stop - start)
        m = pattern.search(data, back)
        if m and m.start() - back < limit:
            return start + m.start() - back
        start += limit
    return None


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


class LongLine(Exception):
    """A line of more than MAX_LINE_BYTES that the reader may not drop: where it starts (its
    byte offset and the newlines before it, from where the read started) and its size."""

    def __init__(self, offset: int, newlines: int, size: int):
        super().__init__(f"a line of {size:,} bytes at byte {offset:,}")
        self.offset, self.newlines, self.size = offset, newlines, size


def line_pieces(f: BinaryIO, size: int | None = None, *, piece: int | None = None, cr: bool = False,
                dropped: Callable[[], None] | None = None) -> Iterator[bytes]:
    """The next `size` bytes of `f` (None: to its end) in pieces of about `piece` bytes
    (BLOCK_BYTES) that end at line ends: the one way mypt reads an input's lines, so that
    memory is bounded whatever the lines.

    A line ends at b"\\n", and with `cr` at a lone b"\\r" too (old Mac text: normalization
    makes it a newline; else a file of \\r only is one 256 MiB line, 22 GiB of line lists). A line
    longer than a piece is a piece alone; one of more than MAX_LINE_BYTES (its end not
    counted) is never held: it is read on to its end, then dropped (`dropped` is called) or,
    without `dropped`, a LongLine.
    """
    most = MAX_LINE_BYTES  # (read here: tests make it small)
    piece = min(piece or BLOCK_BYTES, most)  # so that only a piece's first line can be over `most`
    left, pending = size, b""  # pending: what followed a dropped line in its read, read again

    def read() -> bytes:
        nonlocal left, pending
        if pending:
            data, pending = pending, b""
            return data
        data = f.read(piece if left is None else min(piece, left))
        if left is not None:
            left -= len(data)
        return data

    held, offset, newlines = b"", 0, 0  # the start of the next piece; bytes and newlines before it
    while data := read():
        # `held` is one line's start: no line end, but perhaps a last \r whose next byte was unknown.
        if len(held) + len(data) > most:  # that line may be over the limit (told before joining them)
            end, term = _first_end(data, cr and held.endswith(b"\r"), cr)
            last_cr = end < 0 and cr and data.endswith(b"\r")  # (undecided: not counted yet)
            if (length := len(held) + (end - term if end >= 0 else len(data) - last_cr)) > most:
                # Read to its end without holding it.
                length, pending = (length, data[end:]) if end >= 0 else \
                    _skip_line(read, len(held) + len(data), last_cr, cr)
                if dropped is None:
                    raise LongLine(offset, newlines, length)
                dropped()  # (then nothing is raised: offset and newlines are no longer needed)
                held = b""
                continue
        buf = held + data
        cut = _last_end(buf, max(len(held) - 1, 0), cr)
        held = buf[cut:]
        if cut:
            newlines += buf.count(b"\n", 0, cut)
            offset += cut
            yield buf[:cut]
    if held:
        yield held


def _skip_line(read: Callable[[], bytes], length: int, prev_cr: bool, cr: bool) -> tuple[int, bytes]:
    """Read on to the end of a line of which `length` bytes were read (`prev_cr`: the last
    was a \\r): (its length, line end not counted; what follows its end in the last read)."""
    while data := read():
        end, term = _first_end(data, prev_cr, cr)
        if end >= 0:
            return length + end - term, data[end:]
        length, prev_cr = length + len(data), cr and data.endswith(b"\r")
    return length - prev_cr, b""  # (a last lone \r ends the line)


def _last_end(buf: bytes, start: int, cr: bool) -> int:
    """The index after the last line end of `buf` at or after `start` (0: none). A last \\r is
    no line end yet: a \\n may follow in the next read."""
    end = buf.rfind(b"\n", start) + 1
    if cr:  # a \r after the last \n, not the last byte, is a lone one
        end = max(end, buf.rfind(b"\r", max(start, end), len(buf) - 1) + 1)
    return end


def _first_end(data: bytes, prev_cr: bool, cr: bool) -> tuple[int, int]:
    """(index after the first line end of `data`, the length of that end), or (-1, 0). With
    `prev_cr`, the read before ended with a \\r, which a first \\n joins."""
    if prev_cr:
        return (1, 2) if data.startswith(b"\n") else (0, 1)
    nl = data.find(b"\n")
    r = data.find(b"\r", 0, nl if nl >= 0 else len(data) - 1) if cr else -1
    if r >= 0:
        return (r + 2, 2) if data[r + 1] == 0x0A else (r + 1, 1)
    return (nl + 1, 1) if nl >= 0 else (-1, 0)


# UTF-32 first: its little-endian mark starts with UTF-16's.
WIDE_BOMS = {b"\xff\xfe\x00\x00": "UTF-32", b"\x00\x00\xfe\xff": "UTF-32", b"\xff\xfe": "UTF-16",
             b"\xfe\xff": "UTF-16"}


def wide_encoding(head: bytes) -> str | None:
    """"UTF-16" or "UTF-32" when `head` (a file's first bytes) starts with that byte-order
    mark, else None: text mypt does not decode (mypt reads UTF-8), told apart from binary."""
    return next((enc for bom, enc in WIDE_BOMS.items() if head.startswith(bom)), None)


def wide_text_hint(name: str, encoding: str) -> str:
    """What to do with the UTF-16/32 text file `name` (its display name)."""
    import shlex  # only for this message

    target = Path(name).with_name(Path(name).stem + "-utf8" + Path(name).suffix)
    return (f"{name} is {encoding} text (a byte-order mark): convert it to UTF-8 (iconv -f {encoding} -t UTF-8 "
            f"{shlex.quote(name)} > {shlex.quote(str(target))})")


@dataclass
class DecodeCounter:
    """Counts bytes of invalid UTF-8 replaced by U+FFFD while decoding."""

    replaced: int = 0

    def decode(self, raw: bytes) -> str:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("utf-8", errors="replace")
            # Each maximal invalid subsequence (1 to 3 bytes) became one U+FFFD, 3 bytes in
            # UTF-8, and the valid bytes decode and encode back unchanged (the strict decoder
            # takes only the one shortest form of each character). A U+FFFD of the input
            # (EF BF BD, always decoded as one: a lead byte never continues a sequence) is no
            # replacement. So the bytes replaced are what re-encoding the text lost, plus
            # the 3 bytes of each U+FFFD added.
            added = text.count("\ufffd") - raw.count("\ufffd".encode())
            self.replaced += len(raw) - len(text.encode("utf-8")) + 3 * added
            return text


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


def normal_path(path: Path | str) -> Path:
    """`path` absolute, with `.` and `..` resolved as written (`sub/../a.txt` is `a.txt`): one
    spelling of each place, links left as they are."""
    return Path(os.path.normpath(os.path.abspath(path)))


def display_name(path: Path) -> str:
    """How a source is named in metadata: relative to the working directory when inside it
    (so a dataset's metadata does not depend on where the project is checked out), in one
    spelling (normal_path), as text (text_name)."""
    path = normal_path(path)
    try:
        return text_name(str(path.relative_to(Path.cwd())))
    except ValueError:
        return text_name(str(path))


def source_place(path: Path | str) -> str:
    """Where a source is, as text: one spelling per place (normal_path), to compare with a
    recorded name's places (recorded_as)."""
    return text_name(str(normal_path(path)))


def recorded_as(name: str, bases: Iterable[Path]) -> set[str]:
    """The places (normal_path, as text) a source's recorded name may be: itself when absolute,
    else the name under each of `bases`. Normalized here too: names recorded before display_name
    normalized them may hold `..` (`sub/../a.txt`)."""
    if os.path.isabs(name):
        return {os.path.normpath(name)}
    return {source_place(Path(base) / name) for base in bases}


def text_name(name: str) -> str:
    """A file name as text that UTF-8 can write (metadata, messages): the bytes of a name that
    are not UTF-8, which Python holds as lone surrogates (`caf\\udce9`), as `\\xe9`."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


class WalkSkip(NamedTuple):
    """A kind of file directory walks skip: its clean stats counter, and how the summary says it and its fix."""

    stat: str
    label: str
    fix: str


# The kinds by their key in the metadata's `walk_skipped_files` (mypt.readers.WalkSkipped records them).
WALK_SKIPS = {
    "hidden": WalkSkip("skipped_hidden_files", "hidden", "name a file in --input_files to read it"),
    "other_suffixes": WalkSkip("skipped_other_suffix_files", "other suffixes",
                               "name a file in --input_files to read it"),
    "not_regular": WalkSkip("skipped_not_regular_files", "not regular files", "save a stream to a file to read it"),
    "unreadable": WalkSkip("skipped_unreadable_paths", "cannot be read",
                           "check the permissions and links of what cannot be read"),
}


def skipped_lines(binary: Sequence[str], wide_fixes: Sequence[str], walk_names: dict[str, list[str]] | None,
                  walk_counts: dict[str, int], more_in: str = "") -> list[str]:
    """What a run over the inputs says it passed over (prepare-dataset's summary, train-tokenizer):
    the binary files, each UTF-16/32 text's fix (a few; `more_in` says where the rest are), and
    what directory walks skipped (WalkSkipped's names and counts)."""
    lines = [f"Binary files skipped: {', '.join(binary)}"] if binary else []
    lines += wide_fixes[:3]
    if len(wide_fixes) > 3:
        lines.append(f"... and {len(wide_fixes) - 3} more such files" + (f" ({more_in})" if more_in else ""))
    if walk_names:
        kinds = {WALK_SKIPS[kind]: names for kind, names in walk_names.items()}
        counts = {kind: walk_counts.get(kind.stat, 0) for kind in kinds}
        parts = [f"{kind.label}: {', '.join(names)}" + (", ..." if counts[kind] > len(names) else "")
                 for kind, names in kinds.items() if names]
        fixes = dict.fromkeys(kind.fix for kind, names in kinds.items() if names)  # (each once, in order)
        lines.append(f"Files the directory walk skipped: {sum(counts.values()):,} ({'; '.join(parts)}); "
                     + "; ".join(fixes))
    return lines
