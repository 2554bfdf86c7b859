"""`mypt train --init_from_model hf:DIR`: a GPT-2-format Hugging Face transformers directory
(what `save_pretrained` writes, or a local copy of the gpt2 weights) as a mypt GPT.

Needs only safetensors, not transformers. The export (mypt.hf_export) is apart, so that
training does not depend on its code."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from mypt.errors import ConfigError
from mypt.tokenizers import Tokenizer

# transformers' GPT-2 holds these layers as Conv1D, whose weights are the transpose of nn.Linear's.
LINEAR_LAYERS = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
# transformers' activation_function -> mypt's gelu setting (the export's inverse: hf_export.HF_GELU).
GELU_FROM_HF = {"gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "gelu": "exact"}

HF_PREFIX = "hf:"


def hf_dir(spec: str | None) -> Path | None:
    """The directory of an `hf:DIR` model spec, else None."""
    return Path(spec[len(HF_PREFIX):]) if isinstance(spec, str) and spec.startswith(HF_PREFIX) else None


# The keys of a GPT-2 config.json that give the model's shape (the rest have defaults).
HF_SHAPE_KEYS = ("vocab_size", "n_positions", "n_layer", "n_head", "n_embd")


def read_hf_config(path: Path) -> dict:
    """A GPT-2-format transformers directory's config as mypt's {"model": ..., "training": {}}."""
    path = Path(path)
    try:
        hf = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ConfigError(f"--init_from_model hf:{path}: no readable config.json ({e})") from None
    if not isinstance(hf, dict):
        raise ConfigError(f"--init_from_model hf:{path}: config.json holds {json.dumps(hf)[:40]}, not a JSON "
                          "object (a transformers config)")
    missing = [key for key in HF_SHAPE_KEYS if key not in hf]
    if missing:
        raise ConfigError(f"--init_from_model hf:{path}: config.json has no {', '.join(missing)}: not a GPT-2 "
                          "config (transformers' GPT2Config writes them all)")
    not_whole = [f"{key} {hf[key]!r}" for key in HF_SHAPE_KEYS if type(hf[key]) is not int]
    if not_whole:
        raise ConfigError(f"--init_from_model hf:{path}: config.json has {', '.join(not_whole)}: each must be a "
                          "whole number")
    activation = hf.get("activation_function", "gelu_new")
    n_embd = hf["n_embd"]
    wrong = [f"{key} {hf.get(key)!r}" for key, ok in (
        ("model_type", hf.get("model_type") == "gpt2"),
        ("activation_function", isinstance(activation, str) and activation in GELU_FROM_HF),
        ("n_inner", hf.get("n_inner") in (None, 4 * n_embd))) if not ok]
    if wrong:
        raise ConfigError(f"--init_from_model hf:{path}: mypt imports GPT-2-architecture models (model_type gpt2, "
                          f"activation_function gelu_new, gelu_pytorch_tanh or gelu, n_inner 4 x n_embd); this "
                          f"one has {', '.join(wrong)}")
    model = {"vocab_size": hf["vocab_size"], "block_size": hf["n_positions"], "n_layer": hf["n_layer"],
             "n_head": hf["n_head"], "n_embd": hf["n_embd"], "dropout": 0.0, "bias": True,
             "gelu": GELU_FROM_HF[activation]}
    return {"model": model, "training": {}}


def import_hf(path: Path, device: str | torch.device = "cpu"):
    """(mypt GPT, tokenizer, config) of a GPT-2-format transformers directory (what
    `save_pretrained` writes, or a local copy of the gpt2 weights)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from mypt.config import GPTConfig
    from mypt.errors import CheckpointError
    from mypt.model import GPT, check_finite
    from mypt.tokenizers.gpt2 import GPT2_VOCAB_SIZE, GPT2Tokenizer

    # CheckpointErrors name the file, not the flag: the training command adds
    # `--init_from_model hf:DIR: ` to them (its ConfigErrors, from read_hf_config, name it).
    path = Path(path)
    config = read_hf_config(path)
    cfg = GPTConfig.from_dict(config["model"], f"{path}/config.json")
    if not (path / "model.safetensors").is_file():
        raise CheckpointError(f"no model.safetensors in {path} (save it with "
                              "save_pretrained(..., safe_serialization=True); pickles are refused)")
    try:
        loaded = load_file(path / "model.safetensors")
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path / 'model.safetensors'} is not a readable safetensors file "
                              f"({e}); save the model again with save_pretrained(..., safe_serialization=True)") from None
    weights = {k.removeprefix("transformer."): v for k, v in loaded.items()}
    check_finite(weights, f"{path / 'model.safetensors'}")
    model = GPT(cfg)
    state = {}
    for name, param in model.state_dict().items():
        if name == "lm_head.weight":
            continue
        key = name.removeprefix("transformer.")
        if key not in weights:
            raise CheckpointError(f"{path / 'model.safetensors'} has no {key}")
        t = weights[key].float()
        if name.endswith(".weight") and any(f".{layer}." in f".{name}" for layer in LINEAR_LAYERS) and t.dim() == 2:
            t = t.t()
        if name == "transformer.wte.weight" and t.dim() == 2 and t.shape[0] == cfg.vocab_size:
            # Pad to mypt's multiple-of-64 vocabulary (no logits for those ids); another shape is refused below.
            t = torch.cat([t, torch.zeros(param.shape[0] - t.shape[0], t.shape[1])])
        if t.shape != param.shape:
            raise CheckpointError(f"{path / 'model.safetensors'}: {key} has shape {tuple(t.shape)}, config.json "
                                  f"says {tuple(param.shape)}")
        state[name] = t.contiguous()
    model.load_state_dict(state, strict=False)
    if (path / "tokenizer_state.json").is_file():  # a mypt export
        tokenizer = Tokenizer.load(path)
    elif cfg.vocab_size == GPT2_VOCAB_SIZE:
        tokenizer = GPT2Tokenizer()
    else:
        raise ConfigError(f"--init_from_model hf:{path}: vocabulary of {cfg.vocab_size} with no tokenizer_state.json; "
                          "mypt imports GPT-2-vocabulary models or its own exports")
    if tokenizer.vocab_size != cfg.vocab_size:
        raise ConfigError(f"--init_from_model hf:{path}: the tokenizer has {tokenizer.vocab_size} ids, the model "
                          f"{cfg.vocab_size}")
    return model.to(device), tokenizer, config
