"""A tokenizer's cost is paid once. The state every task of a map needs (the tokenizer's: an hf
tokenizer.json is MBs) goes to each worker once, not with every task: what a step sends its
workers does not grow with the tokenizer, in a pool that one step after another uses
(prepare-dataset's), each step's own. An append builds the tokenizer --tokenization names once.
Counted (bytes sent, builds), never timed."""

from __future__ import annotations

import json
import multiprocessing.reduction

import pytest
from click.testing import CliRunner

from mypt.cli import main
from mypt.parallel import shared_pool
from mypt.steps.clean import CleanSettings, clean
from mypt.steps.dedup import DedupSettings, dedup
from mypt.steps.tokenize import TokenizeSettings, tokenize
from mypt.tokenizers.hf import HFTokenizer

tokenizers = pytest.importorskip("tokenizers")

WORDS = "the quick brown fox jumps over a lazy dog while seven wizards quietly hex zebras".split()


def big_tokenizer_json(path, merges: int, padding: int):
    """A byte-level BPE of `merges` merges learned from WORDS, its vocabulary padded with
    `padding` tokens no text makes (a big vocabulary's state, whatever it encodes)."""
    hf = tokenizers.Tokenizer(tokenizers.models.BPE())
    hf.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=257 + merges, special_tokens=["<|endoftext|>"],
                                             initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
                                             show_progress=False)
    hf.train_from_iterator([" ".join(WORDS)] * 20, trainer)
    config = json.loads(hf.to_str())
    vocab = config["model"]["vocab"]
    vocab.update({f"<pad{i:07d}>": len(vocab) + i for i in range(padding)})
    path.write_text(json.dumps(config))
    return HFTokenizer.from_file(path)


@pytest.mark.slow
def test_a_pool_sends_each_steps_tokenizer_state_once_not_with_its_tasks(tmp_path, monkeypatch):
    text = tmp_path / "text"
    text.mkdir()
    for i in range(40):  # a task a file
        (text / f"doc{i:03d}.txt").write_text(f"{WORDS[i % len(WORDS)]} {i}\n{WORDS[-i % len(WORDS)]} fox\n")
    clean([str(text)], tmp_path / "clean", CleanSettings(workers=1))
    dedup(tmp_path / "clean", tmp_path / "dedup", DedupSettings(workers=1))
    # Two tokenizers of other ids (their merges), each a state of MBs.
    toks = [big_tokenizer_json(tmp_path / f"tok{m}.json", m, 60_000) for m in (10, 40)]
    size = min(len(t.tokenizer_json) for t in toks)
    assert size > 1e6

    def tokens(out, tok, workers):
        tokenize(tmp_path / "dedup", out, tok, TokenizeSettings(tokenization="hf", workers=workers))
        return {p.name: p.read_bytes() for p in sorted(out.iterdir())}

    expected = [tokens(tmp_path / f"one{i}", tok, 1) for i, tok in enumerate(toks)]  # in this process
    assert expected[0] != expected[1]

    sent = []  # the size of every message the parent sends its workers (a chunk of tasks, ...)
    dumps = multiprocessing.reduction.ForkingPickler.dumps.__func__
    monkeypatch.setattr(multiprocessing.reduction.ForkingPickler, "dumps",
                        classmethod(lambda cls, obj, *a: sent.append(len(b := dumps(cls, obj, *a))) or b))
    settings = TokenizeSettings(workers=2)
    with shared_pool(settings):  # one pool for both steps, as prepare-dataset's dedup and tokenize share one
        got = [tokens(tmp_path / f"two{i}", tok, 2) for i, tok in enumerate(toks)]
    assert got == expected  # each step's workers encoded with its own tokenizer
    assert len(sent) > 2 * 10 and sum(sent) < size / 10, (len(sent), sum(sent), size)


def test_an_append_with_an_hf_file_builds_its_tokenizer_once(tmp_path, monkeypatch):
    text = tmp_path / "text"
    text.mkdir()
    for name in ("old", "new"):
        (text / f"{name}.txt").write_text("\n".join(f"{name} {w} {i}" for i, w in enumerate(WORDS)) + "\n")
    big_tokenizer_json(tmp_path / "tok.json", 20, 100)
    flags = ["--tokenization", f"hf:{tmp_path / 'tok.json'}", "--workers", "1", "--val_fraction", "0"]
    ds, builds = tmp_path / "ds", []
    from_file = HFTokenizer.from_file.__func__
    monkeypatch.setattr(HFTokenizer, "from_file",
                        classmethod(lambda cls, *a, **k: builds.append(a) or from_file(cls, *a, **k)))
    for name, where in (("old", "--out_dir"), ("new", "--append_to")):
        builds.clear()
        result = CliRunner().invoke(main, ["prepare-dataset", "--input_files", str(text / f"{name}.txt"), where,
                                           str(ds), *flags])
        assert result.exit_code == 0, result.output + repr(result.exception)
        assert len(builds) == 1, (where, builds)
    assert len(json.loads((ds / "dataset_metadata.json").read_text())["appended"]) == 1


@pytest.mark.slow
def test_the_shared_state_waits_in_the_steps_work_folder_and_a_kill_leaves_none_elsewhere(tmp_path):
    """The file the workers read the tokenizer's state from was made in the system's temporary
    folder: a kill -9 during tokenize left it there (MBs for an hf tokenizer). It lies in the
    step's work folder now, which the next run over the output removes."""
    import os
    import signal
    import subprocess
    import sys
    import time

    text, system_tmp = tmp_path / "text", tmp_path / "system_tmp"
    text.mkdir()
    system_tmp.mkdir()
    for i in range(3000):  # a task a file: a map long enough to catch
        (text / f"doc{i:04d}.txt").write_text(f"{WORDS[i % len(WORDS)]} {i}\n{WORDS[-i % len(WORDS)]} fox\n")
    args = [sys.executable, "-m", "mypt.cli", "prepare-dataset", "--input_files", str(text), "--out_dir",
            str(tmp_path / "ds"), "--tokenization", "gpt2", "--workers", "2"]
    env = {**os.environ, "TMPDIR": str(system_tmp)}
    proc = subprocess.Popen(args, env=env, cwd=tmp_path, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline, found = time.monotonic() + 120, []
        while not found and proc.poll() is None and time.monotonic() < deadline:
            found = [name for _, _, names in os.walk(tmp_path / ".ds.work")  # (folders come and go: no error)
                     for name in names if name.startswith(".shared-")]
            time.sleep(0.005)
        assert found, "the shared state never appeared in the output's work folder"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert list(system_tmp.iterdir()) == []
    subprocess.run(args, env=env, cwd=tmp_path, check=True, capture_output=True)
    assert not list(tmp_path.glob("**/.shared-*")) and list(system_tmp.iterdir()) == []
    assert (tmp_path / "ds" / "dataset_metadata.json").is_file()
