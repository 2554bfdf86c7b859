"""`mypt prepare-dataset` (and, with --stages, the DVC stages run by hand) on N tiny .txt files:
the per-file cost of a corpus that comes as one small file per document.

Each input file holds 1-3 short lines (20-120 bytes in all), in folders of 1,000 files (as a
crawl or a dump of documents comes). For each N and each command, one line of:
  - seconds (wall) and ms per file; CPU ms per file (user + system of every process: on a shared
    machine a steadier figure than the wall time);
  - peak RSS of the command's largest process (getrusage of the children: the parent or one
    worker) in MiB, and that peak less the baseline's (a 50-file run: start-up and imports),
    per 1,000 files (the slope: what grows with the count of sources);
  - work space: the peak, sampled every 0.1 s, of the bytes on disk (st_blocks) and the files
    of the work folder (prepare-dataset's hidden `.OUT.work` beside OUT; the stages: every
    intermediate output), per input file;
  - output: bytes on disk and files of the dataset directory, per input file;
  - sent: the bytes the command's process pickled for its worker processes (tasks, and what
    travels with them: a tokenizer's state went with every chunk of tasks), per input file.

    python bench/tiny_files.py                            # 2,000 and 10,000 files, prepare-dataset
    python bench/tiny_files.py --files 20000,40000 --workers 1
    python bench/tiny_files.py --files 10000 --stages     # also clean, dedup, vocab, tokenize, shard, split
    python bench/tiny_files.py --files 10000 --repo ../before   # another checkout's mypt, same inputs

--tokenization char by default (the vocab is built from the corpus: no tiktoken download);
--tokenization hf: GPT-2's tokenizer.json (6 MB, converted from the r50k vocabulary mypt installs;
transformers needed), as hf:PATH.
The inputs are written once per N into --dir (default: a temporary folder) and removed after.

Measured (2 workers, a shared 2-core machine), prepare-dataset: 10,000 files, char: 1.9 ms (2.6 ms
of CPU) a file, peak +4.0 MiB per 1,000 files (+6.3 while dedup read each tiny file's records into
a batch-sized array); 2,000 files, hf: 8.6 s (70.9 s while each task rendered the 6 MB tokenizer.json
to key the worker's tokenizer). Sent, hf: 0.5 kB a file for 2,000 files (204.9 kB while the tokenizer's
state went with every chunk of tasks: 410 MB pickled), 1.9 kB for 50 (6.3 MB: one chunk a file); its
peak 249 MiB (261).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from pathological import disk_use  # (this folder is on sys.path when a bench runs as a script)

WORDS = "the quick brown fox jumps over a lazy dog while seven wizards quietly hex zebras".split()
BASELINE_FILES = 50
OUTPUT = {"tokenize": "tokens", "shard": "shards", "split": "dataset"}  # a stage's output folder (else its name)

# Peak RSS of the largest process of a command (ru_maxrss of the children waited for: the
# command and, through it, its workers), in KiB on Linux, and their CPU seconds (user + system).
_MEASURE = ("import resource, subprocess, sys, json; rc = subprocess.run(sys.argv[1:], capture_output=True, "
            "text=True); u = resource.getrusage(resource.RUSAGE_CHILDREN); print(json.dumps([rc.returncode, "
            "(rc.stderr + rc.stdout).strip()[-300:], u.ru_maxrss, u.ru_utime + u.ru_stime]))")
# The mypt CLI, counting the bytes its process pickles for its workers (the pool's call queue
# pickles with ForkingPickler.dumps) into the file $MYPT_BENCH_SENT at exit.
_CLI = ("import atexit, os, sys, multiprocessing.reduction as r; from mypt.cli import main; sent = [0]; "
        "dumps = r.ForkingPickler.dumps.__func__; "
        "r.ForkingPickler.dumps = classmethod(lambda c, o, *a: sent.append(len(b := dumps(c, o, *a))) or b); "
        "atexit.register(lambda: open(os.environ['MYPT_BENCH_SENT'], 'w').write(str(sum(sent)))); "
        "sys.argv[0] = 'mypt'; main()")


def make_corpus(top: Path, files: int, seed: int = 0) -> int:
    """`files` .txt files of 1-3 lines (a few words each, every line distinct, so dedup drops
    none), 1,000 to a folder. Returns their bytes."""
    rng, total = random.Random(seed), 0
    for i in range(files):
        folder = top / f"{i // 1000:04d}"
        if i % 1000 == 0:
            folder.mkdir(parents=True, exist_ok=True)
        lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 7))) + f" {i}.{j}"
                 for j in range(rng.randint(1, 3))]
        data = ("\n".join(lines) + "\n").encode()
        (folder / f"doc{i:07d}.txt").write_bytes(data)
        total += len(data)
    return total


class Watch:
    """The peak disk use of the folders `pick()` returns, sampled every `every` s in a thread."""

    def __init__(self, pick, every: float = 0.1):
        self.pick, self.every, self.peak = pick, every, (0, 0)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._done.wait(self.every):
            self._sample()

    def _sample(self) -> None:
        size = files = 0
        for top in self.pick():
            s, f = disk_use(top)
            size, files = size + s, files + f
        self.peak = max(self.peak, (size, files))

    def __enter__(self) -> "Watch":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()
        self._sample()  # what is left (the stages' outputs)


def measure(cmd: list[str], cwd: Path, env: dict) -> dict:
    """`cmd`'s figures; one that is `mypt.cli`'s runs through _CLI, which counts the bytes sent."""
    counted = cmd[1:3] == ["-m", "mypt.cli"]  # (a stage script's are not counted)
    if counted:
        cmd = [cmd[0], "-c", _CLI, *cmd[3:]]
    with tempfile.NamedTemporaryFile("r") as sent:
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", _MEASURE, *cmd], capture_output=True, text=True, check=True,
                              cwd=cwd, env={**env, "MYPT_BENCH_SENT": sent.name})
        wall = time.perf_counter() - start
        rc, said, peak_kib, cpu = json.loads(done.stdout)
        if rc != 0:
            raise SystemExit(f"{' '.join(cmd)}: exit {rc}: {said}")
        return {"wall": wall, "cpu": cpu, "peak_mib": peak_kib / 1024, "sent": int(sent.read()) if counted else None}


def run_prepare(corpus: Path, work: Path, repo: Path, env: dict, flags: list[str]) -> dict:
    out = work / "out"
    hidden = lambda: [p for p in work.iterdir() if p.name.startswith(".")]  # noqa: E731 (.out.work, .out.lock)
    with Watch(hidden) as watch:
        r = measure([sys.executable, "-m", "mypt.cli", "prepare-dataset", "--input_files", str(corpus),
                     "--out_dir", str(out), *flags], repo, env)
    r["work"] = watch.peak
    r["out"] = disk_use(out)
    shutil.rmtree(out)
    return r


def run_stages(corpus: Path, work: Path, repo: Path, env: dict, workers: int, tokenization: str) -> dict[str, dict]:
    """The DVC stages by hand, as dvc.yaml calls them (one corpus); each stage's output stays
    until the end (the work space is their sum, as DVC keeps them)."""
    d = work / "stages"
    d.mkdir()
    w = ["--workers", str(workers)]
    stage = lambda name: [sys.executable, str(repo / "stages" / f"{name}.py")]  # noqa: E731
    commands = {
        "clean": stage("clean") + ["--input_files", str(corpus), "--out_dir", str(d / "clean"),
                                   "--stats", str(d / "clean.json"), *w],
        "dedup": stage("dedup") + ["--in_dir", str(d / "clean"), "--out_dir", str(d / "dedup"),
                                   "--stats", str(d / "dedup.json"), *w],
        "vocab": stage("vocab") + ["--in_dir", str(d / "dedup"), "--out_dir", str(d / "vocab"),
                                   "--tokenization", tokenization],
        "tokenize": stage("tokenize_corpus") + ["--in_dir", str(d / "dedup"), "--tokenizer_dir", str(d / "vocab"),
                                                "--out_dir", str(d / "tokens"), "--stats", str(d / "tok.json"), *w],
        "shard": stage("shard") + ["--in_dir", str(d / "tokens"), "--out_dir", str(d / "shards")],
        "split": stage("split") + ["--in_dir", str(d / "shards"), "--out_dir", str(d / "dataset"),
                                   "--stats", str(d / "split.json")],
    }
    results = {}
    for name, cmd in commands.items():
        with Watch(lambda: [d]) as watch:
            results[name] = measure(cmd, repo, env)
        results[name]["work"] = watch.peak
        results[name]["out"] = disk_use(d / OUTPUT.get(name, name))
    shutil.rmtree(d)
    return results


def row(label: str, files: int, r: dict, base_mib: float | None) -> str:
    slope = f"{(r['peak_mib'] - base_mib) / files * 1e3:>9.2f}" if base_mib is not None and files > 1000 else \
        f"{'':>9}"
    return (f"{label:<16}{files:>9,}{r['wall']:>9.1f}{r['wall'] / files * 1e3:>9.2f}{r['cpu'] / files * 1e3:>9.2f}"
            f"{r['peak_mib']:>9.0f}{slope}"
            f"{r['work'][0] / files / 1e3:>11.1f}{r['work'][1] / files:>10.1f}"
            f"{r['out'][0] / files / 1e3:>10.2f}{r['out'][1]:>10,}"
            + (f"{r['sent'] / files / 1e3:>10.1f}" if r["sent"] is not None else ""))


def gpt2_tokenizer_json(path: Path, repo: Path, env: dict) -> Path:
    """GPT-2's tokenizer as a tokenizer.json at `path`, written by `repo`'s mypt (export-hf's converter)."""
    code = ("import sys; from mypt.hf_export import gpt2_hf_tokenizer; from mypt.tokenizers import make_tokenizer; "
            "gpt2_hf_tokenizer(make_tokenizer('gpt2')).save(sys.argv[1])")
    subprocess.run([sys.executable, "-c", code, str(path)], check=True, cwd=repo, env=env)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", default="2000,10000", help="input file counts, comma-separated (default 2000,10000)")
    ap.add_argument("--workers", type=int, default=2, help="--workers of every command (default 2)")
    ap.add_argument("--tokenization", default="char",
                    help="--tokenization (default char; hf: GPT-2's as a tokenizer.json)")
    ap.add_argument("--stages", action="store_true", help="also run the DVC stages by hand (clean .. split)")
    ap.add_argument("--no_prepare", action="store_true", help="skip prepare-dataset (with --stages)")
    ap.add_argument("--dir", type=Path, default=None, help="where inputs and outputs go (default: a temporary one)")
    ap.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[1],
                    help="the checkout whose mypt runs (default: this one)")
    args = ap.parse_args()
    repo = args.repo.resolve()
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    counts = [int(n) for n in args.files.split(",")]
    print(f"mypt of {repo}, --workers {args.workers}, --tokenization {args.tokenization}; "
          f"slope: (peak - the {BASELINE_FILES}-file run's) per 1,000 files")
    print(f"{'command':<16}{'files':>9}{'wall s':>9}{'ms/file':>9}{'cpu ms/f':>9}{'peak MiB':>9}{'MiB/1k':>9}"
          f"{'work kB/f':>11}{'work f/f':>10}{'out kB/f':>10}{'out files':>10}{'sent kB/f':>10}")
    base: dict[str, float] = {}
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="tiny_files.") as tmp:
        tokenization = args.tokenization if args.tokenization != "hf" else \
            f"hf:{gpt2_tokenizer_json(Path(tmp) / 'gpt2_tokenizer.json', repo, env)}"
        flags = ["--workers", str(args.workers), "--tokenization", tokenization]
        for files in [BASELINE_FILES, *counts]:
            work = Path(tmp) / f"n{files}"
            corpus = work / "corpus"
            make_corpus(corpus, files)
            if not args.no_prepare:
                r = run_prepare(corpus, work, repo, env, flags)
                base.setdefault("prepare", r["peak_mib"])
                print(row("prepare-dataset", files, r, base["prepare"] if files != BASELINE_FILES else None),
                      flush=True)
            if args.stages:
                for name, r in run_stages(corpus, work, repo, env, args.workers, tokenization).items():
                    base.setdefault(name, r["peak_mib"])
                    print(row(f"  stage {name}", files, r, base[name] if files != BASELINE_FILES else None),
                          flush=True)
            shutil.rmtree(work)


if __name__ == "__main__":
    main()
