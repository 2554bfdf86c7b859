"""Step clean: decode, normalize and filter every input into one file per source."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from mypt.errors import InputError, naming
from mypt.io import join_parts, staged_dir, write_json
from mypt.parallel import merge_counts, parallel_map
from mypt.readers import (Reader, TextSeen, WalkSkipped, counter_names, named, no_text_error, read_texts,
                          text_sources)
from mypt.settings import Settings, engine_setting, ray_address_setting, setting, workers_setting
from mypt.source_hash import SOURCE_HASH, pieces_sha256
from mypt.steps import MANIFEST, SOURCE_FILES, Step, source_files, step_files
from mypt.normalize import LineFilter, clean_lines
from mypt.text import DecodeCounter, display_name, doc_text, text_name

STEP = Step("clean")

# Every name the clean stats can hold: this step's counts, the line filter's drops, and what reading
# the inputs counts (the readers', the directory walks'). The clean stage's --stats replaces a file
# of these names only: a user's own JSON of counts is not a clean report.
COUNTERS = tuple(dict.fromkeys(["files", "skipped_binary_files", "documents_in", "documents_out", "documents_emptied",
                                "lines_out", "bad_json_lines", "invalid_utf8_bytes_replaced",
                                *(f"dropped_{reason}" for reason in LineFilter.REASONS), *counter_names()]))


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
    engine: str = engine_setting()
    ray_address: str | None = ray_address_setting()


def _source_file(index: int, path: Path, jsonl: bool) -> str:
    stem = text_name(path.name).split(".")[0][:60]  # its name goes into manifest.json
    return f"{index:05d}-{stem}.{'jsonl' if jsonl else 'txt'}"


class LineSink(Protocol):
    """Sees, in a worker, the lines one block of the clean step writes, as it writes them: how
    a composition chains the next step's work into this pass instead of that step reading the
    output back (prepare-dataset: mypt.prepare)."""

    def add(self, lines: list[str], pos: int) -> None:
        """`lines` were written, and the block's output now ends at byte `pos`, a line boundary."""

    def close(self, pos: int) -> None:
        """The block's output ended at byte `pos`."""


class SinkFactory(Protocol):
    """Picklable (it goes to the workers): the sink of block `index` of the clean step's tasks
    (in corpus order), whose output goes to the source file `source_file` of the clean output."""

    def __call__(self, index: int, source_file: str) -> LineSink: ...

    def discard(self, index: int) -> None:
        """Block `index`'s output was dropped after all (in the parent, once every block is
        done): its source, one document, holds no text. Forget what its sink saw."""


def _clean_block(task) -> tuple[Counter, tuple[int, str] | None, tuple[bool, bool], list[bytes]]:
    """Clean one block into `out`, showing what it writes to the sink of `sink` when given;
    returns the counts, the block's first bad record, whether the reader gave text that is
    not blank and whether some of it was kept (an empty input is told apart from a filtered
    one, and a corpus of blank lines from one with text), and the digests of the input's
    pieces `pieces` (a range: its share of the source's hash, Reader.piece_digests)."""
    reader, start, end, normalize, max_line_chars, out, sink, index, source_file, pieces = task
    kept_text = False
    line_filter = LineFilter(max_line_chars) if max_line_chars else None
    stats = Counter(lines_out=0, documents_in=0, documents_out=0, documents_emptied=0, bad_json_lines=0)
    drops = Counter(dict.fromkeys(LineFilter.REASONS, 0)) if line_filter else Counter()
    decoder = DecodeCounter()
    lines_to = sink(index, source_file) if sink is not None else None
    seen = TextSeen()
    # A full disk names `out`. Nothing else in the block fails unnamed: a read's error is an InputError
    # naming the input (readers), the sink's write errors name its own files.
    with naming(out), open(out, "wb") as f:
        for text in read_texts(reader, [(start, end)], decoder, stats, seen):
            lines = clean_lines(text, normalize, line_filter, drops)
            kept_text = kept_text or any(map(str.strip, lines))
            if reader.one_document:  # a piece of the file's one document
                stats["lines_out"] += len(lines)
                if lines:
                    # With normalize and filter off the text passes unchanged: no newline
                    # added after a document's last line.
                    exact = not normalize and line_filter is None
                    f.write((text if exact else "\n".join(lines) + "\n").encode("utf-8"))
                    if lines_to is not None:
                        lines_to.add(lines, f.tell())
                continue
            if all(not line.strip() for line in lines):
                stats["documents_emptied"] += 1
                continue
            stats["lines_out"] += len(lines)
            stats["documents_out"] += 1
            f.write(doc_text(lines, jsonl=True).encode("utf-8"))
            if lines_to is not None:
                lines_to.add(lines, f.tell())
        if lines_to is not None:
            lines_to.close(f.tell())
    stats["invalid_utf8_bytes_replaced"] += decoder.replaced
    for reason, n in drops.items():
        stats[f"dropped_{reason}"] += n
    return stats, reader.first_bad, (seen.any, kept_text), reader.piece_digests(pieces.start, pieces.stop)


def _drop(parts: list[Path], blocks: range, results: list, stats: Counter, sink: SinkFactory | None) -> None:
    """Drop the output of a source's blocks (`parts`, the blocks' own files): its lines are not
    written (nor counted in lines_out), and its sink forgets them."""
    for part, t in zip(parts, blocks):
        part.unlink()
        stats["lines_out"] -= results[t][0]["lines_out"]
        if sink is not None:
            sink.discard(t)


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
          sink: SinkFactory | None = None) -> dict:
    """Decode, normalize and filter the inputs into `out_dir` (one file per source: .txt for
    a one-document source, .jsonl for a source of many documents). `sink`: what sees the lines
    each block writes, in the worker that writes them (SinkFactory)."""
    walk = WalkSkipped()
    max_line_chars = settings.max_line_chars if settings.filter else 0
    readers, binary = text_sources(input_files, text_key=settings.text_key, strict=settings.strict, walk_skipped=walk,
                                   cr_ends_lines=settings.normalize, filter_chars=max_line_chars or None)
    paths = [r.path for r in readers] + list(binary)
    skipped = [display_name(p) for p in binary]
    # Text, not binary: its fix is named (written here: the split stage, which prints it, needs no mypt.text).
    wide = {display_name(p): fix for p, fix in binary.items() if fix}
    with staged_dir(out_dir, paths, marker=MANIFEST, owned=SOURCE_FILES, written=step_files(STEP, source_files),
                    kind="clean step's output") as stage:
        sources, tasks = [], []
        for reader in readers:
            jsonl = not reader.one_document
            # The size is checked after every block. The hash (SOURCE_HASH): what --append_to and
            # prepare-dataset know the input by, whatever its name and the working directory of either run.
            source = {"name": display_name(reader.path), "file": _source_file(len(sources), reader.path, jsonl),
                      "jsonl": jsonl, "bytes": reader.stamp.size}
            sources.append(source)
            blocks = reader.checked_blocks()
            source["_tasks"] = range(len(tasks), len(tasks) + len(blocks))
            source["_parts"] = [stage / f".part_{len(tasks) + i:06d}" for i in range(len(blocks))]
            # Block i of n hashes pieces [i * p // n, (i + 1) * p // n): a text block's share of the
            # bytes, which it has just read (blocks and pieces are both about 4 MiB), so each task
            # hashes about its own bytes, not the first block's task all of them.
            n, p = len(blocks), reader.piece_count()
            tasks += [(reader, s, e, settings.normalize, max_line_chars, part, sink, len(tasks) + i, source["file"],
                       range(i * p // n, (i + 1) * p // n))
                      for i, ((s, e), part) in enumerate(zip(blocks, source["_parts"]))]
        results = parallel_map(_clean_block, tasks, settings, "clean")
        stats = merge_counts(counts for counts, *_ in results)
        # The first bad record in corpus order: blocks come back in task order, so whatever
        # the worker count the earliest block that saw one names it.
        first_bad = next((task[0].location(task[1], bad[0]) + f": {bad[1]}"
                          for task, (_, bad, *_) in zip(tasks, results) if bad), None)
        for source in sources:
            blocks, parts = source.pop("_tasks"), source.pop("_parts")
            if blocks:
                source[SOURCE_HASH] = pieces_sha256(d for t in blocks for d in results[t][3])
            # A .txt source is one document in blocks (no block alone can tell): one left no line
            # with text (blank lines only, as written or once filtered) is no document, as an
            # empty file is and a .jsonl document of blank lines is; written empty, not as a
            # document of newlines. Whatever --no_normalize and --no_filter keep, whitespace is
            # no text.
            blank = not source["jsonl"] and not any(results[t][2][1] for t in blocks)
            if blank:
                _drop(parts, blocks, results, stats, sink)
            size = join_parts(parts if not blank else [], stage / source["file"])
            if not source["jsonl"]:
                stats["documents_in"] += 1
                stats["documents_out" if size else "documents_emptied"] += 1
        stats["files"] = len(sources)
        stats["skipped_binary_files"] = len(skipped)
        if walk:  # only then: the metadata of a corpus walked whole is unchanged
            stats.update(walk.counts())
        if not any(kept for _, _, (_, kept), _ in results):  # no line with text written: no corpus
            with_text = {task[0].path for task, (_, _, (had, _), _) in zip(tasks, results) if had}
            raise _nothing_left(stats, first_bad, readers, [r for r in readers if r.path not in with_text])
        manifest = {"step": STEP.name, "sources": sources, "skipped_binary_files": skipped,
                    "settings": settings.recorded(), "stats": {"clean": dict(sorted(stats.items()))}}
        if walk:  # a few names for the summary (the counts are in the stats)
            manifest["walk_skipped_files"] = walk.names()
        if wide:
            manifest["skipped_wide_text_files"] = wide
        if first_bad:  # only then: the metadata of a corpus without bad lines is unchanged
            manifest["first_bad_json_line"] = first_bad
        write_json(stage / MANIFEST, manifest)
    return manifest
