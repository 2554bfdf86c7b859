"""Step clean: decode, normalize and filter every input into one file per source."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from mypt.errors import InputError
from mypt.io import atomic_file, concat_files, staged_dir, write_json
from mypt.parallel import merge_counts, parallel_map
from mypt.readers import looks_binary, reader_for, resolve_inputs, suffixes
from mypt.settings import Settings, setting, workers_setting
from mypt.steps import MANIFEST, Step
from mypt.text import DecodeCounter, LineFilter, clean_lines, display_name, doc_text

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


def _clean_block(task) -> tuple[Counter, tuple[int, str] | None]:
    """Clean one block into `out`; returns the counts and the block's first bad record."""
    path, start, end, normalize, max_line_chars, text_key, strict, out = task
    reader = reader_for(path, text_key=text_key, strict=strict)
    line_filter = LineFilter(max_line_chars) if max_line_chars else None
    stats = Counter(lines_out=0, documents_in=0, documents_out=0, documents_emptied=0, bad_json_lines=0)
    drops = Counter(dict.fromkeys(LineFilter.REASONS, 0)) if line_filter else Counter()
    decoder = DecodeCounter()
    with open(out, "wb") as f:
        for text in reader.checked_texts(start, end, decoder, stats):
            lines = clean_lines(text, normalize, line_filter, drops)
            if reader.one_document:  # a piece of the file's one document
                stats["lines_out"] += len(lines)
                if lines:
                    # With normalize and filter off the text passes unchanged: no newline
                    # added after a document's last line.
                    exact = not normalize and line_filter is None
                    f.write((text if exact else "\n".join(lines) + "\n").encode("utf-8"))
                continue
            if all(not line.strip() for line in lines):
                stats["documents_emptied"] += 1
                continue
            stats["lines_out"] += len(lines)
            stats["documents_out"] += 1
            f.write(doc_text(lines, jsonl=True).encode("utf-8"))
    stats["invalid_utf8_bytes_replaced"] += decoder.replaced
    for reason, n in drops.items():
        stats[f"dropped_{reason}"] += n
    return stats, reader.first_bad


def clean(input_files: list[str], out_dir: Path, settings: CleanSettings = CleanSettings()) -> dict:
    """Decode, normalize and filter the inputs into `out_dir` (one file per source: .txt for
    a one-document source, .jsonl for a source of many documents)."""
    paths = resolve_inputs(input_files)
    max_line_chars = settings.max_line_chars if settings.filter else 0
    with staged_dir(out_dir, paths, marker=MANIFEST) as stage:
        sources, skipped, tasks = [], [], []
        for path in paths:
            if looks_binary(path):
                skipped.append(display_name(path))
                continue
            reader = reader_for(path, text_key=settings.text_key)
            if reader is None:
                raise InputError(f"--input_files: {display_name(path)} is not a format mypt reads "
                                 f"(suffixes: {', '.join(suffixes())})")
            jsonl = not reader.one_document
            source = {"name": display_name(path), "file": _source_file(len(sources), path, jsonl),
                      "jsonl": jsonl, "bytes": path.stat().st_size}
            sources.append(source)
            blocks = reader.checked_blocks()
            source["_parts"] = [stage / f".part_{len(tasks) + i:06d}" for i in range(len(blocks))]
            tasks += [(path, s, e, settings.normalize, max_line_chars, settings.text_key, settings.strict, part)
                      for (s, e), part in zip(blocks, source["_parts"])]
        if not sources:
            raise InputError(f"--input_files: no text to read; binary files skipped: {', '.join(skipped)}")
        results = parallel_map(_clean_block, tasks, settings.workers, "clean")
        stats = merge_counts(counts for counts, _ in results)
        # The first bad record in corpus order: blocks come back in task order, so whatever
        # the worker count the earliest block that saw one names it.
        first_bad = next((reader_for(task[0]).location(task[1], bad[0]) + f": {bad[1]}"
                          for task, (_, bad) in zip(tasks, results) if bad), None)
        for source in sources:
            with atomic_file(stage / source["file"]) as f:
                size = concat_files(source.pop("_parts"), f)
            if not source["jsonl"]:
                stats["documents_in"] += 1
                stats["documents_out" if size else "documents_emptied"] += 1
        stats["files"] = len(sources)
        stats["skipped_binary_files"] = len(skipped)
        if stats["lines_out"] == 0:
            dropped = {k: v for k, v in stats.items() if k.startswith("dropped_")}
            raise InputError(f"everything was filtered away (drops: {dropped or 'none'}, "
                             f"bad JSON lines: {stats['bad_json_lines']}{f', first {first_bad}' if first_bad else ''}): "
                             f"check --input_files{' and --text_key' if first_bad else ''}, or pass --no_filter")
        manifest = {"step": STEP.name, "sources": sources, "skipped_binary_files": skipped,
                    "settings": settings.recorded(), "stats": {"clean": dict(sorted(stats.items()))}}
        if first_bad:  # only then: the metadata of a corpus without bad lines is unchanged
            manifest["first_bad_json_line"] = first_bad
        write_json(stage / MANIFEST, manifest)
    return manifest
