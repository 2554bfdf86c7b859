"""Step vocab: the tokenizer a corpus is encoded with. A kind with a fixed vocabulary
(gpt2) or read from a file (hf:PATH) needs no corpus; a kind that learns it (char) scans the
corpus' characters."""

from __future__ import annotations

from pathlib import Path

from mypt.errors import InputError
from mypt.io import staged_dir
from mypt.names import MANIFEST, METADATA_FILE, STATE_FILE
from mypt.parallel import parallel_map
from mypt.steps import Step, read_input
from mypt.steps.tokenize import TokenizeSettings
from mypt.text import block_docs, split_blocks
from mypt.tokenizers import Tokenizer, make_tokenizer, tokenizer_class

STEP = Step("vocab", reads=("clean", "dedup"))


def vocab_files(out_dir: Path) -> list[str]:
    """What a vocab output holds (io.check_written): the tokenizer alone. A directory with the
    record of another output (a dataset, a checkpoint or a transformers directory, a step's
    output) is that output, whose tokenizer_state.json belongs with its tokens: replacing it
    there made a dataset decode as other characters while verify-dataset still passed it."""
    other = [name for name in (METADATA_FILE, "config.json", MANIFEST) if (Path(out_dir) / name).exists()]
    if other:
        raise InputError(f"it holds {other[0]}: another output than a vocab (a dataset, a model or a step's), "
                         f"whose {STATE_FILE} the vocab stage must not replace")
    return [STATE_FILE]


def _block_chars(task) -> str:
    path, jsonl, start, end = task
    chars: set[str] = set()
    for lines in block_docs(path, start, end, jsonl):
        for line in lines:
            chars.update(line)
    return "".join(sorted(chars))


def build_vocab(in_dir: Path, settings: TokenizeSettings = TokenizeSettings()) -> Tokenizer:
    """The `settings.tokenization` tokenizer, learned from `in_dir`'s text when its kind
    learns a vocabulary."""
    if not tokenizer_class(settings.tokenization).learns_vocabulary:
        return make_tokenizer(settings.tokenization)
    manifest = read_input(STEP, in_dir)
    tasks = [(Path(in_dir) / s["file"], s["jsonl"], a, b) for s in manifest["sources"]
             for a, b in split_blocks(Path(in_dir) / s["file"])]
    return make_tokenizer(settings.tokenization, parallel_map(_block_chars, tasks, settings, "vocab"))


def vocab(in_dir: Path, out_dir: Path, settings: TokenizeSettings = TokenizeSettings()) -> Tokenizer:
    """The vocab stage: build_vocab's tokenizer saved as `out_dir`/tokenizer_state.json, `out_dir`
    checked before the corpus is read (a char vocabulary is a pass over all of it)."""
    with staged_dir(out_dir, [in_dir], marker=STATE_FILE, written=vocab_files, kind="vocab") as stage:
        tokenizer = build_vocab(in_dir, settings)
        tokenizer.save(stage)
    return tokenizer
