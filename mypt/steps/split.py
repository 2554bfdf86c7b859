"""Step split: a sharded corpus becomes the guide's dataset directory (train/, val/,
tokenizer_state.json, dataset_metadata.json).

Each source is cut into units: a document, or a chunk of `chunk_tokens` tokens of a longer
one, and no unit longer than 1/MIN_UNITS_PER_SOURCE of its source (cut finer where needed,
but not below MIN_UNIT_TOKENS while FEWEST_UNITS remain). A seeded draw sends
round(val_fraction x units) units of every source to val, so val represents every source and
no unit is on both sides; train and val keep the corpus order. Sources too small for
MIN_UNITS_PER_SOURCE units of MIN_UNIT_TOKENS (a short document per file, a poem) are cut and
drawn as one source, pooled: the rules above hold of the pool.
`split_mode="tail"` instead puts the last val_fraction of each source in val (nanoGPT's
convention for one file), and keeps at least one token on each side.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mypt.errors import InputError, listed
from mypt.io import read_json, staged_dir, write_json
from mypt.names import METADATA_FILE, STATE_FILE, char_replacement
from mypt.settings import Settings, seed_setting, setting
from mypt.source_hash import SOURCE_HASHES
from mypt.shards import (FORMAT_VERSION, SPLITS, TOKENIZER_RECORD, ShardWriter, TokenStream, list_shards, listed_shards,
                         read_metadata, shard_names, tokenizer_sha256)
from mypt.steps import MANIFEST, Step, bad_lines_note, read_input
from mypt.tokenizers import Tokenizer
from mypt.text import skipped_lines

# What a dataset directory holds; a replace (--overwrite, the split stage by hand) carries over
# anything else a user put there (io.staged_dir).
DATASET_FILES = (METADATA_FILE, STATE_FILE, "train/shard_*.bin", "val/shard_*.bin")

STEP = Step("split", reads=("shard",))
# Every name the split stats can hold: the split stage's --stats (these and its shard counts)
# replaces a file of its names only.
COUNTERS = ("units", "val_units", "train_tokens", "val_tokens")



def dataset_files(dataset_dir: Path) -> list[str]:
    """What a dataset holds by its metadata (io.check_written: only those files are mypt's to
    replace): its tokenizer and the shards it lists. A shard it does not list was moved in by
    hand (the loader reads it, verify-dataset warns of it): the user's, refused, never deleted
    with the dataset's own shards (as --append_to refuses it)."""
    meta = read_metadata(dataset_dir)
    return [STATE_FILE, *(f for split in SPLITS for f in listed_shards(meta, split))]


# A source is cut into at least about this many units (finer than chunk_tokens where needed):
# drawing 10% of 5 units gives 0% or 20%, of 100 units about 10%.
MIN_UNITS_PER_SOURCE = 100
# But no finer than this while FEWEST_UNITS remain: a model's windows over val then cross few
# joins of units. Files of one 1,166-token document each were cut into 12-token units, and val
# was a soup of fragments (its loss 0.2 above that of whole documents), train full of holes.
# Sources of fewer than MIN_UNITS_PER_SOURCE x MIN_UNIT_TOKENS tokens are pooled, drawn as one.
MIN_UNIT_TOKENS = 256
FEWEST_UNITS = 10  # (a 10% draw needs 10 units at least)


def _unit_tokens(tokens: int, chunk_tokens: int) -> int:
    """The longest unit of a source (or pool) of `tokens` tokens (MIN_UNITS_PER_SOURCE,
    MIN_UNIT_TOKENS, FEWEST_UNITS), at most chunk_tokens."""
    finest = max(math.ceil(tokens / MIN_UNITS_PER_SOURCE), min(MIN_UNIT_TOKENS, math.ceil(tokens / FEWEST_UNITS)))
    return max(1, min(chunk_tokens, finest))


@dataclass(frozen=True)
class SplitSettings(Settings):
    LABEL = "split setting"

    val_fraction: float = setting(0.1, "Share of tokens drawn into val, from every source.", min=0.0, max=1.0,
                                  max_open=True)
    chunk_tokens: int = setting(16384, "Split unit: a document, or a chunk of this many tokens of a longer one.",
                                min=1)
    split_mode: str = setting("random", "random: a seeded draw of units from every source; tail: the last "
                                        "val_fraction of each source (nanoGPT's convention for a single file).",
                              choices=("random", "tail"))
    seed: int = seed_setting("Seed of the val draw.")


def _units(starts: np.ndarray, ends: np.ndarray, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """Cut documents [starts, ends) longer than `chunk` tokens into chunks of `chunk`."""
    n = np.maximum(1, -(-(ends - starts) // chunk))
    doc = np.repeat(np.arange(starts.size), n)
    k = np.arange(doc.size) - np.repeat(np.cumsum(n) - n, n)
    u_start = starts[doc] + k * chunk
    return u_start, np.minimum(u_start + chunk, ends[doc])


def _val_mask(n_units: int, val_fraction: float, rng: np.random.Generator) -> np.ndarray:
    mask = np.zeros(n_units, dtype=bool)
    if val_fraction <= 0 or n_units < 2:
        return mask
    k = min(max(1, round(val_fraction * n_units)), n_units - 1)  # each side gets at least one unit
    mask[rng.choice(n_units, size=k, replace=False)] = True
    return mask


def split(in_dir: Path, out_dir: Path, settings: SplitSettings = SplitSettings(), manifest: dict | None = None) -> dict:
    """Write `out_dir` as the guide's dataset: train/ and val/ shards, tokenizer_state.json
    and dataset_metadata.json (`manifest`: the shard step's in `in_dir`, where the caller read it)."""
    manifest = manifest or read_input(STEP, in_dir)
    doc_ends = np.fromfile(Path(in_dir) / "documents.bin", dtype=np.uint64)
    return split_tokens(manifest, _shard_stream(Path(in_dir), manifest), doc_ends, Path(in_dir), out_dir, settings)


def _shard_stream(in_dir: Path, manifest: dict) -> TokenStream:
    """The shard step's shards in `in_dir`, refused unless they are the files its manifest says it
    wrote (ceil(tokens / tokens_per_shard) of them, numbered from 0) and hold its token count: the
    split reads as many tokens as the manifest's sources hold, so a stray shard's tokens were left
    out unsaid, and a missing one shifted every later token onto other documents."""
    files = list_shards(in_dir)
    stream = TokenStream(files)
    tokens = sum(s["tokens"] for s in manifest["sources"])
    try:
        names = shard_names(tokens, manifest["settings"]["tokens_per_shard"])
    except ValueError as e:
        raise InputError(f"{in_dir}: its {MANIFEST} does not say what the shard step wrote ({e})") from None
    have = [p.name for p in files]
    if have != names or len(stream) != tokens:
        listed_names, found = set(names), set(have)  # (sets: a corpus may have 10**5 shards)
        stray, missing = [n for n in have if n not in listed_names], [n for n in names if n not in found]
        said = "".join(f"; {what}: {listed(which, 3)}" for what, which in (("not listed", stray), ("missing", missing))
                       if which)
        raise InputError(f"{in_dir}: its shards hold {len(stream):,} tokens in {len(files):,} files, but its "
                         f"{MANIFEST} says the shard step wrote {tokens:,} tokens in {len(names):,}{said}: the shards "
                         "are not the ones it wrote; run the shard stage again (`dvc repro`, or stages/shard.py)")
    return stream


def _drawn_units(sources: list[dict], doc_ends: np.ndarray, val_fraction: float, chunk_tokens: int,
                 split_mode: str, seed: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Each source's units (starts, ends: token positions in the corpus) and which go to val."""
    out, pool, t0, d0 = [], [], 0, 0
    for i, s in enumerate(sources):
        ends = doc_ends[d0:d0 + s["documents"]]
        starts = np.concatenate([[t0], ends[:-1]]).astype(np.int64)[:ends.size]
        t1, d0 = t0 + s["tokens"], d0 + s["documents"]
        if split_mode == "tail":  # at least one token of val, and one of train, from a source of two or more
            n_val = min(max(1, round(val_fraction * s["tokens"])), s["tokens"] - 1) \
                if val_fraction > 0 and s["tokens"] > 1 else 0
            cut = t1 - n_val
            out.append((np.array([t0, cut]), np.array([cut, t1]), np.array([False, True])))
        elif s["tokens"] >= MIN_UNITS_PER_SOURCE * MIN_UNIT_TOKENS:
            # No unit above 1/MIN_UNITS_PER_SOURCE of its source: a draw of units is then a draw of
            # about that share of its tokens (one long document among short ones, whole, was a
            # tenth of the units drawn and could be most of the val tokens).
            u_start, u_end = _units(starts, ends, _unit_tokens(s["tokens"], chunk_tokens))
            out.append((u_start, u_end, _val_mask(u_start.size, val_fraction, np.random.default_rng([seed, i]))))
        else:
            pool.append((len(out), starts, ends))
            out.append(None)
        t0 = t1
    if pool:  # the small sources, drawn as one
        chunk = _unit_tokens(sum(sources[i]["tokens"] for i, _, _ in pool), chunk_tokens)
        cut = [_units(starts, ends, chunk) for _, starts, ends in pool]
        val = _val_mask(sum(u.size for u, _ in cut), val_fraction, np.random.default_rng([seed, len(sources)]))
        at = 0
        for (i, _, _), (u_start, u_end) in zip(pool, cut):
            out[i], at = (u_start, u_end, val[at:at + u_start.size]), at + u_start.size
    return out


def split_tokens(manifest: dict, stream: TokenStream, doc_ends: np.ndarray, in_dir: Path, out_dir: Path,
                 settings: SplitSettings = SplitSettings()) -> dict:
    """split() of a sharded corpus given as the shard step's manifest, its token stream and
    document ends (shard.sharded_view gives them without the shards); `in_dir` holds the
    tokenizer state."""
    val_fraction, chunk_tokens, split_mode, seed = (settings.val_fraction, settings.chunk_tokens,
                                                    settings.split_mode, settings.seed)
    tps = manifest["settings"]["tokens_per_shard"]
    doc_ends = doc_ends.astype(np.int64)
    units = _drawn_units(manifest["sources"], doc_ends, val_fraction, chunk_tokens, split_mode, seed)
    runs, sources, n_units, n_val_units = [], [], 0, 0
    for s, (u_start, u_end, val) in zip(manifest["sources"], units):
        n_units += u_start.size
        n_val_units += int(val.sum())
        change = np.flatnonzero(val[1:] != val[:-1]) + 1
        for a, b in zip(np.concatenate([[0], change]), np.concatenate([change, [val.size]])):
            if b > a and u_end[b - 1] > u_start[a]:  # runs of units on the same side
                runs.append((int(u_start[a]), int(u_end[b - 1]), bool(val[a])))
        val_tokens = int((u_end - u_start)[val].sum())
        sources.append({"name": s["name"], "bytes": s["bytes"], **{k: s[k] for k in SOURCE_HASHES if k in s},
                        "documents": s["documents"], "tokens": s["tokens"],
                        "train_tokens": s["tokens"] - val_tokens, "val_tokens": val_tokens})
    train_tokens = sum(s["train_tokens"] for s in sources)
    val_tokens = sum(s["val_tokens"] for s in sources)
    if val_fraction > 0 and val_tokens == 0:
        raise InputError(f"the corpus is too small to split: {train_tokens:,} token(s) in {n_units} unit(s), none "
                         "drawn into val; add text, or pass --val_fraction 0")
    with staged_dir(out_dir, [in_dir], marker=METADATA_FILE, owned=DATASET_FILES, written=dataset_files,
                    kind="mypt dataset") as stage:
        # Checksums of the final shards only (verify-dataset checks them); hashed as written.
        train = ShardWriter(stage / "train", tps, checksums=True)
        val = ShardWriter(stage / "val", tps, first_index=math.ceil(train_tokens / tps), checksums=True)
        for start, end, is_val in runs:
            for tokens in stream.pieces(start, end):
                (val if is_val else train).write(tokens)
        train_shards, val_shards = train.close(), val.close()
        shutil.copyfile(Path(in_dir) / STATE_FILE, stage / STATE_FILE)
        tok = manifest["tokenizer"]
        meta = {
            "format_version": FORMAT_VERSION,
            "dtype": "uint32",
            "byte_order": "little",
            "tokenizer": {"kind": tok["kind"], "vocab_size": tok["vocab_size"], "eot_id": tok["eot_id"]},
            # Of the tokenizer the dataset gets (the file copied above), as its readers load it.
            TOKENIZER_RECORD: tokenizer_sha256(Tokenizer.load(stage)),
            "tokens_per_shard": tps,
            "total_tokens": train_tokens + val_tokens,
            "val_fraction": val_fraction,
            "train": {"tokens": train_tokens, "shards": [{"file": f"train/{n}", "tokens": c, "sha256": train.sha256[n]}
                                                         for n, c in train_shards]},
            "val": {"tokens": val_tokens, "shards": [{"file": f"val/{n}", "tokens": c, "sha256": val.sha256[n]}
                                                     for n, c in val_shards]},
            "sources": sources,
            "settings": {**manifest["settings"], **settings.recorded()},
            "stats": {**manifest["stats"], "split": {"units": n_units, "val_units": n_val_units,
                                                     "train_tokens": train_tokens, "val_tokens": val_tokens}},
        }
        meta.update({key: manifest[key] for key in SKIPPED_KEYS if manifest.get(key)})
        write_json(stage / METADATA_FILE, meta)
    return meta


def replacement_name(dataset_dir: Path) -> str:
    """The character that stands in for those outside the char vocabulary of a dataset, for a
    message ("'?'", or "a space")."""
    c = char_replacement(read_json(Path(dataset_dir) / STATE_FILE).get("chars", ""))
    return "a space" if c == " " else repr(c)


# What a dataset records of its preparation beyond the stats: said by summary_lines, kept per append too.
SKIPPED_KEYS = ("skipped_binary_files", "skipped_wide_text_files", "walk_skipped_files", "first_bad_json_line")


def summary_lines(meta: dict, out_dir: Path, appended: bool = False) -> list[str]:
    """What prepare-dataset (and the split stage) print about a finished dataset: its totals, then
    what cleaning and tokenizing did to its text, or with `appended`, to the text the last
    --append_to added (meta["appended"][-1]: the dataset's counts are summed over every run)."""
    n_train, n_val = len(meta["train"]["shards"]), len(meta["val"]["shards"])
    lines = [f"Total tokens: {meta['total_tokens']:,}",
             f"Total shards: {n_train + n_val}",
             f"Train shards: {n_train} ({meta['train']['tokens']:,} tokens) in {Path(out_dir) / 'train'}",
             f"Val shards:   {n_val} ({meta['val']['tokens']:,} tokens) in {Path(out_dir) / 'val'}"]
    part, tokens, of = meta, meta["total_tokens"], "the tokens"
    if appended:
        part = meta["appended"][-1]
        tokens, of = sum(part["stats"]["split"][f"{side}_tokens"] for side in ("train", "val")), "the appended tokens"
    # Of this run's split, with its own --val_fraction (an append may ask another share).
    settings = part.get("settings", {})
    asked, share = settings.get("val_fraction"), part["stats"]["split"]["val_tokens"] / max(tokens, 1)
    if isinstance(asked, (int, float)) and asked > 0 and abs(share - asked) > max(asked / 4, 0.005):
        # (A source or pool gets one val unit and one train unit at least, of its tokens / 10 when small.)
        tail = settings.get("split_mode") == "tail"
        lines.append(f"Val holds {share:.1%} of {of}, not the {asked:.1%} --val_fraction asked: the corpus is too "
                     "small to draw that share (each source keeps at least one " + ("token" if tail else "unit")
                     + " on each side); give more text" + ("" if tail else ", or --split_mode tail for a share of "
                                                                            "tokens"))
    if appended:
        part = {**part, "sources": meta["sources"][len(meta["sources"]) - len(part["sources"]):]}
        lines.append(f"Appended: {tokens:,} tokens from {len(part['sources'])} source(s)")
    clean_stats = part["stats"].get("clean", {})
    dropped = {k[len("dropped_"):]: v for k, v in clean_stats.items() if k.startswith("dropped_") and v}
    if dropped:
        lines.append(f"Lines dropped by the filter: {dropped}")
    if part["stats"].get("dedup"):
        lines.append(f"Duplicate lines dropped: {part['stats']['dedup']['duplicate_lines_dropped']:,}")
    empty = [s["name"] for s in part["sources"] if s.get("documents") == 0]
    if empty:
        lines.append("Inputs left without text (empty, or emptied by the filter or dedup): " + listed(empty, 5))
    lines += skipped_lines(part.get("skipped_binary_files", []),
                           list(part.get("skipped_wide_text_files", {}).values()),  # each its fix (clean wrote it)
                           part.get("walk_skipped_files"), clean_stats,
                           more_in="dataset_metadata.json, skipped_wide_text_files")
    if clean_stats.get("invalid_utf8_bytes_replaced"):
        lines.append(f"Invalid UTF-8 bytes replaced: {clean_stats['invalid_utf8_bytes_replaced']:,}")
    replaced = part["stats"].get("tokenize", {}).get("replaced_chars", 0)
    if replaced:  # a reused char vocabulary (--tokenizer_from, an append) that lacks characters of this text
        lines.append(f"Characters outside the tokenizer's vocabulary, each replaced by {replacement_name(out_dir)}: "
                     f"{replaced:,} ({replaced / max(tokens, 1):.1%} of {of}; the commonest in "
                     "dataset_metadata.json, replaced_char_counts)")
    unknown = part["stats"].get("tokenize", {}).get("unknown_tokens", 0)
    if unknown:  # an hf vocabulary with an unknown token, which words of this text became
        lines.append(f"Pieces outside the tokenizer's vocabulary, each encoded as its unknown token: {unknown:,} "
                     f"({unknown / max(tokens, 1):.1%} of {of}; the commonest in dataset_metadata.json, "
                     "unknown_token_counts)")
    if note := bad_lines_note(part):
        lines.append(note)
    return lines
