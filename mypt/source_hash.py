"""What a dataset records of each source's bytes, so that --append_to and prepare-dataset know an
input again whatever its name or place: a leaf (hashlib only), which the clean step (it hashes),
the split step (it copies the record) and the readers (they read the pieces) share.

`sources[].sha256_pieces`: the sha256 of the sha256 digests (32 bytes each) of the source's stored
bytes (a saved dataset's files in turn) cut in pieces of PIECE_BYTES, the last one short (an empty
input: of no digest). Pieces hash apart, so the clean step's block tasks hash them in parallel,
each about the bytes it has just read: one sha256 of a whole 100 GB input was one task reading it
all again, about 100 s at 1 GB/s, the clean step's critical path on many cores.

A dataset of an older mypt records a plain sha256 of the stored bytes under `sha256` instead
(`sha256sum FILE`; Reader.plain_sha256 computes it where one is compared), and one older still no
hash (its sources are then known by name and size).
"""

from __future__ import annotations

import hashlib
from typing import Iterable

# Fixed, never to follow mypt.text.BLOCK_BYTES (4 MiB too when chosen, so that a text block hashes
# about the bytes it reads): the value must stay what datasets already record.
PIECE_BYTES = 4 << 20
SOURCE_HASH = "sha256_pieces"
SOURCE_HASHES = (SOURCE_HASH, "sha256")  # what a source may record, newest first


def pieces_sha256(digests: Iterable[bytes]) -> str:
    """The SOURCE_HASH of an input from its pieces' sha256 digests, in order."""
    return hashlib.sha256(b"".join(digests)).hexdigest()


def recorded_hash(source: dict) -> tuple[str, str] | None:
    """(key, value) of the hash a dataset's source record holds (SOURCE_HASHES), None: none."""
    return next(((key, source[key]) for key in SOURCE_HASHES if source.get(key)), None)
