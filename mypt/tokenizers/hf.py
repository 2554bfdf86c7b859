"""hf: any `tokenizer.json` of the Hugging Face `tokenizers` library (`--tokenization
hf:PATH`), e.g. a GPT-NeoX or Llama-3 style byte-level BPE, or one `mypt train-tokenizer`
wrote.

- The whole file is kept in tokenizer_state.json (`tokenizer_json`, the file's text), so
  training and generation load it from the dataset or checkpoint, like char's vocabulary.
- Text is encoded with `add_special_tokens=False` and `encode_special_tokens = True`: no
  BOS/EOS template is added, and a literal special token inside a document (`</s>`) is
  ordinary text, as gpt2's encode_ordinary makes `<|endoftext|>`.
- End of text: the first of EOT_NAMES that the file declares as a special added token;
  None when it has none (then documents end with a newline, as with char: a warning says so
  when `--tokenization hf:PATH` names such a file, and one that cannot encode a newline
  either is refused, since its documents would have no boundary at all).
- Blocks: see `cut_rule`; a long run of one whitespace character inside a text is encoded in
  parts cut at its period (`_run_cuts`).

tokenizers is optional: `pip install 'mypt[hf]'`.
"""

from __future__ import annotations

import functools
import json
import re
import sys
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from mypt.errors import TokenizerError
from mypt.tokenizers.base import (MAX_PERIOD, PERIOD_TAIL, WHITESPACE, RunSkip, Tokenizer, concatenated, register,
                                  whitespace_runs)
from mypt.tokenizers.gpt2 import ascii_safe_boundary, lone_newline_boundary, newline_run_boundary, regex_safe_boundary

# The end-of-text token, by preference: GPT-2/NeoX, sentencepiece-style (Llama 2, T5),
# Llama 3, Gemma.
EOT_NAMES = ("<|endoftext|>", "</s>", "<|end_of_text|>", "<eos>")
INSTALL_HINT = "pip install 'mypt[hf]'"
# Normalizers that act on each character alone (newline included), or (the NF forms) join or
# reorder a character only with combining marks after it, which no whitespace character is or
# takes: cutting text just before or after whitespace, where cut_rule's cuts lie, cannot change
# what they produce.
LOCAL_NORMALIZERS = {"NFC", "NFD", "NFKC", "NFKD", "Lowercase", "StripAccents", "BertNormalizer", "ByteLevel",
                     "Nmt"}
# Settings of a tokenizer.json that act on `encode`'s result, not on the text's ids: truncation
# cuts it to a length, padding fills it to one, the post-processor adds special tokens. mypt
# encodes whole documents and asks for no special tokens (add_special_tokens=False), so it turns
# the first two off (a Hub file made for a classifier, truncation 512, cut every document at its
# 512th token, silently) and the third never acts. None of them is part of the identity: files
# that differ only there give every text the same ids (an export's tokenizer.json, to which
# transformers' save adds a template of its own, is its model's tokenizer).
ENCODE_SETTINGS = ("truncation", "padding", "post_processor")
# What a model's piece for a special token is renamed to in the copy that encodes documents
# (_ordinary_encoder): a noncharacter first, which text practically never holds.
UNMATCHABLE = "\uffff"
# The probe characters of cut_rule: the bytes ascii_safe_boundary lets a cut lie between; some of
# each kind of character that GPT-2-like patterns tell apart, in other scripts (letters, marks,
# digits, punctuation, symbols, format and control characters, astral ones); the whitespace runs
# (each character of WHITESPACE before and after a newline) that regex_safe_boundary cuts inside.
_PRINTABLE = [chr(c) for c in range(0x21, 0x7F)]
_SOME_ASCII = list("aZs1.,'!(-_<")
_OTHER_SCRIPTS = list("éßΩжعאकि\u0301ก中。，「あア한٣３²Ⅻ€©—…\u200b\u200d\x1c\x00\x7f\ufeff\ue000\U0001F600\U00020000")
_RUNS = [r for w in WHITESPACE for r in ("\n" + w, w + "\n")] + ["\n\n\n", "\r\n\r\n", " \n  \t"]
# What HFTokenizer._run_period's probe puts before a run (then every cut is checked with what is there).
_PERIOD_CONTEXTS = ("", "x")
# A run of one whitespace character inside a text (spaces, tabs, U+3000 in a line: split_blocks cuts only
# near newlines, so such a run is in one block however long) of this many characters or more is encoded in
# parts of about LONG_RUN, cut at the run's probed period (HFTokenizer._run_cuts): the library holds about
# 200 bytes a character of what it encodes at once (4 MiB of spaces in a line: 963 MiB peak, in parts 114).
LONG_RUN = 1 << 16


# How far _piece_cuts looks for a cut past where it wants one, and the characters it parses on each side
# of one: each start of the PIECE_CONTEXT before it must give a piece boundary there.
PIECE_SEARCH = 4096
PIECE_CONTEXT = 64


# The pre-tokenizers whose pieces end where they would from any start near their end, so that a check of the
# characters near a cut (PIECE_CONTEXT; a block's few bytes) sees every piece boundary the whole text's parse
# has there: the library's own kinds, and Split with one of these patterns (GPT-2's; Llama 3's and cl100k's;
# Qwen2's and Qwen3.5's; o200k's; mypt's char export's one character), each piece a run of one class of
# character or a few fixed characters. Another Split regex may hold a piece of any length ('"[^"\n]*"': a
# string literal of 202 characters; a comment across lines), whose start no check near a cut sees: no cut.
# Nor for FixedLength (pieces counted from the text's start), or UnicodeScripts (one script's letters joined
# across a run of spaces of any length) but after one of _SPACELESS, which leaves no space in its pieces.
_BOUNDED_KINDS = {"BertPreTokenizer", "ByteLevel", "CharDelimiterSplit", "Digits", "Metaspace", "Punctuation",
                  "Whitespace", "WhitespaceSplit"}
_SPACELESS = {"BertPreTokenizer", "ByteLevel", "Whitespace", "WhitespaceSplit"}
_BOUNDED_SPLITS = {
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+",
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+",
    r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)"
    r"|\s+",
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+",
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+",
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    r"[\s\S]",
}


def _bounded(pre: dict | None, spaceless: bool = False) -> bool:
    """Whether the pre-tokenizer `pre` (a tokenizer.json's) is one of _BOUNDED_KINDS, or a Split of one of
    _BOUNDED_SPLITS or of one character, or a Sequence of such (UnicodeScripts after one of _SPACELESS:
    `spaceless`); true for none (the text is one piece, which the cuts' checks see)."""
    if pre is None:
        return True
    if pre.get("type") == "Sequence":
        members = pre.get("pretokenizers") or []
        return all(_bounded(p, spaceless or any(q.get("type") in _SPACELESS for q in members[:i]))
                   for i, p in enumerate(members))
    if pre.get("type") == "UnicodeScripts":
        return spaceless
    if pre.get("type") == "Split":
        pattern = pre.get("pattern") or {}
        return not pre.get("invert") and (pattern.get("Regex") in _BOUNDED_SPLITS or
                                          len(pattern.get("String") or "") == 1)
    return pre.get("type") in _BOUNDED_KINDS


# A run of one kind of character (letters, digits, whitespace, other): where two kinds meet, pre-tokenizers
# split. Matched at C speed: a Python loop over a word's characters costs seconds for 4 MiB.
_KIND_RUN = re.compile(r"[^\W\d_]+|\d+|\s+|[^\w\s]+|_+")


@functools.cache
def _repeated(char: str) -> re.Pattern:
    # (one character repeated: re's loop at C speed, keeping no backtracking stack, which a group and its
    # backreference, "(\\s)\\1*", keep at about 80 bytes a character)
    return re.compile(re.escape(char) + "+")


def require_tokenizers():
    try:
        import tokenizers
    except ImportError:
        raise TokenizerError(f"hf tokenization needs the tokenizers package: {INSTALL_HINT}") from None
    return tokenizers


def _for_mypt(tokenizers, tokenizer_json: str, source: str):
    """The tokenizers.Tokenizer of `tokenizer_json`, set to encode as mypt does: a literal special
    token in a document is ordinary text, no truncation, no padding (ENCODE_SETTINGS), and no
    BPE dropout (random ids: two preparations of one corpus would give other shards)."""
    try:
        hf = tokenizers.Tokenizer.from_str(tokenizer_json)
    except Exception as e:  # the Rust side raises a bare Exception for a file it cannot parse
        raise TokenizerError(f"{source}: not a tokenizers tokenizer.json ({_one_line(e)})") from None
    hf.encode_special_tokens = True
    hf.no_truncation()
    hf.no_padding()
    if getattr(hf.model, "dropout", None):
        hf.model.dropout = None
    return hf


def _ordinary_encoder(tokenizers, hf, config: dict, special: dict[str, int], source: str):
    """A copy of the tokenizer that encodes documents, where the model holds special tokens as
    pieces of its own vocabulary (a Unigram's, WordLevel's, WordPiece's or BPE's: UnigramTrainer's
    special_tokens, T5's </s>, WordPieceTrainer's, BpeTrainer's); None where it holds none.
    encode_special_tokens keeps only the added-token matcher off them: the model itself makes a
    literal '</s>' in a document the end-of-text id, ending the document there. The copy renames
    those pieces, and their added tokens, to text no document holds (UNMATCHABLE first); ids and
    every other piece are as they were, so text without them encodes to the same ids, and decoding
    stays the tokenizer's own."""
    model = config.get("model") or {}
    vocab = model.get("vocab")
    if model.get("type") == "Unigram" and isinstance(vocab, list):
        held = {i for i in special.values() if i < len(vocab) and vocab[i][0] in special}
        renamed = [[UNMATCHABLE + piece[0], *piece[1:]] if i in held else piece for i, piece in enumerate(vocab)]
    elif model.get("type") in ("WordLevel", "WordPiece", "BPE") and isinstance(vocab, dict):
        # (Not its unknown token, which it must hold: a literal '<unk>' is what any unknown word is.)
        # (Nor, in a BPE or WordPiece, one of a character: what their words are made of.)
        held = {w for w, i in special.items() if vocab.get(w) == i and w != model.get("unk_token")
                and (model["type"] == "WordLevel" or len(w) > 1)}
        renamed = {(UNMATCHABLE + w if w in held else w): i for w, i in vocab.items()}
    else:
        return None
    if model.get("type") == "BPE":
        # A BPE's merges may make a special token's text from ordinary text (a pre-tokenizer that keeps
        # '<|endoftext|>' one piece, as WhitespaceSplit does, and merges learned from a corpus holding it),
        # and with ignore_merges a word of the vocabulary is its id whole: the merges that make it, or join
        # it to more, go (BPE applies no other to that text), so a literal '<|endoftext|>' in a document is
        # the ids of its parts, not the end-of-text id. (GPT-2's pattern splits it: no merge makes it, no copy.)
        prefix, merges = model.get("continuing_subword_prefix") or "", model.get("merges") or []
        made = {t for m in merges for t in _merged(_merge_parts(m), prefix)}
        held = held if model.get("ignore_merges") else held & made
        model = {**model, "merges": [m for m in merges
                                     if not held & {*_merge_parts(m), *_merged(_merge_parts(m), prefix)}]}
    if not held:
        return None
    names = {vocab[i][0] for i in held} if isinstance(vocab, list) else held
    # The added tokens renamed too: one the model no longer holds would get a new id, and every
    # added token after it (transformers' add_tokens: `<user>`) would move up one.
    added = [{**t, "content": UNMATCHABLE + t["content"]} if t.get("special") and t.get("content") in names else t
             for t in config.get("added_tokens") or []]
    copy = _for_mypt(tokenizers, json.dumps({**config, "model": {**model, "vocab": renamed}, "added_tokens": added}),
                     source)
    kept = {k: i for k, i in copy.get_vocab(with_added_tokens=True).items() if not k.startswith(UNMATCHABLE)}
    assert all(kept.get(k) == i for k, i in hf.get_vocab(with_added_tokens=True).items() if k not in names), \
        f"{source}: the encoding copy moved an id"
    return copy


def _merge_parts(merge) -> tuple[str, ...]:
    """A BPE merge's two tokens: ["a", "b"], or "a b" (the form of tokenizers before 0.20)."""
    return tuple(merge) if isinstance(merge, list) else tuple(merge.split(" ", 1))


def _merged(parts: tuple[str, ...], prefix: str) -> tuple[str, ...]:
    """What a merge of `parts` makes: the two joined, the second less its continuing-subword prefix."""
    if len(parts) != 2:
        return ()
    a, b = parts
    return (a + b, a + b[len(prefix):]) if prefix and b.startswith(prefix) else (a + b,)


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _never(before: bytes, after: bytes) -> None:
    return None


_never.cuts_nowhere = True  # (split_blocks: one block, without scanning the file's newlines)


def space_boundary(before: bytes, after: bytes) -> int | None:
    """Just before the first space of `after` (the line after a newline; split_blocks' window), else None:
    "one\\ntwo" | " three". For a pre-tokenizer that splits before each space and nowhere else, whatever
    the characters around it: Metaspace (SentencePiece style: "▁" for a space, a piece from each "▁" on),
    which joins a newline to the words beside it ("▁c\\nd"), so no cut at a newline keeps its pieces, and
    adds its "▁" to the start of a text only where none is there (hf's probe proves it per tokenizer)."""
    at = after.find(b" ")
    return at if at >= 0 else None


# (No space in a run of the other whitespace characters: space_boundary cuts nowhere inside one.)
space_boundary.run_skip = RunSkip.of(WHITESPACE.replace(" ", ""))


_CONTINUATION = bytes(range(0x80, 0xC0))  # (UTF-8 bytes inside a character)


def _whole_chars(data: bytes) -> str | None:
    """`data` decoded, less a character its end cuts off; None where it is not UTF-8."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.reason == "unexpected end of data":
            return _whole_chars(data[:e.start])
        return None


_WARNED: set[str] = set()  # tokenizer files already warned about in this process


def _warn_once(key: str, line: str) -> None:
    # stderr, one line, once per file: prepare-dataset builds the tokenizer more than once, and
    # the library has no logger of its own (the commands' output is their stdout).
    if key not in _WARNED:
        _WARNED.add(key)
        print(f"warning: {line}", file=sys.stderr)


@register
class HFTokenizer(Tokenizer):
    kind = "hf"
    argument = "PATH"
    description = "a tokenizers tokenizer.json, e.g. from mypt train-tokenizer"
    # The library's Encoding holds offsets, token strings and alignments: a 4 MiB block takes about
    # 1 GB in a worker (50x the gpt2 kind's), 512 KiB about an eighth of that.
    block_bytes = 512 << 10

    def __init__(self, config: object = None, kind: str | None = None, tokenizer_json: str | None = None,
                 source: str = "tokenizer.json"):
        super().__init__(config, kind)
        if tokenizer_json is None:
            raise TokenizerError("an hf tokenizer needs its tokenizer.json: --tokenization hf:PATH")
        try:
            config_dict = json.loads(tokenizer_json)
        except ValueError as e:
            raise TokenizerError(f"{source}: not valid JSON ({_one_line(e)}); give a tokenizer.json of the "
                                 "tokenizers library") from None
        tokenizers = require_tokenizers()
        hf = _for_mypt(tokenizers, tokenizer_json, source)
        self.tokenizer_json, self._hf, self._config = tokenizer_json, hf, config_dict
        ids = list(hf.get_vocab(with_added_tokens=True).values())
        if not ids:
            raise TokenizerError(f"{source}: the tokenizer has an empty vocabulary")
        self._vocab_size = max(ids) + 1  # ids may have gaps: the model needs one row per id up to the largest
        added = hf.get_added_tokens_decoder()
        special = {t.content: i for i, t in added.items() if t.special}
        self._eot = next((special[name] for name in EOT_NAMES if name in special), None)
        self._encoder = _ordinary_encoder(tokenizers, hf, config_dict, special, source) or hf  # (documents' text)
        self._unk = self._unknown_id(config_dict.get("model") or {})
        # Whether encode splits added tokens out of the text (special ones it never matches:
        # encode_special_tokens), each stretch between them pre-tokenized alone (_keeps).
        self._splits_out = any(not t.special for t in added.values())
        # (Those ordinary added tokens: _run_cuts and _piece_cuts cut nowhere near one, whose pieces the
        # pre-tokenizer's do not show, and _run_cuts nowhere where one strips the whitespace beside it.)
        ordinary = [t for t in config_dict.get("added_tokens") or [] if not t.get("special") and t.get("content")]
        self._ordinary_added = [t["content"] for t in ordinary]
        # (and those matched in the normalized text, as the normalizer makes them: Lowercase's '<tok>' is
        # matched in '<TOK>', NFKC's in '＜tok＞')
        norm = hf.normalizer
        self._normalized_added = [norm.normalize_str(t["content"]) for t in ordinary
                                  if norm is not None and t.get("normalized", True)]
        self._strips = any(t.get("lstrip") or t.get("rstrip") for t in ordinary)
        self._cuts = None  # (cut_rule's rule and block_boundary's check of it: probed once, when first asked)
        # (_run_period's probe, a unit of whitespace each, and its check, a unit and the text before it each:
        # ~100 encodes, and runs after the same text are common)
        self._periods: dict[str, tuple[int, int] | None] = {}
        self._period_checks: dict[tuple[str, str], tuple[int, int] | None] = {}

    def _unknown_id(self, model: dict) -> int | None:
        """The id the model gives what its vocabulary lacks (WordLevel, WordPiece, a BPE
        without byte fallback: unk_token; Unigram: unk_id); None when it has none."""
        if model.get("type") == "Unigram":
            return model.get("unk_id") if isinstance(model.get("unk_id"), int) else None
        token = model.get("unk_token")
        return self._hf.token_to_id(token) if isinstance(token, str) else None

    @classmethod
    def from_file(cls, path: str | Path, where: str | None = None) -> "HFTokenizer":
        """`path`'s tokenizer; errors begin with `where` (default: the --tokenization flag)."""
        path = Path(path)
        where = where or f"--tokenization hf:{path}"
        if path.is_dir():
            inside = path / "tokenizer.json"
            if inside.is_file():
                raise TokenizerError(f"{where} is a directory, not a tokenizer.json: give the file, --tokenization "
                                     f"hf:{inside}")
            raise TokenizerError(f"{where} is a directory with no tokenizer.json; give the path of a tokenizer.json "
                                 "(train one with `mypt train-tokenizer`)")
        if not path.is_file():
            raise TokenizerError(f"{where}: no such file; give the path of a tokenizer.json (train one with "
                                 "`mypt train-tokenizer`)")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise TokenizerError(f"{where}: not UTF-8 text ({_one_line(e)}); give a tokenizer.json") from None
        tokenizer = cls(tokenizer_json=text, source=where)
        tokenizer.check_document_end(where)
        off = [k for k in ("truncation", "padding") if tokenizer._config.get(k)]
        off += ["BPE dropout"] if (tokenizer._config.get("model") or {}).get("dropout") else []
        if off:
            _warn_once(f"{where} off", f"{where}: the tokenizer.json sets {' and '.join(off)}, which mypt turns off: "
                                       "it tokenizes whole documents, each to all of its ids")
        tokenizer.check_decoder(where)
        return tokenizer

    def check_decoder(self, where: str) -> None:
        """Warn of a tokenizer.json without a decoder that does not give text back: the ids are
        right, but what generate shows is the pieces as stored, joined by spaces ('Ġ' for a
        byte-level BPE's spaces)."""
        if self._config.get("decoder") is not None:
            return
        probe = "a b, c"
        back = self.decode(self.encode_array(probe))
        if back != probe:
            _warn_once(f"{where} decoder", f"{where}: the tokenizer.json has no decoder: text decoded from ids "
                                           f"(generate) shows the pieces as stored, joined by spaces ({probe!r} "
                                           f"decodes as {back!r}); add one (tokenizers: tokenizer.decoder = "
                                           "decoders.ByteLevel() for a byte-level BPE; tokenizer.save(PATH))")

    def check_document_end(self, where: str) -> None:
        """What ends a document: the end-of-text token; without one a newline (as with char),
        with a warning; without either, documents would run into each other unmarked: refused."""
        if self._eot is not None:
            return
        ids = self._encoder.encode("\n", add_special_tokens=False).ids
        back = self._hf.decode(ids, skip_special_tokens=False) if ids else ""
        names = ", ".join(EOT_NAMES)
        fix = ("add <|endoftext|> to it as a special token (tokenizers: tokenizer.add_special_tokens"
               "([\"<|endoftext|>\"]); tokenizer.save(PATH)), or train one with `mypt train-tokenizer`")
        if back != "\n":
            raise TokenizerError(f"{where}: the tokenizer has no end-of-text token (none of {names} is a special "
                                 f"token) and cannot encode a newline (ids {ids} decode as {back!r}): documents "
                                 f"would run into each other with no boundary; {fix}")
        _warn_once(where, f"{where}: the tokenizer has no end-of-text token (none of {names} is a special "
                          f"token): documents are separated by a newline only, as with char; {fix}")

    @classmethod
    def from_argument(cls, arg: str | None) -> "HFTokenizer":
        return cls.from_file(arg)

    @classmethod
    def _from_state(cls, state: dict) -> "HFTokenizer":
        text = state.get("tokenizer_json")
        if not isinstance(text, str):  # the tokenizer.json's text, kept whole
            raise TokenizerError(f"its tokenizer_json is {text!r:.40}, not the text of a tokenizer.json; the file "
                                 "was edited or damaged")
        return cls(tokenizer_json=text, source="its tokenizer_json")

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    def unused_ids(self) -> list[int]:
        ids = set(self._hf.get_vocab(with_added_tokens=True).values())
        return sorted(set(range(self._vocab_size)) - ids) if len(ids) < self._vocab_size else []

    @property
    def eot_id(self) -> int | None:
        return self._eot

    @property
    def block_boundary(self):
        return self._probed()[1]

    def cut_rule(self):
        """Where a .txt document may be cut into blocks (_probe's rule), probed once."""
        return self._probed()[0]

    def _probed(self):
        """(_probe's rule, the block boundary rule: it checked on the text at each cut), probed once."""
        if self._cuts is None:
            rule = self._probe()
            if rule is None:
                self._cuts = None, _never
            else:
                def checked(before: bytes, after: bytes) -> int | None:
                    return self._checked_cut(rule, before, after)

                # (it cuts where the rule does, or nowhere; and inside runs of a line of whitespace, probed)
                checked.run_skip = rule.run_skip._replace(period=self._run_period)
                self._cuts = rule, checked
        return self._cuts

    def _probe(self):
        """Where a .txt document may be cut into blocks without changing its ids, the widest rule
        of four that the probe finds this tokenizer keeps: gpt2.regex_safe_boundary (any script,
        and inside runs of whitespace: blank lines, indents, CRLF; the pre-tokenizer is GPT-2's
        pattern, as train-tokenizer's ByteLevel is), gpt2.newline_run_boundary (after the last
        newline of a run: Llama 3's pattern), gpt2.lone_newline_boundary (a newline between
        two characters that are not whitespace, any script), or
        gpt2.ascii_safe_boundary (such a newline between printable ASCII ones); or, where no newline
        rule holds, space_boundary (before a space after a newline: a Metaspace that splits, _space_rule);
        None for nowhere. Any cut at all needs:

        - the normalizer acts on each character alone (LOCAL_NORMALIZERS, or none) and leaves
          the newline a newline;
        - the pre-tokenizer's pieces end where they would from any start near their end (_bounded: not a
          Split regex that keeps a string literal or a comment one piece);
        - no ordinary added token could span or absorb the cut (none with `lstrip`, none holding
          a newline; for cuts in runs of more than a newline, none with `rstrip` either and none
          holding whitespace; special ones are never matched, encode_special_tokens);
        - the pre-tokenizer splits there (_keeps): for every pair of the probe's characters c, d,
          `x c\\n d y` normalized pre-tokenizes to the pieces of `x c\\n` followed by those of
          `d y`, and for the runs, `c W d y` to those of `c W[:-1]` then `W[-1] d y` (or, for
          newline_run_boundary, of `c W` to its last newline then the rest) (Metaspace joins a newline
          to the words beside it; no pre-tokenizer at all, or a Metaspace with split false, makes the
          text one word, split nowhere); where added tokens are split out, also with one of them just
          before or after the whitespace at the cut (GPT-2's pattern: no cut inside runs then).

        The model (BPE, Unigram, WordPiece, WordLevel) encodes each piece alone, so equal pieces
        give equal ids. The probe's characters stand for their kind; every cut is checked again
        on the text around it (_checked_cut). Without a rule each .txt file is encoded whole: no
        parallel work inside one file, and memory of its size (an hf Encoding: ~1 GB per 4 MiB).
        """
        cfg = self._config
        normalizer = cfg.get("normalizer")
        members = (normalizer.get("normalizers") or []) if normalizer and normalizer.get("type") == "Sequence" \
            else [normalizer] if normalizer else []
        if any(n.get("type") not in LOCAL_NORMALIZERS for n in members):
            return None
        ordinary = [t for t in cfg.get("added_tokens") or [] if not t.get("special")]
        if any(t.get("lstrip") or "\n" in t.get("content", "") for t in ordinary):
            return None
        # (an ordinary added token that strips the whitespace after it or holds some: no cut inside a run, nor
        # before a space)
        spaced = any(t.get("rstrip") or any(w in t.get("content", "") for w in WHITESPACE) for t in ordinary)
        norm = self._hf.normalizer
        if self._hf.pre_tokenizer is None or (norm is not None and norm.normalize_str("\n") != "\n"):
            return None  # (Nmt, BertNormalizer, ByteLevel make it a space or 'Ċ': the cut is at no newline)
        if not _bounded(cfg.get("pre_tokenizer")):
            return None

        # (Pre-tokenized once a string: the probe's pairs ask the same strings about three times each.)
        keeps = functools.partial(self._keeps, pieces=functools.cache(self._pieces))
        if not all(keeps(f"x {c}\n", f"{d} y") for c in _PRINTABLE for d in _PRINTABLE):
            return None if spaced else self._space_rule(keeps)
        others = [(c, d) for c in _OTHER_SCRIPTS for d in _SOME_ASCII + _OTHER_SCRIPTS] + \
            [(c, d) for c in _SOME_ASCII for d in _OTHER_SCRIPTS]
        if not all(keeps(f"x {c}\n", f"{d} y") for c, d in others):
            return ascii_safe_boundary
        if spaced:
            return lone_newline_boundary
        ends = _SOME_ASCII + _OTHER_SCRIPTS[::3]
        if all(keeps(c + run[:-1], f"{run[-1]}{d} y") for c in "x." for run in _RUNS for d in ends):
            return regex_safe_boundary
        # (newline_run_boundary's cut: after the run's last newline, where no \r follows it)
        cuts = [(run[:run.rindex("\n") + 1], run[run.rindex("\n") + 1:]) for run in _RUNS]
        if all(keeps(c + w, f"{rest}{d} y") for c in "x." for w, rest in cuts if "\r" not in rest for d in ends):
            return newline_run_boundary
        return lone_newline_boundary

    def _space_rule(self, keeps) -> object | None:
        """space_boundary where the pre-tokenizer keeps its cuts (a Metaspace that splits: SentencePiece
        style), else None: for every pair of the probe's characters c, d, `x c` + W then ` d y` (or `  d y`,
        ` \\nd y`) pre-tokenizes to the pieces of each side, W none, a space or a newline."""
        some = _SOME_ASCII + _OTHER_SCRIPTS
        if all(keeps(f"x {c}", f" {d} y") for c in _PRINTABLE for d in _PRINTABLE) and \
                all(keeps(f"x {c}{w}", f"{right}{d} y") for c in some for d in some for w in ("", " ", "\n")
                    for right in (" ", "  ", " \n")):
            return space_boundary
        return None

    def _pieces(self, text: str) -> list[str]:
        """The pre-tokenizer's pieces of `text`, normalized."""
        norm = self._hf.normalizer
        return [p for p, _ in self._hf.pre_tokenizer.pre_tokenize_str(norm.normalize_str(text) if norm else text)]

    def _keeps(self, left: str, right: str, pieces=None) -> bool:
        """Whether `left + right` gives the pieces of `left` followed by those of `right` (`pieces`:
        _pieces, or one that remembers them).

        Where encode splits ordinary added tokens out of the text, it pre-tokenizes each stretch
        between them alone, so a token just after the whitespace at the cut ends that whitespace's
        stretch: GPT-2's pattern keeps a run at the end of a text one piece, "x\\n    <tok>" gives
        "\\n    ", but cut before its last space, "\\n   " and " " (other ids). cut_rule rules out
        tokens holding that whitespace or stripping it (lstrip; rstrip inside runs, a lone newline
        it strips whole), so a token can only end just before it or begin just after it: those
        stretches are compared too, each whitespace part alone beside the other side. (Tokens
        further off are as the probe's x and y: text the pieces at the cut do not reach.)"""
        forms = [(left, right)]
        if self._splits_out:
            tail = left[len(left.rstrip(WHITESPACE)):]
            head = right[:len(right) - len(right.lstrip(WHITESPACE))]
            forms += [(tail, right), (left, head), (tail, head)]
        pieces = pieces or self._pieces
        return all(pieces(a + b) == pieces(a) + pieces(b) for a, b in forms if a and b)

    def _checked_cut(self, rule, before: bytes, after: bytes) -> int | None:
        """`rule`'s cut near a newline (split_blocks' window), where the text of the window cut
        there keeps its pieces (_keeps); None elsewhere. (The probe judged characters of each kind;
        this judges the ones there, at each newline split_blocks asks about.)"""
        at = rule(before, after)
        if at is None:
            return None
        window, cut = before + b"\n" + after, len(before) + 1 + at
        left, right = _whole_chars(window[:cut].lstrip(_CONTINUATION)), _whole_chars(window[cut:])
        if left is None or right is None:
            return None
        return at if self._keeps(left, right) else None

    def _run_period(self, unit: bytes, before: bytes, opens: bool = False) -> tuple[int, int] | None:
        """RunSkip.period: after how many units (a newline and the whitespace after it, up to the next
        newline; or, for _run_cuts, one whitespace character), and where in a unit, a run of them may be
        cut, where `before` precedes the run's first unit: the fewest units, and the first character of
        the unit, that _period_keeps finds (up to MAX_PERIOD units, probed once a unit after
        _PERIOD_CONTEXTS), checked with the characters of `before` as every cut is (_checked_cut), and
        "x" after the run (what follows a run changes only the tokens near its end, and a cut leaves
        PERIOD_TAIL units or more after it, of counts the check tries at every place in the pattern),
        counted from the first unit or one of the next P - 1 (Llama 3's pattern joins a run of newlines to
        a "." before it, and BPE ".\\n" first); None for none, and where the piece that holds the run's
        start may start before `before` (_piece_starts_in; `opens`: `before` is all of the text or block
        before the run).

        Why a period exists: the pre-tokenizer makes the run one piece, or pieces of one pattern
        (GPT-2's `\\s+(?!\\S)` takes it all but its last character, and at the end of a text all of it,
        so a cut gives the whole's piece in two parts); BPE on a run of one unit repeated merges equal
        pairs leftmost first, so its tokens fall in a pattern that repeats from the run's start, P units
        long, and a cut at a multiple of P leaves each half the tokens the whole has there. Whether that
        holds, P and where in the unit, depend on the vocabulary's merges (r50k: 2 newlines; a BPE
        trained on 8 blank lines: 8; one that merges "\\r\\n": CRLF lines cut after the newline, not
        before), and on what the normalizer, added tokens or a model other than BPE do, so it is not
        derived but probed, with the real encoder: the ids themselves, not the pieces."""
        try:
            text = unit.decode("utf-8")
        except UnicodeDecodeError:
            return None
        context = _whole_chars(before.lstrip(_CONTINUATION))
        if context is None:
            return None
        if text not in self._periods:
            self._periods[text] = next(((p, len(text[:at].encode())) for p in range(1, MAX_PERIOD + 1)
                                        for at in range(len(text))
                                        if all(self._period_keeps(text, p, at, c) for c in _PERIOD_CONTEXTS)), None)
        if (period := self._periods[text]) is None:
            return None
        if (key := (text, context, opens)) not in self._period_checks:
            if len(self._period_checks) > 4096:  # (a bound: runs after thousands of different contexts)
                self._period_checks.clear()
            at = len(unit[:period[1]].decode())
            self._period_checks[key] = next(
                ((period[0], period[1] + shift * len(unit)) for shift in range(period[0])
                 if self._period_keeps(text, period[0], at, context, shift)), None) \
                if self._piece_starts_in(context, opens, text) else None
        return self._period_checks[key]

    def _piece_starts_in(self, context: str, opens: bool, unit: str) -> bool:
        """Whether the pre-tokenizer's piece that holds the start of a run of `unit` after `context` starts
        at the run or inside `context` (or at its start, where it `opens` the text or block), where every
        parse of `context` from a start before it splits (_keeps, as _piece_cuts asks): then the run's ids
        depend on `context` from there on only, which the period's check holds. Else that piece may begin
        further back (a word joined to the run: no pre-tokenizer, ByteLevel without its pattern, Metaspace
        before a tab or a newline), and BPE pairs the run's units leftmost first from the piece's start: with
        merges "aa", "a ", "  ", 9 a's before 200,000 spaces pair them otherwise than 8 a's."""
        if self._hf.pre_tokenizer is None:  # (the text is one piece: known whole only where `context` opens it)
            return opens
        pieces, right = functools.cache(self._pieces), unit * PIECE_CONTEXT + "x"
        return any(all(self._keeps(context[start:at], context[at:] + right, pieces) for start in range(at))
                   for at in range(len(context), -1 if opens else 0, -1))

    def _period_keeps(self, unit: str, period: int, at: int, before: str, shift: int = 0) -> bool:
        """Whether `before` and a run of `unit`, then "x", cut `at` characters into a unit after
        `shift` units and a multiple of `period`, keeps its ids: for each count of units before the cut
        up to three periods and twice the longest token of the run, and each count after it from
        PERIOD_TAIL on by as many (every place the cut's count has in the pattern)."""
        ids = functools.cache(lambda text: self._encoder.encode(text, add_special_tokens=False).ids)
        run = self._encoder.encode(unit * 64, add_special_tokens=False).offsets
        longest = max((b - a for a, b in run), default=0) // len(unit) + 1  # (in units, rounded up)
        reach = max(3 * period, 2 * longest + period)
        head, tail = unit[:at], unit[at:]
        return all(ids(before + unit * k + head) + ids(tail + unit * t + "x") ==
                   ids(before + unit * (k + t + 1) + "x")
                   for k in range(period + shift, reach + shift + 1, period)
                   for t in range(PERIOD_TAIL, PERIOD_TAIL + reach + 1))

    def _added_near(self, text: str, a: int, b: int) -> bool:
        """Whether an ordinary added token may be matched in the PIECE_CONTEXT characters before text[a:b] or
        after it (a == b: across a cut there), as written or, for one matched after the normalizer, in the
        normalized text; where the normalizer drops characters (StripAccents' marks, BertNormalizer's
        controls) so that either side normalizes to less than the longest such token, yes."""
        reach = PIECE_CONTEXT + max(map(len, self._ordinary_added), default=0)
        left, right = text[max(a - reach, 0):a], text[b:b + reach]
        sides = (left + right,) if a == b else (left, right)
        if any(token in side for token in self._ordinary_added for side in sides):
            return True
        if not self._normalized_added:
            return False
        norm, longest = self._hf.normalizer.normalize_str, max(map(len, self._normalized_added))
        nl, nr = norm(left), norm(right)
        if (len(nl) < longest and a > reach) or (len(nr) < longest and b + reach < len(text)):
            return True
        sides = (nl + nr, norm(left + right)) if a == b else (nl, nr)
        return any(token in side for token in self._normalized_added for side in sides)

    def _run_cuts(self, text: str) -> list[int]:
        """Offsets in `text`, about LONG_RUN characters apart, inside runs of one whitespace character of
        2 * LONG_RUN or more, where the run's period (_run_period: probed on the character as a unit,
        checked with the PIECE_CONTEXT characters before the run) lets it be cut, LONG_RUN characters or
        more before the run's end; none in a run without a period (a pre-tokenizer or model that joins the
        whole run: one encode), or with an ordinary added token within PIECE_CONTEXT characters (the
        pre-tokenizer's pieces, which the check compares, do not show one), or in any run where one strips
        the whitespace beside it (lstrip, rstrip: the whole run, after other whitespace too)."""
        cuts: list[int] = []
        if self._strips or not _bounded(self._config.get("pre_tokenizer")):
            return cuts
        for start, end in whitespace_runs(text, 2 * LONG_RUN):
            b = start
            while b < end:
                a, b = b, _repeated(text[b]).match(text, b, end).end()
                if b - a < 2 * LONG_RUN or self._added_near(text, a, b):
                    continue
                unit = text[a].encode()
                period = self._run_period(unit, text[max(a - PIECE_CONTEXT, 0):a].encode(), a <= PIECE_CONTEXT)
                if period is None:
                    continue
                step, first = period[0], a + period[1] // len(unit)  # (a cut at `first` + a multiple of `step`)
                cut = a
                while (cut := first + -(-(cut + LONG_RUN - first) // step) * step) <= b - LONG_RUN:
                    cuts.append(cut)
        return cuts

    def _piece_cuts(self, text: str, lo: int, hi: int) -> list[int]:
        """Offsets about LONG_RUN characters apart in text[lo:hi], a stretch of 2 * LONG_RUN or more that
        _run_cuts does not cut (a line of a few MB: base64, minified code, a paragraph), where the
        pre-tokenizer splits: between two kinds of character (_KIND_RUN), where the pieces of the
        PIECE_CONTEXT characters on each side, parsed from each of the PIECE_CONTEXT starts before it,
        are those of each side (_keeps). The model encodes each piece alone; a piece boundary that no
        start of the parse before it moves is one in the whole text's parse too. Only for a tokenizer
        with a block rule (cut_rule: a normalizer that acts on each character, no added token that
        strips or holds a newline, a pre-tokenizer _bounded); none in a word (a run of letters: one piece,
        BPE merges across it)."""
        if self.cut_rule() is None:
            return []
        cuts, target = [], lo + LONG_RUN
        pieces = functools.cache(self._pieces)
        # (Ordinary added tokens are split out before the pre-tokenizer, and may strip the whitespace beside
        # them or match only as a whole word: no cut has one in the characters it looks at.)
        def keeps(at: int) -> bool:
            return not self._added_near(text, at, at) and \
                all(self._keeps(text[start:at], text[at:at + PIECE_CONTEXT], pieces)
                    for start in range(at - PIECE_CONTEXT, at))

        while target < hi - LONG_RUN:
            at, stop = target, min(target + PIECE_SEARCH, hi - LONG_RUN)
            while (at := _KIND_RUN.match(text, at, stop).end()) < stop and not keeps(at):
                pass
            if at >= stop:
                target += PIECE_SEARCH
                continue
            cuts.append(at)
            target = at + LONG_RUN
        return cuts

    def _encodings(self, text: str) -> Iterator[tuple[int, object]]:
        """(offset, the library's Encoding) of each part of `text` cut at _run_cuts and, in the long
        stretches between, _piece_cuts: one held at a time."""
        bounds = [0, *self._run_cuts(text), len(text)]
        if len(text) >= 2 * LONG_RUN:
            bounds = sorted(bounds + [cut for a, b in zip(bounds, bounds[1:]) if b - a >= 2 * LONG_RUN
                                      for cut in self._piece_cuts(text, a, b)])
        for a, b in zip(bounds, bounds[1:]):
            yield a, self._encoder.encode(text[a:b] if len(bounds) > 2 else text, add_special_tokens=False)

    def encode_array(self, text: str) -> np.ndarray:
        parts = [np.asarray(enc.ids, dtype=np.uint32) for _, enc in self._encodings(text)]
        return concatenated(parts)

    def encode_lossy(self, text: str) -> tuple[np.ndarray, dict[str, int]]:
        """The ids, and the count of each piece of `text` the vocabulary lacks, which became its
        unknown token (a word-level vocabulary's rare words: the model sees them all as one)."""
        parts, counts = [], {}
        unk = self.unknown_token
        for offset, enc in self._encodings(text):
            parts.append(ids := np.asarray(enc.ids, dtype=np.uint32))
            if self._unk is None or not (ids == self._unk).any():
                continue
            for i, (a, b) in zip(enc.ids, enc.offsets):
                # (the unknown token's own text is no unknown piece: a char export's stand-in is a
                # character of the vocabulary, ' ' or '?', that every space or '?' encodes as)
                piece = text[offset + a:offset + b]
                if i == self._unk and piece != unk:
                    counts[piece] = counts.get(piece, 0) + 1
        return concatenated(parts), counts

    @property
    def unknown_token(self) -> str | None:
        """The text of the unknown token (e.g. [UNK]); None when the vocabulary has none."""
        return None if self._unk is None else self._hf.id_to_token(self._unk)

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        ids = np.asarray(ids, dtype=np.int64)
        self.check_ids(ids)
        return self._hf.decode(ids.tolist(), skip_special_tokens=False)

    def _state(self) -> dict:
        return {"tokenizer_json": self.tokenizer_json}

    def identity(self) -> dict:
        """The state with the tokenizer.json as the JSON it holds (not its spacing), less the
        settings that never change an id mypt encodes (ENCODE_SETTINGS): as parsed once on
        loading (a Llama 3's is 9 MB, and a run's start compares and hashes it often)."""
        config = {k: v for k, v in self._config.items() if k not in ENCODE_SETTINGS}
        if (config.get("model") or {}).get("dropout"):
            config["model"] = {**config["model"], "dropout": None}
        return {**self.state(), "tokenizer_json": config}

    def identities(self) -> list[dict]:
        # (The record's first form, in datasets an earlier mypt prepared: the whole tokenizer.json,
        # ENCODE_SETTINGS included. Such datasets keep verifying.)
        return [self.identity(), {**self.state(), "tokenizer_json": self._config}]
