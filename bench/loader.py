"""GPTDataLoader on thousands of shards, next to a plain one-file memmap reader.

For each dataset size (shard count), in a fresh process each so that RSS is clean:
  - start-up time and RSS of GPTDataLoader;
  - batches/s of GPTDataLoader and of nanoGPT's reader (np.memmap of one file holding the
    same tokens, recreated every batch, random offsets) on the same data;
  - RSS after many batches: the loader's stays flat with the dataset's size.

    python bench/loader.py --shards 200,2000 --tokens_per_shard 100000 --batches 3000
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import psutil

BATCH, BLOCK = 32, 1024


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def make_dataset(root: Path, shards: int, tokens_per_shard: int) -> None:
    """A gpt2 dataset of random ids, and the same tokens as one file for the baseline."""
    from mypt.tokenizers.gpt2 import GPT2Tokenizer

    rng = np.random.default_rng(0)
    (root / "train").mkdir(parents=True)
    with open(root / "all.bin", "wb") as whole:
        for i in range(shards):
            tokens = rng.integers(0, 50257, tokens_per_shard, dtype=np.uint32)
            tokens.tofile(root / "train" / f"shard_{i:05d}.bin")
            tokens.tofile(whole)
    GPT2Tokenizer().save(root)
    meta = {"format_version": 1, "dtype": "uint32", "tokenizer": {"kind": "gpt2", "vocab_size": 50257, "eot_id": 50256},
            "tokens_per_shard": tokens_per_shard, "total_tokens": shards * tokens_per_shard}
    (root / "dataset_metadata.json").write_text(json.dumps(meta))


def measure_loader(root: str, batches: int, out) -> None:
    from mypt.data import GPTDataLoader
    from mypt.tokenizers import Tokenizer

    base = rss_mb()
    t0 = time.perf_counter()
    loader = GPTDataLoader(SimpleNamespace(batch_size=BATCH, block_size=BLOCK), Tokenizer.load(root), dataset_dir=root)
    startup = time.perf_counter() - t0
    after_start = rss_mb()
    loader.get_batch("train")
    t0 = time.perf_counter()
    for _ in range(batches):
        loader.get_batch("train")
    rate = batches / (time.perf_counter() - t0)
    out.put({"startup_s": startup, "rss_start_mb": after_start - base, "batches_per_s": rate,
             "rss_after_mb": rss_mb() - base})


def measure_memmap(root: str, batches: int, out) -> None:
    import torch

    base = rss_mb()
    path = Path(root) / "all.bin"
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for _ in range(batches):
        data = np.memmap(path, dtype=np.uint32, mode="r")  # nanoGPT recreates it every batch
        ix = rng.integers(0, len(data) - BLOCK - 1, BATCH)
        x = torch.from_numpy(np.stack([data[i:i + BLOCK] for i in ix]).astype(np.int64))
        y = torch.from_numpy(np.stack([data[i + 1:i + 1 + BLOCK] for i in ix]).astype(np.int64))
        del data, x, y
    rate = batches / (time.perf_counter() - t0)
    out.put({"batches_per_s": rate, "rss_after_mb": rss_mb() - base})


def in_fresh_process(fn, *args) -> dict:
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=fn, args=(*args, q))
    p.start()
    result = q.get()
    p.join()
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", default="200,2000")
    ap.add_argument("--tokens_per_shard", type=int, default=100_000)
    ap.add_argument("--batches", type=int, default=3000)
    args = ap.parse_args()
    print(f"batch {BATCH} x block {BLOCK}; {args.batches} batches; RSS is the growth over a bare process")
    print(f"{'shards':>7} {'tokens':>12} | {'startup':>8} {'rss@start':>9} {'batch/s':>8} {'rss@end':>8} | "
          f"{'memmap batch/s':>14} {'memmap rss@end':>14}")
    for n in (int(s) for s in args.shards.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            make_dataset(Path(tmp), n, args.tokens_per_shard)
            ours = in_fresh_process(measure_loader, tmp, args.batches)
            base = in_fresh_process(measure_memmap, tmp, args.batches)
        print(f"{n:7d} {n * args.tokens_per_shard:12,d} | {ours['startup_s']:7.3f}s {ours['rss_start_mb']:7.1f}MB "
              f"{ours['batches_per_s']:8.0f} {ours['rss_after_mb']:6.1f}MB | {base['batches_per_s']:14.0f} "
              f"{base['rss_after_mb']:12.1f}MB")


if __name__ == "__main__":
    main()
