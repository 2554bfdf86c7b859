"""Hugging Face in and out: export to transformers (logits and tokenizer equal mypt's),
import of GPT-2-format weights (round trip, training continues), and `mypt eval`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import tree_bytes

from mypt import checkpoint
from mypt.cli import main
from mypt.config import GPTConfig, TrainConfig
from mypt.data import GPTDataLoader, LoaderConfig
from mypt.errors import CheckpointError, ConfigError
from mypt.hf_import import import_hf
from mypt.model import GPT, load_model
from mypt.tokenizers import make_tokenizer
from mypt.tokenizers.char import CharTokenizer
from mypt.tokenizers.gpt2 import GPT2Tokenizer

transformers = pytest.importorskip("transformers")

MULTILINGUAL = ("Hello wörld! Ελληνικά, русский, עברית, العربية, 日本語のテキスト 😀\n\n"
                "  indented\tcode(x): return x**2  # we'll see, I'M sure\r\n")


def trained_checkpoint(path: Path, tokenizer, bias: bool, gelu: str = "tanh", **settings) -> GPT:
    """A tiny model trained a few steps (so no weight is at its initial value); `settings` are
    more GPTConfig fields (n_head 2 unless given)."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(**{"vocab_size": tokenizer.vocab_size, "block_size": 16, "n_layer": 2, "n_head": 2,
                             "n_embd": 32, "bias": bias, "gelu": gelu, **settings}))
    tokens = np.random.default_rng(0).integers(0, tokenizer.vocab_size, 4000).astype(np.uint32)
    loader = GPTDataLoader(LoaderConfig(batch_size=4, block_size=16), tokenizer, tokens=tokens)
    model.fit(loader, config=TrainConfig(max_iters=3, eval_interval=3, eval_iters=1, warmup_iters=0),
              log=lambda line: None)
    checkpoint.save(path, model, tokenizer, {})
    return model


def export(tmp_path: Path, name: str) -> Path:
    out = tmp_path / f"hf-{name}"
    result = CliRunner().invoke(main, ["export-hf", "--model_name", str(tmp_path / name), "--out_dir", str(out)])
    assert result.exit_code == 0, result.output
    return out


def bpe_tokenizer(tmp_path: Path):
    """A byte-level BPE trained by `mypt train-tokenizer` (--tokenization hf:PATH)."""
    (tmp_path / "corpus.txt").write_text(MULTILINGUAL * 20, encoding="utf-8")
    result = CliRunner().invoke(main, ["train-tokenizer", "--input_files", str(tmp_path / "corpus.txt"),
                                       "--vocab_size", "300", "--out", str(tmp_path / "tok.json")])
    assert result.exit_code == 0, result.output
    return make_tokenizer(f"hf:{tmp_path / 'tok.json'}")


@pytest.mark.parametrize("kind, bias, gelu", [("gpt2", False, "tanh"), ("char", True, "tanh"), ("hf", False, "tanh"),
                                             ("char", False, "exact")])
def test_export_loads_in_transformers_with_equal_logits_and_tokens(tmp_path, kind, bias, gelu):
    tokenizer = GPT2Tokenizer() if kind == "gpt2" else bpe_tokenizer(tmp_path) if kind == "hf" else \
        CharTokenizer(chars=sorted(set(MULTILINGUAL)))
    model = trained_checkpoint(tmp_path / "m", tokenizer, bias, gelu).eval()
    out = export(tmp_path, "m")
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    assert type(hf_model).__name__ == "GPT2LMHeadModel"
    assert hf_model.config.activation_function == {"tanh": "gelu_new", "exact": "gelu"}[gelu]
    assert hf_model.get_output_embeddings().weight.data_ptr() == hf_model.get_input_embeddings().weight.data_ptr()

    ids = tokenizer.encode(MULTILINGUAL)
    assert hf_tok(MULTILINGUAL)["input_ids"] == ids
    assert hf_tok.eos_token_id == tokenizer.eot_id  # <|endoftext|> for gpt2 and hf, none for char
    assert hf_tok.decode(ids) == tokenizer.decode(ids) == MULTILINGUAL
    x = torch.tensor([ids[:16]])
    with torch.no_grad():
        ours = model(x, x)[0][..., :tokenizer.vocab_size]  # all positions; padded ids trimmed
        theirs = hf_model(x).logits
    assert theirs.shape == ours.shape
    assert torch.allclose(ours, theirs, atol=1e-4)


def bos_tokenizer(tmp_path: Path):
    """bpe_tokenizer's, whose post-processor adds a BOS (its <|endoftext|>) before each text, as
    Llama 2's and 3's TemplateProcessing add theirs."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import processors

    if not (tmp_path / "tok.json").is_file():
        bpe_tokenizer(tmp_path)
    hf = HFTokenizer.from_file(str(tmp_path / "tok.json"))
    bos = "<|endoftext|>"
    hf.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B:1",
                                                      special_tokens=[(bos, hf.token_to_id(bos))])
    hf.save(str(tmp_path / "bos.json"))
    return make_tokenizer(f"hf:{tmp_path / 'bos.json'}")


@pytest.mark.parametrize("recipe", [{"bias": False}, {"bias": False, "position": "rope", "norm": "rmsnorm",
                                                    "mlp": "swiglu"}], ids=["gpt2", "llama"])
def test_an_exported_tokenizer_adds_no_bos_mypt_never_used(tmp_path, recipe):
    """A tokenizer.json whose post-processor adds a BOS, as Llama 2's and 3's TemplateProcessing
    do: mypt trains and generates without it, so the export's tokenizer gives mypt's ids with
    transformers' default call (it gave [BOS, 294, ...] for [294, ...], and other logits), and
    its tokenizer.json is still the model's tokenizer on import."""
    tokenizer = bos_tokenizer(tmp_path)
    model = trained_checkpoint(tmp_path / "m", tokenizer, **recipe).eval()
    out = export(tmp_path, "m")
    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    ids = tokenizer.encode(MULTILINGUAL)
    assert hf_tok(MULTILINGUAL)["input_ids"] == ids and ids[0] != tokenizer.eot_id
    assert hf_tok(MULTILINGUAL, MULTILINGUAL)["input_ids"] == ids + ids
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    inputs = hf_tok(MULTILINGUAL[:12], return_tensors="pt")
    with torch.no_grad():
        ours = model(inputs["input_ids"], inputs["input_ids"])[0][0, :, :tokenizer.vocab_size]  # (all positions)
        assert torch.allclose(ours, hf_model(**inputs).logits[0], atol=1e-4)
    assert make_tokenizer(f"hf:{out / 'tokenizer.json'}").identity() == tokenizer.identity()


def test_an_untied_gpt2_of_its_own_mlp_width_exports_and_imports_back(tmp_path):
    """--no_tie_embeddings and --mlp_width under the GPT-2 recipe: GPT2LMHeadModel with its own
    lm_head and n_inner, transformers' logits equal mypt's, and the import gives the same model."""
    tokenizer = CharTokenizer(chars=sorted(set(MULTILINGUAL)))
    model = trained_checkpoint(tmp_path / "m", tokenizer, False, tie_embeddings=False, mlp_width=80).eval()
    out = export(tmp_path, "m")
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    assert hf_model.config.tie_word_embeddings is False and hf_model.config.n_inner == 80
    assert hf_model.get_output_embeddings().weight.data_ptr() != hf_model.get_input_embeddings().weight.data_ptr()
    x = torch.tensor([tokenizer.encode(MULTILINGUAL)[:16]])
    with torch.no_grad():
        assert torch.allclose(model(x, x)[0], hf_model(x).logits, atol=1e-4)
    back, _, config = import_hf(out)
    assert config["model"]["tie_embeddings"] is False and back.config.mlp_hidden == 80
    mine = model.state_dict()
    for k, t in back.state_dict().items():
        if not k.endswith(".bias"):  # (the export's zero biases come back as biases)
            assert torch.equal(t, mine[k]), k


def test_export_refuses_a_directory_of_other_files(tmp_path):
    trained_checkpoint(tmp_path / "m", CharTokenizer(chars="abc\n"), bias=False)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    result = CliRunner().invoke(main, ["export-hf", "--model_name", str(tmp_path / "m"),
                                       "--out_dir", str(tmp_path / "mine")])
    assert result.exit_code == 1 and "--out_dir" in result.output and "Traceback" not in result.output
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_export_never_replaces_a_checkpoint(tmp_path):
    trained_checkpoint(tmp_path / "a", CharTokenizer(chars="abc\n"), bias=False)
    model = trained_checkpoint(tmp_path / "b", CharTokenizer(chars="abc\n"), bias=False)
    checkpoint.save(tmp_path / "b", model, CharTokenizer(chars="abc\n"), {}, torch.optim.AdamW(model.parameters()),
                    {"step": 1})
    before = (tmp_path / "b" / "model.safetensors").read_bytes()
    result = CliRunner().invoke(main, ["export-hf", "--model_name", str(tmp_path / "a"), "--out_dir",
                                       str(tmp_path / "b")])
    assert result.exit_code == 1 and "checkpoint" in result.output
    assert (tmp_path / "b" / "model.safetensors").read_bytes() == before


def test_export_replaces_only_its_own_files_and_keeps_what_the_user_added(tmp_path):
    """A directory transformers or a user wrote (tokenizer_config.json included) is refused; a
    re-export replaces the files its record (mypt_export.json) lists and keeps every other,
    HF-named ones too; a user's file with a name the new export writes is refused before
    anything changes; an export written before the record is replaced where nothing differs."""
    trained_checkpoint(tmp_path / "m", CharTokenizer(chars="abc\n"), bias=False)
    theirs = tmp_path / "theirs"
    hf_gpt2(theirs)
    (theirs / "tokenizer_config.json").write_text('{"tokenizer_class": "GPT2Tokenizer"}')
    (theirs / "vocab.json").write_text("{}")
    before = tree_bytes(theirs)
    result = CliRunner().invoke(main, ["export-hf", "--model_name", str(tmp_path / "m"), "--out_dir", str(theirs)])
    assert result.exit_code == 1 and "not a mypt export (no mypt_export.json)" in result.output, result.output
    assert tree_bytes(theirs) == before

    out = export(tmp_path, "m")
    record = json.loads((out / "mypt_export.json").read_text())["files"]
    assert set(record) == {p.name for p in out.iterdir()} - {"mypt_export.json"}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_state.json"} <= set(record)
    mine = {"chat_template.jinja": "{{ messages }}", "vocab.json": "{}", "added_tokens.json": "{}",
            "special_tokens_map.json": '{"eos_token": "x"}', "NOTES.md": "notes"}
    for name, text in mine.items():
        if name not in record:
            (out / name).write_text(text)
    mine = {name: text for name, text in mine.items() if name not in record}
    assert "chat_template.jinja" in mine and "NOTES.md" in mine
    export(tmp_path, "m")
    assert all((out / name).read_text() == text for name, text in mine.items())

    # A file the record does not list, whose name the export writes: the user's, refused.
    (out / "mypt_export.json").write_text(json.dumps({"files": [f for f in record if f != "config.json"]}))
    before = tree_bytes(out)
    result = CliRunner().invoke(main, ["export-hf", "--model_name", str(tmp_path / "m"), "--out_dir", str(out)])
    assert result.exit_code == 1 and "config.json, which mypt did not write" in result.output, result.output
    assert tree_bytes(out) == before

    # An export from before the record (mypt's tokenizer state beside tokenizer_config.json):
    # replaced where the new export writes the same bytes; the user's special_tokens_map.json,
    # a name such exports held, would be dropped: refused until they move it.
    (out / "mypt_export.json").unlink()
    before = tree_bytes(out)
    result = CliRunner().invoke(main, ["export-hf", "--model_name", str(tmp_path / "m"), "--out_dir", str(out)])
    assert result.exit_code == 1 and "cannot tell whether special_tokens_map.json is as it wrote" in result.output
    assert tree_bytes(out) == before
    (out / "special_tokens_map.json").rename(tmp_path / "special_tokens_map.json")
    export(tmp_path, "m")
    assert (out / "mypt_export.json").is_file() and (out / "NOTES.md").read_text() == "notes"


def hf_gpt2(path: Path, activation: str = "gelu_new", **save) -> dict:
    """A small random GPT-2 made by transformers, saved as save_pretrained writes it (`save`:
    more of its arguments)."""
    torch.manual_seed(1)
    cfg = transformers.GPT2Config(vocab_size=50257, n_positions=32, n_embd=32, n_layer=2, n_head=2,
                                  activation_function=activation)
    model = transformers.GPT2LMHeadModel(cfg)
    model.save_pretrained(path, safe_serialization=True, **save)
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("activation, gelu", [("gelu_new", "tanh"), ("gelu", "exact")])
def test_import_then_export_round_trips_to_identical_tensors(tmp_path, activation, gelu):
    original = hf_gpt2(tmp_path / "gpt2-small", activation)
    model, tokenizer, _ = import_hf(tmp_path / "gpt2-small")
    assert tokenizer.kind == "gpt2" and model.config.bias and model.config.gelu == gelu
    checkpoint.save(tmp_path / "imported", model, tokenizer, {})
    back = transformers.AutoModelForCausalLM.from_pretrained(export(tmp_path, "imported"))
    assert back.config.activation_function == activation
    again = back.state_dict()
    for key, value in original.items():
        if key.endswith(("attn.bias", "attn.masked_bias")):
            continue
        assert torch.equal(again[key], value), key


def test_import_builds_no_weights_to_throw_away_and_keeps_the_embedding_tied(gpt2_dir, monkeypatch):
    """import_hf draws no random numbers (a random init, all overwritten, is what it skips); the
    head is the embedding, every tensor float32 on the CPU. One model is built (on the meta device)."""
    built, init = [], GPT.__init__
    monkeypatch.setattr(GPT, "__init__", lambda self, cfg: built.append(cfg) or init(self, cfg))
    rng = torch.get_rng_state()
    model, _, _ = import_hf(gpt2_dir)
    assert torch.equal(torch.get_rng_state(), rng) and len(built) == 1
    assert model.lm_head.weight is model.transformer.wte.weight
    assert all(t.device.type == "cpu" and t.dtype == torch.float32 and t.requires_grad for t in model.parameters())


def test_import_names_what_is_not_gpt2(tmp_path):
    hf_gpt2(tmp_path / "relu", "relu")
    with pytest.raises(ConfigError, match=r"mypt cannot express activation_function 'relu' \(mypt: gelu_new, "):
        import_hf(tmp_path / "relu")


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("gpt2") / "gpt2"
    hf_gpt2(path)
    return path


def edited(source: Path, path: Path, edit: dict, weights: dict[str, torch.Tensor] | None = None) -> Path:
    """`source` with its config.json edited (a key whose value is None is removed), its weights
    linked, or `weights` added to them."""
    from safetensors.torch import load_file, save_file

    config = json.loads((source / "config.json").read_text(encoding="utf-8"))
    config = {k: v for k, v in {**config, **edit}.items() if v is not None}
    path.mkdir()
    (path / "config.json").write_text(json.dumps(config), encoding="utf-8")
    if weights is None:
        (path / "model.safetensors").symlink_to(source / "model.safetensors")
    else:
        save_file({**load_file(source / "model.safetensors"), **weights}, path / "model.safetensors")
    return path


@pytest.mark.parametrize("edit, named", [
    ({"tie_word_embeddings": "yes"}, "tie_word_embeddings 'yes' (mypt: true or false)"),
    ({"n_inner": 0}, "n_inner 0 (mypt: a whole number)"),
    ({"layer_norm_epsilon": 0}, "layer_norm_epsilon 0 (mypt: a number above 0, at most 0.1)"),
    ({"scale_attn_by_inverse_layer_idx": True}, "scale_attn_by_inverse_layer_idx True (mypt: false)"),
    ({"scale_attn_weights": False}, "scale_attn_weights False (mypt: true"),
])
def test_import_refuses_a_gpt2_mypt_cannot_express_naming_the_key(gpt2_dir, tmp_path, edit, named):
    """Each of these changes transformers' logits; mypt would compute others."""
    with pytest.raises(ConfigError, match=r"config.json: mypt cannot express ") as error:
        import_hf(edited(gpt2_dir, tmp_path / "m", edit))
    assert named in str(error.value) and "\n" not in str(error.value)


def test_an_untied_head_imports_as_its_own_and_a_head_config_json_calls_tied_must_be_the_embedding(gpt2_dir,
                                                                                                   tmp_path):
    """tie_word_embeddings false: the model's lm_head.weight becomes mypt's own head (an MLP
    width, n_inner, comes along too). Under a config.json that says tied, an lm_head.weight
    other than the embedding is refused (transformers would drop it)."""
    from safetensors.torch import load_file

    wte = load_file(gpt2_dir / "model.safetensors")["transformer.wte.weight"]
    head = {"lm_head.weight": torch.randn_like(wte)}
    model, _, config = import_hf(edited(gpt2_dir, tmp_path / "untied", {"tie_word_embeddings": False}, head))
    assert config["model"]["tie_embeddings"] is False
    assert torch.equal(model.lm_head.weight[:wte.shape[0]], head["lm_head.weight"])
    assert torch.equal(model.transformer.wte.weight[:wte.shape[0]], wte)
    with pytest.raises(CheckpointError, match=r"model.safetensors has no lm_head.weight"):
        import_hf(edited(gpt2_dir, tmp_path / "headless", {"tie_word_embeddings": False}))
    with pytest.raises(CheckpointError, match=r"model.safetensors: lm_head.weight differs from the embedding, and "
                                              r"config.json says they are tied \(tie_word_embeddings\): set it "
                                              r"false if the head is its own"):
        import_hf(edited(gpt2_dir, tmp_path / "other", {}, head))
    import_hf(edited(gpt2_dir, tmp_path / "same", {}, {"lm_head.weight": wte.clone()}))


@pytest.mark.slow
def test_a_gpt2_vocabulary_takes_its_own_tokenizer_json_unless_it_is_gpt2s(gpt2_dir, tmp_path):
    """A model of 50,257 ids beside a tokenizer.json of its own trains on that file's ids (GPT-2's
    tokenizer gave other ids silently); GPT-2's own tokenizer.json (what export-hf writes for a
    gpt2 model) is GPT-2's tokenizer, so datasets of --tokenization gpt2 train it."""
    from tokenizers import Tokenizer as HFTok
    from tokenizers import models, pre_tokenizers

    own = tmp_path / "own"
    own.mkdir()
    for name in ("config.json", "model.safetensors"):
        (own / name).symlink_to(gpt2_dir / name)
    words = HFTok(models.WordLevel({f"w{i}": i for i in range(50256)} | {"<|endoftext|>": 50256}, unk_token="w0"))
    words.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    words.add_special_tokens(["<|endoftext|>"])
    words.save(str(own / "tokenizer.json"))
    _, tokenizer, _ = import_hf(own)
    assert tokenizer.kind == "hf" and list(tokenizer.encode("w5 w7")) == [5, 7]

    model = trained_checkpoint(tmp_path / "m", GPT2Tokenizer(), bias=False)
    out = export(tmp_path, "m")
    (out / "tokenizer_state.json").unlink()  # as the Hub's gpt2 directory: its tokenizer.json only
    assert (out / "tokenizer.json").is_file()
    _, tokenizer, _ = import_hf(out)
    assert tokenizer.kind == "gpt2" and model.config.vocab_size == 50257


def test_import_reads_a_sharded_directory(gpt2_dir, tmp_path):
    """save_pretrained above max_shard_size writes model.safetensors.index.json and shards: the
    same model as the single file."""
    hf_gpt2(tmp_path / "sharded", max_shard_size="1MB")
    assert not (tmp_path / "sharded" / "model.safetensors").exists()
    assert len(list((tmp_path / "sharded").glob("model-*-of-*.safetensors"))) > 1
    sharded, whole = import_hf(tmp_path / "sharded")[0].state_dict(), import_hf(gpt2_dir)[0].state_dict()
    assert sharded.keys() == whole.keys() and all(torch.equal(sharded[k], whole[k]) for k in whole)
    shard = sorted((tmp_path / "sharded").glob("model-*-of-*.safetensors"))[-1]
    shard.unlink()
    with pytest.raises(CheckpointError, match=rf"model.safetensors.index.json: lists the shard {shard.name}, which "
                                              r"is not in "):
        import_hf(tmp_path / "sharded")


@pytest.mark.parametrize("edit, named", [
    ({"model_type": "gemma"}, "model_type 'gemma' is not supported: mypt imports gpt2, llama, mistral, qwen2, qwen3"),
    ({"model_type": None},
     "a config.json without model_type is not supported: mypt imports gpt2, llama, mistral, qwen2, qwen3"),
])
def test_import_names_the_model_types_it_reads(gpt2_dir, tmp_path, edit, named):
    with pytest.raises(ConfigError, match=named):
        import_hf(edited(gpt2_dir, tmp_path / "m", edit))


def test_import_refuses_nan_weights_naming_the_tensor(tmp_path):
    from safetensors.torch import load_file, save_file

    hf_gpt2(tmp_path / "gpt2-small")
    weights = load_file(tmp_path / "gpt2-small" / "model.safetensors")
    weights["transformer.h.1.mlp.c_fc.weight"][0, 0] = float("inf")  # a diverged run's
    save_file(weights, tmp_path / "gpt2-small" / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError,
                       match=r"gpt2-small/model.safetensors: transformer.h.1.mlp.c_fc.weight holds 1 NaN or "):
        import_hf(tmp_path / "gpt2-small")


@pytest.mark.slow
def test_training_continues_from_hf_weights_and_refuses_another_tokenizer(tmp_path):
    hf_gpt2(tmp_path / "gpt2-small")
    (tmp_path / "corpus.txt").write_text("The quick brown fox jumps over the lazy dog.\n" * 400)
    runner = CliRunner()
    for kind in ("gpt2", "char"):
        result = runner.invoke(main, ["prepare-dataset", "--input_files", str(tmp_path / "corpus.txt"), "--out_dir",
                                      str(tmp_path / kind), "--tokenization", kind, "--no_dedup",
                                      "--tokens_per_shard", "1000", "--workers", "1"])
        assert result.exit_code == 0, result.output
    args = ["train", "--init_from_model", f"hf:{tmp_path / 'gpt2-small'}", "--checkpoints_dir",
            str(tmp_path / "ckpt"), "--max_iters", "4", "--eval_interval", "2", "--eval_iters", "1",
            "--batch_size", "2", "--device", "cpu"]
    result = runner.invoke(main, [*args, "--dataset_dir", str(tmp_path / "gpt2"), "--model_name", "tuned"])
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "ckpt" / "tuned" / "config.json").read_text())
    assert saved["model"]["n_layer"] == 2 and saved["init_from_model"].endswith("gpt2-small")
    result = runner.invoke(main, [*args, "--dataset_dir", str(tmp_path / "char"), "--model_name", "bad"])
    assert result.exit_code == 1 and "vocabulary" in result.output and "Traceback" not in result.output


def test_an_exported_tokenizer_json_is_its_models_tokenizer_without_mypts_files(tmp_path):
    """An export as the Hub gives it back (mypt's own files left out): transformers' save adds a
    post-processor to the tokenizer.json, which never changes an id mypt encodes. Training on
    the source's data continues from it; it was "another hf tokenizer"."""
    tokenizer = bpe_tokenizer(tmp_path)
    trained_checkpoint(tmp_path / "m", tokenizer, bias=False)
    hub = export(tmp_path, "m")
    for name in ("tokenizer_state.json", "mypt_export.json"):
        (hub / name).unlink()
    assert json.loads((hub / "tokenizer.json").read_text())["post_processor"] \
        != json.loads(tokenizer.tokenizer_json)["post_processor"]  # (the case this test is about)
    runner = CliRunner()
    result = runner.invoke(main, ["prepare-dataset", "--input_files", str(tmp_path / "corpus.txt"), "--out_dir",
                                  str(tmp_path / "ds"), "--tokenization", f"hf:{tmp_path / 'tok.json'}",
                                  "--val_fraction", "0.3", "--no_dedup", "--workers", "1"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["train", "--init_from_model", f"hf:{hub}", "--dataset_dir", str(tmp_path / "ds"),
                                  "--checkpoints_dir", str(tmp_path / "ck"), "--model_name", "tuned", "--max_iters",
                                  "2", "--eval_interval", "2", "--eval_iters", "1", "--batch_size", "2",
                                  "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert make_tokenizer(f"hf:{hub / 'tokenizer.json'}").identity() == tokenizer.identity()


@pytest.mark.parametrize("kind, prepare", [
    ("hf", "--tokenization"), ("char", "--tokenization"), ("hf", "--tokenizer_from")])
def test_an_export_whose_tokenizer_transformers_extended_imports_with_the_new_ids(tmp_path, kind, prepare):
    """Tokens added in transformers (add_tokens, resize_token_embeddings, save_pretrained over
    the export): mypt's tokenizer_state.json there is stale (tokenizer.json's sha256 is not the
    export's record's), so --init_from_model hf:DIR takes the directory's tokenizer.json with
    the new ids and their rows. It took the stale 300 ids and dropped the 2 new rows as
    "padding no id reaches"."""
    if kind == "hf":
        tokenizer = bpe_tokenizer(tmp_path)
    else:
        (tmp_path / "corpus.txt").write_text(MULTILINGUAL * 20, encoding="utf-8")
        tokenizer = CharTokenizer(chars=sorted(set(MULTILINGUAL)))
    trained_checkpoint(tmp_path / "m", tokenizer, bias=False)
    out = export(tmp_path, "m")
    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(out)
    hf_tok.add_tokens(["Ελληνικά"])
    hf_tok.add_special_tokens({"pad_token": "<pad>"})
    hf_model.resize_token_embeddings(len(hf_tok))
    hf_tok.save_pretrained(out)
    hf_model.save_pretrained(out)
    runner = CliRunner()
    source = f"hf:{out / 'tokenizer.json'}" if prepare == "--tokenization" else str(out)
    result = runner.invoke(main, ["prepare-dataset", "--input_files", str(tmp_path / "corpus.txt"), "--out_dir",
                                  str(tmp_path / "ds"), prepare, source, "--val_fraction", "0.3", "--no_dedup",
                                  "--workers", "1"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["train", "--init_from_model", f"hf:{out}", "--dataset_dir", str(tmp_path / "ds"),
                                  "--checkpoints_dir", str(tmp_path / "ck"), "--model_name", "tuned", "--max_iters",
                                  "0", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "padding" not in result.output
    model, imported, _ = load_model(tmp_path / "ck" / "tuned", "cpu")
    assert imported.vocab_size == len(hf_tok) == tokenizer.vocab_size + 2
    assert list(imported.encode(MULTILINGUAL)) == hf_tok(MULTILINGUAL)["input_ids"]
    rows = hf_model.get_input_embeddings().weight
    assert torch.equal(model.transformer.wte.weight[:len(hf_tok)], rows)


def test_mypt_eval_prints_json_and_refuses_another_tokenizer(tmp_path):
    text = "to be or not to be, that is the question\n" * 300
    (tmp_path / "a.txt").write_text(text)
    (tmp_path / "b.txt").write_text(text.upper())
    runner = CliRunner()
    for name in ("a", "b"):
        result = runner.invoke(main, ["prepare-dataset", "--input_files", str(tmp_path / f"{name}.txt"), "--out_dir",
                                      str(tmp_path / f"ds-{name}"), "--tokenization", "char", "--no_dedup",
                                      "--workers", "1"])
        assert result.exit_code == 0, result.output
    trained_checkpoint(tmp_path / "m", CharTokenizer.load(tmp_path / "ds-a"), bias=False)
    result = runner.invoke(main, ["eval", "--model_name", str(tmp_path / "m"), "--dataset", f"a={tmp_path / 'ds-a'}",
                                  "--json", "--batch_size", "4", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    got = json.loads(result.output)["a"]
    assert got["tokens"] > 0 and got["perplexity"] == pytest.approx(np.exp(got["loss"]))
    result = runner.invoke(main, ["eval", "--model_name", str(tmp_path / "m"), "--dataset", f"b={tmp_path / 'ds-b'}",
                                  "--device", "cpu"])
    assert result.exit_code == 1 and "is another char tokenizer than" in result.output  # (of one size)


@pytest.mark.slow
@pytest.mark.parametrize("recipe", [[], ["--position", "rope", "--norm", "rmsnorm", "--mlp", "swiglu", "--n_kv_head",
                                         "1", "--rope_theta", "500"]], ids=["gpt2", "llama"])
def test_an_export_imported_again_evaluates_as_its_source(tmp_path, recipe):
    """--init_from_model hf:DIR pads the embedding with zero rows (mypt's vocabulary is a
    multiple of 64): the loss must not count them (it was 4.14 against its source's 3.86). The
    Llama recipe's settings come back from the export's config.json."""
    (tmp_path / "corpus.txt").write_text("".join(f"Line {i} of the king's speech, {i * 7}.\n" for i in range(400)))
    runner = CliRunner()

    def ok(*args: str) -> str:
        result = runner.invoke(main, [str(a) for a in args])
        assert result.exit_code == 0, result.output
        return result.output

    ok("prepare-dataset", "--input_files", tmp_path / "corpus.txt", "--out_dir", tmp_path / "ds", "--tokenization",
       "char", "--val_fraction", "0.1", "--workers", "1")
    common = ["--checkpoints_dir", tmp_path / "ck", "--dataset_dir", tmp_path / "ds", "--device", "cpu",
              "--eval_iters", "1"]
    ok("train", "--model_name", "src", "--config_file", "tiny", "--max_iters", "30", "--eval_interval", "30", *recipe,
       *common)
    ok("export-hf", "--model_name", tmp_path / "ck" / "src", "--out_dir", tmp_path / "hf")
    ok("train", "--model_name", "back", "--init_from_model", f"hf:{tmp_path / 'hf'}", "--max_iters", "0", *common)
    losses = {}
    for name in ("src", "back"):
        out = ok("eval", "--model_name", name, "--checkpoints_dir", tmp_path / "ck", "--dataset",
                 f"val={tmp_path / 'ds'}", "--device", "cpu", "--json")
        losses[name] = json.loads(out)["val"]["loss"]
    vocab = CharTokenizer.load(tmp_path / "ds").vocab_size
    assert vocab % 64  # the embedding is padded: the case this test is about
    assert losses["back"] == pytest.approx(losses["src"], abs=1e-5)
    configs = [json.loads((tmp_path / "ck" / name / "config.json").read_text())["model"] for name in ("src", "back")]
    # (a GPT-2 import has biases, GPT-2 always has them: zeros here; a swiglu MLP has no gelu)
    ignored = ("dropout", "bias", "gelu") if recipe else ("dropout", "bias")
    same = [{k: v for k, v in config.items() if k not in ignored} for config in configs]
    assert same[0] == same[1] and same[1]["position"] == ("rope" if recipe else "learned")


def test_hf_prefix_mixups_name_the_spelling_that_works(tmp_path):
    """A mypt checkpoint given as hf:DIR, and hf:DIR given to a command that reads checkpoints."""
    trained_checkpoint(tmp_path / "m", CharTokenizer(chars="abc\n"), bias=False)
    with pytest.raises(ConfigError, match=r"is a mypt checkpoint, not a Hugging Face directory: pass "
                                          r"--init_from_model .*m \(without hf:\)"):
        import_hf(tmp_path / "m")
    out = export(tmp_path, "m")
    result = CliRunner().invoke(main, ["generate", "--model_name", f"hf:{out}", "--prompt", "a", "--device", "cpu"])
    assert result.exit_code == 1 and "hf: names a Hugging Face directory for `mypt train --init_from_model` only" \
        in result.output, result.output


def test_a_run_from_hf_weights_reads_their_config_json_once(tmp_path, gpt2_dir, count_opens):
    """`mypt train --init_from_model hf:DIR` reads DIR/config.json once: the run's settings and the
    import both come from that reading (read_hf_config's)."""
    (tmp_path / "t.txt").write_text("The quick brown fox jumps over the lazy dog.\n" * 40)
    opens = count_opens(lambda path, mode: "config" if path == gpt2_dir / "config.json" else None)
    result = CliRunner().invoke(main, ["train", "--init_from_model", f"hf:{gpt2_dir}", "--input_file",
                                       str(tmp_path / "t.txt"), "--checkpoints_dir", str(tmp_path / "ck"),
                                       "--model_name", "tuned", "--max_iters", "0", "--eval_iters", "1",
                                       "--batch_size", "2", "--block_size", "16", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert opens == {"config": 1}
