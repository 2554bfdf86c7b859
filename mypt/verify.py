"""verify-dataset: does a dataset directory hold what its dataset_metadata.json says?

Checked for every shard: a regular file (a FIFO, a device or a directory is named, never
read), a whole number of uint32 tokens, the token count the metadata lists, the recorded
sha256 (datasets prepared before checksums were recorded have none: sizes, counts and ids
are still checked), and every token id below the tokenizer's vocab_size. Also: the metadata
parses and passes shards.check_metadata (the format mypt writes, each split's shards in its
own directory, none listed twice), its totals add up (the splits' and, where recorded, each
source's train and val tokens), every listed shard exists, and tokenizer_state.json agrees with
the metadata's tokenizer (its kind and sizes, and where recorded, the sha256 of its state).

A shard on disk that the metadata does not list is a warning, not a problem: the loader
reads whatever shards are in train/ and val/, so shards moved in by hand are a supported
(if unverifiable) way to grow a dataset. `strict=True` makes them problems.

Each shard is read once, in chunks of CHUNK_TOKENS (hash and id check from the same read),
so memory stays bounded whatever the shard size.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mypt.errors import MyptError, ShardError
from mypt.names import METADATA_FILE, SPLITS, STATE_FILE
from mypt.progress import progress
from mypt.shards import (DTYPE, TOKEN_BYTES, check_tokenizer_record, dataset_metadata, list_shards, listed_but_missing,
                         listed_entries, not_whole_tokens, open_shard, other_token_count, read_metadata, shard_stat)
from mypt.tokenizers import Tokenizer

CHUNK_TOKENS = 1 << 22  # 16 MiB per read


@dataclass
class Report:
    """What verify_dataset found: `problems` fail the check, `warnings` and `notes` do not."""

    dataset_dir: Path
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    shards: int = 0  # listed in the metadata and verified
    tokens: int = 0
    unlisted: int = 0  # on disk, not listed: their sizes and ids are checked, nothing to verify them against
    unlisted_tokens: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        """One line per problem, warning and note, then the summary line."""
        out = [*self.problems, *(f"warning: {w}" for w in self.warnings), *(f"note: {n}" for n in self.notes)]
        if self.ok:
            warned = f" ({len(self.warnings)} warning{'s' * (len(self.warnings) != 1)})" if self.warnings else ""
            extra = (f", and {self.unlisted} unlisted shard{'s' * (self.unlisted != 1)} of {self.unlisted_tokens:,} "
                     "tokens (ids checked, nothing to verify them against)") if self.unlisted else ""
            out.append(f"OK: {self.shards} shard{'s' * (self.shards != 1)}, {self.tokens:,} tokens verified in "
                       f"{self.dataset_dir}{extra}{warned}")
        else:
            out.append(f"FAILED: {len(self.problems)} problem{'s' * (len(self.problems) != 1)} in {self.dataset_dir}; "
                       "HINT: restore the named files (from a backup, `dvc checkout -f` or `dvc pull` of the dataset "
                       "in a DVC pipeline) or prepare the dataset again")
        return out


def _scan(path: Path, vocab_size: int | None, want_hash: bool, bar) -> tuple[str | None, int, int | None, int]:
    """Read `path` once: (sha256 or None, ids >= vocab_size, the first such id, its token offset)."""
    digest = hashlib.sha256() if want_hash else None
    buf = np.empty(CHUNK_TOKENS, DTYPE)
    view = memoryview(buf).cast("B")
    bad, first_id, first_at, done = 0, None, -1, 0
    with os.fdopen(open_shard(path)[0], "rb") as f:  # refused unless a regular file: a FIFO would block
        while n := f.readinto(view):  # a buffered file fills the view until end of file
            if digest is not None:
                digest.update(view[:n])
            ids = buf[:n // TOKEN_BYTES]  # a trailing partial token is reported by size, not here
            if vocab_size is not None:
                where = np.flatnonzero(ids >= vocab_size)
                if where.size and first_id is None:
                    first_id, first_at = int(ids[where[0]]), done + int(where[0])
                bad += int(where.size)
            done += ids.size
            bar.update(ids.size)
    return (digest.hexdigest() if digest else None), bad, first_id, first_at


def verify_dataset(dataset_dir: Path, strict: bool = False) -> Report:
    """Check the dataset `dataset_dir` against its metadata (see the module docstring)."""
    d = Path(dataset_dir)
    report = Report(d)
    meta = None
    try:
        meta = read_metadata(d)  # refuses a damaged JSON, another dtype or byte order, bad shard lists
    except MyptError as e:
        report.problems.append(str(e))
    vocab_size = _check_tokenizer(d, meta, report)
    expected = _expected(d, meta, report)
    if not any(p.parent.name == "train" for p in expected):
        report.problems.append(f"{d / 'train'}: no train shards; training needs at least one")
    _check_files(expected, vocab_size, strict, report, listed=meta is not None)
    return report


def check_split(dataset_dir: Path, split: str, vocab_size: int, meta: dict | None = None) -> None:
    """Raise ShardError naming the first problem verify-dataset finds in the shards `split` lists
    (a missing file, another token count, another sha256, an id >= vocab_size): mypt eval's check
    before it scores a split, whose loss on other bytes would be a number about other data. One
    read of the split, verify-dataset's. A dataset without metadata has nothing to check against.
    `meta`: the metadata where the caller has read it (shards.dataset_metadata), the one its pass
    over the split then reads by; else read here."""
    d = Path(dataset_dir)
    meta = dataset_metadata(d) if meta is None else meta
    if meta is None:
        return
    report = Report(d)
    _check_files(_listed(d, listed_entries(meta, split), report, {}), vocab_size, False, report)
    if report.problems:
        more = len(report.problems) - 1
        raise ShardError(f"{report.problems[0]}{f' (and {more} more)' * bool(more)}; HINT: run `mypt verify-dataset "
                         f"{d}`; restore the file (from a backup, `dvc checkout -f {d}` or `dvc pull` in a DVC "
                         "pipeline) or prepare the dataset again")


def _sha_differs(path: Path, sha: str, recorded: str) -> str:
    return f"{path}: sha256 {sha} differs from the {recorded} in {METADATA_FILE} (the bytes changed)"


def _check_tokenizer(d: Path, meta: dict | None, report: Report) -> int | None:
    """tokenizer_state.json loads and agrees with the metadata; the vocab_size ids are checked against."""
    tokenizer = None
    try:
        tokenizer = Tokenizer.load(d)
    except MyptError as e:
        report.problems.append(str(e))
    if meta is None:
        return tokenizer.vocab_size if tokenizer else None
    tok = meta["tokenizer"]
    if tokenizer is None:
        return tok["vocab_size"]  # still check ids against the metadata's vocabulary
    found = len(report.problems)
    for key, have in (("kind", tokenizer.kind), ("vocab_size", tokenizer.vocab_size), ("eot_id", tokenizer.eot_id)):
        if tok.get(key) != have:
            report.problems.append(f"{d / STATE_FILE}: {key} {have!r}, but {METADATA_FILE} says "
                                   f"{tok.get(key)!r}: the tokenizer is not the one the shards were made with")
    if len(report.problems) == found:  # (one line for one cause: another kind or size differs in its sha256 too)
        try:
            check_tokenizer_record(d, meta, tokenizer)  # the vocabulary itself, where the metadata records it
        except MyptError as e:
            report.problems.append(str(e))
    return tokenizer.vocab_size


def _expected(d: Path, meta: dict | None, report: Report) -> dict[Path, tuple[int, str | None] | None]:
    """Which files to read, and what each should be: (tokens, sha256 or None), or None for a
    shard the metadata does not list. Listed shards that are missing and totals that do not
    add up are reported here."""
    expected: dict[Path, tuple[int, str | None] | None] = {}
    for split in SPLITS:
        for path in list_shards(d / split):
            expected[path] = None
    if meta is None:
        return expected
    for split in SPLITS:
        if split not in meta:  # the loader reads such a split's files as they are; nothing to verify them by
            report.problems.append(f"{d / METADATA_FILE}: no {split} section: its shards cannot be verified")
            continue
        entries = meta[split]["shards"]
        _listed(d, entries, report, expected)
        listed = sum(e["tokens"] for e in entries)
        if meta[split].get("tokens") != listed:
            report.problems.append(f"{d / METADATA_FILE}: {split}.tokens is {meta[split].get('tokens')!r} but its "
                                   f"shards list {listed:,}")
    total = sum(e["tokens"] for split in SPLITS for e in listed_entries(meta, split))
    if meta.get("total_tokens") != total:
        report.problems.append(f"{d / METADATA_FILE}: total_tokens is {meta.get('total_tokens')!r} but the "
                               f"shards list {total:,}")
    _check_sources(d, meta, report)
    entries = [e for split in SPLITS for e in listed_entries(meta, split)]
    if not any(e.get("sha256") for e in entries):
        report.notes.append(f"{METADATA_FILE} records no checksums (prepared by an older mypt): "
                            "sizes, counts and token ids checked")
    else:  # a shard without one beside shards with one: said, not passed as verified
        report.warnings += [f"{d / e['file']}: no sha256 in {METADATA_FILE}, where other shards have one (an older "
                            "mypt's shard, appended to since, or an edit by hand): its bytes cannot be verified"
                            for e in entries if not e.get("sha256")]
    return expected


def _listed(d: Path, entries: list[dict], report: Report,
            expected: dict[Path, tuple[int, str | None] | None]) -> dict[Path, tuple[int, str | None] | None]:
    """`expected` with each listed shard's (tokens, sha256 or None); a listed shard that is missing
    is a problem, and not read."""
    for e in entries:
        path = d / e["file"]
        if not path.exists():
            report.problems.append(listed_but_missing(path, e["tokens"]))
            expected.pop(path, None)  # (a dangling link: listed by the directory, nothing to read)
        else:
            expected[path] = (e["tokens"], e.get("sha256"))
    return expected


def _check_sources(d: Path, meta: dict, report: Report) -> None:
    """The per-source counts (what each input gave to train and val) add up to each source's
    tokens and to the splits' totals. Checked where the metadata has them (prepare-dataset and
    the split stage write them; a dataset from elsewhere may not)."""
    sources = meta.get("sources")
    keys = ("tokens", "train_tokens", "val_tokens")
    if not isinstance(sources, list) or not sources or \
            not all(isinstance(s, dict) and all(isinstance(s.get(k), int) for k in keys) for s in sources):
        return
    for s in sources:
        if s["train_tokens"] + s["val_tokens"] != s["tokens"]:
            report.problems.append(f"{d / METADATA_FILE}: source {s.get('name')!r} has {s['tokens']:,} tokens but "
                                   f"gives {s['train_tokens']:,} to train and {s['val_tokens']:,} to val")
    for split in SPLITS:
        have, want = sum(s[f"{split}_tokens"] for s in sources), meta.get(split, {}).get("tokens")
        if split in meta and have != want:
            report.problems.append(f"{d / METADATA_FILE}: its sources give {have:,} tokens to {split}, but "
                                   f"{split}.tokens is {want!r}")


def _check_files(expected: dict[Path, tuple[int, str | None] | None], vocab_size: int | None, strict: bool,
                 report: Report, listed: bool = True) -> None:
    """Each regular file read once; a FIFO, a device or a directory is a problem, never read.
    `listed`: the metadata was read (else no shard is said to be missing from its lists: the
    unreadable metadata is the problem, named once)."""
    sizes = {}
    for path in sorted(expected):
        try:
            sizes[path] = shard_stat(path).st_size
        except ShardError as e:
            report.problems.append(str(e))
    with progress(sum(sizes.values()) // TOKEN_BYTES, "verify", unit="tok") as bar:
        for path, size in sizes.items():
            want = expected[path]
            if want is None and listed:
                (report.problems if strict else report.warnings).append(
                    f"{path}: not listed in {METADATA_FILE} (moved in by hand?): training reads it, but it "
                    "cannot be verified against a checksum")
            sha, bad, first_id, first_at = _scan(path, vocab_size, want is not None and want[1] is not None, bar)
            tokens = size // TOKEN_BYTES
            if size % TOKEN_BYTES:
                report.problems.append(f"{not_whole_tokens(path, size)} (truncated?)")
            if want is not None and tokens != want[0]:
                report.problems.append(other_token_count(path, tokens, want[0]))
            elif want is not None and want[1] is not None and sha != want[1]:  # a size change says it already
                report.problems.append(_sha_differs(path, sha, want[1]))
            if bad:
                report.problems.append(f"{path}: {bad:,} token id(s) >= vocab_size {vocab_size} (first: id "
                                       f"{first_id} at token {first_at:,})")
            if want is None:
                report.unlisted += 1
                report.unlisted_tokens += tokens
            else:
                report.shards += 1
                report.tokens += tokens
