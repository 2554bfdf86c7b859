"""A directory written by `datasets`' `Dataset.save_to_disk`: one document per row, its text
in the `text` column (`--text_key` names another).

Such a directory holds Arrow files (IPC stream format, `data-00000-of-00002.arrow` ...),
`dataset_info.json` and `state.json`, whose `_data_files` lists the Arrow files in the
dataset's row order. It is one input, not a folder to walk: its files are read in that
order, a block of work per file (save_to_disk cuts at 500 MB by default; its `num_shards`
gives more blocks). A null text is an empty document, as in parquet. A `DatasetDict`'s
directory (`dataset_dict.json` and a directory per split) is refused: its splits are
datasets of their own, to be named one by one (train text mixed with test text is rarely
meant). Needs pyarrow (`pip install 'mypt[formats]'`), imported only when a file is read;
finding such a directory needs only its state.json.
"""

from __future__ import annotations

import json
import mmap
import os
from pathlib import Path
from typing import Iterator

from mypt.errors import InputError
from mypt.readers.base import READ_ERRORS, Reader, Stamp, check_text_column, file_stamp, import_pyarrow
from mypt.text import DecodeCounter, display_name

STATE = "state.json"  # what marks a directory written by Dataset.save_to_disk
INFO = "dataset_info.json"  # written beside it
DICT = "dataset_dict.json"  # what marks one written by DatasetDict.save_to_disk
# What an Arrow stream ends with when its writer closed it (datasets' ArrowWriter.finalize closes
# its RecordBatchStreamWriter; so does pyarrow's new_stream as a context): a continuation mark and a
# zero length. pyarrow takes a file's end at the end of a record batch as the stream's end, so a
# file cut there read short, with no error; the mark says it is whole. The pre-0.15 format (its
# messages start without the continuation mark) ends with the zero length alone.
CONTINUATION = b"\xff\xff\xff\xff"
END_OF_STREAM = CONTINUATION + bytes(4)


def is_saved_dataset(path: Path) -> bool:
    """Whether `path` is a directory written by Dataset.save_to_disk (state.json and dataset_info.json)."""
    return (Path(path) / STATE).is_file() and (Path(path) / INFO).is_file()


def refuse_dataset_dict(path: Path, flag: str = "--input_files") -> None:
    """An InputError when `path` is a directory written by DatasetDict.save_to_disk."""
    if not (Path(path) / DICT).is_file():
        return
    splits = sorted(p.name for p in Path(path).iterdir() if is_saved_dataset(p))
    example = Path(path) / (splits[0] if splits else "train")
    raise InputError(f"{flag}: {str(path)!r} is a DatasetDict saved by datasets (splits: "
                     f"{', '.join(splits) or 'none'}): pass the split to read, e.g. {str(example)!r}")


class SavedDatasetReader(Reader):
    """Not registered by suffix: `mypt.readers.reader_for` picks it for a directory that
    `is_saved_dataset`."""

    description = "one document per row in its `text` column"
    one_document = False
    counters = ("documents_in",)  # (Reader.chunks unused: no line is dropped as too long to hold)
    compressible = False

    def read_errors(self) -> tuple[type[BaseException], ...]:
        return (*READ_ERRORS, import_pyarrow(self.path).ArrowException)

    def damaged(self, error: BaseException) -> InputError:
        detail = " ".join(str(error).split()) or type(error).__name__
        return InputError(f"{display_name(self.path)}: cannot be read as a dataset saved by datasets ({detail}); "
                          "its files are damaged or incomplete: save it again, or leave it out of --input_files")

    def sniff(self) -> str | None:
        return None  # Arrow is binary by design; the text column is checked in blocks()

    def files(self) -> list[Path]:
        """The Arrow files, in the order state.json lists them (the dataset's row order)."""
        where = display_name(self.path / STATE)
        try:
            with self.open_file(self.path / STATE) as f:  # (a FIFO in its place: refused, not waited on)
                state = json.loads(f.read().decode("utf-8"))
        except InputError:  # (a ValueError: the message names the file and the fix already)
            raise
        except (OSError, ValueError) as e:
            raise InputError(f"{where} cannot be read ({e}): save the dataset again") from None
        listed = state.get("_data_files") if isinstance(state, dict) else None
        names = [d.get("filename") for d in listed if isinstance(d, dict)] if isinstance(listed, list) else None
        # A name must be a file of this directory: state.json is data, never a path to follow out of it.
        if names is None or not all(isinstance(n, str) and n and Path(n).name == n for n in names):
            raise InputError(f"{where}: no list of the dataset's files (_data_files) in it, as Dataset.save_to_disk "
                             "writes: save the dataset again")
        # An indices mapping (datasets 1.x saved a select, shuffle, filter or split so: the whole
        # table, and which rows of it are the dataset, in which order): read whole, the rows the
        # user dropped came back, silently.
        if state.get("_indices_data_files"):
            raise InputError(f"{where} lists an indices mapping (_indices_data_files: the dataset is some rows of its "
                             "Arrow files, as a select, shuffle, filter or split left it), which mypt does not read: "
                             "save the dataset again after ds = ds.flatten_indices()")
        # (exists: a FIFO in a file's place is refused as one when opened, not called missing)
        missing = [n for n in names if not (self.path / n).exists()]
        if missing:
            raise InputError(f"{where} lists {missing[0]}, which is not in {display_name(self.path)}: the directory "
                             "is incomplete; copy it whole or save the dataset again")
        return [self.path / n for n in names]

    def current_stamp(self) -> Stamp:
        """Of state.json and the Arrow files it lists."""
        return file_stamp([self.path / STATE, *self.files()])

    def block_files(self, start: int, end: int) -> list[Path]:
        """state.json and the Arrow files of block [start, end): as resolved (the stamp's list,
        state.json first as current_stamp puts it, and checked unchanged after each block), else
        as state.json lists them now. Not state.json parsed and every file stat'ed again for
        each block: a dataset of thousands of files was quadratic."""
        if self.stamp is None:
            return [self.path / STATE, *self.files()[start:end]]
        return [Path(f.path) for f in (self.stamp.files[0], *self.stamp.files[1 + start:1 + end])]

    def _arrow_stream(self, file: Path):
        """The Arrow stream of `file`, mapped (a batch is read without a copy): opened as any
        input (open_file: a FIFO is refused, not waited on; another file in its place too)."""
        pa = import_pyarrow(self.path)
        with self.open_file(file) as f:
            # (An empty file cannot be mapped: it is no stream either, as pa.memory_map found.)
            mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if os.fstat(f.fileno()).st_size else b""
        end = END_OF_STREAM if mapped[:4] == CONTINUATION else bytes(4)
        if mapped and mapped[-len(end):] != end:
            raise self.damaged(ValueError(f"{file.name} ends without the end-of-stream mark its writer leaves when "
                                          "done: cut short"))
        # Unmapped when the last buffer of it goes (closing it with batches alive is a BufferError).
        return pa.ipc.open_stream(pa.BufferReader(pa.py_buffer(mapped)))

    def blocks(self) -> list[tuple[int, int]]:
        """Arrow files [i, i + 1), each checked for the text column."""
        files = self.files()
        for file in files:
            check_text_column(file, self._arrow_stream(file).schema, self.text_key)
        return [(i, i + 1) for i in range(len(files))]

    def texts(self, start: int, end: int, decoder: DecodeCounter, stats) -> Iterator[str]:
        for file in self.block_files(start, end)[1:]:
            with self._arrow_stream(file) as stream:
                column = stream.schema.get_field_index(self.text_key)
                for batch in stream:  # save_to_disk writes batches of 1000 rows: memory stays bounded
                    for text in batch.column(column).to_pylist():
                        stats["documents_in"] += 1
                        yield text or ""
