"""Tokenizers: one class per kind, registered by name (`--tokenization` choices come from
here).

`--tokenization` takes a kind (`gpt2`, `char`) or `KIND:ARG` for a kind built from a file
(`hf:path/tokenizer.json`): `make_tokenizer(spec)` builds it, `check_spec` checks it.

Callers use the `Tokenizer` interface only: `encode`, `encode_array`, `encode_lossy`,
`decode`, `vocab_size`, `eot_id`, `state()`, `save(dir)`, `Tokenizer.load(dir)`. State is
`tokenizer_state.json`, versioned JSON, never a pickle.

To add a kind: a new module here with a `mypt.tokenizers.base.Tokenizer` subclass decorated
`@register` (its `kind`, the `description` the help texts show, `_from_state`, and the
encode/decode methods), and its import in the registration line below.
"""

from mypt.tokenizers.base import (TOKENIZERS, Tokenizer, check_spec, make_tokenizer, parse_spec,  # noqa: F401
                                  register, spec_forms, spec_help, spec_kind, tokenizer_class)

from mypt.tokenizers import gpt2, char, hf  # noqa: E402,F401,I001  (registration, gpt2 first: the default)
