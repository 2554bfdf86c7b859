"""Start-up: how long after `mypt train` starts does the first training step finish, on a
dataset of many shards, next to importing torch alone (the floor) in the same run.

    python bench/startup.py --shards 1000

The first step is timed by the `iter 1:` line (`--log_interval 1`), of a tiny model. Three
floors are measured in the same run: importing torch; importing torch then building an
AdamW optimizer (torch's Optimizer imports torch._dynamo on its first param group, about a
second here, which any PyTorch training pays); and the same with the cyclic garbage
collector paused, as mypt's start-up runs (mypt.startup: each full collection during these
imports walks millions of objects). What remains above the last is mypt's own start-up: its
imports, reading the dataset (one stat per shard), building the model, the step-0
evaluation and checkpoint, one step. The runs are interleaved (one of each per round, so
a change in the machine's load hits all alike); medians of --repeats rounds. Run it with
PYTHONPATH set to the checkout to measure.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def first_line_time(cmd: list[str], marker: str, cwd: Path) -> float:
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        if line.startswith(marker):
            elapsed = time.perf_counter() - start
            proc.wait()
            return elapsed
    proc.wait()
    raise SystemExit(f"no line starting with {marker!r} from {' '.join(cmd)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="mypt-startup-"))
    words = ("the king and queen of the realm spoke to the people about the harvest " * 40).split()
    text = "\n".join(" ".join(words[i:i + 12]) for i in range(0, len(words), 12))
    tokens_per_shard = 2000
    (tmp / "corpus.txt").write_text((text + "\n") * (args.shards * tokens_per_shard // len(text) + 1))
    subprocess.run([sys.executable, "-m", "mypt.cli", "prepare-dataset", "--input_files", "corpus.txt",
                    "--out_dir", "ds", "--tokenization", "char", "--tokens_per_shard", str(tokens_per_shard),
                    "--no_dedup", "--val_fraction", "0.01"], cwd=tmp, check=True, capture_output=True)
    n = len(list((tmp / "ds").rglob("shard_*.bin")))
    adamw = "import torch; torch.optim.AdamW(torch.nn.Linear(2, 2).parameters()); "
    paused = "import gc; gc.disable(); " + adamw + "gc.freeze(); gc.enable(); "
    runs = {
        "torch": lambda i: ([sys.executable, "-c", "import torch; print('ok', flush=True)"], "ok"),
        "bare": lambda i: ([sys.executable, "-c", adamw + "print('ok', flush=True)"], "ok"),
        "bare_gc": lambda i: ([sys.executable, "-c", paused + "print('ok', flush=True)"], "ok"),
        "train": lambda i: ([sys.executable, "-m", "mypt.cli", "train", "--dataset_dir", "ds", "--model_name", f"m{i}",
                             "--checkpoints_dir", "ck", "--config_file", "tiny", "--max_iters", "2", "--log_interval",
                             "1", "--eval_interval", "1000", "--eval_iters", "1", "--device", "cpu"], "iter 1:"),
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    for i in range(args.repeats):
        for name, run in runs.items():
            times[name].append(first_line_time(*run(i), tmp))
    torch_s, adamw_s, adamw_gc_s, train_s = (statistics.median(times[name]) for name in runs)
    print(f"dataset: {n:,} shards in {tmp / 'ds'}")
    print(f"import torch alone: {torch_s:.2f} s (median of {args.repeats})")
    print(f"import torch + build AdamW (bare PyTorch start): {adamw_s:.2f} s")
    print(f"the same, garbage collector paused (mypt's way): {adamw_gc_s:.2f} s")
    print(f"mypt train, first step done: {train_s:.2f} s (median of {args.repeats}): "
          f"{train_s - torch_s:+.2f} s over the torch import, {train_s - adamw_s:+.2f} s over the bare start, "
          f"{train_s - adamw_gc_s:+.2f} s over the bare start with the collector paused")


if __name__ == "__main__":
    main()
