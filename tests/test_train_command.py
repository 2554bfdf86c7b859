"""The training command's rules that need no training: the one tokenizer-compatibility rule,
and --input_file only where `mypt train` passes its reader (the DVC stages do not)."""

from __future__ import annotations

import dataclasses

import pytest

from mypt.config import RunSettings
from mypt.errors import ConfigError, DataError
from mypt.tokenizer_match import check_tokenizer, same_tokenizer
from mypt.tokenizers.char import CharTokenizer
from mypt.train_command import run_training

AB, ABC = CharTokenizer.from_corpus(["ab"]), CharTokenizer.from_corpus(["abc"])


def test_tokenizers_agree_by_state_and_a_bare_kind_by_kind():
    assert same_tokenizer(AB, CharTokenizer.from_corpus(["ba"]))
    assert not same_tokenizer(AB, ABC)
    assert same_tokenizer(AB, "char") and same_tokenizer("char", AB) and same_tokenizer("char", "char")
    assert not same_tokenizer(AB, "gpt2") and not same_tokenizer("char", "gpt2")


def test_one_message_names_both_sides_and_ends_with_the_hint():
    with pytest.raises(DataError, match=r"^--dataset_dir b is another char tokenizer, with another vocabulary "
                                        r"\(char, \d+ tokens\), than --dataset_dir a \(char, \d+ tokens\): fix it$"):
        check_tokenizer(AB, ABC, "--dataset_dir a", "--dataset_dir b", "fix it")
    with pytest.raises(ConfigError, match=r"^--tokenization gpt2 has another vocabulary \(gpt2\) than the dataset ds "
                                          r"\(char\): pass --tokenization char$"):
        check_tokenizer("char", "gpt2", "the dataset ds", "--tokenization gpt2", "pass --tokenization char", ConfigError)


def test_input_file_is_refused_without_the_reader_mypt_train_passes(tmp_path):
    (tmp_path / "t.txt").write_text("some text\n" * 50)
    req = RunSettings(model_name="m", input_file=tmp_path / "t.txt", tokenization="char", config_file="tiny",
                       checkpoints_dir=tmp_path / "ck")
    with pytest.raises(ConfigError, match="--input_file .*--dataset_dir"):
        run_training(req, {"device": "cpu", "max_iters": 1}, log=lambda line: None)
    assert not (tmp_path / "ck").exists()


@pytest.mark.parametrize("flag, compiled", [(None, False), (True, True), (False, False)])
def test_compile_defaults_to_eager_on_the_cpu_and_follows_the_flag(tmp_path, monkeypatch, flag, compiled):
    """--compile / --no_compile decide; left out, the device does (CUDA compiles, the CPU not),
    and the checkpoint keeps it left out, so a resume on another device gets that device's default."""
    import json

    import torch

    from mypt.input_text import read_input_text

    calls = []
    monkeypatch.setattr(torch, "compile", lambda model, **kw: calls.append(model) or model)
    (tmp_path / "t.txt").write_text("some text to learn from\n" * 40)
    req = RunSettings(model_name="m", input_file=tmp_path / "t.txt", tokenization="char", config_file="tiny",
                      checkpoints_dir=tmp_path / "ck")
    overrides = {"device": "cpu", "max_iters": 1, "eval_iters": 1, "batch_size": 2}
    if flag is not None:
        overrides["compile"] = flag
    run_training(req, overrides, log=lambda line: None, read_text=read_input_text)
    assert bool(calls) == compiled
    saved = json.loads((tmp_path / "ck" / "m" / "config.json").read_text())["training"]["compile"]
    assert saved == flag


@pytest.mark.parametrize("setting, compiles", [(None, False), (True, True), (False, False)])
def test_the_python_apis_fit_compiles_as_the_setting_says(tmp_path, monkeypatch, setting, compiles):
    """fit itself honours TrainConfig.compile (left out: on with CUDA, eager on the CPU): the
    Python API's model.fit trained eager on a GPU whatever the setting said. A model that comes
    compiled (or in DDP) is trained as it comes, not compiled twice."""
    import torch

    from mypt.config import TrainConfig
    from mypt.train import fit
    from test_train_paths import loader, tiny_model, tokenizer

    class Compiled(torch.nn.Module):  # what torch.compile returns, in the respect fit looks at
        def __init__(self, model):
            super().__init__()
            self._orig_mod = model

        def forward(self, *args, **kwargs):
            calls.append("train" if self.training else "eval")
            return self._orig_mod(*args, **kwargs)

    calls = []
    monkeypatch.setattr(torch, "compile", lambda model, **kw: calls.append(model) or Compiled(model))
    tok = tokenizer()
    model = tiny_model(tok)
    cfg = TrainConfig(device="cpu", max_iters=2, eval_interval=2, eval_iters=1, batch_size=8, compile=setting)
    fit(model, loader(tok), config=cfg, checkpoint_dir=tmp_path / "ck", tokenizer=tok, log=lambda line: None)
    assert calls[:1] == ([model] if compiles else [])
    assert ({"train", "eval"} <= set(calls)) == compiles  # the compiled one trained and evaluated
    assert (tmp_path / "ck" / "model.safetensors").exists()  # saved from the model itself
    calls.clear()
    fit(Compiled(model), loader(tok), config=dataclasses.replace(cfg, compile=True), log=lambda line: None)
    assert calls and model not in calls  # trained as it came
    calls.clear()
    # What nn.Module.compile leaves: the model compiled in place, called through _compiled_call_impl.
    model._compiled_call_impl = lambda *a, **kw: calls.append("in place") or model._call_impl(*a, **kw)
    fit(model, loader(tok), config=dataclasses.replace(cfg, compile=True), log=lambda line: None)
    assert calls and set(calls) == {"in place"}  # not compiled again


def test_a_run_from_other_weights_says_where_they_came_from(tmp_path):
    """--init_from_model: one line names the checkpoint, its step and the val loss it had there."""
    from mypt.input_text import read_input_text

    (tmp_path / "t.txt").write_text("the king and the queen of the land\n" * 60)
    logs: dict[str, list[str]] = {"base": [], "a": []}
    for name, init in (("base", None), ("a", tmp_path / "ck" / "base")):
        req = RunSettings(model_name=name, input_file=tmp_path / "t.txt", tokenization="char", config_file="tiny",
                          checkpoints_dir=tmp_path / "ck", init_from_model=None if init is None else str(init))
        flags = {"device": "cpu", "max_iters": 2, "eval_interval": 2, "eval_iters": 1, "warmup_iters": 0,
                 "dtype": "float32"}
        run_training(req, flags, log=logs[name].append, read_text=read_input_text)
    val = next(line for line in logs["base"] if line.startswith("step 2: val ")).split()[3]
    assert f"init from {tmp_path / 'ck' / 'base'} (step 2, val {val})" in logs["a"], logs["a"]
    assert not any(line.startswith("init from") for line in logs["base"])


def test_a_dataset_without_a_val_split_is_said_to_report_no_val_loss(tmp_path):
    from click.testing import CliRunner

    from mypt.cli import main

    (tmp_path / "t.txt").write_text("".join(f"line {i} of a small corpus\n" for i in range(400)))
    prepared = CliRunner().invoke(main, ["prepare-dataset", "--input_files", str(tmp_path / "t.txt"), "--out_dir",
                                         str(tmp_path / "ds"), "--tokenization", "char", "--val_fraction", "0",
                                         "--workers", "1"])
    assert prepared.exit_code == 0, prepared.output
    lines = []
    run_training(RunSettings(model_name="m", dataset_dir=str(tmp_path / "ds"), config_file="tiny",
                             checkpoints_dir=tmp_path / "ck"), {"device": "cpu", "max_iters": 2, "warmup_iters": 1}, log=lines.append)
    assert [line for line in lines if line.startswith("warning:")] == [
        f"warning: --dataset_dir {tmp_path / 'ds'} has no val split (prepared with --val_fraction 0?): training "
        "reports no val loss and best_val stays empty; add --eval_dataset_dir for one"]


def test_the_python_api_loader_refuses_another_vocabulary_and_a_block_size_below_one(tmp_path):
    """GPTDataLoader with a tokenizer of the same kind but another vocabulary (two char
    datasets): refused, as the CLI refuses it (the eval loss would mean nothing)."""
    from click.testing import CliRunner

    from mypt.cli import main
    from mypt.data import GPTDataLoader, LoaderConfig
    from mypt.tokenizers import Tokenizer

    for name, text in (("a", "abcdefgh\n"), ("b", "xyz\n")):
        (tmp_path / f"{name}.txt").write_text(text * 300)
        done = CliRunner().invoke(main, ["prepare-dataset", "--input_files", str(tmp_path / f"{name}.txt"), "--out_dir",
                                         str(tmp_path / name), "--tokenization", "char", "--workers", "1"])
        assert done.exit_code == 0, done.output
    tok = Tokenizer.load(tmp_path / "a")
    config = LoaderConfig(4, 8, "cpu", 1337, 0)
    assert GPTDataLoader(config, tok, dataset_dir=tmp_path / "a").get_batch("train")[0].shape == (4, 8)
    with pytest.raises(DataError, match=r"the dataset .*b is another char tokenizer, with another vocabulary"):
        GPTDataLoader(config, tok, dataset_dir=tmp_path / "b")
    with pytest.raises(ConfigError, match=r"block_size must be at least 1 \(the tokens of each sequence\), got 0"):
        GPTDataLoader(config, tok, dataset_dir=tmp_path / "a", block_size=0)


def test_a_text_shorter_than_one_window_names_the_flag_of_its_mode(tmp_path):
    """--input_file has no shards: the message names the file's part and --block_size, not
    prepare-dataset's --tokens_per_shard."""
    from mypt.input_text import read_input_text

    (tmp_path / "small.txt").write_text("hello world\n")
    with pytest.raises(DataError, match=r"^the input file's train part \(the first 90% of its tokens\) holds 10 "
                                        r"tokens, fewer than block_size\+1 = 33: give a longer file, or train with a "
                                        r"smaller --block_size$"):
        run_training(RunSettings(model_name="m", input_file=tmp_path / "small.txt", tokenization="char",
                                 config_file="tiny", checkpoints_dir=tmp_path / "ck"),
                     {"device": "cpu", "max_iters": 1}, log=lambda line: None, read_text=read_input_text)


def test_fit_refuses_loaders_it_cannot_train_or_evaluate_with_before_the_first_step(tmp_path):
    """The Python API: a dataset path where a loader belongs, a loader drawing windows longer
    than the model sees, an eval-only loader to train on, an eval loader or a checkpoint tokenizer
    of another vocabulary (its loss means nothing), a model of another vocab_size, an optimizer of
    another model (it trains nothing). Each named before anything runs (they stopped at the first
    step in torch's words, with advice to --resume, or not at all)."""
    import torch
    from click.testing import CliRunner

    from mypt.cli import main
    from mypt.config import GPTConfig, TrainConfig
    from mypt.data import GPTDataLoader
    from mypt.model import GPT
    from mypt.tokenizers import Tokenizer

    (tmp_path / "a.txt").write_text("abcdefgh\n" * 300)
    done = CliRunner().invoke(main, ["prepare-dataset", "--input_files", str(tmp_path / "a.txt"), "--out_dir",
                                     str(tmp_path / "ds"), "--tokenization", "char", "--workers", "1"])
    assert done.exit_code == 0, done.output
    (tmp_path / "b.txt").write_text("xyz\n" * 900)
    done = CliRunner().invoke(main, ["prepare-dataset", "--input_files", str(tmp_path / "b.txt"), "--out_dir",
                                     str(tmp_path / "other"), "--tokenization", "char", "--workers", "1"])
    assert done.exit_code == 0, done.output
    tok, other = Tokenizer.load(tmp_path / "ds"), Tokenizer.load(tmp_path / "other")
    cfg = TrainConfig(max_iters=1, eval_interval=1, eval_iters=1, batch_size=2, warmup_iters=1, device="cpu")
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=8, n_layer=1, n_head=1, n_embd=8))
    before = {k: v.clone() for k, v in model.state_dict().items()}

    def loader(block_size=8, eval_only=False):
        return GPTDataLoader(cfg, tok, tmp_path / "ds", block_size=block_size, eval_only=eval_only)

    cases = [
        (dict(data_loader=loader(), eval_data_loaders={"g": str(tmp_path / "ds")}),
         r"eval_data_loaders\['g'\] is a str, not a data loader: pass GPTDataLoader\(.*eval_only=True\)"),
        (dict(data_loader=loader(), eval_data_loaders=[loader(eval_only=True)]), "eval_data_loaders is a list"),
        (dict(data_loader=loader(block_size=16)), "data_loader draws windows of 16 tokens, more than the model's "
                                                   r"block_size 8: build it with block_size=8"),
        (dict(data_loader=loader(), eval_data_loaders={"g": loader(block_size=9, eval_only=True)}),
         r"eval_data_loaders\['g'\] draws windows of 9 tokens"),
        (dict(data_loader=loader(eval_only=True)), "data_loader has no train split"),
        (dict(data_loader=loader(), eval_data_loaders={"g": GPTDataLoader(cfg, other, tmp_path / "other",
                                                                          block_size=8, eval_only=True)}),
         r"fit's eval_data_loaders\['g'\] is another char tokenizer, with another vocabulary \(char, 4 tokens\), "
         r"than fit's data_loader \(char, 9 tokens\)"),
        (dict(data_loader=loader(), tokenizer=other, checkpoint_dir=tmp_path / "ck"),
         r"fit's tokenizer \(saved with each checkpoint\) is another char tokenizer"),
        (dict(data_loader=loader(), model=GPT(GPTConfig(block_size=8, n_layer=1, n_head=1, n_embd=8))),
         r"the model's vocab_size 50257 is not its data loader's tokenizer's \(char, 9 tokens\): build it with "
         r"GPTConfig\(vocab_size=tokenizer.vocab_size"),
        (dict(data_loader=loader(), optimizer=torch.optim.AdamW(GPT(model.config).parameters())),
         "fit's optimizer holds none of the model's parameters"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ConfigError, match=message):
            kwargs.pop("model", model).fit(config=cfg, log=lambda line: None, **kwargs)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert not (tmp_path / "ck").exists()
    # and the loaders that fit: one step trains
    result = model.fit(loader(), eval_data_loaders={"g": loader(block_size=4, eval_only=True)}, config=cfg,
                       log=lambda line: None)
    assert result["step"] == 1 and "eval_g" in result["history"][-1]


def test_a_resume_reads_its_checkpoints_config_once_beside_what_loading_it_reads(tmp_path, count_opens):
    """`mypt train --resume` reads config.json once for the run's settings and checks the training
    state against that reading, not a second one; loading the weights (load_model) and checking the
    directory it saves into (check_ours) read it on their own."""
    from click.testing import CliRunner

    from mypt import checkpoint
    from mypt.cli import main
    from mypt.model import load_model

    (tmp_path / "t.txt").write_text("some text to learn from\n" * 40)
    ckpt = tmp_path / "ck" / "m"
    flags = ["train", "--input_file", str(tmp_path / "t.txt"), "--tokenization", "char", "--config_file", "tiny",
             "--checkpoints_dir", str(tmp_path / "ck"), "--model_name", "m", "--device", "cpu", "--max_iters", "2",
             "--eval_iters", "1", "--batch_size", "2"]
    assert CliRunner().invoke(main, flags).exit_code == 0
    loading = count_opens(lambda path, mode: "config" if path == ckpt / "config.json" else None)
    checkpoint.check_ours(ckpt)
    load_model(ckpt)
    loaded = loading.get("config", 0)
    opens = count_opens(lambda path, mode: "config" if path == ckpt / "config.json" else None)
    result = CliRunner().invoke(main, [*flags, "--resume"])  # (trained to --max_iters already: said, nothing saved)
    assert result.exit_code == 0 and "already trained to --max_iters 2" in result.output, result.output
    assert opens == {"config": loaded + 1}


def test_a_run_from_a_checkpoint_hashes_none_of_its_optimizer_state(tmp_path, count_opens):
    """--init_from_model reads the base's step (whether its run finished) from training_state.json:
    the optimizer's state beside it, twice the weights under AdamW (56 GB for a 7B base), is
    neither read nor hashed (each rank read it whole)."""
    from click.testing import CliRunner

    from mypt.cli import main

    (tmp_path / "t.txt").write_text("some text to learn from\n" * 40)
    common = ["--input_file", str(tmp_path / "t.txt"), "--tokenization", "char", "--config_file", "tiny",
              "--checkpoints_dir", str(tmp_path / "ck"), "--device", "cpu", "--eval_iters", "1", "--batch_size", "2"]
    assert CliRunner().invoke(main, ["train", *common, "--model_name", "base", "--max_iters", "2"]).exit_code == 0
    state = tmp_path / "ck" / "base" / "training_state.safetensors"
    opens = count_opens(lambda path, mode: "state" if path == state else None)
    result = CliRunner().invoke(main, ["train", *common, "--model_name", "next", "--init_from_model", "base",
                                       "--max_iters", "1"])
    assert result.exit_code == 0 and "init from" in result.output, result.output
    assert opens == {}
