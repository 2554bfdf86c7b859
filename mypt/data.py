"""GPTDataLoader: random training windows from a sharded dataset, or from one text file.

Sharded mode never maps or loads whole shards: start-up opens every shard (a regular file,
of the size the metadata lists) and keeps it open (shards.ShardFiles: a shard renamed under
a running loader, as --append_to renames val, is still read from the file it opened), and
each window of block_size+1 tokens is read with one `os.pread`. Nothing is memory-mapped
for the run's lifetime (pages of a long-lived memmap count as resident memory and grow with
the dataset, nanoGPT's memmap note), so memory stays flat however long the run and however
large the dataset.

A shard is drawn with probability proportional to the windows it holds, then an offset
uniformly: every window of the split is equally likely. The sampler is a seeded numpy
Generator per split and per rank; its state is plain JSON, saved in checkpoints, so a
resumed run sees exactly the batches an uninterrupted run would.

MixtureLoader trains on several datasets at once: each sequence's dataset is drawn by
weight (a seeded draw, part of the sampler state), then a window of it as above.
"""

from __future__ import annotations

import difflib
import json
import numbers
import os
import reprlib
import sys
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from mypt.config import GPTConfig, TrainConfig
from mypt.dataset_spec import DatasetSpec, parse_dataset_specs
from mypt.device import resolve_device
from mypt.errors import ConfigError, DataError, MyptError
from mypt.names import MANIFEST, STATE_FILE
from mypt.shards import (METADATA_FILE, SPLITS, TOKEN_BYTES, ShardFiles, check_listed, check_tokenizer_record,
                         dataset_metadata, list_shards, listed_entries, not_a_dataset)
from mypt.tokenizer_match import check_tokenizer, prepare_again
from mypt.tokenizers import Tokenizer


def _not_a_dataset(dataset_dir: Path) -> MyptError | None:
    """The error for a directory that is no dataset at all (an export, a corpus folder), before
    one about its missing split."""
    d = Path(dataset_dir)
    if (d / METADATA_FILE).is_file() or any((d / split).is_dir() for split in SPLITS):
        return None
    return not_a_dataset(d)


def no_training_shards(dataset_dir: Path) -> MyptError:
    if (error := _not_a_dataset(dataset_dir)) is not None:
        return error
    return DataError(f"No training shards found in {Path(dataset_dir) / 'train'}; HINT: prepare the dataset with "
                     f"`mypt prepare-dataset --input_files ... --out_dir {dataset_dir}`")


def no_val_shards(dataset_dir: Path) -> MyptError:
    if (error := _not_a_dataset(dataset_dir)) is not None:
        return error
    return DataError(f"No val shards found in {Path(dataset_dir) / 'val'} (evaluation reads only the val split); "
                     f"HINT: prepare the dataset with --val_fraction > 0, e.g. `mypt prepare-dataset --input_files ... "
                     f"--out_dir {dataset_dir} --val_fraction 0.1` (in the DVC pipeline: split's val_fraction in "
                     "params.yaml)")


@dataclass
class LoaderConfig:
    """What GPTDataLoader reads from its config beside the other training settings (see
    loader_config)."""

    batch_size: int
    block_size: int
    device: str = "cpu"
    seed: int = 1337
    rank: int = 0  # DDP rank: each rank draws its own windows


def loader_config(config, who: str = "GPTDataLoader", device: str = "cpu") -> TrainConfig:
    """GPTDataLoader's `config` as the TrainConfig that GPT.fit, given no config=, trains with: a
    TrainConfig as it is; a mapping or another object (a LoaderConfig, a SimpleNamespace) by its
    names: the training settings it holds (batch_size, max_iters, learning_rate ...), block_size
    and rank; its device, `device` when it has none. Read whole: fit trains with it, and a
    max_iters=100 it holds must not train the default 5000 steps. Refused: a GPTConfig (the
    model's settings: no batch size), a mapping's name that is neither a training setting nor
    the model's (`lr`, `max_iter`: written as settings, fit would train without it), and a value
    that holds no names (a str, a number, a list: read as the defaults). An object's other names
    are its own (a nanoGPT-style script's out_dir, wandb_log): left out, said once in a warning.
    `who`: whose config it is (fit's too), for the messages."""
    if isinstance(config, TrainConfig):
        return config
    if isinstance(config, GPTConfig):
        raise ConfigError("GPTDataLoader's config is a GPTConfig, the model's settings: pass the training settings "
                          "and the model's context length, GPTDataLoader(TrainConfig(batch_size=12), tokenizer, "
                          "dataset_dir=..., block_size=model.config.block_size)")
    known = (*TrainConfig.field_names(), *TrainConfig.EXTRA_ATTRIBUTES)
    values = _named_values(config)
    if values is None and not hasattr(type(config), "__slots__"):
        raise ConfigError(f"{who}'s config {reprlib.repr(config)} (type {type(config).__name__}) holds no "
                          "settings: pass a TrainConfig(batch_size=12, max_iters=1000, ...), or a dict of its fields")
    if values is None:  # (an object of __slots__: read by the names it may hold)
        values = {name: getattr(config, name) for name in known if hasattr(config, name)}
    what = f"{who}'s config (a {type(config).__name__})"
    unknown = sorted(set(values) - set(known) - set(GPTConfig.field_names()))
    if unknown:
        near = [f"{n} -> {m[0]}" for n in unknown if (m := difflib.get_close_matches(n, known, n=1))]
        said = (f"{what} holds {unknown}, which no training setting is" + (f" (did you mean {', '.join(near)}?)"
                                                                          if near else ""))
        if not isinstance(config, Mapping):
            warnings.warn(f"{said}: left out (GPT.fit trains without {'them' if len(unknown) > 1 else 'it'})",
                          stacklevel=_callers_level())
        else:
            raise ConfigError(f"{said}: GPT.fit would train without {'them' if len(unknown) > 1 else 'it'}; pass a "
                              "TrainConfig, or settings named as its fields (TrainConfig.field_names()), block_size "
                              "and rank")
    settings = {k: v for k, v in values.items() if k in TrainConfig.field_names()}
    if isinstance(settings.get("batch_size"), int):
        _check_batch_size(settings["batch_size"])
    cfg = TrainConfig.from_dict({"device": device, **settings}, source=what)
    for name in TrainConfig.EXTRA_ATTRIBUTES:
        if name in values:
            setattr(cfg, name, values[name])
    return cfg


def _callers_level() -> int:
    """The warnings.warn stacklevel, for its caller, of the first frame outside mypt: the user's
    line, however deep in mypt the warning is said (GPTDataLoader(...) is 2 frames above it,
    model.fit(...) 5; Python 3.12's skip_file_prefixes does this, and mypt runs on 3.10)."""
    package = os.path.dirname(os.path.abspath(__file__)) + os.sep
    frame, level = sys._getframe(1), 1  # (level 1: this function's caller, which calls warnings.warn)
    while frame is not None and frame.f_code.co_filename.startswith(package):
        frame, level = frame.f_back, level + 1
    return level


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:  # (an empty batch's loss is nan: it would stop the run as diverged)
        raise ConfigError(f"GPTDataLoader: batch_size must be at least 1 (sequences per batch), got {batch_size}")


def _named_values(config) -> dict | None:
    """{name: value} of a mapping or an object's public attributes; None when it has no
    __dict__. None itself holds no settings."""
    if config is None:
        return {}
    if isinstance(config, Mapping):
        return dict(config)
    if hasattr(config, "_asdict"):  # a namedtuple
        return dict(config._asdict())
    try:
        return {k: v for k, v in vars(config).items() if not k.startswith("_")}
    except TypeError:
        return None


@dataclass
class _Split:
    paths: list[Path]
    sizes: np.ndarray  # tokens per shard
    weights: np.ndarray  # probability of each shard (windows it holds / all windows)
    tokens: np.ndarray | None = None  # in-memory mode: the whole split


class GPTDataLoader:
    """Batches of (x, y) windows for training and evaluation.

    config: a mypt TrainConfig, or a mapping or object of its settings (batch_size, device,
    seed, max_iters ...; see loader_config); the loader reads batch_size, block_size, device,
    seed and rank. Kept as `loader.config` (a TrainConfig), and GPT.fit without a config trains
    with it. `block_size=` (the model's context length) wins over `config.block_size`; one of
    them is needed (TrainConfig has no block_size field: the model's is GPTConfig.block_size).
    Either `dataset_dir` (a prepared dataset) or `tokens` (a uint32 array, split 90/10 like
    nanoGPT) must be given. `eval_only=True` needs only the val split. `meta=`: dataset_dir's
    metadata where the caller has read it (mypt.shards.dataset_metadata), so that what it checked
    and what the loader reads are one version of it; else read here.
    """

    def __init__(self, config, tokenizer: Tokenizer, dataset_dir: str | os.PathLike | None = None,
                 eval_only: bool = False, tokens: np.ndarray | None = None, block_size: int | None = None,
                 meta: dict | None = None):
        self.config = config = loader_config(config)
        self.batch_size = int(config.batch_size)
        _check_batch_size(self.batch_size)  # (a field assigned after TrainConfig(...) was not checked)
        if not isinstance(tokenizer, Tokenizer):
            raise ConfigError(f"GPTDataLoader's tokenizer is a {type(tokenizer).__name__}: pass a Tokenizer, the "
                              "dataset's own (Tokenizer.load(dataset_dir)) or the one that made tokens= "
                              "(Tokenizer('gpt2'))")
        if dataset_dir is not None and tokens is not None:
            raise ConfigError("GPTDataLoader takes dataset_dir= or tokens=, not both (which would it read?)")
        block_size = block_size if block_size is not None else getattr(config, "block_size", None)
        if block_size is None:
            raise ConfigError("GPTDataLoader: no block_size; pass block_size=N (the model's context length) "
                              "or set config.block_size = N")
        if isinstance(block_size, bool) or not isinstance(block_size, numbers.Integral):  # (8.7 read as 8, unsaid)
            raise ConfigError(f"GPTDataLoader: block_size must be a whole number of tokens, got {block_size!r}")
        self.block_size = int(block_size)
        if self.block_size < 1:
            raise ConfigError(f"GPTDataLoader: block_size must be at least 1 (the tokens of each sequence), got "
                              f"{block_size}")
        try:  # (said as the config's setting, not as mypt train's flag)
            self.device = resolve_device(getattr(config, "device", None) or "cpu", said="device=")
        except ConfigError as e:
            raise ConfigError(f"GPTDataLoader's config: {e}") from None
        self.seed = int(getattr(config, "seed", 1337))
        self.rank = int(getattr(config, "rank", 0))
        self.tokenizer = tokenizer
        self.dataset_dir = Path(dataset_dir) if dataset_dir is not None else None
        self.eval_only = eval_only
        self.splits: dict[str, _Split] = {}
        self._files = ShardFiles()
        if self.dataset_dir is not None:
            self._open_dataset(meta)
        elif tokens is not None:
            self._from_tokens(self._token_ids(tokens))
        else:
            raise DataError("GPTDataLoader needs dataset_dir= or tokens=")
        self._seed_rngs()

    def _seed_rngs(self, *stream: int) -> None:
        """One sampler per split, seeded by (seed, rank, split[, stream]): a mixture gives each
        dataset its own stream."""
        self._stream = stream
        self._rng = {s: np.random.default_rng([self.seed, self.rank, i, *stream]) for i, s in enumerate(SPLITS)}

    def reseed(self, step: int) -> None:
        """Streams of windows of their own for a rank that joins a resumed run at `step` (its
        seed's stream from 0 may have been drawn by an earlier run with that rank)."""
        self._seed_rngs(*self._stream, RESUME_STREAM, step)

    # -- set-up ------------------------------------------------------------------------------
    def _check_tokenizer(self, d: Path, meta: dict | None) -> None:
        """The tokenizer given is the dataset's own, not only of its kind: two char datasets hold
        different vocabularies, and ids of one read with the other give a loss that means nothing
        (the CLI checks this before; the Python API relies on it). One pass: the metadata's kind,
        then tokenizer_state.json (the saved state compared first; the dataset's tokenizer built
        only when it differs, an older state version of the same tokenizer), then the tokenizer
        the metadata records its shards were written with (check_tokenizer_record), each once."""
        if meta is not None:
            self._refuse_other(d, meta["tokenizer"]["kind"])
        path = d / STATE_FILE
        if path.is_file() and not self._same_state(path):
            theirs = Tokenizer.load(d)
            if meta is not None:  # an edited file is named as such before it is compared
                check_tokenizer_record(d, meta, theirs)
            self._refuse_other(d, theirs)  # (the given is theirs, so the record's too)
        elif meta is not None:
            check_tokenizer_record(d, meta, self.tokenizer)

    def _same_state(self, path: Path) -> bool:
        try:
            return json.loads(path.read_text(encoding="utf-8")) == json.loads(json.dumps(self.tokenizer.state()))
        except (OSError, ValueError, UnicodeDecodeError):
            return False  # Tokenizer.load names what is wrong with the file

    def _refuse_other(self, d: Path, theirs: Tokenizer | str) -> None:
        """Refuse dataset d's tokenizer `theirs` (a Tokenizer, or the kind its metadata records)
        unless it is the one given."""
        if isinstance(theirs, str):
            check_tokenizer(self.tokenizer, theirs, "training", f"the dataset {d}",
                            f"pass --tokenization {theirs} or prepare the dataset again")
        else:
            check_tokenizer(self.tokenizer, theirs, "the tokenizer given", f"the dataset {d}",
                            "pass the dataset's own, Tokenizer.load(dataset_dir), or prepare it again with this one "
                            "(prepare-dataset --tokenizer_from)")

    def _open_dataset(self, meta: dict | None) -> None:
        d = self.dataset_dir
        if not d.is_dir():
            if d.exists():
                raise DataError(f"{d} is a file, not a dataset directory; HINT: prepare a dataset from it with "
                                f"`mypt prepare-dataset --input_files {d} --out_dir DIR`")
            raise DataError(f"dataset directory {d} does not exist; HINT: prepare it with "
                            f"`mypt prepare-dataset --input_files ... --out_dir {d}`")
        meta = dataset_metadata(d) if meta is None else meta
        if meta is None and not (d / ("val" if self.eval_only else "train")).is_dir():
            if (d / MANIFEST).is_file():  # a pipeline step's output (data/shards/NAME): never write over it
                raise DataError(f"{d} is not a dataset (no {METADATA_FILE}): it holds a pipeline step's output "
                                f"({d / MANIFEST}); pass the split stage's output (data/datasets/NAME) or a "
                                "directory `mypt prepare-dataset` wrote")
            raise no_val_shards(d) if self.eval_only else no_training_shards(d)
        self._check_tokenizer(d, meta)
        opened = {}
        # val first: where not every shard can stay open, val's are held (an append renames them).
        for split in reversed(SPLITS):
            if split == "train" and self.eval_only:
                continue
            # The files on disk, not the metadata's list: shards moved in by hand count too.
            paths = list_shards(d / split)
            if not paths and (split == "train" or meta is None or not listed_entries(meta, split)):
                if split == "val":
                    continue
                raise no_training_shards(d)
            sizes = self._files.open(paths)
            if meta is not None:  # but a listed shard must be there, at the size listed
                check_listed(d, meta, split, {f"{split}/{p.name}": int(n) for p, n in zip(paths, sizes)},
                             f"HINT: run `mypt verify-dataset {d}`; add data with `mypt prepare-dataset "
                             f"--input_files ... --append_to {d}`, never by moving shards in")
            opened[split] = self._make_split(split, paths, sizes)
        self.splits = {split: opened[split] for split in SPLITS if split in opened}
        for split in self.splits:
            self._spot_check(split)
        if self.eval_only and "val" not in self.splits:
            raise no_val_shards(d)

    def _token_ids(self, tokens) -> np.ndarray:
        """tokens= as uint32 ids, refused where the cast would change them: a negative id or one
        past 2**32 wraps to another id, a float is cut to a whole one, a 2-D array's rows would be
        split 90/10 as rows, and a str is no ids at all."""
        if isinstance(tokens, (str, bytes)):
            raise ConfigError(f"GPTDataLoader's tokens= is a {type(tokens).__name__}: pass token ids, "
                              "tokenizer.encode_array(text)")
        ids = np.asarray(tokens)
        if ids.ndim != 1:
            raise ConfigError(f"GPTDataLoader's tokens= has shape {ids.shape}: pass one sequence of token ids "
                              "(documents joined, each ended by the tokenizer's eot_id)")
        if ids.size and ids.dtype.kind not in "iu":
            raise ConfigError(f"GPTDataLoader's tokens= holds {ids.dtype} values: pass integer token ids")
        if ids.size and ids.dtype.kind == "i" and int(ids.min()) < 0:
            raise DataError(f"GPTDataLoader's tokens= holds the negative id {int(ids.min())}: token ids are 0 to "
                            f"vocab_size - 1 ({self.tokenizer.vocab_size - 1})")
        self._check_ids(ids, "GPTDataLoader's tokens=")  # (before the cast: 2**32 + 5 would be id 5)
        return ids.astype(np.uint32, copy=False)

    def _from_tokens(self, tokens: np.ndarray) -> None:
        n = int(0.9 * tokens.size)  # nanoGPT's convention: the last 10% is val
        for split, part in (("train", tokens[:n]), ("val", tokens[n:])):
            s = self._make_split(split, [Path(f"<{split}>")], np.array([part.size], dtype=np.int64))
            s.tokens = part
            self.splits[split] = s

    def _make_split(self, split: str, paths: list[Path], sizes: np.ndarray) -> _Split:
        windows = np.maximum(sizes - self.block_size, 0)  # offsets where block_size+1 tokens fit
        if windows.sum() == 0:
            if self.dataset_dir is None:  # train --input_file: no shards, the file's tokens split 90/10
                part = "the first 90%" if split == "train" else "the last 10%"
                raise DataError(f"the input file's {split} part ({part} of its tokens) holds {int(sizes.max())} "
                                f"tokens, fewer than block_size+1 = {self.block_size + 1}: give a longer file, or "
                                "train with a smaller --block_size")
            total = int(sizes.sum())
            # Shards that are too small only help when the split as a whole is long enough.
            more = ("prepare the dataset with a larger --tokens_per_shard" if total > self.block_size else
                    f"the whole split holds {total} tokens: prepare it from more text"
                    + (" or with a larger --val_fraction" if split == "val" else ""))
            raise DataError(f"{self.dataset_dir / split}: no shard holds block_size+1 = {self.block_size + 1} tokens "
                            f"(largest: {int(sizes.max())}); {more}, "
                            "or use a model with a smaller block_size (train --block_size)")
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
        data = self._files.pread(path, n * TOKEN_BYTES, start * TOKEN_BYTES)
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
        return to_device(self._windows(split, self._rng[split], self.batch_size), self.device, pin=True)

    def eval_batches(self, split: str, n_batches: int):
        """A fixed sequence of batches (the same every call): evaluation is deterministic and
        does not move the training sampler."""
        # Not the run's seed: runs of any --seed score the same batches, so their val losses compare.
        rng = np.random.default_rng([0, 99, SPLITS.index(split)])
        for _ in range(n_batches):
            yield self._to_device(self._windows(split, rng, self.batch_size))

    def sequential_batches(self, split: str, max_tokens: int | None = None):
        """Consecutive non-overlapping windows covering the split in shard order: the
        deterministic pass of the eval stage. With max_tokens (targets) short of the split, that
        many windows' worth spread evenly over all of them: the split keeps its sources in order,
        so its first windows were its first sources alone, and their loss was reported as the
        split's."""
        s = self.splits[split]
        block = self.block_size
        # Window starts 0, block, 2 * block... while a window's block + 1 tokens fit in the shard.
        counts = [max((int(size) - 1) // block, 0) for size in s.sizes]
        total = sum(counts)
        wanted = total if max_tokens is None else min(total, max_tokens // block)
        batch: list[np.ndarray] = []
        shard, first = 0, 0  # the shard of the next window, and its first window's number in the split
        for k in range(wanted):  # (one window at a time: memory stays whatever the split's size)
            # The k-th of `wanted` windows, centred in its share of the split: window k when all are.
            n = (2 * k + 1) * total // (2 * wanted)
            while n >= first + counts[shard]:
                first += counts[shard]
                shard += 1
            window = self._read(s, shard, (n - first) * block, block + 1)
            if s.tokens is None:  # (a pass over every token: each checked as it is read, as training's are)
                self._check_ids(window, str(s.paths[shard]))
            batch.append(window)
            if len(batch) == self.batch_size:
                yield self._to_device(np.stack(batch))
                batch = []
        if batch:
            yield self._to_device(np.stack(batch))

    def _to_device(self, windows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return to_device(windows, self.device)

    def tokens_in(self, split: str) -> int:
        return int(self.splits[split].sizes.sum()) if split in self.splits else 0

    def val_parts(self) -> list[tuple[str, float, GPTDataLoader]]:
        """What training evaluates as val: (name in the eval line, weight, loader)."""
        return [("val", 1.0, self)] if "val" in self.splits else []

    # -- state -------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {s: rng.bit_generator.state for s, rng in self._rng.items()}

    def load_state_dict(self, state: dict) -> None:
        if not isinstance(state, dict) or not set(state) <= set(self._rng):
            raise DataError(f"the saved sampler state (keys {sorted(state) if isinstance(state, dict) else state!r}) "
                            "is not a single dataset's: resume with the same --dataset_dir flags as the run "
                            "that saved it")
        for s, st in state.items():
            self._rng[s].bit_generator.state = st

    def close(self) -> None:
        self._files.close()

    def __del__(self):
        try:
            self.close()
        except (OSError, AttributeError, TypeError):  # half-built loader, or interpreter shutdown
            pass


def to_device(windows: np.ndarray, device: torch.device, pin: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) of windows of block_size+1 tokens; pin=True: pinned, non-blocking copies on CUDA
    (the training batch, read while the GPU works)."""
    w = torch.from_numpy(windows.astype(np.int64))
    x, y = w[:, :-1], w[:, 1:]
    if pin and device.type == "cuda":
        return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
    return x.contiguous().to(device), y.contiguous().to(device)


# -- mixtures ------------------------------------------------------------------------------
class _Member(GPTDataLoader):
    """A dataset of a MixtureLoader after the first, whose tokenizer (the one given, checked by
    the first dataset's loader) a mismatch names as the first dataset's."""

    def __init__(self, config, tokenizer: Tokenizer, spec: DatasetSpec, first: DatasetSpec, block_size: int | None):
        self.spec, self.first = spec, first
        super().__init__(config, tokenizer, dataset_dir=spec.path, block_size=block_size)

    def _refuse_other(self, d: Path, theirs: Tokenizer | str) -> None:
        check_tokenizer(self.tokenizer, theirs, f"--dataset_dir {self.first.text}", f"--dataset_dir {self.spec.text}",
                        prepare_again(self.first.path))


MIX_STREAM = 7_654_321  # the seed stream of the dataset draw (the datasets' own streams are 1, 2, ...)
RESUME_STREAM = 8_765_432  # with the step: the streams of a rank that joins a resumed run (reseed)


class MixtureLoader:
    """Batches drawn from several prepared datasets: each sequence's dataset by weight, then
    a window of it the way GPTDataLoader draws one. The same API as GPTDataLoader
    (get_batch, eval_batches, state_dict, splits, batch_size, block_size); training
    evaluates each dataset's val split by name (val_NAME) and `val` as their weighted mean.

    datasets: DatasetSpecs or --dataset_dir strings ("web=data/web:0.7"). The datasets must
    share one tokenizer. `log` gets a warning line for each dataset without a val split
    (left out of `val`).
    """

    def __init__(self, config, tokenizer: Tokenizer, datasets, block_size: int | None = None,
                 log: Callable[[str], None] = print):
        form = '["web=data/web:0.7", "books=data/books:0.3"]'
        if isinstance(datasets, (str, os.PathLike, DatasetSpec)):  # (its characters would be read as datasets)
            raise ConfigError(f"MixtureLoader's datasets is one {type(datasets).__name__} ({str(datasets)!r}): pass "
                              f"a list, {form}")
        if isinstance(datasets, Mapping):  # (its keys, the names, would be read as the paths)
            raise ConfigError(f"MixtureLoader's datasets is a {type(datasets).__name__}: pass a list of "
                              f"NAME=PATH:WEIGHT, {form}")
        try:
            datasets = list(datasets)  # (a generator is read once, here)
        except TypeError:
            raise ConfigError(f"MixtureLoader's datasets is a {type(datasets).__name__}: pass a list, {form}") from None
        odd = [d for d in datasets if not isinstance(d, (str, os.PathLike, DatasetSpec))]
        if odd:
            raise ConfigError(f"MixtureLoader's datasets holds {odd[0]!r}: pass each dataset as NAME=PATH:WEIGHT (or "
                              f"PATH), {form}")
        self.specs = parse_dataset_specs(datasets)
        if len(self.specs) < 2:
            raise ConfigError("MixtureLoader needs two datasets or more; use GPTDataLoader for one")
        # One vocabulary: the same id must mean the same text in each. The first dataset's loader
        # checks the tokenizer given is its own; the others' compare theirs with it (_Member).
        first = self.specs[0]
        self.loaders = [GPTDataLoader(config, tokenizer, dataset_dir=first.path, block_size=block_size)]
        self.loaders += [_Member(config, tokenizer, s, first, block_size) for s in self.specs[1:]]
        for k, loader in enumerate(self.loaders):
            loader._seed_rngs(k + 1)  # each dataset its own window stream
        lead = self.loaders[0]
        self.config, self.tokenizer, self.device = lead.config, tokenizer, lead.device
        self.batch_size, self.block_size, self.seed, self.rank = lead.batch_size, lead.block_size, lead.seed, lead.rank
        self.weights = np.array([s.weight for s in self.specs])
        # A split is there when every dataset has it (a dataset without val/ cannot be drawn from).
        self.splits = {s: [loader.splits[s] for loader in self.loaders] for s in SPLITS
                       if all(s in loader.splits for loader in self.loaders)}
        self._seed_draw()
        if self.rank == 0:
            for line in self._val_warnings():
                log(line)

    def _val_warnings(self) -> list[str]:
        """A line for each dataset left out of `val` (no val split), or one saying there is no val."""
        without = [s.text for s, loader in zip(self.specs, self.loaders) if "val" not in loader.splits]
        if len(without) == len(self.specs):
            return ["warning: no --dataset_dir of the mixture has a val split: training reports no val loss "
                    "(prepare them with --val_fraction > 0, or add --eval_dataset_dir)"]
        kept = ", ".join(f"val_{s.name}" for s, loader in zip(self.specs, self.loaders) if "val" in loader.splits)
        return [f"warning: --dataset_dir {text} has no val split (prepared with --val_fraction 0?): val is the "
                f"weighted mean of {kept} only" for text in without]

    def _draw(self, split: str, rng: np.random.Generator, window_rngs: list[np.random.Generator], n: int) -> np.ndarray:
        which = rng.choice(len(self.loaders), size=n, p=self.weights)  # each sequence's dataset
        out = np.empty((n, self.block_size + 1), dtype=np.uint32)
        for k, loader in enumerate(self.loaders):
            rows = np.flatnonzero(which == k)
            if rows.size:
                out[rows] = loader._windows(split, window_rngs[k], rows.size)
        return out

    def get_batch(self, split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y) of shape (batch_size, block_size); each row from a dataset drawn by weight."""
        if split not in self.splits:
            missing = [s.text for s, loader in zip(self.specs, self.loaders) if split not in loader.splits]
            raise DataError(f"no {split} split in --dataset_dir {', '.join(missing)}")
        windows = self._draw(split, self._rng[split], [loader._rng[split] for loader in self.loaders], self.batch_size)
        return to_device(windows, self.device, pin=True)

    def eval_batches(self, split: str, n_batches: int):
        """A fixed sequence of mixed batches (the same every call)."""
        rng = np.random.default_rng([0, 99, SPLITS.index(split), MIX_STREAM])
        for _ in range(n_batches):
            yield to_device(self._draw(split, rng, [rng] * len(self.loaders), self.batch_size), self.device)

    def val_parts(self) -> list[tuple[str, float, GPTDataLoader]]:
        """Each dataset's val split, evaluated as val_NAME and weighted by its share."""
        return [(f"val_{s.name}", s.weight, loader) for s, loader in zip(self.specs, self.loaders)
                if "val" in loader.splits]

    def _seed_draw(self, *stream: int) -> None:
        """The dataset draw's sampler per split, seeded as GPTDataLoader._seed_rngs on a stream of its own."""
        self._rng = {s: np.random.default_rng([self.seed, self.rank, i, MIX_STREAM, *stream])
                     for i, s in enumerate(SPLITS)}

    def reseed(self, step: int) -> None:
        """As GPTDataLoader.reseed: the dataset draw and each dataset's windows."""
        for loader in self.loaders:
            loader.reseed(step)
        self._seed_draw(RESUME_STREAM, step)

    def state_dict(self) -> dict:
        return {"mixture": {s: rng.bit_generator.state for s, rng in self._rng.items()},
                "datasets": {s.name: loader.state_dict() for s, loader in zip(self.specs, self.loaders)}}

    def load_state_dict(self, state: dict) -> None:
        names = [s.name for s in self.specs]
        saved = sorted(state.get("datasets", {})) if isinstance(state, dict) else []
        if saved != sorted(names):
            raise DataError(f"the saved sampler state is for dataset(s) {saved or 'of a single-dataset run'}, "
                            f"this run mixes {names}: resume with the same --dataset_dir flags as the run "
                            "that saved it")
        for s, st in state["mixture"].items():
            self._rng[s].bit_generator.state = st
        for spec, loader in zip(self.specs, self.loaders):
            loader.load_state_dict(state["datasets"][spec.name])

    def close(self) -> None:
        for loader in self.loaders:
            loader.close()

