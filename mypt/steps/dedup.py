"""Step dedup: exact line dedup across all inputs, first occurrence kept, in bounded memory.

The key of a line is `dedup_key` (case and whitespace folded). Each key is hashed to
128 bits (BLAKE2b): with n distinct lines the chance of any collision is about
n^2 / 2^129, i.e. 1e-21 for a billion lines, so the dedup is exact in practice.

Phases, with files between them (datatrove-style), so memory never holds the corpus:
1. hash (parallel, per block): write (hash, line index) records for every keyed line
   (hash_records; in prepare-dataset, as the clean step writes the lines: `Hashing`);
2. partition: read the records in batches that fit the budget (whatever the size of a
   block's record file: a .gz input is one block), and scatter them by hash into P runs on
   disk, each small enough to sort within the budget. Each batch is first reduced to the
   first record (lowest line) of each of its hashes: the others are duplicates, marked at
   once. So a run holds at most one record of a hash per batch, however often its line
   recurs (all copies of a line hash alike: unreduced, a repeated line would fill one run).
   P is sized from the count of records; where that would be more than MAX_RUNS, from what
   the reduced batches hold (counted by one more pass: a corpus of lines repeated fits).
   Runs fill by hash, not evenly: a line found in every batch puts one record a batch into
   its run, which then holds more than its share once the batches outnumber the records a
   run holds (over 134 M keyed lines at --dedup_memory_mb 1; trillions at the default);
3. decide (per run): sort by (hash, index); every record after the first of its hash is
   a duplicate, and its line index is marked in an on-disk drop map (1 byte a line);
4. write (parallel, per block): copy the lines whose mark is not set.

Steps 2 and 3 find duplicates the same way (_duplicates): within a set of records, every
record whose hash a lower line of the set has is a duplicate, for the lower line comes first
in the corpus; and the first line of a hash is the first of its batch, then of its run.

Blank lines are never dropped; nor are lines whose key is shorter than `min_chars`
(speaker names and "Exit." recur legitimately; boilerplate is longer).
"""

from __future__ import annotations

import errno
import functools
import hashlib
import math
import mmap
import operator
import os
import re
import shutil
from collections import Counter
from dataclasses import dataclass
from itertools import chain, compress
from pathlib import Path
from typing import Iterator

import numpy as np

from mypt.errors import InputError, naming
from mypt.io import join_parts, read_json, staged_dir, write_json
from mypt.parallel import engine_session, merge_counts, parallel_map
from mypt.settings import Settings, engine_setting, ray_address_setting, setting, workers_setting
from mypt.steps import MANIFEST, SOURCE_FILES, Step, read_input, source_files, step_files
from mypt.text import BLOCK_BYTES, block_docs, doc_text, split_blocks

REC = np.dtype([("a", "<u8"), ("b", "<u8"), ("idx", "<u8")])  # a key's 128-bit hash (BLAKE2b), its line
BYTES_PER_RECORD_SORTED = 64  # record + sort indices + one sorted column + masks (_duplicate_lines; a lexsort more)
MAX_RUNS = 512


STEP = Step("dedup", reads=("clean",))
# Every name the dedup stats can hold (blank_lines and short_lines_kept only when seen): the dedup
# stage's --stats replaces a file of these names only.
COUNTERS = ("lines", "keyed_lines", "blank_lines", "short_lines_kept", "duplicate_lines_dropped", "documents_emptied",
            "unique_keys", "runs")


@dataclass(frozen=True)
class DedupSettings(Settings):
    LABEL = "dedup setting"

    enabled: bool = setting(True, "Exact line dedup across all inputs, first occurrence kept (off: files pass "
                                  "through unchanged).", flag="dedup")
    min_chars: int = setting(24, "Lines whose dedup key is shorter are never dropped as duplicates.", min=0,
                             flag="dedup_min_chars")
    memory_mb: int = setting(256, "Memory budget for dedup keys; beyond it dedup spills to disk and stays exact.",
                             min=1, flag="dedup_memory_mb", output=False)
    workers: int | None = workers_setting()
    engine: str = engine_setting()
    ray_address: str | None = ray_address_setting()


_ASCII_OTHER_WS = "\t\r\x0b\x0c\x1c\x1d\x1e\x1f"  # ASCII whitespace (isspace) other than space and newline
_OTHER_WS = re.compile(r"[^\S \n]")  # whitespace other than a space (tab, \r, NBSP, ...), newlines aside


def dedup_keys(lines: list[str]) -> list[str]:
    """The dedup key of each line: case folded and runs of whitespace collapsed to one space,
    ends stripped, so that "The  King" and "the king " are one line. Separate from the output
    text. One casefold over the block (it maps each character alone, never to a newline);
    the per-line split and join only when the block's whitespace is not already single
    spaces between words."""
    if not lines:
        return []
    text = "\n".join(lines).casefold()
    other_ws = any(c in text for c in _ASCII_OTHER_WS) if text.isascii() else _OTHER_WS.search(text)
    if other_ws or "  " in text or " \n" in text or "\n " in text or text.startswith(" ") or text.endswith(" "):
        return list(map(" ".join, map(str.split, text.split("\n"))))
    return text.split("\n")


def dedup_key(line: str) -> str:
    """The dedup key of one line (see dedup_keys)."""
    return dedup_keys([line])[0]


_HASH = functools.partial(hashlib.blake2b, digest_size=16)
_DIGEST = operator.methodcaller("digest")


def hash_records(lines: list[str], min_chars: int) -> tuple[np.ndarray, Counter]:
    """The dedup record (BLAKE2b-128 of the key, index in `lines`) of every line whose key has
    at least `min_chars` characters (and one), and the counts of lines, keyed lines and, when
    seen, blank and short lines. C-level passes over the lines (keys, lengths, hashes through
    map): no Python call per line."""
    keys = dedup_keys(lines)
    lens = np.fromiter(map(len, keys), dtype=np.int64, count=len(keys))
    keyed = lens >= max(1, min_chars)
    digests = b"".join(map(_DIGEST, map(_HASH, map(str.encode, compress(keys, keyed.tolist())))))
    rec = np.empty(int(keyed.sum()), dtype=REC)
    if rec.size:
        h = np.frombuffer(digests, dtype="<u8").reshape(-1, 2)
        rec["a"], rec["b"], rec["idx"] = h[:, 0], h[:, 1], np.flatnonzero(keyed)
    blank = int((lens == 0).sum())
    stats = Counter(lines=len(lines), keyed_lines=rec.size)
    # Counted only when seen, as the stats of datasets prepared so far were.
    stats.update(+Counter(blank_lines=blank, short_lines_kept=len(lines) - blank - rec.size))
    return rec, stats


HASH_FLUSH_LINES = 1 << 16  # lines a Hashing sink hashes at a time


def block_stem(out_dir: Path, index: int) -> Path:
    """Where Hashing leaves clean block INDEX's records (`.rec`) and its counts (`.json`)."""
    return out_dir / f"{index:06d}"


@dataclass(frozen=True)
class Hashing:
    """Phase 1 as a sink of the clean step (`clean(..., sink=Hashing(...))`): prepare-dataset
    hashes the lines as clean writes them instead of reading them back (the read back costs
    about 3% of prepare-dataset's CPU time: 0.47 s of CPU for 100 MB of text). Block INDEX of
    the clean step leaves `out_dir/INDEX.rec`, its records, and `INDEX.json`, its line count,
    stats and the pieces of its output the write phase reads (about a block each);
    `dedup(..., hashed=out_dir)` takes them."""

    out_dir: Path
    min_chars: int

    def __call__(self, index: int, source_file: str) -> "_BlockHashes":
        return _BlockHashes(block_stem(self.out_dir, index), source_file, self.min_chars)

    def discard(self, index: int) -> None:
        """Block INDEX's lines were not written after all (clean dropped a source of blank
        lines): it leaves no records, lines or pieces, as dedup reading the output would see."""
        stem = block_stem(self.out_dir, index)
        open(stem.with_suffix(".rec"), "wb").close()
        write_json(stem.with_suffix(".json"), {"file": read_json(stem.with_suffix(".json"))["file"], "lines": 0,
                                               "pieces": [], "stats": {}})


class _BlockHashes:
    """The records of the lines one clean block writes, and where each piece of its output
    ends (bytes, lines)."""

    def __init__(self, stem: Path, source_file: str, min_chars: int):
        self.stem, self.source_file, self.min_chars = stem, source_file, min_chars
        self.file = open(stem.with_suffix(".rec"), "wb")
        self.lines, self.n, self.stats = [], 0, Counter()
        self.pieces: list[tuple[int, int]] = []  # (bytes, lines) of each piece of the output
        self.piece_start, self.piece_lines = 0, 0  # where the current piece starts (byte, line)
        self.pos = 0  # where the last add ended

    def add(self, lines: list[str], pos: int) -> None:
        # Pieces of at most BLOCK_BYTES or one add, as the write phase holds a piece's lines: one ends before an
        # add that would take it past BLOCK_BYTES (clean adds up to a reader's piece, about BLOCK_BYTES, at once).
        if pos - self.piece_start > BLOCK_BYTES:
            self._end_piece(self.pos)
        self.lines += lines
        self.pos = pos
        if len(self.lines) >= HASH_FLUSH_LINES:
            self._flush()
        if pos - self.piece_start >= BLOCK_BYTES:
            self._end_piece(pos)

    def close(self, pos: int) -> None:
        self._end_piece(pos)
        if self.lines:
            self._flush()
        with naming(self.file.name):
            self.file.close()
        write_json(self.stem.with_suffix(".json"), {"file": self.source_file, "lines": self.n,
                                                    "pieces": self.pieces, "stats": dict(self.stats)})

    def _flush(self) -> None:
        rec, stats = hash_records(self.lines, self.min_chars)
        rec["idx"] += self.n
        with naming(self.file.name):  # (its own: it runs inside the clean block's naming of the block's output)
            rec.tofile(self.file)
        self.n += len(self.lines)
        self.stats.update(stats)
        self.lines = []

    def _end_piece(self, pos: int) -> None:
        if pos > self.piece_start:
            # Its lines hashed now too: those held stay within a piece's bytes, however long they are (65536
            # lines of 10 kB would be 655 MB).
            if self.lines:
                self._flush()
            lines = self.n
            self.pieces.append((pos - self.piece_start, lines - self.piece_lines))
            self.piece_start, self.piece_lines = pos, lines


def _hashed_by_clean(hashed: Path, sources: list[tuple[Path, bool]]
                     ) -> tuple[list[tuple[Path, bool, int, int]], list[int], list[Path], list[int], Counter]:
    """What Hashing left in `hashed`: the blocks to write ((path, is_jsonl, start, end) of each
    piece) and their line counts; the record files, their line counts and the stats."""
    # By index, not the names' order: past 999,999 blocks (4 TB at 4 MiB) the names outgrow their padding.
    stems = [block_stem(Path(hashed), i) for i in range(len(list(Path(hashed).glob("*.json"))))]
    done = [read_json(stem.with_suffix(".json")) for stem in stems]
    by_name = {src.name: (src, jsonl) for src, jsonl in sources}
    blocks, counts, ends = [], [], Counter()
    for block in done:
        src, jsonl = by_name[block["file"]]
        for size, lines in block["pieces"]:
            blocks.append((src, jsonl, ends[src], ends[src] + size))
            counts.append(lines)
            ends[src] += size
    hash_files = [stem.with_suffix(".rec") for stem in stems]
    stats = merge_counts(Counter(block["stats"]) for block in done)
    return blocks, counts, hash_files, [block["lines"] for block in done], stats


def _hash_block(task) -> tuple[int, Counter]:
    path, start, end, jsonl, min_chars, out = task
    rec, stats = hash_records(list(chain.from_iterable(block_docs(path, start, end, jsonl))), min_chars)
    with naming(out):
        rec.tofile(out)
    return stats["lines"], stats


def _write_block(task) -> Counter:
    path, start, end, jsonl, drop_path, first_line, n_lines, out = task
    drop = np.fromfile(drop_path, dtype=np.uint8, count=n_lines, offset=first_line) if n_lines else np.zeros(0, np.uint8)
    keep = (drop ^ 1).tobytes()  # compress() takes a line where its byte is 1
    stats, i, texts = Counter(documents_emptied=0), 0, []
    for lines in block_docs(path, start, end, jsonl):
        kept = list(compress(lines, keep[i:i + len(lines)]))
        i += len(lines)
        if jsonl and all(not line.strip() for line in kept):
            stats["documents_emptied"] += 1
            continue
        texts.append(doc_text(kept, jsonl).encode("utf-8"))
    assert i == n_lines, "the write pass must see the lines the hash pass saw"
    # Written once read (a block, a few MiB): a full disk names `out`, and a read's error, which names no
    # file, is never said of it.
    with naming(out), open(out, "wb") as f:
        f.writelines(texts)
    stats["duplicate_lines_dropped"] += int(drop.sum())
    return stats


def _duplicates(rec: np.ndarray) -> np.ndarray:
    """Which records (a mask, in their order) have a hash that a lower line of `rec` already has.

    The records of a batch or a run come in line order (files in corpus order, each in line
    order; the partition keeps that order), so a stable sort on the first 64 bits alone orders
    them by hash and then line, with one column in memory at a time beside the records: about
    half the memory of a lexsort of all three, which leaves room in memory_mb for the worker
    processes beside. Two distinct keys with equal first halves fall back to that lexsort."""
    idx, order = rec["idx"], None
    if idx.size > 1 and (idx[1:] > idx[:-1]).all():
        order = np.argsort(rec["a"], kind="stable")
        a = rec["a"][order]
        same_a = a[1:] == a[:-1]
        del a
        b = rec["b"][order]
        same = same_a & (b[1:] == b[:-1])
        del b
        if (same_a & ~same).any():
            order = None  # two keys with equal first halves
    if order is None:
        # Records out of line order, or two keys with equal first halves: sort by all three columns.
        order = np.lexsort((idx, rec["b"], rec["a"]))
        a, b = rec["a"][order], rec["b"][order]
        same = (a[1:] == a[:-1]) & (b[1:] == b[:-1])
        del a, b
    mask = np.zeros(idx.size, dtype=bool)
    mask[order[1:][same]] = True
    return mask


def _duplicate_lines(rec: np.ndarray) -> np.ndarray:
    """The line indices of the records whose hash a lower line of `rec` already has."""
    return rec["idx"][_duplicates(rec)]


def dedup_files(sources: list[tuple[Path, bool]], outputs: list[Path], settings: DedupSettings,
                work_dir: Path, hashed: Path | None = None) -> dict:
    """Dedup the cleaned files `sources` ((path, is_jsonl) in corpus order) into `outputs`
    (files of the staged dir that holds `work_dir`: a lone part is renamed into place).
    `hashed`: phase 1 was done as the clean step wrote them (the folder of a `Hashing`)."""
    work_dir.mkdir(parents=True, exist_ok=True)
    if hashed is None:
        blocks = [(src, jsonl, start, end) for src, jsonl in sources for start, end in split_blocks(src)]
        hash_files, counts, stats = _hash_phase(blocks, settings, work_dir)
        hash_counts = counts
    else:
        blocks, counts, hash_files, hash_counts, stats = _hashed_by_clean(hashed, sources)
    total_lines = sum(counts)
    assert total_lines == sum(hash_counts), "the write pass must see the lines the hash pass saw"
    drop = _DropMap(work_dir / "drop.u8", total_lines)
    try:  # (closed on an error too: an open map would keep its file, where that stops a delete)
        run_files = _partition(hash_files, hash_counts, int(stats["keyed_lines"]), settings.memory_mb, drop,
                               work_dir)
        unique = _decide(run_files, drop)
    finally:
        drop.close()
    stats.update(_write_phase(blocks, counts, drop.path, settings, work_dir))
    drop.path.unlink()
    parts = [work_dir / f"out_{i:06d}.part" for i in range(len(blocks))]
    by_source: dict[Path, list[Path]] = {}
    for (src, *_), part in zip(blocks, parts):
        by_source.setdefault(src, []).append(part)
    for (src, jsonl), out in zip(sources, outputs):
        kept = by_source.get(src, [])
        # A .txt source is one document in blocks (no block alone can tell): emptied when dedup
        # left it only blank lines (which it never drops), as a .jsonl document is; then it is
        # written empty, not as a document of newlines.
        emptied = not jsonl and _blank(kept) and not _blank([src])
        join_parts(kept if not emptied else [], out)
        stats["documents_emptied"] += emptied
    stats["unique_keys"] = unique
    stats["runs"] = len(run_files)
    return dict(sorted(stats.items()))


def _blank(paths: list[Path]) -> bool:
    """Whether the files hold nothing but whitespace (read up to the first other byte)."""
    for path in paths:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                if chunk.strip():
                    return False
    return True


def _hash_phase(blocks: list[tuple[Path, bool, int, int]], settings: DedupSettings,
                work_dir: Path) -> tuple[list[Path], list[int], Counter]:
    """1. hash: the records of each block into a file of its own; their line counts and stats."""
    hash_files = [work_dir / f"hash_{i:06d}.rec" for i in range(len(blocks))]
    results = parallel_map(_hash_block, [(src, s, e, jsonl, settings.min_chars, out)
                                         for (src, jsonl, s, e), out in zip(blocks, hash_files)],
                           settings, "dedup: hash")
    return hash_files, [n for n, _ in results], merge_counts(c for _, c in results)


_DONTNEED = getattr(mmap, "MADV_DONTNEED", None)  # (not on Windows; on macOS a hint)


class _DropMap:
    """The drop map: 1 byte a line, in a file, zero (kept) until the line is found a duplicate.
    Mapped, and its pages given back to the page cache after each batch of marks (the file
    keeps them): resident, they would count in the process's RSS, what an OOM killer weighs,
    the whole map for a corpus of one line repeated (1 GiB of a 50-byte line: 20 MiB). They
    stay in the page cache, which the kernel may write back and reclaim (on a tmpfs work
    folder, they are RAM all the same)."""

    def __init__(self, path: Path, total_lines: int):
        self.path = path
        with naming(path), open(path, "wb+") as f:
            f.truncate(total_lines)
            if total_lines and hasattr(os, "posix_fallocate"):  # (not on macOS)
                # Its blocks taken now: a full disk fails here, named, not as a SIGBUS that kills mypt when a
                # mark touches a page of the sparse file that the file system has no room for (a full tmpfs).
                try:
                    os.posix_fallocate(f.fileno(), 0, total_lines)
                except OSError as e:
                    # A file system without it, under a C library that does not emulate it as glibc does: the
                    # sparse file, as before.
                    if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                        raise
            self.map = mmap.mmap(f.fileno(), total_lines) if total_lines else None

    def mark(self, lines: np.ndarray) -> None:
        if lines.size:
            np.frombuffer(self.map, dtype=np.uint8)[lines] = 1
            if _DONTNEED is not None:
                self.map.madvise(_DONTNEED)  # (a shared map's dirty pages stay in the page cache)

    def close(self) -> None:
        if self.map is not None:
            with naming(self.path):
                self.map.flush()
            self.map.close()


def _batches(hash_files: list[Path], line_counts: list[int], size: int, keep: bool = False) -> Iterator[np.ndarray]:
    """The records of the hash files in corpus order, their line indices made global, in
    batches of at most `size` records, read a piece at a time (a .gz input's file holds all
    its records); each hash file is removed once read, unless `keep`."""
    pieces, n, first = [], 0, 0
    for path, lines in zip(hash_files, line_counts):
        with naming(path), open(path, "rb") as f:
            # Read no more than the file holds: fromfile allocates `count` records before reading, and
            # glibc kept each tiny file's piece in a map of its own (4 kB and one of vm.max_map_count's
            # 65,530 maps a hash file, until the batch was joined: 200,000 tiny files crashed).
            left = os.fstat(f.fileno()).st_size // REC.itemsize
            while left and (piece := np.fromfile(f, dtype=REC, count=min(size - n, left))).size:
                left -= piece.size
                piece["idx"] += np.uint64(first)
                pieces.append(piece)
                n += piece.size
                if n == size:
                    # The pieces let go before the batch is worked on, and the batch yielded from the list so
                    # that this frame holds no reference to it once the caller lets it go.
                    pieces, n = [_joined(pieces)], 0
                    yield pieces.pop()
        if not keep:
            path.unlink()
        first += lines
    if pieces:
        yield _joined(pieces)


def _joined(pieces: list[np.ndarray]) -> np.ndarray:
    return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)  # (one piece, the usual batch of a .gz: no copy)


def _partition(hash_files: list[Path], line_counts: list[int], total_records: int, memory_mb: int,
               drop: _DropMap, work_dir: Path) -> list[Path]:
    """2. partition: the records, their line indices made global, in batches, each batch's
    duplicates marked in `drop` and the rest scattered by hash into runs that each fit the
    budget; the hash files are removed as they are read."""
    per_run = max(1, memory_mb * 2**20 // BYTES_PER_RECORD_SORTED)
    batch_size = max(1, per_run // 2)  # half a run: the batch's buffer, its reduced copy and the scatter's sort
    n_runs = max(1, math.ceil(total_records / per_run))
    if n_runs > MAX_RUNS:
        # Too many runs for every record, but a run holds only what each batch's reduction
        # leaves: a corpus mostly of repeated lines (over 2 G keyed lines at the default 256 MB)
        # may fit. Counted by one more pass over the batches, made only here: sized from every
        # record, such a corpus was refused; a corpus that fits keeps its runs (and stats).
        n_runs = max(1, math.ceil(_reduced_records(hash_files, line_counts, batch_size) / per_run))
    if n_runs > MAX_RUNS:
        raise InputError(f"dedup needs {n_runs} runs at --dedup_memory_mb {memory_mb}; "
                         f"raise it to at least {math.ceil(memory_mb * n_runs / MAX_RUNS)}")
    run_files = [work_dir / f"run_{r:04d}.rec" for r in range(n_runs)]
    handles = [open(p, "wb") for p in run_files]
    try:
        for batch in _batches(hash_files, line_counts, batch_size):
            duplicates = _duplicates(batch)
            drop.mark(batch["idx"][duplicates])
            rec = batch[~duplicates]
            del duplicates, batch  # (the batch's buffer let go before the scatter's copies)
            if n_runs == 1:
                with naming(run_files[0]):
                    rec.tofile(handles[0])
                continue
            run = rec["a"] % np.uint64(n_runs)
            order = np.argsort(run, kind="stable")
            rec, bounds = rec[order], np.searchsorted(run[order], np.arange(n_runs + 1))
            del run, order
            for r in range(n_runs):
                if bounds[r + 1] > bounds[r]:
                    with naming(run_files[r]):
                        rec[bounds[r]:bounds[r + 1]].tofile(handles[r])
    finally:
        for h in handles:
            h.close()  # (tofile wrote past the files' buffers, which hold nothing to write now)
    return run_files


def _reduced_records(hash_files: list[Path], line_counts: list[int], batch_size: int) -> int:
    """How many records the partition's runs will hold: each batch's, less its duplicates."""
    return sum(int(batch.size - _duplicates(batch).sum())
               for batch in _batches(hash_files, line_counts, batch_size, keep=True))


def _decide(run_files: list[Path], drop: _DropMap) -> int:
    """3. decide: within each run, all but the lowest line index of every hash are duplicates,
    marked in the drop map; returns the count of unique keys."""
    unique = 0
    for path in run_files:
        rec = np.fromfile(path, dtype=REC)
        path.unlink()
        if rec.size == 0:
            continue
        duplicates = _duplicate_lines(rec)
        unique += rec.size - duplicates.size
        drop.mark(duplicates)
        del rec, duplicates
    return unique


def _write_phase(blocks: list[tuple[Path, bool, int, int]], counts: list[int], drop_path: Path,
                 settings: DedupSettings, work_dir: Path) -> Counter:
    """4. write: each block's lines not marked in the drop map, into work_dir/out_*.part."""
    offsets = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)]).astype(np.int64)
    tasks = [(src, s, e, jsonl, drop_path, int(offsets[i]), counts[i], work_dir / f"out_{i:06d}.part")
             for i, (src, jsonl, s, e) in enumerate(blocks)]
    return merge_counts(parallel_map(_write_block, tasks, settings, "dedup: write"))


def dedup(in_dir: Path, out_dir: Path, settings: DedupSettings = DedupSettings(), hashed: Path | None = None) -> dict:
    """Exact line dedup across all sources of `in_dir`; with enabled=False the files pass
    through unchanged (the pipeline's dedup.enabled). `hashed`: see dedup_files."""
    manifest = read_input(STEP, in_dir)
    with staged_dir(out_dir, [in_dir], marker=MANIFEST, owned=SOURCE_FILES, written=step_files(STEP, source_files),
                    kind="dedup step's output") as stage:
        sources = [(Path(in_dir) / s["file"], s["jsonl"]) for s in manifest["sources"]]
        outputs = [stage / s["file"] for s in manifest["sources"]]
        if settings.enabled:
            # Its two maps (hash, write) share one Ray start when the stage runs alone; with
            # dedup off the files are copied, and no Ray is started.
            with engine_session(settings):
                stats = dedup_files(sources, outputs, settings, stage / ".work", hashed)
            shutil.rmtree(stage / ".work")
            recorded, stats = settings.recorded(), {**manifest["stats"], "dedup": stats}
        else:
            for (src, _), out in zip(sources, outputs):
                shutil.copyfile(src, out)
            # As prepare-dataset --no_dedup records it (no step ran: no min_chars, no counts), so
            # the DVC stages and prepare-dataset write the same metadata.
            recorded, stats = {"dedup": False}, manifest["stats"]
        manifest = {**manifest, "step": STEP.name, "settings": {**manifest["settings"], **recorded}, "stats": stats}
        write_json(stage / MANIFEST, manifest)
    return manifest
