"""`.parquet`: one document per row, its text in the `text` column (`--text_key` names
another), as in FineWeb and most corpora on the Hugging Face hub.

A block of work is a row group, so workers split a file; a row group is read in batches of
rows, so memory stays bounded by a batch, not by the file. A null text is an empty document
(counted as documents_emptied). Needs pyarrow (`pip install 'mypt[formats]'`), imported
only when a parquet file is read.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from mypt.readers.base import READ_ERRORS, Reader, check_text_column, import_pyarrow, register
from mypt.text import DecodeCounter

BATCH_ROWS = 1024  # FineWeb's documents average ~3 KB: ~3 MB of text per batch


@register
class ParquetReader(Reader):
    suffix = ".parquet"
    description = "one document per row in its `text` column"
    one_document = False
    counters = ("documents_in",)  # (Reader.chunks unused: no line is dropped as too long to hold)
    compressible = False  # parquet compresses its pages itself and needs seeking

    def read_errors(self) -> tuple[type[BaseException], ...]:
        return (*READ_ERRORS, import_pyarrow(self.path).ArrowException)

    def sniff(self) -> str | None:
        return None  # binary by design; the text column is checked in blocks()

    @contextmanager
    def _file(self):
        # Opened as every input is (Reader.open: a FIFO in its place is refused, not waited on),
        # and handed to pyarrow open.
        with self.open() as raw, import_pyarrow(self.path).parquet.ParquetFile(raw) as f:
            check_text_column(self.path, f.schema_arrow, self.text_key)
            yield f

    def blocks(self) -> list[tuple[int, int]]:
        """Row groups [i, i + 1): the unit a parquet file can be read by independently."""
        with self._file() as f:
            return [(i, i + 1) for i in range(f.num_row_groups)]

    def texts(self, start: int, end: int, decoder: DecodeCounter, stats) -> Iterator[str]:
        with self._file() as f:
            for batch in f.iter_batches(BATCH_ROWS, row_groups=range(start, end), columns=[self.text_key]):
                for text in batch.column(0).to_pylist():
                    stats["documents_in"] += 1
                    yield text or ""
