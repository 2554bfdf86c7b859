"""Peak memory of `mypt prepare-dataset`, and of its reading layer alone (the clean stage,
stages/clean.py), on inputs whose lines are not ordinary, next to a file of ordinary lines of
the same size (the baseline, in the same run).

Each input is MB MiB of text plus a few ordinary lines at its end (so that something is left
to tokenize once the line filter has dropped what it drops):
  - lines:        ordinary lines of ~60 bytes (the baseline);
  - one-line:     one line, no newline: dropped as it is read (the filter's too_long), never held;
  - one-line --no_filter: the same, refused (an error naming file:line and its size);
  - cr-only:      \\r and nothing else (blank lines once normalized: cut at lone \\r);
  - old-mac:      ordinary lines ended by \\r;
  - zst-lines:    one ordinary line repeated, as .txt.zst (compresses ~1000x);
  - zst-one-line: one letter repeated, one line, as .txt.zst (a zstd "bomb": ~30,000x).
  - paragraphs:   lines of ~190 bytes, each followed by a blank line (--no_dedup: the tokenize
                  step cuts the source at the blank lines; it was one block, encoded whole);
  - cjk-lines:    Chinese lines (--no_dedup: cut at newlines between non-ASCII characters).

For each command: the peak RSS of its largest process (getrusage of the children: the parent
or one worker) and its ratio to the baseline's, the wall time, and the outcome (ok, or the
error's first words). Inputs are written to a temporary directory, each removed after its runs.
--repo runs another checkout's mypt on the same inputs (a before/after comparison).

    python bench/long_lines.py --mb 256 --steps clean
    python bench/long_lines.py --mb 16                 # clean and prepare-dataset
    python bench/long_lines.py --mb 16 --repo ../before   # the same, with the code of another checkout
    python bench/long_lines.py --mb 128 --steps clean --cases lines,one-line,zst-one-line

The steps after clean read its output in blocks of their own: a clean output of blank lines
only (cr-only) or of one long line (--no_filter) is cut where the tokenizer allows, so there
prepare-dataset's peak is the tokenize step's, not the reader's.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LINE = b"The quick brown fox jumps over the lazy dog, and then sleeps.\n"  # 62 bytes
PARAGRAPH = LINE[:-1] * 3 + b"\n\n"  # a paragraph, then a blank line
CJK_LINE = "中文的句子，这是一行普通的文字。\n".encode()
TAIL = b"\n" + b"A few ordinary lines end the file, so that something is left.\n" * 20
CHUNK = 1 << 20

# Peak RSS of the largest process of a command (ru_maxrss of the children waited for: the
# command and, through it, its workers), in KiB on Linux.
_MEASURE = ("import resource, subprocess, sys, json; rc = subprocess.run(sys.argv[1:], capture_output=True, "
            "text=True); print(json.dumps([rc.returncode, (rc.stderr + rc.stdout).strip()[-300:], "
            "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss]))")


def write(path: Path, size: int, unit: bytes, tail: bytes = TAIL) -> Path:
    """`size` bytes of `unit` repeated, then `tail`; compressed when the name ends in .zst."""
    block = unit * max(1, CHUNK // len(unit))
    if path.suffix == ".zst":
        import zstandard

        with open(path, "wb") as raw, zstandard.ZstdCompressor().stream_writer(raw) as f:
            _fill(f, size, block, tail)
    else:
        with open(path, "wb") as f:
            _fill(f, size, block, tail)
    return path


def _fill(f, size: int, block: bytes, tail: bytes) -> None:
    left = size
    while left > 0:
        piece = block[:left]
        f.write(piece)
        left -= len(piece)
    f.write(tail)


CASES = [  # (name, file name, unit repeated, extra flags)
    ("lines", "lines.txt", LINE, []),
    ("one-line", "one.txt", b"x", []),
    ("one-line --no_filter", "one.txt", b"x", ["--no_filter"]),
    ("cr-only", "cr.txt", b"\r", []),
    ("old-mac", "mac.txt", LINE.replace(b"\n", b"\r"), []),
    ("zst-lines", "lines.txt.zst", LINE, []),
    ("zst-one-line", "one.txt.zst", b"x", []),
    ("paragraphs", "para.txt", PARAGRAPH, ["--no_dedup"]),
    ("cjk-lines", "cjk.txt", CJK_LINE, ["--no_dedup"]),
]


def measure(cmd: list[str], cwd: Path) -> dict:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _MEASURE, *cmd], capture_output=True, text=True, check=True,
                          cwd=cwd)
    wall = time.perf_counter() - start
    rc, said, peak_kib = json.loads(done.stdout)
    lines = said.splitlines() or [""]
    error = next((line for line in lines if line.startswith("Error:")), lines[-1])
    return {"rc": rc, "said": error, "wall": wall, "peak_mib": peak_kib / 1024}


def run_case(work: Path, file: str, unit: bytes, flags: list[str], size: int, workers: int, steps: list[str],
             repo: Path) -> dict:
    src = write(work / file, size, unit)
    common = ["--input_files", str(src), "--out_dir", str(work / "out"), "--workers", str(workers)]
    commands = {  # run in `repo`: its mypt (-m takes the working directory first; a stage inserts its checkout)
        # (the clean stage has no dedup to turn off)
        "clean": [sys.executable, str(repo / "stages" / "clean.py"), *common, *(f for f in flags if f != "--no_dedup"),
                  "--stats", str(work / "stats.json")],
        "prepare": [sys.executable, "-m", "mypt.cli", "prepare-dataset", *common, *flags],
    }
    results = {}
    for step in steps:
        results[step] = measure(commands[step], repo)
        shutil.rmtree(work / "out", ignore_errors=True)
    src.unlink()
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mb", type=int, default=256, help="MiB of text per input (default 256)")
    ap.add_argument("--workers", type=int, default=1, help="prepare-dataset --workers (default 1)")
    ap.add_argument("--dir", type=Path, default=None, help="where the inputs are written (default: a temporary one)")
    ap.add_argument("--steps", default="clean,prepare", help="what to run: clean (the stage), prepare (the command)")
    ap.add_argument("--cases", default=",".join(name for name, *_ in CASES),
                    help="the inputs to run, by name (default: all; the first one run is the baseline)")
    ap.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[1],
                    help="the checkout whose mypt runs (default: this one)")
    args = ap.parse_args()
    steps, cases = args.steps.split(","), args.cases.split(",")
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        rows = [(name, run_case(Path(tmp), *case, size=args.mb << 20, workers=args.workers, steps=steps,
                                repo=args.repo.resolve())) for name, *case in CASES if name in cases]
    print(f"{args.mb} MiB inputs, --workers {args.workers}, mypt of {args.repo}: peak RSS of the largest process")
    for step in steps:
        base = rows[0][1][step]["peak_mib"]
        print(f"\n{'clean stage' if step == 'clean' else 'prepare-dataset'}")
        print(f"{'input':<24}{'peak MiB':>10}{'x first':>9}{'wall s':>8}  outcome")
        for name, results in rows:
            r = results[step]
            outcome = "ok" if r["rc"] == 0 else f"exit {r['rc']}: {r['said'][:100]}"
            print(f"{name:<24}{r['peak_mib']:>10.0f}{r['peak_mib'] / base:>9.2f}{r['wall']:>8.1f}  {outcome}")


if __name__ == "__main__":
    main()
