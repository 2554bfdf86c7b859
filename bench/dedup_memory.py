"""Peak memory of dedup at a small --dedup_memory_mb, by the shape of the corpus.

Dedup promises to work within its budget whatever the text: the records of its keys spill
to disk in runs. This prints the peak RSS of dedup alone (its process, workers 1: no pool)
on corpora of the same size:
  - distinct: every line unique (the most keys);
  - one line: one line repeated (every record of one hash);
  - few lines: seven lines repeated in turn;
  - one .gz: distinct lines in one .gz file, which the readers cannot seek into, so the
    clean step reads it as one block and hashes it into one record file.
For each, both entry points: the DVC stage (`dedup()` on the clean step's output, hashing
it back in 4 MiB blocks) and prepare-dataset's (the records hashed as clean wrote the
lines, `Hashing`; `dedup(..., hashed=...)`). The clean step runs first, in a process of
its own, and is not measured. The baseline: the same process importing the same modules
and doing nothing.

    python bench/dedup_memory.py                      # 256 MiB a corpus, --dedup_memory_mb 16
    python bench/dedup_memory.py --mb 64 --dedup_memory_mb 4 --cases one,gz
"""

from __future__ import annotations

import argparse
import filecmp
import gzip
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CASES = {"distinct": "distinct lines", "one": "one line repeated", "few": "seven lines repeated",
         "gz": "distinct lines, one .gz"}

# Run in a fresh interpreter: prints the peak RSS (KiB) of that process alone.
CHILD = """
import resource, sys
from pathlib import Path
from mypt.steps.clean import CleanSettings, clean
from mypt.steps.dedup import DedupSettings, Hashing, dedup
what, work, memory_mb = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
settings = DedupSettings(memory_mb=memory_mb, workers=1)
if what == "clean":
    (work / "hashed").mkdir()
    clean([str(work / "in")], work / "clean", CleanSettings(filter=False, normalize=False, workers=1),
          sink=Hashing(work / "hashed", settings.min_chars))
elif what == "stage":
    dedup(work / "clean", work / "dedup_stage", settings)
elif what == "fused":
    dedup(work / "clean", work / "dedup_fused", settings, hashed=work / "hashed")
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def write_corpus(case: str, path: Path, size: int) -> None:
    """About `size` bytes of lines of about 60 characters (keyed: longer than min_chars)."""
    line_bytes = 61
    n = size // line_bytes
    opener = gzip.open if case == "gz" else open
    with opener(path, "wt", encoding="utf-8", **({"compresslevel": 1} if case == "gz" else {})) as f:
        for start in range(0, n, 100_000):
            if case == "one":
                lines = ["the same sentence of a boilerplate footer, over and over\n"] * min(100_000, n - start)
            elif case == "few":
                lines = [f"boilerplate sentence number {i % 7} of seven, over and over\n"
                         for i in range(start, min(start + 100_000, n))]
            else:
                lines = [f"line {i:012d} of a corpus of distinct lines, all unique\n"
                         for i in range(start, min(start + 100_000, n))]
            f.writelines(lines)


def child(what: str, work: Path, memory_mb: int) -> tuple[int, float]:
    """Peak RSS (MiB) and seconds of one step in a fresh process."""
    t = time.perf_counter()
    out = subprocess.run(["nice", sys.executable, "-c", CHILD, what, str(work), str(memory_mb)], cwd=REPO,
                         check=True, capture_output=True, text=True).stdout
    return int(out.split()[-1]) // 1024, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=int, default=256, help="MiB of text a corpus")
    ap.add_argument("--dedup_memory_mb", type=int, default=16)
    ap.add_argument("--cases", default=",".join(CASES), help=f"of {','.join(CASES)}")
    ap.add_argument("--tmp", default=None, help="scratch directory (default: the system's)")
    args = ap.parse_args()
    base, _ = child("none", Path("."), args.dedup_memory_mb)
    print(f"dedup at --dedup_memory_mb {args.dedup_memory_mb}, {args.mb} MiB a corpus, workers 1")
    print(f"baseline (the interpreter with mypt's modules, doing nothing): {base} MiB")
    print(f"{'corpus':<26} {'entry point':<16} {'peak RSS':>9} {'over baseline':>14} {'seconds':>8}")
    for case in args.cases.split(","):
        with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
            work = Path(tmp)
            (work / "in").mkdir()
            write_corpus(case, work / "in" / ("corpus.txt.gz" if case == "gz" else "corpus.txt"), args.mb << 20)
            child("clean", work, args.dedup_memory_mb)
            # The stage first: the fused dedup removes the record files as it reads them.
            for what, label in (("stage", "dvc stage"), ("fused", "prepare-dataset")):
                rss, seconds = child(what, work, args.dedup_memory_mb)
                print(f"{CASES[case]:<26} {label:<16} {rss:>5} MiB {rss - base:>10} MiB {seconds:>8.1f}", flush=True)
            # Compared a buffer at a time: a child inherits this process's peak RSS (fork, then exec, keeps it).
            same = all(filecmp.cmp(work / "dedup_stage" / p.name, p, shallow=False)
                       for p in (work / "dedup_fused").iterdir())
            assert same, "the two entry points must write the same bytes"
            shutil.rmtree(work / "in")


if __name__ == "__main__":
    main()
