"""GPTDataLoader: random training windows from a sharded dataset, or from one text file.

Sharded mode never maps or loads whole shards: start-up reads file sizes only, and each
window of block_size+1 tokens is read with one `os.pread` from a small pool of open files.
Nothing is memory-mapped for the run's lifetime (pages of a long-lived memmap count as
resident memory and grow with the dataset, nanoGPT's memmap note), so memory stays flat
however long the run and however large the dataset.

A shard is drawn with probability proportional to the windows it holds, then an offset
uniformly: every window of the split is equally likely. The sampler is a seeded numpy
Generator per split and per rank; its state is plain JSON, saved in checkpoints, so a
resumed run sees exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mypt.errors import ConfigError, DataError
from mypt.readers import looks_binary, reader_for
from mypt.shards import METADATA_FILE, TOKEN_BYTES, list_shards, read_metadata, shard_tokens
from mypt.tokenizers import Tokenizer

SPLITS = ("train", "val")
MAX_OPEN_FILES = 64


def resolve_device(name: str | None) -> torch.device:
    """The torch device for a name; "auto" (or nothing) is cuda when a GPU is there, else cpu."""
    if not name or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"--device {name!r} is not a device mypt runs on: use auto, cpu, cuda, cuda:N or mps")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"--device {name}: no CUDA GPU is usable here (torch {torch.__version__}); "
                              "use --device cpu, or auto")
        if device.index is not None and device.index >= count:
            raise ConfigError(f"--device {name}: this machine has {count} GPU(s), cuda:0 to cuda:{count - 1}")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"--device {name}: Apple's MPS is not available here; use --device cpu, or auto")
    return device


def check_same_tokenizer(tokenizer: Tokenizer, dataset_dir: Path, what: str, given: str) -> None:
    """Refuse a dataset tokenized with another vocabulary than `tokenizer` (`what`'s): its ids
    would mean other characters, and a loss over them means nothing. `given`: the flag and
    value that named the dataset."""
    theirs = Tokenizer.load(dataset_dir)
    if theirs.state() != tokenizer.state():
        raise DataError(f"{given} was tokenized with another vocabulary ({theirs.kind}, "
                        f"{theirs.vocab_size} tokens) than {what} ({tokenizer.kind}, {tokenizer.vocab_size} "
                        f"tokens): prepare it again with that tokenizer (prepare-dataset --tokenizer_from)")


def no_training_shards(dataset_dir: Path) -> DataError:
    return DataError(f"No training shards found in {Path(dataset_dir) / 'train'}; HINT: prepare the dataset with "
                     f"`mypt prepare-dataset --input_files ... --out_dir {dataset_dir}`")


@dataclass
class LoaderConfig:
    """What GPTDataLoader reads from its config (any object with these attributes works)."""

    batch_size: int
    block_size: int
    device: str = "cpu"
    seed: int = 1337
    rank: int = 0  # DDP rank: each rank draws its own windows


@dataclass
class _Split:
    paths: list[Path]
    sizes: np.ndarray  # tokens per shard
    weights: np.ndarray  # probability of each shard (windows it holds / all windows)
    tokens: np.ndarray | None = None  # in-memory mode: the whole split


class GPTDataLoader:
    """Batches of (x, y) windows for training and evaluation.

    config: any object with `batch_size` and `block_size` (and optionally `device`, `seed`,
    `rank`), e.g. mypt.train.TrainConfig merged with the model's block size.
    Either `dataset_dir` (a prepared dataset) or `tokens` (a uint32 array, split 90/10 like
    nanoGPT) must be given. `eval_only=True` needs only the val split.
    """

    def __init__(self, config, tokenizer: Tokenizer, dataset_dir: str | os.PathLike | None = None,
                 eval_only: bool = False, tokens: np.ndarray | None = None):
        self.batch_size = int(config.batch_size)
        self.block_size = int(config.block_size)
        self.device = resolve_device(getattr(config, "device", None) or "cpu")
        self.seed = int(getattr(config, "seed", 1337))
        self.rank = int(getattr(config, "rank", 0))
        self.tokenizer = tokenizer
        self.dataset_dir = Path(dataset_dir) if dataset_dir is not None else None
        self.eval_only = eval_only
        self.splits: dict[str, _Split] = {}
        self._files: OrderedDict[Path, int] = OrderedDict()  # open shard files, least recently used first
        if self.dataset_dir is not None:
            self._open_dataset()
        elif tokens is not None:
            self._from_tokens(np.asarray(tokens, dtype=np.uint32))
        else:
            raise DataError("GPTDataLoader needs dataset_dir= or tokens=")
        self._rng = {s: np.random.default_rng([self.seed, self.rank, i]) for i, s in enumerate(SPLITS)}

    # -- set-up ------------------------------------------------------------------------------
    def _open_dataset(self) -> None:
        d = self.dataset_dir
        if not (d / METADATA_FILE).is_file() and not (d / "train").is_dir():
            raise no_training_shards(d)
        meta = read_metadata(d) if (d / METADATA_FILE).is_file() else None
        if meta is not None and meta["tokenizer"]["kind"] != self.tokenizer.kind:
            raise DataError(f"{d} was prepared with {meta['tokenizer']['kind']} tokenization, "
                            f"but training asks for {self.tokenizer.kind}: pass --tokenization "
                            f"{meta['tokenizer']['kind']} or prepare the dataset again")
        for split in SPLITS:
            if split == "train" and self.eval_only:
                continue
            # File sizes, not the metadata's list: shards moved in by hand count too.
            paths = list_shards(d / split)
            if not paths:
                if split == "val":
                    continue
                raise no_training_shards(d)
            sizes = np.array([shard_tokens(p) for p in paths], dtype=np.int64)
            self.splits[split] = self._make_split(split, paths, sizes)
            self._spot_check(split)
        if self.eval_only and "val" not in self.splits:
            raise DataError(f"no val shards in {d / 'val'}: prepare it with --val_fraction > 0")

    def _from_tokens(self, tokens: np.ndarray) -> None:
        n = int(0.9 * tokens.size)  # nanoGPT's convention: the last 10% is val
        for split, part in (("train", tokens[:n]), ("val", tokens[n:])):
            s = self._make_split(split, [Path(f"<{split}>")], np.array([part.size], dtype=np.int64))
            s.tokens = part
            self.splits[split] = s
        self._check_ids(tokens, "the input file")

    def _make_split(self, split: str, paths: list[Path], sizes: np.ndarray) -> _Split:
        windows = np.maximum(sizes - self.block_size, 0)  # offsets where block_size+1 tokens fit
        if windows.sum() == 0:
            where = self.dataset_dir / split if self.dataset_dir else split
            raise DataError(f"{where}: no shard holds block_size+1 = {self.block_size + 1} tokens "
                            f"(largest: {int(sizes.max())}); prepare with a larger --tokens_per_shard "
                            "or train with a smaller block_size")
        return _Split(paths, sizes, windows / windows.sum())

    def _spot_check(self, split: str) -> None:
        """Cheap start-up check: the first tokens of the first and last shard are valid ids."""
        s = self.splits[split]
        for i in {0, len(s.paths) - 1}:
            self._check_ids(self._read(s, i, 0, min(int(s.sizes[i]), 4096)), str(s.paths[i]))

    def _check_ids(self, ids: np.ndarray, where: str) -> None:
        if ids.size and int(ids.max()) >= self.tokenizer.vocab_size:
            raise DataError(f"{where}: token id {int(ids.max())} is outside the {self.tokenizer.kind} vocabulary "
                            f"of {self.tokenizer.vocab_size}; the dataset and tokenizer do not match: "
                            "prepare the dataset again")

    # -- reading -----------------------------------------------------------------------------
    def _read(self, s: _Split, shard: int, start: int, n: int) -> np.ndarray:
        if s.tokens is not None:
            return s.tokens[start:start + n]
        path = s.paths[shard]
        fd = self._files.pop(path, None)
        if fd is None:
            fd = os.open(path, os.O_RDONLY)
            if len(self._files) >= MAX_OPEN_FILES:
                os.close(self._files.popitem(last=False)[1])
        self._files[path] = fd
        data = os.pread(fd, n * TOKEN_BYTES, start * TOKEN_BYTES)
        if len(data) != n * TOKEN_BYTES:
            raise DataError(f"{path}: short read; was the shard changed while training?")
        return np.frombuffer(data, dtype=np.uint32)

    def _windows(self, split: str, rng: np.random.Generator, n: int) -> np.ndarray:
        s = self.splits[split]
        shards = rng.choice(len(s.paths), size=n, p=s.weights)
        offsets = (rng.random(n) * (s.sizes[shards] - self.block_size)).astype(np.int64)
        out = np.stack([self._read(s, int(i), int(o), self.block_size + 1) for i, o in zip(shards, offsets)])
        self._check_ids(out, f"{self.dataset_dir or 'input'}/{split}")
        return out

    def get_batch(self, split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y) of shape (batch_size, block_size) on the loader's device; y is x shifted by one."""
        if split not in self.splits:
            raise DataError(f"no {split} split in {self.dataset_dir}")
        w = torch.from_numpy(self._windows(split, self._rng[split], self.batch_size).astype(np.int64))
        x, y = w[:, :-1], w[:, 1:]
        if self.device.type == "cuda":
            return (x.pin_memory().to(self.device, non_blocking=True),
                    y.pin_memory().to(self.device, non_blocking=True))
        return x.contiguous().to(self.device), y.contiguous().to(self.device)

    def eval_batches(self, split: str, n_batches: int, seed: int = 0):
        """A fixed sequence of batches (the same every call): evaluation is deterministic and
        does not move the training sampler."""
        rng = np.random.default_rng([seed, 99, SPLITS.index(split)])
        for _ in range(n_batches):
            yield self._to_device(self._windows(split, rng, self.batch_size))

    def sequential_batches(self, split: str, max_tokens: int | None = None):
        """Consecutive non-overlapping windows covering the split in shard order (up to
        max_tokens targets): the deterministic pass of the eval stage."""
        s = self.splits[split]
        budget = max_tokens if max_tokens is not None else int(s.sizes.sum())
        batch: list[np.ndarray] = []
        for i, size in enumerate(s.sizes):
            for start in range(0, int(size) - self.block_size, self.block_size):
                if budget <= 0:
                    break
                batch.append(self._read(s, i, start, self.block_size + 1))
                budget -= self.block_size
                if len(batch) == self.batch_size:
                    yield self._to_device(np.stack(batch))
                    batch = []
        if batch:
            yield self._to_device(np.stack(batch))

    def _to_device(self, windows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        w = torch.from_numpy(windows.astype(np.int64))
        return w[:, :-1].to(self.device), w[:, 1:].to(self.device)

    def tokens_in(self, split: str) -> int:
        return int(self.splits[split].sizes.sum()) if split in self.splits else 0

    # -- state -------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {s: rng.bit_generator.state for s, rng in self._rng.items()}

    def load_state_dict(self, state: dict) -> None:
        for s, st in state.items():
            self._rng[s].bit_generator.state = st

    def close(self) -> None:
        for fd in self._files.values():
            os.close(fd)
        self._files.clear()

    def __del__(self):
        try:
            self.close()
        except (OSError, AttributeError, TypeError):  # half-built loader, or interpreter shutdown
            pass


def load_text_tokens(path: Path, tokenizer: Tokenizer) -> np.ndarray:
    """The in-memory mode (--input_file): one text file's tokens as a uint32 array."""
    return tokenizer.encode_array(read_input_text(path)).astype(np.uint32)


def read_input_text(path: Path) -> str:
    """The text of --input_file, refused when binary or without text (what prepare-dataset
    would skip or reject)."""
    if not str(path).endswith(".txt") and reader_for(Path(path)) is not None:
        # .gz/.zst/.jsonl/.parquet would be read as raw bytes here: those go through prepare-dataset.
        raise DataError(f"--input_file {path}: only a plain text file is tokenized in memory; prepare "
                        f"{Path(path).name} with `mypt prepare-dataset` and train with --dataset_dir")
    if looks_binary(Path(path)):
        raise DataError(f"--input_file {path} looks binary (a NUL byte near its start): pass a text file")
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    if not text.strip():
        raise DataError(f"--input_file {path}: no text in the file (empty or whitespace only)")
    return text
