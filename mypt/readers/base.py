"""The reader interface and the registries (format suffix -> class, compression suffix ->
opener). Kept apart from mypt/readers/__init__.py so that format modules import it without
importing the package that imports them."""

from __future__ import annotations

import contextlib
import errno
import functools
import gzip
import hashlib
import io
import os
import stat
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator, NamedTuple

from mypt.errors import InputError, os_error_message
from mypt.io import file_kind, open_regular, shortened
from mypt.source_hash import PIECE_BYTES, pieces_sha256
import mypt.text
from mypt.text import DecodeCounter, LongLine, display_name, line_pieces, split_blocks, text_name, wide_encoding

FORMATS_HINT = "pip install 'mypt[formats]'"


class FileStamp(NamedTuple):
    """One file of an input as stamped: its path, size and mtime, and what makes it the same
    file (st_ino and file type). The type too: a FIFO made in a removed file's place may get its
    inode number. Not the device: each node of a cluster mounts the shared storage (NFS) with its
    own device number; nor the permission bits: a chmod is no other file."""

    path: str
    size: int
    mtime_ns: int
    ino: int
    kind: int  # stat.S_IFMT of its st_mode

    @property
    def identity(self) -> tuple[int, int]:
        return self.ino, self.kind


@dataclass(frozen=True)
class Stamp:
    """What an input is when resolved (`Reader.stamp`), compared by `Reader.check_unchanged`
    after each block, and what `Reader.open` checks the file it opens against."""

    size: int  # bytes, its files together (the metadata records it)
    mtime_ns: int  # the latest of its files'
    files: tuple[FileStamp, ...]  # each of its files, in the input's order

    @functools.cached_property
    def _by_path(self) -> dict[str, FileStamp]:
        # A dict, not a search of `files`: a saved dataset may hold thousands of files, each
        # looked up when opened and checked (a search made its reading quadratic).
        return {f.path: f for f in self.files}

    def of(self, path: Path) -> FileStamp | None:
        """The stamp of `path`; None for a file the stamp does not hold."""
        return self._by_path.get(os.fspath(path))

    def part(self, paths: Iterable[Path]) -> "Stamp":
        """The stamp of some of its files (each one it holds), as file_stamp gives it."""
        return _stamp([self._by_path[os.fspath(p)] for p in paths])


def file_stamp(paths: Iterable[Path]) -> Stamp:
    """The Stamp of an input made of these files, as they are now."""
    stats = [(p, os.stat(p)) for p in paths]
    return _stamp([FileStamp(os.fspath(p), st.st_size, st.st_mtime_ns, st.st_ino, stat.S_IFMT(st.st_mode))
                   for p, st in stats])


def _stamp(files: list[FileStamp]) -> Stamp:
    return Stamp(sum(f.size for f in files), max(f.mtime_ns for f in files), tuple(files))


def replaced(path: Path, mode: int) -> InputError:
    """The error of an input found, once resolved, to be another file (of this st_mode)."""
    if not stat.S_ISREG(mode):
        return InputError(f"{display_name(path)} is now {file_kind(mode)}, not a regular file: mypt reads only "
                          "regular files (each more than once); run again once nothing replaces it")
    return InputError(f"{display_name(path)} was replaced by another file while mypt read it: the output would "
                      "match neither; run again once nothing replaces it")


def lookup_error(e: OSError, flag: str = "--input_files") -> InputError:
    """An OSError met looking an input up or opening it, as the one-line error naming `flag`."""
    if e.errno == errno.ENAMETOOLONG:
        path = os.fsdecode(e.filename) if e.filename is not None else "a path"
        shown = text_name(shortened(path))
        return InputError(f"{flag}: {shown!r} cannot be read: File name too long (a path of "
                          f"{len(os.fsencode(path)):,} bytes; the system takes at most 255 bytes a name, and on "
                          "Linux 4,096 a path): move the files to a shorter path, or name them from a folder nearer "
                          "to them")
    if e.filename is not None and e.errno in (errno.ENOENT, errno.ELOOP, errno.EACCES, errno.EPERM):
        path = os.fsdecode(e.filename)
        denied = e.errno in (errno.EACCES, errno.EPERM)
        fix = "; check the permissions of it and of the folders above it" if denied else ""
        return InputError(f"{flag}: {text_name(path)!r} {why_unreadable(Path(path), e)}{fix}")
    return InputError(f"{flag}: {os_error_message(e)}")


def why_unreadable(path: Path, e: OSError, walked: bool = False) -> str:
    """Why `path` cannot be read, as the rest of a sentence naming it: `e` is the error of its
    stat, listing or open (`walked`: it was found by a walk, so a missing one was there a moment ago)."""
    if e.errno == errno.ENOENT and os.path.islink(path):
        with contextlib.suppress(OSError):  # (unless it went meanwhile)
            return f"is a symbolic link to {text_name(os.readlink(path))!r}, which does not exist"
    if e.errno == errno.ENOENT:
        return "no longer exists (removed during the walk)" if walked else "does not exist"
    if e.errno == errno.ELOOP:
        return "is a symbolic link that loops (to itself, or through others)"
    if e.errno in (errno.EACCES, errno.EPERM):
        return "cannot be read: permission denied"
    return f"cannot be read: {e.strerror}"


def open_input(path: Path, identity: tuple[int, int] | None = None) -> BinaryIO:
    """`path` open for reading, refused (InputError naming it) unless it is a regular file
    (open_regular: a FIFO is not waited on), and the one of `identity` (st_ino, file type:
    FileStamp.identity) when given. One it may not read is an InputError naming --input_files."""
    try:
        fd, st = open_regular(path, lambda mode: replaced(path, mode))
    except OSError as e:  # (not "damaged": READ_ERRORS holds OSError, for gzip's and zstd's errors)
        if e.errno in (errno.EACCES, errno.EPERM):
            raise lookup_error(e) from None
        raise
    try:
        if identity is not None and (st.st_ino, stat.S_IFMT(st.st_mode)) != identity:
            raise replaced(path, st.st_mode)
        f = open(fd, "rb")
        f.raw.name = os.fspath(path)  # (f.name: the path, not the descriptor)
        return f
    except BaseException:
        os.close(fd)
        raise


def missing_package(path: Path, package: str) -> InputError:
    return InputError(f"{display_name(path)}: reading it needs the {package} package: {FORMATS_HINT}")


def import_pyarrow(path: Path):
    """pyarrow (with its parquet module), or the InputError naming the extra that installs it."""
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise missing_package(path, "pyarrow") from None
    return pyarrow


def check_text_column(path: Path, schema, text_key: str) -> None:
    """An InputError naming `path` unless the Arrow `schema` has a string column `text_key`
    (string, large_string or string_view, as pyarrow 16+ may read a string column back, or a
    dictionary of them as pandas' categories write; parquet, and the Arrow files of a saved
    dataset: one message for both). A name two columns share is refused: which one holds the text?"""
    pa = import_pyarrow(path)
    twice = schema.names.count(text_key)
    if twice > 1:
        raise InputError(f"{display_name(path)}: {twice} columns are named {text_key!r} (columns: "
                         f"{', '.join(schema.names)}), so which one holds the text is not known; write the file "
                         "with one column of that name, or pass --text_key naming another column")
    field = schema.field(text_key) if twice else None
    if field is None:
        raise InputError(f"{display_name(path)}: no column {text_key!r} (columns: "
                         f"{', '.join(schema.names)}); pass --text_key COLUMN")
    kind = field.type.value_type if pa.types.is_dictionary(field.type) else field.type  # to_pylist decodes one
    is_view = getattr(pa.types, "is_string_view", lambda _: False)  # (pyarrow 16 and later: an older one has none)
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or is_view(kind)):
        raise InputError(f"{display_name(path)}: column {text_key!r} holds {field.type}, not text; "
                         "pass --text_key COLUMN naming a string column")


class _ZstdStream(io.RawIOBase):
    """Every frame of a .zst file, decompressed as one stream.

    zstandard's own stream_reader returns a short read, not an error, when the file is
    truncated mid-frame; here a last frame without its end is an EOFError (as gzip's is).
    Memory is bounded whatever the ratio: the decompressor is fed FEED_BYTES of compressed
    input at a time (its decompressobj has no output limit), and the output is handed out
    from an offset, never copied again.
    """

    # A zstd block (at most 128 KiB of output) takes at least 4 compressed bytes (an RLE block:
    # a 270 KB file of them is 9 GB), so 1 KiB of input gives at most 32 MiB. Feeding 1 KiB
    # rather than 64 KiB cost 2.5x in decompression alone (75 ms for 31 MB of text), nothing
    # next to cleaning it.
    FEED_BYTES = 1 << 10

    def __init__(self, f: BinaryIO):
        try:
            import zstandard
        except ImportError:
            f.close()
            raise missing_package(Path(f.name), "zstandard") from None
        self._zstd = zstandard
        self._decompressor = zstandard.ZstdDecompressor()
        self._file = f  # (closed with the stream)
        self._frame = None  # the decompressobj of the current frame
        self._in = memoryview(b"")  # compressed bytes read, not yet fed
        self._out, self._at = b"", 0  # output of the last feed, and how much of it was handed out

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while self._at == len(self._out):
            if not self._in:
                self._in = memoryview(self._file.read(1 << 16))
            if not self._in:
                if self._frame is not None and not self._frame.eof:
                    raise EOFError("the zstd stream ends inside a frame (truncated file)")
                return 0
            raw, self._in = self._in[:self.FEED_BYTES], self._in[self.FEED_BYTES:]
            try:
                self._out, self._at = self._feed(raw), 0
            except self._zstd.ZstdError as e:
                raise OSError(f"not valid zstd data ({e})") from None
        n = min(len(buffer), len(self._out) - self._at)
        buffer[:n] = self._out[self._at:self._at + n]
        self._at += n
        return n

    def _feed(self, raw) -> bytes:
        out = []
        while raw:
            if self._frame is None or self._frame.eof:  # a .zst file may hold several frames
                self._frame = self._decompressor.decompressobj()
            out.append(self._frame.decompress(raw))
            raw = self._frame.unused_data if self._frame.eof else b""
        return b"".join(out)

    def close(self) -> None:
        self._file.close()
        super().close()


class _GzipStream(gzip.GzipFile):
    """gzip.open of an open file, closed with the stream (GzipFile leaves a file it is handed open)."""

    def __init__(self, f: BinaryIO):
        super().__init__(fileobj=f, mode="rb")
        self._input = f

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._input.close()


READERS: dict[str, type["Reader"]] = {}  # format suffix -> reader class
# Compression suffix -> the decompressed stream of an input file opened by Reader.open (open_input).
COMPRESSIONS: dict[str, Callable[[BinaryIO], BinaryIO]] = {
    ".gz": _GzipStream,
    ".zst": lambda f: io.BufferedReader(_ZstdStream(f)),
}
# What reading a damaged file raises: a bad header or data (gzip's BadGzipFile is an OSError,
# the zstd stream's too), a truncated stream (EOFError), corrupt deflate data (zlib.error).
READ_ERRORS: tuple[type[BaseException], ...] = (OSError, EOFError, zlib.error)
_SNIFF_BYTES = 8192
# A UTF-8 byte-order mark: some Windows editors start a file with one. It marks the encoding,
# it is no text: the .txt and .jsonl readers drop it from a file's first bytes.
BOM = b"\xef\xbb\xbf"


class Reader:
    suffix = ""  # ".txt"
    one_document = True  # the whole file is one document (True) or it holds many (False)
    compressible = True  # False: the format needs seeking (parquet), so X.gz is not read as X
    description = ""  # what a file of this format holds, for the help texts ("one document")
    # Whether a directory walk picks the suffix up: False where files of the suffix are as often
    # metadata as text (.json: manifest.json, dataset_info.json), so they are read only when named.
    walked = True
    # The names of the counts the reader adds to the clean step's stats (its --stats report may hold
    # only declared names: mypt.readers.counter_names): Reader.chunks drops a line too long to hold.
    counters: tuple[str, ...] = ("dropped_too_long",)
    # What to do with a line over mypt.text.MAX_LINE_BYTES, in the message that refuses it.
    long_line_hint = ("break it into shorter lines (fold -w 10000 FILE > FOLDED); prepare-dataset drops such lines "
                      "(counted as too_long) when the line filter is on (no --no_filter)")

    def __init__(self, path: Path, compression: str | None = None, *, text_key: str = "text",
                 strict: bool = False):
        self.path, self.compression = Path(path), compression
        self.text_key = text_key  # the field (column) of a document's text, for formats that have fields
        self.strict = strict  # a bad record is an error, not a counted skip
        self.first_bad: tuple[int, str] | None = None  # (line in the block, why) of the first bad record
        # current_stamp() when the input was resolved (mypt.readers.text_sources); None: not checked
        self.stamp: Stamp | None = None
        # How the clean step reads lines (chunks; other readers keep every line as written): a lone
        # \r ends a line (normalization makes it a newline), and `filter_chars` is its line filter's
        # max_line_chars, which a line over mypt.text.MAX_LINE_BYTES passes (4 bytes a character at
        # most, 1 to 3 invalid bytes one U+FFFD) unless normalization would shrink it (control characters,
        # trailing whitespace: not credited for lines that long): such a line is dropped as it is read,
        # counted as dropped_too_long, not refused (filter_chars under MAX_LINE_BYTES / 4).
        self.cr_ends_lines = False
        self.filter_chars: int | None = None

    def open(self) -> BinaryIO:
        """The input, decompressed; refused unless it is still the regular file it was when
        resolved (open_input; `stamp` holds its identity)."""
        f = self.open_file(self.path)
        return COMPRESSIONS[self.compression](f) if self.compression else f

    def open_file(self, path: Path) -> BinaryIO:
        """One of the reader's files (as it is stored), refused unless it is still the regular
        file it was when resolved (open_input, against `stamp`)."""
        stamped = self.stamp.of(path) if self.stamp is not None else None
        try:
            return open_input(path, stamped.identity if stamped is not None else None)
        except FileNotFoundError:  # (it was there when the inputs were resolved: not a damaged file)
            raise self.removed(path) from None

    def removed(self, path: Path) -> InputError:
        """The error of one of the reader's files gone since the inputs were resolved (removed or
        renamed), whether found at an open or after a block (check_unchanged): one message."""
        return InputError(f"{display_name(path)} was removed while mypt read it: the output would match neither "
                          "the file nor its absence; run again once nothing moves or removes the inputs")

    def current_stamp(self) -> Stamp:
        """The Stamp of what the reader reads, now (`stamp` is this when resolved)."""
        return file_stamp([self.path])

    def block_files(self, start: int, end: int) -> list[Path]:
        """The files block [start, end) reads: checked after it (check_unchanged)."""
        return [self.path]

    def piece_count(self) -> int:
        """How many PIECE_BYTES pieces the input's stored bytes make (the last one may be short)."""
        return -(-(self.stamp or self.current_stamp()).size // PIECE_BYTES)

    def piece_digests(self, first: int, last: int) -> list[bytes]:
        """The sha256 digests of pieces [first, last) of the input's bytes as stored (its files
        in turn: a saved dataset's state.json, then its Arrow files), checked unchanged after."""
        stamp = self.stamp or self.current_stamp()
        start, end = first * PIECE_BYTES, min(last * PIECE_BYTES, stamp.size)
        digests, digest, filled, at, read = [], hashlib.sha256(), 0, 0, []
        try:
            for f in stamp.files:
                lo, hi = max(start, at), min(end, at + f.size)
                at += f.size
                if lo >= hi:
                    continue
                read.append(Path(f.path))
                with self.open_file(Path(f.path)) as raw:
                    raw.seek(lo - (at - f.size))
                    while lo < hi and (chunk := raw.read(min(hi - lo, PIECE_BYTES - filled, 1 << 20))):
                        digest.update(chunk)
                        lo, filled = lo + len(chunk), filled + len(chunk)
                        if filled == PIECE_BYTES:
                            digests.append(digest.digest())
                            digest, filled = hashlib.sha256(), 0
        except self.read_errors() as e:
            raise self.damaged(e) from None
        if filled:  # the input's last piece, short
            digests.append(digest.digest())
        if read:  # the bytes hashed are those of the size recorded (a file cut short too)
            self.check_unchanged(read)
        return digests

    def content_sha256(self) -> str:
        """The hash a dataset records of each source (`sources[].sha256_pieces`: mypt.source_hash) and
        --append_to compares: what the input's bytes are wherever it lies (no path: a dataset moves
        between machines), read in one pass here; the clean step spreads the pieces over its blocks."""
        return pieces_sha256(self.piece_digests(0, self.piece_count()))

    def plain_sha256(self) -> str:
        """The sha256 of the input's stored bytes (its files in turn): what a source of a dataset
        an older mypt prepared records under `sha256`, compared by --append_to and prepare-dataset."""
        digest = hashlib.sha256()
        try:
            for f in (self.stamp or self.current_stamp()).files:
                with self.open_file(Path(f.path)) as raw:
                    while chunk := raw.read(1 << 20):
                        digest.update(chunk)
        except self.read_errors() as e:
            raise self.damaged(e) from None
        self.check_unchanged()
        return digest.hexdigest()

    def read_errors(self) -> tuple[type[BaseException], ...]:
        """The exceptions that mean the file is damaged (see `damaged`)."""
        return READ_ERRORS

    def damaged(self, error: BaseException) -> InputError:
        detail = " ".join(str(error).split()) or type(error).__name__  # one line, whatever the library said
        kind = self.suffix + (self.compression or "")
        return InputError(f"{display_name(self.path)}: cannot be read as {kind} ({detail}); the file is damaged "
                          "or truncated: replace it, or leave it out of --input_files")

    def head(self) -> bytes:
        """The first 8 KiB (after decompression): what the binary sniff looks at."""
        try:
            with self.open() as f:
                return f.read(_SNIFF_BYTES)
        except self.read_errors() as e:
            raise self.damaged(e) from None

    def sniff(self) -> str | None:
        """Why the file is skipped, from its first 8 KiB (after decompression), None when it is
        text: "UTF-16"/"UTF-32" for a byte-order mark (never UTF-8: its text would decode to
        garbage, NUL or not, e.g. Chinese in UTF-16; named with the fix where it is reported),
        else "binary" for a NUL byte."""
        head = self.head()
        return wide_encoding(head) or ("binary" if b"\x00" in head else None)

    def looks_binary(self) -> bool:
        """Skipped as no text: binary, or UTF-16/32 (sniff)."""
        return self.sniff() is not None

    def blocks(self) -> list[tuple[int, int]]:
        """Ranges of the file that can be read independently; (0, -1) is the whole file."""
        if self.compression:
            return [(0, -1)]
        with self.open() as f:
            return split_blocks(self.path, f=f)

    def chunks(self, start: int, end: int, stats: Counter | None = None) -> Iterator[bytes]:
        """The raw bytes of [start, end) in pieces of about mypt.text.BLOCK_BYTES that end at
        line ends (line_pieces): a block or a stream of any size, however long its lines. A line
        over mypt.text.MAX_LINE_BYTES is dropped and counted in `stats` (see `filter_chars`),
        else an InputError naming it. (Both limits are read from mypt.text when called: tests make
        them small.)"""
        most = mypt.text.MAX_LINE_BYTES
        drop = stats is not None and self.filter_chars is not None and self.filter_chars < most // 4

        def dropped() -> None:
            stats["dropped_too_long"] += 1

        try:
            with self.open() as f:
                if end >= 0:
                    f.seek(start)
                yield from line_pieces(f, end - start if end >= 0 else None, cr=self.cr_ends_lines,
                                       dropped=dropped if drop else None)
        except LongLine as e:
            where = f"byte {start + e.offset:,}" + (" of the decompressed text" if self.compression else "")
            raise InputError(f"{self.location(start, e.newlines + 1)}: a line of {e.size:,} bytes (from {where}), "
                             f"more than the {most:,} bytes mypt holds of one line: "
                             f"{self.long_line_hint}") from None
        except self.read_errors() as e:
            raise self.damaged(e) from None

    def texts(self, start: int, end: int, decoder: DecodeCounter, stats) -> Iterator[str]:
        """Texts of the block; `stats` (a Counter) receives what the reader counts."""
        raise NotImplementedError

    def checked_blocks(self) -> list[tuple[int, int]]:
        """blocks(), with a damaged file reported as an InputError naming it."""
        try:
            blocks = self.blocks()
        except self.read_errors() as e:
            raise self.damaged(e) from None
        self.check_unchanged()  # the blocks cover the file as it is now
        return blocks

    def checked_texts(self, start: int, end: int, decoder: DecodeCounter, stats) -> Iterator[str]:
        """texts(), with a damaged file reported as an InputError naming it, and a file that
        changed since it was resolved as another. (Errors of the caller's loop body are not
        caught: they are not raised inside this generator.)"""
        try:
            yield from self.texts(start, end, decoder, stats)
        except self.read_errors() as e:
            raise self.damaged(e) from None
        self.check_unchanged(self.block_files(start, end))

    def check_unchanged(self, paths: list[Path] | None = None) -> None:
        """An InputError naming the file when its size or mtime differs from `stamp`, or it is
        another file (a FIFO, a copy renamed over it): a file truncated, grown or rewritten
        while it is read would give texts that match neither version, and metadata recording
        the old size. Checked after each block is read, for the files it read (`paths`, of
        the stamp; None: the whole input, as current_stamp finds it)."""
        if self.stamp is None:
            return
        was = self.stamp if paths is None else self.stamp.part(paths)
        try:
            now = self.current_stamp() if paths is None else file_stamp(paths)
        except FileNotFoundError:
            now = None
        if now == was:
            return
        if now is None:
            raise self.removed(self.path)
        for f in now.files:
            stamped = self.stamp.of(Path(f.path))
            if stamped is not None and stamped.identity != f.identity:  # another file, or a FIFO, in its place
                raise replaced(Path(f.path), f.kind)
        size = self.stamp.size - was.size + now.size  # the input's, now
        said = f"{self.stamp.size:,} bytes when the run started"
        how = f"changed ({said}, {size:,} now)" if size != self.stamp.size else f"was rewritten ({said}, a new mtime)"
        raise InputError(f"{display_name(self.path)} {how} while mypt read it: the output would match neither "
                         "version; run again once nothing writes to the file")

    def bad_record(self, line: int, why: str, start: int) -> None:
        """Note a skipped record (line `line` of the block that starts at byte `start`): the
        first one is remembered; with `strict` it is an error naming file:line."""
        if self.first_bad is None:
            self.first_bad = (line, why)
        if self.strict:
            raise InputError(f"{self.location(start, line)}: {why} (--strict stops at the first bad record; "
                             "without it such records are skipped and counted)")

    def location(self, start: int, line: int) -> str:
        """`file:line` of line `line` (1-based) of the block that starts at byte `start`."""
        before = 0
        if start > 0:  # count the lines of the file before the block (only when reporting)
            with self.open() as f:
                remaining = start
                while remaining > 0 and (piece := f.read(min(remaining, 1 << 20))):
                    before += piece.count(b"\n")
                    remaining -= len(piece)
        return f"{display_name(self.path)}:{before + line}"


def register(cls: type[Reader]) -> type[Reader]:
    READERS[cls.suffix] = cls
    return cls
