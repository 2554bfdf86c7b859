"""`.txt`: the whole file is one document, read in line-aligned blocks."""

from __future__ import annotations

from typing import Iterator

from mypt.readers.base import Reader, register
from mypt.text import DecodeCounter


@register
class TxtReader(Reader):
    suffix = ".txt"
    description = "one document"
    one_document = True

    def texts(self, start: int, end: int, decoder: DecodeCounter, stats) -> Iterator[str]:
        for chunk in self.chunks(start, end):
            yield decoder.decode(chunk)
