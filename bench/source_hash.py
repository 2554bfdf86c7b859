"""The hash each source records, before and after it was spread over the clean step's blocks.

A dataset records a hash of every source's bytes (what --append_to and prepare-dataset know an
input by). A plain sha256 (`--before`, the tree of a commit that recorded it) is one pass over
the whole input in one task: on N cores the clean step's wall time is at least that task, about
1 s a GB. `sha256_pieces` (`--after`) hashes 4 MiB pieces in the block tasks that read them.

Both trees' clean step runs on one ~1 GB .txt file, in a subprocess each (the tree's `mypt`
first on sys.path), twice:
  - its tasks one after another, each timed: the sum (the CPU work) and the longest task, which
    bound the wall time on N workers from below: max(sum / N, longest), printed for a few N;
  - with --workers (a real pool): the wall time here.
The file is read once first, so both find it in the page cache. The rounds alternate (--repeat).

    python bench/source_hash.py --before d110601~1 --after HEAD --size_mb 1024 --workers 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent

RUN = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
import mypt, mypt.steps.clean as c
assert mypt.__file__.startswith(sys.argv[1]), mypt.__file__
mode, source, out, workers = sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
times = []

def timed_map(fn, tasks, how, desc, *args, **kwargs):
    results = []
    for task in tasks:
        start = time.perf_counter()
        results.append(fn(task))
        times.append(time.perf_counter() - start)
    return results

if mode == "tasks":
    c.parallel_map = timed_map
start = time.perf_counter()
manifest = c.clean([source], __import__("pathlib").Path(out), c.CleanSettings(workers=workers))
wall = time.perf_counter() - start
recorded = {k: v for k, v in manifest["sources"][0].items() if k.startswith("sha256")}
print(json.dumps({"wall": wall, "times": times, "recorded": recorded}))
"""


def tree(rev: str, into: Path) -> Path:
    """The `mypt` package of commit `rev` under `into` (git archive)."""
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", rev, "mypt"], cwd=REPO, check=True, capture_output=True).stdout
    with tarfile.open(fileobj=__import__("io").BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def corpus(path: Path, size_mb: int) -> None:
    """~size_mb MB of lines of random lower-case words (8 MiB of them repeated)."""
    rng = np.random.default_rng(0)
    letters = rng.integers(97, 123, 8 << 20, dtype=np.uint8)
    letters[rng.random(letters.size) < 1 / 6] = 32  # words of about 5 letters
    letters[rng.random(letters.size) < 1 / 80] = 10  # lines of about 80 bytes
    block = letters.tobytes()
    with open(path, "wb") as f:
        for _ in range(max(1, (size_mb << 20) // len(block))):
            f.write(block)
        f.write(b"\n")


def run(code_tree: Path, mode: str, source: Path, out: Path, workers: int) -> dict:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run([sys.executable, "-c", RUN, str(code_tree), mode, str(source), str(out), str(workers)],
                          capture_output=True, text=True, env=env)
    if done.returncode:
        raise SystemExit(done.stderr)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", required=True, help="a commit whose sources record a plain sha256")
    parser.add_argument("--after", default="HEAD")
    parser.add_argument("--size_mb", type=int, default=1024)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=2, help="rounds of before and after, in turn (a shared "
                        "machine's load moves between runs: compare the rounds' best)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mypt_bench_hash_") as tmp:
        tmp = Path(tmp)
        source = tmp / "one.txt"
        corpus(source, args.size_mb)
        with open(source, "rb") as f:  # into the page cache: both runs read it from memory
            while f.read(1 << 24):
                pass
        size = source.stat().st_size
        print(f"one .txt file of {size / 1e9:.2f} GB; clean step; this machine: {os.cpu_count()} cores")
        trees = {label: tree(rev, tmp / label) for label, rev in (("before", args.before), ("after", args.after))}
        for i, (label, rev) in enumerate([("before", args.before), ("after", args.after)] * args.repeat):
            code = trees[label]
            tasks = run(code, "tasks", source, tmp / f"{label}_tasks_{i}", 1)
            pool = run(code, "pool", source, tmp / f"{label}_pool_{i}", args.workers)
            t = np.array(tasks["times"])
            bounds = "  ".join(f"N={n}: {max(t.sum() / n, t.max()):6.2f} s" for n in (2, 16, 64))
            print(f"{label:6} ({rev}): {len(t)} tasks, sum {t.sum():6.2f} s, longest {t.max():5.2f} s "
                  f"(median {np.median(t):.3f} s); wall bound {bounds}; wall with --workers {args.workers}: "
                  f"{pool['wall']:6.2f} s; records {sorted(tasks['recorded'])}")


if __name__ == "__main__":
    main()
