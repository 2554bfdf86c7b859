"""Training: configs and presets, the LR schedule, the fit loop, evaluation, DDP.

`fit` is the loop behind `GPT.fit`, `mypt train` and the train stage. Under torchrun the
same code runs DDP (NCCL on GPUs, gloo on CPU): every rank samples its own windows, and
only rank 0 logs and writes.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Callable

import torch

from mypt.data import resolve_device
from mypt.model import GPT, ConfigError, GPTConfig, dataclass_from_dict

PEAK_FLOPS = 989e12  # H100/H200 dense bf16, the MFU reference
MODEL_KEYS = ("block_size", "n_layer", "n_head", "n_embd", "dropout")  # flags that shape a new model


@dataclass
class TrainConfig:
    """Training settings (the `training` section of a config file)."""

    batch_size: int = 12  # sequences per micro-step, per process
    gradient_accumulation_steps: int = 1
    max_iters: int = 5000
    learning_rate: float = 6e-4
    min_lr: float | None = None  # end of the cosine; default learning_rate / 10
    warmup_iters: int = 100
    lr_decay_iters: int | None = None  # default max_iters
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0  # 0 disables clipping
    eval_interval: int = 250  # evaluate and checkpoint every this many steps
    eval_iters: int = 20  # batches per evaluation
    log_interval: int = 10
    device: str = "auto"  # auto: cuda when available, else cpu
    dtype: str = "auto"  # auto: bfloat16 autocast on a GPU that supports it, else float32
    compile: bool = False  # torch.compile the model (GPU: faster after a warm-up)
    seed: int = 1337

    def __post_init__(self):
        for name in ("batch_size", "gradient_accumulation_steps", "eval_interval", "eval_iters", "log_interval"):
            if getattr(self, name) < 1:
                raise ConfigError(f"training config: {name} must be >= 1, got {getattr(self, name)}")
        if self.max_iters < 0 or self.warmup_iters < 0:
            raise ConfigError("training config: max_iters and warmup_iters must be >= 0")
        if not self.learning_rate > 0:
            raise ConfigError(f"training config: learning_rate must be > 0, got {self.learning_rate}")
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise ConfigError(f"training config: dtype {self.dtype!r}: choose auto, float32, bfloat16 or float16")

    @classmethod
    def from_dict(cls, d: dict, source: str = "training config") -> "TrainConfig":
        return dataclass_from_dict(cls, d, source, "training")


def load_config_file(name_or_path: str) -> tuple[dict, dict, str]:
    """(model dict, training dict, where it came from) of a preset name or a JSON path.

    Layout: {"model": {GPTConfig fields}, "training": {TrainConfig fields}}; both optional.
    """
    path = Path(name_or_path)
    if path.is_file():
        text, source = path.read_text(encoding="utf-8"), str(path)
    else:
        preset = resources.files("mypt") / "configs" / f"{name_or_path.removesuffix('.json')}.json"
        if not preset.is_file():
            raise ConfigError(f"--config_file {name_or_path!r} is neither a file nor a preset; presets: "
                              f"{', '.join(list_presets())}")
        text, source = preset.read_text(encoding="utf-8"), f"preset {name_or_path}"
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{source}: not valid JSON ({e})") from None
    unknown = sorted(set(data) - {"model", "training", "description"})
    if unknown:
        raise ConfigError(f"{source}: unknown section(s) {unknown}; a config has 'model' and 'training'")
    return data.get("model", {}), data.get("training", {}), source


def list_presets() -> list[str]:
    root = resources.files("mypt") / "configs"
    found = []
    for entry in root.iterdir():
        if entry.name.endswith(".json"):
            found.append(entry.name[:-5])
        elif entry.is_dir():
            found += [f"{entry.name}/{e.name[:-5]}" for e in entry.iterdir() if e.name.endswith(".json")]
    return sorted(found)


def get_lr(step: int, cfg: TrainConfig) -> float:
    """Linear warmup, then cosine decay to min_lr at lr_decay_iters, then flat."""
    min_lr = cfg.min_lr if cfg.min_lr is not None else cfg.learning_rate / 10
    decay_iters = cfg.lr_decay_iters if cfg.lr_decay_iters is not None else cfg.max_iters
    if step < cfg.warmup_iters:
        return cfg.learning_rate * (step + 1) / (cfg.warmup_iters + 1)
    if step >= decay_iters:
        return min_lr
    ratio = (step - cfg.warmup_iters) / max(1, decay_iters - cfg.warmup_iters)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (cfg.learning_rate - min_lr)


def autocast_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    if device.type != "cuda" or cfg.dtype == "float32":
        return None
    if cfg.dtype == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return getattr(torch, cfg.dtype)


def configure_optimizer(model: GPT, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices and embeddings only (not on biases and norms)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=(cfg.beta1, cfg.beta2),
                             fused=device.type == "cuda")


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: torch.device) -> Dist:
    """Join the torchrun process group when WORLD_SIZE > 1 (NCCL on GPU, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Dist(dist.get_rank(), world, int(os.environ.get("LOCAL_RANK", "0")))


class TrainingDiverged(RuntimeError):
    pass


@torch.no_grad()
def evaluate(model: GPT, loader, split: str, n_batches: int, amp: torch.dtype | None) -> float:
    """Mean loss over a fixed set of batches (the same at every evaluation)."""
    was_training = model.training
    model.eval()
    losses = []
    for x, y in loader.eval_batches(split, n_batches):
        with _autocast(x.device, amp):
            losses.append(model(x, y)[1].float())
    model.train(was_training)
    return torch.stack(losses).mean().item()


@torch.no_grad()
def evaluate_dataset(model: GPT, dataset_dir: Path, batch_size: int = 32, max_tokens: int | None = None,
                     split: str = "val") -> dict:
    """Loss and perplexity of `model` over a dataset split, every window once, in order:
    the same numbers every run. Returns {"loss", "perplexity", "tokens"}."""
    from mypt.data import GPTDataLoader
    from mypt.tokenizer import Tokenizer

    device = next(model.parameters()).device
    loader = GPTDataLoader(_LoaderConfig(batch_size, model.config.block_size, str(device), 0, 0),
                           Tokenizer.load(dataset_dir), dataset_dir=dataset_dir, eval_only=True)
    model.eval()
    total, count = 0.0, 0
    for x, y in loader.sequential_batches(split, max_tokens):
        _, loss = model(x, y)
        total += loss.item() * y.numel()
        count += y.numel()
    loader.close()
    if count == 0:
        raise ConfigError(f"{dataset_dir}/{split} has no window of block_size+1 = {model.config.block_size + 1} tokens")
    return {"loss": total / count, "perplexity": math.exp(total / count), "tokens": count}


def _autocast(device: torch.device, amp: torch.dtype | None):
    return torch.autocast(device.type, dtype=amp) if amp is not None else contextlib.nullcontext()


def fit(model: GPT, data_loader, optimizer=None, eval_data_loaders: dict | None = None,
        config: TrainConfig | None = None, checkpoint_dir: Path | None = None, tokenizer=None,
        resume_state: dict | None = None, checkpoint_extra: dict | None = None, dist: Dist | None = None,
        log: Callable[[str], None] = print) -> dict:
    """Train `model` (already on its device; wrapped in DDP when dist.world_size > 1).

    Every `eval_interval` steps: loss on the loader's val split and on each eval loader,
    logged as `step 100: val 2.15 | eval_general 2.89`, then a checkpoint (rank 0). A
    non-finite loss stops training and keeps the last good checkpoint.
    Returns {"history": [...], "step": final step, "best_val": ...}.
    """
    cfg = config or TrainConfig()
    dist = dist or Dist()
    raw = model.module if hasattr(model, "module") else model
    raw = getattr(raw, "_orig_mod", raw)
    device = next(raw.parameters()).device
    amp = autocast_dtype(cfg, device)
    optimizer = optimizer or configure_optimizer(raw, cfg, device)
    eval_data_loaders = eval_data_loaders or {}
    state = resume_state or {}
    step = state.get("step", 0)
    history: list[dict] = state.get("history", [])
    best_val = state.get("best_val")
    if "sampler" in state:
        data_loader.load_state_dict(state["sampler"])
    tokens_per_iter = data_loader.batch_size * data_loader.block_size * cfg.gradient_accumulation_steps * dist.world_size
    if dist.is_main and not resume_state:
        log(f"parameters: {raw.num_params() / 1e6:.2f}M | tokens per iteration: {tokens_per_iter:,} "
            f"({dist.world_size} process(es) x {cfg.gradient_accumulation_steps} accumulation x "
            f"{data_loader.batch_size} x {data_loader.block_size}) | device: {device} | "
            f"autocast: {amp or 'off'}")

    def save(at_step: int) -> None:
        if checkpoint_dir is None or not dist.is_main:
            return
        from mypt import checkpoint

        checkpoint.save(checkpoint_dir, raw, tokenizer, checkpoint_extra or {}, optimizer,
                        {"step": at_step, "sampler": sampler_before_batch, "history": history,
                         "best_val": best_val})

    sampler_before_batch = data_loader.state_dict()  # what a resumed run must restore to draw this batch
    x, y = data_loader.get_batch("train")
    pending: list[tuple[int, torch.Tensor]] = []  # losses not yet synced to the host
    t_log, last_good = time.perf_counter(), None

    def flush() -> None:
        nonlocal pending
        if not pending:
            return
        values = torch.stack([loss for _, loss in pending]).tolist()
        for (s, _), v in zip(pending, values):
            if not math.isfinite(v):
                kept = f"the last good checkpoint (step {last_good}) is kept in {checkpoint_dir}" \
                    if last_good is not None else "no checkpoint was written"
                raise TrainingDiverged(f"loss is {v} at step {s}: training stopped; {kept}. "
                                       "HINT: lower --learning_rate or raise warmup_iters")
            history.append({"step": s, "train_loss": v})
        pending = []

    start = step
    while True:
        if step % cfg.eval_interval == 0 or step == cfg.max_iters:
            if step != start or not resume_state:
                flush()
                losses = {"val": evaluate(raw, data_loader, "val", cfg.eval_iters, amp)} if "val" in data_loader.splits else {}
                for name, loader in eval_data_loaders.items():
                    losses[f"eval_{name}"] = evaluate(raw, loader, "val", cfg.eval_iters, amp)
                history.append({"step": step, **losses})
                if "val" in losses:
                    best_val = losses["val"] if best_val is None else min(best_val, losses["val"])
                if dist.is_main and losses:
                    log(f"step {step}: " + " | ".join(f"{k} {v:.4f}" for k, v in losses.items()))
                save(step)
                last_good = step
        if step >= cfg.max_iters:
            break
        lr = get_lr(step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        for micro in range(cfg.gradient_accumulation_steps):
            if dist.world_size > 1:  # sync gradients only on the last micro-step
                model.require_backward_grad_sync = micro == cfg.gradient_accumulation_steps - 1
            with _autocast(device, amp):
                _, loss = model(x, y)
                loss = loss / cfg.gradient_accumulation_steps
            sampler_before_batch = data_loader.state_dict()
            x, y = data_loader.get_batch("train")  # prefetch while the GPU works
            loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        pending.append((step, loss.detach() * cfg.gradient_accumulation_steps))
        step += 1
        if step % cfg.log_interval == 0:
            loss_now = pending[-1][1].item()
            flush()
            dt = (time.perf_counter() - t_log) / cfg.log_interval
            t_log = time.perf_counter()
            tok_s = tokens_per_iter / dt
            mfu = f", MFU {raw.flops_per_token() * tok_s / PEAK_FLOPS:.1%}" if device.type == "cuda" else ""
            if dist.is_main:
                log(f"iter {step}: loss {loss_now:.4f}, lr {lr:.2e}, {dt * 1000:.0f} ms/iter, "
                    f"{tok_s:,.0f} tok/s{mfu}")
    flush()
    return {"history": history, "step": step, "best_val": best_val}


# ---------------------------------------------------------------------------------------------
# the train command (mypt train and the train stage)

@dataclass
class TrainRequest:
    """What `mypt train` was asked to do; the guide's flags."""

    model_name: str
    dataset_dir: Path | None = None
    input_file: Path | None = None
    config_file: str | None = None  # preset name or JSON path; default small_char (char) or 150M (gpt2)
    tokenization: str | None = None  # must match the dataset; default: the dataset's
    init_from_model: str | None = None
    eval_dataset_dir: Path | None = None
    resume: bool = False
    checkpoints_dir: Path = Path("checkpoints")
    overrides: dict | None = None  # training (and block_size/dropout) settings from flags


def _tokenizer_for(req: TrainRequest):
    from mypt.data import no_training_shards
    from mypt.shards import METADATA_FILE, read_metadata
    from mypt.tokenizer import Tokenizer

    if req.dataset_dir is not None:
        if not (Path(req.dataset_dir) / METADATA_FILE).is_file():
            raise no_training_shards(req.dataset_dir)
        meta = read_metadata(req.dataset_dir)
        kind = meta["tokenizer"]["kind"]
        if req.tokenization and req.tokenization != kind:
            raise ConfigError(f"--tokenization {req.tokenization} does not match the dataset {req.dataset_dir}, "
                              f"which was prepared with {kind} tokenization: pass --tokenization {kind}, "
                              f"or prepare the dataset again with --tokenization {req.tokenization}")
        return Tokenizer.load(req.dataset_dir)
    kind = req.tokenization or "gpt2"
    if kind == "gpt2":
        return Tokenizer.gpt2()
    text = Path(req.input_file).read_text(encoding="utf-8", errors="replace")
    return Tokenizer.char(sorted(set(text)))


def run_training(req: TrainRequest, log: Callable[[str], None] = print) -> dict:
    """Build everything `mypt train` needs from `req`, then fit. Returns fit's result."""
    from mypt import checkpoint
    from mypt.data import GPTDataLoader, load_text_tokens

    if (req.dataset_dir is None) == (req.input_file is None):
        raise ConfigError("give exactly one of --dataset_dir (a prepared dataset) or --input_file (one text file)")
    tokenizer = _tokenizer_for(req)
    ckpt_dir = Path(req.checkpoints_dir) / req.model_name
    init = checkpoint.resolve(req.init_from_model, req.checkpoints_dir) if req.init_from_model else None
    if req.resume and init:
        raise ConfigError("--resume continues this model's own run; --init_from_model starts a new one: pick one")

    if req.resume:
        init = checkpoint.resolve(ckpt_dir)
    if init is not None and not req.config_file:  # continue with the checkpoint's own settings
        saved = checkpoint.read_config(init)
        model_d, train_d, source = dict(saved["model"]), saved.get("training", {}), f"{init}/config.json"
    else:
        preset = req.config_file or ("small_char" if tokenizer.kind == "char" else "150M")
        model_d, train_d, source = load_config_file(preset)
    overrides = dict(req.overrides or {})
    model_d.update({k: overrides.pop(k) for k in MODEL_KEYS if k in overrides})
    model_d["vocab_size"] = tokenizer.vocab_size
    train_cfg = TrainConfig.from_dict({**train_d, **overrides}, source)
    model_cfg = GPTConfig.from_dict(model_d, source)
    device = resolve_device(train_cfg.device)
    dist = setup_distributed(device)
    if device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True  # TF32 matmuls: ~free speed on Ampere and later
        torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(train_cfg.seed + dist.rank)

    if init is not None:
        model, init_tok, _ = checkpoint.load_model(init, device)
        if init_tok.state() != tokenizer.state():
            raise ConfigError(f"{init} was trained with another vocabulary ({init_tok}) than this data ({tokenizer}): "
                              f"prepare the data with --tokenizer_from {init}")
        if model.config != model_cfg:
            raise ConfigError(f"{init} has another architecture than {source}: {model.config} vs {model_cfg}; "
                              "leave --config_file and the model flags out to keep the checkpoint's")
    else:
        model = GPT(model_cfg).to(device)

    loader_cfg = _LoaderConfig(train_cfg.batch_size, model_cfg.block_size, str(device), train_cfg.seed, dist.rank)
    if req.dataset_dir is not None:
        loader = GPTDataLoader(loader_cfg, tokenizer, dataset_dir=req.dataset_dir)
    else:
        loader = GPTDataLoader(loader_cfg, tokenizer, tokens=load_text_tokens(req.input_file, tokenizer))
    eval_loaders = {}
    if req.eval_dataset_dir is not None:
        eval_loaders["general"] = GPTDataLoader(loader_cfg, tokenizer, dataset_dir=req.eval_dataset_dir, eval_only=True)

    optimizer = configure_optimizer(model, train_cfg, device)
    resume_state = checkpoint.load_training_state(ckpt_dir, optimizer) if req.resume else None
    if resume_state and dist.is_main:
        log(f"resuming {req.model_name} from step {resume_state['step']}")
    train_model = torch.compile(model) if train_cfg.compile else model
    if dist.world_size > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        train_model = DDP(train_model, device_ids=[dist.local_rank] if device.type == "cuda" else None)
    extra = {"training": asdict(train_cfg), "config_source": source,
             "init_from_model": str(init) if init is not None and not req.resume else None,
             "dataset_dir": str(req.dataset_dir) if req.dataset_dir else None}
    try:
        return fit(train_model, loader, optimizer, eval_loaders, train_cfg, ckpt_dir, tokenizer, resume_state,
                   extra, dist, log)
    finally:
        if dist.world_size > 1:
            torch.distributed.destroy_process_group()


@dataclass
class _LoaderConfig:
    batch_size: int
    block_size: int
    device: str
    seed: int
    rank: int
