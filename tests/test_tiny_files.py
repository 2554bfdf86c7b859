"""A corpus of many tiny files (one document each, as a crawl comes): what each file costs must
not grow with the size of the tokenizer nor leave per-file debris (bench/tiny_files.py measures
it). Each test counts the mechanism, never the time."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from mypt.cli import main
from mypt.tokenizers import Tokenizer
from mypt.tokenizers.hf import HFTokenizer

tokenizers = pytest.importorskip("tokenizers")

WORDS = "the quick brown fox jumps over a lazy dog while seven wizards quietly hex zebras".split()


def tiny_corpus(root, files: int):
    root.mkdir()
    for i in range(files):
        (root / f"doc{i:03d}.txt").write_text(f"{WORDS[i % len(WORDS)]} {i}\n{WORDS[-i % len(WORDS)]}\n")
    return root


def prepare(*args: str) -> None:
    result = CliRunner().invoke(main, ["prepare-dataset", *args])
    assert result.exit_code == 0, result.output + repr(result.exception)


def hf_tokenizer_json(path, vocab_size: int = 300):
    hf = tokenizers.Tokenizer(tokenizers.models.BPE(unk_token="<unk>"))
    hf.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"], show_progress=False,
                                             initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
    hf.train_from_iterator([" ".join(WORDS)] * 20, trainer)
    hf.save(str(path))
    return path


class Watched(str):
    """A tokenizer.json's text that counts how often it is rendered or compared: what a task
    that keys the worker's tokenizer by the state itself pays (a real one is MBs)."""

    touches = 0

    def __repr__(self):
        Watched.touches += 1
        return super().__repr__()

    def __eq__(self, other):
        Watched.touches += 1
        return super().__eq__(other)

    def __ne__(self, other):
        Watched.touches += 1
        return super().__ne__(other)

    __hash__ = str.__hash__


def test_a_worker_builds_the_hf_tokenizer_once_and_never_renders_its_json_per_file(tmp_path, monkeypatch):
    monkeypatch.setattr(HFTokenizer, "_state", lambda self: {"tokenizer_json": Watched(self.tokenizer_json)})
    builds = []
    from_state = Tokenizer.from_state.__func__
    monkeypatch.setattr(Tokenizer, "from_state",
                        classmethod(lambda cls, state, *a: builds.append(1) or from_state(cls, state, *a)))
    counts = {}
    for files in (2, 40):  # a task a file (in this process: --workers 1)
        tok_json = hf_tokenizer_json(tmp_path / f"tok{files}.json", 260 + files)  # (not one a worker holds)
        builds.clear()
        Watched.touches = 0
        prepare("--input_files", str(tiny_corpus(tmp_path / f"c{files}", files)), "--out_dir",
                str(tmp_path / f"ds{files}"), "--tokenization", f"hf:{tok_json}", "--workers", "1", "--val_fraction",
                "0")
        counts[files] = len(builds), Watched.touches
    # As many builds for 40 files as for 2 (the tokenize worker's one, the split step's record), and
    # the text neither rendered nor compared for each file.
    assert counts[40] == counts[2] and counts[40][1] < 5, counts
