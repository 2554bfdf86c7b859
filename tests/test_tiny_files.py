"""A corpus of many tiny files (one document each, as a crawl comes): what each file costs must
not grow with the size of the tokenizer nor leave per-file debris (bench/tiny_files.py measures
it). Each test counts the mechanism, never the time."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

import mypt.steps.clean as clean_step
import mypt.steps.dedup as dedup_step
import mypt.steps.tokenize as tokenize_step
from mypt.cli import main
from mypt.steps import part_file
from mypt.steps.clean import CleanSettings, clean
from mypt.steps.dedup import DedupSettings, dedup
from mypt.steps.tokenize import TokenizeSettings, tokenize
from mypt.steps.vocab import build_vocab
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
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                             initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
                                             show_progress=False)
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


def test_a_one_block_sources_part_is_renamed_into_its_file_and_a_txt_writes_no_ends_part(tmp_path, monkeypatch):
    """A small source is one block, so one part file a step: inside the step's staged dir
    (which appears whole or not at all) it is renamed into place, not copied into a file
    atomic_file stages again; and a .txt block's document ends (none) are no file."""
    corpus = tiny_corpus(tmp_path / "corpus", 12)
    (corpus / "docs.jsonl").write_text('{"text": "one document"}\n{"text": "and another one"}\n')
    out = tmp_path / "steps"
    parts = {}  # name -> inode of each part file the tasks of a step's map wrote

    def spying(real):
        def spy(fn, tasks, how, desc, **shared):
            results = real(fn, tasks, how, desc, **shared)
            parts.update((p.name, p.stat().st_ino) for p in out.rglob("*")
                         if p.name.startswith((".part_", "out_", ".t_", ".d_")))
            return results
        return spy

    for module in (clean_step, dedup_step, tokenize_step):
        monkeypatch.setattr(module, "parallel_map", spying(module.parallel_map))
    clean([str(corpus)], out / "clean", CleanSettings(workers=1))
    dedup(out / "clean", out / "dedup", DedupSettings(workers=1))
    settings = TokenizeSettings(tokenization="char", workers=1)
    sources = tokenize(out / "dedup", out / "tokens", build_vocab(out / "dedup", settings), settings)["sources"]

    # Each source is one block, one task: source i's parts are task i's.
    made = {out / "clean" / s["file"]: f".part_{i:06d}" for i, s in enumerate(sources)}
    made.update({out / "dedup" / s["file"]: f"out_{i:06d}.part" for i, s in enumerate(sources)})
    made.update({out / "tokens" / part_file(i, "tokens"): f".t_{i:06d}" for i in range(len(sources))})
    made.update({out / "tokens" / part_file(i, "docs"): f".d_{i:06d}" for i, s in enumerate(sources) if s["jsonl"]})
    assert len(made) == 3 * 13 + 1
    assert [p.name for p, part in made.items() if p.stat().st_ino != parts[part]] == []  # renamed, not copied
    assert [name for name in parts if name.startswith(".d_")] == [f".d_{len(sources) - 1:06d}"]  # the .jsonl's
