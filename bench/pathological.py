"""Inputs no corpus was meant to hold, timed: long whitespace runs and many tiny files.

Prints:
  - gpt2: encoding a text with a run of RUN_MB MiB of newlines (tiktoken alone failed from
    999,999 characters), next to ordinary text of the same size;
  - train-tokenizer: learning from RUN_MB MiB of blank lines (before words were cut at
    train_tokenizer.MAX_WORD: quadratic, 128 Ki blank lines 6.6 s, 1 MiB > 300 s);
  - train-tokenizer's cut of long words (short_words) on text with none, 1.4M characters of
    Chinese-like paragraphs (3,000 characters without whitespace: before, the whole text was
    pre-tokenized for nothing, 1.9-2.4 s and +455 MB), and on a 4 MiB block of English with one
    word of 5,000 characters (before: 5.0 s, +575 MB); peak RSS is this process's, so an
    increase shows only where it passes the earlier peak;
  - prepare-dataset on FILES tiny .txt files (one or two lines each): the seconds of each
    step, per file, and the work folder's peak (bytes and files), sampled every 0.2 s.

    python bench/pathological.py --files 20000 --workers 2
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's mypt

WORDS = "the quick brown fox jumps over a lazy dog while seven wizards quietly hex zebras".split()


def timed(fn, *args, **kwargs) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - start, result


def disk_use(top: Path) -> tuple[int, int]:
    size = files = 0
    for root, _, names in os.walk(top):
        for name in names:
            try:
                size += os.lstat(os.path.join(root, name)).st_blocks * 512
                files += 1
            except OSError:  # (removed while counted)
                pass
    return size, files


def whitespace(tmp: Path, run_mb: int) -> None:
    from mypt.tokenizers import Tokenizer
    from mypt.train_tokenizer import TokenizerTrainSettings, train_tokenizer

    n = run_mb << 20
    text = "hello there\n" + "\n" * n + "world again\n"
    ordinary = " ".join(random.Random(0).choice(WORDS) for _ in range(n // 5))[:n]
    tok = Tokenizer(None, "gpt2")
    seconds, ids = timed(tok.encode_array, text)
    assert tok.decode(ids) == text
    print(f"gpt2: {run_mb} MiB of newlines between two lines: {seconds:.2f} s, {ids.size:,} tokens "
          f"({run_mb} MiB of words: {timed(tok.encode_array, ordinary)[0]:.2f} s)")
    (tmp / "blank.txt").write_text(text)
    seconds, _ = timed(train_tokenizer, [str(tmp / "blank.txt")], tmp / "tok.json", TokenizerTrainSettings(),
                       log=lambda line: None)
    print(f"train-tokenizer: {run_mb} MiB of blank lines, vocab_size 32000: {seconds:.2f} s")


def long_words() -> None:
    import tokenizers

    import mypt.train_tokenizer as tt

    pre, rng = tt._pre_tokenizer(tokenizers), random.Random(0)
    han = [chr(c) for c in range(0x4e00, 0x4e00 + 3000)]
    cjk = "\n".join("".join(rng.choice(han) + "，" * (i % 20 == 19) for i in range(2857))[:3000] for _ in range(466))
    english = " ".join(rng.choice(WORDS) for _ in range(800_000))[:(4 << 20) - 5002]
    english = english[:2_000_000] + " " + "x" * 5000 + " " + english[2_000_000:]
    for name, text in (("Chinese-like paragraphs", cjk), ("English with one 5,000-char word", english)):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        seconds, parts = timed(tt.short_words, text, pre, tt.MAX_WORD)
        grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
        print(f"train-tokenizer's short_words, {len(text):,} characters of {name}: {seconds:.3f} s, "
              f"peak RSS +{grown:.0f} MB, {len(parts)} part(s)")


def tiny_files(tmp: Path, files: int, workers: int) -> None:
    from click.testing import CliRunner

    import mypt.prepare as prepare
    from mypt.cli import main

    rng = random.Random(0)
    corpus = tmp / "many"
    for i in range(files):
        folder = corpus / f"{i // 1000:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{i:06d}.txt").write_text(" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 30))) +
                                              f" {i}\n")
    steps: dict[str, float] = {}
    for name in ("clean", "dedup", "tokenize", "split_tokens"):
        def step(*args, _fn=getattr(prepare, name), _name=name, **kwargs):
            seconds, result = timed(_fn, *args, **kwargs)
            steps[_name] = steps.get(_name, 0.0) + seconds
            return result
        setattr(prepare, name, step)
    out, peak, done = tmp / "out", [0, 0], threading.Event()

    def watch() -> None:  # the work folder is out's hidden sibling
        while not done.wait(0.2):
            for p in tmp.iterdir():
                if p.name.startswith("."):
                    peak[:] = max(peak, list(disk_use(p)))

    threading.Thread(target=watch, daemon=True).start()
    seconds, result = timed(CliRunner().invoke, main, ["prepare-dataset", "--input_files", str(corpus), "--out_dir",
                                                        str(out), "--workers", str(workers)])
    done.set()
    assert result.exit_code == 0, result.output
    per = ", ".join(f"{k} {v:.1f} s ({v / files * 1e3:.2f} ms)" for k, v in steps.items())
    print(f"prepare-dataset, {files:,} tiny files, {workers} workers: {seconds:.1f} s, "
          f"{seconds / files * 1e3:.2f} ms per file; per step (per file): {per}")
    print(f"  work folder peak: {peak[0] / 1e6:.0f} MB in {peak[1]:,} files ({peak[0] / files / 1e3:.1f} kB "
          f"and {peak[1] / files:.1f} files per input file)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run_mb", type=int, default=1)
    parser.add_argument("--files", type=int, default=20000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        whitespace(Path(tmp), args.run_mb)
        long_words()
        tiny_files(Path(tmp), args.files, args.workers)


if __name__ == "__main__":
    main()
