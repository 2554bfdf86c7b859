"""Input formats: one reader class per format, registered by file suffix.

A reader turns a byte range of an input file into texts: pieces of the file's single
document (`one_document = True`, e.g. .txt) or whole documents (e.g. one per JSONL line).
Compression is a layer under any format (`X.gz` is read as X through gzip); a compressed
file cannot be seeked, so it is one block of work.

To add a format: a new module here with a `mypt.readers.base.Reader` subclass decorated
`@register`, and its import in the registration line at the bottom of this file.
"""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Sequence

from mypt.errors import InputError
from mypt.readers.base import COMPRESSIONS, DAMAGED, READERS, Reader, damaged

def suffixes() -> list[str]:
    """Every input suffix mypt reads, compressed forms included."""
    return [s + c for s in READERS for c in ["", *COMPRESSIONS]]


def reader_for(path: Path) -> Reader | None:
    name = Path(path).name
    compression = next((c for c in COMPRESSIONS if name.endswith(c)), None)
    inner = name[:-len(compression)] if compression else name
    cls = next((READERS[s] for s in READERS if inner.endswith(s)), None)
    return cls(path, compression) if cls else None


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


_SNIFF_BYTES = 8192


def looks_binary(path: Path) -> bool:
    """A NUL byte in the first 8 KiB (after decompression) marks a binary file."""
    reader = reader_for(path) or Reader(path)
    try:
        with reader.open() as f:
            head = f.read(_SNIFF_BYTES)
    except DAMAGED as e:  # not binary: a broken file, which the user should hear about
        raise damaged(path, e) from None
    return b"\x00" in head


from mypt.readers import jsonl, txt  # noqa: E402,F401  (registration: one line per format)
