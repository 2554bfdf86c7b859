"""Hugging Face transformers export (`mypt export-hf`; the import is mypt.hf_import): a mypt
checkpoint as a directory that `AutoModelForCausalLM.from_pretrained` and
`AutoTokenizer.from_pretrained` load with no custom code, under transformers 4.57 and 5.

- GPT-2 recipe (position learned, norm layernorm, mlp gelu): GPT2LMHeadModel (pre-LN, tanh
  GELU = "gelu_new"; a model with `gelu: exact` exports "gelu").
  transformers' GPT-2 uses Conv1D layers whose weights are the transpose of nn.Linear's;
  biases a model trained without them are exported as zeros.
- Llama recipe (position rope, norm rmsnorm, mlp swiglu or relu2, no bias, any n_kv_head,
  norm_eps and Llama 3's rope_scaling): LlamaForCausalLM, or Qwen3ForCausalLM with qk_norm;
  c_attn splits into q/k/v_proj and c_fc into gate/up_proj (hf_import.llama_names). relu2 is
  hidden_act relu with c_fc as both gate_proj and up_proj: relu(z) * z is relu(z)^2 exactly
  (the file holds that matrix twice, and transformers multiplies by it twice). qkv_bias (a
  Qwen2's biases) is attention_bias with zeros for o_proj's bias: transformers 5 forces Qwen's
  own tokenizer class on a qwen2 model_type, which would tokenize any other tokenizer.json
  wrongly. Any other combination is refused (hf_family).
- Both: the vocabulary padding rows are trimmed; a head tied to the embedding stays tied, an
  untied one is written as lm_head.weight (tie_word_embeddings false).
- Tokenizer: gpt2 becomes GPT-2's byte-level BPE (transformers' TikTokenConverter of the
  r50k_base ranks mypt installs); char becomes a WordLevel model over single characters with
  a decoder that fuses them, so both encode and decode exactly as mypt does; hf is its own
  tokenizer.json. None adds a token mypt does not (a Llama tokenizer.json's BOS template is
  dropped: mypt_ids_only), so `tokenizer(text)` gives mypt's ids.
  tokenizer_config.json names PreTrainedTokenizerFast, which transformers 4 and 5 both load,
  and the model's inputs (input_ids, attention_mask: no token_type_ids).

transformers and tokenizers are optional: `pip install 'mypt[hf]'`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import torch

from mypt.checkpoint import holds_mypt_config
from mypt.errors import ConfigError, safetensors_os_error
from mypt.hf_import import LINEAR_LAYERS, MLP_FROM_ACT, VOCAB_ROWS, llama_names, shares_gate
from mypt.io import (built_files, check_replaceable, check_unsummed, output_target, previous_output, sha256_file,
                     staged_dir, umask_mode, user_entries)
from mypt.lock import output_lock
from mypt.model import load_model
from mypt.names import EXPORT_RECORD, char_replacement
from mypt.tokenizers import Tokenizer

# mypt's gelu setting -> transformers' activation_function (read back by hf_import.GELU_FROM_HF).
HF_GELU = {"tanh": "gelu_new", "exact": "gelu"}
# mypt's mlp -> a Llama's hidden_act (read back by hf_import.MLP_FROM_ACT).
ACT_FROM_MLP = {mlp: act for act, mlp in MLP_FROM_ACT.items()}
# What the exported tokenizer returns for the model (GPT-2's tokenizer_config.json declares the same).
MODEL_INPUT_NAMES = ("input_ids", "attention_mask")


def _require_hf():
    try:
        import tokenizers  # noqa: F401
        import transformers
    except ImportError:
        raise ConfigError("exporting to Hugging Face needs transformers and tokenizers: "
                          "pip install 'mypt[hf]'") from None
    return transformers


def hf_config(cfg, tokenizer: Tokenizer):
    """transformers' GPT2Config for a mypt GPTConfig (the real vocabulary, not the padded one)."""
    transformers = _require_hf()
    eot = tokenizer.eot_id
    return transformers.GPT2Config(
        vocab_size=cfg.vocab_size, n_positions=cfg.block_size, n_embd=cfg.n_embd, n_layer=cfg.n_layer,
        n_head=cfg.n_head, n_inner=cfg.mlp_hidden, activation_function=HF_GELU[cfg.gelu],
        resid_pdrop=cfg.dropout, embd_pdrop=cfg.dropout, attn_pdrop=cfg.dropout, layer_norm_epsilon=cfg.norm_eps,
        bos_token_id=eot, eos_token_id=eot, tie_word_embeddings=cfg.tie_embeddings,
        architectures=["GPT2LMHeadModel"])


def hf_state_dict(model) -> dict[str, torch.Tensor]:
    """mypt GPT weights under transformers' GPT-2 names and layouts."""
    cfg, out = model.config, {}
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight" and cfg.tie_embeddings:
            continue  # tied to transformer.wte.weight
        t = tensor.detach().float().cpu()
        if name in VOCAB_ROWS:
            t = t[:cfg.vocab_size]  # drop the padding rows
        if name.endswith(".weight") and any(f".{layer}." in f".{name}" for layer in LINEAR_LAYERS):
            t = t.t()  # nn.Linear (out, in) -> Conv1D (in, out)
        out[name] = t.contiguous()
    # A model without biases exports zero biases (transformers' GPT-2 always has them).
    for key, shape in _bias_shapes(cfg).items():
        out.setdefault(key, torch.zeros(shape))
    return out


# The settings of each model family transformers has: a mypt model exports as the family of its
# positions, or is refused naming the settings that family lacks.
GPT2_RECIPE = {"norm": ("layernorm",), "mlp": ("gelu",), "n_kv_head": (None,), "qk_norm": (False,),
               "head_size": (None,)}
LLAMA_RECIPE = {"norm": ("rmsnorm",), "mlp": ("swiglu", "relu2"), "bias": (False,)}
RECIPES_HELP = ("export-hf writes GPT-2 (position learned, norm layernorm, mlp gelu, no n_kv_head, no qk_norm, "
                "no head_size) or Llama (position rope, norm rmsnorm, mlp swiglu or relu2, bias false; Qwen3 with "
                "qk_norm)")


def hf_family(cfg, source) -> str:
    """gpt2, llama or qwen3: the transformers model that computes what `cfg`'s model does.
    Qwen3 is Llama with per-head RMSNorms (weight only) of queries and keys before the rotation:
    mypt's qk_norm to the letter."""
    recipe = GPT2_RECIPE if cfg.position == "learned" else LLAMA_RECIPE
    settings = {**cfg.to_dict(), "n_kv_head": None if cfg.kv_heads == cfg.n_head else cfg.n_kv_head}
    shown = lambda v: v if isinstance(v, str) else json.dumps(v)  # noqa: E731 (norm rmsnorm, bias true)
    wrong = [f"{key} {shown(settings[key])}" for key, allowed in recipe.items() if settings[key] not in allowed]
    if wrong:
        raise ConfigError(f"{source}: model setting {', '.join(wrong)}: no Hugging Face equivalent with position "
                          f"{cfg.position}; {RECIPES_HELP} (train with those settings to export)")
    if cfg.position == "learned":
        return "gpt2"  # (GPT-2 has every bias: those a model lacks are exported as zeros)
    return "qwen3" if cfg.qk_norm else "llama"


# The transformers classes of the Llama recipe's families.
LLAMA_CLASSES = {"llama": "LlamaForCausalLM", "qwen3": "Qwen3ForCausalLM"}


def llama_config(cfg, tokenizer: Tokenizer, family: str):
    """transformers' LlamaConfig or Qwen3Config for a mypt GPTConfig of the Llama recipe."""
    transformers = _require_hf()
    eot = tokenizer.eot_id
    shape = dict(vocab_size=cfg.vocab_size, hidden_size=cfg.n_embd, intermediate_size=cfg.mlp_hidden,
                 num_hidden_layers=cfg.n_layer, num_attention_heads=cfg.n_head, num_key_value_heads=cfg.kv_heads,
                 head_dim=cfg.head_dim, max_position_embeddings=cfg.block_size, rms_norm_eps=cfg.norm_eps,
                 rope_parameters={"rope_type": "default", **(cfg.rope_scaling_params or {}),
                                  "rope_theta": cfg.rope_theta},
                 hidden_act=ACT_FROM_MLP[cfg.mlp],
                 tie_word_embeddings=cfg.tie_embeddings, attention_bias=cfg.qkv_bias,
                 bos_token_id=eot, eos_token_id=eot, architectures=[LLAMA_CLASSES[family]])
    if family == "qwen3":
        return transformers.Qwen3Config(use_sliding_window=False, **shape)
    return transformers.LlamaConfig(mlp_bias=False, **shape)


def llama_state_dict(model) -> dict[str, torch.Tensor]:
    """mypt weights under Llama's (and Qwen3's) names: c_attn split into q, k and v, c_fc into
    gate and up (hf_import.llama_names); padding rows of the vocabulary trimmed."""
    cfg, state, out = model.config, model.state_dict(), {}
    kv = cfg.kv_heads * cfg.head_dim
    for ours, theirs in llama_names(cfg):
        t = state[ours].detach().float().cpu()
        if ours in VOCAB_ROWS:
            t = t[:cfg.vocab_size]
        if shares_gate(cfg, ours):
            parts = [t, t.clone()]  # gate and up: relu(c_fc x) * (c_fc x) = relu(c_fc x)^2
        else:
            parts = t.split([cfg.attn_width, kv, kv]) if len(theirs) == 3 else t.chunk(len(theirs))
        out.update({name: part.contiguous() for name, part in zip(theirs, parts, strict=True)})
    if cfg.qkv_bias:  # attention_bias has o_proj's too
        out.update({f"model.layers.{i}.self_attn.o_proj.bias": torch.zeros(cfg.n_embd) for i in range(cfg.n_layer)})
    return out


def portable_model_config(directory: Path, cfg) -> None:
    """RoPE's base and scaling where transformers 4 reads them too: 5 writes only
    rope_parameters, and 4 would run such an export with its default base, 10000, unscaled."""
    path = directory / "config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config.setdefault("rope_theta", cfg.rope_theta)
    if cfg.rope_scaling is not None:
        config.setdefault("rope_scaling", cfg.rope_scaling_params)
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _bias_shapes(cfg) -> dict[str, int]:
    c, shapes = cfg.n_embd, {"transformer.ln_f.bias": cfg.n_embd}
    for i in range(cfg.n_layer):
        p = f"transformer.h.{i}."
        shapes.update({p + "ln_1.bias": c, p + "ln_2.bias": c, p + "attn.c_attn.bias": 3 * c,
                       p + "attn.c_proj.bias": c, p + "mlp.c_fc.bias": cfg.mlp_hidden, p + "mlp.c_proj.bias": c})
    return shapes


def gpt2_hf_tokenizer(tokenizer: Tokenizer):
    """GPT-2's byte-level BPE as a `tokenizers.Tokenizer`, converted from the r50k_base ranks
    mypt installs by transformers' TikTokenConverter with tiktoken's own r50k pattern (its
    default pattern is cl100k's): ids equal tiktoken's (tests/test_hf_compat.py checks)."""
    from tiktoken_ext.openai_public import r50k_pat_str
    from transformers.convert_slow_tokenizer import TikTokenConverter

    from mypt.tokenizers.gpt2 import require_gpt2_vocab

    eot = tokenizer.decode([tokenizer.eot_id])  # <|endoftext|>, id 50256: the id after the ranks
    # transformers 4 names the special tokens additional_special_tokens, 5 extra_special_tokens;
    # each takes its own and ignores the other.
    return TikTokenConverter(vocab_file=str(require_gpt2_vocab()), pattern=r50k_pat_str,
                             additional_special_tokens=[eot], extra_special_tokens=[eot]).converted()


def char_hf_tokenizer(tokenizer: Tokenizer):
    """mypt's char vocabulary as a `tokenizers.Tokenizer`: every character is a word of a
    WordLevel model, and the decoder fuses them back without separators."""
    from tokenizers import Regex, decoders, models, pre_tokenizers
    from tokenizers import Tokenizer as HFTokenizer

    vocab = {c: i for i, c in enumerate(tokenizer.chars)}
    unk = char_replacement(tokenizer.chars) or tokenizer.chars[0]
    hf = HFTokenizer(models.WordLevel(vocab=vocab, unk_token=unk))
    hf.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")  # one piece per character
    hf.decoder = decoders.Fuse()
    return hf


def file_hf_tokenizer(tokenizer: Tokenizer):
    """An hf tokenizer's own tokenizer.json, as the user gave it (export_hf then drops a
    post-processor that adds tokens: mypt_ids_only)."""
    from tokenizers import Tokenizer as HFTokenizer

    return HFTokenizer.from_str(tokenizer.tokenizer_json)


def mypt_ids_only(hf) -> None:
    """Make `hf` (a `tokenizers.Tokenizer`) give exactly mypt's ids with transformers' default
    call, `tokenizer(text)` (add_special_tokens=True): drop a post-processor that adds tokens.
    mypt trains, evaluates and generates with add_special_tokens=False (tokenizers.hf), so a
    Llama 2/3 tokenizer.json's TemplateProcessing `<s> $A` gave transformers [1, 294, ...] for
    mypt's [294, ...], and other logits. One that adds none (GPT-2's ByteLevel, which trims
    offsets only) is kept. A user who wants a BOS the model never saw can add it back
    (transformers 5: `AutoTokenizer.from_pretrained(DIR, bos_token="<s>", add_bos_token=True)`,
    the export's bos_token being the end of text; 4: a TemplateProcessing of their own).
    The identity of an hf tokenizer ignores its post-processor (tokenizers.hf.ENCODE_SETTINGS):
    the export's tokenizer.json is still its model's tokenizer on import."""
    post = hf.post_processor
    if post is not None and (post.num_special_tokens_to_add(False) or post.num_special_tokens_to_add(True)):
        hf.post_processor = None


def portable_tokenizer_config(directory: Path) -> None:
    """A tokenizer_config.json that transformers 4 and 5 both load as they load GPT-2's:

    - the class: transformers 5 writes `TokenizersBackend`, a class 4.x does not have (its
      AutoTokenizer fails on the export); `PreTrainedTokenizerFast` is 4.x's class for a
      tokenizer.json and 5.x's alias of TokenizersBackend, so both load the same tokenizer;
    - the model's inputs, `input_ids` and `attention_mask`, as GPT-2's own tokenizer declares
      them: without them 4.x's tokenizer returns `token_type_ids` too, which GPT2LMHeadModel
      adds as token-type embeddings (logits off by up to 1.8) and Llama's generate refuses;
    - add_bos_token and add_eos_token false."""
    path = directory / "tokenizer_config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    if config.get("tokenizer_class") == "TokenizersBackend":
        config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config["model_input_names"] = list(MODEL_INPUT_NAMES)
    # No BOS or EOS added to what mypt encodes (mypt_ids_only): transformers 5 rebuilds the
    # post-processor from these whenever they are given or tokenizer.json has none (a class
    # whose default is true, LlamaTokenizer's add_bos_token, would add <s>); 4's
    # PreTrainedTokenizerFast ignores them.
    config.update(add_bos_token=False, add_eos_token=False)
    path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


# An export's record (EXPORT_RECORD) of the files it wrote (names in the directory) and each
# one's sha256: what makes a directory mypt's export, and what a later export into it may
# replace. Everything else there is the user's (a README.md model card, eval_results/, a
# chat_template.jinja they added) and is carried over; a user's file with a name the new export
# writes is refused (io.staged_dir), and so is a file mypt wrote that changed since (weights
# fine-tuned in place and saved with save_pretrained over the export's): they are the user's
# work now. Exports written before the record: those with mypt's tokenizer state beside
# tokenizer_config.json. What they held (transformers 4 and 5's save_pretrained, mypt's
# tokenizer state) is what a new export replaces there.
LEGACY_MARKER = "tokenizer_state.json"
# The files every export writes, whatever transformers' version and the model's size (a large one's
# weights are model-*-of-*.safetensors, transformers 4 adds special_tokens_map.json): a user's file
# of one of these names is refused before the model is loaded (io.staged_dir's `writes`).
EXPORTED = (EXPORT_RECORD, "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
            "tokenizer_state.json")
LEGACY_FILES = ("config.json", "generation_config.json", "model.safetensors", "model-*-of-*.safetensors",
                "model.safetensors.index.json", "tokenizer.json", "tokenizer_config.json",
                "special_tokens_map.json", "tokenizer_state.json")


def _previous_export(out_dir: Path) -> tuple[str | None, tuple[str, ...], dict[str, str | None] | None, bool]:
    """(marker, the files an export may replace, its record: each file's sha256, None where
    none was recorded, whether it holds sums to verify its files by) of `out_dir`: (None, (),
    None, True) when it is missing or empty, its record's files for a mypt export, LEGACY_FILES
    and no record for an export written before the record. Anything else, a checkpoint or a
    directory transformers or a user wrote, is refused: mypt replaces only its own export."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir() or not any(out_dir.iterdir()):
        return None, (), None, True
    if holds_mypt_config(out_dir) or (out_dir / "training_state.json").exists():
        raise ConfigError(f"--out_dir {out_dir} holds a mypt checkpoint: refused; choose a new directory for the "
                          "export")
    if (out_dir / EXPORT_RECORD).is_file():
        try:
            record = json.loads((out_dir / EXPORT_RECORD).read_text(encoding="utf-8"))
            files, sums = record["files"], record.get("sha256")
        except (ValueError, UnicodeDecodeError, KeyError, TypeError, AttributeError):
            files = sums = None
        if not isinstance(files, list) or not all(isinstance(f, str) and f and "/" not in f and f not in (".", "..")
                                                  for f in files):
            raise ConfigError(f"--out_dir {out_dir}: {EXPORT_RECORD} is damaged (no list of file names): refused, "
                              "nothing changed; choose a new --out_dir, or delete the directory's export files and "
                              f"{EXPORT_RECORD}")
        # A record written before mypt recorded sums has none: mypt cannot tell an edited file from
        # its own there, so only one the new export writes byte for byte is replaced (io.check_unsummed).
        if sums is not None and not (isinstance(sums, dict) and all(name in files and isinstance(digest, str)
                                                                    and len(digest) == 64
                                                                    for name, digest in sums.items())):
            raise ConfigError(f"--out_dir {out_dir}: {EXPORT_RECORD} is damaged (its sha256 is not a sum of each "
                              "listed file): refused, nothing changed; choose a new --out_dir, or delete the "
                              f"directory's export files and {EXPORT_RECORD}")
        recorded = {name: (sums or {}).get(name) for name in files}
        return EXPORT_RECORD, (EXPORT_RECORD, *files), recorded, all(recorded.values())
    if (out_dir / LEGACY_MARKER).is_file() and (out_dir / "tokenizer_config.json").is_file():
        return LEGACY_MARKER, LEGACY_FILES, None, False
    raise ConfigError(f"--out_dir {out_dir} already holds files that are not a mypt export (no {EXPORT_RECORD}): "
                      "refused, mypt replaces only its own export or an empty directory; choose another --out_dir")


UNSUMMED = "is an export from before mypt recorded its files' sums (or its record lists a file without one)"


def _save_weights(transformers, hf_model, stage: Path) -> None:
    """save_pretrained into `stage` without its progress bar (a line on stderr before any error
    line), its writer's I/O failures (a full disk) as the OSError they are: one line naming the
    output (staged_dir shows `stage` as it), as every command's (errors.os_error_message)."""
    from safetensors import SafetensorError

    bars = transformers.utils.logging.is_progress_bar_enabled()
    transformers.utils.logging.disable_progress_bar()
    try:
        hf_model.save_pretrained(stage, safe_serialization=True)
    except SafetensorError as e:
        if (error := safetensors_os_error(e, stage)) is None:
            raise
        raise error from None
    finally:
        if bars:
            transformers.utils.logging.enable_progress_bar()


def export_hf(model_dir: Path, out_dir: Path) -> Path:
    """Write `out_dir` (config.json, model.safetensors, tokenizer files) from the checkpoint
    directory `model_dir`."""
    transformers = _require_hf()
    check_replaceable(out_dir, [model_dir], flag="--out_dir")
    target = output_target(Path(out_dir))
    with output_lock(target, "--out_dir"):  # (staged_dir takes it again: re-entrant)
        return _export_locked(transformers, Path(model_dir), Path(out_dir), target)


def _export_locked(transformers, model_dir: Path, out_dir: Path, target: Path) -> Path:
    """export_hf under the output's lock, which no other export can change the output under."""
    # The previous export decides what may be replaced (an export killed between its renames left
    # it aside as `.NAME.old`: judged there). Its record is read once, here, under the lock (read
    # before it, an export that finishes meanwhile would have its new files called edited): it picks the
    # marker, and staged_dir's checks judge by it too (`written`), refusing a file that changed
    # since mypt exported it. A record from before the sums has none (not `verified`): only what
    # the new export writes byte for byte is replaced.
    marker, owned, recorded, verified = _previous_export(previous_output(target))

    def unvouched(names: list[str]) -> list[str]:
        """Of the previous export's files `names`, those no recorded sum vouches for: all of an export
        from before the record or the sums, else the ones its record lists without a sum."""
        theirs = set(user_entries(target, owned)) | {EXPORT_RECORD}
        return [name for name in names if name not in theirs and (recorded is None or recorded.get(name) is None)]

    # The model is loaded after staged_dir's checks: an edit of the previous export, or a user's
    # file of a name the export writes, is refused before the long work, not after it.
    with staged_dir(out_dir, inputs=[model_dir], marker=marker, owned=owned, edited="mypt exported",
                    written=None if recorded is None else lambda _: recorded, writes=EXPORTED) as stage:
        stage = Path(stage)
        model, tokenizer, _ = load_model(model_dir, "cpu")
        family = hf_family(model.config, f"{Path(model_dir) / 'config.json'}")
        build = {"gpt2": gpt2_hf_tokenizer, "char": char_hf_tokenizer, "hf": file_hf_tokenizer}.get(tokenizer.kind)
        if build is None:
            raise ConfigError(f"{model_dir}: no Hugging Face export for {tokenizer.kind} tokenizers yet")
        eot = tokenizer.decode([tokenizer.eot_id]) if tokenizer.eot_id is not None else None  # <|endoftext|>, </s>...
        hf_tokenizer = build(tokenizer)
        mypt_ids_only(hf_tokenizer)
        hf_tok = transformers.PreTrainedTokenizerFast(tokenizer_object=hf_tokenizer, eos_token=eot,
                                                      bos_token=eot, model_max_length=model.config.block_size)
        hf_tok.save_pretrained(stage)
        portable_tokenizer_config(stage)
        # The mypt tokenizer too: `mypt train --init_from_model hf:DIR` reads it back exactly.
        tokenizer.save(stage)
        early = {}  # each file is hashed once: the tokenizer files here, where they are compared first
        if not verified:
            # The tokenizer files are compared first, before the weights are converted and written.
            # config.json comes with the weights from one save_pretrained (which adds its dtype to
            # it), and the weights' bytes are only known once written: those are compared after.
            early = {name: sha256_file(stage / name) for name in built_files(stage)}
            check_unsummed(target, early, unvouched(list(early)), "--out_dir", UNSUMMED)
        if family == "gpt2":
            hf_model = transformers.GPT2LMHeadModel(hf_config(model.config, tokenizer))
            weights = hf_state_dict(model)
        else:
            config = llama_config(model.config, tokenizer, family)
            hf_model = getattr(transformers, LLAMA_CLASSES[family])(config)
            weights = llama_state_dict(model)
        missing, unexpected = hf_model.load_state_dict(weights, strict=False)
        derived = ("attn.bias", "attn.masked_bias") + (("lm_head.weight",) if model.config.tie_embeddings else ())
        missing = [k for k in missing if not k.endswith(derived)]  # (buffers, and a tied head: the embedding)
        if missing or unexpected:  # hf_family let through a model transformers' class cannot hold: a bug
            raise ConfigError(f"{model_dir}: no {type(hf_model).__name__} equivalent for weights (missing {missing}, "
                              f"unexpected {unexpected})")
        _save_weights(transformers, hf_model, stage)
        if family != "gpt2":
            portable_model_config(stage, model.config)
        written = built_files(stage)  # (save_pretrained writes no folders: names)
        for name in written:  # (its weights are written 0600)
            umask_mode(stage / name)
        # Each file's sum (a mode change keeps its bytes): a later export refuses to replace one
        # that changed since (io.check_written).
        sums = {name: early[name] if name in early else sha256_file(stage / name) for name in written}
        if not verified:
            check_unsummed(target, sums, unvouched([p.name for p in target.iterdir() if p.name not in early]),
                           "--out_dir", UNSUMMED)
        record = {"files": written, "sha256": sums, "model": str(model_dir)}
        (stage / EXPORT_RECORD).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return out_dir
