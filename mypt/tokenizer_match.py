"""The one rule of tokenizer compatibility: data, a model and a --tokenization flag go
together only when they hold the same tokenizer (the same id means the same text; a loss over
ids of another vocabulary means nothing). Light: the tokenizer registry only, no torch, so
prepare-dataset and append use it too."""

from __future__ import annotations

from mypt.errors import ConfigError, DataError, MyptError
from mypt.tokenizers import Tokenizer, make_tokenizer, spec_kind

# A tokenizer, or a --tokenization value (`char`, `hf:tok.json`) or the kind a dataset's
# metadata records.
TokenizerOrSpec = Tokenizer | str


def same_tokenizer(ours: TokenizerOrSpec, theirs: TokenizerOrSpec) -> bool:
    """Whether two tokenizers agree: equal identities (Tokenizer.identity: their states, an hf
    tokenizer.json as the JSON it holds). A spec names a kind, and with an argument
    (hf:PATH) the tokenizer built from it; a bare kind (char learns its vocabulary from the
    corpus, a dataset's recorded kind) agrees with every tokenizer of that kind."""
    if isinstance(ours, str) and not isinstance(theirs, str):
        ours, theirs = theirs, ours
    if not isinstance(theirs, str):
        return ours.identity() == theirs.identity()
    kind = ours.kind if isinstance(ours, Tokenizer) else spec_kind(ours)
    if kind != spec_kind(theirs):
        return False
    if isinstance(ours, str) or not theirs.partition(":")[2]:
        return True
    return make_tokenizer(theirs).identity() == ours.identity()


def prepare_again(source: object) -> str:
    """The hint of a dataset tokenized with another vocabulary than `source`'s (a dataset or
    checkpoint directory), which it must match."""
    return f"prepare it again with that tokenizer (prepare-dataset --tokenizer_from {source})"


def describe(tokenizer: TokenizerOrSpec) -> str:
    """A tokenizer as the message shows it: its kind and vocabulary size, or the spec."""
    return tokenizer if isinstance(tokenizer, str) else f"{tokenizer.kind}, {tokenizer.vocab_size} tokens"


def check_tokenizer(ours: TokenizerOrSpec, theirs: TokenizerOrSpec, ours_from: str, theirs_from: str, hint: str,
                    error: type[MyptError] = DataError) -> None:
    """Refuse `theirs` (what `theirs_from` names: a flag and its value) unless it is the
    tokenizer of `ours_from` (`ours`), with the one message, ending with `hint` (how to make
    them agree)."""
    if same_tokenizer(ours, theirs):
        return
    kind = theirs.kind if isinstance(theirs, Tokenizer) else spec_kind(theirs)
    if kind == (ours.kind if isinstance(ours, Tokenizer) else spec_kind(ours)):
        if describe(theirs) == describe(ours):  # (the same size: "another vocabulary (hf, 300 tokens)" twice)
            raise error(f"{theirs_from} is another {kind} tokenizer than {ours_from} (both {describe(ours)}, but not "
                        f"the same ones): {hint}")
        raise error(f"{theirs_from} is another {kind} tokenizer, with another vocabulary ({describe(theirs)}), "
                    f"than {ours_from} ({describe(ours)}): {hint}")
    raise error(f"{theirs_from} has another vocabulary ({describe(theirs)}) than {ours_from} ({describe(ours)}): {hint}")


def check_model_tokenizer(model_or_config: object, tokenizer: object, who: str, hint: str,
                          error: type[MyptError] = ConfigError) -> None:
    """Refuse `tokenizer` (what `who` names) unless it is a Tokenizer of the vocab_size of
    `model_or_config` (a GPT, or its GPTConfig), the one thing a model records of its tokenizer:
    another gives ids the model's embedding lacks or text it cannot decode, and a loss over
    another vocabulary's ids means nothing. The message ends with `hint` (how to make them agree)."""
    vocab = getattr(model_or_config, "config", model_or_config).vocab_size
    if not isinstance(tokenizer, Tokenizer) or tokenizer.vocab_size != vocab:
        given = (f"{tokenizer.kind}, {tokenizer.vocab_size} ids" if isinstance(tokenizer, Tokenizer)
                 else f"a {type(tokenizer).__name__}")
        raise error(f"{who} ({given}) is not the model's (vocab_size {vocab}): {hint}")
