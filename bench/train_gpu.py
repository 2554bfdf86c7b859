"""GPU training throughput and MFU of mypt's training loop, GPT-2 124M shape, block 1024.

Runs `mypt.train.fit` (the loop behind `mypt train`) with bf16 autocast, torch.compile and
fused AdamW, on synthetic tokens (in-memory loader) and on a sharded dataset on disk, at
batch 12 and 32, and prints tokens/s and MFU = (6N + 12 L H Q T) x tokens/s / 989 TFLOP/s.
Reference (DESIGN.md): nanoGPT on an H200 reaches about 40% MFU at batch 12 and 44% at 32.

    python bench/train_gpu.py                 # needs a CUDA GPU
    python bench/train_gpu.py --smoke         # a tiny CPU run that checks the script itself
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from mypt.data import GPTDataLoader
from mypt.model import GPT, GPTConfig
from mypt.train import PEAK_FLOPS, TrainConfig, fit

GPT2_124M = dict(n_layer=12, n_head=12, n_embd=768, block_size=1024, vocab_size=50257, dropout=0.0)


def write_shards(root: Path, tokens: int, per_shard: int, vocab: int) -> None:
    import json

    from mypt.tokenizers.gpt2 import GPT2Tokenizer

    (root / "train").mkdir(parents=True)
    (root / "val").mkdir()
    rng = np.random.default_rng(0)
    for i in range(tokens // per_shard):
        rng.integers(0, vocab, per_shard, dtype=np.uint32).tofile(root / "train" / f"shard_{i:05d}.bin")
    rng.integers(0, vocab, per_shard, dtype=np.uint32).tofile(root / "val" / f"shard_{i + 1:05d}.bin")
    GPT2Tokenizer().save(root)
    (root / "dataset_metadata.json").write_text(json.dumps(
        {"format_version": 1, "tokenizer": {"kind": "gpt2", "vocab_size": 50257, "eot_id": 50256}}))


def run(model_kw: dict, batch: int, iters: int, device: str, compile_: bool, dataset: Path | None) -> tuple[float, float]:
    from mypt.tokenizers.gpt2 import GPT2Tokenizer

    torch.manual_seed(0)
    cfg = GPTConfig(**model_kw)
    model = GPT(cfg).to(device)
    tcfg = TrainConfig(batch_size=batch, max_iters=iters, eval_interval=10**9, eval_iters=1, log_interval=10,
                       warmup_iters=10, compile=compile_, device=device)
    loader_cfg = SimpleNamespace(batch_size=batch, block_size=cfg.block_size, device=device)
    tok = GPT2Tokenizer()
    if dataset is None:
        tokens = np.random.default_rng(0).integers(0, cfg.vocab_size, 50_000_000 if device == "cuda" else 200_000,
                                                   dtype=np.uint32)
        loader = GPTDataLoader(loader_cfg, tok, tokens=tokens)
    else:
        loader = GPTDataLoader(loader_cfg, tok, dataset_dir=dataset)
    train_model = torch.compile(model) if compile_ else model
    lines: list[str] = []
    t0 = time.perf_counter()
    fit(train_model, loader, config=tcfg, log=lines.append)
    rates = [float(r.replace(",", "")) for line in lines for r in re.findall(r"([\d,]+) tok/s", line)]
    steady = rates[len(rates) // 2:] or rates  # the first half includes compilation and warm-up
    tok_s = float(np.median(steady))
    print(f"    ({time.perf_counter() - t0:.0f} s wall, {len(rates)} log intervals)")
    return tok_s, model.flops_per_token() * tok_s / PEAK_FLOPS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--batches", default="12,32")
    ap.add_argument("--smoke", action="store_true", help="tiny model on the CPU: checks the script, not the GPU")
    args = ap.parse_args()
    if args.smoke:
        model_kw, device, compile_, iters = dict(GPT2_124M, n_layer=2, n_embd=64, n_head=2, block_size=64), "cpu", False, 20
    elif torch.cuda.is_available():
        model_kw, device, compile_, iters = GPT2_124M, "cuda", True, args.iters
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}")
    else:
        raise SystemExit("no CUDA GPU here: run on a GPU machine, or pass --smoke to check the script on the CPU")
    print(f"model {model_kw}, bf16 autocast: {device == 'cuda'}, compile: {compile_}, {iters} iterations")
    with tempfile.TemporaryDirectory() as tmp:
        shards = Path(tmp) / "ds"
        write_shards(shards, 20_000_000 if device == "cuda" else 400_000, 1_000_000 if device == "cuda" else 100_000,
                     model_kw["vocab_size"])
        for batch in (int(b) for b in args.batches.split(",")):
            for source, ds in (("synthetic", None), ("shards", shards)):
                tok_s, mfu = run(model_kw, batch, iters, device, compile_, ds)
                print(f"batch {batch:3d} x {model_kw['block_size']} | {source:9s} | {tok_s:12,.0f} tok/s | MFU {mfu:6.1%}")


if __name__ == "__main__":
    main()
