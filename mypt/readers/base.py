"""The reader interface and the registries (format suffix -> class, compression suffix ->
opener). Kept apart from mypt/readers/__init__.py so that format modules import it without
importing the package that imports them."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from mypt.errors import InputError
from mypt.text import BLOCK_BYTES, DecodeCounter, split_blocks

READERS: dict[str, type["Reader"]] = {}  # format suffix -> reader class
COMPRESSIONS: dict[str, Callable[[Path], BinaryIO]] = {".gz": lambda p: gzip.open(p, "rb")}
_SNIFF_BYTES = 8192
# What a damaged or truncated compressed file raises while it is read.
DAMAGED = (EOFError, zlib.error, gzip.BadGzipFile)


def damaged(path: Path, e: Exception) -> InputError:
    return InputError(f"--input_files: {path} is damaged or truncated ({type(e).__name__}: {e}); "
                      "download or compress it again, or leave it out")


class Reader:
    suffix = ""  # ".txt"
    one_document = True  # the whole file is one document (True) or it holds many (False)

    def __init__(self, path: Path, compression: str | None = None):
        self.path, self.compression = Path(path), compression

    def open(self) -> BinaryIO:
        return COMPRESSIONS[self.compression](self.path) if self.compression else open(self.path, "rb")

    def blocks(self) -> list[tuple[int, int]]:
        """Byte ranges that can be read independently; (0, -1) is the whole file."""
        return [(0, -1)] if self.compression else split_blocks(self.path)

    def chunks(self, start: int, end: int) -> Iterator[bytes]:
        """The raw bytes of [start, end) in pieces that end at line boundaries."""
        try:
            with self.open() as f:
                if end >= 0:
                    f.seek(start)
                    yield f.read(end - start)
                    return
                while lines := f.readlines(BLOCK_BYTES):  # a stream: line-aligned pieces
                    yield b"".join(lines)
        except DAMAGED as e:
            raise damaged(self.path, e) from None

    def texts(self, start: int, end: int, decoder: DecodeCounter, stats) -> Iterator[str]:
        """Texts of the block; `stats` (a Counter) receives what the reader counts."""
        raise NotImplementedError


def register(cls: type[Reader]) -> type[Reader]:
    READERS[cls.suffix] = cls
    return cls
