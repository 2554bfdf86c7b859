"""model.fit and GPT through the Python API as a nanoGPT user calls them: what they refuse
before training, so that no trained checkpoint is replaced unasked and no run trains with
settings its checkpoint cannot be loaded with."""

from __future__ import annotations

import dataclasses

import pytest

from mypt import checkpoint
from mypt.errors import ConfigError
from mypt.model import GPT, load_model
from mypt.train import fit
from test_train_paths import config, loader, tiny_model, tokenizer


def _fit(ckpt, **kw):
    tok = tokenizer()
    return fit(tiny_model(tok), loader(tok), config=config(max_iters=2, eval_interval=2), checkpoint_dir=ckpt,
               log=lambda line: None, **{"tokenizer": tok, **kw})


def test_fit_refuses_to_replace_a_trained_checkpoint_unless_told(tmp_path):
    ckpt = tmp_path / "m"
    _fit(ckpt)
    before = {p.name: p.read_bytes() for p in ckpt.iterdir() if p.is_file()}
    with pytest.raises(ConfigError, match=rf"checkpoint_dir {ckpt} holds a trained model.*load_model.*resume_state"
                                          r".*overwrite=True"):
        _fit(ckpt)
    assert {p.name: p.read_bytes() for p in ckpt.iterdir() if p.is_file()} == before
    assert _fit(ckpt, overwrite=True)["step"] == 2  # asked: replaced


def test_fit_saves_the_loaders_tokenizer_when_given_none(tmp_path):
    result = _fit(tmp_path / "m", tokenizer=None)
    assert result["step"] == 2
    _, tok, _ = load_model(tmp_path / "m")
    assert tok.state() == tokenizer().state()
    assert checkpoint.holds_model(tmp_path / "m")


def test_settings_assigned_after_construction_are_checked_where_they_are_used(tmp_path):
    tok = tokenizer()
    cfg = config(max_iters=2)
    cfg.gradient_accumulation_steps = 0  # trained 0 tokens a step, unsaid
    with pytest.raises(ConfigError, match="gradient_accumulation_steps"):
        fit(tiny_model(tok), loader(tok), config=cfg, log=lambda line: None)
    model_cfg = tiny_model(tok).config
    model_cfg.n_head = 3  # (n_embd 32): a checkpoint no command could load
    with pytest.raises(ConfigError, match="n_head"):
        GPT(model_cfg)


@pytest.mark.parametrize("name", ["../val", "web/en", ""])
def test_an_eval_loaders_name_that_cannot_name_a_metrics_file_is_refused(tmp_path, name):
    tok = tokenizer()
    with pytest.raises(ConfigError, match="eval_data_loaders name"):
        fit(tiny_model(tok), loader(tok), eval_data_loaders={name: loader(tok)}, config=config(max_iters=2),
            log=lambda line: None)


def test_the_readmes_resume_in_python_continues_a_checkpoint(tmp_path, monkeypatch):
    """The README's Python resume (load_model, configure_optimizer, load_training_state, fit with
    resume_state) goes on from the checkpoint's step and weights, as mypt train --resume does."""
    import torch

    from mypt.checkpoint import load_training_state
    from mypt.train import configure_optimizer

    monkeypatch.chdir(tmp_path)
    tok = tokenizer()
    cfg = config(max_iters=4, eval_interval=2)
    fit(tiny_model(tok), loader(tok), config=cfg, checkpoint_dir="checkpoints/m", tokenizer=tok, log=lambda line: None)
    config_ = config(max_iters=6, eval_interval=2)
    model, tokenizer_, _ = load_model("checkpoints/m")
    optimizer = configure_optimizer(model, config_, torch.device(config_.device))
    state = load_training_state("checkpoints/m", optimizer, model=model)
    lines = []
    result = model.fit(loader(tokenizer_), optimizer, config=config_, checkpoint_dir="checkpoints/m",
                       resume_state=state, log=lines.append)
    assert state["step"] == 4 and result["step"] == 6
    assert [line.split(":")[0] for line in lines if line.startswith("step ")] == ["step 6"]


def _lrs(history_sink: list):
    return lambda step, values: history_sink.append(values["lr"]) if "lr" in values else None


def test_a_users_optimizer_keeps_each_groups_rate_and_its_peak_across_fits():
    """Without config=, the optimizer's rates are the schedule's peaks: a group of 1e-4 beside one
    of 1e-2 keeps its hundredth (one rate for all trained it at 1e-2), and a second fit with the
    same optimizer starts from 1e-2 again (it started from the first fit's decayed rate)."""
    import torch

    from mypt.config import TrainConfig
    from mypt.data import GPTDataLoader
    from test_train_paths import BLOCK, TEXT

    tok = tokenizer()
    model = tiny_model(tok)
    cfg = TrainConfig(max_iters=4, eval_interval=4, eval_iters=1, log_interval=1, warmup_iters=0, device="cpu",
                      batch_size=4)
    data = GPTDataLoader(cfg, tok, tokens=tok.encode_array(TEXT), block_size=BLOCK)
    head = [p for n, p in model.named_parameters() if n.startswith("transformer.h.0")]
    rest = [p for n, p in model.named_parameters() if not n.startswith("transformer.h.0")]
    optimizer = torch.optim.AdamW([{"params": rest, "lr": 1e-2}, {"params": head, "lr": 1e-4}])
    for _ in range(2):
        seen = []
        fit(model, data, optimizer, log=lambda line: None, on_metrics=_lrs(seen))
        assert seen[0] == pytest.approx(1e-2)  # the peak, each fit
        first, second = (g["lr"] for g in optimizer.param_groups)
        assert second == pytest.approx(first / 100)


@pytest.mark.slow
def test_mypt_train_resume_of_a_fits_checkpoint_continues_its_settings(tmp_path):
    """A checkpoint fit saved records the run's settings, as mypt train's do: `mypt train --resume`
    went on at the defaults' batch size and warmup, and said the run had max_iters 5000."""
    from click.testing import CliRunner

    from mypt.cli import main
    from mypt.config import TrainConfig
    from mypt.data import GPTDataLoader
    from mypt.tokenizers import Tokenizer
    from test_train_paths import TEXT

    (tmp_path / "t.txt").write_text(TEXT)
    done = CliRunner().invoke(main, ["prepare-dataset", "--input_files", str(tmp_path / "t.txt"), "--out_dir",
                                     str(tmp_path / "ds"), "--tokenization", "char"])
    assert done.exit_code == 0, done.output
    tok = Tokenizer.load(tmp_path / "ds")
    cfg = TrainConfig(batch_size=4, max_iters=4, eval_interval=2, eval_iters=1, warmup_iters=0, device="cpu")
    data = GPTDataLoader(cfg, tok, dataset_dir=tmp_path / "ds", block_size=16)
    model = GPT(dataclasses.replace(tiny_model(tok).config, vocab_size=tok.vocab_size))
    fit(model, data, config=cfg, checkpoint_dir=tmp_path / "ck" / "m", log=lambda line: None)
    done = CliRunner().invoke(main, ["train", "--dataset_dir", str(tmp_path / "ds"), "--model_name", "m",
                                     "--checkpoints_dir", str(tmp_path / "ck"), "--resume", "--max_iters", "6"])
    assert done.exit_code == 0, done.output
    assert "x 4 x 16)" in done.output and "max_iters 6 (was 4)" in done.output, done.output
    assert "warmup" not in done.output and "batch_size" not in done.output, done.output


def test_a_loader_built_from_a_dict_or_an_object_trains_with_the_settings_it_holds():
    """GPTDataLoader(config, ...) with a mapping or a plain object (not a TrainConfig): fit,
    given no config=, read none of it (max_iters=3 trained the default 5000 steps, unsaid), a
    dict was an AttributeError, and a name no setting has (`lr`) was dropped."""
    from types import SimpleNamespace

    from mypt.data import GPTDataLoader
    from test_train_paths import BLOCK, TEXT

    tok = tokenizer()
    for settings in ({"batch_size": 3, "block_size": BLOCK, "max_iters": 3, "eval_interval": 2, "eval_iters": 1},
                     SimpleNamespace(batch_size=3, block_size=BLOCK, max_iters=3, eval_interval=2, eval_iters=1,
                                     n_layer=1)):  # (a model setting beside them: the model's, not refused)
        data = GPTDataLoader(settings, tok, tokens=tok.encode_array(TEXT))
        lines = []
        result = tiny_model(tok).fit(data, log=lines.append)
        assert result["step"] == 3 and data.get_batch()[0].shape == (3, BLOCK), lines
        assert [h["step"] for h in result["history"] if "val" in h] == [0, 2, 3], lines  # eval_interval 2
    with pytest.raises(ConfigError, match=r"holds \['lr', 'max_iter'\], which no training setting is \(did you mean "
                                          r"max_iter -> max_iters\?\): GPT.fit would train without them; pass a "
                                          r"TrainConfig"):
        GPTDataLoader({"batch_size": 3, "block_size": BLOCK, "lr": 1e-3, "max_iter": 3}, tok,
                      tokens=tok.encode_array(TEXT))
    with pytest.raises(ConfigError, match=r"config is a GPTConfig, the model's settings: pass the training settings.*"
                                          r"TrainConfig\(batch_size=12\).*block_size=model.config.block_size"):
        GPTDataLoader(tiny_model(tok).config, tok, tokens=tok.encode_array(TEXT))


def test_a_scripts_config_object_trains_with_its_other_names_said_once_and_left_out():
    """A plain object (a nanoGPT-style script's argparse.Namespace) holds the script's own names
    beside the settings (out_dir, wandb_log): read for the settings it has, the others said in
    one warning (a mapping's are refused: it is written as settings). A device it names that
    this machine lacks is said as the config's setting, not as mypt train's --device flag."""
    import argparse
    import warnings
    from types import SimpleNamespace
    from unittest import mock

    from mypt.data import GPTDataLoader
    from test_train_paths import BLOCK, TEXT

    tok = tokenizer()
    script = argparse.Namespace(batch_size=3, block_size=BLOCK, max_iters=2, eval_interval=2, eval_iters=1,
                                out_dir="out", wandb_log=False)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        data = GPTDataLoader(script, tok, tokens=tok.encode_array(TEXT))
    assert [str(w.message) for w in said] == ["GPTDataLoader's config (a Namespace) holds ['out_dir', 'wandb_log'], "
                                              "which no training setting is: left out (GPT.fit trains without them)"]
    assert tiny_model(tok).fit(data, log=lambda line: None)["step"] == 2
    with mock.patch("torch.cuda.is_available", return_value=False), \
            pytest.raises(ConfigError,
                          match=r"^GPTDataLoader's config: device=cuda: no CUDA GPU is usable here .*; use "
                                r"device=cpu, or auto$"):
        GPTDataLoader(SimpleNamespace(batch_size=3, block_size=BLOCK, device="cuda"), tok,
                      tokens=tok.encode_array(TEXT))


def test_a_config_objects_left_out_name_is_warned_of_at_the_users_line():
    """The warning of a plain config object's name that no setting is (max_iter) points at the
    line that passed it, GPTDataLoader(...) or model.fit(...), not into mypt (fit's said
    train.py's line): a user's warnings filter by module, and the report, find it there."""
    import warnings
    from types import SimpleNamespace

    from mypt.data import GPTDataLoader
    from test_train_paths import BLOCK, TEXT

    tok = tokenizer()
    script = SimpleNamespace(batch_size=3, block_size=BLOCK, max_iters=2, eval_interval=2, eval_iters=1, max_iter=5)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        data = GPTDataLoader(script, tok, tokens=tok.encode_array(TEXT))
        tiny_model(tok).fit(data, config=script, log=lambda line: None)
    assert [(w.filename, "max_iter -> max_iters" in str(w.message)) for w in said] == [(__file__, True)] * 2, \
        [(w.filename, w.lineno, str(w.message)) for w in said]
