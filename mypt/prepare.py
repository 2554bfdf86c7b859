"""The data steps, composed: clean -> dedup -> vocab -> tokenize -> shard -> split.

Each step reads the directory the previous step wrote (its `manifest.json` names the
sources in corpus order and carries settings and stats forward) and builds its own
output directory crash-safely (`io.staged_dir`). The DVC stages call one step each;
`prepare_dataset` runs them all in a work directory it removes afterwards. Both produce
byte-identical shards, and no step's output depends on the number of workers: work is cut
into blocks whose boundaries depend only on the data.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mypt.dedup import DedupSettings, dedup_files
from mypt.io import MANIFEST, atomic_file, concat_files, read_manifest, staged_dir, write_json
from mypt.parallel import merge_counts, parallel_map
from mypt.shards import DTYPE, METADATA_FILE, ShardWriter, read_metadata
from mypt.split import SPLIT_MODES, split
from mypt.text import (BLOCK_BYTES, DecodeCounter, InputError, LineFilter, block_docs, clean_lines, display_name,
                       doc_text, is_jsonl, looks_binary, open_binary, resolve_inputs, split_blocks)
from mypt.tokenizer import STATE_FILE, Tokenizer, gpt2_safe_boundary



@dataclass(frozen=True)
class PrepareSettings:
    """Everything that decides the bytes of a dataset (recorded in its metadata).

    Worker count and dedup memory budget are not here: they change speed, never output.
    """

    tokenization: str = "gpt2"
    normalize: bool = True
    filter: bool = True
    dedup: bool = True
    max_line_chars: int = 100_000  # line filter: longer lines are dropped as too_long
    dedup_min_chars: int = 24  # dedup: shorter keys are never treated as duplicates
    tokens_per_shard: int = 10_000_000
    val_fraction: float = 0.1
    chunk_tokens: int = 16384  # split unit: a document, or a chunk of this many tokens of a longer one
    split_mode: str = "random"  # random: seeded draw of units; tail: last val_fraction of each source
    seed: int = 1337

    def __post_init__(self):
        if self.tokenization not in ("gpt2", "char"):
            raise InputError(f"--tokenization {self.tokenization!r}: choose gpt2 or char")
        if not 0.0 <= self.val_fraction < 1.0:
            raise InputError(f"--val_fraction {self.val_fraction}: must be in [0, 1)")
        if self.tokens_per_shard < 1:
            raise InputError(f"--tokens_per_shard {self.tokens_per_shard}: must be >= 1")
        if self.chunk_tokens < 1:
            raise InputError(f"--chunk_tokens {self.chunk_tokens}: must be >= 1")
        if self.max_line_chars < 1:
            raise InputError(f"--max_line_chars {self.max_line_chars}: must be >= 1")
        if self.split_mode not in SPLIT_MODES:
            raise InputError(f"--split_mode {self.split_mode!r}: choose random or tail")


def _source_file(index: int, path: Path, jsonl: bool) -> str:
    stem = path.name.split(".")[0][:60]
    return f"{index:05d}-{stem}.{'jsonl' if jsonl else 'txt'}"


# ---------------------------------------------------------------------------------------------
# clean: decode, normalize, filter

def _read_chunks(path: Path, start: int, end: int):
    with open_binary(path) as f:
        if end >= 0:
            f.seek(start)
            yield f.read(end - start)
            return
        while lines := f.readlines(BLOCK_BYTES):  # gzip: stream in line-aligned pieces
            yield b"".join(lines)


def _clean_block(task) -> Counter:
    path, jsonl, start, end, normalize, max_line_chars, out = task
    line_filter = LineFilter(max_line_chars) if max_line_chars else None
    stats = Counter(lines_out=0, documents_in=0, documents_out=0, documents_emptied=0, bad_json_lines=0)
    drops = Counter(dict.fromkeys(LineFilter.REASONS, 0)) if line_filter else Counter()
    decoder = DecodeCounter()
    with open(out, "wb") as f:
        for chunk in _read_chunks(path, start, end):
            if not jsonl:
                lines = clean_lines(decoder.decode(chunk), normalize, line_filter, drops)
                stats["lines_out"] += len(lines)
                if lines:
                    f.write(("\n".join(lines) + "\n").encode("utf-8"))
                continue
            for raw in chunk.splitlines():
                if not raw.strip():
                    continue
                stats["documents_in"] += 1
                try:
                    record = json.loads(decoder.decode(raw))
                except ValueError:
                    record = None
                text = record.get("text") if isinstance(record, dict) else None
                if not isinstance(text, str):
                    stats["bad_json_lines"] += 1
                    continue
                lines = clean_lines(text, normalize, line_filter, drops)
                if all(not line.strip() for line in lines):
                    stats["documents_emptied"] += 1
                    continue
                stats["lines_out"] += len(lines)
                stats["documents_out"] += 1
                f.write(doc_text(lines, jsonl=True).encode("utf-8"))
    stats["invalid_utf8_bytes_replaced"] += decoder.replaced
    for reason, n in drops.items():
        stats[f"dropped_{reason}"] += n
    return stats


def clean(input_files: list[str], out_dir: Path, *, normalize: bool = True, filter: bool = True,
          max_line_chars: int = 100_000, workers: int = 1) -> dict:
    """Decode, normalize and filter the inputs into `out_dir` (one file per source)."""
    paths = resolve_inputs(input_files)
    with staged_dir(out_dir) as stage:
        sources, skipped, tasks = [], [], []
        for path in paths:
            if looks_binary(path):
                skipped.append(display_name(path))
                continue
            jsonl = is_jsonl(path)
            source = {"name": display_name(path), "file": _source_file(len(sources), path, jsonl),
                      "jsonl": jsonl, "bytes": path.stat().st_size}
            sources.append(source)
            blocks = split_blocks(path)
            source["_parts"] = [stage / f".part_{len(tasks) + i:06d}" for i in range(len(blocks))]
            tasks += [(path, jsonl, s, e, normalize, max_line_chars if filter else 0, part)
                      for (s, e), part in zip(blocks, source["_parts"])]
        if not sources:
            raise InputError(f"--input_files: no text to read; binary files skipped: {', '.join(skipped)}")
        stats = merge_counts(parallel_map(_clean_block, tasks, workers, "clean"))
        for source in sources:
            with atomic_file(stage / source["file"]) as f:
                size = concat_files(source.pop("_parts"), f)
            if not source["jsonl"]:
                stats["documents_in"] += 1
                stats["documents_out" if size else "documents_emptied"] += 1
        stats["files"] = len(sources)
        stats["skipped_binary_files"] = len(skipped)
        if stats["lines_out"] == 0:
            dropped = {k: v for k, v in stats.items() if k.startswith("dropped_")}
            raise InputError(f"everything was filtered away (drops: {dropped or 'none'}, "
                             f"bad JSON lines: {stats['bad_json_lines']}): check --input_files, "
                             "or pass --no_filter")
        manifest = {"step": "clean", "sources": sources, "skipped_binary_files": skipped,
                    "settings": {"normalize": normalize, "filter": filter,
                                 "max_line_chars": max_line_chars},
                    "stats": {"clean": dict(sorted(stats.items()))}}
        write_json(stage / MANIFEST, manifest)
    return manifest


# ---------------------------------------------------------------------------------------------
# dedup

def dedup(in_dir: Path, out_dir: Path, *, enabled: bool = True, min_chars: int = 24, memory_mb: int = 256,
          workers: int = 1) -> dict:
    """Exact line dedup across all sources of `in_dir` (see mypt.dedup); with
    enabled=False the files pass through unchanged (the pipeline's dedup.enabled)."""
    manifest = read_manifest(in_dir, "clean")
    settings = DedupSettings(min_chars=min_chars, memory_mb=memory_mb)
    with staged_dir(out_dir) as stage:
        sources = [(Path(in_dir) / s["file"], s["jsonl"]) for s in manifest["sources"]]
        outputs = [stage / s["file"] for s in manifest["sources"]]
        if enabled:
            stats = dedup_files(sources, outputs, settings, workers, stage / ".work")
            shutil.rmtree(stage / ".work")
        else:
            stats = {}
            for (src, _), out in zip(sources, outputs):
                shutil.copyfile(src, out)
        manifest = {**manifest, "step": "dedup",
                    "settings": {**manifest["settings"], "dedup": enabled, "dedup_min_chars": min_chars},
                    "stats": {**manifest["stats"], "dedup": stats}}
        write_json(stage / MANIFEST, manifest)
    return manifest


# ---------------------------------------------------------------------------------------------
# vocab + tokenize

def _block_chars(task) -> str:
    path, jsonl, start, end = task
    chars: set[str] = set()
    for lines in block_docs(path, start, end, jsonl):
        for line in lines:
            chars.update(line)
    return "".join(sorted(chars))


def build_vocab(in_dir: Path, tokenization: str, workers: int = 1) -> Tokenizer:
    """gpt2, or a char vocabulary of every character in `in_dir`'s sources (plus newline)."""
    if tokenization == "gpt2":
        return Tokenizer.gpt2()
    if tokenization != "char":
        raise InputError(f"--tokenization {tokenization!r}: choose gpt2 or char")
    manifest = read_manifest(in_dir, "clean or dedup")
    tasks = [(Path(in_dir) / s["file"], s["jsonl"], a, b) for s in manifest["sources"]
             for a, b in split_blocks(Path(in_dir) / s["file"])]
    chars = set("\n")  # every document ends with a newline
    for found in parallel_map(_block_chars, tasks, workers, "vocab"):
        chars.update(found)
    return Tokenizer.char(sorted(chars))


_TOKENIZERS: dict[str, Tokenizer] = {}


def _tokenizer_in_worker(state: dict) -> Tokenizer:
    key = repr(sorted(state.items()))
    if key not in _TOKENIZERS:
        _TOKENIZERS.clear()
        _TOKENIZERS[key] = Tokenizer.from_state(state)
    return _TOKENIZERS[key]


def _tokenize_block(task) -> tuple[int, dict]:
    path, jsonl, start, end, state, replacement, tokens_out, docs_out = task
    tok = _tokenizer_in_worker(state)
    replaced, ends, pieces, n = Counter(), [], [], 0

    def encode(text: str) -> np.ndarray:
        if tok.kind == "char" and replacement is not None:
            ids, unknown = tok.encode_with_replacement(text, replacement)
            replaced.update(unknown)
            return ids
        return tok.encode_array(text)

    for lines in block_docs(path, start, end, jsonl):
        ids = encode("\n".join(lines) + "\n")
        if jsonl and tok.eot_id is not None:
            ids = np.append(ids, np.uint32(tok.eot_id))
        pieces.append(ids)
        n += ids.size
        if jsonl:
            ends.append(n)
    np.concatenate(pieces or [np.zeros(0, DTYPE)]).astype(DTYPE).tofile(tokens_out)
    np.array(ends, dtype=np.uint64).tofile(docs_out)
    return n, dict(replaced)


def tokenize(in_dir: Path, out_dir: Path, tokenizer: Tokenizer, *, workers: int = 1) -> dict:
    """Encode every document of `in_dir` into `out_dir`/NNNNN.tokens (uint32) and
    NNNNN.docs (uint64 token offsets where each document ends). gpt2 appends the
    end-of-text id after every document."""
    manifest = read_manifest(in_dir, "clean or dedup")
    replacement = None
    if tokenizer.kind == "char":
        replacement = next((c for c in "? " if c in tokenizer.chars), None)
    with staged_dir(out_dir) as stage:
        state, tasks, parts = tokenizer.state(), [], []  # parts[i]: (tokens, docs) part files of source i
        for s in manifest["sources"]:
            path = Path(in_dir) / s["file"]
            safe = gpt2_safe_boundary if tokenizer.kind == "gpt2" and not s["jsonl"] else None
            parts.append([])
            for a, b in split_blocks(path, safe=safe):
                tok_part, doc_part = stage / f".t_{len(tasks):06d}", stage / f".d_{len(tasks):06d}"
                tasks.append((path, s["jsonl"], a, b, state, replacement, tok_part, doc_part))
                parts[-1].append((tok_part, doc_part))
        results = parallel_map(_tokenize_block, tasks, workers, "tokenize")
        replaced = merge_counts(Counter(r) for _, r in results)
        sources = []
        for i, s in enumerate(manifest["sources"]):
            n_tokens, ends = 0, []
            with atomic_file(stage / f"{i:05d}.tokens") as f:
                for tok_part, doc_part in parts[i]:
                    ends.append(np.fromfile(doc_part, dtype=np.uint64) + np.uint64(n_tokens))
                    doc_part.unlink()
                    n_tokens += concat_files([tok_part], f) // DTYPE.itemsize
                if not s["jsonl"] and n_tokens:  # a .txt file is one document
                    if tokenizer.eot_id is not None:
                        f.write(np.array([tokenizer.eot_id], dtype=DTYPE).tobytes())
                        n_tokens += 1
                    ends.append(np.array([n_tokens], dtype=np.uint64))
            ends_arr = np.concatenate(ends) if ends else np.zeros(0, np.uint64)
            with atomic_file(stage / f"{i:05d}.docs") as f:
                f.write(ends_arr.tobytes())
            sources.append({**s, "documents": int(ends_arr.size), "tokens": n_tokens})
        total = sum(s["tokens"] for s in sources)
        if total == 0:
            raise InputError("no tokens: every document is empty after cleaning and dedup")
        tokenizer.save(stage)
        tok_stats = {"tokens": total, "documents": sum(s["documents"] for s in sources)}
        if tokenizer.kind == "char":
            tok_stats["replaced_chars"] = sum(replaced.values())
            tok_stats["replaced_char_counts"] = dict(replaced.most_common(100))
        manifest = {**manifest, "step": "tokenize", "sources": sources, "tokenizer": state,
                    "settings": {**manifest["settings"], "tokenization": tokenizer.kind},
                    "stats": {**manifest["stats"], "tokenize": tok_stats}}
        manifest["settings"].setdefault("dedup", False)
        write_json(stage / MANIFEST, manifest)
    return manifest


# ---------------------------------------------------------------------------------------------
# shard: the whole token stream, in corpus order, cut into shards

def shard(in_dir: Path, out_dir: Path, *, tokens_per_shard: int) -> dict:
    manifest = read_manifest(in_dir, "tokenize")
    if tokens_per_shard < 1:
        raise InputError(f"--tokens_per_shard {tokens_per_shard}: must be >= 1")
    with staged_dir(out_dir) as stage:
        writer, ends = ShardWriter(stage, tokens_per_shard), []
        for i, _ in enumerate(manifest["sources"]):
            ends.append(np.fromfile(Path(in_dir) / f"{i:05d}.docs", dtype=np.uint64) + np.uint64(writer.tokens))
            tokens = np.memmap(Path(in_dir) / f"{i:05d}.tokens", dtype=DTYPE, mode="r") \
                if (Path(in_dir) / f"{i:05d}.tokens").stat().st_size else np.zeros(0, DTYPE)
            for pos in range(0, tokens.size, 1 << 24):
                writer.write(tokens[pos:pos + (1 << 24)])
            del tokens
        writer.close()
        with atomic_file(stage / "documents.bin") as f:
            f.write(np.concatenate(ends).tobytes())
        shutil.copyfile(Path(in_dir) / STATE_FILE, stage / STATE_FILE)
        manifest = {**manifest, "step": "shard",
                    "settings": {**manifest["settings"], "tokens_per_shard": tokens_per_shard}}
        write_json(stage / MANIFEST, manifest)
    return manifest


# ---------------------------------------------------------------------------------------------
# everything at once

def check_out_dir(out_dir: Path, settings: PrepareSettings, input_files: list[str], overwrite: bool) -> None:
    """Refuse to replace a different dataset (or foreign files) unless told to overwrite."""
    out_dir = Path(out_dir)
    if overwrite or not out_dir.exists() or not any(out_dir.iterdir()):
        return
    if not (out_dir / METADATA_FILE).is_file():
        raise InputError(f"--out_dir {out_dir} already holds files that are not a mypt dataset; "
                         "choose another directory or pass --overwrite")
    old = read_metadata(out_dir)
    new_sources = {(display_name(p), p.stat().st_size) for p in resolve_inputs(input_files)}
    old_sources = [(s["name"], s["bytes"]) for s in old["sources"]] + \
        [(n, None) for n in old.get("skipped_binary_files", [])]
    same_settings = all(old["settings"].get(k, v) == v for k, v in asdict(settings).items())
    if not same_settings or sorted(n for n, _ in old_sources) != sorted(n for n, _ in new_sources) \
            or any(b is not None and (n, b) not in new_sources for n, b in old_sources):
        raise InputError(f"--out_dir {out_dir} already holds a different dataset "
                         f"({old['total_tokens']:,} tokens from {len(old['sources'])} source(s)); "
                         "pass --overwrite to replace it, or choose another --out_dir")


def prepare_dataset(input_files: list[str], out_dir: Path, settings: PrepareSettings, *, workers: int = 1,
                    dedup_memory_mb: int = 256, tokenizer_from: Path | None = None, overwrite: bool = False) -> dict:
    """Clean, dedup, tokenize, shard and split `input_files` into the dataset `out_dir`.

    Intermediate files live in `.OUT.work` beside `out_dir` and are removed at the end.
    `tokenizer_from` reuses the vocabulary of another dataset or checkpoint (domain adaptation).
    """
    out_dir = Path(out_dir)
    check_out_dir(out_dir, settings, input_files, overwrite)
    tokenizer = None
    if tokenizer_from is not None:
        tokenizer = Tokenizer.load(tokenizer_from)
        if tokenizer.kind != settings.tokenization:
            raise InputError(f"--tokenizer_from {tokenizer_from} holds a {tokenizer.kind} tokenizer but "
                             f"--tokenization is {settings.tokenization}")
    elif settings.tokenization == "gpt2":
        tokenizer = Tokenizer.gpt2()  # fail now, not after cleaning, when the vocabulary is missing
    work = out_dir.parent / f".{out_dir.name}.work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        clean(input_files, work / "clean", normalize=settings.normalize, filter=settings.filter,
              max_line_chars=settings.max_line_chars, workers=workers)
        text_dir = work / "clean"
        if settings.dedup:
            dedup(work / "clean", work / "dedup", min_chars=settings.dedup_min_chars, memory_mb=dedup_memory_mb,
                  workers=workers)
            shutil.rmtree(work / "clean")
            text_dir = work / "dedup"
        tokenizer = tokenizer or build_vocab(text_dir, settings.tokenization, workers)
        tokenize(text_dir, work / "tokens", tokenizer, workers=workers)
        shutil.rmtree(text_dir)
        shard(work / "tokens", work / "shards", tokens_per_shard=settings.tokens_per_shard)
        shutil.rmtree(work / "tokens")
        return split(work / "shards", out_dir, val_fraction=settings.val_fraction, chunk_tokens=settings.chunk_tokens,
                     split_mode=settings.split_mode, seed=settings.seed)
    finally:
        shutil.rmtree(work, ignore_errors=True)
