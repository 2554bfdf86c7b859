"""`.txt`: the whole file is one document, read in line-aligned blocks (in pieces: Reader.chunks;
for the clean step a lone \r ends a line when it normalizes, and a line too long to hold is
dropped when its filter would drop it). A UTF-8 byte-order mark at the start of the file is
not part of the document (see `texts`)."""

from __future__ import annotations

from typing import Iterator

from mypt.readers.base import BOM, Reader, register
from mypt.text import DecodeCounter


@register
class TxtReader(Reader):
    suffix = ".txt"
    description = "one document"
    one_document = True

    def texts(self, start: int, end: int, decoder: DecodeCounter, stats) -> Iterator[str]:
        for n, chunk in enumerate(self.chunks(start, end, stats)):
            if n == 0 and start == 0:  # the file's first bytes
                # A BOM is the encoding's mark, not text: under --no_normalize it entered a char
                # vocabulary and the first document, and a file of a BOM and blank lines was a
                # document rather than an input without text.
                chunk = chunk.removeprefix(BOM)
            yield decoder.decode(chunk)
