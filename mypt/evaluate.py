"""Evaluation: of a model over a dataset split, every window once, in order (`mypt eval` and
the eval stage), and training's periodic evaluation on fixed batches (fit's val and eval_NAME
losses)."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import torch

from mypt.config import GPTConfig
from mypt.data import GPTDataLoader, LoaderConfig, no_val_shards
from mypt.errors import ConfigError
from mypt.names import SPLITS
from mypt.precision import autocast
from mypt.tokenizer_match import check_model_tokenizer
from mypt.tokenizers import Tokenizer

# math.exp overflows (OverflowError) above this many nats: the perplexity is then inf.
MAX_EXP = 709.78


def whole_windows(max_tokens: int | None, block_size: int, name: str = "--max_tokens") -> int | None:
    """max_tokens as the evaluation can hold it: it scores whole windows of block_size
    targets, so "at most N tokens" is N rounded down to whole windows; less than one window
    is refused, naming `name` (the eval command's --max_tokens, evaluate_dataset's argument)."""
    if max_tokens is None:
        return None
    if max_tokens < block_size:
        spell = lambda n: f"{name} {n}" if name.startswith("--") else f"{name}={n}"  # noqa: E731 (flag or argument)
        raise ConfigError(f"{spell(max_tokens)}: eval scores whole windows of the model's block_size ({block_size}) "
                          f"tokens, so at most {max_tokens} tokens is none; give {spell(block_size)} or more, or "
                          "leave it out for the whole split")
    return max_tokens // block_size * block_size


@torch.no_grad()
def evaluate_dataset(model: torch.nn.Module, dataset_dir: Path, batch_size: int = 32, max_tokens: int | None = None,
                     split: str = "val", tokenizer: Tokenizer | None = None, meta: dict | None = None) -> dict:
    """Loss and perplexity of `model` over a dataset split, every window once, in order:
    the same numbers every run. Returns {"loss", "perplexity", "tokens"} (perplexity inf for
    a loss too large for math.exp). `tokenizer`: the model's (load_model returns it), refused
    unless the dataset holds its ids, as training refuses it; by default the dataset's own,
    refused where its vocabulary's size is not the model's (a loss over ids of another
    vocabulary is a number about nothing). `meta`: the dataset's metadata where the caller has
    read it (mypt.shards.dataset_metadata: eval checks the split by it first), else read here."""
    if not isinstance(getattr(model, "config", None), GPTConfig):
        raise ConfigError(f"evaluate_dataset's model is a {type(model).__name__}: pass a GPT, the model "
                          "load_model(path) returns")
    if split not in SPLITS:
        raise ConfigError(f"evaluate_dataset's split {split!r}: a dataset's splits are {' and '.join(SPLITS)}")
    max_tokens = whole_windows(max_tokens, model.config.block_size, "max_tokens")
    device = next(model.parameters()).device
    whose = "evaluate_dataset's tokenizer=" if tokenizer is not None else \
        f"evaluate_dataset: the dataset {dataset_dir}'s tokenizer"
    tokenizer = Tokenizer.load(dataset_dir) if tokenizer is None else tokenizer
    check_model_tokenizer(model, tokenizer, whose, "a loss over another vocabulary's ids means nothing; evaluate on "
                          "a dataset prepared with the model's tokenizer, passed as tokenizer= (load_model(path) "
                          "returns it)")
    loader = GPTDataLoader(LoaderConfig(batch_size, model.config.block_size, str(device), 0, 0), tokenizer,
                           dataset_dir=dataset_dir, eval_only=split == "val", meta=meta)
    if split not in loader.splits:  # (a train split is always there: the loader refuses a dataset without)
        loader.close()
        raise no_val_shards(Path(dataset_dir))
    model.eval()
    total, count = 0.0, 0
    try:
        for x, y in loader.sequential_batches(split, max_tokens):
            _, loss = model(x, y)
            total += loss.item() * y.numel()
            count += y.numel()
    finally:  # (a damaged shard met mid-pass, or a Ctrl-C: its files closed now, not when collected)
        loader.close()
    if count == 0:
        raise ConfigError(f"{dataset_dir}/{split} has no window of block_size+1 = {model.config.block_size + 1} tokens")
    mean = total / count
    return {"loss": mean, "perplexity": math.exp(mean) if mean < MAX_EXP else math.inf, "tokens": count}


# Training's evaluation asks every this many batches whether a stop (SIGTERM, Ctrl-C) came: under
# DDP or FSDP the ranks agree on it together, so all must ask at the same batch, not at a time.
STOP_CHECK_BATCHES = 8


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader, split: str, n_batches: int, amp: torch.dtype | None,
             stop: Callable[[bool], bool] | None = None, errors: tuple[type[BaseException], ...] = ()) -> float | None:
    """Mean loss over a fixed set of batches (the same at every evaluation); None when `stop`
    said yes: the evaluation was cut short.

    `stop(failed)` is the ranks' vote (every STOP_CHECK_BATCHES batches and at the end, every
    rank's at the same batches): a batch this rank cannot read (`errors`) is kept, and the rank
    votes on with failed=True until the vote ends the evaluation, then raises it. (Leaving at
    once, it met the others' next vote with another collective.)"""
    was_training = model.training
    model.eval()
    losses, failed, cut = [], None, False
    try:
        batches = loader.eval_batches(split, n_batches)
    except errors as e:
        if stop is None:
            raise
        failed = e
    try:
        for i in range(n_batches):
            if failed is None:
                try:
                    x, y = next(batches)
                except StopIteration:
                    break
                except errors as e:
                    if stop is None:
                        raise
                    failed = e
            if failed is None:
                with autocast(x.device, amp):
                    # A copy of its own: a CUDA graph's output (--cuda_graphs) kept alive would make
                    # the next batch record a graph of its own rather than replay this one.
                    losses.append(model(x, y)[1].to(torch.float32, copy=True))
            if stop is not None and i % STOP_CHECK_BATCHES == STOP_CHECK_BATCHES - 1 and stop(failed is not None):
                cut = True
                break
        else:  # the end's vote (a failure in the last batches)
            cut = stop is not None and stop(failed is not None)
    finally:
        model.train(was_training)
    if failed is not None:
        raise failed
    return None if cut else torch.stack(losses).mean().item()


def evaluate_all(model: torch.nn.Module, loader, eval_loaders: dict, n_batches: int,
                 amp: torch.dtype | None, stop: Callable[[bool], bool] | None = None,
                 errors: tuple[type[BaseException], ...] = ()) -> dict[str, float] | None:
    """The training loader's val losses, {"val": ...} (for a MixtureLoader also "val_NAME" of
    each dataset, and "val" their mean weighted by the mixture's weights), then "eval_NAME" of
    each eval loader. A loader met twice (an eval dataset that is also trained on, passed as the
    same loader object) is evaluated once: the same fixed batches give the same loss. None when
    `stop` cut it short (see evaluate, with `errors`)."""
    parts = loader.val_parts() if hasattr(loader, "val_parts") else [("val", 1.0, loader)] * ("val" in loader.splits)
    done: dict[int, float | None] = {}
    losses: dict[str, float] = {}
    for key, part in [(key, part) for key, _, part in parts] + [(f"eval_{n}", p) for n, p in eval_loaders.items()]:
        if id(part) not in done:
            done[id(part)] = evaluate(model, part, "val", n_batches, amp, stop, errors)
        if done[id(part)] is None:
            return None
        losses[key] = done[id(part)]
    if parts and "val" not in losses:
        total = sum(weight for _, weight, _ in parts)
        losses = {"val": sum(weight * losses[key] for key, weight, _ in parts) / total, **losses}
    return losses
