"""GPT-2-style language model: pre-LayerNorm blocks, learned positions, tied embeddings,
attention through F.scaled_dot_product_attention (flash kernels on GPU). GPTConfig's options
swap in the modern recipe's parts (rotary positions, RMSNorm, SwiGLU or squared-ReLU MLPs of
any width, grouped-query attention, QK-norm, an output head untied from the embedding) under the
same parameter names, so the defaults are GPT-2's to the bit and a Llama export maps the names
one to one.

`GPT.fit(...)` is the programmatic training API (it calls mypt.train.fit, which never
imports this module: imports flow one way); generation with a KV cache is in mypt.generate.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from mypt import checkpoint
from mypt.config import GPTConfig
from mypt.errors import CheckpointError, listed
from mypt.names import CONFIG_FILE, TIED, unstored
from mypt.tokenizer_match import check_model_tokenizer
from mypt.tokenizers import Tokenizer

_DECODE_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


class _RMSNormFn(torch.autograd.Function):
    """x / sqrt(mean(x^2) + eps) * weight over the last dimension, with a hand-written backward.
    torch's CPU rms_norm is a chain of elementwise ops whose autograd graph costs 2.2x LayerNorm's
    fused kernel (fwd + bwd, 16 x 128 x 128): this one makes three passes forward and six back.
    `weight` may have more dimensions than one (the QK-norm's per-head weights, (H, head_dim))."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        # The norm, not mean(x^2): one pass and no tensor of x's size (pow's costs more than the
        # matmuls' share on the CPU).
        rstd = torch.linalg.vector_norm(x, dim=-1, keepdim=True).square_().div_(x.size(-1)).add_(eps).rsqrt_()
        xhat = x * rstd
        ctx.save_for_backward(xhat, rstd, weight)
        return xhat * weight

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        xhat, rstd, weight = ctx.saved_tensors
        g = grad * weight
        dot = (g * xhat).mean(-1, keepdim=True)
        dx = g.sub_(xhat * dot).mul_(rstd)
        lead = grad.dim() - weight.dim()
        dw = (grad * xhat).sum(dim=tuple(range(lead))) if ctx.needs_input_grad[1] else None
        return dx, dw, None


class RMSNorm(nn.RMSNorm):
    """nn.RMSNorm (same parameter, same state dict) computed by _RMSNormFn where it pays: on the
    CPU in float32, training or not. Elsewhere (autocast, CUDA, compiled) torch's own."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    if (x.device.type == "cpu" and x.dtype == weight.dtype == torch.float32
            and not torch.is_autocast_enabled("cpu") and not torch.compiler.is_compiling()):
        return _RMSNormFn.apply(x, weight, eps)
    if weight.dim() == 1:
        return F.rms_norm(x, (x.size(-1),), weight, eps)
    return F.rms_norm(x, (x.size(-1),), None, eps) * weight


def _norm(cfg: GPTConfig) -> nn.Module:
    """ln_1, ln_2 and ln_f: GPT-2's LayerNorm, or RMSNorm (Llama: a weight, no bias, whatever --bias says)."""
    if cfg.norm == "rmsnorm":
        return RMSNorm(cfg.n_embd, eps=cfg.norm_eps)
    return nn.LayerNorm(cfg.n_embd, eps=cfg.norm_eps, bias=cfg.bias)


# ---------------------------------------------------------------------------------------------
# rotary positions, in Hugging Face Llama's convention (so an exported model computes the same):
# dimension i of a head pairs with i + head_dim/2 ("rotate_half"), not with i + 1 (the paper's)

def rope_tables(cfg: GPTConfig, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and signed sin, (T, head_dim) in float32, of the positions `pos` (T,): apply_rope's
    tables. The sin table's first half is negated, so the rotation is x * cos + swap(x) * sin
    with the halves of x swapped, one copy instead of a negation and a concatenation. Computed
    in float32 even under autocast: in bfloat16 the angles of positions up to 1000 are off by up
    to 3.6 radians."""
    hd = cfg.head_dim
    with torch.autocast(pos.device.type, enabled=False):
        inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, hd, 2, device=pos.device).float() / hd))
        if cfg.rope_scaling is not None:
            inv_freq = llama3_frequencies(inv_freq, cfg.rope_scaling_params)
        freqs = torch.outer(pos.float(), inv_freq)  # (T, hd/2)
        sin = freqs.sin()
        return torch.cat((freqs, freqs), dim=-1).cos(), torch.cat((-sin, sin), dim=-1)


def llama3_frequencies(inv_freq: torch.Tensor, params: dict) -> torch.Tensor:
    """Llama 3.1's RoPE scaling (a longer context than pre-training's without retraining the
    fast rotations): a frequency whose wavelength fits high_freq_factor times into the original
    context is kept, one whose wavelength is longer than original / low_freq_factor is divided
    by `factor`, and those between blend the two by where the context count falls between the
    two factors; equal factors make it a step, no blend. (Hugging Face's `llama3` rope_type computes
    the same, but for a frequency exactly at equal factors' edge, which it makes NaN and this keeps.)"""
    factor, low, high = params["factor"], params["low_freq_factor"], params["high_freq_factor"]
    original = float(params["original_max_position_embeddings"])  # (an int past int64 would not multiply)
    fits = original * inv_freq / (2 * math.pi)  # how many wavelengths fit in the original context
    blend = ((fits - low) / (high - low)).clamp(0.0, 1.0) if high > low \
        else (fits >= high).to(inv_freq.dtype)  # 0: slow (divided), 1: fast (kept)
    return inv_freq / factor * (1 - blend) + inv_freq * blend


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate queries or keys x (..., T, hd) by their positions' angles (rope_tables' (T, hd)
    tables, or shaped to broadcast with x), in x's dtype: x * cos + rotate_half(x) * sin, where
    rotate_half(x) = [-x2, x1] and the minus is in the table."""
    swapped = x.roll(x.size(-1) // 2, dims=-1)  # [x2, x1]
    return x * cos.to(x.dtype) + swapped * sin.to(x.dtype)


class _Relu2Fn(torch.autograd.Function):
    """relu(x)^2 keeping relu(x) only: its backward, 2 relu(x) grad, is one product where
    autograd's chain (square's backward, then relu's) makes three passes (bench: 0.28 ms against
    1.08 fwd + bwd at 16 x 128 x 512, float32 CPU)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        r = torch.relu(x)
        ctx.save_for_backward(r)
        return r * r

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (r,) = ctx.saved_tensors
        return grad * (r + r)


def relu2(x: torch.Tensor) -> torch.Tensor:
    """relu(x)^2. Without autograd x is overwritten (the MLP's c_fc output, used once): two
    passes in place, where a new 8 MB tensor each (eval's batch 32 of the demo model) made
    the eval stage 1.7x slower than GPT-2's."""
    if torch.compiler.is_compiling():
        return F.relu(x).square()
    if torch.is_grad_enabled() and x.requires_grad:
        return _Relu2Fn.apply(x)
    return x.relu_().square_()


# ---------------------------------------------------------------------------------------------
# the block

class CausalSelfAttention(nn.Module):
    """Multi-head attention; with n_kv_head < n_head grouped-query attention: each key/value head
    serves n_head / n_kv_head consecutive query heads (Hugging Face's repeat_kv order). c_attn's
    output rows are [queries | keys | values], so the default is GPT-2's fused layout."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.n_head, self.kv_heads, self.head_dim = cfg.n_head, cfg.kv_heads, cfg.head_dim
        self.attn_width, self.dropout = cfg.attn_width, cfg.dropout
        self.c_attn = nn.Linear(cfg.n_embd, (cfg.n_head + 2 * cfg.kv_heads) * cfg.head_dim,
                                bias=cfg.bias or cfg.qkv_bias)
        self.c_proj = nn.Linear(cfg.attn_width, cfg.n_embd, bias=cfg.bias)
        self.resid_dropout = nn.Dropout(cfg.dropout)
        self.q_norm = nn.RMSNorm(cfg.head_dim, eps=cfg.norm_eps) if cfg.qk_norm else None
        self.k_norm = nn.RMSNorm(cfg.head_dim, eps=cfg.norm_eps) if cfg.qk_norm else None
        # Only when the heads differ: the plain call stays the one GPT-2 checkpoints were trained with.
        self.sdpa_kw = {"enable_gqa": True} if cfg.kv_heads != cfg.n_head else {}

    def forward(self, x: torch.Tensor, cache: "KVCache | None" = None, layer: int = 0,
                rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        B, T, _ = x.shape
        hd, kv = self.head_dim, self.kv_heads * self.head_dim
        qk, v = self.c_attn(x).split([self.attn_width + kv, kv], dim=2)
        v = v.view(B, T, self.kv_heads, hd).transpose(1, 2)  # (B, n_kv, T, hs)
        qk = qk.view(B, T, self.n_head + self.kv_heads, hd)
        # The QK-norm and the rotation act on each head alike: queries and keys go through them
        # as one tensor (half the kernels of doing each apart, which cost more than the matmuls
        # at the demo's size on a CPU).
        if self.q_norm is not None:  # per head, before the rotation (as Qwen3 and OLMo 2 do)
            weight = torch.cat((self.q_norm.weight.expand(self.n_head, hd),
                                self.k_norm.weight.expand(self.kv_heads, hd)))
            qk = rms_norm(qk, weight, self.q_norm.eps)
        if rope is not None:
            cos, sin = rope  # (T, hs): one row per position, broadcast over the heads
            qk = apply_rope(qk, cos[:, None], sin[:, None])
        # A norm run in float32 by autocast would leave q, k and v in different dtypes for SDPA.
        q, k = qk.to(v.dtype).transpose(1, 2).split([self.n_head, self.kv_heads], dim=1)  # (B, nh | n_kv, T, hs)
        if cache is None and x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            # Under CPU autocast only the linear layers run in bfloat16: torch's CPU flash
            # attention is slower in bfloat16 than in float32, enough to make the whole step
            # slower than float32's (bench/train_cpu.py --levers).
            with torch.autocast("cpu", enabled=False):
                y = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=True,
                                                   dropout_p=self.dropout if self.training else 0.0, **self.sdpa_kw)
        elif cache is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                               dropout_p=self.dropout if self.training else 0.0, **self.sdpa_kw)
        else:
            start = cache.pos
            k, v = cache.append(layer, k, v)  # (B, n_kv, pos+T, hs): the cache holds n_kv heads only
            # One new token attends to everything cached; a prefill at position 0 is causal among
            # its own tokens. T tokens after cached ones need the mask aligned bottom-right (new
            # token i sees the start cached keys and new ones 0..i): SDPA's is_causal aligns it
            # top-left, which would hide the cache from them.
            mask = None
            if start > 0 and T > 1:
                mask = torch.ones(T, start + T, dtype=torch.bool, device=q.device).tril(diagonal=start)
            # Not cuDNN: it builds a new plan for every cache length, which made bf16 decoding
            # 8x slower than recomputing the window (20 against 161 tok/s at 124M on an H200).
            with sdpa_kernel(_DECODE_BACKENDS):
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=start == 0 and T > 1,
                                                   **self.sdpa_kw)
        y = y.transpose(1, 2).contiguous().view(B, T, self.attn_width)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    """gelu: GPT-2's. swiglu: c_fc's output rows are [gate | up], c_proj(silu(gate) * up) (Llama).
    relu2: c_proj(relu(c_fc(x))^2) (Primer; modded-nanogpt)."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.kind, hidden = cfg.mlp, cfg.mlp_hidden
        self.c_fc = nn.Linear(cfg.n_embd, (2 if cfg.mlp == "swiglu" else 1) * hidden, bias=cfg.bias)
        self.c_proj = nn.Linear(hidden, cfg.n_embd, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)
        self.approximate = "tanh" if cfg.gelu == "tanh" else "none"  # F.gelu's names

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.c_fc(x)
        if self.kind == "swiglu":
            gate, up = h.chunk(2, dim=-1)
            h = F.silu(gate) * up
        elif self.kind == "relu2":
            h = relu2(h)
        else:
            h = F.gelu(h, approximate=self.approximate)
        return self.dropout(self.c_proj(h))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln_1 = _norm(cfg)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = _norm(cfg)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, cache: "KVCache | None" = None, layer: int = 0,
                rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cache, layer, rope)
        return x + self.mlp(self.ln_2(x))


class KVCache:
    """Keys and values of every layer for positions already seen, preallocated to `length`
    positions (default block_size; generation asks for what the prompt and the new tokens
    fill: an imported Llama 3.2 of 131,072 positions would otherwise take 8.6 GB of cache in
    float32 for a short answer). Keys are stored rotated (rope) and n_kv_head heads wide:
    grouped-query attention's point is a cache n_head / n_kv_head times smaller."""

    def __init__(self, cfg: GPTConfig, batch: int, device, dtype, length: int | None = None):
        length = cfg.block_size if length is None else min(length, cfg.block_size)
        shape = (cfg.n_layer, batch, cfg.kv_heads, length, cfg.head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.pos = 0  # positions filled (advanced by the model after all layers ran)

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        end = self.pos + k.size(2)
        self.k[layer, :, :, self.pos:end] = k
        self.v[layer, :, :, self.pos:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        # Validated again, as a copy: a field assigned after GPTConfig(...) skips its checks, and a
        # model of n_head 3 with n_embd 16 saves a checkpoint no command can load.
        cfg = cfg.checked()
        self.config = cfg
        layers = dict(wte=nn.Embedding(cfg.padded_vocab_size, cfg.n_embd))
        if cfg.position == "learned":  # rope has no table: positions rotate queries and keys
            layers["wpe"] = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.transformer = nn.ModuleDict(dict(
            **layers,
            drop=nn.Dropout(cfg.dropout),
            h=nn.ModuleList([Block(cfg) for _ in range(cfg.n_layer)]),
            ln_f=_norm(cfg),
        ))
        self.lm_head = nn.Linear(cfg.n_embd, cfg.padded_vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.transformer.wte.weight = self.lm_head.weight
        if self.lm_head.weight.is_meta:  # on_meta's: no values to draw (0.04 s of its 0.05 s at 124M)
            return
        self.apply(self._init_weights)
        # GPT-2: the projections that write into the residual stream (the attention's and the
        # MLP's, both named c_proj: a new layer that adds to the residual stream must use that
        # name to get this) are scaled by 1/sqrt(2 * n_layer) so the stream's variance stays put.
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def set_dropout(self, p: float) -> None:
        """Another dropout rate for these weights (dropout holds none): fine-tuning a model
        trained without dropout, in place, with no second copy of the weights."""
        self.config = dataclasses.replace(self.config, dropout=p)
        for module in self.modules():
            if isinstance(module, nn.Dropout):
                module.p = p
            elif isinstance(module, CausalSelfAttention):
                module.dropout = p  # the attention's own, passed to scaled_dot_product_attention

    def set_block_size(self, n: int) -> None:
        """Another context length for these weights, in place: learned positions keep their
        first n rows (n no more than they have), rotary ones have no table."""
        if self.config.position == "learned":
            if n > self.config.block_size:
                raise ValueError(f"learned positions up to {self.config.block_size} only")
            wpe = self.transformer.wpe
            wpe.weight = nn.Parameter(wpe.weight.detach()[:n].clone())
            wpe.num_embeddings = n
        self.config = dataclasses.replace(self.config, block_size=n)

    def num_params(self) -> int:
        """Parameters, the tied embedding counted once."""
        return sum(p.numel() for p in self.parameters())

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None,
                cache: KVCache | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(logits, loss). With targets: the logits of every position, detached, and the mean
        cross-entropy (targets -1 ignored). Without: the last position's logits only, and None.

        Logits cover the real vocabulary only (vocab_size ids, not the padded_vocab_size rows
        of the embedding): the padding is there for the matmul's speed, and ids no tokenizer
        can produce must weigh nothing in the loss nor be sampled. An imported model's padded
        rows are zeros, whose logit 0 would otherwise take a share of every softmax."""
        B, T = idx.shape
        start = cache.pos if cache is not None else 0
        if start + T > self.config.block_size:
            raise ValueError(f"sequence of {start + T} tokens exceeds block_size {self.config.block_size}")
        pos = torch.arange(start, start + T, device=idx.device)
        x, rope = self.transformer.wte(idx), None  # (B, T, C)
        if self.config.position == "learned":
            x = x + self.transformer.wpe(pos)
        else:  # one table for all layers; a decoding step's positions start at the cache's
            rope = rope_tables(self.config, pos)
        x = self.transformer.drop(x)
        for i, block in enumerate(self.transformer.h):
            x = block(x, cache, i, rope)
        x = self.transformer.ln_f(x)
        if cache is not None:
            cache.pos += T
        vocab = self.config.vocab_size
        if targets is None:  # only the last position is needed
            return self.lm_head(x[:, [-1], :])[..., :vocab], None  # (B, 1, V)
        # The head's matmul stays padded (aligned shapes); the slice is a view that compile fuses
        # into the cross-entropy, and in eager it costs a copy of the real columns at most.
        logits = self.lm_head(x)[..., :vocab]  # (B, T, V)
        loss = F.cross_entropy(logits.float().reshape(-1, vocab), targets.reshape(-1), ignore_index=-1)
        # Detached: the loss is what trains. A compiled graph that returned the logits with their
        # gradient would fill a zero gradient of their size for the backward on every step
        # (1.2 GB in bf16 at batch 12 of GPT-2 124M) and read it back. For a loss of your own
        # on the logits, call the model without targets.
        return logits.detach(), loss

    def flops_per_token(self) -> float:
        """Training FLOPs per token: 6N + 12 L H Q T (PaLM appendix B). H counts query heads:
        with grouped-query attention each still scores T keys and mixes T values, so fewer
        key/value heads shrink N (c_attn), not the attention term."""
        c = self.config
        # An untied input embedding is a lookup, no matmul (tied, its tensor is the head's, whose
        # matmul N counts once); so is the learned position table (nanoGPT leaves it out too).
        lookup = (0 if c.tie_embeddings else self.transformer.wte.weight.numel()) \
            + (self.transformer.wpe.weight.numel() if c.position == "learned" else 0)
        return 6 * (self.num_params() - lookup) + 12 * c.n_layer * c.n_head * c.head_dim * c.block_size

    def fit(self, data_loader, optimizer=None, eval_data_loaders: dict | None = None, **kwargs):
        """Train on `data_loader` (a GPTDataLoader); evaluate on its val split and on each of
        `eval_data_loaders` ({"general": loader}). See mypt.train.fit for the options."""
        from mypt.train import fit

        return fit(self, data_loader, optimizer=optimizer, eval_data_loaders=eval_data_loaders, **kwargs)


def load_model(path: Path, device: str | torch.device = "cpu",
               shapes_only: bool = False) -> tuple[GPT, Tokenizer, dict]:
    """The model (on `device`), its tokenizer and config.json of a checkpoint directory.
    `shapes_only`: a sharded checkpoint's model comes on the meta device, checked against its
    weights' names and shapes but holding none, its files unhashed (checkpoint.read_weights'):
    a sharded resume shards it and reads each rank's shards (fsdp.fill_shards); a whole
    checkpoint's model is read as without it."""
    config, weights, tokenizer = checkpoint.read_weights(path, shapes_only)
    source, where = f"{Path(path) / CONFIG_FILE}", checkpoint.weights_source(path, config)
    cfg = GPTConfig.from_dict(config.get("model"), source)
    # The padded embedding hides a small vocab_size edit from the weights' shapes: compare
    # with the tokenizer too, or generation would sample ids the tokenizer cannot decode.
    check_model_tokenizer(cfg, tokenizer, f"{source}: the checkpoint's tokenizer",
                          "the checkpoint was edited or damaged", CheckpointError)
    model = on_meta(cfg)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    wrong = [f"{k} {tuple(v.shape)} (config: {expected[k]})" for k, v in weights.items()
             if k in expected and tuple(v.shape) != expected[k]]
    missing = sorted(set(expected) - set(weights) - unstored(cfg))
    unexpected = sorted(set(weights) - set(expected))
    if wrong or missing or unexpected:
        raise CheckpointError(f"{source} does not match the weights in {where} (shapes [{listed(wrong, 3)}], "
                              f"missing [{listed(missing, 3)}], unexpected [{listed(unexpected, 3)}]); the "
                              "checkpoint was edited or damaged")
    checkpoint.check_model_settings(path, config)
    if any(v.is_meta for v in weights.values()):
        return model, tokenizer, config
    check_finite(weights, f"{where}")
    return holding(model, weights, source).to(device), tokenizer, config


def on_meta(cfg: GPTConfig) -> GPT:
    """A GPT of `cfg` on the meta device: every tensor's name, shape and dtype, nothing
    allocated, for holding to fill. A full init on the CPU, all of it overwritten, took 5.4 s of
    a 124M model's 8.6 s load_model (one thread); this build 0.01 s."""
    with torch.device("meta"):
        return GPT(cfg)


def holding(model: GPT, weights: dict[str, torch.Tensor], source: str) -> GPT:
    """`model`, built by on_meta, holding `weights` (names and shapes checked by the caller; the
    tied embedding under either of its names), each in the model's dtype: assigned, not copied.
    No tensor is left on the meta device: one the weights lack is refused, naming `source`."""
    cfg = model.config
    dtypes = {k: v.dtype for k, v in model.state_dict().items()}
    state = {k: v.to(dtypes[k]) for k, v in weights.items()}
    if cfg.tie_embeddings and TIED in state:
        state["lm_head.weight"] = state.pop(TIED)
    model.load_state_dict(state, strict=False, assign=True)
    if cfg.tie_embeddings:  # (assign put a new tensor in lm_head only)
        model.transformer.wte.weight = model.lm_head.weight
    left = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise CheckpointError(f"{source}: no weights for {listed(left, 3)}; the checkpoint was edited or damaged")
    return model


def nonfinite(weights: dict[str, torch.Tensor]) -> dict[str, int]:
    """{name: how many NaN or infinite values it holds} of the tensors of `weights` that hold any.
    One sum per tensor (a NaN or inf anywhere makes it non-finite) costs ~0.06 s per 124M
    parameters; the exact count is taken only for a tensor that fails it."""
    counts = {}
    for name, t in weights.items():
        if not t.is_floating_point() or bool(torch.sum(t, dtype=torch.float32).isfinite()):
            continue
        bad = int((~torch.isfinite(t)).sum())
        if bad:  # (a finite tensor whose sum overflowed float32 passes)
            counts[name] = bad
    return counts


def check_finite(weights: dict[str, torch.Tensor], source: str, counts: dict[str, int] | None = None) -> None:
    """Refuse weights holding NaN or inf (a run that diverged, or an edited file): sampling
    from them fails deep in torch, and their loss is NaN. `counts`: their nonfinite, where the
    caller has it (a sharded model's, summed over the ranks' shards; `weights` then its
    DTensors, whose sizes are the whole tensors')."""
    counts = nonfinite(weights) if counts is None else counts
    name = next((name for name in weights if counts.get(name)), None)
    if name is not None:
        raise CheckpointError(f"{source}: {name} holds {counts[name]:,} NaN or infinite values of "
                              f"{weights[name].numel():,}: the training run that saved it diverged, or the file was "
                              "edited; use an earlier checkpoint of the model, or train it again")
