"""`mypt eval` and the eval stage: loss and perplexity of a model over whole val splits,
every window once, in order, so the numbers are the same every run.

A model whose loss is not finite (NaN or inf: a run that diverged) is an error, not a
number: `--json` and the stage's metrics file would otherwise hold `NaN`, which is not JSON,
and the command would succeed."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Callable

from mypt import checkpoint
from mypt.config import EvalSettings
from mypt.dataset_spec import parse_dataset_specs
from mypt.device import resolve_device
from mypt.errors import DataError, TrainingDiverged
from mypt.evaluate import evaluate_dataset, whole_windows
from mypt.model import load_model
from mypt.shards import dataset_metadata, dataset_tokenizer
from mypt.tokenizer_match import check_tokenizer, prepare_again
from mypt.verify import check_split


def parse_datasets(specs: list[str]) -> dict[str, Path]:
    """--dataset [NAME=]DIR flags as {name: dir}: DatasetSpec's rules (a bare DIR is named by its
    last part; a name is a metrics key, letters, digits, '_', '-' or '.'), without a weight. A
    name given twice is refused (the second would silently replace the first's results)."""
    return {s.name: s.path for s in parse_dataset_specs(specs, "--dataset", weighted=False)}


def _diverged(path: Path, name: str, directory: Path, loss: str) -> TrainingDiverged:
    return TrainingDiverged(f"the model {path} has a loss of {loss} on --dataset {name}={directory}, and no "
                            "finite perplexity: its output overflows (a run that diverged?); evaluate an earlier "
                            "checkpoint of the model, or on another --device")


def _identity(directory: Path) -> tuple:
    """What a swap of the dataset changes: (device, inode) of its directory (prepare-dataset
    --overwrite and --append_to rename a new one into place) and of its val folder, with the
    folder's mtime (a shard renamed into it by hand). None for a folder that is not there."""
    def ids(path: Path, *times: str) -> tuple | None:
        try:
            st = os.stat(path)
        except OSError:  # (not there, or not a folder: the checks that follow name it)
            return None
        return (st.st_dev, st.st_ino, *(getattr(st, t) for t in times))
    return ids(directory), ids(directory / "val", "st_mtime_ns")


def _replaced(name: str, directory: Path) -> DataError:
    return DataError(f"--dataset {name}={directory}: the dataset was replaced while eval ran (its directory or its "
                     "val folder is another than when its metadata was read: a prepare-dataset --overwrite or "
                     "--append_to of it?), so its loss would be of other data than was checked; run eval again")


def evaluate_model(settings: EvalSettings, datasets: dict[str, Path],
                   log: Callable[[str], None] = print) -> dict:
    """{name: {loss, perplexity, tokens}} of settings.model_name on each dataset's val split."""
    path = checkpoint.resolve(settings.model_name, settings.checkpoints_dir)
    model, tokenizer, _ = load_model(path, resolve_device(settings.device))
    max_tokens = whole_windows(settings.max_tokens, model.config.block_size)
    log(f"model: {path}")  # the directory --model_name resolved to (a name, or a path)
    theirs, metas, identities = {}, {}, {}
    for name, directory in datasets.items():  # all before any evaluation: the last may be the one refused
        # The metadata read once: the tokenizer's record, the split's check and its pass go by one
        # version of it (a dataset replaced in between is never checked by one and scored by another).
        identities[name] = _identity(directory)  # taken first: metadata read after a swap is of the new one
        metas[name] = dataset_metadata(directory)
        theirs[name] = dataset_tokenizer(directory, metas[name])
        check_tokenizer(tokenizer, theirs[name], f"the model {path}", f"--dataset {name}={directory}",
                        prepare_again(path))
        # The val shards' bytes are those prepared and their ids the tokenizer's (the loader checks
        # only their sizes at start-up, and the ids of the windows it reads): one read of the split,
        # hashed at about 1 GB/s (1.1 on a shared 2-core CPU), where scoring its tokens takes a model
        # far longer (a --max_tokens far below the split's size makes the read the larger part).
        check_split(directory, "val", theirs[name].vocab_size, metas[name])
    results = {}
    for name, directory in datasets.items():
        results[name] = r = evaluate_dataset(model, directory, settings.batch_size, max_tokens, tokenizer=theirs[name],
                                             meta=metas[name])
        # The check read the shards by path and the loader opened them again: the same files only where
        # the folders they were found in are still the ones the metadata was read from once the loader
        # has opened its files. A swap never puts the old directory back, so asked after the pass, this
        # tells whether one came before the loader opened them (or after: refused too, though the pass
        # read the checked files, held open).
        if _identity(directory) != identities[name]:
            raise _replaced(name, directory)
        if not math.isfinite(r["loss"]):
            raise _diverged(path, name, directory, str(r["loss"]))
        if not math.isfinite(r["perplexity"]):  # a finite loss above ~709.8 nats: exp overflows
            raise _diverged(path, name, directory, "above 709 nats")
        log(f"{name}: loss {r['loss']:.4f}, perplexity {r['perplexity']:.2f} over {r['tokens']:,} tokens")
    return results
