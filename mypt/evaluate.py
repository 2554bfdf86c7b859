"""Evaluation of a model over a dataset split, every window once, in order (`mypt eval` and
the eval stage); training's periodic evaluation on fixed batches is in mypt.train."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from mypt.data import GPTDataLoader, LoaderConfig
from mypt.errors import ConfigError
from mypt.tokenizers import Tokenizer

# math.exp overflows (OverflowError) above this many nats: the perplexity is then inf.
MAX_EXP = 709.78


@torch.no_grad()
def evaluate_dataset(model: torch.nn.Module, dataset_dir: Path, batch_size: int = 32, max_tokens: int | None = None,
                     split: str = "val") -> dict:
    """Loss and perplexity of `model` over a dataset split, every window once, in order:
    the same numbers every run. Returns {"loss", "perplexity", "tokens"} (perplexity inf for
    a loss too large for math.exp)."""
    device = next(model.parameters()).device
    loader = GPTDataLoader(LoaderConfig(batch_size, model.config.block_size, str(device), 0, 0),
                           Tokenizer.load(dataset_dir), dataset_dir=dataset_dir, eval_only=True)
    model.eval()
    total, count = 0.0, 0
    for x, y in loader.sequential_batches(split, max_tokens):
        _, loss = model(x, y)
        total += loss.item() * y.numel()
        count += y.numel()
    loader.close()
    if count == 0:
        raise ConfigError(f"{dataset_dir}/{split} has no window of block_size+1 = {model.config.block_size + 1} tokens")
    mean = total / count
    return {"loss": mean, "perplexity": math.exp(mean) if mean < MAX_EXP else math.inf, "tokens": count}
