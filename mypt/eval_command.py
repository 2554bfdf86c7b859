"""`mypt eval` and the eval stage: loss and perplexity of a model over whole val splits,
every window once, in order, so the numbers are the same every run.

A model whose loss is not finite (NaN or inf: a run that diverged) is an error, not a
number: `--json` and the stage's metrics file would otherwise hold `NaN`, which is not JSON,
and the command would succeed."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

from mypt import checkpoint
from mypt.config import EvalSettings
from mypt.dataset_spec import parse_dataset_specs
from mypt.device import resolve_device
from mypt.errors import TrainingDiverged
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


def evaluate_model(settings: EvalSettings, datasets: dict[str, Path],
                   log: Callable[[str], None] = print) -> dict:
    """{name: {loss, perplexity, tokens}} of settings.model_name on each dataset's val split."""
    path = checkpoint.resolve(settings.model_name, settings.checkpoints_dir)
    model, tokenizer, _ = load_model(path, resolve_device(settings.device))
    max_tokens = whole_windows(settings.max_tokens, model.config.block_size)
    log(f"model: {path}")  # the directory --model_name resolved to (a name, or a path)
    theirs, metas = {}, {}
    for name, directory in datasets.items():  # all before any evaluation: the last may be the one refused
        # The metadata read once: the tokenizer's record, the split's check and its pass go by one
        # version of it (a dataset replaced in between is never checked by one and scored by another).
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
        if not math.isfinite(r["loss"]):
            raise _diverged(path, name, directory, str(r["loss"]))
        if not math.isfinite(r["perplexity"]):  # a finite loss above ~709.8 nats: exp overflows
            raise _diverged(path, name, directory, "above 709 nats")
        log(f"{name}: loss {r['loss']:.4f}, perplexity {r['perplexity']:.2f} over {r['tokens']:,} tokens")
    return results
