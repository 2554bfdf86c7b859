"""GPT.fit's arguments through the Python API: one of a kind it does not take is refused
before the first step, naming the argument, the value seen and what to pass; a config given
as a dict is read whole, as GPTDataLoader reads its own."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mypt.errors import ConfigError
from test_train_paths import BLOCK, TEXT, config, loader, tiny_model, tokenizer


def _quiet(line: str) -> None:
    pass


# (argument, value, what the refusal says): each gave an AttributeError or TypeError as the
# run started, or at its first save; or trained on, unchecked (tokenizer, overwrite, resume_state).
WRONG = [
    ("optimizer", "adamw", r"fit's optimizer is a str \('adamw'\): pass a torch.optim.Optimizer built from this "
                           r"model's parameters .*or none: fit builds the one its config names"),
    ("tokenizer", "char", r"fit's tokenizer is a str \('char'\): pass a Tokenizer \(Tokenizer.load\(dataset_dir\)\), "
                          r"or none: the data loader's"),
    ("checkpoint_dir", 3, r"fit's checkpoint_dir is an int \(3\): pass a directory's path, a str or a pathlib.Path"),
    ("resume_state", "checkpoints/m", r"fit's resume_state is a str \('checkpoints/m'\): pass the training state "
                                      r"mypt.checkpoint.load_training_state\(.*\) returns \(a dict with its step\)"),
    ("resume_state", {"step": "3"}, r"fit's resume_state is a dict \(\{'step': '3'\}\): pass the training state"),
    ("resume_state", {"history": []}, r"fit's resume_state is a dict .*a dict with its step"),
    ("overwrite", "no", r"fit's overwrite is a str \('no'\): pass True or False"),
    ("log", None, r"fit's log is a NoneType \(None\): pass a function of one line"),
    ("on_metrics", "x", r"fit's on_metrics is a str \('x'\): pass a function of \(step, values\), or none"),
    ("checkpoint_extra", [1], r"fit's checkpoint_extra is a list \(\[1\]\): pass a dict"),
    ("dist", "gloo", r"fit's dist is a str \('gloo'\): pass a mypt.distributed.Dist"),
    ("config", 3, r"fit's config 3 \(type int\) holds no settings: pass a TrainConfig\(.*\), or a dict of its fields"),
    ("config", "tiny", r"fit's config 'tiny' \(type str\) holds no settings"),
    ("config", {"max_iters": 2, "lr": 1e-3}, r"fit's config \(a dict\) holds \['lr'\], which no training setting "
                                             r"is.*pass a TrainConfig"),
    ("config", {"max_iters": -1}, r"max_iters"),
]


@pytest.mark.parametrize("name, value, said", WRONG, ids=[f"{n}-{type(v).__name__}" for n, v, _ in WRONG])
def test_an_argument_fit_does_not_take_is_refused_naming_it(name, value, said, tmp_path):
    tok = tokenizer()
    kw = {"config": config(max_iters=2, eval_interval=2), "log": _quiet, name: value}
    with pytest.raises(ConfigError, match=said):
        tiny_model(tok).fit(loader(tok), **kw)
    assert list(tmp_path.iterdir()) == []


def test_fits_config_given_a_gptconfig_names_the_training_settings():
    tok = tokenizer()
    model = tiny_model(tok)
    with pytest.raises(ConfigError, match=r"fit's config is a GPTConfig, the model's settings .*pass the training "
                                          r"settings, a TrainConfig\(max_iters=1000, ...\) or a dict of its fields"):
        model.fit(loader(tok), config=model.config, log=_quiet)


def test_fits_config_as_a_dict_is_read_whole(tmp_path):
    """config={...} was an AttributeError ('dict' object has no attribute 'checked'): it trains
    with what it holds, and a device it does not name is recorded as TrainConfig's default, so
    that `mypt train --resume` of the checkpoint does not move a GPU's run to the CPU."""
    tok = tokenizer()
    result = tiny_model(tok).fit(loader(tok), config={"max_iters": 3, "eval_interval": 2, "eval_iters": 1},
                                 checkpoint_dir=str(tmp_path / "m"), log=_quiet)
    assert result["step"] == 3 and [h["step"] for h in result["history"] if "val" in h] == [0, 2, 3]
    training = json.loads(Path(tmp_path / "m" / "config.json").read_text())["training"]
    assert training["max_iters"] == 3 and training["eval_interval"] == 2 and training["device"] == "auto"


def test_a_loaders_config_that_holds_no_settings_is_refused():
    """GPTDataLoader(3, ...) trained at the defaults (the int read as an object of no settings)."""
    from mypt.data import GPTDataLoader

    tok = tokenizer()
    with pytest.raises(ConfigError, match=r"GPTDataLoader's config 3 \(type int\) holds no settings"):
        GPTDataLoader(3, tok, tokens=tok.encode_array(TEXT), block_size=BLOCK)
