"""train-tokenizer: a byte-level BPE `tokenizer.json` learned from a corpus, for
`--tokenization hf:PATH`.

GPT-2's recipe with the `tokenizers` library: the ByteLevel pre-tokenizer (GPT-2's regex, no
prefix space), all 256 bytes in the alphabet (any text encodes, nothing is unknown), merges
learned by BpeTrainer, `<|endoftext|>` as the one special token (id 0, mypt's end of text).
The corpus streams through mypt's readers (any input prepare-dataset takes) one block at a
time into `train_from_iterator`, so memory holds the trainer's word counts, never the corpus.
The library trains in a child process (learn_in_child), which a Ctrl-C or SIGTERM ends at once.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

from mypt.errors import InputError, TokenizerError
from mypt.io import atomic_write_text, output_target
from mypt.lock import check_not_tilde
from mypt.readers import Reader, TextSeen, WalkSkipped, no_text_error, read_texts, text_sources
from mypt.settings import Settings, setting
from mypt.signals import stops_held
from mypt.normalize import normalize
from mypt.parallel import WorkerDied, exit_with_parent, rebuildable
from mypt.text import DecodeCounter, display_name, skipped_lines
from mypt.tokenizers.base import non_whitespace_runs, split_at, whitespace_runs
from mypt.tokenizers.hf import EOT_NAMES, HFTokenizer, require_tokenizers

EOT = EOT_NAMES[0]  # <|endoftext|>
# The tokenizers library allocates by vocab_size up front (1e8 takes 175 MB, 2**31 aborts the
# process in Rust); 2**20 is four times the largest vocabulary in use (Gemma's 262,144).
MAX_VOCAB = 1 << 20
# BpeTrainer merges a pair inside a word one symbol removal at a time, each moving the rest of
# the word: a word of n characters costs O(n**2) (a run of 64 Ki newlines, one word: 3.8 s;
# 1 MB of blank lines: > 300 s). Words longer than this (only runs of one kind of character
# are: whitespace, letters, digits or punctuation) go to the trainer in pieces of this length.
# It counts characters, while the trainer's words are bytes: a piece of CJK letters (3 bytes
# each) is 12 KiB, nine times a piece of ASCII's cost, still far from a megabyte's.
MAX_WORD = 4096
BATCH_CHARS = 1 << 20  # text sent to the training process at a time (its memory holds about two)


@dataclass(frozen=True)
class TokenizerTrainSettings(Settings):
    LABEL = "train-tokenizer setting"

    vocab_size: int = setting(32000, "Tokens in the vocabulary: the 256 bytes, <|endoftext|> and the learned "
                                     "merges (fewer when the corpus has fewer pairs to merge).", min=258,
                              max=MAX_VOCAB)
    min_frequency: int = setting(2, "A pair of tokens is merged only when it occurs at least this often.", min=1)
    normalize: bool = setting(True, "Learn from text normalized as prepare-dataset normalizes it by default "
                                    "(NFC, \\r\\n -> \\n, control characters and trailing whitespace removed).")
    text_key: str = setting("text", "JSONL and parquet: the field (column) that holds each document's text.")


class CorpusTexts:
    """The texts of the inputs (mypt.readers.text_sources: the readers prepare-dataset's clean
    step uses), one reader block at a time; `seen.any` tells afterwards whether any of them
    was more than blank, since the trainer learns 257 tokens from nothing without a word."""

    def __init__(self, readers: Sequence[Reader], settings: TokenizerTrainSettings):
        self.readers, self.settings, self.seen = readers, settings, TextSeen()

    def __iter__(self) -> Iterator[str]:
        decoder = DecodeCounter()
        pre_tokenizer = _pre_tokenizer(require_tokenizers())
        for reader in self.readers:
            for text in read_texts(reader, reader.checked_blocks(), decoder, Counter(), self.seen):
                yield from short_words(normalize(text) if self.settings.normalize else text, pre_tokenizer, MAX_WORD)


def _pre_tokenizer(tk):
    """GPT-2's: its regex, no prefix space, bytes as characters (the trainer's and the file's)."""
    return tk.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)


def short_words(text: str, pre_tokenizer, limit: int) -> list[str]:
    """`text` in parts whose words (the pre-tokenizer's pieces) are those of `text`, but for
    each word longer than `limit` (>= 3), which is cut into pieces of `limit` characters. The
    pattern decides a piece from the text after its start alone, no piece but a whitespace one
    takes in whitespace, and a whitespace run at the end of a text is one piece; so a cut inside
    a word only splits that word. (A cut before a quote moves back one character, making a piece
    of limit + 1: a part beginning "'s" would begin with the contraction's piece.)

    Only the long stretches are looked at, not the whole text (4 MiB of it pre-tokenized took
    about 3 s and 430 MB in tuples): a whitespace run W followed by text is the words W[:-1] and
    W[-1] (alone, or the next word's space), and at the text's end one word; a word with
    anything but whitespace lies in a stretch without whitespace and the one character before
    it, which the pre-tokenizer splits alone as it splits the whole text."""
    assert limit >= 3, limit
    cuts = []
    for start, end in whitespace_runs(text, limit + 1):
        end -= end < len(text)
        cuts += range(start + limit, end, limit)
    for start, end in non_whitespace_runs(text, limit):  # (a word of limit + 1 with its space)
        start -= start > 0
        cuts += (cut - (text[cut] == "'") for _, (a, b) in pre_tokenizer.pre_tokenize_str(text[start:end])
                 if b - a > limit for cut in range(start + a + limit, start + b, limit))
    return split_at(text, sorted(cuts)) if cuts else [text]  # (ordinary text: no copy)


def check_out(out: Path, overwrite: bool) -> None:
    """An existing --out is replaced only with --overwrite, and only when it is a
    tokenizer.json (never another file). A link is judged, and written, at its target."""
    check_not_tilde(out, "--out")
    if out.is_dir():
        raise InputError(f"--out {out} is a directory: give a file path such as {out / 'tokenizer.json'}")
    if not out.exists():
        return
    if not overwrite:
        raise InputError(f"--out {out} already exists: pass --overwrite to replace it, or choose another --out")
    try:
        HFTokenizer.from_file(out)
    except TokenizerError:
        raise InputError(f"--out {out} is not a tokenizer.json: refused even with --overwrite (mypt replaces only "
                         "a tokenizer file); choose another --out") from None


def train_tokenizer(input_files: list[str], out: Path, settings: TokenizerTrainSettings = TokenizerTrainSettings(),
                    overwrite: bool = False, log: Callable[[str], None] = print) -> HFTokenizer:
    """Learn a byte-level BPE from `input_files` and write it to `out` (atomically). What the
    inputs held that it did not learn from (binary files, hidden ones a walk passed over...)
    goes to `log`, as prepare-dataset says it. The library learns in a spawned process
    (learn_in_child): a script calling this runs its top level again there unless guarded by
    `if __name__ == "__main__":`, as with prepare-dataset's workers."""
    out = Path(out)
    check_out(out, overwrite)
    walk = WalkSkipped()
    # Lines read as the clean step reads them, old-Mac text too; no line filter here: a line over
    # MAX_LINE_BYTES is refused, naming it.
    readers, binary = text_sources(input_files, text_key=settings.text_key, walk_skipped=walk,
                                   cr_ends_lines=settings.normalize)
    for line in skipped_lines([display_name(p) for p in binary], [fix for fix in binary.values() if fix],
                              walk.names() if walk else None, walk.counts()):
        log(line)
    if any(out.resolve() == p.resolve() for p in [r.path for r in readers] + list(binary)):
        raise InputError(f"--out {out} is one of the --input_files: choose another --out")
    require_tokenizers()  # (its error here, not from the training's process)
    texts = CorpusTexts(readers, settings)
    text = learn_in_child(texts, settings)
    if not texts.seen.any:
        raise no_text_error(readers)
    tokenizer = HFTokenizer(tokenizer_json=text, source=str(out))  # what --tokenization hf:OUT will read
    assert tokenizer.eot_id == 0, "BpeTrainer puts the special tokens first"
    out.parent.mkdir(parents=True, exist_ok=True)
    # A link is replaced at its target, as mypt's directory outputs are: the link stays a link
    # (an atomic write to the link's own path put a regular file in its place).
    atomic_write_text(output_target(out), text + "\n")
    return tokenizer


def learn_in_child(texts: Iterable[str], settings: TokenizerTrainSettings) -> str:
    """The tokenizer.json text of the byte-level BPE learned from `texts`, by the library in a
    spawned child process: its training is Rust code that holds the thread it runs in until it
    returns, and Python runs a signal's handler in the main thread alone, so a Ctrl-C or SIGTERM
    waited for the training's end (12 s of a 37 MB corpus; hours of a large one). Here the main
    thread reads the texts and waits on the child: a signal acts at once, and the child is
    killed. (A thread could not be left behind: the process aborted at its exit, the thread's
    Rust code taking the interpreter back.) The texts go to the child in batches through a
    pipe; what the reading raises is raised here, as before. The child holds Ctrl-C and SIGTERM
    blocked (a Ctrl-C reaches the terminal's whole group, a scheduler's SIGTERM the job's): the
    parent alone stops, as with prepare-dataset's workers (mypt.parallel)."""
    context = multiprocessing.get_context("spawn")  # (not fork: the library's threads, a parent's)
    ours, theirs = context.Pipe()
    child = context.Process(target=_learn, args=(theirs, settings, os.getpid()), name="mypt-train-tokenizer",
                            daemon=True)
    try:
        with stops_held(mask=True):
            child.start()
        theirs.close()
        batch, size = [], 0
        for text in texts:
            batch.append(text)
            size += len(text)
            if size >= BATCH_CHARS:
                _send(ours, batch)
                batch, size = [], 0
        _send(ours, batch)
        _send(ours, None)  # (the end of the texts)
        learned, error = _reply(ours)
        child.join(timeout=30)  # (it ends once its reply is sent)
    finally:
        if child.is_alive():  # (stopped: a signal, an error of the reading)
            child.kill()
        if child.pid is not None:
            child.join()
        ours.close()
    if error is not None:
        raise error
    return learned


_DIED = ("the tokenizer's training process died before it finished (killed by a signal, or by the system when "
         "memory ran out): nothing was written; run again")


def _send(conn, item: object) -> None:
    try:
        conn.send(item)
    except OSError:  # (a broken pipe: the child ended, having sent the library's error, or died)
        _, error = _reply(conn)
        raise error if error is not None else WorkerDied(_DIED) from None


def _reply(conn) -> tuple[str | None, BaseException | None]:
    """The child's reply: (the tokenizer.json text, None), or (None, the library's error)."""
    try:
        return conn.recv()
    except (EOFError, OSError):  # (OSError: the child killed with texts unread in its pipe, a reset)
        raise WorkerDied(_DIED) from None


def _learn(conn, settings: TokenizerTrainSettings, parent: int) -> None:
    """The training's process (learn_in_child): texts in, the tokenizer.json text (or the
    library's error) out. Quiet when the parent is gone: it has stopped, or was killed."""
    exit_with_parent(parent)  # (a kill -9 of mypt: not hours of training for nobody)

    def texts() -> Iterator[str]:
        while (batch := conn.recv()) is not None:
            yield from batch

    tk = require_tokenizers()
    hf = tk.Tokenizer(tk.models.BPE())
    hf.pre_tokenizer = _pre_tokenizer(tk)
    hf.decoder = tk.decoders.ByteLevel()
    trainer = tk.trainers.BpeTrainer(vocab_size=settings.vocab_size, min_frequency=settings.min_frequency,
                                     special_tokens=[EOT], initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet(),
                                     show_progress=False)
    try:
        hf.train_from_iterator(texts(), trainer=trainer)
        reply = (hf.to_str(pretty=True), None)
    except (EOFError, OSError):  # the parent's end of the pipe closed
        os._exit(1)
    except BaseException as e:  # the library's (a Rust panic is a BaseException): raised in the parent
        reply = (None, rebuildable(e))
    try:
        conn.send(reply)
    except OSError:
        os._exit(1)
