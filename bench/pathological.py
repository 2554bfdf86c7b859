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
    step, per file, and the work folder's peak (bytes and files), sampled every 0.2 s;
  - peak RSS of prepare-dataset (the largest process: the command or a worker, --workers 1) on
    MEMORY_MB MiB .txt inputs the tokenize step once encoded as one block or one piece, next to
    ordinary lines (the first row), with this checkout's mypt and, given --baseline REV, that git
    revision's (before/after in the same run):
      hf: CJK lines, indented lines (train-tokenizer's tokenizer: only a newline between two
          printable ASCII characters was a cut point: one block, 3.76 GB for 16 MiB of CJK);
      gpt2: MEMORY_MB MiB of spaces inside one line (--no_filter; one tiktoken piece, ~40 bytes a
          byte; with hf one encode, 963 MiB for 4 MiB, until HFTokenizer._run_cuts cut the run at its
          period: 114 MiB), lines indented deeper than the 256 bytes the block rule sees (one block), lines
          of U+00A0 (--no_normalize --no_filter --no_dedup: one run of whitespace, one block);
      a word of MEMORY_MB MiB (--no_filter, which keeps it): base64 (a piece every few characters: gpt2
          94 MiB, 2.0 s for 4 MiB; hf one encode, 1,178 MiB, until HFTokenizer._piece_cuts cut it where
          its pre-tokenizer splits: 127 MiB), and random letters (one piece, which no cut keeps: gpt2
          259 MiB, 8.3 s, and 32 s for 8 MiB, tiktoken's BPE of one piece is quadratic; hf 852 MiB);
          _piece_cuts cut hf's ordinary lines too (blocks of 512 KiB: 146 MiB, in parts 91);
      blank lines (a run of MEMORY_MB MiB of newlines between two lines) with gpt2 and hf, and lines
          of U+3000 with hf (--no_normalize --no_filter --no_dedup): no rule cuts inside such a run,
          one block until RunSkip.period cut it (64 MiB of newlines: gpt2 592 MiB, 43.8 s; hf 14.2 GB).

  - split_blocks' scan (how the tokenize step cuts a .txt into blocks) of SCAN_MB MiB of lines of
    U+3000 (ideographic space, newline), of U+00A0 lines and of blank lines, with train-tokenizer's
    hf tokenizer (ByteLevel: gpt2.regex_safe_boundary, checked at each cut) and with gpt2, in each
    tokenizer's blocks, and with --baseline REV that revision's too (the same blocks, or the rows
    say which differ). fa83756 asked the rule at each newline of a run of whitespace (16 MiB of
    U+3000 lines: 158 s with hf).

The baseline (--baseline REV) is that git revision's tree, extracted with `git archive` into the
temporary folder: each part runs it in a process of its own, as it runs this checkout.

    python bench/pathological.py --files 20000 --workers 2
    python bench/pathological.py --parts memory --memory_mb 16 --baseline HEAD~3
    python bench/pathological.py --parts memory --memory_mb 16 --cases blank,U+3000 --baseline HEAD~1
    python bench/pathological.py --parts scan --scan_mb 16 --baseline fa83756
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's mypt

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


# Peak RSS of the largest process of a command (ru_maxrss of the children waited for: the
# command and, through it, its workers), in KiB on Linux.
_MEASURE = ("import resource, subprocess, sys, json; rc = subprocess.run(sys.argv[1:], capture_output=True, "
            "text=True); print(json.dumps([rc.returncode, (rc.stderr + rc.stdout).strip()[-300:], "
            "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss]))")


def memory_inputs(tmp: Path, mb: int) -> list[tuple[str, Path, list[str]]]:
    """(name, input, flags) of each case; inputs of `mb` MiB, written once for every checkout."""
    rng, size = random.Random(0), mb << 20
    han = "中文的句子这是一行普通文字。，"

    def lines(name: str, line) -> Path:
        path, done = tmp / name, 0
        with open(path, "w", encoding="utf-8") as f:
            while done < size:
                text = line()
                f.write(text)
                done += len(text.encode())
        return path

    words = lambda k: " ".join(rng.choice(WORDS) for _ in range(k))  # noqa: E731
    plain = lines("plain.txt", lambda: words(10).capitalize() + ".\n")
    cjk = lines("cjk.txt", lambda: "".join(rng.choice(han) for _ in range(rng.randint(10, 40))) + "\n")
    indented = lines("indented.txt", lambda: " " * rng.choice([4, 8, 12]) + words(6) + "\n")
    deep = lines("deep.txt", lambda: " " * rng.randint(300, 600) + words(4) + "\n")
    nbsp = tmp / "nbsp.txt"
    nbsp.write_text("Words before them.\n" + "\xa0\n" * (size // 3), encoding="utf-8")  # (a blank corpus is refused)
    blank = tmp / "blank.txt"
    blank.write_text("Words before them.\n" + "\n" * size + "Words after them.\n")
    ideographic = tmp / "ideographic.txt"
    ideographic.write_text("Words before them.\n" + "\u3000\n" * (size // 4) + "Words after them.\n", encoding="utf-8")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    b64 = tmp / "base64.txt"  # (letters, digits and symbols mixed: a piece every few characters)
    b64.write_text("A line before it.\n" + "".join(rng.choice(alphabet) for _ in range(size)) + "\nAfter it.\n")
    letters = tmp / "letters.txt"  # (one \p{L}+ piece of `size` characters)
    letters.write_text("A line before it.\n" + "".join(rng.choice("abcdefghij") for _ in range(size)) + "\nAfter it.\n")
    spaces = tmp / "spaces.txt"
    spaces.write_text("A line with a run of spaces:" + " " * size + "inside it.\n" + words(10) + "\n")
    (tmp / "tok_corpus.txt").write_text(plain.read_text()[:1 << 20] + cjk.read_text()[:1 << 19])
    tok = tmp / "tok.json"
    done = subprocess.run([sys.executable, "-m", "mypt.cli", "train-tokenizer", "--input_files",
                           str(tmp / "tok_corpus.txt"), "--vocab_size", "2000", "--out", str(tok)],
                          capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    hf = ["--tokenization", f"hf:{tok}"]
    return [("gpt2 ordinary lines", plain, []), ("gpt2 spaces in one line", spaces, ["--no_filter"]),
            ("hf spaces in one line", spaces, ["--no_filter", *hf]),
            ("gpt2 base64 word", b64, ["--no_filter"]), ("hf base64 word", b64, ["--no_filter", *hf]),
            ("gpt2 letters word", letters, ["--no_filter"]), ("hf letters word", letters, ["--no_filter", *hf]),
            ("gpt2 indents of 300-600", deep, ["--no_dedup"]),
            ("gpt2 U+00A0 lines", nbsp, ["--no_normalize", "--no_filter", "--no_dedup"]),
            ("hf ordinary lines", plain, hf), ("hf CJK lines", cjk, ["--no_dedup", *hf]),
            ("hf indented lines", indented, ["--no_dedup", *hf]),
            ("gpt2 blank lines", blank, ["--no_normalize", "--no_filter", "--no_dedup"]),
            ("hf blank lines", blank, ["--no_normalize", "--no_filter", "--no_dedup", *hf]),
            ("hf U+3000 lines", ideographic, ["--no_normalize", "--no_filter", "--no_dedup", *hf])]


def peak(repo: Path, src: Path, out: Path, flags: list[str]) -> tuple[float, float, str]:
    """(peak MiB, seconds, outcome) of prepare-dataset run with `repo`'s mypt."""
    cmd = [sys.executable, "-m", "mypt.cli", "prepare-dataset", "--input_files", str(src), "--out_dir", str(out),
           "--workers", "1", *flags]
    seconds, done = timed(subprocess.run, [sys.executable, "-c", _MEASURE, *cmd], capture_output=True, text=True,
                          check=True, cwd=repo)  # (-m takes the working directory's mypt first)
    rc, said, peak_kib = json.loads(done.stdout)
    return peak_kib / 1024, seconds, "ok" if rc == 0 else f"exit {rc}: {said.splitlines()[-1][:80]}"


def checkouts(tmp: Path, baseline: str | None) -> dict[str, Path]:
    """This checkout, and the tree of the git revision `baseline` (when given) extracted under `tmp`."""
    if baseline is None:
        return {"this checkout": REPO}
    tree = tmp / "baseline"
    tree.mkdir(exist_ok=True)
    archive = subprocess.run(["git", "archive", "--format=tar", baseline], cwd=REPO, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    return {"this checkout": REPO, baseline: tree}


def memory(tmp: Path, mb: int, repos: dict[str, Path], only: str | None = None) -> None:
    cases = [case for case in memory_inputs(tmp, mb) if only is None or any(w in case[0] for w in only.split(","))]
    print(f"prepare-dataset, {mb} MiB inputs, --workers 1: peak RSS of the largest process (MiB), seconds")
    print(f"{'input':<28}" + "".join(f"{name + ' MiB':>20}{'s':>7}" for name in repos) + "  outcome")
    for name, src, flags in cases:
        row = []
        for repo in repos.values():
            row.append(peak(repo, src, tmp / "out", flags))
            shutil.rmtree(tmp / "out", ignore_errors=True)  # (the next checkout's run writes a new dataset there)
        print(f"{name:<28}" + "".join(f"{mib:>20.0f}{s:>7.1f}" for mib, s, _ in row) + "  "
              + ", ".join(outcome for _, _, outcome in row))


# A checkout's split_blocks timed on the scan part's files (argv: tok.json, then the files): JSON
# {tokenizer: {file: [seconds, blocks]}}. Run in the checkout's folder, whose mypt -c imports first.
_SCAN = """
import json, sys, time
from pathlib import Path
from mypt.text import split_blocks
from mypt.tokenizers import Tokenizer
from mypt.tokenizers.hf import HFTokenizer
toks = {"hf (ByteLevel)": HFTokenizer.from_file(Path(sys.argv[1])), "gpt2": Tokenizer(None, "gpt2")}
out = {}
for name, tok in toks.items():
    out[name] = {}
    for case in map(Path, sys.argv[2:]):
        # (warmed up first on a small file of the case: gpt2's rule loads r50k's pairs once, 0.3 s)
        warm = case.with_name("warm.txt")
        warm.write_bytes(case.read_bytes()[:64 << 10])
        split_blocks(warm, 1024, safe=tok.block_boundary)
        start = time.perf_counter()
        blocks = split_blocks(case, tok.block_bytes, safe=tok.block_boundary)
        out[name][case.name] = [time.perf_counter() - start, blocks]
print(json.dumps(out))
"""


def scan(tmp: Path, mb: int, repos: dict[str, Path]) -> None:
    from mypt.train_tokenizer import TokenizerTrainSettings, train_tokenizer

    rng = random.Random(0)
    (tmp / "corpus.txt").write_text("".join(" ".join(rng.choice(WORDS) for _ in range(10)) + ".\n"
                                            for _ in range(5000)) + "中文的句子。\n\u3000\u3000段落\n" * 500)
    train_tokenizer([str(tmp / "corpus.txt")], tmp / "tok.json", TokenizerTrainSettings(vocab_size=1000),
                    log=lambda line: None)
    n = mb << 20
    (tmp / "ideographic.txt").write_text("\u3000\n" * (n // 4), encoding="utf-8")
    (tmp / "nbsp.txt").write_text("\xa0\n" * (n // 3), encoding="utf-8")
    (tmp / "blank.txt").write_bytes(b"\n" * n)
    files = [str(tmp / case) for case in ("ideographic.txt", "nbsp.txt", "blank.txt")]
    runs = {label: json.loads(subprocess.run([sys.executable, "-c", _SCAN, str(tmp / "tok.json"), *files],
                                             cwd=repo, capture_output=True, text=True, check=True).stdout)
            for label, repo in repos.items()}
    print(f"split_blocks' scan of {mb} MiB, seconds: " + ", ".join(f"{label}'s" for label in repos)
          + " (blocks of each)")
    for name, cases in runs["this checkout"].items():
        for case, (seconds, blocks) in cases.items():
            others = [runs[label][name][case] for label in repos if label != "this checkout"]
            print(f"  {name:<15} {case:<16} {seconds:8.2f} s" + "".join(f" {s:8.2f} s" for s, _ in others)
                  + f"  ({len(blocks)} blocks" + "".join(f", {len(b)}" + (" other" if b != blocks else "")
                                                         for _, b in others) + ")")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run_mb", type=int, default=1)
    parser.add_argument("--files", type=int, default=20000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--memory_mb", type=int, default=4)
    parser.add_argument("--baseline", default=None, help="a git revision whose mypt the memory and scan parts run too")
    parser.add_argument("--scan_mb", type=int, default=4)
    parser.add_argument("--parts", default="whitespace,long_words,tiny_files,memory,scan")
    parser.add_argument("--cases", default=None, help="the memory part's cases whose name holds one of these "
                        "comma-separated words (gpt2,blank): the others are not run")
    args = parser.parse_args()
    parts = args.parts.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        if "whitespace" in parts:
            whitespace(Path(tmp), args.run_mb)
        if "long_words" in parts:
            long_words()
        if "tiny_files" in parts:
            tiny_files(Path(tmp), args.files, args.workers)
        repos = checkouts(Path(tmp), args.baseline) if {"memory", "scan"} & set(parts) else {}
        if "memory" in parts:
            (Path(tmp) / "memory").mkdir()  # (apart from the other parts' files: tok.json)
            memory(Path(tmp) / "memory", args.memory_mb, repos, args.cases)
        if "scan" in parts:
            (Path(tmp) / "scan").mkdir()
            scan(Path(tmp) / "scan", args.scan_mb, repos)


if __name__ == "__main__":
    main()
