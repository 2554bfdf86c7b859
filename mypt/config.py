"""Every setting of a training run, and the presets.

- `GPTConfig`: the model's shape (a model option is a field here plus the model code);
- `TrainConfig`: the training settings;
- `RunSettings`: the run's other flags (data, checkpoints, resume);
- `EvalSettings`, `GenerateSettings`, `ExportSettings`: `mypt eval` (and the eval stage),
  `mypt generate`, `mypt export-hf`.

Each field is one `setting()` (default, check, help); `mypt train`'s flags, the train
stage's, params.yaml's train/adapt keys and config files all follow from the fields. A
config file is JSON {"model": {...}, "training": {...}}; presets ship in mypt/configs/.
This module imports no torch, so commands build their options without it.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Callable

from mypt.errors import ConfigError
from mypt.io import read_json
from mypt.loggers import DEFAULT as LOGGER_DEFAULT, logger_help, parse_loggers
from mypt.settings import Settings, SettingError, device_setting, seed_setting, setting
from mypt.tokenizers import check_spec, spec_forms, spec_help

VOCAB_MULTIPLE = 64  # a padded vocabulary (50257 -> 50304) makes the head matmul faster on GPU (README)


def plain_name(name: str) -> str:
    """A --model_name that training writes to: one path component, so CHECKPOINTS_DIR/NAME can
    never be the checkpoints directory itself, a parent, or a path elsewhere (a checkpoint save
    replaces that directory whole)."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or name.startswith("."):
        raise ConfigError(f"--model_name {name!r}: must be a plain name like base or my_model (no path, not "
                          "starting with '.'); use --checkpoints_dir to choose where checkpoints go")
    return utf8_path("--model_name")(name)


def utf8_path(flag: str) -> Callable[[Any], Any]:
    """The check of a flag naming where weights are read or written (a checkpoint, an export):
    safetensors opens only UTF-8 paths, so a checkpoint saved under a name of other bytes
    (`$'m\\xff'`) could never be read again, and an export there failed half-way."""
    def check(value):
        try:
            os.fspath(value).encode("utf-8")
        except UnicodeEncodeError:  # (a byte that is not UTF-8 reaches Python as a lone surrogate)
            raise ConfigError(f"{flag} {os.fsencode(value)!r}: not valid UTF-8, which safetensors (the weights' "
                              f"format) needs in a path: choose a {flag} of UTF-8 characters") from None
        return value
    return check


MIN_TEMPERATURE, MAX_TEMPERATURE = 1e-6, 1e6


def check_temperature(value) -> float:
    """A sampling temperature: 0 (greedy) or from MIN_TEMPERATURE to MAX_TEMPERATURE. Sampling
    divides the float32 logits by it: below float32's range (1e-39) every logit overflows to inf
    and the softmax gives NaN; from 1e-6 on a logit up to 1e32 still fits, and so cold a softmax
    already picks the most likely token. Past float32's largest (3e38) every logit became 0, and
    --top_k 1 sampled the whole vocabulary; at 1e6 logits 100 apart are equally likely to within
    1e-4: hotter samples nothing else. (NaN is left to the finite-number rule.)"""
    try:
        t = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{value!r} is not a number") from None
    if t < 0 or 0 < t < MIN_TEMPERATURE or t > MAX_TEMPERATURE:
        raise ConfigError(f"{value} must be 0 (greedy) or from {MIN_TEMPERATURE:g} to {MAX_TEMPERATURE:g} (at "
                          f"{MAX_TEMPERATURE:g} every token kept by --top_k and --top_p is as likely as another)")
    return t


def model_setting():
    """The `model_name` field of the commands that read a trained model."""
    return setting(None, "A name under --checkpoints_dir, or a checkpoint directory.", required=True,
                   check=utf8_path("--model_name"))


def checkpoints_setting():
    """The `checkpoints_dir` field of training and generation."""
    return setting(Path("checkpoints"), "Where checkpoints live: CHECKPOINTS_DIR/MODEL_NAME/.",
                   check=utf8_path("--checkpoints_dir"))


MAX_NORM_EPS = 0.1  # past a norm's mean square an epsilon flattens every activation
MAX_CONTEXT = 1 << 31  # an original context past any model's (and within a tensor's integers)
# Llama 3's RoPE scaling: Hugging Face's names of its numbers, in the order --rope_scaling writes them.
ROPE_SCALING_KEYS = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
NO_SCALING = "none"  # --rope_scaling's value for no scaling: a flag's way to clear a file's or a model's
ROPE_SCALING_FORM = ("llama3:" + ",".join(f"{k}=NUMBER" for k in ROPE_SCALING_KEYS)
                     + f" (or {NO_SCALING})")  # (what errors say to write)


def rope_scaling_params(text: str | None) -> dict | None:
    """--rope_scaling's text as {"rope_type": "llama3", "factor": ..., ...} (None: no scaling);
    ConfigError naming what is wrong. The numbers' rules are those that keep the rescaled
    frequencies positive and ordered: factor at least 1, 0 < low_freq_factor <= high_freq_factor,
    a whole original context of at least 1. Each text is parsed once (the model's every forward
    asks for its numbers); the caller gets its own dict."""
    if text is None:
        return None
    return dict(_parse_rope_scaling(str(text)))


@functools.lru_cache(maxsize=64)
def _parse_rope_scaling(text: str) -> dict:
    form = ROPE_SCALING_FORM
    kind, _, rest = text.partition(":")
    if kind != "llama3":
        raise ConfigError(f"{text!r}: only Llama 3's RoPE scaling is supported; write {form}")
    params: dict = {}
    for item in rest.split(","):
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or key not in ROPE_SCALING_KEYS or key in params:
            raise ConfigError(f"{text!r}: {item.strip()!r} is not one of {', '.join(ROPE_SCALING_KEYS)} given once as "
                              f"KEY=NUMBER; write {form}")
        try:
            params[key] = float(value)
        except ValueError:
            params[key] = math.nan
        if not math.isfinite(params[key]):
            raise ConfigError(f"{text!r}: {key} {value.strip()!r} is not a finite number") from None
    missing = [k for k in ROPE_SCALING_KEYS if k not in params]
    if missing:
        raise ConfigError(f"{text!r} has no {', '.join(missing)}; write {form}")
    original = params["original_max_position_embeddings"]
    if not (params["factor"] >= 1 and 0 < params["low_freq_factor"] <= params["high_freq_factor"]
            and 1 <= original <= MAX_CONTEXT and original == int(original)):
        shown = ", ".join(f"{k} {params[k]!r}" for k in ROPE_SCALING_KEYS)
        raise ConfigError(f"{text!r}: needs factor >= 1, 0 < low_freq_factor <= high_freq_factor, and a whole "
                          f"original_max_position_embeddings from 1 to {MAX_CONTEXT:,} (got {shown})")
    params["original_max_position_embeddings"] = int(original)
    return {"rope_type": "llama3", **params}


def rope_scaling_text(value) -> str:
    """The one spelling of a --rope_scaling (numbers as Python writes them, keys in their order),
    so a checkpoint's setting compares equal to the import that made it."""
    params = rope_scaling_params(value)
    return "llama3:" + ",".join(f"{k}={params[k]!r}" for k in ROPE_SCALING_KEYS)


def rope_scaling_from_object(value) -> str:
    """A scaling in Hugging Face's form ({"rope_type": "llama3", "factor": 8.0, ...}: a
    config.json's rope_scaling, pasted into a config file) as rope_scaling's text; any other
    JSON value is refused, showing both forms."""
    form = f"an object of rope_type llama3 and the numbers {', '.join(ROPE_SCALING_KEYS)}, or the text {ROPE_SCALING_FORM}"
    if not isinstance(value, dict):
        raise ConfigError(f"{value!r} ({type(value).__name__}): write {form}")
    kind = value.get("rope_type", value.get("type"))
    unknown = sorted(set(value) - {"rope_type", "type", *ROPE_SCALING_KEYS})
    missing = [k for k in ROPE_SCALING_KEYS if k not in value]
    not_numbers = [f"{k} {value[k]!r}" for k in ROPE_SCALING_KEYS
                   if k in value and (type(value[k]) not in (int, float) or not math.isfinite(value[k]))]
    why = (f"rope_type {kind!r}" if kind != "llama3" else f"key(s) {', '.join(unknown)}" if unknown
           else f"no {', '.join(missing)}" if missing else f"{', '.join(not_numbers)}: not numbers" if not_numbers
           else None)
    if why:
        raise ConfigError(f"{value!r}: {why}; write {form}")
    return rope_scaling_text("llama3:" + ",".join(f"{k}={value[k]!r}" for k in ROPE_SCALING_KEYS))


@dataclass
class GPTConfig(Settings):
    """The model's shape. A model option (a new attention or MLP variant) is a field here
    plus the model code: flags, params and config files follow from the field."""

    LABEL = "model setting"

    vocab_size: int = setting(50257, "The tokenizer's vocabulary; the embedding is padded to a multiple of 64.",
                              min=1)
    block_size: int = setting(256, "Context length in tokens (new models, and new runs from a model: learned "
                                        "positions keep their first rows).", min=1)
    n_layer: int = setting(12, "Transformer blocks (new models only).", min=1)
    n_head: int = setting(12, "Attention heads (new models only).", min=1)
    n_embd: int = setting(768, "Embedding width (new models only).", min=1)
    dropout: float = setting(0.0, "Dropout probability (also when resuming or starting from a model: it "
                                   "holds no weights).", min=0.0, max=1.0, max_open=True)
    bias: bool = setting(False, "Biases in Linear and LayerNorm layers (GPT-2 had them; without is a bit better "
                                "and faster; new models only).")
    gelu: str = setting("tanh", "The MLP's GELU (with --mlp gelu): tanh (GPT-2's approximation) or exact (the "
                                "erf form, as nanoGPT: faster on the CPU, the same on a GPU; new models only).",
                        choices=("tanh", "exact"), acts_with=("mlp", "gelu"))
    # The modern recipe's options (Llama, modded-nanogpt). The defaults are GPT-2's, so a
    # checkpoint or preset that names none of them means what it meant.
    position: str = setting("learned", "Positions: learned (GPT-2's table, one row per position) or rope "
                                       "(rotary, applied to queries and keys; new models only).",
                            choices=("learned", "rope"))
    rope_theta: float = setting(10000.0, "RoPE's base (with --position rope; new models, and new runs from a "
                                         "model). Above 1: the wavelengths grow from 2 pi to about 2 pi x base.",
                                min=1.0, min_open=True, acts_with=("position", "rope"))
    norm: str = setting("layernorm", "Normalization: layernorm (GPT-2) or rmsnorm (Llama; new models only).",
                        choices=("layernorm", "rmsnorm"))
    mlp: str = setting("gelu", "The MLP: gelu (GPT-2, 4 x n_embd wide), swiglu (Llama's gated MLP, about "
                               "8/3 x n_embd wide, rounded up to 64) or relu2 (squared ReLU, 4 x n_embd; "
                               "new models only).", choices=("gelu", "swiglu", "relu2"))
    n_kv_head: int | None = setting(None, "Key/value heads, for grouped-query attention: must divide n_head "
                                          "(default: n_head, plain multi-head attention; new models only).", min=1)
    qk_norm: bool = setting(False, "RMS-normalize queries and keys per head before attention (new models only).")
    head_size: int | None = setting(None, "Each attention head's width, Hugging Face's head_dim (default: n_embd / "
                                          "n_head; Qwen3-0.6B's heads are 128 wide at n_embd 1024 and 16 heads; new "
                                          "models only).", min=1)
    mlp_width: int | None = setting(None, "The MLP's hidden width (default: 4 x n_embd; with --mlp swiglu 8/3 x "
                                          "n_embd rounded up to 64, Llama's rule; new models only).", min=1)
    norm_eps: float = setting(1e-5, "The epsilon of every norm (LayerNorm, RMSNorm, the QK-norm): 1e-5 is GPT-2's "
                                    "and Llama's, 1e-6 Qwen's (new models only). At most 0.1: past a norm's "
                                    "mean square it flattens every activation.", min=0.0, min_open=True,
                                    max=MAX_NORM_EPS)
    qkv_bias: bool = setting(False, "Biases on the attention's query, key and value projections only (Qwen2); "
                                    "--bias puts them on every layer (new models only).")
    rope_scaling: str | None = setting(
        None, "RoPE's frequencies rescaled for a context longer than the model was first trained for, as Llama "
              "3.1 and 3.2 do (with --position rope; new models, and new runs from a model): "
              "llama3:factor=F,low_freq_factor=L,"
              "high_freq_factor=H,original_max_position_embeddings=N. Imported with such a model; none: "
              "no scaling (over a config file's or the model's).",
        check=rope_scaling_text, metavar="llama3:KEY=VALUE,...|none", acts_with=("position", "rope"),
        from_object=rope_scaling_from_object, none_text=NO_SCALING)
    tie_embeddings: bool = setting(True, "The output head shares the input embedding's weights (GPT-2, small "
                                         "Llamas); --no_tie_embeddings: a head of its own, as most Llamas have "
                                         "(new models only).")

    def __post_init__(self):
        super().__post_init__()
        # One spelling per architecture, so that a checkpoint compares equal to the settings that
        # build it: n_kv_head = n_head is plain multi-head attention, a model with learned
        # positions has no use for a RoPE base, nor one without a GELU MLP for a GELU form.
        if self.n_kv_head == self.n_head:
            object.__setattr__(self, "n_kv_head", None)
        if self.position == "learned":
            object.__setattr__(self, "rope_theta", type(self).__dataclass_fields__["rope_theta"].default)
        if self.mlp != "gelu":  # swiglu and relu2 have no GELU (a Llama import's would differ from its export's)
            object.__setattr__(self, "gelu", type(self).__dataclass_fields__["gelu"].default)
        if self.bias:  # biases everywhere include the queries', keys' and values'
            object.__setattr__(self, "qkv_bias", False)
        if self.position == "learned" or (self.rope_scaling and self.rope_scaling_params["factor"] == 1):
            object.__setattr__(self, "rope_scaling", None)  # (a factor of 1 scales nothing)
        if self.mlp_width == self.default_mlp_width:
            object.__setattr__(self, "mlp_width", None)
        if self.head_size is not None and self.head_size * self.n_head == self.n_embd:
            object.__setattr__(self, "head_size", None)
        if self.head_size is None and self.n_embd % self.n_head:
            raise SettingError(f"model setting n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}), "
                               "or give the heads' width as head_size", ("n_embd", "n_head"))
        if self.n_head % self.kv_heads:
            raise SettingError(f"model setting n_kv_head ({self.n_kv_head}) must divide n_head ({self.n_head})",
                               ("n_kv_head", "n_head"))
        if self.position == "rope" and self.head_dim % 2:
            raise SettingError(f"model setting position rope needs an even head size; "
                               f"{'head_size' if self.head_size else 'n_embd / n_head'} is {self.head_dim}",
                               ("position", "head_size") if self.head_size else ("position", "n_embd", "n_head"))

    @property
    def kv_heads(self) -> int:
        """Heads of keys and values: n_kv_head, or n_head when left out."""
        return self.n_kv_head if self.n_kv_head is not None else self.n_head

    @property
    def rope_scaling_params(self) -> dict | None:
        """rope_scaling's numbers by Hugging Face's names (rope_type too), or None."""
        return rope_scaling_params(self.rope_scaling)

    @property
    def head_dim(self) -> int:
        """Each head's width: head_size, or n_embd / n_head when left out."""
        return self.head_size if self.head_size is not None else self.n_embd // self.n_head

    @property
    def attn_width(self) -> int:
        """The queries' width, all heads: n_embd unless head_size says otherwise."""
        return self.n_head * self.head_dim

    @property
    def mlp_hidden(self) -> int:
        """The MLP's hidden width: mlp_width, or default_mlp_width when left out."""
        return self.mlp_width if self.mlp_width is not None else self.default_mlp_width

    @property
    def default_mlp_width(self) -> int:
        """4 x n_embd. A gated MLP has three matrices, not two: 8/3 x n_embd keeps its
        parameters those of the 4 x n_embd MLP (Llama), rounded up to 64 for the matmul."""
        if self.mlp == "swiglu":
            return -(-(8 * self.n_embd) // (3 * 64)) * 64
        return 4 * self.n_embd

    @property
    def padded_vocab_size(self) -> int:
        return -(-self.vocab_size // VOCAB_MULTIPLE) * VOCAB_MULTIPLE


@dataclass
class TrainConfig(Settings):
    """Training settings (the `training` section of a config file; each is also a flag of
    `mypt train` and a key of params.yaml's train and adapt sections)."""

    LABEL = "training setting"
    # What GPTDataLoader reads from its config beside the fields: the context length (the README's
    # `config.block_size = 256`; the model's own is GPTConfig.block_size) and the process's rank.
    EXTRA_ATTRIBUTES = ("block_size", "rank")

    batch_size: int = setting(12, "Sequences per micro-step, per process.", min=1)
    gradient_accumulation_steps: int = setting(1, "Micro-steps per optimizer step.", min=1)
    max_iters: int = setting(5000, "Training steps (optimizer steps).", min=0)
    learning_rate: float = setting(6e-4, "Peak learning rate.", min=0.0, min_open=True)
    min_lr: float | None = setting(None, "End of the decay (default: learning_rate/10 with the cosine, 0 with "
                                         "wsd).", min=0.0, derived_from="learning_rate")
    warmup_iters: int = setting(100, "Steps of linear warmup.", min=0)
    lr_decay_iters: int | None = setting(None, "Step where the decay reaches min_lr (default max_iters).",
                                         min=0, derived_from="max_iters")
    lr_schedule: str = setting("cosine", "After the warmup: cosine, a cosine decay from the peak to min_lr; or "
                                         "wsd (warmup-stable-decay): the peak held, then the last decay_fraction "
                                         "of the steps to lr_decay_iters decay linearly to min_lr. A wsd run "
                                         "resumed with more --max_iters while still at its peak goes on at the "
                                         "same rate, where a cosine's would jump.", choices=("cosine", "wsd"))
    decay_fraction: float = setting(0.4, "With --lr_schedule wsd: the fraction of the steps after the warmup "
                                         "(to lr_decay_iters) that decay to min_lr.", min=0.0, max=1.0,
                                    min_open=True, acts_with=("lr_schedule", "wsd"))
    weight_decay: float = setting(0.1, "Weight decay (matrices and embeddings only).", min=0.0)
    optimizer: str = setting("adamw", "adamw, or muon: Muon (torch.optim.Muon, PyTorch 2.9 or later) for the "
                                      "blocks' 2-D weights at muon_learning_rate, AdamW at learning_rate for "
                                      "embeddings, head, norms and biases.", choices=("adamw", "muon"))
    muon_learning_rate: float = setting(0.02, "Muon's peak learning rate (with --optimizer muon; it follows "
                                              "the same warmup and decay as learning_rate).", min=0.0, min_open=True,
                                        acts_with=("optimizer", "muon"))
    muon_momentum: float = setting(0.95, "Muon's momentum (with --optimizer muon).", min=0.0, max=1.0,
                                   max_open=True, acts_with=("optimizer", "muon"))
    muon_weight_decay: float | None = setting(
        None, "Muon's weight decay (with --optimizer muon; default: weight_decay, AdamW's). Each step "
              "scales Muon's matrices by 1 - lr x decay at Muon's learning rate: 0.1 at 0.02 is 0.002 a step, "
              "33 times AdamW's 0.1 at 6e-4.", min=0.0, acts_with=("optimizer", "muon"))
    beta1: float = setting(0.9, "AdamW beta1.", min=0.0, max=1.0, max_open=True)
    beta2: float = setting(0.95, "AdamW beta2.", min=0.0, max=1.0, max_open=True)
    grad_clip: float = setting(1.0, "Clip the gradient norm to this (0: off).", min=0.0)
    eval_interval: int = setting(250, "Evaluate and checkpoint every this many steps.", min=1)
    checkpoint_minutes: float = setting(30.0, "Also checkpoint every this many minutes (0: off): a killed run "
                                              "loses at most that much.", min=0.0)
    eval_iters: int = setting(20, "Batches per evaluation.", min=1)
    log_interval: int = setting(10, "Log the training loss every this many steps.", min=1)
    device: str = device_setting()
    dtype: str = setting("auto", "Autocast dtype (auto: bfloat16 on GPUs of compute capability 8.0 and later, "
                                 "float16 with a GradScaler on older ones; on the CPU bfloat16 linear layers "
                                 "where it multiplies bfloat16 in hardware (AMX, AVX512-BF16), else "
                                 "float32).",
                         choices=("auto", "float32", "bfloat16", "float16"))
    compile: bool | None = setting(None, "torch.compile the model for training and its evaluations (default: on "
                                         "with CUDA, where the compiled 124M model trains at about twice the "
                                         "eager MFU after a warm-up of a minute or so; off on the CPU, where "
                                         "compiling costs more than it gains in short runs). --no_compile: eager.")
    cuda_graphs: bool = setting(False, "Replay each training step from CUDA graphs: the compiled model's (torch.compile "
                                       "mode reduce-overhead) and Muon's step. For small models, whose steps wait "
                                       "on the host launching kernels rather than on the GPU (the baby GPT on an "
                                       "H200: see README 'The modern recipe'). CUDA with the compiled model, one "
                                       "process; more GPU memory. Without CUDA or compile it does nothing; "
                                       "with gradient accumulation it is refused, on any device.")
    seed: int = seed_setting("Seed of initialization and of the batch sampler.")

    def __post_init__(self):
        super().__post_init__()
        if self.min_lr is not None and self.min_lr > self.learning_rate:
            raise SettingError(f"training setting min_lr ({self.min_lr:g}) is above learning_rate "
                               f"({self.learning_rate:g}), the peak the schedule decays from",
                               ("min_lr", "learning_rate"))
        # The decay would end before the warmup does: the rate climbs past the step --help says
        # it reached min_lr at, then falls to min_lr in one step (a 9x drop at the defaults).
        if self.lr_decay_iters is not None and self.lr_decay_iters < self.warmup_iters:
            raise SettingError(f"training setting lr_decay_iters ({self.lr_decay_iters}) is below warmup_iters "
                               f"({self.warmup_iters}): the decay to min_lr would end before the warmup does; "
                               "raise --lr_decay_iters or lower --warmup_iters", ("lr_decay_iters", "warmup_iters"))
        # Decoupled decay scales the weights by 1 - rate x decay each step: at 1 or more it
        # zeroes or flips them, which no training survives.
        if self.learning_rate * self.weight_decay >= 1:
            raise SettingError(f"training settings learning_rate x weight_decay ({self.learning_rate:g} x "
                               f"{self.weight_decay:g}) must be below 1: each step scales the weights by 1 minus it",
                               ("learning_rate", "weight_decay"))
        # A graph's gradients live in its own memory, which its next replay (the next micro-step) overwrites.
        if self.cuda_graphs and self.gradient_accumulation_steps > 1:
            raise SettingError(f"training setting cuda_graphs takes no gradient accumulation (gradient_accumulation_steps "
                               f"{self.gradient_accumulation_steps}): a CUDA graph's next micro-step would overwrite the "
                               f"gradients it accumulates into; hold the batch in one micro-step (--batch_size "
                               f"{self.batch_size * self.gradient_accumulation_steps} --gradient_accumulation_steps 1) "
                               f"or pass --no_cuda_graphs",
                               ("cuda_graphs", "gradient_accumulation_steps"))
        if self.optimizer == "muon" and self.muon_learning_rate * self.muon_decay >= 1:
            fields = ("muon_learning_rate", "muon_weight_decay" if self.muon_weight_decay is not None else "weight_decay")
            raise SettingError(f"training settings {' x '.join(fields)} ({self.muon_learning_rate:g} x "
                               f"{self.muon_decay:g}) must be below 1: each step scales the matrices by 1 minus it",
                               fields)

    @property
    def decay_iters(self) -> int:
        """Where the cosine ends: lr_decay_iters, or max_iters when left out."""
        return self.lr_decay_iters if self.lr_decay_iters is not None else self.max_iters

    def compiles_on(self, device_type: str) -> bool:
        """Whether training compiles: --compile / --no_compile, else on with CUDA only. Read
        when a run starts, so a run resumed on another device gets that device's default."""
        return self.compile if self.compile is not None else device_type == "cuda"

    def cuda_graphs_on(self, device_type: str) -> bool:
        """Whether the steps replay from CUDA graphs: --cuda_graphs, on CUDA, compiled."""
        return self.cuda_graphs and device_type == "cuda" and self.compiles_on(device_type)

    def compile_mode(self, device_type: str) -> str | None:
        """torch.compile's mode for training: reduce-overhead (CUDA graphs) with cuda_graphs_on."""
        return "reduce-overhead" if self.cuda_graphs_on(device_type) else None

    @property
    def muon_decay(self) -> float:
        """Muon's weight decay: muon_weight_decay, or weight_decay when left out."""
        return self.muon_weight_decay if self.muon_weight_decay is not None else self.weight_decay

    @property
    def final_lr(self) -> float:
        """Where the decay ends up: min_lr, or when left out a tenth of learning_rate (the
        cosine, nanoGPT's) or 0 (wsd: on the CPU quality benchmark its decay to 0 did better
        than to a tenth)."""
        if self.min_lr is not None:
            return self.min_lr
        return 0.0 if self.lr_schedule == "wsd" else self.learning_rate / 10


@dataclass
class RunSettings(Settings):
    """A training run's own settings: the guide's flags of `mypt train` other than the model's
    (GPTConfig) and training's (TrainConfig): data, names, checkpoints, resume."""

    LABEL = "train flag"

    model_name: str = setting(None, "Checkpoints go to CHECKPOINTS_DIR/MODEL_NAME/ (a plain name).", required=True,
                              check=plain_name)
    dataset_dir: tuple[str, ...] = setting((), "A prepared dataset (mypt prepare-dataset). Give it several times "
                                                "for a weighted mixture: NAME=PATH:WEIGHT each (NAME= and :WEIGHT "
                                                "optional; no weights: equal shares), e.g. --dataset_dir "
                                                "web=data/web:0.7 --dataset_dir books=data/books:0.3.")
    input_file: Path | None = setting(None, "Or one text file, tokenized in memory (last 10% is val).",
                                      exists="file")
    config_file: str | None = setting(None, "Preset name (150M, 150M_1024, small_char, "
                                            "pretrain/750M_1024_domain_adapt, tiny; modern/NAME: the modern "
                                            "model at those sizes) or JSON path. Default: "
                                            "small_char for char, 150M for gpt2; with --init_from_model or "
                                            "--resume, the checkpoint's own (a file given then sets the training "
                                            "settings and the model settings it names).")
    tokenization: str | None = setting(None, f"{spec_help(described=False)}; must match the dataset (default: "
                                             "the dataset's).", check=check_spec,
                                       metavar="[" + "|".join(spec_forms()) + "]")
    init_from_model: str | None = setting(None, "Start from this model's weights (a name under CHECKPOINTS_DIR "
                                                "or a path), fresh optimizer; with --max_iters or --learning_rate "
                                                "the decay follows the new run, not the base's lr_decay_iters or "
                                                "min_lr.")
    eval_dataset_dir: Path | None = setting(None, "Also evaluate on this dataset's val split, logged as "
                                                  "eval_general.", exists="dir")
    resume: bool = setting(False, "Continue MODEL_NAME's run from its checkpoint.")
    auto_resume: bool = setting(False, "--resume if MODEL_NAME has a checkpoint, else start the run: one command "
                                       "for a job that a crash, a scheduler's requeue or torchrun's --max_restarts "
                                       "starts again. A checkpoint of another run (another --init_from_model) is "
                                       "refused.")
    overwrite: bool = setting(False, "Replace MODEL_NAME's trained model (without it, an existing model is "
                                     "refused: --resume continues it).")
    checkpoints_dir: Path = checkpoints_setting()
    parallel: str = setting("ddp", "Under torchrun: ddp (every rank holds the whole model and optimizer) or fsdp "
                                   "(FSDP2: each rank holds 1/N of the weights, gradients and optimizer state, "
                                   "for models too large for one GPU; checkpoints saved sharded, read on any "
                                   "number of ranks). One process: no effect.", choices=("ddp", "fsdp"))
    dist_timeout_minutes: float = setting(
        10.0, "Under torchrun: how long a rank waits in a collective for the others. A rank that hangs (a stopped "
              "process, a stalled mount, a stuck GPU) ends the run in this time, each rank left saying so, the last "
              "checkpoint kept for --resume (torch's own default: 30 minutes with gloo). It must exceed the longest "
              "wait of a sound run in a collective: one rank compiling or loading longer than another. (Under DDP "
              "the others wait for rank 0's checkpoint write however long, as long as it keeps reading or "
              "writing: only a stretch of the save with no I/O must fit in this time. One read, write or close "
              "call that takes long (a large tensor written to slow storage, a file flushed at close on NFS or a "
              "FUSE mount) counts as I/O for up to 6 times this; a save stuck in such a call (a hung mount) ends "
              "the run one timeout later.)",
        min=0.0, min_open=True)
    metrics_dir: Path | None = setting(None, "Write the run's metrics here while it trains, through --logger's "
                                             "loggers; dvclive's by default (metrics.json, plots/metrics/*.tsv, "
                                             "plots/images/loss.png): `dvc exp show`, `dvc plots show` and DVC's "
                                             "VS Code extension follow the run. Default: no metrics files.")
    logger: tuple[str, ...] = setting((), logger_help(), check=parse_loggers)

    @property
    def loggers(self) -> tuple[str, ...]:
        """The loggers the run writes to: --logger's, else dvclive's when --metrics_dir is given."""
        return self.logger or (LOGGER_DEFAULT if self.metrics_dir is not None else ())

    def __post_init__(self):
        # RunSettings(dataset_dir="data/x"): one dataset, the Python API's spelling of one flag.
        if isinstance(self.dataset_dir, (str, os.PathLike)):
            self.dataset_dir = (self.dataset_dir,)
        if isinstance(self.dataset_dir, (list, tuple)):
            self.dataset_dir = tuple(os.fspath(d) if isinstance(d, os.PathLike) else d for d in self.dataset_dir)
        if isinstance(self.logger, str):  # RunSettings(logger="tensorboard,wandb"): params.yaml's spelling too
            self.logger = (self.logger,)
        super().__post_init__()
        if self.logger and self.metrics_dir is None:
            raise SettingError(f"--logger {','.join(self.logger)} writes its files (and the run ids --resume "
                               "continues) under --metrics_dir: give --metrics_dir DIR too", ("logger",))


@dataclass(frozen=True)
class EvalSettings(Settings):
    """The eval stage: loss and perplexity over whole val splits, deterministically."""

    LABEL = "eval setting"

    model_name: str = model_setting()
    batch_size: int = setting(32, "Windows per batch.", min=1)
    max_tokens: int | None = setting(None, "Evaluate at most this many tokens per split, in whole windows of the "
                                     "model's block_size (rounded down; less than one window is refused), "
                                     "spread evenly over the split, all of its sources.", min=1)
    device: str = device_setting()
    checkpoints_dir: Path = checkpoints_setting()


@dataclass(frozen=True)
class ExportSettings(Settings):
    """`mypt export-hf`: a checkpoint as a transformers directory."""

    LABEL = "export setting"

    model_name: str = model_setting()
    out_dir: Path = setting(None, "Directory to write: config.json, model.safetensors, tokenizer files.",
                            required=True, check=utf8_path("--out_dir"))
    checkpoints_dir: Path = checkpoints_setting()


@dataclass(frozen=True)
class GenerateSettings(Settings):
    """Sampling: `mypt generate`."""

    LABEL = "generate setting"

    model_name: str = model_setting()
    prompt: str = setting("", "Text to continue (default: the start of a document).", show_default=False)
    prompt_file: Path | None = setting(None, "Continue the text of this file, as it is (UTF-8, a last newline "
                                             "kept: nanoGPT's FILE:); instead of --prompt.", metavar="PATH")
    max_new_tokens: int = setting(200, "Tokens to generate per sample.", min=1)
    temperature: float = setting(0.8, f"Softmax temperature; 0 = greedy, else {MIN_TEMPERATURE:g} to "
                                      f"{MAX_TEMPERATURE:g}.",
                                 min=0.0, check=check_temperature, metavar="FLOAT")
    top_k: int = setting(200, "Sample among the k most likely tokens; 0 = off.", min=0)
    top_p: float | None = setting(None, "Nucleus sampling: the smallest set of tokens whose probability "
                                        "reaches p (a tie at the cut is kept whole).", min=0.0, max=1.0,
                                  min_open=True)
    seed: int = seed_setting("Sampling seed.")
    num_samples: int = setting(1, "Samples to draw.", min=1)
    stop: tuple[str, ...] = setting((), "End a sample at this text (not printed); give it several times for "
                                        "several stop strings.")
    device: str = device_setting()
    checkpoints_dir: Path = checkpoints_setting()

    def __post_init__(self):
        super().__post_init__()
        if self.prompt and self.prompt_file is not None:
            raise SettingError(f"--prompt and --prompt_file {self.prompt_file} are both given: pass one (the prompt "
                               "is the file's text with --prompt_file)", ("prompt", "prompt_file"))


def train_options(func):
    """Click options for `mypt train` and the train stage: the run's flags, then the model's
    and the training settings, which default to None = the config file's value."""
    from mypt.options import settings_options

    func = settings_options(GPTConfig, TrainConfig, defaults=False, skip=("vocab_size",))(func)
    return settings_options(RunSettings)(func)


def preset_name(name_or_path: str) -> str:
    """The preset a --config_file names when no such file exists: `150M`, `150M.json`, or the
    guide's `configs/150M.json` (also `.../configs/pretrain/750M_1024_domain_adapt.json`):
    what follows the last `configs/` directory, without `.json`."""
    parts = Path(name_or_path).parts
    if "configs" in parts[:-1]:
        last = len(parts) - 1 - parts[::-1].index("configs")
        parts = parts[last + 1:]
    return "/".join(parts).removesuffix(".json")


def load_config_file(name_or_path: str) -> tuple[dict, dict, str]:
    """(model dict, training dict, where it came from) of a JSON path or a preset name.

    A file wins; otherwise the name (or the guide's `configs/NAME.json`) names a preset.
    Layout: {"model": {GPTConfig fields}, "training": {TrainConfig fields}}; both optional.
    """
    path = Path(name_or_path)
    if path.is_file():
        data, source = _read_config(path), str(path)
    else:
        name = preset_name(name_or_path)
        preset = resources.files("mypt") / "configs" / f"{name}.json"
        if not name or not preset.is_file():
            raise ConfigError(f"--config_file {name_or_path!r} is neither a file nor a preset; presets: "
                              f"{', '.join(list_presets())} (also as configs/NAME.json)")
        with resources.as_file(preset) as preset_path:
            data, source = _read_config(preset_path), f"preset {name}"
    unknown = sorted(set(data) - {"model", "training", "description"})
    if unknown:
        raise ConfigError(f"--config_file {source}: unknown section(s) {unknown}; a config has 'model' and 'training'")
    for section in ("model", "training"):
        if not isinstance(data.get(section, {}), dict):
            raise ConfigError(f"--config_file {source}: {section!r} must be an object of settings, "
                              f"got {data[section]!r}")
    return dict(data.get("model", {})), dict(data.get("training", {})), source


def _read_config(path: Path) -> dict:
    """A config file's JSON object (io.read_json: one rule for a file that is not one)."""
    try:
        return read_json(path, ConfigError, 'a config file is a JSON object {"model": {...}, "training": {...}}')
    except ConfigError as e:  # name the flag, as the other refusals of a config file do
        raise ConfigError(f"--config_file {e}") from None


def list_presets() -> list[str]:
    root = resources.files("mypt") / "configs"
    found = []
    for entry in root.iterdir():
        if entry.name.endswith(".json"):
            found.append(entry.name[:-5])
        elif entry.is_dir():
            found += [f"{entry.name}/{e.name[:-5]}" for e in entry.iterdir() if e.name.endswith(".json")]
    return sorted(found)
