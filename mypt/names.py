"""Names shared by modules that must not import each other: the files of a dataset and a
checkpoint, the splits, a char vocabulary's stand-in character, and where the GPT-2
vocabulary lives and its checksum.

A leaf (it imports no mypt module): the DVC stages' deps follow imports, so a step that only
names a file (shard, split copy the tokenizer state; fetch installs the GPT-2 vocabulary)
imports it from here, and an edit of a tokenizer kind does not rerun it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

STATE_FILE = "tokenizer_state.json"  # a tokenizer's state, in a dataset and in a checkpoint
CONFIG_FILE = "config.json"  # a checkpoint's settings and its files' sha256 (a Hugging Face model has one too)
METADATA_FILE = "dataset_metadata.json"  # what a dataset's shards are; written last
MANIFEST = "manifest.json"  # what a pipeline step's output directory holds: sources, settings, stats
SPLITS = ("train", "val")  # a dataset's splits, in the order shards are numbered
WORK_MARK = ".mypt-work"  # inside each work directory mypt makes beside an output: a leftover it may remove
EXPORT_RECORD = "mypt_export.json"  # what `mypt export-hf` wrote into a directory, with each file's sha256
TIED = "transformer.wte.weight"  # GPT's input embedding, tied to lm_head.weight: a checkpoint stores it once


def unstored(model_config) -> frozenset:
    """The state dict's names a checkpoint leaves out for a model of `model_config` (a
    GPTConfig): a tied embedding, which is lm_head.weight under another name."""
    return frozenset({TIED}) if model_config.tie_embeddings else frozenset()

# A char vocabulary's stand-ins for the characters it lacks (a corpus tokenized with another's
# vocabulary): the first it has. Here, not in mypt.tokenizers.char, for the split step's summary,
# which names it.
CHAR_REPLACEMENTS = "? "


def char_replacement(chars: str) -> str | None:
    """The character that stands in for those outside the char vocabulary `chars` (None: it has
    no stand-in, and such a character is an error)."""
    return next((c for c in CHAR_REPLACEMENTS if c in chars), None)


# The GPT-2 vocabulary: tiktoken's r50k_base file, installed by `mypt install-gpt2-vocab`.
R50K_URL = "https://openaipublic.blob.core.windows.net/encodings/r50k_base.tiktoken"
R50K_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"


def r50k_path(mypt_cache: Path) -> Path:
    """Where tiktoken looks the r50k_base file up: $TIKTOKEN_CACHE_DIR when the user set it,
    else `mypt_cache`/tiktoken (io.cache_dir's), under the sha1 of its URL."""
    env = os.environ.get("TIKTOKEN_CACHE_DIR")
    folder = Path(env) if env else Path(mypt_cache) / "tiktoken"
    return folder / hashlib.sha1(R50K_URL.encode()).hexdigest()


# A file name may have at most 255 bytes (NAME_MAX on Linux and macOS).
NAME_MAX = 255


def sibling(path: Path, suffix: str) -> Path:
    """mypt's hidden companion of `path` (`.NAME.SUFFIX` beside it: a temporary file, a
    staging, old or work directory, a lock). A name that is legal by itself but too long with
    the dot and suffix (a 250-byte --out_dir name) gets a shortened companion, its end replaced
    by a hash of the whole name, so each name keeps its own."""
    path = Path(path)
    name = f".{path.name}.{suffix}"
    if len(os.fsencode(name)) > NAME_MAX:
        digest = hashlib.sha256(os.fsencode(path.name)).hexdigest()[:16]
        name = f".{os.fsencode(path.name)[:160].decode('utf-8', 'ignore')}~{digest}.{suffix}"
    return path.with_name(name)


def is_mypt_config(data) -> bool:
    """Whether `data`, a config.json as parsed, is one mypt wrote (an object with its
    format_version), not a Hugging Face model's or a user's."""
    return isinstance(data, dict) and "format_version" in data
