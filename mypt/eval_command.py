"""`mypt eval` and the eval stage: loss and perplexity of a model over whole val splits,
every window once, in order, so the numbers are the same every run."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from mypt import checkpoint
from mypt.config import EvalSettings
from mypt.data import check_same_tokenizer, resolve_device
from mypt.errors import ConfigError
from mypt.model import load_model
from mypt.train import evaluate_dataset


def parse_datasets(specs: list[str]) -> dict[str, Path]:
    """NAME=DIR pairs (--dataset) as {name: dir}."""
    out = {}
    for spec in specs:
        name, sep, directory = spec.partition("=")
        if not sep or not name or not directory:
            raise ConfigError(f"--dataset {spec!r}: expected NAME=DIR, e.g. general=data/datasets/general")
        out[name] = Path(directory)
    return out


def evaluate_model(settings: EvalSettings, datasets: dict[str, Path],
                   log: Callable[[str], None] = print) -> dict:
    """{name: {loss, perplexity, tokens}} of settings.model_name on each dataset's val split."""
    path = checkpoint.resolve(settings.model_name, settings.checkpoints_dir)
    model, tokenizer, _ = load_model(path, resolve_device(settings.device))
    results = {}
    for name, directory in datasets.items():
        check_same_tokenizer(tokenizer, directory, f"the model {path}", f"--dataset {name}={directory}")
        results[name] = r = evaluate_dataset(model, directory, settings.batch_size, settings.max_tokens)
        log(f"{name}: loss {r['loss']:.4f}, perplexity {r['perplexity']:.2f} over {r['tokens']:,} tokens")
    return results
