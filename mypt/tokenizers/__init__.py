"""Tokenizers: one class per kind, registered by name (`--tokenization` choices come from
here).

Callers use the `Tokenizer` interface only: `encode`, `encode_array`, `encode_lossy`,
`decode`, `vocab_size`, `eot_id`, `state()`, `save(dir)`, `Tokenizer.load(dir)`. State is
`tokenizer_state.json`, versioned JSON, never a pickle.

To add a kind: a new module here with a `mypt.tokenizers.base.Tokenizer` subclass decorated
`@register` (its `kind`, `_from_state`, and the encode/decode methods), and its import in the
registration line below.
"""

from mypt.tokenizers.base import STATE_FILE, TOKENIZERS, Tokenizer, kinds, register, tokenizer_class  # noqa: F401

from mypt.tokenizers import gpt2, char  # noqa: E402,F401,I001  (registration, gpt2 first: the default)
