"""Training: the LR schedule, the fit loop (its phases: restore a run's
state, evaluate, stop or save between steps, one step).

`fit` is the loop behind `GPT.fit`, `mypt train` and the train stage (which build a run
from flags in mypt.train_command). Under torchrun the same code runs DDP (NCCL on GPUs,
gloo on CPU; mypt.distributed), or FSDP2 with the model sharded (mypt.fsdp): every rank
samples its own windows, and only rank 0 logs and writes (a sharded model's checkpoint: every
rank writes its shards). Evaluation is mypt.evaluate, the autocast dtype mypt.precision, the
optimizer mypt.optim.
"""

from __future__ import annotations

import dataclasses
import math
import os
import reprlib
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from mypt import checkpoint
from mypt.config import GPTConfig, TrainConfig
from mypt.data import RESUME_STREAM, loader_config
from mypt.dataset_spec import NAME
from mypt.distributed import (Dist, all_ranks, any_rank, cpu_group, failed_and_mean, lost_rank, rank_0_saved,
                              saving, sync_gradients, unwrap)
from mypt.errors import (ConfigError, MyptError, OutputInPlace, TrainingDiverged, TrainingStopped, error_line, listed,
                         os_error_message)
from mypt.evaluate import evaluate_all
from mypt.fsdp import full, is_sharded
from mypt.optim import configure_optimizer, muon_lr, set_lr
from mypt.precision import autocast, dtype_name, run_autocast
from mypt.signals import STOP_REASONS, StopSignals
from mypt.tokenizer_match import check_tokenizer, describe
from mypt.tokenizers import Tokenizer

PEAK_FLOPS = 989e12  # H100/H200 dense bf16, the MFU reference


def mfu(flops_per_token: float, tokens_per_s: float, processes: int = 1) -> float:
    """Model FLOPs utilization: the share of the GPUs' peak that the model's FLOPs use, with
    `tokens_per_s` over all `processes` (one GPU each): the peak is theirs together, since the
    tokens are every rank's (over one GPU's peak, 8 ranks would show 8 times their figure)."""
    return flops_per_token * tokens_per_s / (PEAK_FLOPS * processes)


# What a run meets from its data mid-run (a shard that cannot be read, a damaged one): it then
# stops with a checkpoint of its last sound state (see fit).
DATA_ERRORS = (OSError, MyptError)


def tokens_per_step(loader, cfg: TrainConfig, dist: Dist) -> int:
    """Tokens one optimizer step trains on, over every rank and micro-step."""
    return loader.batch_size * loader.block_size * cfg.gradient_accumulation_steps * dist.world_size


def trained_tokens(state: dict, per_step: int) -> int:
    """Tokens a model has trained on over all its runs (each step counted at its own batch,
    kept in the training state); a checkpoint from before that count: its steps at per_step,
    this run's tokens per step."""
    return state.get("tokens", state.get("step", 0) * per_step)


def evaluated_at(history: list[dict], step: int) -> bool:
    """Whether a run's history ends with an evaluation of `step` (its entry follows the step's
    train_loss): a resumed run evaluates its first step unless its checkpoint's run did (a stop
    skips or cuts short the evaluation due: see _Run.evaluate)."""
    return bool(history) and history[-1]["step"] == step and "train_loss" not in history[-1]


def saved_streams(state: dict) -> list:
    """The window streams a checkpoint's training state saved, one a rank (an older mypt's: the
    one sampler; none where it saved none)."""
    return state.get("sampler_ranks") or ([state["sampler"]] if "sampler" in state else [])


def get_lr(step: int, cfg: TrainConfig) -> float:
    """Linear warmup, then the decay to min_lr at lr_decay_iters (cosine; or wsd: the peak
    held, then linear over the last decay_fraction), then flat."""
    min_lr, decay_iters = cfg.final_lr, cfg.decay_iters
    if step < cfg.warmup_iters:
        return cfg.learning_rate * (step + 1) / (cfg.warmup_iters + 1)
    if step >= decay_iters:
        return min_lr
    span = max(1, decay_iters - cfg.warmup_iters)
    if cfg.lr_schedule == "wsd":
        # The decay's steps counted back from lr_decay_iters, where it reaches min_lr: two at
        # least, so that one trained step (lr_decay_iters - 1) is below the peak.
        left = (decay_iters - step) / max(2.0, cfg.decay_fraction * span)
        return min_lr + min(1.0, left) * (cfg.learning_rate - min_lr)
    ratio = (step - cfg.warmup_iters) / span
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (cfg.learning_rate - min_lr)


def fit_config(config: TrainConfig | None, data_loader, optimizer) -> TrainConfig:
    """The settings fit trains with: `config` when given; else the TrainConfig the loader was
    built with (`GPTDataLoader(config, ...)`, the guide's `model.fit(data_loader=loader,
    optimizer=optimizer)`), else the defaults. Without `config`, a given optimizer's
    learning rate is the schedule's peak (learning_rate), so the optimizer you built is the
    one that trains."""
    # Validated again: a field assigned after TrainConfig(...) skips its checks (accumulation
    # steps 0 trains nothing; a min_lr above the peak climbs).
    if config is not None:
        return _fit_settings(config).checked()
    cfg = getattr(data_loader, "config", None)
    cfg = cfg.checked() if isinstance(cfg, TrainConfig) else TrainConfig()
    if optimizer is not None:
        group = optimizer.param_groups[0]
        cfg = dataclasses.replace(cfg, learning_rate=float(group.get("initial_lr", group["lr"])))
    return cfg


def _fit_settings(config) -> TrainConfig:
    """fit's `config`: a TrainConfig, or a mapping or plain object of its fields read whole, as
    GPTDataLoader reads its own (loader_config; a device it does not name is TrainConfig's
    default, which a `mypt train --resume` of the checkpoint then picks)."""
    if isinstance(config, GPTConfig):
        raise ConfigError("fit's config is a GPTConfig, the model's settings (GPT(...) holds them): pass the training "
                          "settings, a TrainConfig(max_iters=1000, ...) or a dict of its fields, or none: the data "
                          "loader's")
    return loader_config(config, "fit", TrainConfig().device)


def _seen(value) -> str:
    kind = type(value).__name__
    return f"{'an' if kind[0] in 'aeiouAEIOU' else 'a'} {kind} ({reprlib.repr(value)})"


def check_arguments(optimizer, tokenizer, checkpoint_dir, resume_state, checkpoint_extra, log, on_metrics,
                    overwrite, dist) -> None:
    """fit's arguments of a kind it does not take, refused naming what to pass: each gave an
    AttributeError as the run started or at its first save, or none (tokenizer="char" trained,
    unchecked; overwrite="no" is true)."""
    step = resume_state.get("step") if isinstance(resume_state, dict) else None
    takes = [
        ("optimizer", optimizer is None or isinstance(optimizer, torch.optim.Optimizer),
         "a torch.optim.Optimizer built from this model's parameters (torch.optim.AdamW(model.parameters(), "
         "lr=3e-4)), or none: fit builds the one its config names (TrainConfig(optimizer='muon'))"),
        ("tokenizer", tokenizer is None or isinstance(tokenizer, Tokenizer),
         "a Tokenizer (Tokenizer.load(dataset_dir)), or none: the data loader's"),
        ("checkpoint_dir", checkpoint_dir is None or isinstance(checkpoint_dir, (str, os.PathLike)),
         "a directory's path, a str or a pathlib.Path"),
        ("resume_state", resume_state is None or (isinstance(step, int) and not isinstance(step, bool) and step >= 0),
         "the training state mypt.checkpoint.load_training_state(checkpoint_dir, optimizer, model=model) returns (a "
         "dict with its step), or none for a run from step 0"),
        ("checkpoint_extra", checkpoint_extra is None or isinstance(checkpoint_extra, dict),
         "a dict of what each checkpoint's config.json records beside the settings, or none"),
        ("log", callable(log), "a function of one line, print by default (lambda line: None says nothing)"),
        ("on_metrics", on_metrics is None or callable(on_metrics), "a function of (step, values), or none"),
        ("overwrite", isinstance(overwrite, bool), "True or False"),
        ("dist", dist is None or isinstance(dist, Dist), "a mypt.distributed.Dist (setup_distributed's), or none: "
                                                         "one process"),
    ]
    values = dict(optimizer=optimizer, tokenizer=tokenizer, checkpoint_dir=checkpoint_dir, resume_state=resume_state,
                  checkpoint_extra=checkpoint_extra, log=log, on_metrics=on_metrics, overwrite=overwrite, dist=dist)
    for name, ok, what in takes:
        if not ok:
            raise ConfigError(f"fit's {name} is {_seen(values[name])}: pass {what}")


class _SaveFailed(Exception):
    """A checkpoint's write that failed with an OSError (a full disk) on some rank, raised on
    every rank: its message names the cause (and, under DDP, the rank)."""


class _NormDiverged(TrainingDiverged):
    """A non-finite gradient norm with a finite loss (under DDP, often another rank's NaN loss,
    all-reduced into every rank's gradients)."""


def nonfinite_parameters(model: torch.nn.Module) -> list[str]:
    """The names of the parameters holding a NaN or an infinity (one sync for all of them)."""
    named = list(model.named_parameters())
    if not named:
        return []
    # A shard (FSDP) says for the whole parameter: every rank gets the same list.
    finite = torch.stack([full(torch.isfinite(p.detach()).all()) for _, p in named]).tolist()
    return [name for (name, _), ok in zip(named, finite) if not ok]


def _not_finite(names: list[str]) -> str:
    return f"the weights are not finite ({listed(names, 3)})"


def check_loaders(model: torch.nn.Module, data_loader, eval_data_loaders, tokenizer=None) -> None:
    """Python API mistakes that would otherwise stop at the first step or mid-run in torch's
    words (or, for a loader without a train split, with advice to --resume)."""
    if eval_data_loaders is not None and not isinstance(eval_data_loaders, dict):
        raise ConfigError(f"fit's eval_data_loaders is a {type(eval_data_loaders).__name__}: pass a dict of a name "
                          "to a loader, {\"general\": GPTDataLoader(config, tokenizer, dataset_dir, eval_only=True)}")
    for name in eval_data_loaders or {}:
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise ConfigError(f"fit's eval_data_loaders name {name!r}: a name is a metric's key and part of its file "
                              "name (eval_NAME.tsv); give one of letters, digits, '_', '-' or '.'")
    limit = unwrap(model).config.block_size
    named = [("data_loader", data_loader)] + [(f"eval_data_loaders[{k!r}]", v)
                                              for k, v in (eval_data_loaders or {}).items()]
    for name, loader in named:
        if not hasattr(loader, "eval_batches"):
            raise ConfigError(f"fit's {name} is a {type(loader).__name__}, not a data loader: pass "
                              "GPTDataLoader(config, tokenizer, dataset_dir" + (")" if name == "data_loader" else
                                                                               ", eval_only=True)"))
        if getattr(loader, "block_size", 0) > limit:
            raise ConfigError(f"fit's {name} draws windows of {loader.block_size} tokens, more than the model's "
                              f"block_size {limit}: build it with block_size={limit} (or less)")
    if "train" not in data_loader.splits:
        raise ConfigError("fit's data_loader has no train split (built with eval_only=True?): build it without "
                          "eval_only, and pass eval-only loaders in eval_data_loaders")
    # One vocabulary for the model, every loader and the checkpoint: a loss over another
    # tokenizer's ids means nothing, a smaller model fails in torch's words at the first step, and
    # a larger one saves a checkpoint whose samples the tokenizer cannot decode.
    ours = getattr(data_loader, "tokenizer", None)
    if ours is None:
        return
    hint = "build every loader (and the checkpoint's tokenizer) with the tokenizer the model trains on"
    for name, loader in named[1:]:
        if getattr(loader, "tokenizer", None) is not None:
            check_tokenizer(ours, loader.tokenizer, "fit's data_loader", f"fit's {name}", hint, ConfigError)
    if tokenizer is not None:
        check_tokenizer(ours, tokenizer, "fit's data_loader", "fit's tokenizer (saved with each checkpoint)", hint,
                        ConfigError)
    vocab = unwrap(model).config.vocab_size
    if vocab != ours.vocab_size:
        raise ConfigError(f"the model's vocab_size {vocab} is not its data loader's tokenizer's ({describe(ours)}): "
                          "build it with GPTConfig(vocab_size=tokenizer.vocab_size, ...)")


def _check_checkpoint_dir(path: Path, tokenizer, resume_state: dict | None, overwrite: bool) -> None:
    """Python API mistakes found at the first save, after eval_interval steps of training: no
    tokenizer to save beside the weights, or a trained model there that the save replaces."""
    if tokenizer is None:
        raise ConfigError(f"fit's checkpoint_dir {path}: a checkpoint holds its tokenizer (generate and eval decode "
                          "with it) and this fit has none: pass tokenizer=, or a data loader built with one")
    if resume_state is None and not overwrite and checkpoint.holds_model(path):
        raise ConfigError(f"fit's checkpoint_dir {path} holds a trained model, which this fit's first save would "
                          "replace: continue it (its weights from mypt.model.load_model, its optimizer's state as "
                          "resume_state: the README's 'GPTDataLoader and the Python API'; or mypt train --resume), "
                          "pass overwrite=True to replace it, or another checkpoint_dir")


def compiled(model: torch.nn.Module, cfg: TrainConfig) -> torch.nn.Module:
    """The model fit trains and evaluates: torch.compile'd when `cfg` compiles on its device
    (TrainConfig.compile; left out, on with CUDA) and it comes plain, so that the setting means
    the same through the Python API's model.fit as through mypt train (and figures measured
    through the API, such as bench/quality.py's, are the compiled model's). One that comes
    compiled (in place or not), in DDP or sharded is trained as it comes: mypt train wraps it
    so itself."""
    if unwrap(model) is not model or getattr(model, "_compiled_call_impl", None) is not None or is_sharded(model):
        return model  # (compiled in place by nn.Module.compile: _compiled_call_impl)
    device = next(model.parameters()).device
    return torch.compile(model, mode=cfg.compile_mode(device.type)) if cfg.compiles_on(device.type) else model


def check_optimizer(model: torch.nn.Module, optimizer) -> None:
    """An optimizer built for another model (or before the model was rebuilt) would step none
    of the weights that train: the loss would never move."""
    if optimizer is None:
        return
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    if not any(id(p) in held for p in model.parameters()):
        raise ConfigError("fit's optimizer holds none of the model's parameters: build it from this model, "
                          "torch.optim.AdamW(model.parameters(), lr=...) (or pass none: fit builds "
                          "TrainConfig's optimizer)")


def slow_save_warning(save_s: float, step_s: float, warned: bool) -> str | None:
    """Under torchrun, a save slow enough that a stop would lose it: the agent forwards a
    SIGTERM to each rank and kills them its shutdown timeout later (30 s unless raised), while
    a rank stopping on it finishes the step in flight (up to `step_s`; an evaluation due is
    skipped or cut short), then writes a checkpoint (`save_s`). Said once a run."""
    if warned or "TORCHELASTIC_RUN_ID" not in os.environ:
        return None
    limit = os.environ.get("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", "")
    limit = int(limit) if limit.isdigit() else 30
    seconds = save_s + step_s
    if seconds < limit / 2:
        return None
    return (f"warning: a step and its checkpoint take {seconds:.0f} s (the step {step_s:.0f} s, the save "
            f"{save_s:.0f} s); torchrun kills the ranks {limit} s after it forwards a SIGTERM "
            "(TORCH_ELASTIC_SHUTDOWN_TIMEOUT), so a stop could lose the step's checkpoint: start it as "
            f"TORCH_ELASTIC_SHUTDOWN_TIMEOUT={max(60, int(seconds * 3))} torchrun ...")


def _joining_seed(seed: int, rank: int, step: int) -> int:
    """torch's seed for a rank that joins a resumed run at `step` (a resume on more processes
    than saved the checkpoint): keyed as its windows' streams are (GPTDataLoader.reseed), so
    that its dropout masks are its own, not a saved rank's nor those of its seed's stream from
    step 0, which an earlier run with that rank may have drawn."""
    return int(np.random.SeedSequence([seed, rank, RESUME_STREAM, step]).generate_state(1, np.uint64)[0])


class _Run:
    """One call of fit: its settings, and the state its phases share (the step, the history,
    the last save, the batch in hand, the error this rank met). Its phases, in the order of a
    step: restore (at the start), evaluate, between_steps (stop or save), train_step."""

    def __init__(self, model: torch.nn.Module, data_loader, optimizer, eval_data_loaders: dict | None,
                 cfg: TrainConfig, checkpoint_dir: Path | None, tokenizer, resume_state: dict | None,
                 checkpoint_extra: dict | None, dist: Dist, log: Callable[[str], None],
                 on_metrics: Callable[[int, dict], None] | None):
        self.model, self.loader, self.cfg, self.dist, self.log, self.on_metrics = \
            model, data_loader, cfg, dist, log, on_metrics
        self.checkpoint_dir, self.tokenizer, self.checkpoint_extra = checkpoint_dir, tokenizer, checkpoint_extra
        self.resume_state = resume_state
        self.raw = unwrap(model)
        # Evaluations run the compiled model (its own graph for eval mode) but not through DDP,
        # whose forward would prepare a gradient sync that no backward follows. (DDP only, by its
        # type: unwrap's `.module` would also see through a compiled DDP's forwarding and drop
        # the compiled graph.)
        self.eval_model = model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
        self.device = next(self.raw.parameters()).device
        self.amp = run_autocast(cfg, self.device, resume_state, dist, log)
        self.graphs = cfg.cuda_graphs_on(self.device.type)
        self.optimizer = optimizer or configure_optimizer(self.raw, cfg, self.device)
        # Muon's rate is logged where the optimizer has Muon's groups (not where cfg says muon
        # and the optimizer passed is another).
        self.muon = any(group.get("muon") for group in self.optimizer.param_groups)
        # float16 needs loss scaling (its range underflows small gradients); bf16 and fp32 do not.
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp == torch.float16)
        self.eval_loaders = eval_data_loaders or {}
        self.tokens_per_iter = tokens_per_step(data_loader, cfg, dist)
        # A data error (a shard that cannot be read) met by this rank. It is acted on where every
        # rank agrees on it (a DDP backward that one rank skipped would hang the others): at the
        # top of a step, or before the optimizer step, whose state is then discarded.
        self.failed: Exception | None = None
        self.warned_slow_save = False
        self.eval_cut: bool | None = None  # a due evaluation a stop cut short (True) or skipped (False)
        self.doing = "the start"  # what every rank is doing together, for a message if a rank is lost

    # -- restore a run's state ---------------------------------------------------------------
    def restore(self) -> None:
        """The state to continue from (resume_state's, or a fresh run's), the start-up lines,
        and the first batch."""
        state, dist = self.resume_state or {}, self.dist
        self.step = state.get("step", 0)
        self.history: list[dict] = state.get("history", [])
        self.best_val = state.get("best_val")
        # Each rank continues its own stream of windows and of random numbers (dropout). A rank
        # the saving run did not have (a resume on more processes) starts streams of its own
        # keyed by the step: its seed's from step 0 may have been drawn already, by a run before
        # that one.
        saved = saved_streams(state)
        if dist.rank < len(saved):
            self.loader.load_state_dict(saved[dist.rank])
        elif saved:  # (its RNG state too: the checkpoint holds none of it, see checkpoint._rank_rng)
            self.loader.reseed(self.step)
            torch.manual_seed(_joining_seed(self.cfg.seed, dist.rank, self.step))
        if saved and len(saved) != dist.world_size and dist.is_main:
            new, gone = range(len(saved), dist.world_size), range(dist.world_size, len(saved))
            span = lambda r: f"rank {r[0]}" if len(r) == 1 else f"ranks {r[0]}-{r[-1]}"  # noqa: E731
            self.log(f"resuming on {dist.world_size} process(es), saved by {len(saved)}: "
                     + (f"{span(new)} from new window streams keyed by step {self.step} (not their seed's from "
                        "step 0)" if new else f"the window streams of {span(gone)} end here"))
        if "scaler" in state and self.scaler.is_enabled():
            self.scaler.load_state_dict(state["scaler"])
        if dist.is_main:  # (after --resume too: a new batch or process count changes it)
            self._log_start()
        self.cpu_group = cpu_group(dist)
        self.saved_at, self.t_saved = (self.step if self.resume_state else None), time.monotonic()
        # The last checkpoint on disk as this rank knows it, for the messages: rank 0 knows its
        # whole-model write before the ranks agree on the save (a rank lost in that agreement).
        self.on_disk = self.saved_at
        self.sampler_before_batch = self.loader.state_dict()  # what a resumed run must restore to draw this batch
        try:
            self.x, self.y = self.loader.get_batch("train")
        except DATA_ERRORS as e:
            self.failed = e  # (acted on at the top of the first step, before x is used)
        self.tokens = trained_tokens(state, self.tokens_per_iter)
        # The time since the last progress line, its steps, and the evaluations' and saves' share
        # of it: ms/iter and tok/s count all of a step's cost (its votes between steps, the last
        # line's print and loggers: ~5 ms a step under gloo, half a tiny model's step) but those,
        # nor, after --resume, steps this run did not train.
        self.t_mark, self.timed_steps, self.untimed_s, self.last_step_s = time.perf_counter(), 0, 0.0, 0.0
        self.start = self.step

    def _log_start(self) -> None:
        cfg, dist, loader = self.cfg, self.dist, self.loader
        self.log(f"parameters: {self.raw.num_params() / 1e6:.2f}M | tokens per iteration: {self.tokens_per_iter:,} "
                 f"({dist.world_size} process(es) x {cfg.gradient_accumulation_steps} accumulation x "
                 f"{loader.batch_size} x {loader.block_size}) | device: {self.device} | "
                 f"autocast: {self.amp or 'off'}{' with GradScaler' if self.scaler.is_enabled() else ''}")
        # (The loader draws the batches: its size is the one trained. Only a loader built from a
        # TrainConfig has a batch_size setting that the config passed to fit can contradict.)
        if isinstance(getattr(loader, "config", None), TrainConfig) and cfg.batch_size != loader.batch_size:
            self.log(f"warning: fit's config has batch_size {cfg.batch_size}, its data loader {loader.batch_size}: "
                     f"batches of {loader.batch_size} train (build the loader with the config you pass fit)")
        if cfg.cuda_graphs and not self.graphs:
            fix = "pass --compile" if self.device.type == "cuda" else "pass --no_cuda_graphs"  # (it may be inherited)
            self.log(f"warning: --cuda_graphs does nothing here: it needs CUDA and the compiled model (device "
                     f"{self.device.type}, compile {cfg.compiles_on(self.device.type)}); {fix}")
        # A preset's or a base model's warmup in a short run (said when the run starts).
        if 0 < cfg.max_iters <= cfg.warmup_iters and not self.resume_state:
            self.log(f"warning: warmup_iters {cfg.warmup_iters} >= max_iters {cfg.max_iters}: the learning rate "
                     f"never reaches its peak {cfg.learning_rate:g} (it ends at {get_lr(cfg.max_iters - 1, cfg):.3g}); "
                     "lower warmup_iters (--warmup_iters)")
        # Steps past the decay at a rate of 0 (wsd's min_lr, or one given) change nothing.
        first = max(self.step, cfg.decay_iters, cfg.warmup_iters)  # (the warmup comes before the decay)
        if cfg.final_lr == 0 and first < cfg.max_iters:
            min_lr = "0" if cfg.min_lr is not None else "0, wsd's default"
            self.log(f"warning: steps {first} to {cfg.max_iters - 1} train at learning rate "
                     f"0 (min_lr {min_lr}, reached at lr_decay_iters {cfg.decay_iters}): they change nothing; raise "
                     "lr_decay_iters (--lr_decay_iters) or min_lr (--min_lr), or lower --max_iters")

    # -- evaluate ----------------------------------------------------------------------------
    def evaluate(self, signals: StopSignals) -> bool:
        """Evaluate when this step is due (not where a resumed run starts when the run it
        continues evaluated there); whether it did. A stop that came (on any rank) skips it or
        cuts it short, and the checkpoint is written at once: under torchrun, the agent kills
        the ranks 30 s after its SIGTERM, and an evaluation of a minute would lose the checkpoint.
        The run resumed from it evaluates that step first."""
        cfg, step = self.cfg, self.step
        # (A checkpoint whose evaluation a stop skipped or cut short says so: due at its step
        # though it is no longer the run's last, with a larger --max_iters.)
        pending = step == self.start and bool((self.resume_state or {}).get("evaluate_first"))
        due = step % cfg.eval_interval == 0 or step == cfg.max_iters or pending
        if not due or evaluated_at(self.history, step):
            return False
        self.doing = f"the evaluation of step {step}"
        started = time.perf_counter()
        try:
            return self._evaluate(signals)
        finally:
            self.untimed_s += time.perf_counter() - started

    def _evaluate(self, signals: StopSignals) -> bool:
        cfg, step = self.cfg, self.step
        # Every rank votes at the same batches, a rank that could not read a batch too (evaluate).
        stop = lambda failed=False: any(any_rank([signals.received is not None, failed], self.cpu_group))  # noqa: E731
        if stop():
            self.eval_cut = False
            return False
        try:
            losses = evaluate_all(self.eval_model, self.loader, self.eval_loaders, cfg.eval_iters, self.amp, stop,
                                  DATA_ERRORS)
        except DATA_ERRORS as e:
            self.failed = e
            return False
        if losses is None:
            self.eval_cut = True
            return False
        self.history.append({"step": step, **losses})
        if "val" in losses:
            self.best_val = losses["val"] if self.best_val is None else min(self.best_val, losses["val"])
        if self.dist.is_main and losses:
            if self.on_metrics:
                self.on_metrics(step, losses)
            self.log(f"step {step}: " + " | ".join(f"{k} {v:.4f}" for k, v in losses.items()))
        return True

    # -- between steps: stop or save ---------------------------------------------------------
    def between_steps(self, evaluated: bool, signals: StopSignals) -> bool:
        """Here, between steps, the state is whole: stop or save here (after the evaluation of
        this step, so a resumed run does not evaluate it twice). Whether to train a step more."""
        cfg, step = self.cfg, self.step
        self.doing = f"the vote or save after step {step}"
        due = bool(cfg.checkpoint_minutes) and time.monotonic() - self.t_saved >= 60 * cfg.checkpoint_minutes
        mine = STOP_REASONS.index(signals.received) + 1 if signals.received is not None else 0
        stop, due, broken = any_rank([mine, due, self.failed is not None], self.cpu_group)
        if broken:
            raise self.fail(step)
        # Not before the first step: nothing is trained yet, and for a large model the write
        # would only delay the first step. A run of max_iters 0 still leaves its model. (A resumed
        # run that evaluates where it starts, its checkpoint's evaluation skipped by a stop, saves
        # it again, with that evaluation in its history.)
        if evaluated and (step > 0 or step >= cfg.max_iters):
            self._save_or_stop(step)
        if step >= cfg.max_iters and not (stop and self.eval_cut is not None):  # (else: its evaluation, cut, first)
            return False
        if stop:
            if self.saved_at != step:
                self._save_or_stop(step)
            where = f"the checkpoint is in {self.checkpoint_dir}" if self.checkpoint_dir is not None \
                else "no checkpoint_dir was given, nothing was saved"
            reason = signals.received or f"{STOP_REASONS[stop - 1]} on another rank"
            cut = f" (its evaluation {'cut short' if self.eval_cut else 'skipped'}: --resume evaluates it first)" \
                if self.eval_cut is not None else ""
            raise TrainingStopped(f"{reason}: stopped at step {step}{cut}; continue with --resume ({where})",
                                  signalled=True)
        if due and self.saved_at != step:
            self._save_or_stop(step)
        return True

    def _save_or_stop(self, step: int) -> None:
        """save, or, where the write fails on any rank (a full disk), stop every rank saying what
        is left: the last checkpoint stays whole (checkpoint.save replaces it only once the new
        one is written)."""
        try:
            self.save(step)
        except _SaveFailed as e:
            raise TrainingStopped(f"{e} (at step {step}): training stopped, the checkpoint of step {step} not saved; "
                                  f"{self._last()}; once it is fixed, {self._go_on()}") from None

    # -- one step ----------------------------------------------------------------------------
    def train_step(self) -> None:
        """One optimizer step (gradient_accumulation_steps micro-steps), dropped with its state
        put back when its loss or gradient norm is not finite or a batch could not be read."""
        cfg, step, started = self.cfg, self.step, time.perf_counter()
        self.doing = f"step {step + 1}"
        # The step's starting state, put back if the step is dropped (a non-finite loss, a data error).
        sampler_at_start, rng_at_start = self.sampler_before_batch, checkpoint.rng_state(self.device)
        lr = get_lr(step, cfg)
        set_lr(self.optimizer, lr, cfg)
        if self.graphs:  # a new step: the graphs' outputs of the last one are done with
            torch.compiler.cudagraph_mark_step_begin()
        values = self._forward_backward()
        loss_now = values[0]  # the mean over its micro-steps (this rank's batches; all ranks' below)
        if self.failed is None and not all(map(math.isfinite, values)):
            i, value = next((i, v) for i, v in enumerate(values) if not math.isfinite(v))
            self.failed = TrainingDiverged(f"loss is {value} at step {step}") if i == 0 else \
                _NormDiverged(f"the gradient norm is {value} at step {step}")
        # Every rank stops at a step any rank failed; the step's loss is over every rank's batches,
        # as its tokens per step are, so that the loss logged, kept in the history and compared
        # run to run measures the same batch on any number of ranks (rank 0's alone is half of it
        # on 2).
        failed, loss_now = failed_and_mean(self.failed is not None, loss_now, self.cpu_group)
        if failed:
            self.optimizer.zero_grad(set_to_none=True)
            self.sampler_before_batch = sampler_at_start
            checkpoint.set_rng_state(rng_at_start, self.device)
            raise self.fail(step)
        self.scaler.step(self.optimizer)  # skipped when the scaled gradients overflowed
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        # Labelled by the steps done, as the progress line and the curves are: the loss of the
        # step from S-1 to S sits at S, beside the val loss evaluated after it.
        self.history.append({"step": self.step, "train_loss": loss_now})
        self.tokens += self.tokens_per_iter
        self.last_step_s = time.perf_counter() - started
        self.timed_steps += 1
        if self.step % cfg.log_interval == 0:
            self._log_progress(loss_now, lr)

    def _forward_backward(self) -> list[float]:
        """The micro-steps' forward and backward (the next batch read while the GPU works), then
        the gradient clipping: [the step's loss, the gradient norm when clipped], read with one
        sync, before the optimizer step, so that a non-finite loss (or gradient) never reaches
        the weights: they stay those of the last good step. (A micro-step's NaN or infinity makes
        the sum over them one: in floating point, x + inf is inf, inf - inf and x + nan are nan.)"""
        cfg, scaler, accumulation = self.cfg, self.scaler, self.cfg.gradient_accumulation_steps
        total = torch.zeros((), device=self.device)
        for micro in range(accumulation):
            if self.dist.world_size > 1:  # sync gradients only on the last micro-step
                sync_gradients(self.model, micro == accumulation - 1)
            with autocast(self.device, self.amp):
                _, loss = self.model(self.x, self.y)
                loss = loss / accumulation
            if self.failed is None:
                self.sampler_before_batch = self.loader.state_dict()
                try:
                    self.x, self.y = self.loader.get_batch("train")  # prefetch while the GPU works
                except DATA_ERRORS as e:
                    self.failed = e  # the step runs on (every rank's backward must meet) and is dropped
            scaler.scale(loss).backward()  # (scale, unscale_, step, update: no-ops unless float16)
            total += loss.detach().float()
        checked = [total]
        if cfg.grad_clip > 0:
            scaler.unscale_(self.optimizer)  # clip the true gradients, not the scaled ones
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            if not scaler.is_enabled():  # (under float16 the scaler skips an overflowed step)
                checked.append(full(norm).float())  # (FSDP: the norm over every rank's shards)
        return torch.stack(checked).tolist()

    def _log_progress(self, loss_now: float, lr: float) -> None:
        now = time.perf_counter()
        dt = (now - self.t_mark - self.untimed_s) / self.timed_steps
        self.t_mark, self.timed_steps, self.untimed_s = now, 0, 0.0  # (this line's own cost: the next one's)
        tok_s = self.tokens_per_iter / dt
        used = f", MFU {mfu(self.raw.flops_per_token(), tok_s, self.dist.world_size):.1%}" \
            if self.device.type == "cuda" else ""
        rates = {"lr": lr}
        if self.muon:  # the blocks' matrices step at Muon's rate, the rest at AdamW's
            rates["muon_lr"] = muon_lr(lr, self.cfg)
        if self.dist.is_main:
            if self.on_metrics:
                self.on_metrics(self.step, {"train_loss": loss_now, **rates, "tokens_per_s": tok_s})
            self.log(f"iter {self.step}: loss {loss_now:.4f}, " + ", ".join(f"{k} {v:.2e}" for k, v in rates.items())
                     + f", {dt * 1000:.0f} ms/iter, {tok_s:,.0f} tok/s{used}")

    # -- save, and stop on an error ----------------------------------------------------------
    def save(self, at_step: int) -> None:
        """A checkpoint of the state at `at_step` (rank 0 writes it; every rank calls this together).
        A write that fails on any rank raises on every rank (see _agree_saved)."""
        started, timer = time.monotonic(), time.perf_counter()
        try:
            self._save(at_step, started)
        finally:
            self.untimed_s += time.perf_counter() - timer

    def _save(self, at_step: int, started: float) -> None:
        samplers = all_ranks(self.sampler_before_batch, self.cpu_group)
        rngs = all_ranks(checkpoint.rng_state(self.device), self.cpu_group) if self.dist.world_size > 1 else None
        error = None
        # A sharded model (FSDP) is saved by every rank together, a whole one by rank 0.
        if self.checkpoint_dir is not None and (self.dist.is_main or is_sharded(self.raw)):
            extra = {"sampler_ranks": samplers} if self.dist.world_size > 1 else {}
            if self.scaler.is_enabled():
                extra["scaler"] = self.scaler.state_dict()
            if self.eval_cut is not None:  # (the evaluation of this step, which --resume then runs first)
                extra["evaluate_first"] = True
            state = {"step": at_step, "sampler": self.sampler_before_batch, "history": self.history,
                     "tokens": self.tokens, "best_val": self.best_val, "autocast": dtype_name(self.amp), **extra}
            try:
                with saving():  # (the others wait for rank 0's write while it reads or writes: rank_0_saved)
                    checkpoint.save(self.checkpoint_dir, self.raw, self.tokenizer, self.checkpoint_extra or {},
                                    self.optimizer, state, rng_ranks=rngs, group=self.cpu_group)
            except OutputInPlace as e:  # saved, whole: only the user's files of the last one wait aside
                self.log(f"warning: the checkpoint of step {at_step} is saved; {e}")
            except (OSError, MyptError) as e:
                error = e
            if error is None and not is_sharded(self.raw):
                self.on_disk = at_step
            warning = slow_save_warning(time.monotonic() - started, self.last_step_s, self.warned_slow_save)
            if warning and error is None and self.dist.is_main:
                self.log(warning)
                self.warned_slow_save = True
        self._agree_saved(error)
        self.saved_at = self.on_disk = at_step  # (every rank's, once all agree it is written)
        self.t_saved = started

    def _agree_saved(self, error: Exception | None) -> None:
        """Every rank learns whether the save failed on any (`error`: this rank's), and raises
        the first failing rank's cause: rank 0 writes a whole model's checkpoint alone, and a
        rank that went on into the next step's all-reduce would wait there for it, then stop
        saying only that another rank's process ended. One message on every rank, so it is said once a node.
        An OSError (a full disk) as _SaveFailed, for the caller to say what is left; mypt's own
        (a file in the way) as it is (under DDP a TrainingStopped with its message)."""
        mine = None if error is None else (isinstance(error, OSError),
                                           os_error_message(error) if isinstance(error, OSError) else str(error))
        rank_0_saved(self.dist)  # (rank 0's write, waited for while it reads or writes: not bounded by the timeout)
        failed = [(rank, x) for rank, x in enumerate(all_ranks(mine, self.cpu_group)) if x is not None]
        if not failed:
            return
        rank, (os_error, said) = failed[0]
        if os_error:
            raise _SaveFailed(f"rank {rank}: {said}" if self.dist.world_size > 1 else said)
        if self.dist.world_size == 1:
            raise error
        raise TrainingStopped(f"rank {rank}: {said}")

    def fail(self, at_step: int) -> MyptError:
        """The error a rank met (`failed`), for every rank. A stop (an I/O error, a signal on
        another rank) first saves the state of `at_step` (the weights, sampler and RNG from
        before that step) when it is sound, all parameters finite. A divergence saves nothing:
        the weights of `at_step` give the NaN on that step's batch whatever the learning rate, so
        a resume from them would meet it again; the last checkpoint, from before it, is what a
        lower rate can continue. Every rank calls it at the same point, so its collectives meet."""
        failed = self.failed
        mine = None if failed is None else (isinstance(failed, _NormDiverged), error_line(failed),
                                            isinstance(failed, TrainingDiverged))
        # The cause first: a rank's NaN loss before the NaN gradient norm it gave every rank.
        (_, reason, diverged), rank = min((x, r) for r, x in enumerate(all_ranks(mine, self.cpu_group))
                                          if x is not None)
        reason = f"rank {rank}: {reason}" if self.dist.world_size > 1 else reason
        if not diverged:
            kept = self._kept_state(at_step)
            return TrainingStopped(f"{reason} (at step {at_step}): training stopped; {kept}; once it is fixed, "
                                   "continue with --resume")
        rates = "--learning_rate or --muon_learning_rate" if self.cfg.optimizer == "muon" else "--learning_rate"
        if self.resume_state and at_step == self.start:  # no step of this run changed the weights
            hint = ("the checkpoint's own weights give it, which no learning rate fixes: start from an earlier "
                    "copy of the checkpoint, or a new run from a sound model with --init_from_model")
        elif at_step == 0:  # before any update: not the learning rate
            hint = ("it comes before any update, so no learning rate causes it: check the model's settings (such as "
                    "--rope_theta) or the weights it starts from")
        elif self.saved_at is not None and self.checkpoint_dir is not None:
            hint = (f"lower {rates} or raise --warmup_iters, then continue with --resume from it (the weights of step "
                    f"{at_step} give this on its batch at any rate, so they are not saved)")
        else:
            hint = f"lower {rates} or raise --warmup_iters, and start the run again"
        bad = nonfinite_parameters(self.raw)
        weights = f"{_not_finite(bad)}; " if bad else ""
        return TrainingDiverged(f"{reason}: training stopped; {weights}{self._last()}; {hint}")

    def _last(self) -> str:
        """Where the run's last checkpoint is, if it saved one."""
        if self.checkpoint_dir is None:
            return "no checkpoint_dir was given, nothing was saved"
        if self.on_disk is None:
            return "no checkpoint was written"
        return f"the last checkpoint (step {self.on_disk}) is in {self.checkpoint_dir}"

    def _go_on(self) -> str:
        """How the run goes on: from its last checkpoint, or from the start where it saved none
        (--resume would find nothing to continue from)."""
        return "start the run again" if self.on_disk is None or self.checkpoint_dir is None else \
            "continue from it with --resume"

    def _kept_state(self, at_step: int) -> str:
        """Save the state of `at_step` if it is sound and not saved yet; say where the run's last
        sound checkpoint is."""
        bad = nonfinite_parameters(self.raw)
        if bad:
            return f"{_not_finite(bad)}, no sound state to save: {self._last()}"
        if self.checkpoint_dir is None or (at_step == 0 and self.saved_at is None):  # nothing trained yet
            return self._last()
        if self.saved_at == at_step:
            return f"the checkpoint of step {at_step} is in {self.checkpoint_dir}"
        try:
            self.save(at_step)
        except _SaveFailed as e:
            return f"the checkpoint of step {at_step} could not be saved ({e}); {self._last()}"
        return f"the checkpoint of step {at_step} is saved in {self.checkpoint_dir}"


def fit(model: torch.nn.Module, data_loader, optimizer=None, eval_data_loaders: dict | None = None,
        config: TrainConfig | None = None, checkpoint_dir: Path | None = None, tokenizer=None,
        resume_state: dict | None = None, checkpoint_extra: dict | None = None, dist: Dist | None = None,
        log: Callable[[str], None] = print, on_metrics: Callable[[int, dict], None] | None = None,
        overwrite: bool = False) -> dict:
    """Train `model` (already on its device; wrapped in DDP when dist.world_size > 1),
    torch.compile'd first when the config says so (on with CUDA by default: see `compiled`).

    Every `eval_interval` steps: loss on the loader's val split and on each eval loader,
    logged as `step 100: val 2.15 | eval_general 2.89`, then a checkpoint (rank 0; none at the
    start of a fresh run, before anything is trained); also a checkpoint every
    `checkpoint_minutes`. SIGTERM or SIGINT finishes the step in flight, writes a checkpoint and
    raises TrainingStopped (see StopSignals). A non-finite loss or gradient norm (checked before
    the optimizer step) raises TrainingDiverged, saving nothing: the last checkpoint stays the
    one to go back to (the weights that diverged would diverge again). A data error mid-run (an
    OSError or a MyptError of a loader) raises TrainingStopped after saving the state of the
    step it met (when every parameter is finite), naming where it is. Under DDP every rank
    stops at that step; so it does where a checkpoint's write fails on any rank (a full disk).
    Without `config`, the settings are the loader's TrainConfig (see fit_config). A
    `checkpoint_dir` that holds a trained model is continued (`resume_state`) or, with
    `overwrite`, replaced: never replaced unasked. The checkpoints hold `tokenizer`, by default
    the data loader's.
    `on_metrics(step, values)` (rank 0) gets each evaluation's losses and each logged
    train_loss, lr and tokens_per_s as they happen (mypt.tracking writes them for DVC).
    Returns {"history": [...], "step": final step, "tokens": tokens trained on over every run of
    the model, "best_val": ...}.
    """
    check_arguments(optimizer, tokenizer, checkpoint_dir, resume_state, checkpoint_extra, log, on_metrics, overwrite,
                    dist)
    check_loaders(model, data_loader, eval_data_loaders, tokenizer)
    check_optimizer(model, optimizer)
    tokenizer = getattr(data_loader, "tokenizer", None) if tokenizer is None else tokenizer
    if checkpoint_dir is not None:
        checkpoint_dir = Path(checkpoint_dir)
        _check_checkpoint_dir(checkpoint_dir, tokenizer, resume_state, overwrite)
    if config is None and optimizer is not None:
        # The optimizer's own rates are the schedule's peaks: recorded as torch's schedulers do, so
        # that a second fit with it starts from them, not from the last fit's decayed rate.
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
    cfg = fit_config(config, data_loader, optimizer)
    # The settings in each checkpoint's config.json, as mypt train writes them: a `mypt train
    # --resume` of it continues this run's schedule, not the defaults'.
    extra = {"training": cfg.to_dict(), **(checkpoint_extra or {})}
    run = _Run(compiled(model, cfg), data_loader, optimizer, eval_data_loaders, cfg, checkpoint_dir, tokenizer,
               resume_state, extra, dist or Dist(), log, on_metrics)
    run.restore()
    with StopSignals() as signals:
        try:
            while True:
                evaluated = run.evaluate(signals)
                if not run.between_steps(evaluated, signals):
                    break
                run.train_step()
        except RuntimeError as e:
            # Another rank gone (a kill, the OOM killer) or hung: no save, whose collectives need every rank.
            error = lost_rank(e, run.dist, run.doing, f"{run._last()}: {run._go_on()}")
            if error is None:
                raise
            raise error from None
    return {"history": run.history, "step": run.step, "tokens": run.tokens, "best_val": run.best_val}
