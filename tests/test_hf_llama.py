"""The modern recipe to and from Hugging Face: rope + rmsnorm + swiglu models export as
LlamaForCausalLM (Qwen3ForCausalLM with qk_norm) with transformers' logits equal to mypt's and
import back to identical tensors; what either side cannot express is a one-line refusal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from test_hf import MULTILINGUAL, export

from mypt import checkpoint
from mypt.cli import main
from mypt.config import GPTConfig
from mypt.errors import CheckpointError, ConfigError
from mypt.hf_export import char_hf_tokenizer
from mypt.hf_import import import_hf
from mypt.model import GPT
from mypt.tokenizers.char import CharTokenizer

transformers = pytest.importorskip("transformers")

# Grouped-query attention, a RoPE base other than transformers' default, and swiglu's width (96).
LLAMA = {"position": "rope", "rope_theta": 5000.0, "norm": "rmsnorm", "mlp": "swiglu", "n_head": 4, "n_kv_head": 2}


def llama_checkpoint(path: Path, tokenizer, **settings) -> GPT:
    """A tiny model of the Llama recipe whose weights (std 0.3) make attention far from uniform:
    a RoPE base or rotation convention off moves its logits by 0.03 or more, not by the 5e-5 of
    a freshly initialized model, which a 1e-4 tolerance would let through."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(**{"vocab_size": tokenizer.vocab_size, "block_size": 16, "n_layer": 2, "n_embd": 32,
                             **LLAMA, **settings}))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    checkpoint.save(path, model, tokenizer, {})
    return model.eval()


# Llama 3's RoPE scaling with an original context of 8 in a 16-token model: the first frequency
# blends, the others are divided by the factor (the rotation differs from unscaled at every position).
SCALED = "llama3:factor=8.0,low_freq_factor=1.0,high_freq_factor=4.0,original_max_position_embeddings=8"
EXPORTED = {  # family: the settings, and what config.json says of them
    "llama": ({}, {"rms_norm_eps": 1e-5, "attention_bias": False}),
    "qwen3": ({"qk_norm": True}, {"rms_norm_eps": 1e-5, "attention_bias": False}),
    # Qwen2's biases, as Llama's attention_bias with zeros for o_proj's (see test_a_qwen2_...)
    "qwen2": ({"qkv_bias": True, "norm_eps": 1e-6}, {"rms_norm_eps": 1e-6, "attention_bias": True}),
    # The squared ReLU as a ReLU-gated MLP of one matrix twice (the demo's model: relu2 with qk_norm)
    "relu2": ({"mlp": "relu2"}, {"hidden_act": "relu"}),
    "relu2_qk": ({"mlp": "relu2", "qk_norm": True}, {"hidden_act": "relu"}),
    "llama3": ({"rope_scaling": SCALED, "norm_eps": 1e-6},
               {"rms_norm_eps": 1e-6, "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                                       "high_freq_factor": 4.0, "original_max_position_embeddings": 8}}),
    # Equal factors: a step between kept and divided frequencies, no blend (it was refused)
    "llama3_step": ({"rope_scaling": SCALED.replace("low_freq_factor=1.0", "low_freq_factor=4.0")},
                    {"rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 4.0,
                                      "high_freq_factor": 4.0, "original_max_position_embeddings": 8}}),
}
CLASSES = {"llama": "LlamaForCausalLM", "llama3": "LlamaForCausalLM", "llama3_step": "LlamaForCausalLM",
           "qwen2": "LlamaForCausalLM", "qwen3": "Qwen3ForCausalLM", "relu2": "LlamaForCausalLM",
           "relu2_qk": "Qwen3ForCausalLM"}


@pytest.mark.parametrize("family", EXPORTED)
def test_llama_export_computes_mypts_logits_and_imports_back_identical(tmp_path, family):
    settings, said = EXPORTED[family]
    tokenizer = CharTokenizer(chars=sorted(set(MULTILINGUAL)))
    # gelu exact: a setting without effect in a swiglu model, which the import could not know
    # (one spelling: the config file that built the model still matches the import's)
    model = llama_checkpoint(tmp_path / "m", tokenizer, gelu="exact", **settings)
    out = export(tmp_path, "m")
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert {k: config[k] for k in ("model_type", "tie_word_embeddings", "rope_theta", "num_key_value_heads",
                                   "intermediate_size", "max_position_embeddings", "head_dim", *said)} == {
        "model_type": "qwen3" if CLASSES[family].startswith("Qwen3") else "llama", "tie_word_embeddings": True,
        "rope_theta": 5000.0, "num_key_value_heads": 2, "intermediate_size": model.config.mlp_hidden,
        "max_position_embeddings": 16, "head_dim": 8, **said}
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    assert type(hf_model).__name__ == CLASSES[family]
    assert hf_model.get_output_embeddings().weight.data_ptr() == hf_model.get_input_embeddings().weight.data_ptr()
    ids = tokenizer.encode(MULTILINGUAL)
    assert transformers.AutoTokenizer.from_pretrained(out)(MULTILINGUAL)["input_ids"] == ids
    x = torch.tensor([ids[:16]])
    with torch.no_grad():
        assert torch.allclose(model(x, x)[0], hf_model(x).logits, atol=1e-4)

    back, back_tokenizer, _ = import_hf(out)
    assert back.config == model.config and back_tokenizer.state() == tokenizer.state()
    vocab, ours, theirs = tokenizer.vocab_size, model.state_dict(), back.state_dict()
    assert ours.keys() == theirs.keys()
    for key in ours:  # the padding rows of the vocabulary are not exported: they come back as zeros
        assert torch.equal(ours[key][:vocab] if "wte" in key or "lm_head" in key else ours[key],
                           theirs[key][:vocab] if "wte" in key or "lm_head" in key else theirs[key]), key
    assert not theirs["transformer.wte.weight"][vocab:].any()


@pytest.mark.parametrize("settings, named", [
    ({"position": "rope", "norm": "layernorm", "mlp": "swiglu"}, "norm layernorm"),
    ({"position": "rope", "norm": "rmsnorm", "mlp": "gelu"}, "mlp gelu"),
    ({"position": "rope", "norm": "rmsnorm", "mlp": "swiglu", "bias": True}, "bias true"),
    ({"norm": "rmsnorm"}, "norm rmsnorm"),
    ({"n_head": 4, "n_kv_head": 2}, "n_kv_head 2"),
    ({"qk_norm": True}, "qk_norm true"),
])
def test_export_refuses_what_transformers_cannot_express_naming_the_setting(tmp_path, settings, named):
    tokenizer = CharTokenizer(chars="abc\n")
    config = {"vocab_size": 4, "block_size": 8, "n_layer": 1, "n_head": 2, "n_embd": 16, **settings}
    checkpoint.save(tmp_path / "m", GPT(GPTConfig(**config)), tokenizer, {})
    result = CliRunner().invoke(main, ["export-hf", "--model_name", str(tmp_path / "m"),
                                       "--out_dir", str(tmp_path / "out")])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert f"model setting {named}: no Hugging Face equivalent" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory) -> Path:
    """A small Llama written by transformers itself (its own defaults where mypt's agree)."""
    path = tmp_path_factory.mktemp("llama") / "llama"
    cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=48, intermediate_size=128, num_hidden_layers=1,
                                   num_attention_heads=4, num_key_value_heads=1, max_position_embeddings=32,
                                   rms_norm_eps=1e-5, tie_word_embeddings=True)
    transformers.LlamaForCausalLM(cfg).save_pretrained(path, safe_serialization=True)
    return path


@pytest.mark.parametrize("edit, named", [
    ({"tie_word_embeddings": "yes"}, "tie_word_embeddings 'yes' (mypt: true or false)"),
    ({"rope_scaling": {"rope_type": "linear", "factor": 2.0}}, "rope_scaling {'rope_type'"),
    ({"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4, "factor": 2.0}}, "rope_parameters {'rope_type': 'yarn'"),
    ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, "rope_scaling {'rope_type': 'llama3', 'factor': 8.0} "
                                                               "(mypt: rope_type default, or llama3 with factor"),
    ({"rope_parameters": {"rope_type": "llama3", "rope_theta": 1e4, "factor": 0.5, "low_freq_factor": 1,
                          "high_freq_factor": 4, "original_max_position_embeddings": 8}}, "'factor': 0.5"),
    # Each sound, but not the same: transformers 4 and 5 would compute different models.
    ({"rope_parameters": {"rope_type": "default", "rope_theta": 1e4},
      "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                       "original_max_position_embeddings": 8}},
     "original_max_position_embeddings': 8} (mypt: rope_type default, or llama3 with factor, low_freq_factor, "
     "high_freq_factor and original_max_position_embeddings; the same in rope_parameters and rope_scaling)"),
    ({"model_type": "qwen2", "use_sliding_window": True}, "use_sliding_window True (mypt: false)"),
    ({"hidden_act": "gelu"}, "hidden_act 'gelu' (mypt: silu (or swish, the same), or relu"),
    ({"intermediate_size": 0}, "intermediate_size 0 (mypt: a whole number above 0)"),
    ({"rms_norm_eps": -1e-6}, "rms_norm_eps -1e-06 (mypt: a number above 0, at most 0.1)"),
    ({"attention_bias": "yes"}, "attention_bias 'yes' (mypt: true or false)"),
    ({"hidden_act": ["relu"]}, "hidden_act ['relu'] (mypt: silu (or swish, the same), or relu with gate_proj"),
    ({"rms_norm_eps": 0.5}, "rms_norm_eps 0.5 (mypt: a number above 0, at most 0.1)"),
    ({"mlp_bias": True}, "mlp_bias True"),
    ({"head_dim": 0}, "head_dim 0 (mypt: an even whole number (rotary positions turn pairs))"),
    ({"head_dim": 5}, "head_dim 5 (mypt: an even whole number"),
    ({"num_key_value_heads": 3}, "num_key_value_heads 3 (mypt: a divisor of num_attention_heads 4)"),
    ({"num_key_value_heads": 0}, "num_key_value_heads 0 (mypt: a divisor of num_attention_heads 4)"),
    ({"num_attention_heads": 5, "head_dim": None}, "num_attention_heads 5 (mypt: a divisor of hidden_size 48, or "
                                                   "head_dim set)"),
    ({"rope_parameters": {"rope_type": "default", "rope_theta": "500000"}}, "rope_theta '500000' (mypt: a number"),
    ({"rope_parameters": {"rope_type": "llama3", "rope_theta": 1e4, "factor": "8", "low_freq_factor": 1,
                          "high_freq_factor": 4, "original_max_position_embeddings": 8}}, "'factor': '8'"),
    ({"model_type": "qwen3", "layer_types": ["sliding_attention"]}, "layer_types ['sliding_attention'] (mypt: "
                                                                     "full_attention in every layer)"),
    # Two bases: transformers 5 reads rope_parameters' (10000 was imported unsaid), 4.57 the top level's.
    ({"rope_theta": 500.0, "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0}},
     "rope_theta 500.0 with rope_parameters' rope_theta 10000.0 (mypt: the same base in both: transformers 4 reads "
     "the first, 5 the second)"),
])
def test_import_refuses_what_mypt_cannot_express_naming_the_key(llama_dir, tmp_path, edit, named):
    """(An edit to None removes the key.)"""
    config = json.loads((llama_dir / "config.json").read_text(encoding="utf-8"))
    config = {k: v for k, v in {**config, **edit}.items() if v is not None}
    (tmp_path / "config.json").write_text(json.dumps(config), encoding="utf-8")
    (tmp_path / "model.safetensors").symlink_to(llama_dir / "model.safetensors")
    with pytest.raises(ConfigError, match=r"config.json: mypt cannot express ") as error:
        import_hf(tmp_path)
    assert named in str(error.value) and "\n" not in str(error.value)


def test_a_llama_of_transformers_imports_with_its_logits(llama_dir, tmp_path):
    """A Llama mypt did not write: its weights under mypt's names compute transformers' logits
    (its vocabulary of 64 comes with no tokenizer.json: the test saves a char tokenizer_state.json)."""
    CharTokenizer(chars=[chr(0x41 + i) for i in range(64)]).save(tmp_path)
    for name in ("config.json", "model.safetensors"):
        (tmp_path / name).symlink_to(llama_dir / name)
    model, _, config = import_hf(tmp_path)
    assert config["model"]["n_kv_head"] == 1 and model.config.mlp_hidden == 128
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(llama_dir).eval()
    x = torch.randint(0, 64, (1, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(model.eval()(x, x)[0], hf_model(x).logits, atol=1e-4)


def test_a_llama_with_swish_and_use_sliding_window_imports_as_transformers_computes_it(llama_dir, tmp_path):
    """hidden_act swish is transformers' SiLU, and LlamaConfig has no use_sliding_window (the
    Llama attends to every position whatever it says): the same logits as transformers'."""
    CharTokenizer(chars=[chr(0x41 + i) for i in range(64)]).save(tmp_path)
    config = json.loads((llama_dir / "config.json").read_text(encoding="utf-8"))
    (tmp_path / "config.json").write_text(json.dumps({**config, "hidden_act": "swish", "use_sliding_window": True}),
                                          encoding="utf-8")
    (tmp_path / "model.safetensors").symlink_to(llama_dir / "model.safetensors")
    model, _, _ = import_hf(tmp_path)
    assert model.config.mlp == "swiglu"
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    x = torch.randint(0, 64, (1, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(model.eval()(x, x)[0], hf_model(x).logits, atol=1e-4)


def test_a_relu_gated_llama_is_refused_unless_its_gate_is_its_up_projection(llama_dir, tmp_path):
    """hidden_act relu reads as mypt's squared ReLU only when gate_proj and up_proj are one
    matrix (what mypt's export writes); two matrices are a ReGLU, which mypt has not."""
    from safetensors.torch import load_file, save_file

    CharTokenizer(chars=[chr(0x41 + i) for i in range(64)]).save(tmp_path)
    config = json.loads((llama_dir / "config.json").read_text(encoding="utf-8"))
    (tmp_path / "config.json").write_text(json.dumps({**config, "hidden_act": "relu"}), encoding="utf-8")
    weights = load_file(llama_dir / "model.safetensors")
    save_file(weights, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"model.layers.0.mlp.gate_proj.weight differs from "
                                              r"model.layers.0.mlp.up_proj.weight, and config.json says hidden_act "
                                              r"relu: a ReLU-gated MLP \(ReGLU\), which mypt has not"):
        import_hf(tmp_path)
    gate = "model.layers.0.mlp.gate_proj.weight"
    save_file({**weights, "model.layers.0.mlp.up_proj.weight": weights[gate].clone()}, tmp_path / "model.safetensors")
    model, _, _ = import_hf(tmp_path)
    assert model.config.mlp == "relu2" and torch.equal(model.transformer.h[0].mlp.c_fc.weight, weights[gate])
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    x = torch.randint(0, 64, (1, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(model.eval()(x, x)[0], hf_model(x).logits, atol=1e-4)


def test_a_llama_lm_head_other_than_the_embedding_is_refused(llama_dir, tmp_path):
    """config.json says tied, yet the file holds an lm_head.weight: refused unless it is the
    embedding (transformers would drop it, computing other logits than its author's)."""
    from safetensors.torch import load_file, save_file

    CharTokenizer(chars=[chr(0x41 + i) for i in range(64)]).save(tmp_path)
    (tmp_path / "config.json").symlink_to(llama_dir / "config.json")
    weights = load_file(llama_dir / "model.safetensors")
    embedding = weights["model.embed_tokens.weight"]
    save_file({**weights, "lm_head.weight": embedding.clone()}, tmp_path / "model.safetensors")
    import_hf(tmp_path)
    save_file({**weights, "lm_head.weight": embedding + 1}, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"model.safetensors: lm_head.weight differs from the embedding"):
        import_hf(tmp_path)


@pytest.mark.parametrize("edit, named", [
    ({"tie_word_embeddings": False}, "config.json says tie_word_embeddings false, so the head is a tensor of its own"),
    ({"tie_word_embeddings": None}, "config.json has no tie_word_embeddings, which for model_type llama is false "
                                    "(transformers' default), so the head is a tensor of its own"),
])
def test_an_untied_head_missing_from_the_file_names_the_config_key_that_unties_it(llama_dir, tmp_path, edit, named):
    """A tied model's file with a config.json that unties it (by the key, or by leaving it out:
    transformers' default) said only "model.safetensors has no lm_head.weight"."""
    config = json.loads((llama_dir / "config.json").read_text(encoding="utf-8"))
    config = {k: v for k, v in {**config, **edit}.items() if v is not None}
    (tmp_path / "config.json").write_text(json.dumps(config), encoding="utf-8")
    (tmp_path / "model.safetensors").symlink_to(llama_dir / "model.safetensors")
    CharTokenizer(chars=[chr(0x41 + i) for i in range(64)]).save(tmp_path)
    with pytest.raises(CheckpointError, match="model.safetensors has no lm_head.weight: ") as error:
        import_hf(tmp_path)
    assert named in str(error.value) and '"tie_word_embeddings": true' in str(error.value)


def test_a_vocab_size_other_than_the_weights_rows_names_the_key_and_its_number(llama_dir, tmp_path):
    """config.json's vocab_size 65 over weights of 64 rows: the message said (128, 48), mypt's
    table padded to a multiple of 64, a number in neither file."""
    config = json.loads((llama_dir / "config.json").read_text(encoding="utf-8"))
    (tmp_path / "config.json").write_text(json.dumps({**config, "vocab_size": 65}), encoding="utf-8")
    (tmp_path / "model.safetensors").symlink_to(llama_dir / "model.safetensors")
    CharTokenizer(chars=[chr(0x41 + i) for i in range(64)]).save(tmp_path)
    with pytest.raises(CheckpointError) as error:
        import_hf(tmp_path)
    assert str(error.value).endswith("model.safetensors: model.embed_tokens.weight has shape (64, 48), config.json "
                                     "says (65, 48) (its vocab_size 65): give the config.json saved with these "
                                     "weights, or set vocab_size to their 64 rows")


def quantized(llama_dir: Path, path: Path, method: str | None, kind: str) -> Path:
    """llama_dir's Llama with its projections quantized as a quantized checkpoint holds them:
    fp8 (float8_e4m3fn weights and a float32 `weight_scale` per row, fbgemm_fp8's layout), int8
    (int8 weights and bitsandbytes' `SCB`, each row's largest |w|), or float (the float weights
    with a scale beside them); config.json's quantization_config says `method` (None: none)."""
    from safetensors.torch import load_file, save_file

    CharTokenizer(chars=[chr(0x41 + i) for i in range(64)]).save(path)
    config = json.loads((llama_dir / "config.json").read_text(encoding="utf-8"))
    if method is not None:
        config["quantization_config"] = {"quant_method": method, **({"load_in_8bit": True} if kind == "int8" else {})}
    (path / "config.json").write_text(json.dumps(config), encoding="utf-8")
    weights = load_file(llama_dir / "model.safetensors")
    for name in [n for n in weights if n.endswith("_proj.weight")]:
        w = weights[name]
        absmax = w.abs().amax(dim=1)
        if kind == "int8":
            weights[name] = (w / absmax[:, None] * 127).round().to(torch.int8)
            weights[name.replace(".weight", ".SCB")] = absmax
        else:
            scale = absmax[:, None] / 448  # float8_e4m3fn's largest value
            weights[name] = (w / scale).to(torch.float8_e4m3fn) if kind == "fp8" else w
            weights[name + "_scale"] = scale
    save_file(weights, path / "model.safetensors")
    return path


@pytest.mark.parametrize("method, kind, named", [
    ("fbgemm_fp8", "fp8", "mypt cannot express quantization_config (quant_method 'fbgemm_fp8')"),
    ("bitsandbytes", "int8", "mypt cannot express quantization_config (quant_method 'bitsandbytes')"),
    (None, "fp8", "model.safetensors: model.layers.0.mlp.down_proj.weight float8_e4m3fn, "
                  "model.layers.0.mlp.gate_proj.weight float8_e4m3fn, model.layers.0.mlp.up_proj.weight "
                  "float8_e4m3fn (and 4 more): not float weights (mypt reads float16, bfloat16, float32 or float64)"),
    (None, "int8", "model.layers.0.mlp.down_proj.weight int8, "),
    (None, "float", "model.safetensors: holds model.layers.0.mlp.down_proj.weight_scale, "
                    "model.layers.0.mlp.gate_proj.weight_scale, model.layers.0.mlp.up_proj.weight_scale "
                    "(and 4 more), which the model has no place for"),
])
def test_a_quantized_llama_is_refused_naming_what_says_so(llama_dir, tmp_path, method, kind, named):
    """An FP8 or int8 checkpoint has a float one's names and shapes: read as floats, its weights
    are its quantized integers (int8's up to 127 where the model's are ~0.1). Its config.json's
    quantization_config, a weight of another dtype, a tensor the import has no place for: each
    is refused, naming it."""
    with pytest.raises((ConfigError, CheckpointError)) as error:
        import_hf(quantized(llama_dir, tmp_path, method, kind))
    assert named in str(error.value) and "unquantized" in str(error.value) and "\n" not in str(error.value)


def test_tensors_float_checkpoints_hold_that_no_model_reads_import_and_others_are_refused(llama_dir, tmp_path):
    """GPT-2's causal-mask buffers (the Hub's gpt2 files hold them) and older Llama files' RoPE
    frequencies are no weights: imported without them, to the same model. A q_proj bias in a
    Llama whose config.json says attention_bias false (transformers would drop it) is refused."""
    from safetensors.torch import load_file, save_file
    from test_hf import edited, hf_gpt2

    gpt2_dir = tmp_path / "source"
    hf_gpt2(gpt2_dir)
    mask = torch.tril(torch.ones(1, 1, 32, 32))
    gpt2 = edited(gpt2_dir, tmp_path / "gpt2", {}, {"h.0.attn.bias": mask, "h.1.attn.bias": mask.clone(),
                                                   "h.0.attn.masked_bias": torch.tensor(-1e4)})
    assert torch.equal(import_hf(gpt2)[0].transformer.h[1].attn.c_attn.weight,
                       import_hf(gpt2_dir)[0].transformer.h[1].attn.c_attn.weight)
    CharTokenizer(chars=[chr(0x41 + i) for i in range(64)]).save(tmp_path)
    (tmp_path / "config.json").symlink_to(llama_dir / "config.json")
    weights = load_file(llama_dir / "model.safetensors")
    inv_freq = {"model.layers.0.self_attn.rotary_emb.inv_freq": torch.rand(6)}
    save_file({**weights, **inv_freq}, tmp_path / "model.safetensors")
    import_hf(tmp_path)
    save_file({**weights, "model.layers.0.self_attn.q_proj.bias": torch.zeros(48)}, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"model.safetensors: holds model.layers.0.self_attn.q_proj.bias, "
                                              r"which the model has no place for"):
        import_hf(tmp_path)


def hub_llama(path: Path, corpus: str) -> "object":
    """A Llama directory as the Hub has them (config.json, model.safetensors, tokenizer.json; no
    mypt tokenizer_state.json), shaped as mypt can express it (SmolLM2-135M's family: tied head,
    swiglu at 8/3 x hidden, grouped-query attention): a byte-level BPE with <|endoftext|>, and
    the model's vocabulary sized to it. Returns the tokenizers Tokenizer."""
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([corpus], trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                                          initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    cfg = transformers.LlamaConfig(vocab_size=tok.get_vocab_size(), hidden_size=48, intermediate_size=128,
                                   num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=1,
                                   max_position_embeddings=32, rms_norm_eps=1e-5, tie_word_embeddings=True)
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(cfg).save_pretrained(path, safe_serialization=True)
    tok.save(str(path / "tokenizer.json"))
    return tok


@pytest.mark.slow
def test_a_hub_llama_with_its_tokenizer_json_imports_and_trains_on_its_tokens(tmp_path):
    """A third-party Llama brings its tokenizer.json: import_hf uses it (it said "no
    tokenizer_state.json"); data of another tokenizer is refused with the flag that prepares it
    right (--tokenizer_from DIR, the same tokenizer as --tokenization hf:DIR/tokenizer.json),
    which trains from the imported weights, and the fine-tuned model generates; a tokenizer.json
    of another size than the model's vocabulary is refused naming both."""
    corpus = "the king and the queen walk in the garden of the castle at night\n" * 200
    hub = tmp_path / "hub-llama"
    tok = hub_llama(hub, corpus)
    model, tokenizer, _ = import_hf(hub)
    assert tokenizer.kind == "hf" and tokenizer.vocab_size == tok.get_vocab_size()
    assert list(tokenizer.encode("the queen at night")) == tok.encode("the queen at night").ids
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(hub).eval()
    x = torch.tensor([tok.encode("the king and the queen walk in the garden").ids])
    with torch.no_grad():
        assert torch.allclose(model.eval()(x, x)[0], hf_model(x).logits, atol=1e-4)

    (tmp_path / "corpus.txt").write_text(corpus)
    runner = CliRunner()
    prepare = ["prepare-dataset", "--input_files", str(tmp_path / "corpus.txt"), "--no_dedup", "--tokens_per_shard",
               "200", "--workers", "1"]
    train = ["train", "--init_from_model", f"hf:{hub}", "--checkpoints_dir", str(tmp_path / "ck"), "--max_iters",
             "4", "--eval_interval", "2", "--eval_iters", "1", "--batch_size", "2", "--device", "cpu"]
    # Data of another tokenizer: refused, with the flag that prepares it right, which works.
    assert runner.invoke(main, [*prepare, "--out_dir", str(tmp_path / "chars"), "--tokenization", "char"]).exit_code == 0
    result = runner.invoke(main, [*train, "--dataset_dir", str(tmp_path / "chars"), "--model_name", "bad"])
    assert result.exit_code == 1 and result.output.rstrip().endswith(f"prepare the data with --tokenizer_from {hub}")
    result = runner.invoke(main, [*prepare, "--out_dir", str(tmp_path / "ds"), "--tokenizer_from", str(hub)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, [*prepare, "--out_dir", str(tmp_path / "same"), "--tokenization",
                                  f"hf:{hub / 'tokenizer.json'}"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "same" / "tokenizer_state.json").read_bytes() == (tmp_path / "ds" / "tokenizer_state.json").read_bytes()
    result = runner.invoke(main, [*train, "--dataset_dir", str(tmp_path / "ds"), "--model_name", "tuned"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["generate", "--model_name", str(tmp_path / "ck" / "tuned"), "--prompt", "the king",
                                  "--max_new_tokens", "5", "--seed", "1"])
    assert result.exit_code == 0 and "--- sample 1 ---\nthe king" in result.output, result.output

    # A vocabulary padded past the tokenizer's ids (as Qwen's are): the rows no id reaches are left
    # out; past 1% of the rows (at least 127) it is another model's tokenizer, refused naming both.
    size = tok.get_vocab_size()
    config = transformers.AutoConfig.from_pretrained(hub)
    for rows, imports in ((size + 127, True), (size + 128, False)):
        padded = tmp_path / f"padded{rows}"
        config.vocab_size = rows
        hf_padded = transformers.LlamaForCausalLM(config).eval()
        hf_padded.save_pretrained(padded, safe_serialization=True)
        (padded / "tokenizer.json").write_bytes((hub / "tokenizer.json").read_bytes())
        if imports:
            model, tokenizer, _ = import_hf(padded)
            assert model.config.vocab_size == tokenizer.vocab_size == size
            with torch.no_grad():
                assert torch.allclose(model.eval()(x, x)[0], hf_padded(x).logits[..., :size], atol=1e-4)
            continue
        with pytest.raises(ConfigError, match=rf"^--init_from_model hf:{padded}: the tokenizer has {size} ids, the "
                                              rf"model's config.json vocab_size {rows}: not this model's tokenizer"):
            import_hf(padded)


def transformers_model(kind: str):
    """A small model transformers builds of the shapes Hub models have that need qkv_bias,
    norm_eps, rope_scaling and head_size: Qwen2 (biases on q, k and v; RMSNorm epsilon 1e-6; a
    vocabulary of 128 rows padded past the 60 ids of its tokenizer, as Qwen2.5's 151,936 rows for
    151,665 ids), Llama 3.2 (RoPE scaled as `llama3` from an original context of 8, base
    500000) and Qwen3 (heads 16 wide where hidden_size / heads is 12, as Qwen3-0.6B's are 128
    where it is 64). Weights of std 0.3, so a bias, epsilon, width or
    rotation off shows in the logits."""
    shape = dict(hidden_size=48, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=32, tie_word_embeddings=True)
    if kind == "qwen2":
        cfg = transformers.Qwen2Config(vocab_size=128, rms_norm_eps=1e-6, **shape)
        model = transformers.Qwen2ForCausalLM(cfg)
    elif kind == "qwen3":
        cfg = transformers.Qwen3Config(vocab_size=60, rms_norm_eps=1e-6, head_dim=16, **shape)
        model = transformers.Qwen3ForCausalLM(cfg)
    else:
        cfg = transformers.LlamaConfig(vocab_size=60, rms_norm_eps=1e-5, rope_parameters={
            "rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 8}, **shape)
        model = transformers.LlamaForCausalLM(cfg)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    return model.eval()


@pytest.mark.parametrize("kind", ["qwen2", "llama3", "qwen3"])
def test_qwen2_llama3_and_qwen3_models_of_transformers_import_with_their_logits_and_train(tmp_path, kind):
    hf_model = transformers_model(kind)
    hub = tmp_path / "hub"
    hf_model.save_pretrained(hub, safe_serialization=True)
    chars = "".join(chr(0x41 + i) for i in range(26)) + "".join(chr(0x61 + i) for i in range(26)) + " .,\n!?'-"
    # Its tokenizer.json, as Hub models have it (one id per character: 60 ids).
    char_hf_tokenizer(CharTokenizer(chars=sorted(chars))).save(str(hub / "tokenizer.json"))
    model, tokenizer, config = import_hf(hub)
    settings = config["model"]
    if kind == "qwen2":
        assert (settings["qkv_bias"], settings["norm_eps"], model.config.vocab_size) == (True, 1e-6, 60)
        assert settings["rope_scaling"] is None
    elif kind == "qwen3":
        assert (model.config.head_size, settings["qk_norm"], model.config.attn_width) == (16, True, 64)
    else:
        assert settings["rope_scaling"] == ("llama3:factor=8.0,low_freq_factor=1.0,high_freq_factor=4.0,"
                                            "original_max_position_embeddings=8")
        assert settings["qkv_bias"] is False and settings["rope_theta"] == 500000.0
    x = torch.randint(0, 60, (2, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        theirs = hf_model(x).logits[..., :60]
        assert torch.allclose(model.eval()(x, x)[0], theirs, atol=1e-4)
    # Exported again (Qwen2's biases as Llama's attention_bias), transformers computes the same.
    checkpoint.save(tmp_path / "m", model, tokenizer, {})
    again = transformers.AutoModelForCausalLM.from_pretrained(export(tmp_path, "m")).eval()
    with torch.no_grad():
        assert torch.allclose(again(x).logits, theirs, atol=1e-4)
    # `mypt train --init_from_model hf:DIR` fine-tunes it and saves the settings that rebuild it.
    (tmp_path / "text.txt").write_text("The cat sat on the mat, and the dog ran! " * 40)
    result = CliRunner().invoke(main, ["train", "--init_from_model", f"hf:{hub}", "--input_file",
                                       str(tmp_path / "text.txt"), "--checkpoints_dir", str(tmp_path / "ck"),
                                       "--model_name", "tuned", "--max_iters", "2", "--eval_interval", "2",
                                       "--eval_iters", "1", "--batch_size", "2", "--block_size", "16",
                                       "--tokenization", f"hf:{hub / 'tokenizer.json'}", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    padding = "68 embedding rows past the tokenizer's 60 ids left out: padding no id reaches"
    assert (padding in result.output) == (kind == "qwen2"), result.output
    saved = json.loads((tmp_path / "ck" / "tuned" / "config.json").read_text())["model"]
    assert {k: saved[k] for k in ("qkv_bias", "norm_eps", "rope_scaling", "head_size")} == \
        {k: getattr(model.config, k) for k in ("qkv_bias", "norm_eps", "rope_scaling", "head_size")}


def test_an_untied_llama_of_its_own_mlp_width_imports_and_exports_back_identical(tmp_path):
    """Most Llamas (TinyLlama, Llama 2) have an output head of their own and an MLP width of
    their own choosing: both come along (tie_embeddings false, mlp_width), with transformers'
    logits, and export back to transformers' tensors; a config.json that leaves
    tie_word_embeddings out means untied, LlamaConfig's default."""
    cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=48, intermediate_size=144, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
                                   rms_norm_eps=1e-5, tie_word_embeddings=False)
    torch.manual_seed(0)
    hf_model = transformers.LlamaForCausalLM(cfg).eval()
    hf_model.save_pretrained(tmp_path / "hub", safe_serialization=True)
    saved = json.loads((tmp_path / "hub" / "config.json").read_text())
    saved.pop("tie_word_embeddings", None)
    (tmp_path / "hub" / "config.json").write_text(json.dumps(saved))
    CharTokenizer(chars=[chr(0x41 + i) for i in range(64)]).save(tmp_path / "hub")
    model, tokenizer, config = import_hf(tmp_path / "hub")
    assert config["model"]["tie_embeddings"] is False and model.config.mlp_hidden == 144
    assert model.lm_head.weight is not model.transformer.wte.weight
    x = torch.randint(0, 64, (1, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(model.eval()(x, x)[0], hf_model(x).logits, atol=1e-4)
    checkpoint.save(tmp_path / "m", model, tokenizer, {})
    out = export(tmp_path, "m")
    again = transformers.AutoModelForCausalLM.from_pretrained(out)
    assert again.config.tie_word_embeddings is False and again.config.intermediate_size == 144
    theirs = hf_model.state_dict()
    assert set(again.state_dict()) == set(theirs)
    assert all(torch.equal(t, theirs[k]) for k, t in again.state_dict().items())


@pytest.mark.parametrize("window", [None, 12])
def test_a_mistral_of_transformers_imports_with_its_logits_within_its_sliding_window(tmp_path, window):
    """Mistral is Llama's architecture with a sliding window of attention (null in Mistral 7B
    v0.2 and later): within a context no longer than the window, full causal attention computes
    the same, so the import's block_size is the window where it is shorter than
    max_position_embeddings. A config.json without sliding_window means MistralConfig's 4096."""
    cfg = transformers.MistralConfig(vocab_size=60, hidden_size=48, intermediate_size=128, num_hidden_layers=2,
                                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
                                     sliding_window=window, tie_word_embeddings=False)
    torch.manual_seed(0)
    hf_model = transformers.MistralForCausalLM(cfg).eval()
    with torch.no_grad():
        for p in hf_model.parameters():
            p.normal_(0.0, 0.3)
    hub = tmp_path / "hub"
    hf_model.save_pretrained(hub, safe_serialization=True)
    CharTokenizer(chars=[chr(0x41 + i) for i in range(60)]).save(hub)
    model, _, config = import_hf(hub)
    assert model.config.block_size == (window or 32) and config["model"]["n_kv_head"] == 2
    x = torch.randint(0, 60, (2, window or 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(model.eval()(x, x)[0], hf_model(x).logits, atol=1e-4)
    if window:  # past the window full attention computes another thing: mypt's context stops there
        longer = torch.randint(0, 60, (1, 32), generator=torch.Generator().manual_seed(1))
        model.set_block_size(32)
        with torch.no_grad():
            ours, theirs = model(longer, longer)[0], hf_model(longer).logits
        assert torch.allclose(ours[:, :window], theirs[:, :window], atol=1e-4)
        assert not torch.allclose(ours[:, window:], theirs[:, window:], atol=1e-2)
    # A new run past the window is told that its attention is no longer the model's.
    # (Its tokenizer as a tokenizer.json, with a newline: the documents' boundary.)
    chars = "".join(chr(0x41 + i) for i in range(59)) + "\n"
    (hub / "tokenizer_state.json").unlink()
    char_hf_tokenizer(CharTokenizer(chars=sorted(chars))).save(str(hub / "tokenizer.json"))
    (tmp_path / "text.txt").write_text(chars * 20)
    for block in (32, 12):
        result = CliRunner().invoke(main, ["train", "--init_from_model", f"hf:{hub}", "--input_file",
                                           str(tmp_path / "text.txt"), "--checkpoints_dir", str(tmp_path / "ck"),
                                           "--model_name", f"b{block}", "--max_iters", "1", "--eval_iters", "1",
                                           "--batch_size", "2", "--block_size", str(block), "--tokenization",
                                           f"hf:{hub / 'tokenizer.json'}", "--device", "cpu"])
        assert result.exit_code == 0, result.output
        assert ("is past the sliding window" in result.output) == (window == 12 and block == 32), result.output
        assert window != 12 or block != 32 or \
            f"warning: --block_size 32 is past the sliding window of hf:{hub} (12 tokens)" in result.output
    saved = json.loads((hub / "config.json").read_text())
    assert saved["sliding_window"] == window
    del saved["sliding_window"]
    for edit, block in (({"sliding_window": None}, 32), ({}, 32)):  # unset: 4096, past the 32 positions
        (hub / "config.json").write_text(json.dumps({**saved, **edit}))
        assert import_hf(hub)[0].config.block_size == block
    (hub / "config.json").write_text(json.dumps({**saved, "sliding_window": "wide"}))
    with pytest.raises(ConfigError, match="sliding_window 'wide' \\(mypt: null or a whole number above 0\\)"):
        import_hf(hub)


@pytest.mark.parametrize("kind, in_file", [("mistral", "qkv"), ("mistral", ""), ("mistral", "qkvo"), ("qwen2", "o")])
def test_biases_are_those_of_transformers_class_for_the_model_type_whatever_the_keys_it_ignores_say(
        tmp_path, kind, in_file):
    """MistralAttention has no biases, Qwen2Attention none on o_proj, whatever config.json's
    attention_bias says, and neither MLP reads mlp_bias: a config.json that sets both true
    imports as transformers loads it, with its logits, with the biases `in_file` or none (those its
    class has no place for, transformers drops: random ones here, so that using them shows)."""
    from safetensors.torch import load_file, save_file

    shape = dict(vocab_size=60, hidden_size=48, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=32, tie_word_embeddings=False)
    if kind == "mistral":
        hf_model = transformers.MistralForCausalLM(transformers.MistralConfig(sliding_window=None, **shape))
    else:
        hf_model = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**shape))
    torch.manual_seed(0)
    with torch.no_grad():
        for p in hf_model.parameters():
            p.normal_(0.0, 0.3)
    hub = tmp_path / "hub"
    hf_model.save_pretrained(hub, safe_serialization=True)
    saved = json.loads((hub / "config.json").read_text())
    (hub / "config.json").write_text(json.dumps({**saved, "attention_bias": True, "mlp_bias": True}))
    if in_file:
        weights = load_file(hub / "model.safetensors")
        for i in range(2):
            for x, width in (("q", 48), ("k", 24), ("v", 24), ("o", 48)):
                if x in in_file:
                    weights.setdefault(f"model.layers.{i}.self_attn.{x}_proj.bias", torch.randn(width))
        save_file(weights, hub / "model.safetensors", metadata={"format": "pt"})
    CharTokenizer(chars=[chr(0x41 + i) for i in range(60)]).save(hub)
    model, _, config = import_hf(hub)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(hub).eval()
    x = torch.randint(0, 60, (2, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(model.eval()(x, x)[0], theirs(x).logits, atol=1e-4)
    assert config["model"]["qkv_bias"] is (kind == "qwen2")
