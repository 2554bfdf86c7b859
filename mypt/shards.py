"""Token shards and the dataset directory.

A shard is `shard_NNNNN.bin`: raw little-endian uint32 token ids, no header, so
`np.memmap(path, dtype=np.uint32, mode="r")` reads it. A dataset directory holds
`train/` and `val/` shards (numbered through train and then val), `tokenizer_state.json`
and `dataset_metadata.json`, which says what the shards are (format version, dtype,
tokenizer, counts, sources, settings, stats). The metadata is written last: a directory
without it is not a finished dataset.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from pathlib import Path
from typing import Iterator

import numpy as np

from mypt.errors import ShardError, naming
from mypt.io import file_kind, open_regular, read_json, tmp_name
from mypt.names import METADATA_FILE, SPLITS, STATE_FILE
from mypt.tokenizers import Tokenizer

DTYPE = np.dtype("<u4")
TOKEN_BYTES = DTYPE.itemsize
FORMAT_VERSION = 1
# What a dataset's metadata must say of its shards: the only format this mypt reads and writes.
RECORDED_FORMAT = {"dtype": "uint32", "byte_order": "little"}
_SHARD_FILE = re.compile(r"shard_[^/\\]*\.bin")
# The metadata's record of the tokenizer the shards were written with (tokenizer_sha256).
TOKENIZER_RECORD = "tokenizer_sha256"


def shard_name(index: int) -> str:
    return f"shard_{index:05d}.bin"


MAX_SHARDS = 10**6  # (a record that says more is damaged: 10T tokens at the default shard size)


def shard_names(tokens: int, tokens_per_shard: int) -> list[str]:
    """The files ShardWriter writes a stream of `tokens` as: full shards of tokens_per_shard
    tokens, then the rest, ceil(tokens / tokens_per_shard) of them numbered from 0. ValueError
    for a count past MAX_SHARDS (a damaged record)."""
    count = -(-int(tokens) // int(tokens_per_shard))
    if not 0 <= count <= MAX_SHARDS:
        raise ValueError(f"{count} shards")
    return [shard_name(i) for i in range(count)]


class ShardWriter:
    """Writes a token stream as consecutive shards of `tokens_per_shard` tokens.

    Each shard is written under a temporary name and renamed when full (or at close),
    so a shard file under its final name is always complete. With `checksums`, the sha256 of
    each shard is computed from the bytes as they are written (no second read) into
    `sha256[name]`.
    """

    def __init__(self, directory: Path, tokens_per_shard: int, first_index: int = 0, checksums: bool = False):
        if tokens_per_shard < 1:
            raise ValueError(f"tokens_per_shard must be >= 1, got {tokens_per_shard}")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.tokens_per_shard = tokens_per_shard
        self.index = first_index
        self.shards: list[tuple[str, int]] = []  # (file name, tokens)
        self.sha256: dict[str, str] = {}  # file name -> hex digest (with checksums=True)
        self._checksums = checksums
        self._hash = None
        self._file = None
        self._in_shard = 0
        self.tokens = 0  # written so far, all shards

    def write(self, tokens: np.ndarray) -> None:
        tokens = np.ascontiguousarray(tokens, dtype=DTYPE)
        pos = 0
        while pos < tokens.size:
            if self._file is None:
                self._file = open(tmp_name(self.directory / shard_name(self.index)), "wb")
                self._hash = hashlib.sha256() if self._checksums else None
            take = min(tokens.size - pos, self.tokens_per_shard - self._in_shard)
            data = memoryview(tokens[pos:pos + take]).cast("B")  # (written as it lies: no copy of the bytes)
            with naming(self.directory / shard_name(self.index)):  # (the shard, as atomic_file names its file)
                self._file.write(data)
            if self._hash is not None:
                self._hash.update(data)
            pos += take
            self._in_shard += take
            self.tokens += take
            if self._in_shard == self.tokens_per_shard:
                self._finish()

    def _finish(self) -> None:
        name = shard_name(self.index)
        with naming(self.directory / name):  # (its last buffer is written here)
            self._file.close()
        os.replace(tmp_name(self.directory / name), self.directory / name)
        self.shards.append((name, self._in_shard))
        if self._hash is not None:
            self.sha256[name] = self._hash.hexdigest()
        self._file, self._in_shard = None, 0
        self.index += 1

    def close(self) -> list[tuple[str, int]]:
        if self._file is not None:
            self._finish()
        return self.shards


def _not_regular(path: Path, mode: int) -> ShardError:
    """The error of a shard that is not a regular file: a FIFO blocks its reader forever, a link
    to /dev/zero never ends, a directory fails at its first read (mid-run)."""
    via = f" (a link to {os.path.realpath(path)})" if os.path.islink(path) else ""
    return ShardError(f"{path}: a shard must be a regular file, this is {file_kind(mode)}{via}; move it out of "
                      f"{Path(path).parent}, then run `mypt verify-dataset {Path(path).parent.parent}`")


# What is wrong with a shard, said alike by the readers (an error, with what to do) and by
# verify-dataset (a line of its report).
def not_whole_tokens(path: Path, size: int) -> str:
    return f"{path}: {size} bytes is not a whole number of uint32 tokens"


def listed_but_missing(path: Path, tokens: int) -> str:
    return f"{path}: listed in {METADATA_FILE} ({tokens:,} tokens) but missing"


def other_token_count(path: Path, on_disk: int, listed: int) -> str:
    return f"{path}: {on_disk:,} tokens on disk, {listed:,} in {METADATA_FILE}"


def _tokens_of(path: Path, size: int) -> int:
    if size % TOKEN_BYTES:
        raise ShardError(f"{not_whole_tokens(path, size)}; the shard is damaged: prepare the dataset again")
    return size // TOKEN_BYTES


def shard_stat(path: Path) -> os.stat_result:
    """os.stat of a shard (links followed), refused unless a regular file."""
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise _not_regular(path, st.st_mode)
    return st


def shard_tokens(path: Path) -> int:
    return _tokens_of(path, shard_stat(path).st_size)


def open_shard(path: Path) -> tuple[int, os.stat_result]:
    """A file descriptor open for reading on the shard at `path`, and its stat; refused
    unless a regular file (open_regular: a FIFO is refused, not waited on)."""
    return open_regular(path, lambda mode: _not_regular(path, mode))


_NUMBERED = re.compile(r"shard_([0-9]+)\.bin")


def shard_order(name: str) -> tuple:
    """The sort key of a shard file name: by its index, so shard_100000.bin (shard_name pads
    to 5 digits only) comes after shard_99999.bin, not between shard_10000.bin and
    shard_10001.bin as text order puts it; a name without an index (moved in by hand) after
    every numbered one, by name."""
    m = _NUMBERED.fullmatch(name)
    return (0, int(m.group(1)), name) if m else (1, 0, name)


def list_shards(directory: Path) -> list[Path]:
    """The shard files of a split directory in index order (shard_order; [] when there is no
    directory): every reader of a shard folder lists it here, so each reads one token order.
    Sorts the names, not Paths: comparing Paths costs 15 ms per 1,000 shards (Python 3.11)."""
    directory = Path(directory)
    try:
        names = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [directory / n for n in sorted(names, key=shard_order) if n.startswith("shard_") and n.endswith(".bin")]


READ_TOKENS = 1 << 28  # the most one pread asks for (1 GiB): Linux reads at most 2 GiB less 4 KiB at once
# The tokens a copy out of a TokenStream (the shard and split steps) holds at once: 4 MiB. Reads of
# 16M tokens (64 MiB, and as much again copied for the writer) made prepare-dataset of a 200 MB
# JSONL peak at 179 MB in the split (--split_mode tail: a run of units as long as a source), above
# dedup's 145 MB; a copy of 4 MiB pieces runs as fast (the syscalls of 4 MiB are a few microseconds).
COPY_TOKENS = 1 << 20


class TokenStream:
    """The concatenation of token files (shards, the tokenize step's files), read by global token
    offset without loading them. Read with pread, one file open at a time, never mapped: the pages
    of a map stay in the process' resident memory as it reads on (the split of a 200 MB corpus
    peaked at 478 MB, the size of its one token file)."""

    def __init__(self, paths: list[Path]):
        self.paths = list(paths)
        sizes = [shard_tokens(p) for p in self.paths]
        self.starts = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])
        self._open: tuple[int, int] | None = None  # (index of the file, its descriptor)

    def __len__(self) -> int:
        return int(self.starts[-1])

    def _fd(self, i: int) -> int:
        if self._open is None or self._open[0] != i:
            self.close()
            self._open = (i, open_shard(self.paths[i])[0])
        return self._open[1]

    def read(self, start: int, end: int) -> np.ndarray:
        out, pos = [], start
        while pos < end:
            i = int(np.searchsorted(self.starts, pos, side="right")) - 1
            stop = min(end, int(self.starts[i + 1]), pos + READ_TOKENS)
            offset, size = int(pos - self.starts[i]) * TOKEN_BYTES, (stop - pos) * TOKEN_BYTES
            data = os.pread(self._fd(i), size, offset)
            if len(data) != size:  # (a regular file gives all it holds: shortened since it was sized)
                raise ShardError(f"{self.paths[i]}: {offset + len(data):,} bytes, shorter than the "
                                 f"{int(self.starts[i + 1] - self.starts[i]) * TOKEN_BYTES:,} it held when this "
                                 "run started (changed while read): run the step again")
            out.append(np.frombuffer(data, DTYPE))
            pos = stop
        return out[0] if len(out) == 1 else np.concatenate(out) if out else np.zeros(0, DTYPE)

    def pieces(self, start: int, end: int) -> Iterator[np.ndarray]:
        """Tokens [start, end) in arrays of at most COPY_TOKENS: a copy in bounded memory."""
        for pos in range(start, end, COPY_TOKENS):
            yield self.read(pos, min(end, pos + COPY_TOKENS))

    def close(self) -> None:
        if self._open is not None:
            os.close(self._open[1])
            self._open = None

    def __del__(self):
        self.close()


def not_a_dataset(dataset_dir: Path, flag: str | None = None) -> ShardError:
    """The one message for a directory without dataset metadata (`flag`: the flag that named it)."""
    named = f"{flag} {dataset_dir}" if flag else str(dataset_dir)
    # A directory of other files (an export, a corpus): prepare-dataset would not write there.
    holds_files = Path(dataset_dir).is_dir() and any(Path(dataset_dir).iterdir())
    return ShardError(f"{named} is not a prepared dataset (no {METADATA_FILE}); HINT: prepare "
                      + (f"one with `mypt prepare-dataset --input_files ... --out_dir NEW_DIR` and pass that"
                         if holds_files else
                         f"it with `mypt prepare-dataset --input_files ... --out_dir {dataset_dir}`"))


def read_metadata(dataset_dir: Path, flag: str | None = None) -> dict:
    """The dataset's metadata, refused unless check_metadata passes it."""
    path = Path(dataset_dir) / METADATA_FILE
    if not path.is_file():
        raise not_a_dataset(dataset_dir, flag)
    meta = read_json(path)
    check_metadata(meta, path)
    return meta


def dataset_metadata(dataset_dir: Path) -> dict | None:
    """The dataset's metadata (read_metadata), or None where it has none (a folder of shards
    without one: the loader reads what is on disk). Read once by a command that checks a dataset
    and then reads it (eval), and passed on as `meta=`, so both see one version of it."""
    return read_metadata(dataset_dir) if (Path(dataset_dir) / METADATA_FILE).is_file() else None


def _is_count(value, minimum: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def check_metadata(meta: dict, path: Path) -> None:
    """Refuse metadata (read from `path`) that readers cannot trust, naming the field: another
    format, dtype or byte order than this mypt writes (the shards would be read as other
    ids), a tokenizer without kind or vocabulary size, and shard lists whose entries are
    not `SPLIT/shard_*.bin` of their own split with a token count, or list a file twice.
    A split without a section lists nothing (metadata written by hand, as the benches do: the
    loader reads the files on disk). Totals are verify-dataset's to check: no reader relies on
    them."""
    def bad(field: str, why: str) -> ShardError:
        return ShardError(f"{path}: {field} {why}; HINT: restore the file (from a backup or `dvc pull`) or "
                          "prepare the dataset again")

    if meta.get("format_version") != FORMAT_VERSION:
        raise ShardError(f"{path}: format_version {meta.get('format_version')!r}, this mypt reads {FORMAT_VERSION}")
    for key, want in RECORDED_FORMAT.items():
        if key in meta and meta[key] != want:
            raise bad(key, f"is {meta[key]!r}: mypt shards hold {RECORDED_FORMAT['byte_order']}-endian "
                           f"{RECORDED_FORMAT['dtype']} token ids, and are read as such")
    tok = meta.get("tokenizer")
    if not isinstance(tok, dict) or not isinstance(tok.get("kind"), str) or not _is_count(tok.get("vocab_size"), 1):
        raise bad("tokenizer", f"is {tok!r}: expected kind and vocab_size")
    if TOKENIZER_RECORD in meta and not _is_sha256(meta[TOKENIZER_RECORD]):
        raise bad(TOKENIZER_RECORD, f"is {meta[TOKENIZER_RECORD]!r}, not a sha256 hex digest")
    seen: dict[str, str] = {}
    for split in (s for s in SPLITS if s in meta):
        entries = meta[split].get("shards") if isinstance(meta[split], dict) else None
        if not isinstance(entries, list):
            raise bad(f"{split}.shards", f"is {entries!r}, not a list of shards")
        for i, entry in enumerate(entries):
            field = f"{split}.shards[{i}]"
            if not isinstance(entry, dict):
                raise bad(field, f"is {entry!r}, not a shard ({{\"file\": ..., \"tokens\": ...}})")
            _check_entry(entry, split, field, bad)
            if entry["file"] in seen:
                raise bad(f"{field}.file", f"lists {entry['file']!r} a second time (first as {seen[entry['file']]})")
            seen[entry["file"]] = field


def _is_sha256(value) -> bool:
    return isinstance(value, str) and len(value) == 64 and set(value) <= set("0123456789abcdef")


def _check_entry(entry: dict, split: str, field: str, bad) -> None:
    file, tokens, sha = entry.get("file"), entry.get("tokens"), entry.get("sha256")
    folder, _, name = file.partition("/") if isinstance(file, str) else ("", "", "")
    if folder != split or not _SHARD_FILE.fullmatch(name):
        raise bad(f"{field}.file", f"is {file!r}: a {split} shard is a file {split}/shard_NNNNN.bin")
    if not _is_count(tokens):
        raise bad(f"{field}.tokens", f"is {tokens!r}, not a number of tokens")
    if sha is not None and not _is_sha256(sha):
        raise bad(f"{field}.sha256", f"is {sha!r}, not a sha256 hex digest")


def tokenizer_sha256(tokenizer: Tokenizer) -> str:
    """The sha256 of a tokenizer's identity (its state, what tokenizer_state.json holds)
    in one canonical JSON form: keys sorted, no spaces, UTF-8. Of the loaded tokenizer, not of
    the file's bytes: the same tokenizer saved with other spacing, a char vocabulary written in
    another order (it loads sorted) or an hf tokenizer.json re-indented (Tokenizer.identity)
    gives the same digest; another vocabulary of the same size does not. The split step
    records it, the readers check it, both so."""
    return _sha256(tokenizer.identity())


def _sha256(identity: dict) -> str:
    text = json.dumps(identity, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def dataset_tokenizer(dataset_dir: Path, meta: dict | None = None) -> Tokenizer:
    """A dataset's tokenizer (its tokenizer_state.json), refused unless it is the one its
    metadata records (check_tokenizer_record): what every command that reads a dataset's
    tokenizer loads it with, so an edited one is named as such before it is compared with
    anything else (a mixture's other dataset, a model's tokenizer). `meta`: the metadata where
    the caller has read it (dataset_metadata); else read here."""
    tokenizer = Tokenizer.load(dataset_dir)
    meta = dataset_metadata(dataset_dir) if meta is None else meta
    if meta is not None:
        check_tokenizer_record(dataset_dir, meta, tokenizer)
    return tokenizer


def check_tokenizer_record(dataset_dir: Path, meta: dict, tokenizer) -> None:
    """Refuse `tokenizer` (a Tokenizer: the one loaded from the dataset's tokenizer_state.json)
    unless it is the one the dataset's metadata records its shards were written with: a
    vocabulary swapped by hand for another of the same size passes every other check, and the
    shards then decode as other text. Metadata without the record (an older mypt's) is not
    checked: kind, vocab_size and eot_id are all it says of its tokenizer. Commands load a
    dataset's tokenizer through dataset_tokenizer; verify-dataset reports it as a problem, and
    training's data loader checks the tokenizer it was given (the Python API's)."""
    recorded = meta.get(TOKENIZER_RECORD)
    if recorded is None or recorded in map(_sha256, tokenizer.identities()):  # (lazy: the first form, mostly)
        return
    raise ShardError(f"{Path(dataset_dir) / STATE_FILE}: the tokenizer's sha256 is {tokenizer_sha256(tokenizer)}, but "
                     f"{METADATA_FILE} records {recorded}: not the tokenizer the shards were written with (replaced or "
                     "edited since), so they would decode as other text; HINT: restore the file (from a backup or "
                     "`dvc pull`) or prepare the dataset again")


def listed_entries(meta: dict, split: str) -> list[dict]:
    """The shard entries ({"file", "tokens"[, "sha256"]}) a checked metadata lists for a split."""
    return meta[split]["shards"] if split in meta else []


def listed_shards(meta: dict, split: str) -> dict[str, int]:
    """{SPLIT/shard_NNNNN.bin: tokens} of a checked metadata's split."""
    return {e["file"]: e["tokens"] for e in listed_entries(meta, split)}


def unlisted_shards(dataset_dir: Path, meta: dict) -> list[str]:
    """The shard files (SPLIT/shard_NNNNN.bin) in a dataset's split directories that its
    metadata does not list: moved in by hand. The loader reads them; a rewrite of the dataset
    (--overwrite, --append_to) would lose or delete them, so it refuses them first."""
    listed = {split: listed_shards(meta, split) for split in SPLITS}
    return [f"{split}/{p.name}" for split in SPLITS for p in list_shards(Path(dataset_dir) / split)
            if f"{split}/{p.name}" not in listed[split]]


def check_listed(dataset_dir: Path, meta: dict, split: str, on_disk: dict[str, int], hint: str) -> None:
    """Refuse a split whose shards on disk ({SPLIT/NAME: tokens}) lack a listed shard or
    hold another size than the metadata lists (shards moved in by the guide's `mv` overwrite
    listed ones). Shards the metadata does not list are the caller's to judge. No reading."""
    for file, tokens in listed_shards(meta, split).items():
        if file not in on_disk:
            raise ShardError(f"{listed_but_missing(Path(dataset_dir) / file, tokens)}; {hint}")
        if on_disk[file] != tokens:
            raise ShardError(f"{other_token_count(Path(dataset_dir) / file, on_disk[file], tokens)} (replaced by "
                             f"hand?); {hint}")


RESERVED_FDS = 256  # files left to the rest of the process (checkpoints, sockets, libraries)
POOL_SIZE = 64  # shards opened by path at a time, where not every shard can stay open


def _open_fd_count() -> int:
    for listing in ("/proc/self/fd", "/dev/fd"):
        try:
            return len(os.listdir(listing))
        except OSError:
            continue
    return 64  # no listing: a guess at what a Python process with torch holds


def fd_budget(wanted: int) -> int:
    """How many of `wanted` more files this process may keep open: the soft RLIMIT_NOFILE is
    raised toward the hard one as far as `wanted` needs, then the files already open and
    RESERVED_FDS are left out."""
    try:
        import resource
    except ImportError:  # not Unix: no limit to ask for
        return wanted
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    in_use = _open_fd_count()
    need = in_use + wanted + RESERVED_FDS
    if soft != resource.RLIM_INFINITY and need > soft:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):  # macOS refuses soft limits above OPEN_MAX: keep what we have
            pass
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(0, min(wanted, soft - in_use - RESERVED_FDS))


class ShardFiles:
    """The open files of a reader's shards, taken at start-up and kept for its lifetime.

    A shard renamed or replaced under a running reader (an --append_to renumbers the val
    shards; the guide's `mv` overwrites) is still read from the file opened at start-up:
    never re-opened by path, so a run keeps sampling exactly the tokens it started with.
    Where the process may not hold one file per shard (RLIMIT_NOFILE, even raised to its hard
    limit), the shards beyond that are opened by path when read, POOL_SIZE at a time, and
    must still be the file (device, inode) seen at start-up: a replaced one is an error
    naming it, never other tokens. Callers open the shards they most need held first.
    """

    def __init__(self) -> None:
        self._held: dict[Path, int] = {}
        self._ids: dict[Path, tuple[int, int]] = {}
        self._pool: dict[Path, int] = {}  # by path, least recently used first (dicts keep order)

    def open(self, paths: list[Path]) -> np.ndarray:
        """Open each shard (refused unless a regular file of whole tokens): their sizes in tokens."""
        budget = fd_budget(len(paths))
        sizes = np.empty(len(paths), np.int64)
        try:
            for i, path in enumerate(paths):
                fd, st = open_shard(path)
                self._held[path] = fd  # closed below (or by close() if the size is refused)
                sizes[i] = _tokens_of(path, st.st_size)
                self._ids[path] = (st.st_dev, st.st_ino)
                if i >= budget:
                    os.close(self._held.pop(path))
        except BaseException:
            self.close()
            raise
        return sizes

    @property
    def held(self) -> int:
        return len(self._held)

    def pread(self, path: Path, n_bytes: int, offset: int) -> bytes:
        fd = self._held.get(path)
        return os.pread(fd if fd is not None else self._pooled(path), n_bytes, offset)

    def _pooled(self, path: Path) -> int:
        fd = self._pool.pop(path, None)
        if fd is None:
            try:
                fd, st = open_shard(path)
            except FileNotFoundError:
                raise self._replaced(path) from None
            if (st.st_dev, st.st_ino) != self._ids[path]:
                os.close(fd)
                raise self._replaced(path)
            if len(self._pool) >= POOL_SIZE:
                os.close(self._pool.pop(next(iter(self._pool))))
        self._pool[path] = fd
        return fd

    def _replaced(self, path: Path) -> ShardError:
        return ShardError(f"{path} is no longer the shard this process opened at start-up (renamed or replaced "
                          f"since, e.g. by prepare-dataset --append_to), and only {self.held} shard files could "
                          "be kept open (RLIMIT_NOFILE): raise the limit (`ulimit -n`), change a dataset only "
                          "between runs, and continue with --resume")

    def close(self) -> None:
        for fds in (self._held, self._pool):
            for fd in fds.values():
                os.close(fd)
            fds.clear()
