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
import os
from pathlib import Path

import numpy as np

from mypt.errors import ShardError
from mypt.io import read_json, tmp_name

DTYPE = np.dtype("<u4")
TOKEN_BYTES = DTYPE.itemsize
METADATA_FILE = "dataset_metadata.json"
FORMAT_VERSION = 1


def shard_name(index: int) -> str:
    return f"shard_{index:05d}.bin"


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
            data = tokens[pos:pos + take].tobytes()
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


def shard_tokens(path: Path) -> int:
    size = path.stat().st_size
    if size % TOKEN_BYTES:
        raise ShardError(f"{path}: {size} bytes is not a whole number of uint32 tokens; "
                         "the shard is damaged: prepare the dataset again")
    return size // TOKEN_BYTES


def list_shards(directory: Path) -> list[Path]:
    """The shard files of a split directory in name order ([] when there is no directory).
    Sorts the names, not Paths: comparing Paths costs 15 ms per 1,000 shards (Python 3.11)."""
    directory = Path(directory)
    try:
        names = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [directory / n for n in sorted(names) if n.startswith("shard_") and n.endswith(".bin")]


class TokenStream:
    """The concatenation of shards, read by global token offset without loading them."""

    def __init__(self, paths: list[Path]):
        self.paths = list(paths)
        sizes = [shard_tokens(p) for p in self.paths]
        self.starts = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])
        self._maps: dict[int, np.memmap] = {}

    def __len__(self) -> int:
        return int(self.starts[-1])

    def read(self, start: int, end: int) -> np.ndarray:
        out, pos = [], start
        while pos < end:
            i = int(np.searchsorted(self.starts, pos, side="right")) - 1
            stop = min(end, int(self.starts[i + 1]))
            mm = self._maps.get(i)
            if mm is None:
                # One open map at a time: pages of long-lived maps count as resident memory.
                self._maps = {i: np.memmap(self.paths[i], dtype=DTYPE, mode="r")}
                mm = self._maps[i]
            out.append(np.array(mm[pos - self.starts[i]:stop - self.starts[i]]))
            pos = stop
        return np.concatenate(out) if out else np.zeros(0, DTYPE)


def read_metadata(dataset_dir: Path) -> dict:
    path = Path(dataset_dir) / METADATA_FILE
    if not path.is_file():
        raise ShardError(f"{dataset_dir} is not a prepared dataset (no {METADATA_FILE}); "
                                "HINT: run `mypt prepare-dataset --input_files ... --out_dir DIR`")
    meta = read_json(path)
    if meta.get("format_version") != FORMAT_VERSION:
        raise ShardError(f"{path}: format_version {meta.get('format_version')!r}, this mypt reads {FORMAT_VERSION}")
    return meta
