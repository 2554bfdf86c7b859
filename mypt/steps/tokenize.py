"""Step tokenize: every document of a cleaned (or deduped) corpus to token ids.

Writes NNNNN.tokens (uint32 ids) and NNNNN.docs (uint64 offsets where each document ends)
per source. A kind with an end-of-text id appends it after every document.
"""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mypt.errors import InputError, TokenizerError, naming
from mypt.io import atomic_file, join_parts, staged_dir, write_json
from mypt.names import STATE_FILE
from mypt.parallel import merge_counts, parallel_map
from mypt.settings import Settings, engine_setting, ray_address_setting, setting, workers_setting
from mypt.shards import DTYPE
from mypt.steps import MANIFEST, Step, part_file, read_input, step_files
from mypt.text import BLOCK_BYTES, block_docs, block_text, split_blocks
from mypt.tokenizers import Tokenizer, check_spec, spec_forms, spec_help

STEP = Step("tokenize", reads=("clean", "dedup"))
# Every count the tokenize stats hold beside unknown_token_counts (an hf tokenizer's words that
# became its unknown token, per token) and replaced_char_counts: the tokenize stage's --stats
# replaces a file of these names only.
COUNTERS = ("tokens", "documents", "replaced_chars", "unknown_tokens")
# Each source's tokens and where its documents end (`00003.tokens`, `00003.docs`), the tokenizer.
OWNED = ("[0-9]*.tokens", "[0-9]*.docs", STATE_FILE)
ENDS = np.dtype(np.uint64)  # a .docs file's entries: where each document ends, in tokens
WRITTEN = step_files(STEP, lambda m: [STATE_FILE, *(part_file(i, kind) for i in range(len(m["sources"]))
                                                   for kind in ("tokens", "docs"))])


@dataclass(frozen=True)
class TokenizeSettings(Settings):
    LABEL = "tokenize setting"

    tokenization: str = setting("gpt2", f"{spec_help()}.", check=check_spec,
                                metavar="[" + "|".join(spec_forms()) + "]")
    workers: int | None = workers_setting()
    engine: str = engine_setting()
    ray_address: str | None = ray_address_setting()


class _CannotEncode(TokenizerError):
    """A guard, raised in a worker: the tokenizer failed on a block's text (no known text fails
    since gpt2 cuts long whitespace runs). args: the block's file (this step's copy of an input,
    in a work folder removed on failure) and the error; tokenize() names the input instead."""


def _tokenize_block(task, tok: Tokenizer) -> tuple[int, dict]:
    path, jsonl, start, end, tokens_out, docs_out = task
    replaced, ends, pieces, n = Counter(), [], [], 0
    # A document's end-of-text id is a piece of its own: appending it to the document's ids would copy them.
    eot = np.array([tok.eot_id], dtype=DTYPE) if jsonl and tok.eot_id is not None else None
    # A .txt block is encoded as it is: its last line may lack a newline (cleaned unchanged).
    # Without an end-of-text id a newline ends each document, encoded with its text as a JSONL
    # document's is (a Llama 3 BPE has a token for ".\n": ".", "\n" apart would be other ids).
    texts = ("\n".join(lines) + "\n" for lines in block_docs(path, start, end, jsonl)) if jsonl \
        else [block_text(path, start, end)]
    if not jsonl and tok.eot_id is None and end == path.stat().st_size and not texts[0].endswith("\n"):
        texts[0] += "\n"  # (the file's last block)
    for text in texts:
        try:
            ids, unknown = tok.encode_lossy(text)
        except TokenizerError as e:
            raise _CannotEncode(path, str(e)) from None
        replaced.update(unknown)
        pieces.append(ids)
        n += ids.size
        if eot is not None:
            pieces.append(eot)
            n += 1
        if jsonl:
            ends.append(n)
    with naming(tokens_out):
        np.concatenate(pieces or [np.zeros(0, DTYPE)]).astype(DTYPE, copy=False).tofile(tokens_out)
    if jsonl:  # (a .txt block's ends: none, its file is one document that tokenize() ends)
        with naming(docs_out):
            np.array(ends, dtype=ENDS).tofile(docs_out)
    return n, dict(replaced)


def _whole_file_warning(name: str, size: int, tokenizer: Tokenizer) -> str:
    """The line said, before encoding, of a .txt source encoded whole: its tokenizer cuts a document
    nowhere (an hf pre-tokenizer that splits no text, or none at newlines or spaces: a Metaspace with
    split false), and an hf encoding holds about 200 bytes a byte (4 MiB of text: ~800 MB)."""
    return (f"warning: {name} ({size / 2**20:,.1f} MiB) is encoded whole, in one process: the {tokenizer.kind} "
            f"tokenizer has no place where a .txt document may be cut without changing its ids (its pre-tokenizer "
            f"splits no newline or space apart, or is a Split regex mypt does not know), and holds about "
            f"{size * 200 / 1e9:,.1f} GB for it; a corpus as JSONL (a document a line) or one file per document is "
            "encoded a document at a time")


def _join_ends(doc_parts: list[Path], dest: Path) -> int:
    """A source's document ends, its blocks' parts joined into `dest`, counted from the source's
    first token (each block counts from its own: its ends move by the tokens of the blocks before
    it, a block's last end being its token count); the parts are deleted. Returns the number of
    documents. A lone part is the source's as it is (join_parts renames it into place)."""
    if len(doc_parts) < 2:
        return join_parts(doc_parts, dest) // ENDS.itemsize
    before = documents = 0
    with atomic_file(dest) as f:
        for part in doc_parts:
            ends = np.fromfile(part, dtype=ENDS)
            f.write((ends + ENDS.type(before)).tobytes())
            before += int(ends[-1]) if ends.size else 0
            documents += ends.size
            part.unlink()
    return documents


def tokenize(in_dir: Path, out_dir: Path, tokenizer: Tokenizer,
             settings: TokenizeSettings = TokenizeSettings()) -> dict:
    """Encode every document of `in_dir` into `out_dir` with `tokenizer` (settings.tokenization
    is the vocab step's; here only the worker count matters)."""
    manifest = read_input(STEP, in_dir)
    with staged_dir(out_dir, [in_dir], marker=MANIFEST, owned=OWNED, written=WRITTEN,
                    kind="tokenize step's output") as stage:
        tasks, parts = [], []  # parts[i]: (tokens, docs) part files of source i
        for s in manifest["sources"]:
            path = Path(in_dir) / s["file"]
            # A .txt source is one document that blocks cut: only where the encoding allows.
            safe = tokenizer.block_boundary if not s["jsonl"] else None
            if getattr(safe, "cuts_nowhere", False) and (size := path.stat().st_size) > \
                    (tokenizer.block_bytes or BLOCK_BYTES):
                print(_whole_file_warning(s["name"], size, tokenizer), file=sys.stderr)
            parts.append([])
            for a, b in split_blocks(path, tokenizer.block_bytes, safe=safe):
                tok_part, doc_part = stage / f".t_{len(tasks):06d}", stage / f".d_{len(tasks):06d}"  # (.d_: .jsonl's)
                tasks.append((path, s["jsonl"], a, b, tok_part, doc_part))
                parts[-1].append((tok_part, doc_part))
        try:
            # The tokenizer (its state: an hf tokenizer.json is MBs) goes to each worker once, not per task.
            results = parallel_map(_tokenize_block, tasks, settings, "tokenize", shared=tokenizer, shared_dir=stage)
        except _CannotEncode as e:
            path, error = e.args
            name = next(src["name"] for src in manifest["sources"] if Path(in_dir) / src["file"] == path)
            raise TokenizerError(f"{name}: {error}; remove or shorten that text in {name}, or choose another "
                                 "--tokenization") from None
        replaced = merge_counts(Counter(r) for _, r in results)
        sources = []
        for i, s in enumerate(manifest["sources"]):
            tokens_path, docs_path = stage / part_file(i, "tokens"), stage / part_file(i, "docs")
            n_tokens = join_parts([t for t, _ in parts[i]], tokens_path) // DTYPE.itemsize
            if s["jsonl"]:
                documents = _join_ends([d for _, d in parts[i]], docs_path)
            else:  # a .txt file is one document
                if n_tokens and tokenizer.eot_id is not None:  # (without one, its last block ended it: a newline)
                    with open(tokens_path, "ab") as f:
                        f.write(np.array([tokenizer.eot_id], dtype=DTYPE).tobytes())
                    n_tokens += 1
                documents = 1 if n_tokens else 0
                with atomic_file(docs_path) as f:
                    f.write(np.array([n_tokens] * documents, dtype=ENDS).tobytes())
            sources.append({**s, "documents": documents, "tokens": n_tokens})
        total = sum(s["tokens"] for s in sources)
        if total == 0:
            raise InputError("no tokens: every document is empty after cleaning and dedup")
        tokenizer.save(stage)
        tok_stats = {"tokens": total, "documents": sum(s["documents"] for s in sources)}
        if tokenizer.learns_vocabulary:  # a learned vocabulary may miss characters of this corpus
            tok_stats["replaced_chars"] = sum(replaced.values())
            tok_stats["replaced_char_counts"] = dict(replaced.most_common(100))
        elif replaced:  # an hf vocabulary with an unknown token ([UNK]) that this corpus's words became
            tok_stats["unknown_tokens"] = sum(replaced.values())
            tok_stats["unknown_token_counts"] = dict(replaced.most_common(100))
        manifest = {**manifest, "step": STEP.name, "sources": sources, "tokenizer": tokenizer.state(),
                    "settings": {**manifest["settings"], "tokenization": tokenizer.kind},
                    "stats": {**manifest["stats"], "tokenize": tok_stats}}
        manifest["settings"].setdefault("dedup", False)
        write_json(stage / MANIFEST, manifest)
    return manifest
