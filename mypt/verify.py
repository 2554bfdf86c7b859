"""verify-dataset: does a dataset directory hold what its dataset_metadata.json says?

Checked for every shard: a whole number of uint32 tokens, the token count the metadata
lists, the recorded sha256 (datasets prepared before checksums were recorded have none:
sizes, counts and ids are still checked), and every token id below the tokenizer's
vocab_size. Also: the metadata parses and its totals add up, every listed shard exists,
tokenizer_state.json agrees with the metadata's tokenizer.

A shard on disk that the metadata does not list is a warning, not a problem: the loader
reads whatever shards are in train/ and val/, so shards moved in by hand are a supported
(if unverifiable) way to grow a dataset. `strict=True` makes them problems.

Each shard is read once, in chunks of CHUNK_TOKENS (hash and id check from the same read),
so memory stays bounded whatever the shard size.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mypt.errors import MyptError
from mypt.parallel import progress
from mypt.shards import DTYPE, METADATA_FILE, TOKEN_BYTES, list_shards, read_metadata
from mypt.tokenizers import STATE_FILE, Tokenizer

SPLITS = ("train", "val")
CHUNK_TOKENS = 1 << 22  # 16 MiB per read


@dataclass
class Report:
    """What verify_dataset found: `problems` fail the check, `warnings` and `notes` do not."""

    dataset_dir: Path
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    shards: int = 0
    tokens: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        """One line per problem, warning and note, then the summary line."""
        out = [*self.problems, *(f"warning: {w}" for w in self.warnings), *(f"note: {n}" for n in self.notes)]
        if self.ok:
            warned = f" ({len(self.warnings)} warning{'s' * (len(self.warnings) != 1)})" if self.warnings else ""
            out.append(f"OK: {self.shards} shards, {self.tokens:,} tokens verified in {self.dataset_dir}{warned}")
        else:
            out.append(f"FAILED: {len(self.problems)} problem{'s' * (len(self.problems) != 1)} in {self.dataset_dir}; "
                       "HINT: restore the named files (from a backup or `dvc pull`) or prepare the dataset again")
        return out


def _listed(meta: dict) -> dict[str, list[tuple[str, int, str | None]]]:
    """split -> [(file, tokens, sha256 or None)] from the metadata; KeyError/TypeError when malformed."""
    out = {}
    for split in SPLITS:
        out[split] = [(str(e["file"]), int(e["tokens"]), e.get("sha256")) for e in meta[split]["shards"]]
    return out


def _scan(path: Path, vocab_size: int | None, want_hash: bool, bar) -> tuple[str | None, int, int | None, int]:
    """Read `path` once: (sha256 or None, ids >= vocab_size, the first such id, its token offset)."""
    digest = hashlib.sha256() if want_hash else None
    buf = np.empty(CHUNK_TOKENS, DTYPE)
    view = memoryview(buf).cast("B")
    bad, first_id, first_at, done = 0, None, -1, 0
    with open(path, "rb") as f:
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
    meta, listed = None, None
    try:
        meta = read_metadata(d)
        listed = _listed(meta)
    except MyptError as e:  # damaged JSON included (io.read_json)
        report.problems.append(str(e))
    except (KeyError, TypeError, AttributeError) as e:
        report.problems.append(f"{d / METADATA_FILE}: malformed shard lists ({type(e).__name__}: {e}); "
                               "prepare the dataset again")

    tokenizer = None
    try:
        tokenizer = Tokenizer.load(d)
    except MyptError as e:
        report.problems.append(str(e))
    vocab_size = tokenizer.vocab_size if tokenizer else None
    if meta is not None:
        tok = meta.get("tokenizer") if isinstance(meta.get("tokenizer"), dict) else {}
        if tokenizer is not None:
            for key, have in (("kind", tokenizer.kind), ("vocab_size", tokenizer.vocab_size),
                              ("eot_id", tokenizer.eot_id)):
                if tok.get(key) != have:
                    report.problems.append(f"{d / STATE_FILE}: {key} {have!r}, but {METADATA_FILE} says "
                                           f"{tok.get(key)!r}: the tokenizer is not the one the shards were made with")
        elif isinstance(tok.get("vocab_size"), int):
            vocab_size = tok["vocab_size"]  # still check ids against the metadata's vocabulary

    # Which files to read, and what each should be (None: a shard the metadata does not list).
    expected: dict[Path, tuple[int, str | None] | None] = {}
    for split in SPLITS:
        for path in list_shards(d / split):
            expected[path] = None
    if listed is not None:
        for split, entries in listed.items():
            for file, tokens, sha in entries:
                path = d / file
                if not path.is_file():
                    report.problems.append(f"{path}: listed in {METADATA_FILE} ({tokens:,} tokens) but missing")
                    expected.pop(path, None)
                else:
                    expected[path] = (tokens, sha)
            if meta[split].get("tokens") != sum(t for _, t, _ in entries):
                report.problems.append(f"{d / METADATA_FILE}: {split}.tokens is {meta[split].get('tokens')!r} but its "
                                       f"shards list {sum(t for _, t, _ in entries):,}")
        total = sum(t for entries in listed.values() for _, t, _ in entries)
        if meta.get("total_tokens") != total:
            report.problems.append(f"{d / METADATA_FILE}: total_tokens is {meta.get('total_tokens')!r} but the "
                                   f"shards list {total:,}")
        if not any(sha for entries in listed.values() for _, _, sha in entries):
            report.notes.append(f"{METADATA_FILE} records no checksums (prepared by an older mypt): "
                                "sizes, counts and token ids checked")
    if not any(p.parent.name == "train" for p in expected):
        report.problems.append(f"{d / 'train'}: no train shards; training needs at least one")

    with progress(sum(p.stat().st_size // TOKEN_BYTES for p in expected), "verify", unit="tok") as bar:
        for path, want in sorted(expected.items()):
            if want is None:
                (report.problems if strict else report.warnings).append(
                    f"{path}: not listed in {METADATA_FILE} (moved in by hand?): training reads it, but it "
                    "cannot be verified against a checksum")
            size = path.stat().st_size
            sha, bad, first_id, first_at = _scan(path, vocab_size, want is not None and want[1] is not None, bar)
            tokens = size // TOKEN_BYTES
            if size % TOKEN_BYTES:
                report.problems.append(f"{path}: {size} bytes is not a whole number of uint32 tokens (truncated?)")
            if want is not None and tokens != want[0]:
                report.problems.append(f"{path}: {tokens:,} tokens on disk, {want[0]:,} in {METADATA_FILE}")
            elif want is not None and want[1] is not None and sha != want[1]:  # a size change says it already
                report.problems.append(f"{path}: sha256 {sha} differs from the {want[1]} in {METADATA_FILE} "
                                       "(the bytes changed)")
            if bad:
                report.problems.append(f"{path}: {bad:,} token id(s) >= vocab_size {vocab_size} (first: id "
                                       f"{first_id} at token {first_at:,})")
            report.shards += 1
            report.tokens += tokens
    return report

