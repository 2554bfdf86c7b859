"""Step clean: decode, normalize and filter every input into one file per source."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from mypt.errors import InputError
from mypt.io import atomic_file, concat_files, staged_dir, write_json
from mypt.parallel import merge_counts, parallel_map
from mypt.readers import Reader, named, no_text_error, text_sources
from mypt.settings import Settings, setting, workers_setting
from mypt.steps import HASHED_FILE, MANIFEST, SOURCE_FILES, Step
from mypt.text import BLOCK_BYTES, DecodeCounter, LineFilter, clean_lines, display_name, doc_text, hash_records

STEP = Step("clean")


@dataclass(frozen=True)
class CleanSettings(Settings):
    LABEL = "clean setting"

    normalize: bool = setting(True, "NFC, \\r\\n -> \\n, control characters and trailing whitespace removed.")
    filter: bool = setting(True, "Drop lines with no letters, or longer than max_line_chars.")
    max_line_chars: int = setting(100_000, "Line filter: longer lines are dropped (counted as too_long).", min=1)
    text_key: str = setting("text", "JSONL and parquet: the field (column) that holds each document's text.")
    strict: bool = setting(False, "Stop at the first bad JSONL line (not JSON, not an object, no string text "
                                  "field) with an error naming file:line; without it such lines are skipped "
                                  "and counted.", output=False)
    workers: int | None = workers_setting()


def _source_file(index: int, path: Path, jsonl: bool) -> str:
    stem = path.name.split(".")[0][:60]
    return f"{index:05d}-{stem}.{'jsonl' if jsonl else 'txt'}"


HASH_FLUSH_LINES = 1 << 16  # lines hashed at a time when the clean step hashes for dedup


class _Hasher:
    """The dedup step's first phase done while cleaning (prepare-dataset): the (hash, line)
    records of the lines a block writes, and where each piece of its output ends (bytes,
    lines) so that dedup's write phase reads it in pieces of about a block."""

    def __init__(self, out: Path | None, min_chars: int):
        self.file = open(out, "wb") if out is not None else None
        self.min_chars, self.lines, self.n, self.stats = min_chars, [], 0, Counter()
        self.pieces: list[tuple[int, int]] = []  # (bytes, lines) of each piece of the output
        self.piece_start, self._piece_lines = 0, 0  # where the current piece starts (byte, line)

    def add(self, lines: list[str]) -> None:
        if self.file is not None:
            self.lines += lines
            if len(self.lines) >= HASH_FLUSH_LINES:
                self.flush()

    def flush(self) -> None:
        rec, stats = hash_records(self.lines, self.min_chars)
        rec["idx"] += self.n
        rec.tofile(self.file)
        self.n += len(self.lines)
        self.stats.update(stats)
        self.lines = []

    def end_piece(self, pos: int) -> None:
        """End the current piece of the output at byte `pos` (all written so far)."""
        if self.file is not None and pos > self.piece_start:
            lines = self.n + len(self.lines)
            self.pieces.append((pos - self.piece_start, lines - self._piece_lines))
            self.piece_start, self._piece_lines = pos, lines

    def close(self) -> None:
        if self.file is not None:
            if self.lines:
                self.flush()
            self.file.close()


def _clean_block(task) -> tuple[Counter, tuple[int, str] | None, dict | None, tuple[bool, bool]]:
    """Clean one block into `out`; returns the counts, the block's first bad record, with
    `hash_out` the dedup hashing of what it wrote (_Hasher), and whether the reader gave text
    that is not blank and whether some of it was kept (an empty input is told apart from a
    filtered one, and a corpus of blank lines from one with text)."""
    reader, start, end, normalize, max_line_chars, out, hash_out, min_chars = task
    had_text = kept_text = False
    line_filter = LineFilter(max_line_chars) if max_line_chars else None
    stats = Counter(lines_out=0, documents_in=0, documents_out=0, documents_emptied=0, bad_json_lines=0)
    drops = Counter(dict.fromkeys(LineFilter.REASONS, 0)) if line_filter else Counter()
    decoder = DecodeCounter()
    hasher = _Hasher(hash_out, min_chars)
    with open(out, "wb") as f:
        for text in reader.checked_texts(start, end, decoder, stats):
            had_text = had_text or (text != "" and not text.isspace())
            lines = clean_lines(text, normalize, line_filter, drops)
            kept_text = kept_text or any(map(str.strip, lines))
            if reader.one_document:  # a piece of the file's one document
                stats["lines_out"] += len(lines)
                if lines:
                    # With normalize and filter off the text passes unchanged: no newline
                    # added after a document's last line.
                    exact = not normalize and line_filter is None
                    f.write((text if exact else "\n".join(lines) + "\n").encode("utf-8"))
                    hasher.add(lines)
                    hasher.end_piece(f.tell())
                continue
            if all(not line.strip() for line in lines):
                stats["documents_emptied"] += 1
                continue
            stats["lines_out"] += len(lines)
            stats["documents_out"] += 1
            f.write(doc_text(lines, jsonl=True).encode("utf-8"))
            hasher.add(lines)
            if f.tell() - hasher.piece_start >= BLOCK_BYTES:
                hasher.end_piece(f.tell())
        hasher.end_piece(f.tell())
    hasher.close()
    stats["invalid_utf8_bytes_replaced"] += decoder.replaced
    for reason, n in drops.items():
        stats[f"dropped_{reason}"] += n
    hashed = None if hash_out is None else {"lines": hasher.n, "pieces": hasher.pieces, "stats": dict(hasher.stats)}
    return stats, reader.first_bad, hashed, (had_text, kept_text)


def _nothing_left(stats: Counter, first_bad: str | None, readers: list[Reader], empty: list[Reader]) -> InputError:
    """The error of a clean that wrote no line of text, naming the cause: inputs with no text
    at all (`empty`: nothing to filter, so --no_filter would not help), or lines all dropped
    by the filter or documents all bad JSON lines (then the inputs with no text are named)."""
    dropped = {k: v for k, v in stats.items() if k.startswith("dropped_") and v}
    if not dropped and not stats["bad_json_lines"]:
        return no_text_error(empty or readers)
    first = f", first {first_bad}" if first_bad else ""
    names = f"; no text at all in {named(empty)}" if empty else ""
    fixes = ["check --input_files" + (" and --text_key" if first_bad else "")]
    if dropped:  # only then can --no_filter help
        fixes.append("pass --no_filter")
    return InputError(f"everything was filtered away (drops: {dropped or 'none'}, bad JSON lines: "
                      f"{stats['bad_json_lines']}{first}{names}): " + ", or ".join(fixes))


def clean(input_files: list[str], out_dir: Path, settings: CleanSettings = CleanSettings(),
          hash_dir: Path | None = None, dedup_min_chars: int = 0) -> dict:
    """Decode, normalize and filter the inputs into `out_dir` (one file per source: .txt for
    a one-document source, .jsonl for a source of many documents).

    With `hash_dir` (prepare-dataset), also do the dedup step's first phase on the lines as
    they are written, instead of dedup reading them back: `hash_dir` receives the (hash,
    line) records and HASHED_FILE, which `dedup(..., hashed=hash_dir)` takes."""
    readers, binary = text_sources(input_files, text_key=settings.text_key, strict=settings.strict)
    paths = [r.path for r in readers] + binary
    skipped = [display_name(p) for p in binary]
    max_line_chars = settings.max_line_chars if settings.filter else 0
    with staged_dir(out_dir, paths, marker=MANIFEST, owned=SOURCE_FILES) as stage:
        sources, tasks = [], []
        for reader in readers:
            jsonl = not reader.one_document
            source = {"name": display_name(reader.path), "file": _source_file(len(sources), reader.path, jsonl),
                      "jsonl": jsonl, "bytes": reader.stamp[0]}  # the size checked after every block
            sources.append(source)
            blocks = reader.checked_blocks()
            source["_parts"] = [stage / f".part_{len(tasks) + i:06d}" for i in range(len(blocks))]
            tasks += [(reader, s, e, settings.normalize, max_line_chars, part,
                       hash_dir / f"{len(tasks) + i:06d}.rec" if hash_dir is not None else None, dedup_min_chars)
                      for i, ((s, e), part) in enumerate(zip(blocks, source["_parts"]))]
        if hash_dir is not None:
            hash_dir.mkdir(parents=True, exist_ok=True)
        results = parallel_map(_clean_block, tasks, settings.workers, "clean")
        stats = merge_counts(counts for counts, _, _, _ in results)
        # The first bad record in corpus order: blocks come back in task order, so whatever
        # the worker count the earliest block that saw one names it.
        first_bad = next((task[0].location(task[1], bad[0]) + f": {bad[1]}"
                          for task, (_, bad, _, _) in zip(tasks, results) if bad), None)
        hashed = iter(hashed for _, _, hashed, _ in results)
        hash_files, hash_lines, pieces = [], [], []  # dedup's phase 1, done: see HASHED_FILE
        for source in sources:
            offset = 0
            for part in source["_parts"]:
                if hash_dir is not None:
                    h = next(hashed)
                    hash_files.append(f"{len(hash_files):06d}.rec")
                    hash_lines.append(h["lines"])
                    for size, lines in h["pieces"]:
                        pieces.append([source["file"], source["jsonl"], offset, offset + size, lines])
                        offset += size
            with atomic_file(stage / source["file"]) as f:
                size = concat_files(source.pop("_parts"), f)
            if not source["jsonl"]:
                stats["documents_in"] += 1
                stats["documents_out" if size else "documents_emptied"] += 1
        stats["files"] = len(sources)
        stats["skipped_binary_files"] = len(skipped)
        if not any(kept for _, _, _, (_, kept) in results):  # no line with text written: no corpus
            with_text = {task[0].path for task, (_, _, _, (had, _)) in zip(tasks, results) if had}
            raise _nothing_left(stats, first_bad, readers, [r for r in readers if r.path not in with_text])
        manifest = {"step": STEP.name, "sources": sources, "skipped_binary_files": skipped,
                    "settings": settings.recorded(), "stats": {"clean": dict(sorted(stats.items()))}}
        if first_bad:  # only then: the metadata of a corpus without bad lines is unchanged
            manifest["first_bad_json_line"] = first_bad
        write_json(stage / MANIFEST, manifest)
    if hash_dir is not None:
        write_json(hash_dir / HASHED_FILE, {"files": hash_files, "lines": hash_lines, "pieces": pieces,
                                            "stats": dict(merge_counts(Counter(h["stats"]) for _, _, h, _ in results))})
    return manifest
