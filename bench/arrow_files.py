"""A dataset saved by `datasets` (Dataset.save_to_disk) made of many small Arrow files, read by
`mypt prepare-dataset`: the seconds per Arrow file as their number grows, next to the same
documents as one .jsonl file (the baseline, in the same run).

Each block of a saved dataset is one Arrow file. Before, after each block mypt parsed
state.json and stat'ed every file of the dataset again (Reader.check_unchanged), and each file
opened looked its identity up in a list of them all (Stamp.of): quadratic in the file count.
Per-file time that stays flat as FILES grows is linear; per-file time that grows with it is not.

For each checkout given (--repo, several allowed: a before/after comparison on the same inputs)
and each count of files: the wall time of prepare-dataset (a subprocess running that checkout's
mypt) on the saved dataset and on the .jsonl, and the time of the reading layer alone (the
readers: resolve, blocks, texts and the checks after each block, in one process).

    python bench/arrow_files.py --files 500,1000,2000
    git worktree add ../before a961c00 && python bench/arrow_files.py --repo ../before --repo .

The datasets are written with pyarrow as save_to_disk writes them (no `datasets` needed).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROWS = 3  # documents per Arrow file

# The reading layer alone, in the checkout's own mypt (cwd first on sys.path): every block of
# every input, checked as the clean step checks it.
_READ = """
import sys, time
from collections import Counter
from mypt.readers import text_sources
from mypt.text import DecodeCounter
start = time.perf_counter()
readers, _ = text_sources(sys.argv[1:])
n = 0
for reader in readers:
    for s, e in reader.checked_blocks():
        n += sum(1 for _ in reader.checked_texts(s, e, DecodeCounter(), Counter()))
print(time.perf_counter() - start, n)
"""


def save_to_disk(root: Path, files: int) -> list[str]:
    """A saved dataset of `files` Arrow files of ROWS documents each, as save_to_disk writes
    one; returns its texts."""
    import pyarrow as pa

    root.mkdir(parents=True)
    names = [f"data-{i:05d}-of-{files:05d}.arrow" for i in range(files)]
    texts = []
    for i, name in enumerate(names):
        rows = [f"Document {j} of Arrow file {i}: a sentence or two of text, different in each file."
                for j in range(ROWS)]
        texts += rows
        table = pa.table({"text": rows})
        with pa.ipc.new_stream(str(root / name), table.schema) as writer:
            writer.write_table(table)
    (root / "state.json").write_text(json.dumps({"_data_files": [{"filename": n} for n in names],
                                                 "_fingerprint": "0", "_split": None}))
    (root / "dataset_info.json").write_text(json.dumps({"features": {"text": {"dtype": "string",
                                                                              "_type": "Value"}}}))
    return texts


def timed(cmd: list[str], cwd: Path) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} ... failed in {cwd}:\n{done.stderr[-2000:]}")
    return wall, done.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", default="500,1000,2000", help="counts of Arrow files (default 500,1000,2000)")
    ap.add_argument("--workers", type=int, default=1, help="prepare-dataset --workers (default 1)")
    ap.add_argument("--repo", type=Path, action="append",
                    help="a checkout whose mypt runs (several allowed; default: this one)")
    args = ap.parse_args()
    repos = [r.resolve() for r in args.repo or [Path(__file__).resolve().parents[1]]]
    counts = [int(n) for n in args.files.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in counts:
            saved = Path(tmp) / f"saved_{n}"
            texts = save_to_disk(saved, n)
            jsonl = Path(tmp) / f"same_{n}.jsonl"
            jsonl.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
            for repo in repos:
                walls = {}
                for name, src in (("saved", saved), ("jsonl", jsonl)):
                    out = Path(tmp) / "out"
                    walls[name], _ = timed([sys.executable, "-m", "mypt.cli", "prepare-dataset", "--input_files",
                                            str(src), "--out_dir", str(out), "--tokenization", "char",
                                            "--workers", str(args.workers), "--overwrite"], repo)
                read_s, said = timed([sys.executable, "-c", _READ, str(saved)], repo)
                assert int(said.split()[1]) == len(texts), said
                rows.append((repo, n, walls["saved"], walls["jsonl"], float(said.split()[0])))
    print(f"prepare-dataset --workers {args.workers} --tokenization char on a saved dataset of FILES Arrow files "
          f"({ROWS} documents each), and on the same documents as one .jsonl (the baseline)")
    print(f"{'checkout':<28}{'files':>7}{'saved s':>9}{'ms/file':>9}{'jsonl s':>9}{'readers s':>11}{'ms/file':>9}")
    for repo, n, saved_s, jsonl_s, read_s in rows:
        print(f"{str(repo)[-28:]:<28}{n:>7,}{saved_s:>9.1f}{saved_s / n * 1000:>9.2f}{jsonl_s:>9.1f}"
              f"{read_s:>11.2f}{read_s / n * 1000:>9.3f}")


if __name__ == "__main__":
    main()
