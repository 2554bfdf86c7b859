"""Training throughput of `mypt train` on the CPU, next to a bare PyTorch loop.

Both train the same model (the demo pipeline's 4 x 128 char model of the modern recipe)
on random tokens with the same batch and optimizer; the bare loop has no data loader,
checkpoints or evaluation, so the gap is mypt's overhead.

    python bench/train_cpu.py --iters 60

Both run in the dtype `mypt train --dtype auto` picks here: bfloat16 autocast of the linear
layers on a CPU with AMX or AVX512-BF16 (attention stays float32), float32 elsewhere.

With --levers, the bare loop alone under each CPU lever the issue of CPU speed asked about,
each next to float32 eager on torch's thread count in the same run: bfloat16 autocast,
torch.compile (inductor's CPU backend; its compile time printed apart), one thread instead of
all; and what evaluation costs at the demo's settings (eval_iters forward batches every
eval_interval steps) as a share of training time.

    python bench/train_cpu.py --levers --iters 40
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

# The demo's model (params.yaml train: the modern recipe; trained here with AdamW, not its Muon)
MODEL = dict(n_layer=4, n_head=4, n_embd=128, block_size=128, dropout=0.0, position="rope", norm="rmsnorm",
             mlp="relu2", qk_norm=True)
BATCH, VOCAB = 16, 65  # the demo's batch


def make_dataset(root: Path, tokens: int = 2_000_000) -> None:
    from mypt.tokenizers.char import CharTokenizer

    (root / "train").mkdir(parents=True)
    (root / "val").mkdir()
    rng = np.random.default_rng(0)
    rng.integers(0, VOCAB, tokens, dtype=np.uint32).tofile(root / "train" / "shard_00000.bin")
    rng.integers(0, VOCAB, tokens // 10, dtype=np.uint32).tofile(root / "val" / "shard_00001.bin")
    CharTokenizer(chars=[chr(32 + i) for i in range(VOCAB - 1)] + ["\n"]).save(root)
    meta = {"format_version": 1, "tokenizer": {"kind": "char", "vocab_size": VOCAB, "eot_id": None}}
    (root / "dataset_metadata.json").write_text(json.dumps(meta))


def auto_is_bf16() -> bool:
    """Whether `mypt train --dtype auto` autocasts on this CPU."""
    from mypt.config import TrainConfig
    from mypt.precision import autocast_dtype

    return autocast_dtype(TrainConfig(), torch.device("cpu")) is not None


def bare_loop(iters: int, compile: bool = False, bf16: bool | None = None, threads: int | None = None,
              stats: dict | None = None) -> float:
    """Tokens/s of a plain training loop (fused AdamW, as mypt uses on the CPU); bf16=None:
    the dtype mypt's auto picks here. `stats` gets the warm-up time (compile time, when
    compiling) and the forward-only time of a batch."""
    from contextlib import nullcontext

    from mypt.model import GPT, GPTConfig

    if bf16 is None:
        bf16 = auto_is_bf16()

    default_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=VOCAB, **MODEL))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    run = torch.compile(model) if compile else model
    amp = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if bf16 else nullcontext
    data = torch.randint(0, VOCAB, (iters + 5, BATCH, MODEL["block_size"] + 1))

    def step(i: int) -> None:
        with amp():
            _, loss = run(data[i, :, :-1].contiguous(), data[i, :, 1:].contiguous())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    try:
        t0 = time.perf_counter()
        for i in range(5):  # warm-up (and compilation)
            step(i)
        warmup = time.perf_counter() - t0
        t0 = time.perf_counter()
        for i in range(5, iters + 5):
            step(i)
        rate = iters * BATCH * MODEL["block_size"] / (time.perf_counter() - t0)
        if stats is not None:
            stats["warmup_s"] = warmup
            with torch.no_grad(), amp():
                t0 = time.perf_counter()
                for i in range(iters // 2):
                    run(data[i, :, :-1].contiguous(), data[i, :, 1:].contiguous())
                stats["forward_s"] = (time.perf_counter() - t0) / (iters // 2)
        return rate
    finally:
        torch.set_num_threads(default_threads)


def levers(iters: int, repeats: int) -> None:
    """Each lever next to the default, alternating runs and keeping each one's best."""
    variants = {"eager, float32, %d threads" % torch.get_num_threads(): {"bf16": False},
                "bfloat16 autocast (attention float32)": {"bf16": True},
                "torch.compile (inductor CPU), float32": {"compile": True, "bf16": False},
                "torch.compile, bfloat16 autocast": {"compile": True, "bf16": True},
                "1 thread, float32": {"threads": 1, "bf16": False}}
    print(f"mypt's --dtype auto here: {'bfloat16 (AMX or AVX512-BF16)' if auto_is_bf16() else 'float32 (neither AMX nor AVX512-BF16)'}")
    best: dict[str, float] = {}
    stats: dict[str, dict] = {name: {} for name in variants}
    for _ in range(repeats):
        for name, kw in variants.items():
            s: dict = {}
            rate = bare_loop(iters, stats=s, **kw)
            if rate > best.get(name, 0):
                best[name], stats[name] = rate, s
    base_name = next(iter(variants))
    base = best[base_name]
    for name in variants:
        extra = f", warm-up incl. compile {stats[name]['warmup_s']:.1f} s" if variants[name].get("compile") else ""
        print(f"{name:40s} {best[name]:10,.0f} tok/s = {best[name] / base:.2f}x{extra}")
    # Evaluation at the demo's settings (params.yaml train: eval_iters 20 every 500 steps), in
    # the dtype mypt's auto picks here.
    auto_name = list(variants)[1] if auto_is_bf16() else base_name
    step_s = BATCH * MODEL["block_size"] / best[auto_name]
    fwd_s = stats[auto_name]["forward_s"]
    for eval_iters, interval in ((20, 500), (200, 250), (20, 100)):
        share = eval_iters * fwd_s / (interval * step_s + eval_iters * fwd_s)
        print(f"evaluation, {eval_iters} batches every {interval} steps: {share:.1%} of training time "
              f"(forward {fwd_s * 1000:.0f} ms, step {step_s * 1000:.0f} ms)")


def mypt_train(root: Path, iters: int) -> float:
    cmd = [sys.executable, "-m", "mypt.cli", "train", "--dataset_dir", str(root), "--model_name", "bench",
           "--checkpoints_dir", str(root / "ckpt"), "--config_file", "small_char", "--device", "cpu",
           "--batch_size", str(BATCH), "--max_iters", str(iters + 10), "--log_interval", "10",
           "--eval_interval", str(iters + 10), "--eval_iters", "1", "--overwrite"]
    from mypt.settings import as_flag

    for k, v in MODEL.items():
        cmd += as_flag(k, v).split()
    # cwd: see bench/prepare.py (a `mypt/` in the working directory would shadow this one)
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=root)
    if done.returncode != 0:
        raise SystemExit(f"mypt train failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    out = done.stdout
    rates = [float(r.replace(",", "")) for r in re.findall(r"([\d,]+) tok/s", out)]
    return float(np.mean(rates[1:]))  # the first interval includes warm-up


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iters", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--levers", action="store_true", help="the bare loop under each CPU lever (see above)")
    args = ap.parse_args()
    if args.levers:
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; model {MODEL}, batch {BATCH}")
        levers(args.iters, args.repeats)
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; model {MODEL}, batch {BATCH}")
    # Alternate the two and keep each one's best: a shared CPU's noise only ever slows a run down.
    ours, bare = [], []
    with tempfile.TemporaryDirectory() as tmp:
        make_dataset(Path(tmp))
        for _ in range(args.repeats):
            ours.append(mypt_train(Path(tmp), args.iters))
            bare.append(bare_loop(args.iters))
    print(f"bare PyTorch loop: {max(bare):10,.0f} tok/s  (runs: {', '.join(f'{b:,.0f}' for b in bare)})")
    print(f"mypt train:        {max(ours):10,.0f} tok/s  (runs: {', '.join(f'{o:,.0f}' for o in ours)}) "
          f"= {max(ours) / max(bare):.0%} of the bare loop")


if __name__ == "__main__":
    main()
