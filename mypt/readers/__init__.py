"""Input formats: one reader class per format, registered by file suffix.

A reader turns a block of an input file (a byte range; for parquet, row groups) into texts:
pieces of the file's single document (`one_document = True`, e.g. .txt) or whole documents
(e.g. one per JSONL line or parquet row). A damaged file is an InputError naming it
(`Reader.checked_blocks`, `Reader.checked_texts`).
Compression is a layer under any format that allows it (`X.gz`, `X.zst` are read as X
through gzip, zstandard); a compressed file cannot be seeked, so it is one block of work.
Parquet is compressed inside and needs seeking: its blocks are row groups.

To add a format: a new module here with a `mypt.readers.base.Reader` subclass decorated
`@register`, and its import in the registration line at the bottom of this file.
"""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Sequence

from mypt.errors import InputError
from mypt.readers.base import COMPRESSIONS, READERS, Reader

def suffixes() -> list[str]:
    """Every input suffix mypt reads, compressed forms included."""
    return [s + c for s, cls in READERS.items() for c in ["", *(COMPRESSIONS if cls.compressible else ())]]


def reader_for(path: Path, *, text_key: str = "text", strict: bool = False) -> Reader | None:
    """The reader of `path` by its suffix (None: not a format mypt reads). `text_key` names
    the field of a document's text (JSONL, parquet); `strict` makes a bad record an error."""
    name = Path(path).name
    compression = next((c for c in COMPRESSIONS if name.endswith(c)), None)
    inner = name[:-len(compression)] if compression else name
    cls = next((READERS[s] for s in READERS if inner.endswith(s)), None)
    if cls is None or (compression and not cls.compressible):
        return None
    return cls(path, compression, text_key=text_key, strict=strict)


def resolve_inputs(patterns: Sequence[str]) -> list[Path]:
    """Expand files, directories (searched recursively for text files) and globs.

    Returns the sorted, de-duplicated list of files; the sort order is the corpus order.
    """
    if not patterns:
        raise InputError("no input given: pass --input_files FILE_OR_DIR_OR_GLOB (several allowed)")
    known = tuple(suffixes())
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
                inside = [p for p in path.rglob("*") if p.is_file() and p.name.endswith(known)]
                if not inside:
                    raise InputError(f"--input_files: the directory {str(path)!r} holds no text files "
                                     f"(looked for {', '.join(known)})")
                found.update(inside)
            elif path.is_file():
                found.add(path)
    return sorted(found, key=lambda p: str(p))


def looks_binary(path: Path) -> bool:
    """A binary file where text was expected (a NUL byte in the first 8 KiB of a text
    format, after decompression): skipped and counted. A compressed file that does not
    decompress is an InputError naming it, not a skip."""
    return (reader_for(path) or Reader(path)).looks_binary()


from mypt.readers import jsonl, parquet, txt  # noqa: E402,F401  (registration: one line per format)
