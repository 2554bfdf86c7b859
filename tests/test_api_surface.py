"""The Python API as the README shows it: settings changed by assignment, Tokenizer(...)'s
arguments, Tokenizer.save over a dataset's or checkpoint's tokenizer."""

from __future__ import annotations

import dataclasses

import pytest

from conftest import tiny_checkpoint
from mypt.config import GPTConfig, TrainConfig
from mypt.errors import ConfigError, TokenizerError


@pytest.mark.parametrize("cls,name,near", [(TrainConfig, "max_iter", "max_iters"),
                                           (TrainConfig, "gradient_acumulation_steps", "gradient_accumulation_steps"),
                                           (GPTConfig, "n_heads", "n_head")])
def test_assigning_a_name_that_is_no_setting_is_refused_naming_the_nearest(cls, name, near):
    config = cls()
    with pytest.raises(ConfigError, match=f"no .*setting '{name}': did you mean {near}\\?") as e:
        setattr(config, name, 100)
    assert isinstance(e.value, AttributeError) and name not in vars(config)


def test_the_readme_block_size_on_a_train_config_and_private_names_still_set():
    config = TrainConfig()
    config.block_size = 256  # the README's form: GPTDataLoader reads it
    config._note = "mine"
    config.max_iters = 7
    again = config.checked()
    assert (again.block_size, again._note, again.max_iters) == (256, "mine", 7)


@pytest.mark.parametrize("cls,field,value,message", [
    (TrainConfig, "gradient_accumulation_steps", 0,
     "training setting gradient_accumulation_steps: must be >= 1, got 0"),
    (TrainConfig, "min_lr", 1.0, "training setting min_lr (1) is above learning_rate (0.0006)"),
    (TrainConfig, "lr_schedule", "linear", "training setting lr_schedule: 'linear' is not one of cosine, wsd"),
    (TrainConfig, "optimizer", "sgd", "training setting optimizer: 'sgd' is not one of adamw, muon"),
    (TrainConfig, "grad_clip", -1, "training setting grad_clip: must be >= 0.0, got -1"),
    (TrainConfig, "eval_interval", 0, "training setting eval_interval: must be >= 1, got 0"),
    (TrainConfig, "max_iters", "100", "training setting max_iters: must be an integer, got '100'"),
    (GPTConfig, "n_head", 3, "model setting n_embd (16) must be divisible by n_head (3)"),
])
def test_checked_refuses_an_assigned_value_as_the_constructor_does(cls, field, value, message):
    base = {"n_embd": 16, "n_head": 2} if cls is GPTConfig else {}
    config = cls(**base)
    setattr(config, field, value)  # no check on assignment: settings that go together pass through bad pairs
    with pytest.raises(ConfigError) as checked:
        config.checked()
    with pytest.raises(ConfigError) as built:
        cls(**{**base, field: value})
    assert message in str(checked.value) and str(checked.value) == str(built.value)


def test_valid_assignments_pass_checked_one_at_a_time_through_an_invalid_pair():
    config = GPTConfig(n_embd=16, n_head=2)
    config.n_embd = 24  # 24 / 2 is fine; then 3 heads
    config.n_head = 3
    assert config.checked() == GPTConfig(n_embd=24, n_head=3)
    train = TrainConfig()
    train.learning_rate, train.min_lr, train.lr_schedule = 1e-3, 1e-4, "wsd"
    assert train.checked() == dataclasses.replace(train)


def test_a_kind_given_first_to_tokenizer_is_the_kind():
    from mypt.tokenizers import Tokenizer

    char = Tokenizer("char", chars="ab\n")
    assert char.kind == "char" and char.encode("ba\n") == [2, 1, 0]  # (sorted: "\n" 0, a 1, b 2)
    assert Tokenizer("gpt2").kind == Tokenizer(None, "gpt2").kind == Tokenizer().kind == "gpt2"


@pytest.mark.parametrize("args,message", [
    (("char",), "Tokenizer('char') needs its vocabulary: Tokenizer('char', chars=TEXT)"),
    (("hf:tok.json",), "Tokenizer('hf:tok.json'): Tokenizer(...) takes a kind (gpt2, char, hf); a tokenizer built "
                       "from a file (hf:PATH) is mypt.tokenizers.make_tokenizer('hf:tok.json')"),
    ((None, "hf:tok.json"), "mypt.tokenizers.make_tokenizer('hf:tok.json')"),
    (("bogus",), "Tokenizer('bogus'): unknown tokenization 'bogus'"),
    (("char", "gpt2"), "two kinds given"),
])
def test_tokenizer_refuses_what_it_cannot_build_naming_the_call_that_does(args, message):
    from mypt.errors import TokenizerError
    from mypt.tokenizers import Tokenizer

    with pytest.raises(TokenizerError) as e:
        Tokenizer(*args)
    assert message in str(e.value)


def test_a_directory_given_to_tokenizer_names_tokenizer_load(tmp_path):
    from mypt.errors import TokenizerError
    from mypt.tokenizers import Tokenizer

    with pytest.raises(TokenizerError, match=r"is a directory, not a tokenizer kind; .* is Tokenizer.load\("):
        Tokenizer(str(tmp_path))


def _char_dataset(path, text: str):
    from mypt.prepare import PrepareSettings, prepare_dataset
    from mypt.steps.tokenize import TokenizeSettings

    corpus = path.parent / f"{path.name}.txt"
    corpus.write_text(text * 50, encoding="utf-8")
    prepare_dataset([str(corpus)], path, PrepareSettings(tokenize=TokenizeSettings(tokenization="char", workers=1)))
    return path


def test_saving_another_tokenizer_over_a_checkpoints_or_datasets_is_refused(tmp_path):
    from mypt.errors import TokenizerError
    from mypt.tokenizers import Tokenizer

    checkpoint = tiny_checkpoint(tmp_path / "ck")  # a char tokenizer of "abc\n"
    dataset = _char_dataset(tmp_path / "ds", "xyz\n")
    held = {d: (d / "tokenizer_state.json").read_bytes() for d in (checkpoint, dataset)}
    with pytest.raises(TokenizerError, match=r"ck is a mypt checkpoint whose config.json records the sha256 of its "
                                             r"own tokenizer_state.json"):
        Tokenizer.load(dataset).save(checkpoint)
    with pytest.raises(TokenizerError, match=r"ds is a mypt dataset whose shards are ids of its own tokenizer \(char, "
                                             r"vocab_size 4\), not of this one \(gpt2, vocab_size 50257\)"):
        Tokenizer("gpt2").save(dataset)
    assert {d: (d / "tokenizer_state.json").read_bytes() for d in held} == held
    # The same tokenizer over its own file passes, and any tokenizer goes to a directory of its own.
    for directory in (checkpoint, dataset):
        Tokenizer.load(directory).save(directory)
    Tokenizer.load(dataset).save(tmp_path)
    assert Tokenizer.load(tmp_path).identity() == Tokenizer.load(dataset).identity()


def test_a_loaders_rank_may_be_set_on_its_train_config():
    """GPTDataLoader reads `rank` from its config (data.py), as it does block_size."""
    cfg = TrainConfig()
    cfg.rank = 1
    assert cfg.checked().rank == 1


def test_a_tokenizer_file_given_as_a_kind_is_pointed_to_make_tokenizer():
    from mypt.tokenizers import Tokenizer

    with pytest.raises(TokenizerError, match=r"Tokenizer\('tok.json'\).*make_tokenizer\('hf:PATH'\)"):
        Tokenizer("tok.json")


def _loader(**kw):
    import numpy as np

    from mypt.data import GPTDataLoader
    from mypt.tokenizers import Tokenizer

    tok = Tokenizer("char", chars="abcdef")
    args = {"tokenizer": tok, "tokens": np.arange(300) % 6, "block_size": 8, **kw}
    return GPTDataLoader(TrainConfig(batch_size=2, device="cpu"), **args)


@pytest.mark.parametrize("given,error", [
    (dict(tokens="abcabc" * 50), r"tokens= is a str: pass token ids, tokenizer.encode_array\(text\)"),
    (dict(tokens=[-1, 2, 3] * 50), r"tokens= holds the negative id -1: token ids are 0 to vocab_size - 1 \(5\)"),
    (dict(tokens=[2**32 + 1, 2, 3] * 50), r"tokens=: token id 4294967297 is outside"),  # (uint32: id 1)
    (dict(tokens=[1.5, 2.0, 3.0] * 50), r"tokens= holds float64 values: pass integer token ids"),  # (uint32: 1.5 -> 1)
    (dict(tokens=[[1, 2, 3] * 10] * 10), r"tokens= has shape \(10, 30\): pass one sequence of token ids"),
    (dict(tokenizer="char"), r"tokenizer is a str: pass a Tokenizer, the dataset's own \(Tokenizer.load"),
    (dict(dataset_dir="ds"), r"takes dataset_dir= or tokens=, not both"),
    (dict(block_size=8.7), r"block_size must be a whole number of tokens, got 8.7"),  # (int(): 8)
], ids=["str", "negative", "past_uint32", "float", "2d", "tokenizer_spec", "both", "block_size_float"])
def test_a_loaders_tokens_and_arguments_are_refused_where_they_would_change(given, error):
    """GPTDataLoader(config, tokenizer, tokens=...): ids the uint32 cast would change (a negative
    or a too large id wrapped to another, a float cut), rows split 90/10 as rows, a str's
    ValueError, a tokenizer spec's AttributeError; dataset_dir= beside tokens= (one would be ignored)."""
    from mypt.errors import MyptError

    with pytest.raises(MyptError, match=error):
        _loader(**given)
    assert _loader().get_batch()[0].shape == (2, 8)


def test_a_loaders_dataset_dir_that_is_a_file_says_so(tmp_path):
    from mypt.data import GPTDataLoader
    from mypt.errors import DataError
    from mypt.tokenizers import Tokenizer

    (tmp_path / "corpus.txt").write_text("abc\n")
    with pytest.raises(DataError, match=r"corpus.txt is a file, not a dataset directory; HINT: prepare a dataset from "
                                        r"it with `mypt prepare-dataset --input_files .*corpus.txt --out_dir DIR`"):
        GPTDataLoader(TrainConfig(batch_size=2), Tokenizer("char", chars="abc"), dataset_dir=tmp_path / "corpus.txt",
                      block_size=8)


@pytest.mark.parametrize("datasets,error", [
    ({"a": "A", "b": "B"}, r"datasets is a dict: pass a list of NAME=PATH:WEIGHT"),  # (its keys were read as paths)
    ([("a", "A", 0.7), ("b", "B", 0.3)], r"datasets holds \('a', 'A', 0.7\): pass each dataset as NAME=PATH:WEIGHT"),
    (7, r"datasets is a int: pass a list"),
], ids=["dict", "tuples", "int"])
def test_a_mixtures_datasets_in_another_form_are_refused_naming_the_form(tmp_path, datasets, error):
    from mypt.data import MixtureLoader
    from mypt.tokenizers import Tokenizer

    with pytest.raises(ConfigError, match=error):
        MixtureLoader(TrainConfig(batch_size=2, device="cpu"), Tokenizer("char", chars="abc"), datasets, block_size=8)

