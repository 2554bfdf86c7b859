"""The tokenizer interface and the registry (kind -> class)."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Callable, Iterable, Iterator, NamedTuple, Sequence

import numpy as np

from mypt.errors import TokenizerError
from mypt.io import atomic_write_text, read_json
from mypt.names import CONFIG_FILE, METADATA_FILE, STATE_FILE, is_mypt_config


# The units of a repetition that a cut at its period leaves after it, at least (RunSkip.period): near its end
# the tokens may differ (a BPE with "\n\n" and "\n\n\n" ends an odd run with the latter). The scan leaves
# mypt.text.BOUNDARY_AHEAD bytes, 16 units of RUN_LOOK bytes or more.
PERIOD_TAIL = 16
# The most units a period may have (RunSkip.period): hf's probe tries no longer ones, and the scan reads two
# periods of them past where a repetition is found (a longer period's cut is found in a later read).
MAX_PERIOD = 16


class RunSkip(NamedTuple):
    """A block boundary rule's promise about runs of whitespace (its attribute `run_skip`, read by
    mypt.text.split_blocks): at a newline whose window (`after`) lies inside a run of `chars`, the
    rule finds no cut, except where `cuts` (None: nowhere) matches at the newline, or at the byte
    just before or after it (a pattern that begins with the byte beside the newline skips a run of
    newlines at C speed, one that begins with the newline tries every one). The scan then
    finds the run's end once (run_end), and asks the rule again only at the newlines whose window
    sees it: a run of many lines costs one search, not a question a newline.

    `period(unit, before, opens)`, where the kind has one, lets the scan cut inside a run that no rule cuts
    (blank lines): `unit` is a newline and the whitespace after it up to the next newline (b"\n" for
    blank lines, b"\n\r" for CRLF ones), repeated from a byte of the text (or of the block) that
    `before` (at most 8 bytes; with `opens` true, all of the block before it) precedes; it returns (P, at)
    where cutting `at` bytes after the start (the newline) of every P-th unit from there keeps the ids (`at`
    may pass a unit: the tokens' pattern may start a unit or more in), when PERIOD_TAIL units or more of the
    repetition follow the cut (None: nowhere)."""

    chars: str
    cuts: re.Pattern | None
    starts: frozenset[int]  # (the first bytes of the characters: a window starting with another is no run's)
    bound: re.Pattern  # (a run of bytes that some character's UTF-8 holds: no run of `chars` goes past one)
    run: re.Pattern  # (a run of `chars`, in decoded text)
    period: Callable[[bytes, bytes, bool], tuple[int, int] | None] | None = None
    # (The period's limits, as mypt.text reads them from the rule it is handed: it imports no tokenizer, or
    # the clean and dedup stages would depend on every tokenizer's module.)
    PERIOD_TAIL = PERIOD_TAIL
    MAX_PERIOD = MAX_PERIOD

    @classmethod
    def of(cls, chars: str, cuts: re.Pattern | None = None) -> RunSkip:
        held = sorted({b for c in chars for b in c.encode()})
        return cls(chars, cuts, frozenset(c.encode()[0] for c in chars),
                   re.compile(b"[" + b"".join(re.escape(bytes([b])) for b in held) + b"]*"),
                   re.compile(f"[{re.escape(chars)}]*"))

    def run_end(self, data: bytes, offset: int) -> int:
        """Where the run of `chars` from data[offset] ends (UTF-8; a character cut off at the end, or
        invalid, ends it). The bytes are bounded at C speed, then decoded, since a regex over the
        characters' bytes (an alternation) matched 6-20 MB/s of U+3000 lines; ASCII ones need no
        decoding (blank lines)."""
        end = self.bound.match(data, offset).end()
        head = data[offset:end]
        if head.isascii():  # (every ASCII byte `bound` takes is one of `chars`)
            return end
        text = head.decode("utf-8", "surrogateescape")  # (bytes that are no character: a lone surrogate each)
        n = self.run.match(text).end()
        return end if n == len(text) else offset + len(text[:n].encode())


STATE_VERSION = 1
TOKENIZERS: dict[str, type["Tokenizer"]] = {}  # kind -> class


# What `\s` matches in GPT-2's pre-tokenizer pattern (tiktoken's and the tokenizers library's
# ByteLevel): Unicode White_Space. (Python's str.isspace also counts \x1c-\x1f, which the
# pattern does not: a run cut there would not be the pattern's run.)
WHITESPACE = "\t\n\x0b\x0c\r \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + \
    "\u2028\u2029\u202f\u205f\u3000"
WHITESPACE_SET = frozenset(WHITESPACE)  # (for a character's test: `c in WHITESPACE_SET`)
_SPACE = re.compile(f"[{WHITESPACE}]")
_SOLID = re.compile(f"[^{WHITESPACE}]")
_SPACES_FROM_START = re.compile(f"[{WHITESPACE}]*")
_SOLID_FROM_START = re.compile(f"[^{WHITESPACE}]*")


def whitespace_runs(text: str, min_chars: int) -> Iterator[tuple[int, int]]:
    """(start, end) of each maximal run of WHITESPACE of at least `min_chars` (>= 2) characters
    in `text`, in order (_runs)."""
    return _runs(text, min_chars, _SOLID, _SPACES_FROM_START)


def non_whitespace_runs(text: str, min_chars: int) -> Iterator[tuple[int, int]]:
    """(start, end) of each maximal run without WHITESPACE of at least `min_chars` (>= 2)
    characters in `text`, in order (_runs)."""
    return _runs(text, min_chars, _SPACE, _SOLID_FROM_START)


def _runs(text: str, min_chars: int, other: re.Pattern, run_from_start: re.Pattern) -> Iterator[tuple[int, int]]:
    """(start, end) of each maximal run of at least `min_chars` (>= 2) characters that `other` (one
    character) does not match. Linear, and cheap where there is none: such a run spans a whole
    (min_chars // 2 + 1)-character window at a multiple of min_chars // 2, and one search for
    `other` tells a window (in ordinary text it stops within a word, or at the first letter: a
    scan of every character cost a fifth of gpt2's encoding time)."""
    assert min_chars >= 2, min_chars
    step = min_chars // 2
    done = 0  # where the last run looked at ended
    for at in range(0, len(text) - step, step):
        if at < done or other.search(text, at, at + step + 1):
            continue
        # The window before held `other` (or the last run's end): the run began after it.
        start = at - run_from_start.match(text[max(done, at - step + 1):at][::-1]).end()
        end = other.search(text, at + step + 1)
        done = end.start() if end else len(text)
        if done - start >= min_chars:
            yield start, done


def split_at(text: str, cuts: Iterable[int]) -> list[str]:
    """`text` cut at the increasing offsets `cuts`."""
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in zip(bounds, bounds[1:])]


def concatenated(parts: list[np.ndarray]) -> np.ndarray:
    """The ids of the parts of a text encoded apart, as one array: a text of one part (most) as it is, not
    copied."""
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def register(cls: type["Tokenizer"]) -> type["Tokenizer"]:
    TOKENIZERS[cls.kind] = cls
    return cls


def spec_forms() -> list[str]:
    """How `--tokenization` is spelled for each kind: `gpt2`, `char`, `hf:PATH`."""
    return [f"{k}:{c.argument}" if c.argument else k for k, c in TOKENIZERS.items()]


def spec_help(described: bool = True) -> str:
    """The `--tokenization` values for a help text, from the registry: `gpt2 (what it is),
    char (...) or hf:PATH (...)`; `described=False` leaves the descriptions out."""
    forms = [f"{form} ({cls.description})" if described and cls.description else form
             for form, cls in zip(spec_forms(), TOKENIZERS.values())]
    return forms[0] if len(forms) == 1 else f"{', '.join(forms[:-1])} or {forms[-1]}"


def parse_spec(spec: str) -> tuple[type["Tokenizer"], str | None]:
    """`KIND` or `KIND:ARG` (`hf:path/tokenizer.json`) -> (the kind's class, ARG or None).
    A kind that takes an argument may be named bare (`hf`) where the tokenizer comes from
    elsewhere (an existing dataset); building one then asks for the argument."""
    kind, sep, arg = str(spec).partition(":")
    if kind not in TOKENIZERS:
        raise TokenizerError(f"unknown tokenization {spec!r}: choose one of {', '.join(spec_forms())}")
    cls = TOKENIZERS[kind]
    if sep and not cls.argument:
        raise TokenizerError(f"tokenization {spec!r}: {kind} takes no argument, write --tokenization {kind}")
    if sep and not arg:
        raise TokenizerError(f"tokenization {spec!r}: give the {cls.argument}, as in --tokenization {kind}:{cls.argument}")
    return cls, (arg if sep else None)


def check_spec(spec: str) -> str:
    """A `--tokenization` value, checked (the settings' and the flags' check)."""
    parse_spec(spec)
    return spec


def spec_kind(spec: str) -> str:
    """The kind a `--tokenization` value names (`hf:tok.json` -> `hf`)."""
    return str(spec).partition(":")[0]


def tokenizer_class(spec: str) -> type["Tokenizer"]:
    return parse_spec(spec)[0]


def make_tokenizer(spec: str, char_sets: Iterable[str] | None = None) -> "Tokenizer":
    """The tokenizer a `--tokenization` value names. A kind that learns its vocabulary
    (char) needs the corpus' characters (`char_sets`)."""
    cls, arg = parse_spec(spec)
    if cls.learns_vocabulary:
        return cls.from_corpus(char_sets if char_sets is not None else ())
    if cls.argument and arg is None:
        raise TokenizerError(f"--tokenization {spec}: give the {cls.argument}, as in --tokenization "
                             f"{cls.kind}:{cls.argument}")
    return cls.from_argument(arg)


def _kind_of(value: str | os.PathLike) -> str:
    """The kind `Tokenizer(value)` or `Tokenizer(config, value)` names; a TokenizerError naming
    the call that builds what else it may name (a tokenizer.json, a dataset's tokenizer)."""
    text = os.fsdecode(value)
    if text in TOKENIZERS:
        return text
    call = f"Tokenizer({text!r})"
    if Path(text).is_dir():
        raise TokenizerError(f"{call}: {text} is a directory, not a tokenizer kind; a dataset's or checkpoint's "
                             f"tokenizer is Tokenizer.load({text!r})")
    try:
        cls, arg = parse_spec(text)
    except TokenizerError as e:
        raise TokenizerError(f"{call}: {e}; Tokenizer(...) takes a kind ({', '.join(TOKENIZERS)}), a tokenizer "
                             "file is mypt.tokenizers.make_tokenizer('hf:PATH')") from None
    if arg is None:
        return cls.kind
    raise TokenizerError(f"{call}: Tokenizer(...) takes a kind ({', '.join(TOKENIZERS)}); a tokenizer built from "
                         f"a file ({cls.kind}:{cls.argument}) is mypt.tokenizers.make_tokenizer({text!r})")


def _json_object(path: Path) -> dict | None:
    """The JSON object in file `path`; None when there is none (no file, not JSON, not an object)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


class Tokenizer:
    """Text <-> token ids.

    Build one with `Tokenizer.load(dir)`, `tokenizer_class(kind).from_corpus(char_sets)`,
    `make_tokenizer("hf:PATH")`, or the guide's form `Tokenizer(config, "gpt2")` (config is
    accepted for compatibility and unused), also `Tokenizer("gpt2")`; a corpus-built kind also
    needs `chars=` (`Tokenizer("char", chars="ab\\n")`).
    """

    kind = ""
    # What follows `KIND:` in `--tokenization` (hf:PATH); "" for kinds that take nothing.
    argument = ""
    # Whether the vocabulary is learned from the corpus (char) or fixed (gpt2): the vocab
    # step scans the corpus only for the former.
    learns_vocabulary = False
    # What the kind is, in a few words, for the `--tokenization` help texts (spec_help).
    description = ""
    # safe(before, after): where near a newline a text may be cut into blocks without changing its
    # encoding, given the bytes on each side of it: bytes from just after it, or None for nowhere
    # (mypt.text.split_blocks). None instead of a rule: just after any newline. A rule's `run_skip`
    # (RunSkip, above) tells the scan the runs of whitespace it need not ask it about.
    block_boundary: Callable[[bytes, bytes], int | None] | None = None
    # The bytes of a .txt block the tokenize step encodes at once (None: mypt.text.BLOCK_BYTES):
    # smaller for a kind whose encoding costs much memory a byte.
    block_bytes: int | None = None

    def __new__(cls, config: object = None, kind: str | None = None, **kwargs):
        # Tokenizer("char"): a string where the guide's form has its (unused) config is the kind, so
        # that no call with a kind in it builds gpt2 (text encoded with it would train on gpt2's ids).
        if isinstance(config, (str, os.PathLike)):
            if kind is not None:
                raise TokenizerError(f"Tokenizer({config!r}, {kind!r}): two kinds given; the guide's form is "
                                     f"Tokenizer(config, {kind!r}), or Tokenizer({kind!r})")
            config, kind = None, _kind_of(config)
        elif kind is not None:
            kind = _kind_of(kind)
        if cls is Tokenizer:  # the guide's Tokenizer(config, kind): dispatch to the kind's class
            cls = tokenizer_class(kind or "gpt2")
        elif kind is not None and kind != cls.kind:
            raise TokenizerError(f"{cls.__name__} is the {cls.kind} tokenizer, not {kind!r}: Tokenizer({kind!r})")
        if cls.learns_vocabulary and not kwargs:
            raise TokenizerError(f"Tokenizer({cls.kind!r}) needs its vocabulary: Tokenizer({cls.kind!r}, "
                                 "chars=TEXT) (the characters of your text), or Tokenizer.load(DATASET_DIR) for a "
                                 "prepared dataset's")
        return super().__new__(cls)

    def __init__(self, config: object = None, kind: str | None = None, **kwargs):
        if kind is not None and kind != self.kind:
            raise TokenizerError(f"{type(self).__name__} is the {self.kind} tokenizer, not {kind!r}")

    @classmethod
    def from_corpus(cls, char_sets: Iterable[str]) -> "Tokenizer":
        """The tokenizer for a corpus, given the characters of its parts (kinds with a fixed
        vocabulary ignore them)."""
        return cls()

    @classmethod
    def from_argument(cls, arg: str | None) -> "Tokenizer":
        """The tokenizer `--tokenization KIND:ARG` names (kinds without an argument: cls())."""
        return cls()

    @classmethod
    def from_state(cls, state: dict, source: str = "tokenizer state") -> "Tokenizer":
        if not isinstance(state, dict) or state.get("format_version") != STATE_VERSION or \
                state.get("kind") not in TOKENIZERS:
            raise TokenizerError(f"{source}: not a mypt tokenizer state (format_version {STATE_VERSION}, "
                                 f"kind one of {', '.join(TOKENIZERS)})")
        try:
            return TOKENIZERS[state["kind"]]._from_state(state)
        except TokenizerError as e:  # a damaged state: name the file it came from
            raise TokenizerError(f"{source}: {e}") from None

    @classmethod
    def _from_state(cls, state: dict) -> "Tokenizer":
        return cls()

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "Tokenizer":
        """Load from a directory holding tokenizer_state.json (a dataset or a checkpoint)."""
        path = Path(directory)
        if path.is_file() and path.name != STATE_FILE:
            raise TokenizerError(f"{directory} is a file, not a mypt dataset or checkpoint directory (those hold "
                                 f"{STATE_FILE}): " + (f"a Hugging Face tokenizer goes in --tokenization hf:{directory}"
                                                       if path.suffix == ".json" else
                                                       "prepare a dataset from it with mypt prepare-dataset"))
        if path.is_dir():
            path = path / STATE_FILE
        if not path.is_file():
            hf = (Path(directory) / "tokenizer.json").is_file()
            raise TokenizerError(f"no {STATE_FILE} in {directory}: not a mypt dataset or checkpoint; prepare a dataset "
                                 "with mypt prepare-dataset --out_dir NEW_DIR"
                                 + (f" (a Hugging Face tokenizer: --tokenization hf:{Path(directory) / 'tokenizer.json'})"
                                    if hf else ""))
        state = read_json(path, TokenizerError, "the file is damaged: prepare the dataset (or train the model) again")
        return cls.from_state(state, str(path))

    # -- the interface ---------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        raise NotImplementedError

    @property
    def eot_id(self) -> int | None:
        """The end-of-text id appended after every document; None when the kind has none."""
        return None

    def encode_array(self, text: str) -> np.ndarray:
        """Ids of `text` as a uint32 array (the fast path used for preparation)."""
        raise NotImplementedError

    def encode(self, text: str) -> list[int]:
        return self.encode_array(text).tolist()

    def encode_lossy(self, text: str) -> tuple[np.ndarray, dict[str, int]]:
        """Ids of `text`, with what the vocabulary cannot hold replaced; returns the ids and
        the count of each replaced character (empty for kinds that encode any text)."""
        return self.encode_array(text), {}

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        raise NotImplementedError

    def check_ids(self, ids: np.ndarray) -> None:
        if ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size):
            raise TokenizerError(f"token id out of range for a vocabulary of {self.vocab_size}")

    def _state(self) -> dict:
        return {}

    def state(self) -> dict:
        return {"format_version": STATE_VERSION, "kind": self.kind, "vocab_size": self.vocab_size,
                "eot_id": self.eot_id, **self._state()}

    def __reduce__(self):
        # A tokenizer travels as its state, built again where it lands (a worker builds it once a
        # map: mypt.shared_value), not as what it built (an hf library object, tiktoken's encoding).
        return Tokenizer.from_state, (self.state(),)

    def identity(self) -> dict:
        """What makes two tokenizers the same one: the state, with anything kept as text in a
        form of its own (hf's tokenizer.json) as the value it holds, so that the same tokenizer
        saved another way (re-indented) is equal. Compared by tokenizer_match, hashed into a
        dataset's record (shards.tokenizer_sha256)."""
        return self.state()

    def unused_ids(self) -> list[int]:
        """Ids below vocab_size that stand for no token (an hf vocabulary with gaps): the model
        has rows for them, never trained on; generate never samples them."""
        return []

    def identities(self) -> list[dict]:
        """Every form of the identity that a dataset's record may hold: this mypt's, then an
        earlier one's (shards.check_tokenizer_record accepts each)."""
        return [self.identity()]

    def save(self, directory: str | os.PathLike) -> Path:
        """Write tokenizer_state.json in `directory`; a mypt checkpoint's or dataset's of another
        tokenizer is refused (_check_replaces)."""
        path = Path(directory) / STATE_FILE
        text = json.dumps(self.state(), ensure_ascii=False, indent=1) + "\n"
        self._check_replaces(Path(directory), text)
        atomic_write_text(path, text)
        return path

    def _check_replaces(self, directory: Path, text: str) -> None:
        """Refuse to write `text` as the tokenizer of a mypt checkpoint or dataset in `directory`
        that records another: a checkpoint's config.json records the sha256 of its
        tokenizer_state.json, and every load (generate, eval, --resume) refuses other bytes; a
        dataset's shards are ids of its own tokenizer and would decode as other text. The same
        bytes (a checkpoint), or the same tokenizer (a dataset), pass."""
        config = _json_object(directory / CONFIG_FILE)
        if is_mypt_config(config):
            sums = config.get("sha256")
            recorded = sums.get(STATE_FILE) if isinstance(sums, dict) else None
            if not isinstance(recorded, str) or recorded == hashlib.sha256(text.encode("utf-8")).hexdigest():
                return
            why = (f"a mypt checkpoint whose {CONFIG_FILE} records the sha256 of its own {STATE_FILE}, which "
                   "this tokenizer's is not: loading the checkpoint (generate, eval, --resume) would then refuse it")
        elif (directory / METADATA_FILE).is_file() and (directory / STATE_FILE).is_file():
            try:
                held = Tokenizer.load(directory)
            except TokenizerError:  # (a damaged file: nothing to keep; the dataset's record still checks the new one)
                return
            if held.identity() == self.identity():
                return
            why = (f"a mypt dataset whose shards are ids of its own tokenizer ({held.kind}, vocab_size "
                   f"{held.vocab_size}), not of this one ({self.kind}, vocab_size {self.vocab_size}): they would "
                   "decode as other text")
        else:
            return
        raise TokenizerError(f"Tokenizer.save({str(directory)!r}): {directory} is {why}; save this tokenizer to "
                             "a directory of its own")

    def __repr__(self) -> str:
        return f"Tokenizer(kind={self.kind!r}, vocab_size={self.vocab_size})"
