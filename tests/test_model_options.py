"""The model options of GPTConfig (rotary positions, RMSNorm, SwiGLU and squared-ReLU MLPs,
grouped-query attention, QK-norm): each trains and resumes exactly through `mypt train`'s
flags, decodes with the KV cache as without it, and keeps the parameter names a Llama export
maps; the defaults keep GPT-2's names."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import shutil
import string
from pathlib import Path

import pytest
import torch
from conftest import mypt_cli
from test_model import _reference_tokens

from mypt.errors import ConfigError
from mypt.generate import generate, sample_tokens
from mypt.input_text import read_input_text
import torch.nn.functional as F

from mypt.model import (GPT, GPTConfig, KVCache, _Relu2Fn, _RMSNormFn, apply_rope, load_model, relu2, rms_norm,
                        rope_tables)
from mypt.train_command import run_from_flags

VOCAB = len(string.ascii_lowercase + " \n")
SMALL = dict(vocab_size=VOCAB, block_size=16, n_layer=2, n_head=4, n_embd=32)
OPTIONS = {
    "rope": {"position": "rope", "rope_theta": 500.0},
    "rmsnorm": {"norm": "rmsnorm"},
    "swiglu": {"mlp": "swiglu"},
    "relu2": {"mlp": "relu2"},
    "gqa": {"n_kv_head": 1},  # GQA under the tiny preset (n_head 2) too: n_kv_head = n_head is plain MHA
    "qk_norm": {"qk_norm": True},
    "all": {"position": "rope", "norm": "rmsnorm", "mlp": "swiglu", "n_kv_head": 1, "qk_norm": True},
    "width": {"mlp_width": 48},
    "untied": {"tie_embeddings": False},
    "qkv_bias": {"qkv_bias": True},  # Qwen2's
    "head_size": {"head_size": 24, "qk_norm": True},  # heads wider than n_embd / n_head (Qwen3-0.6B's)
    "norm_eps": {"norm_eps": 1e-6, "qk_norm": True},  # the QK-norm's epsilon too
    "rope_scaling": {"position": "rope", "rope_scaling": "llama3:factor=4.0,low_freq_factor=1.0,high_freq_factor=4.0,"
                                                         "original_max_position_embeddings=8"},
}
ALL = ["--position", "rope", "--norm", "rmsnorm", "--mlp", "swiglu", "--n_kv_head", "1", "--qk_norm"]


def small(**options) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(**SMALL, **options)).eval()


def shapes(model: GPT, layer: str = "transformer.h.0.") -> dict[str, tuple[int, ...]]:
    """The first block's parameter shapes, by their names inside the block, and the rest's."""
    return {k.removeprefix(layer): tuple(v.shape) for k, v in model.state_dict().items()
            if k.startswith(layer) or not k.startswith("transformer.h.")}


def test_default_model_keeps_gpt2s_parameter_names_and_shapes():
    # What checkpoints of every earlier mypt hold: a default model must load them unchanged.
    block = {"ln_1.weight": (32,), "attn.c_attn.weight": (96, 32), "attn.c_proj.weight": (32, 32),
             "ln_2.weight": (32,), "mlp.c_fc.weight": (128, 32), "mlp.c_proj.weight": (32, 128)}
    assert shapes(small()) == {**block, "transformer.wte.weight": (64, 32), "transformer.wpe.weight": (16, 32),
                               "transformer.ln_f.weight": (32,), "lm_head.weight": (64, 32)}
    with_bias = set(GPT(GPTConfig(**SMALL, bias=True)).state_dict())
    assert with_bias - set(small().state_dict()) == {
        f"transformer.h.{i}.{n}.bias" for i in range(2) for n in ("ln_1", "attn.c_attn", "attn.c_proj", "ln_2",
                                                                   "mlp.c_fc", "mlp.c_proj")} | {"transformer.ln_f.bias"}


def test_each_option_has_the_names_and_shapes_a_llama_export_maps():
    gpt2 = shapes(small())
    changed = {name: {k: v for k, v in shapes(small(**opts)).items() if gpt2.get(k) != v}
               for name, opts in OPTIONS.items()}
    removed = {name: sorted(set(gpt2) - set(shapes(small(**opts)))) for name, opts in OPTIONS.items()}
    hidden = GPTConfig(**SMALL, mlp="swiglu").mlp_hidden
    assert hidden == 128  # 8/3 x 32 = 85.3, rounded up to 64's multiple: here c_proj keeps its shape
    assert changed["rope"] == {} and removed["rope"] == ["transformer.wpe.weight"]
    assert changed["rmsnorm"] == {} and removed["rmsnorm"] == []  # RMSNorm: a weight of the same shape
    assert changed["swiglu"] == {"mlp.c_fc.weight": (2 * hidden, 32)}  # rows [gate | up]
    wider = GPT(GPTConfig(**{**SMALL, "n_embd": 64}, mlp="swiglu")).transformer.h[0].mlp  # 8/3 x 64 -> 192
    assert (wider.c_fc.weight.shape, wider.c_proj.weight.shape) == ((384, 64), (64, 192))
    assert changed["relu2"] == {} and changed["gqa"] == {"attn.c_attn.weight": ((4 + 2 * 1) * 8, 32)}
    assert changed["qk_norm"] == {"attn.q_norm.weight": (8,), "attn.k_norm.weight": (8,)}
    assert removed["all"] == ["transformer.wpe.weight"] and changed["all"] == {
        "attn.c_attn.weight": ((4 + 2) * 8, 32), "attn.q_norm.weight": (8,), "attn.k_norm.weight": (8,),
        "mlp.c_fc.weight": (2 * hidden, 32)}
    assert changed["width"] == {"mlp.c_fc.weight": (48, 32), "mlp.c_proj.weight": (32, 48)}
    assert GPTConfig(**SMALL, mlp="swiglu", mlp_width=hidden).mlp_width is None  # the default, one spelling
    assert changed["qkv_bias"] == {"attn.c_attn.bias": (96,)} and removed["qkv_bias"] == []
    assert changed["norm_eps"] == changed["qk_norm"] and changed["rope_scaling"] == {}
    assert changed["head_size"] == {"attn.c_attn.weight": (3 * 4 * 24, 32), "attn.c_proj.weight": (32, 4 * 24),
                                    "attn.q_norm.weight": (24,), "attn.k_norm.weight": (24,)}
    # Untied: the same names and shapes, two tensors where the tied model has one.
    assert changed["untied"] == {} and removed["untied"] == []
    tied, untied = small(), small(tie_embeddings=False)
    assert tied.lm_head.weight is tied.transformer.wte.weight
    assert untied.lm_head.weight is not untied.transformer.wte.weight
    assert untied.num_params() - tied.num_params() == 64 * 32
    # --bias adds LayerNorm's bias; RMSNorm has none whatever --bias says.
    assert not any(k.endswith(("ln_1.bias", "ln_f.bias")) for k in GPT(GPTConfig(**SMALL, bias=True,
                                                                                  norm="rmsnorm")).state_dict())


@pytest.mark.parametrize("name", OPTIONS)
def test_residual_projections_keep_gpt2s_smaller_init(name):
    model = GPT(GPTConfig(**{**SMALL, "n_layer": 8}, **OPTIONS[name]))
    stds = {k: float(p.detach().std()) for k, p in model.named_parameters() if p.dim() == 2}
    for k, std in stds.items():
        expected = 0.02 / math.sqrt(2 * 8) if k.endswith("c_proj.weight") else 0.02
        assert std == pytest.approx(expected, rel=0.15), k


def test_grouped_query_attention_shares_each_kv_head_with_consecutive_query_heads():
    # A 2-kv-head model computes what a 4-head model computes whose key and value heads are
    # those 2 repeated in place (0, 0, 1, 1): Hugging Face's repeat_kv order.
    gqa, mha = small(n_kv_head=2), small()
    # One spelling per architecture: n_kv_head = n_head is plain attention; learned positions use no RoPE base.
    assert GPTConfig(**SMALL, n_kv_head=4) == GPTConfig(**SMALL, rope_theta=500.0) == small().config
    state = gqa.state_dict()
    for i in range(2):
        q, k, v = state[f"transformer.h.{i}.attn.c_attn.weight"].split([32, 16, 16])
        wide = [t.view(2, 8, 32).repeat_interleave(2, dim=0).reshape(32, 32) for t in (k, v)]
        state[f"transformer.h.{i}.attn.c_attn.weight"] = torch.cat([q, *wide])
    mha.load_state_dict(state)
    x = torch.randint(0, VOCAB, (2, 16))
    assert torch.allclose(gqa(x, x)[0], mha(x, x)[0], atol=1e-5)
    assert KVCache(gqa.config, 1, "cpu", torch.float32).k.shape == (2, 1, 2, 16, 8)  # 2 heads, not 4


def test_rope_rotates_pairs_i_and_i_plus_half_by_position_times_frequency():
    cfg = GPTConfig(**{**SMALL, "n_head": 8}, position="rope", rope_theta=100.0)  # head_dim 4: freqs 1, 0.1
    cos, sin = rope_tables(cfg, torch.tensor([0, 3]))
    x = torch.tensor([1.0, 2.0, 3.0, 4.0]).expand(1, 1, 2, 4)  # (B, nh, T, hd)
    y = apply_rope(x, cos, sin)
    assert torch.equal(y[0, 0, 0], x[0, 0, 0])  # position 0 is not rotated
    a, b = 3.0, 0.3  # pair (0, 2) turns by 3 x 1 radians, pair (1, 3) by 3 x 0.1
    expected = [math.cos(a) - 3 * math.sin(a), 2 * math.cos(b) - 4 * math.sin(b),
                3 * math.cos(a) + math.sin(a), 4 * math.cos(b) + 2 * math.sin(b)]
    assert y[0, 0, 1].tolist() == pytest.approx(expected, abs=1e-6)


def test_hand_written_rmsnorm_and_relu2_backwards_are_torchs_gradients():
    torch.manual_seed(0)
    # float64: gradcheck against finite differences; per-head weights (H, hd) as the QK-norm uses.
    x = torch.randn(2, 3, 4, 8, dtype=torch.float64, requires_grad=True)
    for w in (torch.randn(8, dtype=torch.float64, requires_grad=True),
              torch.randn(4, 8, dtype=torch.float64, requires_grad=True)):
        assert torch.autograd.gradcheck(lambda a, b: _RMSNormFn.apply(a, b, 1e-5), (x, w))
    assert torch.autograd.gradcheck(_Relu2Fn.apply, (x,))
    # float32, the path training takes: torch's rms_norm and relu().square() through autograd.
    x = torch.randn(4, 16, 32, requires_grad=True)
    w, g = torch.randn(32, requires_grad=True), torch.randn(4, 16, 32)
    ours = torch.autograd.grad(rms_norm(x, w, 1e-5), (x, w), g)
    theirs = torch.autograd.grad(F.rms_norm(x, (32,), w, 1e-5), (x, w), g)
    assert torch.allclose(rms_norm(x, w, 1e-5), F.rms_norm(x, (32,), w, 1e-5), atol=1e-6)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(ours, theirs))
    assert torch.equal(relu2(x), F.relu(x).square())
    assert torch.equal(torch.autograd.grad(relu2(x), x, g)[0], torch.autograd.grad(F.relu(x).square(), x, g)[0])


def test_flops_per_token_counts_query_heads_and_the_smaller_parameters():
    mha, gqa = small(mlp="swiglu"), small(mlp="swiglu", n_kv_head=1)
    attention = 12 * 2 * 4 * 8 * 16  # 12 L H Q T: every query head still attends over T keys
    assert mha.num_params() - gqa.num_params() == 2 * 2 * (4 - 1) * 8 * 32  # layers x (k, v) x heads fewer
    for m in (mha, gqa):  # (learned positions: their 16 x 32 table is a lookup, no matmul)
        assert m.flops_per_token() == 6 * (m.num_params() - 16 * 32) + attention
    # An untied embedding is a lookup: the same work per token as tied, its 64 x 32 more parameters
    # aside; and rotary positions do the learned table's work without it.
    assert small(tie_embeddings=False).flops_per_token() == small().flops_per_token()
    rope = small(position="rope")
    assert small().num_params() == rope.num_params() + 16 * 32
    assert rope.flops_per_token() == small().flops_per_token()


@pytest.mark.parametrize("name", OPTIONS)
def test_cached_decoding_equals_recomputing(name):
    model = small(**OPTIONS[name])
    idx = torch.randint(0, VOCAB, (1, 5))
    with torch.no_grad():
        seq = torch.randint(0, VOCAB, (2, 12))
        full, _ = model(seq, seq)  # (B, T, V): every position's logits, no cache
        cache = KVCache(model.config, 2, "cpu", torch.float32)
        model(seq[:, :7], cache=cache)  # a prefill, then one token at a time
        steps = torch.cat([model(seq[:, t:t + 1], cache=cache)[0] for t in range(7, 12)], dim=1)
    assert torch.allclose(steps, full[:, 7:], atol=1e-5)
    # Greedy sampling: the same tokens as recomputing without a cache, past block_size (16) too,
    # where the cache is prefilled again half a window at a time (twice in 5 + 30 tokens).
    assert [int(t[0]) for t in sample_tokens(model, idx, 30, temperature=0.0)] == \
        _reference_tokens(model, idx, 30)


@pytest.mark.parametrize("name", ["learned", *OPTIONS])
def test_chunks_appended_to_a_filled_cache_see_everything_cached(name):
    """Several tokens after cached ones (a prefill in chunks): each new token attends to every
    cached position and the new ones up to itself, so the logits are the full forward's."""
    model = small(**OPTIONS.get(name, {}))
    seq = torch.randint(0, VOCAB, (2, 14), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full, _ = model(seq, seq)  # (B, T, V)
        cache, chunks, start = KVCache(model.config, 2, "cpu", torch.float32), [], 0
        for size in (5, 4, 1, 3, 1):
            part = seq[:, start:start + size]
            chunks.append(model(part, part, cache=cache)[0])
            start += size
    assert cache.pos == 14 and torch.allclose(torch.cat(chunks, dim=1), full, atol=1e-5)


def test_generation_allocates_the_cache_it_fills_not_the_whole_context(monkeypatch):
    """A model of a long context (an imported Llama 3.2: 131,072 positions) answering a short
    prompt: the cache holds the prompt and the new tokens, with the same tokens as recomputing."""
    import mypt.generate

    model = GPT(GPTConfig(**{**SMALL, "block_size": 4096}, position="rope")).eval()
    made = []

    class Recorded(KVCache):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self.k.shape[3])

    monkeypatch.setattr(mypt.generate, "KVCache", Recorded)
    idx = torch.randint(0, VOCAB, (1, 5), generator=torch.Generator().manual_seed(0))
    tokens = [int(t[0]) for t in sample_tokens(model, idx, 8, temperature=0.0)]
    assert made == [5 + 8 - 1] and tokens == _reference_tokens(model, idx, 8)
    # A context of one token (block_size 1 is allowed): each token sees itself only.
    one = GPT(GPTConfig(**{**SMALL, "block_size": 1}, position="rope")).eval()
    for cache in (True, False):
        tokens = [int(t[0]) for t in sample_tokens(one, idx, 4, temperature=0.0, use_cache=cache)]
        assert tokens == _reference_tokens(one, idx, 4), cache


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("the cat sat on the mat\na dog ran to the log\nwe see the sea\n" * 40)
    return path


# Each run costs about 0.6 s of CPU: the combination (every code path but relu2's) and relu2 are
# in the quick loop, the single options, whose paths the combination covers, in the full run.
RESUMED = [name if name in ("all", "relu2") else pytest.param(name, marks=pytest.mark.slow) for name in OPTIONS]


@pytest.mark.parametrize("name", RESUMED)
def test_option_trains_and_a_resumed_run_ends_byte_exactly_where_a_straight_one_does(name, text_file, tmp_path,
                                                                                     monkeypatch):
    """`mypt train`'s flags (in-process): 6 steps straight, against the checkpoint of step 3
    copied away mid-run (the "kill") and resumed to step 6."""
    monkeypatch.chdir(tmp_path)
    flags = {"input_file": text_file, "config_file": "tiny", "device": "cpu", "max_iters": 6, "eval_interval": 3,
             "eval_iters": 1, "batch_size": 4, "block_size": 16, "log_interval": 1, "dropout": 0.1, **OPTIONS[name]}

    def copy_at_step_3(line: str) -> None:
        if line.startswith("iter 4:"):
            shutil.copytree(tmp_path / "checkpoints/straight", tmp_path / "checkpoints/resumed")

    straight = run_from_flags({**flags, "model_name": "straight"}, log=copy_at_step_3, read_text=read_input_text)
    run_from_flags({**flags, "model_name": "resumed", "resume": True}, log=lambda line: None,
                   read_text=read_input_text)
    saved = json.loads((tmp_path / "checkpoints/straight/config.json").read_text())["model"]
    assert {k: saved[k] for k in OPTIONS[name]} == OPTIONS[name]
    losses = [h["train_loss"] for h in straight["history"] if "train_loss" in h]
    assert len(losses) == 6 and all(math.isfinite(x) for x in losses) and losses[-1] < losses[0]
    for f in ("model.safetensors", "training_state.safetensors", "training_state.json"):
        assert (tmp_path / "checkpoints/straight" / f).read_bytes() == \
            (tmp_path / "checkpoints/resumed" / f).read_bytes(), f


@pytest.mark.slow
def test_modern_recipe_through_the_cli_trains_and_generates_as_without_the_cache(text_file, tmp_path):
    # The flags as a user types them (--qk_norm a boolean flag, --n_kv_head a number); the
    # resume itself is checked in-process above.
    mypt_cli("train", "--input_file", str(text_file), "--config_file", "tiny", "--device", "cpu", *ALL,
             "--model_name", "m", "--max_iters", "4", "--eval_interval", "4", cwd=tmp_path)
    model = json.loads((tmp_path / "checkpoints/m/config.json").read_text())["model"]
    assert (model["position"], model["norm"], model["mlp"], model["n_kv_head"], model["qk_norm"]) == \
        ("rope", "rmsnorm", "swiglu", 1, True)
    # mypt generate decodes with the cache; the same greedy text recomputed without it:
    shown = mypt_cli("generate", "--model_name", "m", "--prompt", "the ", "--max_new_tokens", "40",
                     "--temperature", "0", cwd=tmp_path).stdout
    model, tok, _ = load_model(tmp_path / "checkpoints/m")
    assert generate(model, tok, "the ", 40, temperature=0, use_cache=False)[0] in shown


def test_another_architecture_names_the_kv_heads_a_user_typed(text_file, tmp_path, monkeypatch):
    """n_kv_head equal to n_head is recorded as no setting (None): refused against a GQA
    checkpoint, the message says the heads given, not "None"."""
    from mypt.errors import ConfigError

    monkeypatch.chdir(tmp_path)
    flags = {"input_file": text_file, "config_file": "tiny", "device": "cpu", "max_iters": 1, "eval_interval": 1,
             "eval_iters": 1, "batch_size": 2, "block_size": 16}
    run_from_flags({**flags, "model_name": "gqa", "n_kv_head": 1}, log=lambda line: None, read_text=read_input_text)
    new = {"input_file": text_file, "device": "cpu", "max_iters": 1, "model_name": "b", "init_from_model": "gqa"}
    with pytest.raises(ConfigError, match=r"n_kv_head 2 \(the checkpoint: 1\); .* pass its --n_kv_head 1$"):
        run_from_flags({**new, "n_kv_head": 2}, log=lambda line: None, read_text=read_input_text)


@pytest.mark.slow  # (2 s: the full run's)
def test_a_new_run_from_a_model_may_take_another_context_length(text_file, tmp_path, monkeypatch):
    """nanoGPT's crop_block_size: learned positions keep their first rows (the model computes
    what it did on shorter sequences) and cannot grow; rotary ones hold no weights."""
    from mypt.errors import ConfigError

    monkeypatch.chdir(tmp_path)
    flags = {"input_file": text_file, "config_file": "tiny", "device": "cpu", "max_iters": 1, "eval_interval": 1,
             "eval_iters": 1, "batch_size": 2, "block_size": 16}
    quiet = {"log": lambda line: None, "read_text": read_input_text}
    run_from_flags({**flags, "model_name": "learned"}, **quiet)
    run_from_flags({**flags, "model_name": "rope", "position": "rope"}, **quiet)
    new = {"input_file": text_file, "device": "cpu", "max_iters": 0, "eval_interval": 1, "eval_iters": 1,
           "batch_size": 2}
    run_from_flags({**new, "model_name": "short", "init_from_model": "learned", "block_size": 8}, **quiet)
    base, _, _ = load_model(tmp_path / "checkpoints/learned")
    short, _, _ = load_model(tmp_path / "checkpoints/short")
    assert short.config.block_size == 8 and short.transformer.wpe.weight.shape[0] == 8
    x = torch.randint(0, base.config.vocab_size, (1, 8))
    with torch.no_grad():
        assert torch.equal(short.eval()(x, x)[0], base.eval()(x, x)[0])
    with pytest.raises(ConfigError, match="--block_size 32: .* learned positions up to 16 only"):
        run_from_flags({**new, "model_name": "long", "init_from_model": "learned", "block_size": 32}, **quiet)
    run_from_flags({**new, "model_name": "long", "init_from_model": "rope", "block_size": 32}, **quiet)
    assert load_model(tmp_path / "checkpoints/long")[0].config.block_size == 32
    with pytest.raises(ConfigError, match="block_size 8 \\(the checkpoint: 16\\)"):  # a resume keeps its own
        run_from_flags({**flags, "model_name": "learned", "resume": True, "max_iters": 2, "block_size": 8}, **quiet)
    # The rotation holds no weights either: a new run may extend the context with another base
    # or Llama 3's scaling; a resume keeps its own.
    scaled = OPTIONS["rope_scaling"]["rope_scaling"]
    run_from_flags({**new, "model_name": "scaled", "init_from_model": "rope", "block_size": 32,
                    "rope_theta": 40000.0, "rope_scaling": scaled}, **quiet)
    model = load_model(tmp_path / "checkpoints/scaled")[0]
    assert (model.config.rope_theta, model.config.rope_scaling, model.config.block_size) == (40000.0, scaled, 32)
    rope = load_model(tmp_path / "checkpoints/rope")[0]
    assert all(torch.equal(t, rope.state_dict()[k]) for k, t in model.state_dict().items())  # its weights
    with pytest.raises(ConfigError, match=r"rope_theta 500.0 \(the checkpoint: 40000.0\)"):
        run_from_flags({**new, "model_name": "scaled", "resume": True, "max_iters": 1, "rope_theta": 500.0}, **quiet)
    # A config file for the run gives its training settings and the model settings it names; the
    # model's others stay (its defaults put rope_theta 10000 and block_size 256 in their place).
    (tmp_path / "ft.json").write_text(json.dumps({"model": {"n_layer": 2}, "training": {"learning_rate": 1e-3}}))
    run_from_flags({**new, "model_name": "tuned", "init_from_model": "scaled", "config_file": str(tmp_path / "ft.json")},
                   **quiet)
    tuned = load_model(tmp_path / "checkpoints/tuned")[0].config
    assert tuned == model.config
    # A file's setting that does not fit the model's others is said to come with them.
    (tmp_path / "heads.json").write_text(json.dumps({"model": {"n_head": 3}}))
    with pytest.raises(ConfigError, match=rf"heads.json with the settings of .*scaled it leaves out: model setting "
                                          r"n_embd \(32\) must be divisible by n_head \(3\)"):
        run_from_flags({**new, "model_name": "bad", "init_from_model": "scaled",
                        "config_file": str(tmp_path / "heads.json")}, **quiet)
    # A resume with a config file keeps the run's dropout (tiny's 0.0 would change it unsaid).
    run_from_flags({**flags, "model_name": "dropped", "dropout": 0.2, "max_iters": 1}, **quiet)
    run_from_flags({**flags, "model_name": "dropped", "resume": True, "max_iters": 2}, **quiet)
    assert load_model(tmp_path / "checkpoints/dropped")[0].config.dropout == 0.2
    # The checkpoint's --rope_scaling is told whole, to be passed as it is; `none` clears it.
    with pytest.raises(ConfigError, match=rf"pass its --rope_scaling {scaled}$"):
        run_from_flags({**new, "model_name": "scaled", "resume": True, "max_iters": 1,
                        "rope_scaling": scaled.replace("factor=4.0", "factor=2.0", 1)}, **quiet)
    with pytest.raises(ConfigError, match=rf"pass its --rope_scaling {scaled}$"):
        run_from_flags({**new, "model_name": "scaled", "resume": True, "max_iters": 1, "rope_scaling": "none"}, **quiet)
    with pytest.raises(ConfigError, match=r"--rope_scaling 'llama3:.*' \(the checkpoint: None\); .* pass its "
                                          r"--rope_scaling none$"):
        run_from_flags({**new, "model_name": "rope", "resume": True, "max_iters": 1, "rope_scaling": scaled}, **quiet)
    run_from_flags({**new, "model_name": "unscaled", "init_from_model": "scaled", "rope_scaling": "None"}, **quiet)
    assert load_model(tmp_path / "checkpoints/unscaled")[0].config == dataclasses.replace(model.config,
                                                                                          rope_scaling=None)
    # Refused for another setting, the message names that one only, not those a new run may change.
    # Each setting is said where it came from: a flag, or the config file.
    with pytest.raises(ConfigError, match=r"has another architecture than this run's settings: --n_layer 3 \(the "
                                          r"checkpoint: 2\); .* pass its --n_layer 2$"):
        run_from_flags({**new, "model_name": "other", "init_from_model": "rope", "config_file": "tiny",
                        "position": "rope", "n_layer": 3}, **quiet)
    (tmp_path / "wide.json").write_text(json.dumps({"model": {"n_embd": 64}}))
    with pytest.raises(ConfigError, match=rf"than this run's settings: --n_layer 3 \(the checkpoint: 2\), n_embd 64 "
                                          rf"in --config_file {re.escape(str(tmp_path / 'wide.json'))} \(the checkpoint: "
                                          r"32\); .* "
                                          r"pass its --n_layer 2 --n_embd 32$"):
        run_from_flags({**new, "model_name": "other", "init_from_model": "rope",
                        "config_file": str(tmp_path / "wide.json"), "n_layer": 3}, **quiet)
    # A setting that only follows another (n_kv_head follows n_head) is not named when neither
    # side gave it, nor one the run's other settings leave acting on nothing (tiny's exact GELU
    # under --mlp swiglu); widths are said by their values, not None, and can be passed back.
    with pytest.raises(ConfigError, match=r"settings: --n_head 4 \(the checkpoint: 2\); .* pass its --n_head 2$"):
        run_from_flags({**new, "model_name": "other", "init_from_model": "rope", "n_head": 4}, **quiet)
    with pytest.raises(ConfigError, match=r"settings: --mlp 'swiglu' \(the checkpoint: 'gelu'\); .* pass its --mlp gelu$"):
        run_from_flags({**flags, "model_name": "rope", "resume": True, "max_iters": 2, "mlp": "swiglu"}, **quiet)
    run_from_flags({**flags, "model_name": "narrow", "head_size": 4, "mlp_width": 32}, **quiet)
    with pytest.raises(ConfigError, match=r"settings: --head_size 8 \(the checkpoint: 4\), --mlp_width 128 \(the "
                                          r"checkpoint: 32\); .* pass its --head_size 4 --mlp_width 32$"):
        run_from_flags({**new, "model_name": "other", "init_from_model": "narrow", "head_size": 8, "mlp_width": 128},
                       **quiet)


def test_norm_eps_and_rope_scaling_change_what_the_model_computes_and_bad_values_are_named():
    """Each setting acts (a model differing only in it computes other logits), and a value that
    cannot be right is refused naming the setting and the form to write."""
    x = torch.randint(0, VOCAB, (2, 16), generator=torch.Generator().manual_seed(0))
    base = small(position="rope", qk_norm=True)
    for options in ({"norm_eps": 1e-1}, {"rope_scaling": OPTIONS["rope_scaling"]["rope_scaling"]}):
        other = small(position="rope", qk_norm=True, **options)
        other.load_state_dict(base.state_dict())
        assert not torch.allclose(base(x, x)[0], other(x, x)[0], atol=1e-4), options
    # One spelling: numbers as Python writes them; without rotary positions, no scaling.
    assert GPTConfig(**SMALL, position="rope", rope_scaling="llama3:factor=4,low_freq_factor=1,high_freq_factor=4,"
                     "original_max_position_embeddings=8").rope_scaling == OPTIONS["rope_scaling"]["rope_scaling"]
    assert GPTConfig(**SMALL, rope_scaling=OPTIONS["rope_scaling"]["rope_scaling"]).rope_scaling is None
    assert GPTConfig(**SMALL, position="rope", rope_scaling="llama3:factor=1,low_freq_factor=1,high_freq_factor=4,"
                     "original_max_position_embeddings=8").rope_scaling is None  # scales nothing
    for text, named in (("linear:factor=2", "only Llama 3's RoPE scaling is supported; write llama3:factor=NUMBER,"),
                        ("llama3:factor=8", "has no low_freq_factor, high_freq_factor, original_max_position_embeddings"),
                        ("llama3:factor=8,factor=2", "'factor=2' is not one of"),
                        ("llama3:factor=x,low_freq_factor=1,high_freq_factor=4,original_max_position_embeddings=8",
                         "factor 'x' is not a finite number"),
                        ("llama3:factor=8,low_freq_factor=1,high_freq_factor=4,original_max_position_embeddings=inf",
                         "original_max_position_embeddings 'inf' is not a finite number"),
                        ("llama3:factor=8,low_freq_factor=4,high_freq_factor=1,original_max_position_embeddings=8",
                         "needs factor >= 1, 0 < low_freq_factor <= high_freq_factor, and a whole "
                         "original_max_position_embeddings from 1 to 2,147,483,648 (got factor 8.0, "
                         "low_freq_factor 4.0"),
                        ("llama3:factor=8,low_freq_factor=1,high_freq_factor=4,original_max_position_embeddings=1e20",
                         "original_max_position_embeddings 1e+20)")):
        with pytest.raises(ConfigError, match="model setting rope_scaling: ") as error:
            GPTConfig.from_dict({**SMALL, "position": "rope", "rope_scaling": text})
        assert named in str(error.value), str(error.value)


@pytest.mark.slow  # (2 s: the full run's)
def test_a_config_file_may_give_rope_scaling_in_hugging_faces_object_form(tmp_path):
    """A config.json's rope_scaling pasted into a config file (or params.yaml) as the object it
    is there: it means the text form's scaling, and the checkpoint records that text; another
    rope_type, or a key mypt does not take, is refused naming it and both forms."""
    scaling = {"rope_type": "llama3", "factor": 4, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 8}
    assert GPTConfig.from_dict({**SMALL, "position": "rope", "rope_scaling": scaling}).rope_scaling == \
        OPTIONS["rope_scaling"]["rope_scaling"]
    older = {("type" if k == "rope_type" else k): v for k, v in scaling.items()}  # (transformers 4's key)
    assert GPTConfig.from_dict({**SMALL, "position": "rope", "rope_scaling": older}).rope_scaling == \
        OPTIONS["rope_scaling"]["rope_scaling"]
    (tmp_path / "t.txt").write_text("the cat sat on the mat\na dog ran to the log\nwe see the sea\n" * 40)
    (tmp_path / "c.json").write_text(json.dumps({"model": {**SMALL, "position": "rope", "rope_scaling": scaling}}))
    mypt_cli("train", "--input_file", tmp_path / "t.txt", "--tokenization", "char", "--config_file",
             tmp_path / "c.json", "--model_name", "m", "--checkpoints_dir", tmp_path / "ck", "--max_iters", "1",
             "--device", "cpu", cwd=tmp_path)
    saved = json.loads((tmp_path / "ck" / "m" / "config.json").read_text())["model"]
    assert saved["rope_scaling"] == OPTIONS["rope_scaling"]["rope_scaling"]
    forms = ("write an object of rope_type llama3 and the numbers factor, low_freq_factor, high_freq_factor, "
             "original_max_position_embeddings, or the text llama3:factor=NUMBER,")
    for bad, named in (({**scaling, "rope_type": "yarn"}, "8}: rope_type 'yarn'; " + forms),
                       ({**scaling, "rope_theta": 500000.0}, "key(s) rope_theta; write"),
                       ({"rope_type": "llama3", "factor": 4}, "4}: no low_freq_factor, high_freq_factor, "
                                                              "original_max_position_embeddings; write"),
                       ({**scaling, "factor": "8,low_freq_factor=2"}, "factor '8,low_freq_factor=2': not numbers"),
                       ({**scaling, "factor": True, "low_freq_factor": float("nan")},
                        "factor True, low_freq_factor nan: not numbers"),
                       ({}, "{}: rope_type None; write"), ([], "[] (list): " + forms), (8, "8 (int): " + forms),
                       ({**scaling, "low_freq_factor": 5.0},
                        "needs factor >= 1, 0 < low_freq_factor <= high_freq_factor")):
        with pytest.raises(ConfigError, match="model setting rope_scaling: ") as error:
            GPTConfig.from_dict({**SMALL, "position": "rope", "rope_scaling": bad})
        assert named in str(error.value), str(error.value)


def test_rope_scaling_none_on_the_command_line_clears_a_files_or_a_models_scaling(tmp_path, monkeypatch):
    """`--rope_scaling none` (any case) through click: a new run without the config file's or
    the starting model's scaling; a resume that would drop it is refused, naming both values."""
    from click.testing import CliRunner

    from mypt.cli import main

    monkeypatch.chdir(tmp_path)
    Path("t.txt").write_text("the cat sat on the mat\na dog ran to the log\nwe see the sea\n" * 40)
    scaled = OPTIONS["rope_scaling"]["rope_scaling"]
    Path("c.json").write_text(json.dumps({"model": {**SMALL, "position": "rope", "rope_scaling": scaled}}))
    train = ["train", "--input_file", "t.txt", "--tokenization", "char", "--max_iters", "1", "--device", "cpu"]

    def run(*flags: str):
        return CliRunner().invoke(main, [*train, *flags])

    def saved(name: str):
        return json.loads(Path(f"checkpoints/{name}/config.json").read_text())["model"]["rope_scaling"]

    assert run("--config_file", "c.json", "--model_name", "s").exit_code == 0 and saved("s") == scaled
    done = run("--config_file", "c.json", "--model_name", "n", "--rope_scaling", "NONE")
    assert done.exit_code == 0 and "has no effect" not in done.output, done.output
    assert saved("n") is None
    assert run("--init_from_model", "s", "--model_name", "f", "--rope_scaling", " none ").exit_code == 0
    assert saved("f") is None
    refused = run("--model_name", "s", "--resume", "--max_iters", "2", "--rope_scaling", "none")
    assert refused.exit_code == 1 and "Traceback" not in refused.output, refused.output
    assert f"--rope_scaling none (the checkpoint: '{scaled}')" in refused.output
    assert refused.output.rstrip().endswith(f"pass its --rope_scaling {scaled}"), refused.output
    bad = run("--config_file", "c.json", "--model_name", "b", "--rope_scaling", "")
    assert bad.exit_code == 2 and "original_max_position_embeddings=NUMBER (or none)" in bad.output, bad.output
