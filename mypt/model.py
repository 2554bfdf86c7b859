"""GPT-2-style language model: pre-LayerNorm blocks, learned positions, tied embeddings,
attention through F.scaled_dot_product_attention (flash kernels on GPU).

`GPT.fit(...)` is the programmatic training API (it calls mypt.train.fit, which never
imports this module: imports flow one way); generation with a KV cache is in mypt.generate.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from mypt import checkpoint
from mypt.config import GPTConfig
from mypt.errors import CheckpointError
from mypt.tokenizers import Tokenizer



_DECODE_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.n_head, self.n_embd, self.dropout = cfg.n_head, cfg.n_embd, cfg.dropout
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, cache: "KVCache | None" = None, layer: int = 0) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        if cache is None and x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            # Under CPU autocast only the linear layers run in bfloat16: torch's CPU flash
            # attention is slower in bfloat16 than in float32, enough to make the whole step
            # slower than float32's (bench/train_cpu.py --levers).
            with torch.autocast("cpu", enabled=False):
                y = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=True,
                                                   dropout_p=self.dropout if self.training else 0.0)
        elif cache is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                               dropout_p=self.dropout if self.training else 0.0)
        else:
            k, v = cache.append(layer, k, v)  # (B, nh, pos+T, hs)
            # A prefill is causal among its own tokens; one new token attends to everything cached.
            # Not cuDNN: it builds a new plan for every cache length, which made bf16 decoding
            # 8x slower than recomputing the window (20 against 161 tok/s at 124M on an H200).
            with sdpa_kernel(_DECODE_BACKENDS):
                y = F.scaled_dot_product_attention(q, k, v, is_causal=T > 1)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)
        self.approximate = "tanh" if cfg.gelu == "tanh" else "none"  # F.gelu's names

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate=self.approximate)))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, cache: "KVCache | None" = None, layer: int = 0) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cache, layer)
        return x + self.mlp(self.ln_2(x))


class KVCache:
    """Keys and values of every layer for positions already seen, preallocated to block_size."""

    def __init__(self, cfg: GPTConfig, batch: int, device, dtype):
        shape = (cfg.n_layer, batch, cfg.n_head, cfg.block_size, cfg.n_embd // cfg.n_head)
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
        self.config = cfg
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(cfg.padded_vocab_size, cfg.n_embd),
            wpe=nn.Embedding(cfg.block_size, cfg.n_embd),
            drop=nn.Dropout(cfg.dropout),
            h=nn.ModuleList([Block(cfg) for _ in range(cfg.n_layer)]),
            ln_f=nn.LayerNorm(cfg.n_embd, bias=cfg.bias),
        ))
        self.lm_head = nn.Linear(cfg.n_embd, cfg.padded_vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # tied embeddings
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
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))  # (B, T, C)
        for i, block in enumerate(self.transformer.h):
            x = block(x, cache, i)
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
        """Training FLOPs per token: 6N + 12 L H Q T (PaLM appendix B)."""
        c = self.config
        return 6 * self.num_params() + 12 * c.n_layer * c.n_head * (c.n_embd // c.n_head) * c.block_size

    def fit(self, data_loader, optimizer=None, eval_data_loaders: dict | None = None, **kwargs):
        """Train on `data_loader` (a GPTDataLoader); evaluate on its val split and on each of
        `eval_data_loaders` ({"general": loader}). See mypt.train.fit for the options."""
        from mypt.train import fit

        return fit(self, data_loader, optimizer=optimizer, eval_data_loaders=eval_data_loaders, **kwargs)


def load_model(path: Path, device: str | torch.device = "cpu") -> tuple[GPT, Tokenizer, dict]:
    """The model (on `device`), its tokenizer and config.json of a checkpoint directory."""
    config, weights = checkpoint.read_weights(path)
    source = f"{Path(path) / 'config.json'}"
    model = GPT(GPTConfig.from_dict(config.get("model"), source))
    tokenizer = Tokenizer.load(path)
    # The padded embedding hides a small vocab_size edit from the weights' shapes: compare
    # with the tokenizer too, or generation would sample ids the tokenizer cannot decode.
    if model.config.vocab_size != tokenizer.vocab_size:
        raise CheckpointError(f"{source}: vocab_size {model.config.vocab_size} does not match the checkpoint's "
                              f"tokenizer ({tokenizer.vocab_size}); the checkpoint was edited or damaged")
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    wrong = [f"{k} {tuple(v.shape)} (config: {expected[k]})" for k, v in weights.items()
             if k in expected and tuple(v.shape) != expected[k]]
    missing = sorted(set(expected) - set(weights) - {checkpoint.TIED})
    unexpected = sorted(set(weights) - set(expected))
    if wrong or missing or unexpected:
        raise CheckpointError(f"{source} does not match the weights in model.safetensors (shapes {wrong[:3]}, "
                              f"missing {missing[:3]}, unexpected {unexpected[:3]}); the checkpoint was edited "
                              "or damaged")
    check_finite(weights, f"{Path(path) / 'model.safetensors'}")
    model.load_state_dict(weights, strict=False)
    return model.to(device), tokenizer, config


def check_finite(weights: dict[str, torch.Tensor], source: str) -> None:
    """Refuse weights holding NaN or inf (a run that diverged, or an edited file): sampling
    from them fails deep in torch, and their loss is NaN. One sum per tensor (a NaN or inf
    anywhere makes it non-finite) costs ~0.06 s per 124M parameters; the exact count is taken
    only for a tensor that fails it."""
    for name, t in weights.items():
        if not t.is_floating_point() or bool(torch.sum(t, dtype=torch.float32).isfinite()):
            continue
        bad = int((~torch.isfinite(t)).sum())
        if bad:  # (a finite tensor whose sum overflowed float32 passes)
            raise CheckpointError(f"{source}: {name} holds {bad:,} NaN or infinite values of {t.numel():,}: the "
                                  "training run that saved it diverged, or the file was edited; use an earlier "
                                  "checkpoint of the model, or train it again")
