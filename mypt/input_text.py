"""`mypt train --input_file`: one plain text file, read whole and tokenized in memory.

Only the command line's train reaches this module (it imports the input formats' registry to
refuse the formats prepare-dataset reads); the DVC stages train on prepared datasets, so
an edit of a reader does not rerun training."""

from __future__ import annotations

from pathlib import Path

from mypt.errors import DataError
from mypt.readers import looks_binary, reader_for, regular_file


def read_input_text(path: Path) -> str:
    """The text of --input_file, refused when not a regular file (a FIFO would block the
    binary sniff), binary or without text (what prepare-dataset would skip or reject)."""
    regular_file(Path(path), "--input_file")
    if not str(path).endswith(".txt") and reader_for(Path(path)) is not None:
        # .gz/.zst/.jsonl/.parquet would be read as raw bytes here: those go through prepare-dataset.
        raise DataError(f"--input_file {path}: only a plain text file is tokenized in memory; prepare "
                        f"{Path(path).name} with `mypt prepare-dataset` and train with --dataset_dir")
    if looks_binary(Path(path)):
        raise DataError(f"--input_file {path} looks binary (a NUL byte near its start): pass a text file")
    # utf-8-sig: a leading byte-order mark is the encoding's mark, not text (as prepare-dataset's
    # .txt reader drops it): it would enter the char vocabulary, and a file of a BOM and blank
    # lines would be trained on rather than refused.
    text = Path(path).read_text(encoding="utf-8-sig", errors="replace")
    if not text.strip():
        raise DataError(f"--input_file {path}: no text in the file (empty or whitespace only)")
    return text
