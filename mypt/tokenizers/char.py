"""char: the corpus' own characters, sorted; no special tokens (documents end with a
newline). The vocabulary is saved in tokenizer_state.json."""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from mypt.errors import TokenizerError
from mypt.names import char_replacement
from mypt.tokenizers.base import Tokenizer, register


@register
class CharTokenizer(Tokenizer):
    kind = "char"
    description = "the corpus' own characters"
    learns_vocabulary = True

    def __init__(self, config: object = None, kind: str | None = None, chars: Sequence[str] | None = None):
        super().__init__(config, kind)
        if not chars:
            raise TokenizerError("a char tokenizer needs its vocabulary: build it from the corpus "
                                 "(prepare-dataset does)")
        self.chars = sorted(set(chars))
        if any(len(c) != 1 for c in self.chars):
            raise TokenizerError("a char vocabulary holds single characters only")
        self._codepoints = np.array([ord(c) for c in self.chars], dtype=np.uint32)

    @classmethod
    def from_corpus(cls, char_sets: Iterable[str]) -> "CharTokenizer":
        chars = set("\n")  # every document ends with a newline
        for found in char_sets:
            chars.update(found)
        return cls(chars=sorted(chars))

    @classmethod
    def _from_state(cls, state: dict) -> "CharTokenizer":
        chars = state.get("chars") or ""
        if not isinstance(chars, str):  # saved as one string of the characters
            raise TokenizerError(f"its chars is {chars!r:.40}, not a string of the vocabulary's characters; the file "
                                 "was edited or damaged")
        return cls(chars=chars)

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def _ids(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        cps = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        ids = np.minimum(np.searchsorted(self._codepoints, cps), len(self._codepoints) - 1).astype(np.uint32)
        return ids, self._codepoints[ids] != cps

    def encode_array(self, text: str) -> np.ndarray:
        ids, unknown = self._ids(text)
        if unknown.any():
            bad = sorted({text[i] for i in np.flatnonzero(unknown)[:20]})
            raise TokenizerError(f"characters outside the char vocabulary: {bad!r}: build the vocabulary "
                                 "from this corpus instead")
        return ids

    def encode_lossy(self, text: str) -> tuple[np.ndarray, dict[str, int]]:
        # A stand-in for characters outside the vocabulary when a second corpus is tokenized
        # with a first corpus' vocabulary (domain adaptation).
        replacement = char_replacement(self.chars)
        if replacement is None:
            return self.encode_array(text), {}
        ids, unknown = self._ids(text)
        counts: dict[str, int] = {}
        if unknown.any():
            for i in np.flatnonzero(unknown):
                counts[text[i]] = counts.get(text[i], 0) + 1
            ids[unknown] = self._codepoints.searchsorted(ord(replacement))
        return ids, counts

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        ids = np.asarray(ids, dtype=np.int64)
        self.check_ids(ids)
        return "".join(self.chars[i] for i in ids.tolist())

    def _state(self) -> dict:
        return {"chars": "".join(self.chars)}
