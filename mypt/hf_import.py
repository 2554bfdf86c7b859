"""`mypt train --init_from_model hf:DIR`: a Hugging Face transformers directory (what
`save_pretrained` writes, or a local copy of the gpt2 weights) as a mypt GPT: GPT-2
(GPT2LMHeadModel), Llama (LlamaForCausalLM), Mistral (MistralForCausalLM), Qwen2
(Qwen2ForCausalLM) or Qwen3 (Qwen3ForCausalLM), the last four as mypt's modern recipe (position
rope, norm rmsnorm, mlp swiglu, n_kv_head; qkv_bias for Qwen2, qk_norm for Qwen3). Mistral's
sliding-window attention, which mypt has not, is full attention over a context no longer than
the window: its block_size is the smaller of the two. The MLP's width (mlp_width), an
untied head (tie_embeddings false), the norms' epsilon (norm_eps) and Llama 3's RoPE scaling
(rope_scaling) come along. What mypt cannot express is refused, naming the config.json key:
an lm_head.weight other than the embedding where config.json says they are tied, other RoPE
scalings, two RoPE bases (rope_theta and rope_parameters' differ), sliding-window attention,
MLP biases, an output projection's bias other than zeros
(the queries', keys' and values' biases are qkv_bias; which projections have biases follows
transformers' class of the model_type: ATTENTION_BIASES), another activation,
GPT-2's other attention scalings. A head_dim other than hidden_size / heads is head_size. A key
the config.json leaves out means transformers' default for its model_type (LlamaConfig and the
Qwens do not tie the head by default). The weights are model.safetensors or the shards a
model.safetensors.index.json lists; pickles are refused, and so is a quantized checkpoint (a
quantization_config, weights of another dtype than float, a tensor the import has no place for,
such as a scale: WEIGHT_DTYPES, UNUSED_BUFFERS). The tokenizer: a mypt export's own
(its tokenizer.json once that changed since the export), GPT-2's for a GPT-2 vocabulary, else
the directory's tokenizer.json (a Hub model's: prepare its datasets with `--tokenizer_from
DIR`). A vocabulary padded past the tokenizer's ids (Qwen's 151,936 rows for 151,665 ids) is
imported without the rows no id reaches.

Needs only safetensors, not transformers. The export (mypt.hf_export) is apart, so that
training does not depend on its code."""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from mypt.config import MAX_NORM_EPS
from mypt.errors import ConfigError, listed
from mypt.io import sha256_file
# (EXPORT_RECORD: what tells a mypt export's tokenizer_state.json from a stale one)
from mypt.names import EXPORT_RECORD, is_mypt_config
from mypt.tokenizers import Tokenizer

# transformers' GPT-2 holds these layers as Conv1D, whose weights are the transpose of nn.Linear's.
LINEAR_LAYERS = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
# transformers' activation_function -> mypt's gelu setting (the export's inverse: hf_export.HF_GELU).
GELU_FROM_HF = {"gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "gelu": "exact"}

HF_PREFIX = "hf:"
# mypt's tensors with a row per vocabulary id (padded to a multiple of 64; the export trims the
# padding, the import adds it): the embedding, and an untied head.
VOCAB_ROWS = ("transformer.wte.weight", "lm_head.weight")
# The dtypes of weights mypt reads as they are: a quantized checkpoint's int8, float8 or packed
# 4-bit tensors hold the same names and shapes as its float ones, but their values need scales
# (weight_scale, SCB, absmax) to be weights (an FP8 one read as it is: ~5,000x too large).
WEIGHT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
# Tensors of float checkpoints that no model reads, left out of the import by name: GPT-2's
# causal-mask buffers (attn.bias, attn.masked_bias in the Hub's gpt2 files) and the RoPE
# frequencies older transformers saved in Llama files (rotary_emb.inv_freq). Any other tensor
# mypt has no place for is refused: one dropped silently is how a quantized model's scales went.
UNUSED_BUFFERS = re.compile(r"(transformer\.)?h\.\d+\.attn\.(bias|masked_bias)"
                            r"|model\.(layers\.\d+\.self_attn\.)?rotary_emb\.inv_freq")

# A config.json's rows past its tokenizer's ids taken as padding (left out on import): up to
# this many, or 1% of the rows. A vocabulary rounded up to a multiple of 128 passes; another
# model's tokenizer does not.
PADDING_ROWS = 127


def hf_dir(spec: str | None) -> Path | None:
    """The directory of an `hf:DIR` model spec, else None."""
    return Path(spec[len(HF_PREFIX):]) if isinstance(spec, str) and spec.startswith(HF_PREFIX) else None


# A Llama MLP's hidden_act -> mypt's mlp. relu(z) * z = relu(z)^2: a ReLU-gated MLP whose gate
# and up projections are one matrix computes mypt's squared ReLU exactly, so relu2 models export
# as Llama or Qwen3 with hidden_act relu and that matrix twice (hf_export), and import back.
MLP_FROM_ACT = {"silu": "swiglu", "relu": "relu2"}
# transformers' other names of those functions (ACT2FN's "swish" is nn.SiLU, 4.57 and 5 alike).
ACT_ALIASES = {"swish": "silu"}
# The model types whose config reads use_sliding_window (Qwen2Config and Qwen3Config turn their
# sliding_window off without it); LlamaConfig and MistralConfig have no such key and ignore it.
USE_SLIDING_WINDOW_TYPES = ("qwen2", "qwen3")

# The keys of a GPT-2 config.json that give the model's shape (the rest have defaults).
HF_SHAPE_KEYS = ("vocab_size", "n_positions", "n_layer", "n_head", "n_embd")
# Llama, Mistral and the Qwens: the config.json keys that give the model's shape, and the model types.
LLAMA_TYPES = ("llama", "mistral", "qwen2", "qwen3")
LLAMA_SHAPE_KEYS = ("vocab_size", "max_position_embeddings", "num_hidden_layers", "num_attention_heads",
                    "hidden_size", "intermediate_size")
SUPPORTED_TYPES = ("gpt2", *LLAMA_TYPES)
# Which attention projections have biases, as transformers' class of each model_type builds them
# (4.57 and 5 alike): (queries', keys' and values', the output's), each True, False or
# "attention_bias" (the config.json key says). MistralAttention has none and Qwen2Attention q, k
# and v only, whatever attention_bias says: a key they ignore (and tensors in the file they drop)
# must not change mypt's model either, or its logits would differ from transformers'.
ATTENTION_BIASES = {"llama": ("attention_bias", "attention_bias"), "qwen3": ("attention_bias", "attention_bias"),
                    "mistral": (False, False), "qwen2": (True, False)}
# The model types whose MLP reads mlp_bias (LlamaMLP); Mistral's and the Qwens' have no biases whatever it says.
MLP_BIAS_TYPES = ("llama",)
# transformers' defaults (LlamaConfig, MistralConfig, Qwen2Config and Qwen3Config, 4.57 and 5
# alike) of the keys mypt checks whose default is not mypt's: what a config.json that leaves the
# key out means. None: head_dim hidden_size / num_attention_heads, num_key_value_heads
# num_attention_heads, sliding_window none.
LLAMA_DEFAULTS = {"llama": {"tie_word_embeddings": False, "head_dim": None, "num_key_value_heads": None,
                            "rms_norm_eps": 1e-6},
                  "mistral": {"tie_word_embeddings": False, "head_dim": None, "num_key_value_heads": 8,
                              "rms_norm_eps": 1e-6, "sliding_window": 4096},
                  "qwen2": {"tie_word_embeddings": False, "head_dim": None, "num_key_value_heads": 32,
                            "rms_norm_eps": 1e-6},
                  "qwen3": {"tie_word_embeddings": False, "head_dim": 128, "num_key_value_heads": 32,
                            "rms_norm_eps": 1e-6}}


def read_hf_config(path: Path) -> dict:
    """A transformers directory's config (GPT-2, Llama, Mistral, Qwen2 or Qwen3) as mypt's {"model": ...,
    "training": {}}, with its config.json as read under "hf" (import_hf builds from this, read once: the
    model_type there decides which tensors the weights may hold)."""
    path = Path(path)
    hf = _config_json(path, f"--init_from_model hf:{path}")
    if not isinstance(hf, dict):
        raise ConfigError(f"--init_from_model hf:{path}: config.json holds {json.dumps(hf)[:40]}, not a JSON "
                          "object (a transformers config)")
    return {**_hf_settings(path, hf), "hf": hf}


def attention_biases(hf: dict) -> tuple[bool, bool]:
    """(whether q, k and v have biases, whether o_proj has) in transformers' model of a Llama,
    Mistral, Qwen2 or Qwen3 config.json (ATTENTION_BIASES)."""
    return tuple(hf.get(x) is True if isinstance(x, str) else x for x in ATTENTION_BIASES[hf["model_type"]])


def _config_json(path: Path, where: str, hint: str = "") -> object:
    """The config.json of directory `path`, parsed (`where`, `hint`: what its error says before and after)."""
    try:
        return json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ConfigError(f"{where}: no readable config.json ({e}){hint}") from None


def _hf_settings(path: Path, hf: dict) -> dict:
    """read_hf_config's settings of `hf`, the config.json of directory `path`."""
    if is_mypt_config(hf):
        raise ConfigError(f"--init_from_model hf:{path} is a mypt checkpoint, not a Hugging Face directory: pass "
                          f"--init_from_model {path} (without hf:)")
    quantized = hf.get("quantization_config")
    if quantized is not None:  # (its weights read as floats are not the model's: WEIGHT_DTYPES)
        method = quantized.get("quant_method") if isinstance(quantized, dict) else quantized
        raise ConfigError(f"--init_from_model hf:{path}: config.json: mypt cannot express quantization_config "
                          f"(quant_method {method!r}): the files hold quantized weights, whose values need scales "
                          "mypt does not apply; give the model's unquantized (float16, bfloat16 or float32) weights")
    model_type = hf.get("model_type")
    if model_type not in SUPPORTED_TYPES:
        seen = f"model_type {model_type!r}" if "model_type" in hf else "a config.json without model_type"
        raise ConfigError(f"--init_from_model hf:{path}: {seen} is not supported: mypt imports "
                          f"{', '.join(SUPPORTED_TYPES)}; give a transformers directory of one of those")
    if model_type in LLAMA_TYPES:
        model = _llama_model_settings(path, hf)
        # A Mistral context shorter than its positions is its sliding window's: a run past it is told.
        windowed = model_type == "mistral" and model["block_size"] < hf["max_position_embeddings"]
        return {"model": model, "training": {}, **({"sliding_window": model["block_size"]} if windowed else {})}
    missing = [key for key in HF_SHAPE_KEYS if key not in hf]
    if missing:
        raise ConfigError(f"--init_from_model hf:{path}: config.json has no {', '.join(missing)}: not a GPT-2 "
                          "config (transformers' GPT2Config writes them all)")
    not_whole = [f"{key} {hf[key]!r}" for key in HF_SHAPE_KEYS if type(hf[key]) is not int]
    if not_whole:
        raise ConfigError(f"--init_from_model hf:{path}: config.json has {', '.join(not_whole)}: each must be a "
                          "whole number")
    activation = hf.get("activation_function", "gelu_new")
    eps = hf.get("layer_norm_epsilon", 1e-5)  # GPT2Config's default
    # (reorder_and_upcast_attn is accepted: it computes the same scores, in float32 only.)
    wrong = [f"{key} {hf.get(key)!r} (mypt: {want})" for key, ok, want in (
        ("activation_function", isinstance(activation, str) and activation in GELU_FROM_HF,
         "gelu_new, gelu_pytorch_tanh or gelu"),
        ("n_inner", hf.get("n_inner") is None or (type(hf.get("n_inner")) is int and hf["n_inner"] > 0),
         "a whole number"),
        ("tie_word_embeddings", isinstance(hf.get("tie_word_embeddings", True), bool), "true or false"),
        ("layer_norm_epsilon", _norm_eps_ok(eps), EPS_WANTED),
        ("scale_attn_weights", hf.get("scale_attn_weights", True) is True, "true: scores scaled by 1/sqrt(head size)"),
        ("scale_attn_by_inverse_layer_idx", not hf.get("scale_attn_by_inverse_layer_idx", False), "false")) if not ok]
    if wrong:
        raise ConfigError(f"--init_from_model hf:{path}: config.json: mypt cannot express {', '.join(wrong)}")
    model = {"vocab_size": hf["vocab_size"], "block_size": hf["n_positions"], "n_layer": hf["n_layer"],
             "n_head": hf["n_head"], "n_embd": hf["n_embd"], "dropout": 0.0, "bias": True,
             "gelu": GELU_FROM_HF[activation], "mlp_width": hf.get("n_inner"), "norm_eps": float(eps),
             "tie_embeddings": hf.get("tie_word_embeddings", True)}
    return {"model": model, "training": {}}


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and 0 < x < float("inf")


# A norm epsilon mypt's norm_eps takes (checked here too, to name the config.json key).
EPS_WANTED = f"a number above 0, at most {MAX_NORM_EPS}"


def _norm_eps_ok(x) -> bool:
    return _positive(x) and x <= MAX_NORM_EPS


def hf_rope(hf: dict) -> tuple[object, dict[str, tuple[object, object]]]:
    """RoPE's base, and {key: (type, parameters)} of the keys that hold RoPE's type: transformers
    5 writes rope_parameters (the base in it too), 4 the base at the top level and any scaling in
    rope_scaling (whose type older configs call `type`). mypt's exports write both."""
    params, scaling, found = hf.get("rope_parameters"), hf.get("rope_scaling"), {}
    theta = hf.get("rope_theta", 10000.0)
    if isinstance(params, dict):
        theta = params.get("rope_theta", theta)
        found["rope_parameters"] = (params.get("rope_type", params.get("type", "default")), params)
    elif params is not None:
        found["rope_parameters"] = (params, params)
    if scaling is not None:
        found["rope_scaling"] = (scaling.get("rope_type", scaling.get("type")) if isinstance(scaling, dict)
                                 else scaling, scaling)
    return theta, found


def _rope_scaling_setting(kind, params) -> tuple[bool, str | None]:
    """(whether mypt can express it, mypt's rope_scaling) of a config's RoPE type and parameters:
    unscaled (None), or Llama 3's scaling with sound numbers."""
    from mypt.config import ROPE_SCALING_KEYS, rope_scaling_from_object

    if kind == "default":
        return True, None
    if kind != "llama3" or not isinstance(params, dict) or not all(_positive(params.get(k))
                                                                   for k in ROPE_SCALING_KEYS):
        return False, None  # (numbers as numbers: transformers fails on "8")
    try:
        return True, rope_scaling_from_object({"rope_type": "llama3", **{k: params[k] for k in ROPE_SCALING_KEYS}})
    except ConfigError:
        return False, None


def _llama_model_settings(path: Path, hf: dict) -> dict:
    """mypt's model settings of a Llama, Mistral, Qwen2 or Qwen3 config.json; what mypt cannot
    express is refused."""
    where = f"--init_from_model hf:{path}: config.json"
    bad = [f"{key} {hf[key]!r}" if key in hf else f"no {key}" for key in LLAMA_SHAPE_KEYS
           if type(hf.get(key)) is not int]
    if bad:
        raise ConfigError(f"{where} has {', '.join(bad)}: each must be a whole number")
    n_embd, n_head = hf["hidden_size"], hf["num_attention_heads"]
    defaults = LLAMA_DEFAULTS[hf["model_type"]]
    get = lambda key: hf.get(key, defaults.get(key))  # noqa: E731 (transformers' default where unset)
    kv = get("num_key_value_heads")
    kv = n_head if kv is None else kv
    head_dim = get("head_dim")
    act = hf.get("hidden_act", "silu")
    act = ACT_ALIASES.get(act, act) if isinstance(act, str) else act
    theta, ropes = hf_rope(hf)
    scalings = {key: _rope_scaling_setting(kind, params) for key, (kind, params) in ropes.items()}
    scaling = next((setting for _, setting in scalings.values()), None)  # rope_parameters' first
    layer_types = hf.get("layer_types") or []
    # Mistral's window: token i attends to i - window + 1 .. i (transformers' mask), which is
    # full causal attention over any context up to the window (Qwen2's sliding_window acts only
    # with use_sliding_window, checked below).
    window = get("sliding_window") if hf["model_type"] == "mistral" else None
    shown = lambda key: theta if key == "rope_theta" else get(key)  # noqa: E731 (the base wherever it is)
    params = hf.get("rope_parameters")
    given = lambda key: key in hf or key == "rope_theta" and isinstance(params, dict) and key in params  # noqa: E731
    wrong = [f"{key} {shown(key)!r}{'' if given(key) else ' (unset: transformers default)'} (mypt: {want})"
             for key, ok, want in (
        ("tie_word_embeddings", isinstance(get("tie_word_embeddings"), bool), "true or false"),
        *[(key, ok and setting == scaling, "rope_type default, or llama3 with factor, low_freq_factor, "
                                           "high_freq_factor and original_max_position_embeddings"
                                           + ("; the same in rope_parameters and rope_scaling" if ok else ""))
          for key, (ok, setting) in scalings.items()],
        ("use_sliding_window", hf["model_type"] not in USE_SLIDING_WINDOW_TYPES or not hf.get("use_sliding_window"),
         "false"),
        ("sliding_window", window is None or type(window) is int and window > 0, "null or a whole number above 0"),
        ("layer_types", isinstance(layer_types, list) and all(t == "full_attention" for t in layer_types),
         "full_attention in every layer"),
        ("hidden_act", isinstance(act, str) and act in MLP_FROM_ACT,
         "silu (or swish, the same), or relu with gate_proj equal to up_proj (mypt's squared ReLU)"),
        ("rms_norm_eps", _norm_eps_ok(get("rms_norm_eps")), EPS_WANTED),
        # (attention_bias true: qkv_bias, if every o_proj.bias is zeros, as mypt's exports write;
        # checked only where transformers reads it: a key it ignores is no model's setting)
        ("attention_bias", "attention_bias" not in ATTENTION_BIASES[hf["model_type"]]
         or isinstance(hf.get("attention_bias", False), bool), "true or false"),
        ("mlp_bias", hf["model_type"] not in MLP_BIAS_TYPES or not hf.get("mlp_bias"), "false"),
        ("num_attention_heads", n_head > 0 and (head_dim is not None or n_embd % n_head == 0),
         f"a divisor of hidden_size {n_embd}, or head_dim set"),
        ("num_key_value_heads", type(kv) is int and kv > 0 and n_head % kv == 0,
         f"a divisor of num_attention_heads {n_head}"),
        ("head_dim", head_dim is None or type(head_dim) is int and head_dim > 0 and head_dim % 2 == 0,
         "an even whole number (rotary positions turn pairs)"),
        ("intermediate_size", hf["intermediate_size"] > 0, "a whole number above 0"),
        ("rope_theta", isinstance(theta, (int, float)) and theta > 1, "a number above 1")) if not ok]
    # RoPE's base in both places, and two numbers: transformers 5 reads rope_parameters', 4.57 the
    # top level's, so the same directory computed other logits by the version that loaded it.
    inner = params.get("rope_theta") if isinstance(params, dict) else None
    if "rope_theta" in hf and inner is not None and hf["rope_theta"] != inner:
        wrong.append(f"rope_theta {hf['rope_theta']!r} with rope_parameters' rope_theta {inner!r} (mypt: the same "
                     "base in both: transformers 4 reads the first, 5 the second)")
    if wrong:
        raise ConfigError(f"{where}: mypt cannot express {', '.join(wrong)}")
    context = hf["max_position_embeddings"] if window is None else min(window, hf["max_position_embeddings"])
    return {"vocab_size": hf["vocab_size"], "block_size": context,
            "n_layer": hf["num_hidden_layers"], "n_head": n_head, "n_embd": n_embd, "dropout": 0.0, "bias": False,
            "position": "rope", "rope_theta": float(theta), "norm": "rmsnorm",
            "mlp": MLP_FROM_ACT[act],
            "n_kv_head": kv if kv != n_head else None, "qk_norm": hf["model_type"] == "qwen3",
            "qkv_bias": attention_biases(hf)[0],
            "norm_eps": float(get("rms_norm_eps")), "rope_scaling": scaling, "head_size": head_dim,
            "mlp_width": hf["intermediate_size"], "tie_embeddings": get("tie_word_embeddings")}


def shares_gate(cfg, name: str) -> bool:
    """Whether mypt's tensor `name` is both gate_proj and up_proj of a Llama (a relu2 model's
    c_fc: see MLP_FROM_ACT), not the two stacked (swiglu's), for the import and the export."""
    return cfg.mlp == "relu2" and name.endswith("mlp.c_fc.weight")


def llama_names(cfg) -> list[tuple[str, list[str]]]:
    """(mypt name, Llama/Qwen names) of every weight (the head only when untied): the mypt
    tensor is the Llama tensors stacked along dim 0 (c_attn = [q | k | v], c_fc = [gate | up]);
    the same layout in both (out, in), as both are nn.Linear. Qwen2's biases likewise."""
    names = [("transformer.wte.weight", ["model.embed_tokens.weight"]),
             ("transformer.ln_f.weight", ["model.norm.weight"])]
    if not cfg.tie_embeddings:
        names.append(("lm_head.weight", ["lm_head.weight"]))
    for i in range(cfg.n_layer):
        ours, theirs = f"transformer.h.{i}.", f"model.layers.{i}."
        names += [(ours + "ln_1.weight", [theirs + "input_layernorm.weight"]),
                  (ours + "attn.c_attn.weight", [theirs + f"self_attn.{x}_proj.weight" for x in "qkv"]),
                  (ours + "attn.c_proj.weight", [theirs + "self_attn.o_proj.weight"]),
                  (ours + "ln_2.weight", [theirs + "post_attention_layernorm.weight"]),
                  (ours + "mlp.c_fc.weight", [theirs + "mlp.gate_proj.weight", theirs + "mlp.up_proj.weight"]),
                  (ours + "mlp.c_proj.weight", [theirs + "mlp.down_proj.weight"])]
        if cfg.qk_norm:
            names += [(ours + f"attn.{x}_norm.weight", [theirs + f"self_attn.{x}_norm.weight"]) for x in "qk"]
        if cfg.qkv_bias:
            names.append((ours + "attn.c_attn.bias", [theirs + f"self_attn.{x}_proj.bias" for x in "qkv"]))
    return names


def _llama_state(weights: dict[str, torch.Tensor], cfg, source: Path, o_bias: bool) -> dict[str, torch.Tensor]:
    """mypt's names of a Llama or Qwen state dict (shapes are checked by the caller); `o_bias`:
    whether transformers' model has o_proj biases (attention_biases). Tensors it has no place for
    (biases of a Mistral) it drops, and so does mypt."""
    from mypt.errors import CheckpointError

    state = {}
    for ours, theirs in llama_names(cfg):
        missing = [name for name in theirs if name not in weights]
        if missing:
            raise CheckpointError(f"{source} has no {missing[0]}")
        if shares_gate(cfg, ours):
            gate, up = (weights[name] for name in theirs)
            if not torch.equal(gate, up):
                raise CheckpointError(f"{source}: {theirs[0]} differs from {theirs[1]}, and config.json says "
                                      "hidden_act relu: a ReLU-gated MLP (ReGLU), which mypt has not; mypt reads "
                                      "relu with the two equal, its squared-ReLU MLP")
            state[ours] = gate.float()
            continue
        state[ours] = torch.cat([weights[name].float() for name in theirs])
    for name, t in weights.items():  # (mypt's qkv_bias has no output projection's bias: zeros only)
        if o_bias and name.endswith("self_attn.o_proj.bias") and t.any():
            raise CheckpointError(f"{source}: {name} is not zeros: mypt has a bias on the attention's output "
                                  "projection only with biases on every layer (--bias), which this model has not")
    return state


def _unused_tensors(loaded: dict[str, torch.Tensor], cfg, hf: dict, params) -> list[str]:
    """The tensors of a transformers file that the import neither reads nor checks, nor are
    UNUSED_BUFFERS. A Llama or Qwen file's read ones are llama_names', the head (checked against
    a tied embedding), o_proj's biases where checked to be zeros, and the biases transformers'
    class of the model_type has no place for (ATTENTION_BIASES: Mistral's, Qwen2's o_proj's),
    which transformers drops and so does mypt. A GPT-2 file's are mypt's names (with or without
    `transformer.`) and the head."""
    if cfg.position != "rope":
        read = {name.removeprefix("transformer.") for name in params} | {"lm_head.weight"}
        return [name for name in loaded
                if name.removeprefix("transformer.") not in read and not UNUSED_BUFFERS.fullmatch(name)]
    read = {name for _, theirs in llama_names(cfg) for name in theirs} | {"lm_head.weight"}
    qkv, o = ATTENTION_BIASES[hf["model_type"]]
    drops = {"q": qkv is False, "k": qkv is False, "v": qkv is False, "o": o is False or attention_biases(hf)[1]}
    read |= {f"model.layers.{i}.self_attn.{x}_proj.bias" for i in range(cfg.n_layer) for x, ok in drops.items() if ok}
    return [name for name in loaded if name not in read and not UNUSED_BUFFERS.fullmatch(name)]


def _gpt2_state(weights: dict[str, torch.Tensor], names, source: Path) -> dict[str, torch.Tensor]:
    """mypt's names of a GPT-2 state dict: Conv1D weights transposed to nn.Linear's."""
    from mypt.errors import CheckpointError

    weights = {k.removeprefix("transformer."): v for k, v in weights.items()}
    state = {}
    for name in names:
        key = name.removeprefix("transformer.")
        if key not in weights:
            raise CheckpointError(f"{source} has no {key}")
        t = weights[key].float()
        if name.endswith(".weight") and any(f".{layer}." in f".{name}" for layer in LINEAR_LAYERS) and t.dim() == 2:
            t = t.t()
        state[name] = t
    return state


def load_hf_weights(path: Path) -> tuple[dict[str, torch.Tensor], Path]:
    """(weights, the file that names them) of a transformers directory: model.safetensors, or the
    shards its model.safetensors.index.json lists (what save_pretrained writes above its
    max_shard_size). Safetensors only: a pickle (pytorch_model.bin) can run code when loaded."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from mypt.errors import CheckpointError
    from mypt.model import check_finite

    single, index = path / "model.safetensors", path / "model.safetensors.index.json"
    weight_map: dict = {}
    if single.is_file():
        files, source = [single], single
    elif index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise CheckpointError(f"{index}: no readable weight_map ({type(e).__name__}: {e}); save the model again "
                                  "with save_pretrained(..., safe_serialization=True)") from None
        names = list(weight_map.values()) if isinstance(weight_map, dict) else [weight_map]
        bad = [n for n in names if not isinstance(n, str) or Path(n).name != n or n in ("", ".", "..")
               or not n.endswith(".safetensors")]
        if bad or not isinstance(weight_map, dict):
            bad = bad or [weight_map]
            raise CheckpointError(f"{index}: weight_map names {bad[0]!r}, not a .safetensors file beside it; save the "
                                  "model again with save_pretrained(..., safe_serialization=True)")
        files, source = [path / n for n in sorted(set(names))], index
    else:
        raise CheckpointError(f"no model.safetensors or model.safetensors.index.json in {path} (save it with "
                              "save_pretrained(..., safe_serialization=True); pickles are refused)")
    weights: dict[str, torch.Tensor] = {}
    for file in files:
        if not file.is_file():
            raise CheckpointError(f"{index}: lists the shard {file.name}, which is not in {path}; copy the whole "
                                  "directory save_pretrained wrote")
        try:
            loaded = load_file(file)
        except (SafetensorError, OSError) as e:
            raise CheckpointError(f"{file} is not a readable safetensors file ({e}); save the model again with "
                                  "save_pretrained(..., safe_serialization=True)") from None
        quantized = [f"{name} {str(t.dtype).removeprefix('torch.')}" for name, t in loaded.items()
                     if t.dtype not in WEIGHT_DTYPES and not UNUSED_BUFFERS.fullmatch(name)]
        if quantized:
            raise CheckpointError(f"{file}: {listed(quantized, 3)}: not float weights (mypt reads float16, bfloat16, "
                                  "float32 or float64): a quantized checkpoint's values need scales mypt does not "
                                  "apply; give the model's unquantized weights")
        check_finite(loaded, f"{file}")
        weights.update(loaded)
    missing = [name for name in weight_map if name not in weights]
    if missing:
        raise CheckpointError(f"{index}: lists {missing[0]} in {weight_map[missing[0]]}, which does not hold it; copy "
                              "the whole directory save_pretrained wrote")
    return weights, source


def import_hf(path: Path, device: str | torch.device = "cpu", config: dict | None = None):
    """(mypt GPT, tokenizer, config) of a GPT-2, Llama, Qwen2 or Qwen3 transformers directory
    (what `save_pretrained` writes, or a local copy of the gpt2 weights). `config`: its
    read_hf_config, where the caller has it."""
    from mypt.config import GPTConfig
    from mypt.errors import CheckpointError
    from mypt.model import holding, on_meta

    # CheckpointErrors name the file, not the flag: the training command adds
    # `--init_from_model hf:DIR: ` to them (its ConfigErrors, from read_hf_config, name it).
    path = Path(path)
    config = read_hf_config(path) if config is None else config
    # rows: the file's embedding rows (a padded vocabulary has more than ids); the caller's config keeps them.
    hf, rows = config["hf"], config["model"]["vocab_size"]
    tokenizer = _hf_tokenizer(path, rows)
    config = {**config, "model": {**config["model"], "vocab_size": tokenizer.vocab_size}}
    cfg = GPTConfig.from_dict(config["model"], f"{path}/config.json")
    loaded, source = load_hf_weights(path)
    # A tied head is the embedding (one tensor, lm_head.weight in mypt's state dict).
    model = on_meta(cfg)
    params = {name: p for name, p in model.state_dict().items() if name != "lm_head.weight" or not cfg.tie_embeddings}
    unused = _unused_tensors(loaded, cfg, hf, params)
    if unused:
        raise CheckpointError(f"{source}: holds {listed(unused, 3)}, which the model has no place for: mypt imports "
                              "the weights of a float model only (a quantized one's scales, such as weight_scale or "
                              "SCB, are such tensors); give the model's unquantized weights, of its own layers")
    if not cfg.tie_embeddings and "lm_head.weight" not in loaded:
        raise CheckpointError(f"{source} has no lm_head.weight: {_untied_why(hf)}, so the head is a tensor of its "
                              "own; if it is the embedding (a tied model's file has no lm_head.weight), set "
                              "\"tie_word_embeddings\": true in config.json")
    state = _llama_state(loaded, cfg, source, attention_biases(hf)[1]) if cfg.position == "rope" \
        else _gpt2_state(loaded, params, source)
    head, embedding = loaded.get("lm_head.weight"), state["transformer.wte.weight"]
    if cfg.tie_embeddings and head is not None and (head.shape != embedding.shape
                                                    or not torch.equal(head.float(), embedding.float())):
        # config.json says tied: transformers would drop this tensor and compute other logits than
        # its author's; mypt refuses it.
        raise CheckpointError(f"{source}: lm_head.weight differs from the embedding, and config.json says they are "
                              "tied (tie_word_embeddings): set it false if the head is its own")
    file_names = dict(llama_names(cfg)) if cfg.position == "rope" else {}
    for name, param in params.items():
        t = state[name]
        # What config.json says, in its own numbers: a table of vocab_size rows (mypt pads it below).
        want = (rows, *param.shape[1:]) if name in VOCAB_ROWS else tuple(param.shape)
        if tuple(t.shape) != want:  # (named as the file names it; q, k and v stacked as mypt holds them)
            key = " + ".join(file_names.get(name, [name.removeprefix("transformer.")]))
            rows_wrong = name in VOCAB_ROWS and t.dim() == 2 and t.shape[0] != rows
            raise CheckpointError(f"{source}: {key} has shape {tuple(t.shape)}, config.json says {want}"
                                  + (f" (its vocab_size {rows}): give the config.json saved with these weights, "
                                     f"or set vocab_size to their {t.shape[0]} rows" if rows_wrong else ""))
        if name in VOCAB_ROWS:
            # The rows of the tokenizer's ids, padded to mypt's multiple of 64 (no logits for those ids).
            t = torch.cat([t[:cfg.vocab_size], torch.zeros(param.shape[0] - cfg.vocab_size, t.shape[1])])
        state[name] = t.contiguous()
    return holding(model, state, f"{source}").to(device), tokenizer, config


def _untied_why(hf: dict) -> str:
    """The config.json key and value that make a model's head its own (untied), for a message."""
    if "tie_word_embeddings" in hf:
        return f"config.json says tie_word_embeddings {json.dumps(hf['tie_word_embeddings'])}"
    return (f"config.json has no tie_word_embeddings, which for model_type {hf['model_type']} is false "
            "(transformers' default)")


def hf_model_tokenizer(path: Path, flag: str) -> Tokenizer:
    """The tokenizer `--init_from_model hf:DIR` trains DIR's model with, for `flag` (prepare-dataset's
    --tokenizer_from DIR: the data the model will train on)."""
    path = Path(path)
    hf = _config_json(path, f"{flag} {path}", ", and no tokenizer_state.json")
    vocab = hf.get("vocab_size") if isinstance(hf, dict) and not is_mypt_config(hf) else None
    if type(vocab) is not int:  # (a mypt checkpoint without its tokenizer: Tokenizer.load says so)
        return Tokenizer.load(path)
    return _hf_tokenizer(path, vocab, f"{flag} {path}")


def _hf_tokenizer(path: Path, vocab_size: int, where: str | None = None) -> Tokenizer:
    """The model's tokenizer: a mypt export's tokenizer_state.json (unless its tokenizer.json
    changed since: stale_tokenizer_state); else the directory's
    tokenizer.json, as a Hub model has it (SmolLM2, a Llama of one's own), which
    `--tokenization hf:DIR/tokenizer.json` prepares datasets with, unless it is GPT-2's own
    (a GPT-2 vocabulary encoding as tiktoken does): GPT-2's, as for a directory with no
    tokenizer and a GPT-2 vocabulary (a copy of the gpt2 weights), so `--tokenization gpt2`
    datasets train it."""
    from mypt.tokenizers.gpt2 import GPT2_VOCAB_SIZE, GPT2Tokenizer
    from mypt.tokenizers.hf import HFTokenizer

    where = where or f"--init_from_model hf:{path}"
    # A mypt export whose tokenizer.json changed since is read as any directory: its
    # tokenizer.json, whatever mypt tokenizer it was exported from. Those files encode as
    # mypt's char and gpt2 do (the export's tests check the ids), so the changed file is that
    # tokenizer with the user's changes (tokens added in transformers, whose rows
    # resize_token_embeddings added): the model's tokenizer now, and refusing it would leave
    # that model no way back into mypt. An unchanged GPT-2 size still comes back as gpt2
    # (_encodes_as_gpt2); a char export becomes an hf tokenizer of the same ids.
    if (path / "tokenizer_state.json").is_file() and not stale_tokenizer_state(path):  # a mypt export
        tokenizer = Tokenizer.load(path)
    elif (path / "tokenizer.json").is_file():
        tokenizer = HFTokenizer.from_file(path / "tokenizer.json", f"{where}: {path / 'tokenizer.json'}")
        if tokenizer.vocab_size == GPT2_VOCAB_SIZE and _encodes_as_gpt2(tokenizer):  # (rows padded or not)
            tokenizer = GPT2Tokenizer()
    elif vocab_size == GPT2_VOCAB_SIZE:
        tokenizer = GPT2Tokenizer()
    else:
        raise ConfigError(f"{where}: vocabulary of {vocab_size} with no tokenizer: the directory has neither a "
                          "tokenizer.json nor mypt's tokenizer_state.json; copy the model's tokenizer.json into it")
    # More rows than ids is padding (Qwen2.5's 151,936 for 151,665 ids, Phi-3's 32,064 for 32,011):
    # those rows no id reaches are left out. More than that is another model's tokenizer.
    if not 0 <= vocab_size - tokenizer.vocab_size <= max(PADDING_ROWS, vocab_size // 100):
        raise ConfigError(f"{where}: the tokenizer has {tokenizer.vocab_size} ids, the model's config.json "
                          f"vocab_size {vocab_size}: not this model's tokenizer (mypt needs one row of the embedding "
                          f"per id, and takes at most {max(PADDING_ROWS, vocab_size // 100)} rows more as padding); "
                          "copy the model's own tokenizer.json into the directory")
    return tokenizer


def stale_tokenizer_state(path: Path) -> bool:
    """Whether the tokenizer_state.json of `path`, a `mypt export-hf` directory, is no longer
    its model's tokenizer: its tokenizer.json differs from what the export wrote (the sha256
    in mypt_export.json), e.g. a user added tokens in transformers and saved the tokenizer and
    the resized model over the export (tokenizer.json and config.json then had 302 ids, and
    the 300 of tokenizer_state.json left the 2 new rows out as "padding no id reaches"). An
    export with no recorded sum (written before mypt recorded them, or its record damaged)
    cannot tell: not stale, as before; a removed tokenizer.json changed nothing mypt reads."""
    path = Path(path)
    try:
        recorded = json.loads((path / EXPORT_RECORD).read_text(encoding="utf-8"))["sha256"]["tokenizer.json"]
    except (OSError, ValueError, UnicodeDecodeError, KeyError, TypeError):
        return False
    tokenizer_json = path / "tokenizer.json"
    return isinstance(recorded, str) and tokenizer_json.is_file() and sha256_file(tokenizer_json) != recorded


# Text whose ids tell GPT-2's byte-level BPE from another tokenizer of the same size.
_GPT2_PROBE = "Hello wörld! Ελληνικά, 日本語 😀\n  def f(x): return x**2  # we'll see, I'M sure\r\n"


def _encodes_as_gpt2(tokenizer) -> bool:
    """Whether a tokenizer.json is GPT-2's own (its ids are tiktoken's r50k_base ids)."""
    from mypt.errors import MyptError
    from mypt.tokenizers.gpt2 import GPT2Tokenizer

    try:
        return list(tokenizer.encode(_GPT2_PROBE)) == list(GPT2Tokenizer().encode(_GPT2_PROBE))
    except MyptError:  # GPT-2's vocabulary not installed here: the file is taken as it is
        return False
