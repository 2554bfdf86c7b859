"""Generation speed over a long sample: tokens/s at its start and at its end.

    python bench/generate.py --model_name checkpoints/base --max_new_tokens 20000

mypt's KV cache prefills half a window again once every half-window after the window fills,
so a step costs the same at token 100 and token 20,000. The baseline in the same run is the
full-window recompute at every step (nanoGPT's way, `use_cache=False`), over fewer tokens.
"""

from __future__ import annotations

import argparse
import time

import torch

from mypt.device import resolve_device
from mypt.generate import TextStream, sample_tokens
from mypt.model import load_model


def rates(model, tokenizer, n: int, use_cache: bool, edge: int) -> tuple[float, float]:
    """tok/s over the first and the last `edge` tokens of an n-token sample (with streaming decode)."""
    idx = torch.tensor([tokenizer.encode("\n")], device=next(model.parameters()).device)
    stream, stamps = TextStream(tokenizer), []
    g = torch.Generator(device=idx.device).manual_seed(0)
    for nxt in sample_tokens(model, idx, n, 0.8, 200, None, g, use_cache):
        stream.push(int(nxt[0]))  # the decode `mypt generate` does
        stamps.append(time.perf_counter())
    return edge / (stamps[edge] - stamps[0]), edge / (stamps[-1] - stamps[-1 - edge])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model_name", required=True, help="checkpoint directory")
    ap.add_argument("--max_new_tokens", type=int, default=20000)
    ap.add_argument("--baseline_tokens", type=int, default=2000)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    model, tokenizer, _ = load_model(args.model_name, resolve_device(args.device))
    print(f"model {args.model_name}: {model.num_params() / 1e6:.2f}M parameters, block {model.config.block_size}, "
          f"{next(model.parameters()).device}")
    edge = 1000
    t0 = time.perf_counter()
    start, end = rates(model, tokenizer, args.max_new_tokens, True, edge)
    total = time.perf_counter() - t0
    print(f"KV cache, {args.max_new_tokens:,} tokens in {total:.1f} s: first {edge} {start:,.0f} tok/s, "
          f"last {edge} {end:,.0f} tok/s (end/start {end / start:.2f})")
    b_edge = min(edge, args.baseline_tokens // 2)
    start, end = rates(model, tokenizer, args.baseline_tokens, False, b_edge)
    print(f"baseline, full-window recompute, {args.baseline_tokens:,} tokens: first {b_edge} {start:,.0f} tok/s, "
          f"last {b_edge} {end:,.0f} tok/s")


if __name__ == "__main__":
    main()
