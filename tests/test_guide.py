"""The MyPT guide's lines that mypt runs verbatim: config file paths, the public imports, the
start-up check of `mypt train`, and GPT.fit driven by the loader's config and the optimizer."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from mypt.cli import main
from mypt.config import load_config_file
from mypt.tokenizers.char import CharTokenizer


@pytest.mark.parametrize("guide, preset", [("configs/150M.json", "150M"), ("configs/150M_1024.json", "150M_1024"),
                                           ("configs/small_char.json", "small_char"),
                                           ("configs/pretrain/750M_1024_domain_adapt.json",
                                            "pretrain/750M_1024_domain_adapt")])
def test_guide_config_paths_name_the_presets(guide, preset, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model, training, source = load_config_file(guide)
    assert (model, training) == load_config_file(preset)[:2] and source == f"preset {preset}"
    mine = tmp_path / "configs" / "150M.json"  # a file of that name wins over the preset
    mine.parent.mkdir()
    mine.write_text('{"model": {"n_layer": 3}}')
    assert load_config_file("configs/150M.json") == ({"n_layer": 3}, {}, "configs/150M.json")


def test_public_imports():
    from mypt import GPT, GPTDataLoader, Tokenizer  # the guide's import line
    from mypt import GPTConfig, MixtureLoader, TrainConfig

    assert {c.__module__ for c in (GPT, GPTDataLoader, Tokenizer, GPTConfig, MixtureLoader, TrainConfig)} == \
        {"mypt.model", "mypt.data", "mypt.tokenizers.base", "mypt.config"}


def test_fit_without_config_trains_with_the_loaders_config_and_the_optimizers_lr():
    from mypt import GPT, GPTConfig, GPTDataLoader, TrainConfig
    from mypt.train import get_lr

    tok = CharTokenizer(chars=[chr(c) for c in range(32, 32 + 40)])
    tokens = (np.arange(4000) * 7 % 40).astype(np.uint32)
    config = TrainConfig(batch_size=2, max_iters=6, eval_interval=3, eval_iters=1, warmup_iters=2, log_interval=1,
                         device="cpu")
    loader = GPTDataLoader(config, tok, tokens=tokens, block_size=16)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=16))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    lines: list[str] = []
    result = model.fit(data_loader=loader, optimizer=optimizer, log=lines.append)
    assert result["step"] == 6  # the loader's config, not TrainConfig's 5,000 steps
    assert [h["step"] for h in result["history"] if "val" in h] == [0, 3, 6]
    lrs = [float(m.group(1)) for m in (re.search(r"lr ([\d.e+-]+),", line) for line in lines) if m]
    peak = TrainConfig(max_iters=6, warmup_iters=2, learning_rate=1e-3)
    assert lrs == pytest.approx([get_lr(s, peak) for s in range(6)], rel=1e-2)  # peaks at the optimizer's 1e-3
    assert max(lrs) == pytest.approx(1e-3, rel=1e-2)


def test_train_prints_the_guides_start_up_check(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "input.txt").write_text("".join(f"Line {i} of the king's speech.\n" for i in range(400)))
    runner = CliRunner()
    done = runner.invoke(main, ["prepare-dataset", "--input_files", "input.txt", "--out_dir", "data/my_char_dataset",
                                "--tokenization", "char", "--workers", "1"])
    assert done.exit_code == 0, done.output
    tiny = ["--config_file", "tiny", "--device", "cpu", "--max_iters", "1", "--eval_interval", "1", "--eval_iters", "1"]
    done = runner.invoke(main, ["train", "--dataset_dir", "data/my_char_dataset", "--model_name", "m", *tiny])
    assert done.exit_code == 0, done.output
    vocab = CharTokenizer.load(tmp_path / "data/my_char_dataset").vocab_size
    assert done.output.startswith(f"Loading tokenizer state from data/my_char_dataset...\nVocabulary size: {vocab}\n")
    # the tiny preset warms up over 5 steps: a 1-step run never reaches the peak, and says so
    assert "\nwarning: warmup_iters 5 >= max_iters 1: the learning rate never reaches its peak 0.003 " in done.output
    done = runner.invoke(main, ["train", "--input_file", "input.txt", "--tokenization", "char", "--model_name", "n",
                                *tiny, "--warmup_iters", "0"])
    assert done.exit_code == 0, done.output
    assert done.output.startswith(f"Building the char tokenizer for input.txt...\nVocabulary size: {vocab}\n")
    assert "warning" not in done.output


def test_fit_says_when_its_config_and_its_loader_differ_in_batch_size():
    """The loader draws the batches: a config passed to fit with another batch_size does not
    change them, and the start of the run says so."""
    from mypt import GPT, GPTConfig, GPTDataLoader, TrainConfig

    tok = CharTokenizer(chars=[chr(c) for c in range(32, 32 + 40)])
    loader = GPTDataLoader(TrainConfig(batch_size=2, device="cpu"), tok,
                           tokens=(np.arange(4000) * 7 % 40).astype(np.uint32), block_size=16)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=16))
    lines: list[str] = []
    model.fit(loader, config=TrainConfig(batch_size=8, max_iters=1, eval_interval=1, eval_iters=1, warmup_iters=0,
                                         device="cpu"), log=lines.append)
    assert "warning: fit's config has batch_size 8, its data loader 2: batches of 2 train" in "\n".join(lines)
    assert "x 2 x 16" in lines[0]
