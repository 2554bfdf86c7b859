"""Training: the settings, the LR schedule, the fit loop, evaluation, DDP.

`fit` is the loop behind `GPT.fit`, `mypt train` and the train stage (which build a run
from flags in mypt.train_command). Under torchrun the same code runs DDP (NCCL on GPUs,
gloo on CPU): every rank samples its own windows, and only rank 0 logs and writes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from mypt import checkpoint
from mypt.config import TrainConfig
from mypt.errors import MyptError, TrainingDiverged, TrainingStopped, os_error_message

PEAK_FLOPS = 989e12  # H100/H200 dense bf16, the MFU reference
# What a run meets from its data mid-run (a shard that cannot be read, a damaged one): it then
# stops with a checkpoint of its last sound state (see fit).
DATA_ERRORS = (OSError, MyptError)


def get_lr(step: int, cfg: TrainConfig) -> float:
    """Linear warmup, then cosine decay to min_lr at lr_decay_iters, then flat."""
    min_lr, decay_iters = cfg.final_lr, cfg.decay_iters
    if step < cfg.warmup_iters:
        return cfg.learning_rate * (step + 1) / (cfg.warmup_iters + 1)
    if step >= decay_iters:
        return min_lr
    ratio = (step - cfg.warmup_iters) / max(1, decay_iters - cfg.warmup_iters)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (cfg.learning_rate - min_lr)


def cpu_has_amx() -> bool:
    """Whether this CPU multiplies bfloat16 matrices in hardware (Intel AMX: Xeon Sapphire
    Rapids and later). torch says so only through a private function, hence the fallback."""
    check = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(check is not None and check())


def autocast_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for float32. auto: bfloat16 on GPUs that run it natively
    (compute capability 8.0, Ampere, and later), float16 (with a GradScaler) on older ones
    (is_bf16_supported() says True on a T4, which only emulates bf16). On the CPU, bfloat16
    where AMX runs its matrix products: the linear layers' matmuls are 3-4x faster than in
    float32 at the demo model's shapes and a training step about a third shorter (attention
    stays float32 there, see CausalSelfAttention); without AMX, bfloat16 is emulated, slower
    than float32, and auto is float32."""
    if cfg.dtype == "float32" or device.type not in ("cuda", "cpu"):
        return None
    if cfg.dtype == "auto":
        if device.type == "cpu":
            return torch.bfloat16 if cpu_has_amx() else None
        return torch.bfloat16 if torch.cuda.get_device_capability(device) >= (8, 0) else torch.float16
    return getattr(torch, cfg.dtype)


def configure_optimizer(model: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices and embeddings only (not on biases and norms)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    # Fused: one kernel for all parameters; torch >= 2.4 has it on the CPU too.
    return torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=(cfg.beta1, cfg.beta2),
                             fused=device.type in ("cuda", "cpu"))


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


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader, split: str, n_batches: int, amp: torch.dtype | None) -> float:
    """Mean loss over a fixed set of batches (the same at every evaluation)."""
    was_training = model.training
    model.eval()
    losses = []
    for x, y in loader.eval_batches(split, n_batches):
        with _autocast(x.device, amp):
            losses.append(model(x, y)[1].float())
    model.train(was_training)
    return torch.stack(losses).mean().item()


def evaluate_all(model: torch.nn.Module, loader, eval_loaders: dict, n_batches: int,
                 amp: torch.dtype | None) -> dict[str, float]:
    """The training loader's val losses, {"val": ...} (for a MixtureLoader also "val_NAME" of
    each dataset, and "val" their mean weighted by the mixture's weights), then "eval_NAME" of
    each eval loader. A loader met twice (an eval dataset that is also trained on, passed as the
    same loader object) is evaluated once: the same fixed batches give the same loss."""
    parts = loader.val_parts() if hasattr(loader, "val_parts") else [("val", 1.0, loader)] * ("val" in loader.splits)
    done: dict[int, float] = {}

    def loss_of(part) -> float:
        if id(part) not in done:
            done[id(part)] = evaluate(model, part, "val", n_batches, amp)
        return done[id(part)]

    losses = {key: loss_of(part) for key, _, part in parts}
    if parts and "val" not in losses:
        total = sum(weight for _, weight, _ in parts)
        losses = {"val": sum(weight * losses[key] for key, weight, _ in parts) / total, **losses}
    losses.update({f"eval_{name}": loss_of(part) for name, part in eval_loaders.items()})
    return losses


def fit_config(config: TrainConfig | None, data_loader, optimizer) -> TrainConfig:
    """The settings fit trains with: `config` when given; else the TrainConfig the loader was
    built with (`GPTDataLoader(config, ...)`, the guide's `model.fit(data_loader=loader,
    optimizer=optimizer)`), else the defaults. Without `config`, a given optimizer's
    learning rate is the schedule's peak (learning_rate), so the optimizer you built is the
    one that trains."""
    if config is not None:
        return config
    cfg = getattr(data_loader, "config", None)
    cfg = cfg if isinstance(cfg, TrainConfig) else TrainConfig()
    if optimizer is not None:
        group = optimizer.param_groups[0]
        cfg = dataclasses.replace(cfg, learning_rate=float(group.get("initial_lr", group["lr"])))
    return cfg


def _dtype_name(amp: torch.dtype | None) -> str:
    """The autocast dtype as --dtype spells it: float32 for none."""
    return str(amp).removeprefix("torch.") if amp is not None else "float32"


def _autocast(device: torch.device, amp: torch.dtype | None):
    return torch.autocast(device.type, dtype=amp) if amp is not None else contextlib.nullcontext()


class _NormDiverged(TrainingDiverged):
    """A non-finite gradient norm with a finite loss (under DDP, often another rank's NaN loss,
    all-reduced into every rank's gradients)."""


def nonfinite_parameters(model: torch.nn.Module) -> list[str]:
    """The names of the parameters holding a NaN or an infinity (one sync for all of them)."""
    named = list(model.named_parameters())
    if not named:
        return []
    finite = torch.stack([torch.isfinite(p.detach()).all() for _, p in named]).tolist()
    return [name for (name, _), ok in zip(named, finite) if not ok]


def _reason(e: Exception) -> str:
    """An error as one line: an OSError as the CLI prints it (the path, what failed)."""
    return os_error_message(e) if isinstance(e, OSError) else str(e)


def _rng_state(device: torch.device) -> dict:
    """The RNG states a step draws from (dropout): the CPU's, and the GPU's when training on one."""
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"])


class StopSignals:
    """While training runs, SIGTERM and SIGINT only ask it to stop: the step in flight ends,
    a checkpoint is written and fit raises TrainingStopped. A second signal acts at once (the
    handler that was there before). A signal the process ignores stays ignored. Handlers can
    only be set in the main thread; elsewhere signals keep theirs. The previous handlers come
    back on exit."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.received: str | None = None
        self._previous: dict = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                # An ignored signal stays ignored: a job started in the background by a script
                # (`mypt train ... &`) ignores SIGINT, so a Ctrl-C meant for the shell's
                # foreground must not stop it.
                if signal.getsignal(sig) is not signal.SIG_IGN:
                    self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame) -> None:
        if self.received is None:
            self.received = signal.Signals(signum).name
            return
        self.__exit__()  # a second signal: the user will not wait
        signal.raise_signal(signum)

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}


def _cpu_group(dist: Dist):
    """The process group that agrees on stopping and saving: gloo, so that the flags are CPU
    tensors and agreeing on them every step never waits for the GPU."""
    if dist.world_size == 1:
        return None
    import torch.distributed as tdist

    return tdist.group.WORLD if tdist.get_backend() == "gloo" else tdist.new_group(backend="gloo")


def _any_rank(flags: list[bool], group) -> list[bool]:
    """Each flag, set when it is set on any rank: all ranks stop (and save) at the same step."""
    if group is None:
        return flags
    import torch.distributed as tdist

    t = torch.tensor([int(f) for f in flags])
    tdist.all_reduce(t, op=tdist.ReduceOp.MAX, group=group)
    return [bool(v) for v in t.tolist()]


def _all_ranks(obj, group) -> list:
    """[obj of rank 0, obj of rank 1, ...] on every rank."""
    if group is None:
        return [obj]
    import torch.distributed as tdist

    out = [None] * tdist.get_world_size(group)
    tdist.all_gather_object(out, obj, group=group)
    return out


def fit(model: torch.nn.Module, data_loader, optimizer=None, eval_data_loaders: dict | None = None,
        config: TrainConfig | None = None, checkpoint_dir: Path | None = None, tokenizer=None,
        resume_state: dict | None = None, checkpoint_extra: dict | None = None, dist: Dist | None = None,
        log: Callable[[str], None] = print, on_metrics: Callable[[int, dict], None] | None = None) -> dict:
    """Train `model` (already on its device; wrapped in DDP when dist.world_size > 1).

    Every `eval_interval` steps: loss on the loader's val split and on each eval loader,
    logged as `step 100: val 2.15 | eval_general 2.89`, then a checkpoint (rank 0; none at the
    start of a fresh run, before anything is trained); also a
    checkpoint every `checkpoint_minutes`. SIGTERM or SIGINT finishes the step in flight,
    writes a checkpoint and raises TrainingStopped (see StopSignals). A non-finite loss or
    gradient norm (checked before the optimizer step, so the weights are still the last good
    step's) raises TrainingDiverged, and a data error mid-run (an OSError or a MyptError of a
    loader) TrainingStopped, each after saving the state of the step it met (when every
    parameter is finite) and naming where it is; under DDP every rank stops at that step.
    Without `config`, the settings are the loader's TrainConfig (see fit_config). `on_metrics(step, values)` (rank 0) gets each
    evaluation's losses and each logged train_loss, lr and tokens_per_s as they happen
    (mypt.tracking writes them for DVC).
    Returns {"history": [...], "step": final step, "best_val": ...}.
    """
    cfg = fit_config(config, data_loader, optimizer)
    dist = dist or Dist()
    raw = model.module if hasattr(model, "module") else model
    raw = getattr(raw, "_orig_mod", raw)
    device = next(raw.parameters()).device
    amp = autocast_dtype(cfg, device)
    if resume_state is not None and cfg.dtype == "auto":
        # auto resolves on the machine it runs on (AMX or not, GPU generation): a resumed run
        # keeps the precision it started in, so it ends as the uninterrupted run would. A
        # checkpoint from before this was recorded started on the CPU in float32 (auto's rule
        # then) or on a GPU by the same rule as now.
        started = resume_state.get("autocast", "float32" if device.type == "cpu" else None)
        if started is not None and started != _dtype_name(amp):
            if dist.is_main:
                log(f"autocast: {started}, as the run started (--dtype auto would pick {_dtype_name(amp)} "
                    "on this machine; pass --dtype to change it)")
            amp = autocast_dtype(dataclasses.replace(cfg, dtype=started), device)
    optimizer = optimizer or configure_optimizer(raw, cfg, device)
    # float16 needs loss scaling (its range underflows small gradients); bf16 and fp32 do not.
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
    eval_data_loaders = eval_data_loaders or {}
    state = resume_state or {}
    step = state.get("step", 0)
    history: list[dict] = state.get("history", [])
    best_val = state.get("best_val")
    # Under DDP each rank continues its own stream of windows (an older checkpoint without
    # them: rank 0 takes the saved one, the others start afresh rather than duplicate it).
    if len(state.get("sampler_ranks", [])) == dist.world_size:
        data_loader.load_state_dict(state["sampler_ranks"][dist.rank])
    elif "sampler" in state and dist.is_main:
        data_loader.load_state_dict(state["sampler"])
    if "scaler" in state and scaler.is_enabled():
        scaler.load_state_dict(state["scaler"])
    tokens_per_iter = data_loader.batch_size * data_loader.block_size * cfg.gradient_accumulation_steps * dist.world_size
    if dist.is_main and not resume_state:
        log(f"parameters: {raw.num_params() / 1e6:.2f}M | tokens per iteration: {tokens_per_iter:,} "
            f"({dist.world_size} process(es) x {cfg.gradient_accumulation_steps} accumulation x "
            f"{data_loader.batch_size} x {data_loader.block_size}) | device: {device} | "
            f"autocast: {amp or 'off'}{' with GradScaler' if scaler.is_enabled() else ''}")
        if 0 < cfg.max_iters <= cfg.warmup_iters:  # a preset's or a base model's warmup in a short run
            log(f"warning: warmup_iters {cfg.warmup_iters} >= max_iters {cfg.max_iters}: the learning rate never "
                f"reaches its peak {cfg.learning_rate:g} (it ends at {get_lr(cfg.max_iters - 1, cfg):.3g}); "
                "lower warmup_iters (--warmup_iters)")

    cpu_group = _cpu_group(dist)
    saved_at, t_saved = (step if resume_state else None), time.monotonic()

    def save(at_step: int) -> None:
        nonlocal saved_at, t_saved
        saved_at, t_saved = at_step, time.monotonic()
        samplers = _all_ranks(sampler_before_batch, cpu_group)  # every rank calls save together
        rngs = _all_ranks(checkpoint.rng_state(), cpu_group) if dist.world_size > 1 else None
        if checkpoint_dir is not None and dist.is_main:
            extra = {"sampler_ranks": samplers} if dist.world_size > 1 else {}
            if scaler.is_enabled():
                extra["scaler"] = scaler.state_dict()
            checkpoint.save(checkpoint_dir, raw, tokenizer, checkpoint_extra or {}, optimizer,
                            {"step": at_step, "sampler": sampler_before_batch, "history": history,
                             "best_val": best_val, "autocast": _dtype_name(amp), **extra}, rng_ranks=rngs)

    def fail(at_step: int) -> MyptError:
        """The error a rank met (`failed`), for every rank, after saving the state of `at_step`
        (the weights, sampler and RNG from before that step) when it is sound: all parameters
        finite. Every rank calls it at the same point, so its collectives meet."""
        mine = None if failed is None else (isinstance(failed, _NormDiverged), _reason(failed),
                                            isinstance(failed, TrainingDiverged))
        # The cause first: a rank's NaN loss before the NaN gradient norm it gave every rank.
        (_, reason, diverged), rank = min((x, r) for r, x in enumerate(_all_ranks(mine, cpu_group)) if x is not None)
        reason = f"rank {rank}: {reason}" if dist.world_size > 1 else reason
        kept = kept_state(at_step)
        if diverged and resume_state and at_step == start:  # no step of this run changed the weights
            hint = ("the checkpoint's own weights give it, which no learning rate fixes: start from an earlier "
                    "copy of the checkpoint, or a new run from a sound model with --init_from_model")
        elif diverged:
            hint = "lower --learning_rate or raise --warmup_iters, then continue with --resume"
        else:
            hint = "once it is fixed, continue with --resume"
        where = "" if diverged else f" (at step {at_step})"  # (a divergence names its step)
        return (TrainingDiverged if diverged else TrainingStopped)(f"{reason}{where}: training stopped; {kept}; {hint}")

    def kept_state(at_step: int) -> str:
        """Save the state of `at_step` if it is sound and not saved yet; say where the run's last
        sound checkpoint is."""
        last = (f"the last checkpoint (step {saved_at}) is in {checkpoint_dir}"
                if saved_at is not None and checkpoint_dir is not None else "no checkpoint was written")
        bad = nonfinite_parameters(raw)
        if bad:
            return f"the weights are not finite ({', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}), " \
                   f"no sound state to save: {last}"
        if checkpoint_dir is None:
            return "no checkpoint_dir was given, nothing was saved"
        if saved_at == at_step:
            return f"the checkpoint of step {at_step} is in {checkpoint_dir}"
        if at_step == 0 and saved_at is None:  # nothing trained yet
            return last
        try:
            save(at_step)
        except OSError as e:
            return f"the checkpoint of step {at_step} could not be saved ({os_error_message(e)}); {last}"
        return f"the checkpoint of step {at_step} is saved in {checkpoint_dir}"

    # A data error (a shard that cannot be read) met by this rank. It is acted on where every
    # rank agrees on it (a DDP backward that one rank skipped would hang the others): at the
    # top of a step, or before the optimizer step, whose state is then discarded.
    failed: Exception | None = None
    sampler_before_batch = data_loader.state_dict()  # what a resumed run must restore to draw this batch
    try:
        x, y = data_loader.get_batch("train")
    except DATA_ERRORS as e:
        failed = e  # (acted on at the top of the first step, before x is used)
    t_log = time.perf_counter()
    start = step
    with StopSignals() as signals:
        while True:
            evaluated = False
            if (step % cfg.eval_interval == 0 or step == cfg.max_iters) and (step != start or not resume_state):
                try:
                    losses = evaluate_all(raw, data_loader, eval_data_loaders, cfg.eval_iters, amp)
                except DATA_ERRORS as e:
                    failed = e
                else:
                    evaluated = True
                    history.append({"step": step, **losses})
                    if "val" in losses:
                        best_val = losses["val"] if best_val is None else min(best_val, losses["val"])
                    if dist.is_main and losses:
                        if on_metrics:
                            on_metrics(step, losses)
                        log(f"step {step}: " + " | ".join(f"{k} {v:.4f}" for k, v in losses.items()))
            # Here, between steps, the state is whole: stop or save here (after the evaluation
            # of this step, so a resumed run does not evaluate it twice).
            due = bool(cfg.checkpoint_minutes) and time.monotonic() - t_saved >= 60 * cfg.checkpoint_minutes
            stop, due, broken = _any_rank([signals.received is not None, due, failed is not None], cpu_group)
            if broken:
                raise fail(step)
            # Not before the first step (a resumed run does not evaluate where it starts): nothing
            # is trained yet, and for a large model the write would only delay the first step. A
            # run of max_iters 0 still leaves its model.
            if evaluated and (step > 0 or step >= cfg.max_iters):
                save(step)
            if step >= cfg.max_iters:
                break
            if stop:
                if saved_at != step:
                    save(step)
                where = f"the checkpoint is in {checkpoint_dir}" if checkpoint_dir is not None \
                    else "no checkpoint_dir was given, nothing was saved"
                raise TrainingStopped(f"{signals.received or 'a signal on another rank'}: stopped at step {step}; "
                                      f"continue with --resume ({where})")
            if due and saved_at != step:
                save(step)
            # The step's starting state, put back if the step is dropped (a non-finite loss, a data error).
            sampler_at_start, rng_at_start = sampler_before_batch, _rng_state(device)
            lr = get_lr(step, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            total = torch.zeros((), device=device)
            for micro in range(cfg.gradient_accumulation_steps):
                if dist.world_size > 1:  # sync gradients only on the last micro-step
                    model.require_backward_grad_sync = micro == cfg.gradient_accumulation_steps - 1
                with _autocast(device, amp):
                    _, loss = model(x, y)
                    loss = loss / cfg.gradient_accumulation_steps
                if failed is None:
                    sampler_before_batch = data_loader.state_dict()
                    try:
                        x, y = data_loader.get_batch("train")  # prefetch while the GPU works
                    except DATA_ERRORS as e:
                        failed = e  # the step runs on (every rank's backward must meet) and is dropped
                scaler.scale(loss).backward()  # (scale, unscale_, step, update: no-ops unless float16)
                total += loss.detach().float()
            checked = [loss.detach().float() * cfg.gradient_accumulation_steps, total]
            if cfg.grad_clip > 0:
                scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
                norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                if not scaler.is_enabled():  # (under float16 the scaler skips an overflowed step)
                    checked.append(norm.float())
            # One sync per step, before the optimizer step: a non-finite loss (or gradient) never
            # reaches the weights, so they stay those of the last good step.
            values = torch.stack(checked).tolist()
            loss_now = values[0]
            if failed is None and not all(map(math.isfinite, values)):
                i, value = next((i, v) for i, v in enumerate(values) if not math.isfinite(v))
                failed = TrainingDiverged(f"loss is {value} at step {step}") if i < 2 else \
                    _NormDiverged(f"the gradient norm is {value} at step {step}")
            if _any_rank([failed is not None], cpu_group)[0]:
                optimizer.zero_grad(set_to_none=True)
                sampler_before_batch = sampler_at_start
                _set_rng_state(rng_at_start)
                raise fail(step)
            scaler.step(optimizer)  # skipped when the scaled gradients overflowed
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            history.append({"step": step, "train_loss": loss_now})
            step += 1
            if step % cfg.log_interval == 0:
                dt = (time.perf_counter() - t_log) / cfg.log_interval
                t_log = time.perf_counter()
                tok_s = tokens_per_iter / dt
                mfu = f", MFU {raw.flops_per_token() * tok_s / PEAK_FLOPS:.1%}" if device.type == "cuda" else ""
                if dist.is_main:
                    if on_metrics:
                        on_metrics(step, {"train_loss": loss_now, "lr": lr, "tokens_per_s": tok_s})
                    log(f"iter {step}: loss {loss_now:.4f}, lr {lr:.2e}, {dt * 1000:.0f} ms/iter, "
                        f"{tok_s:,.0f} tok/s{mfu}")
    return {"history": history, "step": step, "best_val": best_val}
