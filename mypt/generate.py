"""Sampling: temperature, top-k and top-p, with a KV cache.

While the sequence fits in block_size each step feeds one token and reuses the cached keys
and values of the others. Beyond block_size the model can only see the last block_size
tokens, with positions counted from the window's start, so the cache cannot be reused: the
window is recomputed each step (as nanoGPT does every step).
"""

from __future__ import annotations

from typing import Callable, Iterator

import torch

from mypt.errors import TokenizerError
from mypt.model import GPT, KVCache


def _filter_logits(logits: torch.Tensor, top_k: int | None, top_p: float | None) -> torch.Tensor:
    if top_k:
        kth = torch.topk(logits, min(top_k, logits.size(-1))).values[..., -1, None]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        # Drop a token when the tokens ranked before it already reach top_p.
        drop = probs.cumsum(-1) - probs > top_p
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits


def _encode_prompt(tokenizer, prompt: str) -> list[int]:
    try:
        return tokenizer.encode(prompt)
    except TokenizerError:
        bad = [c for c in sorted(set(prompt)) if not _encodes(tokenizer, c)]
        raise TokenizerError(f"--prompt: the characters {bad} are not in the model's {tokenizer.kind} vocabulary "
                             f"of {tokenizer.vocab_size} characters; leave them out of --prompt (the model "
                             "knows only the characters of the corpus it was trained on)") from None


def _encodes(tokenizer, char: str) -> bool:
    try:
        tokenizer.encode(char)
    except TokenizerError:
        return False
    return True


@torch.no_grad()
def sample_tokens(model: GPT, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                  top_k: int | None = None, top_p: float | None = None, generator: torch.Generator | None = None,
                  use_cache: bool = True) -> Iterator[torch.Tensor]:
    """Yield (B,) next-token tensors, one step at a time. idx: (B, T) prompt ids."""
    model.eval()
    cfg = model.config
    cache = None
    for _ in range(max_new_tokens):
        if use_cache and idx.size(1) <= cfg.block_size:
            if cache is None:
                cache = KVCache(cfg, idx.size(0), idx.device, next(model.parameters()).dtype)
                logits, _ = model(idx, cache=cache)  # prefill
            else:
                logits, _ = model(idx[:, -1:], cache=cache)
        else:
            logits, _ = model(idx[:, -cfg.block_size:])
        logits = logits[:, -1, :cfg.vocab_size].float()  # padded ids are never sampled
        if temperature == 0:
            nxt = logits.argmax(-1)
        else:
            probs = torch.softmax(_filter_logits(logits / temperature, top_k, top_p), dim=-1)
            nxt = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
        idx = torch.cat([idx, nxt[:, None]], dim=1)
        if cache is not None and idx.size(1) > cfg.block_size:
            cache = None  # the window now slides: recompute from here on
            use_cache = False
        yield nxt


def generate(model: GPT, tokenizer, prompt: str, max_new_tokens: int = 200, temperature: float = 0.8,
             top_k: int | None = 200, top_p: float | None = None, seed: int | None = 1337, num_samples: int = 1,
             on_text: Callable[[int, str], None] | None = None, use_cache: bool = True) -> list[str]:
    """Sample `num_samples` continuations of `prompt`; `on_text(sample, piece)` receives
    text as it is produced (streaming). Returns the full texts, prompt included."""
    device = next(model.parameters()).device
    ids = _encode_prompt(tokenizer, prompt) if prompt else []
    if not ids:
        if tokenizer.eot_id is None:
            ids = tokenizer.encode("\n")
        else:
            ids = [tokenizer.eot_id]
    generator = torch.Generator(device=device)
    if seed is not None:
        generator.manual_seed(seed)
    texts = []
    for i in range(num_samples):
        idx = torch.tensor([ids], dtype=torch.long, device=device)
        out: list[int] = []
        shown = ""
        for nxt in sample_tokens(model, idx, max_new_tokens, temperature, top_k, top_p, generator, use_cache):
            token = int(nxt[0])
            if tokenizer.eot_id is not None and token == tokenizer.eot_id:
                break
            out.append(token)
            text = tokenizer.decode(out)
            # A multi-byte character may span tokens: only print once it decodes cleanly.
            if on_text is not None and not text.endswith("\ufffd"):
                on_text(i, text[len(shown):])
                shown = text
        texts.append(prompt + tokenizer.decode(out))
    return texts
