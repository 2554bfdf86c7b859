"""model.fit and GPT through the Python API as a nanoGPT user calls them: what they refuse
before training, so that no trained checkpoint is replaced unasked and no run trains with
settings its checkpoint cannot be loaded with."""

from __future__ import annotations

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
    with pytest.raises(ConfigError, match=rf"checkpoint_dir {ckpt} holds a trained model.*resume_state="
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
