"""Every GPU figure of mypt in one run: training throughput, MFU and memory, and generation speed.

Each figure is printed on one line as soon as it is measured, and again in a summary table at
the end. A section that fails prints `FAILED: <section>: <error>` and the suite goes on.

Sections (in this order, the most important first):
  1. GPT-2 124M shape (12 x 768, 12 heads, vocab 50257 padded to 50304, block 1024), bf16
     autocast, torch.compile(dynamic=False), fused AdamW, TF32, grad clip 1.0:
     `mypt.train.fit` on synthetic tokens (the in-memory GPTDataLoader) at micro-batch 12 and
     32, next to a bare compiled loop of the same compiled module, optimizer and settings
     whose batches are already on the GPU (ratio fit/bare, target >= 0.98); then `fit` with
     the loader reading shards written to a temp dir (ratio shards/synthetic, target >= 0.99;
     the shards sit in the page cache, so this is the loader's CPU cost, not the disk's).
     One compiled module serves fit, bare and shards at a batch size; each batch size is one
     compilation, whose time (the first log interval) is printed.
  2. --profile only: torch.profiler over three 124M fit steps at batch 12: GPU time per step
     by kernel category and the top kernels.
  3. Generation at 124M (mypt.generate.sample_tokens, batch 1, temperature 0.8, top-k 200,
     fp32 weights as `mypt generate` runs them, plus bf16 weights): a 1000-token prompt and
     500 new tokens with the KV cache and without (full recompute). With block 1024 the
     window fills after 24 new tokens; from then on the cache re-prefills the last half block
     once every half block. A 500 + 500 case (which fits in the window) is measured too.
  4. The 150M_1024 preset at its default batch (12 x 8 accumulation) and default flags
     (compiled on CUDA, as `mypt train` runs it): MFU and peak GPU memory.
     Then the modern/150M_1024 preset (rope, rmsnorm, squared ReLU, qk_norm) the same way.
  5. The pretrain/750M_1024_domain_adapt preset (its batch 8 x 16 accumulation) and a
     350M-class model (24 x 1024, 16 heads, batch 16): MFU, compiled unless the time budget
     (--budget_s) is too short for the compilation, in which case they run eager and say so.
  6. --levers only (about 4 more minutes): the 124M fit, one setting changed at a time, each
     its own compilation: micro-batch 32 and 64 with the default compile; then, at the faster
     of the two, flash attention (FA2) in place of cuDNN's, compile mode reduce-overhead (CUDA
     graphs) and inductor's coordinate-descent tuning (a compile of ~3 minutes). Each against
     the default compile at the same batch. H200 figures: bench/gpu_suite_results.txt.
  7. --only autotune: compile modes max-autotune-no-cudagraphs and max-autotune. Not in
     --levers: on an H200 its GEMM autotuning ran over 3 minutes, and cuBLAS beat every Triton
     configuration on all eight GEMM shapes of the 124M step, so it has nothing to gain there.

Timing: fit is timed from its own progress lines (each follows a loss.item(), i.e. a GPU
sync; the suite synchronizes again): the first log interval is the warm-up (compilation),
the following ones are timed. The bare loop synchronizes before and after its timed steps.
MFU = GPT.flops_per_token() (6N + 12 L H Q T) x tokens/s / 989e12. Peak memory is
torch.cuda.max_memory_allocated() over one measurement, in GB (1e9 bytes).

    bash bench/gpu_suite.sh                          # CUDA GPU: 193 s on an H200 (torch 2.11), budget 400 s
    bash bench/gpu_suite.sh --profile                # also the profiler summary
    bash bench/gpu_suite.sh --levers                 # also what batch, attention, compile modes do
    python bench/gpu_suite.py --only fit124,gen      # some sections only (profile runs the 124M fits too)
    python bench/gpu_suite.py --smoke                # tiny shapes on the CPU, checks every code path
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import datetime
import gc
import json
import re
import sys
import tempfile
import time
import traceback
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

sys.path.append(str(Path(__file__).resolve().parents[1]))  # a plain checkout; PYTHONPATH or an install wins

from mypt.data import GPTDataLoader  # noqa: E402
from mypt.generate import sample_tokens  # noqa: E402
from mypt.model import GPT, GPTConfig  # noqa: E402
from mypt.shards import ShardWriter  # noqa: E402
from mypt.tokenizers import Tokenizer  # noqa: E402
from mypt.train import PEAK_FLOPS, TrainConfig, configure_optimizer, fit, mfu  # noqa: E402

SECTIONS = ("fit124", "profile", "gen", "mem150", "modern150", "preset750", "m350", "levers", "autotune")
T_START = time.perf_counter()


def say(msg: str = "") -> None:
    print(msg, flush=True)


def elapsed() -> float:
    return time.perf_counter() - T_START


# ---------------------------------------------------------------------------------------------
# what to run: the GPU plan and the tiny CPU plan of --smoke

@dataclasses.dataclass
class Plan:
    device: torch.device
    compile: bool
    vocab: int
    m124: dict
    m350: dict
    b350: int
    batches: tuple[int, ...]
    log_interval: int  # 124M fit: steps per progress line; warm-up is the first line
    timed_logs: dict  # 124M fit: timed progress lines per batch size
    gen: tuple[tuple[int, int], ...]  # (prompt tokens, new tokens)
    synthetic_tokens: int
    shard_tokens: int
    tokens_per_shard: int
    preset_model: dict | None  # --smoke: a tiny model in place of each preset's (its training settings kept)
    label124: str = "124M"
    label350: str = "350M"


def make_plan(args) -> Plan:
    if args.smoke:
        torch.set_num_threads(1)  # tiny ops: threads only add contention on a small, shared CPU box
        tiny = dict(n_layer=2, n_head=2, n_embd=64, block_size=64, dropout=0.0)
        return Plan(device=torch.device("cpu"), compile=False, vocab=512,
                    m124=dict(tiny, vocab_size=512), m350=dict(tiny, n_layer=3, n_head=4, vocab_size=512), b350=4,
                    batches=(4, 8), log_interval=2, timed_logs={4: 2, 8: 2}, gen=((62, 31), (31, 31)),
                    synthetic_tokens=200_000, shard_tokens=200_000, tokens_per_shard=50_000,
                    preset_model=dict(tiny), label124="tiny(124M)", label350="tiny(350M)")
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU here: run on a GPU machine, or pass --smoke to check the suite on the CPU")
    m124 = dict(n_layer=12, n_head=12, n_embd=768, block_size=1024, vocab_size=50257, dropout=0.0)
    return Plan(device=torch.device("cuda"), compile=not args.no_compile, vocab=50257, m124=m124,
                m350=dict(m124, n_layer=24, n_head=16, n_embd=1024), b350=16,
                batches=(12, 32), log_interval=10, timed_logs={12: 10, 32: 5}, gen=((1000, 500), (500, 500)),
                synthetic_tokens=5_000_000, shard_tokens=16_000_000, tokens_per_shard=2_000_000, preset_model=None)


# ---------------------------------------------------------------------------------------------
# measurements

@dataclasses.dataclass
class Measure:
    tok_s: float
    ms_step: float
    warm_s: float  # the warm-up: compilation, first steps
    peak_gb: float | None
    flops_per_token: float

    @property
    def mfu(self) -> float:
        return mfu(self.flops_per_token, self.tok_s)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None


def flops_per_token(model: GPT) -> float:
    if hasattr(model, "flops_per_token"):
        return float(model.flops_per_token())
    c = model.config
    return 6 * sum(p.numel() for p in model.parameters()) + 12 * c.n_layer * c.n_embd * c.block_size


def amp_context(device: torch.device):
    """What fit does with dtype "auto": bf16 autocast on a GPU that has it, fp16 on others, none on CPU."""
    if device.type != "cuda":
        return torch.autocast("cpu", enabled=False)
    return torch.autocast("cuda", dtype=torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)


def train_config(batch: int, accum: int, max_iters: int, log_interval: int, device: torch.device,
                 compiled: bool, base: dict | None = None) -> TrainConfig:
    """Training settings for a measurement: `base` (a preset's) with the run length, logging and
    evaluation set for timing (one batch evaluated before the first step and after the last)."""
    kw = dict(base or {})
    kw.update(batch_size=batch, gradient_accumulation_steps=accum, max_iters=max_iters, eval_interval=10**9,
              eval_iters=1, log_interval=log_interval, device=device.type, compile=compiled)
    kw.setdefault("warmup_iters", 10)
    return TrainConfig(**kw)


def run_fit(train_model, raw: GPT, loader: GPTDataLoader, tcfg: TrainConfig, warm_logs: int, timed_logs: int,
            on_log=None) -> Measure:
    """mypt.train.fit for (warm_logs + timed_logs) x log_interval steps, timed between its progress lines."""
    device = next(raw.parameters()).device
    stamps: list[float] = []

    def log(line: str) -> None:
        if line.startswith("iter "):
            sync(device)
            stamps.append(time.perf_counter())
            if on_log is not None:
                on_log()

    assert tcfg.max_iters == tcfg.log_interval * (warm_logs + timed_logs)
    reset_peak(device)
    sync(device)
    t0 = time.perf_counter()
    fit(train_model, loader, config=tcfg, log=log)
    if len(stamps) != warm_logs + timed_logs:
        raise RuntimeError(f"fit logged {len(stamps)} progress lines ('iter N: ...'), expected {warm_logs + timed_logs}")
    timed_s = stamps[-1] - stamps[warm_logs - 1]
    steps = tcfg.log_interval * timed_logs
    tokens = steps * loader.batch_size * loader.block_size * tcfg.gradient_accumulation_steps
    return Measure(tokens / timed_s, 1000 * timed_s / steps, stamps[warm_logs - 1] - t0, peak_gb(device),
                   flops_per_token(raw))


def run_bare(train_model, raw: GPT, batches: list, tcfg: TrainConfig, warm_steps: int, timed_steps: int) -> Measure:
    """The loop nanoGPT runs, with nothing else: batches already on the device, no logging, no
    evaluation, one sync at each end of the timed steps. Same module, optimizer and settings as fit."""
    device = next(raw.parameters()).device
    reset_peak(device)
    optimizer = configure_optimizer(raw, tcfg, device)
    accum = tcfg.gradient_accumulation_steps
    params = list(train_model.parameters())

    def step(i: int) -> None:
        for group in optimizer.param_groups:
            group["lr"] = tcfg.learning_rate
        for m in range(accum):
            x, y = batches[(i * accum + m) % len(batches)]
            with amp_context(device):
                _, loss = train_model(x, y)
                loss = loss / accum
            loss.backward()
        if tcfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, tcfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    t0 = time.perf_counter()
    for i in range(warm_steps):
        step(i)
    sync(device)
    t1 = time.perf_counter()
    for i in range(timed_steps):
        step(warm_steps + i)
    sync(device)
    t2 = time.perf_counter()
    tokens = timed_steps * accum * batches[0][0].numel()
    return Measure(tokens / (t2 - t1), 1000 * (t2 - t1) / timed_steps, t1 - t0, peak_gb(device), flops_per_token(raw))


def run_generate(model: GPT, prompt_len: int, new: int, use_cache: bool) -> float:
    """New tokens per second of sample_tokens (batch 1), prefill included."""
    device = next(model.parameters()).device
    g = torch.Generator(device=device)
    g.manual_seed(0)
    idx = torch.randint(0, model.config.vocab_size, (1, prompt_len), generator=g, device=device)
    for _ in sample_tokens(model, idx, 3, temperature=0.8, top_k=200, generator=g, use_cache=use_cache):
        pass  # warm-up: first kernels at these shapes
    sync(device)
    t0 = time.perf_counter()
    n = sum(1 for _ in sample_tokens(model, idx, new, temperature=0.8, top_k=200, generator=g, use_cache=use_cache))
    sync(device)
    assert n == new, (n, new)
    return new / (time.perf_counter() - t0)


# ---------------------------------------------------------------------------------------------
# the profile

CATEGORIES = (  # first match wins (kernel names, lower case)
    ("optimizer (fused AdamW)", r"adam"),
    ("grad-norm clip (foreach)", r"multi_tensor_apply|lpnorm|foreach"),
    ("attention (SDPA)", r"flash|fmha|attention|sdpa|cudnn|efficient"),
    ("cross-entropy / log-softmax", r"log_softmax|nll|cross_entropy|softmax"),
    ("matmul (GEMM)", r"gemm|nvjet|cutlass|xmma|sm90_|sm80_|cublas|matmul|wgmma"),
    ("other triton (layernorm, gelu, adds, casts)", r"^triton_"),
    ("memcpy / memset", r"memcpy|memset"),
    ("other", r""),
)


def _device_time(e) -> float:
    for attr in ("self_device_time_total", "self_cuda_time_total"):
        if hasattr(e, attr):
            return float(getattr(e, attr))
    return 0.0


def _annotation(e) -> bool:
    """A user range (ProfilerStep*, Optimizer.step#AdamW.step) that the profiler also reports on the
    GPU timeline: it spans kernels that are counted on their own."""
    return bool(getattr(e, "is_user_annotation", False)) or e.key.startswith("ProfilerStep") or "#" in e.key


def run_profile(train_model, raw: GPT, loader: GPTDataLoader, base_ms: float | None, label: str) -> list[str]:
    """torch.profiler over 3 fit steps (after 3 unrecorded ones); returns the summary lines."""
    from torch.profiler import ProfilerActivity, profile, schedule

    device = next(raw.parameters()).device
    cuda = device.type == "cuda"
    wait, warmup, active = 2, 1, 3
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    prof = profile(activities=activities, schedule=schedule(wait=wait, warmup=warmup, active=active, repeat=1))
    tcfg = train_config(loader.batch_size, 1, wait + warmup + active + 1, 1, device, train_model is not raw)
    with prof:
        run_fit(train_model, raw, loader, tcfg, 1, wait + warmup + active, on_log=prof.step)
    events = prof.key_averages()
    if cuda:
        kernels = [e for e in events if str(getattr(e, "device_type", "")).endswith("CUDA") and _device_time(e) > 0
                   and not _annotation(e)]
        times = {e.key: _device_time(e) / 1000 / active for e in kernels}  # ms per step
        what = "GPU kernel time"
    else:
        times = {e.key: float(e.self_cpu_time_total) / 1000 / active for e in events
                 if e.self_cpu_time_total > 0 and not _annotation(e)}
        what = "CPU op self time (no GPU: categories are for kernel names and mostly say 'other')"
    if not times:  # kernels not told apart from ops in this torch: the profiler's own table
        return [f"profile {label} b{loader.batch_size} fit step: no kernel events recognised; profiler table:",
                events.table(sort_by="self_cuda_time_total" if cuda else "self_cpu_time_total", row_limit=25)]
    calls = {e.key: e.count / active for e in events}
    total = sum(times.values()) or 1e-9
    lines = [f"profile {label} b{loader.batch_size} fit step: {what} {total:.2f} ms/step over {active} steps"
             + (f"; fit measured {base_ms:.2f} ms/step wall (GPU busy ~{total / base_ms:.0%})"
                if base_ms and cuda else "")]
    by_cat: dict[str, float] = {}
    for name, t in times.items():
        cat = next(c for c, rx in CATEGORIES if re.search(rx, name.lower()))
        by_cat[cat] = by_cat.get(cat, 0.0) + t
    lines.append(f"  {'category':46s} {'ms/step':>8s} {'share':>6s}")
    for cat, t in sorted(by_cat.items(), key=lambda kv: -kv[1]):
        lines.append(f"  {cat:46s} {t:8.2f} {t / total:6.1%}")
    lines.append(f"  top kernels: {'ms/step':>8s} {'share':>6s} {'calls':>6s}  name")
    for name, t in sorted(times.items(), key=lambda kv: -kv[1])[:20]:
        short = name if len(name) <= 110 else name[:107] + "..."
        lines.append(f"  {'':12s} {t:8.3f} {t / total:6.1%} {calls.get(name, 0):6.1f}  {short}")
    return lines


# ---------------------------------------------------------------------------------------------
# the suite

@dataclasses.dataclass
class Row:
    figure: str
    tok_s: float | None = None
    mfu: float | None = None
    peak: float | None = None
    versus: str = ""
    ratio: float | None = None
    note: str = ""


class Suite:
    def __init__(self, plan: Plan, args):
        self.plan, self.args = plan, args
        self.rows: list[Row] = []
        self.failed: list[str] = []
        self.compile_s: dict[tuple[int, str], float] = {}  # (n_layer, what): compile + warm-up seconds

    def wanted(self, name: str) -> bool:
        if self.args.only:
            return name in self.args.only
        if name == "profile":
            return self.args.profile
        if name == "levers":
            return self.args.levers
        return name != "autotune"  # only when named in --only

    def section(self, name: str, fn, *a, **kw):
        t0 = time.perf_counter()
        say(f"-- {name} (at {elapsed():.0f} s)")
        try:
            return fn(*a, **kw)
        except Exception as e:  # noqa: BLE001 - one broken section must not lose the others' figures
            msg = f"{type(e).__name__}: {e}".splitlines()[0][:300]
            say(f"FAILED: {name}: {msg}")
            traceback.print_exc(file=sys.stdout)
            sys.stdout.flush()
            self.failed.append(name)
            self.rows.append(Row(name, note=f"FAILED: {msg}"))
            return None
        finally:
            gc.collect()
            if self.plan.device.type == "cuda":
                torch.cuda.empty_cache()
            say(f"   ({time.perf_counter() - t0:.1f} s)")

    def figure(self, row: Row) -> None:
        nums = []
        if row.tok_s is not None:
            nums.append(f"{row.tok_s:,.0f} tok/s")
        if row.mfu is not None:
            nums.append(f"MFU {row.mfu:.1%}")
        if row.peak is not None:
            nums.append(f"peak {row.peak:.1f} GB")
        text = row.figure + ": " + ", ".join(nums)
        if row.versus:
            text += f" | {row.versus}"
        if row.ratio is not None:
            text += f" | ratio {row.ratio:.3f}"
        if row.note:
            text += f" ({row.note})"
        say(text)
        self.rows.append(row)

    def compile_budget_ok(self, n_layer: int, what: str) -> tuple[bool, str]:
        """Whether compiling an n_layer model still fits in --budget_s (estimated from the 124M compile)."""
        if not self.plan.compile:
            return False, "eager (--no-compile)" if self.plan.device.type == "cuda" else "eager (smoke)"
        same = [t for (layers, _), t in self.compile_s.items() if layers == n_layer]
        if same:  # a model of as many layers was compiled already (the 750M before the 350M)
            estimate = max(same) + 15
        else:
            base = self.compile_s.get((12, "124M b12"), 60.0)
            estimate = base * n_layer / 12 + 20
        left = self.args.budget_s - elapsed()
        if estimate > left:
            say(f"   {what}: compiling would take ~{estimate:.0f} s, {left:.0f} s of the budget left: running eager")
            return False, f"eager: compile skipped, ~{estimate:.0f} s over the time budget"
        return True, ""


def tokenizer_stand_in(vocab: int) -> Tokenizer:
    """A Tokenizer of `vocab` ids for GPTDataLoader, which checks only the ids against it (the
    datasets here have no metadata): a char vocabulary of that size, no GPT-2 vocabulary file
    needed (characters from U+10000 on: no surrogate among them)."""
    return Tokenizer("char", chars="".join(chr(0x10000 + i) for i in range(vocab)))


def loader_for(plan: Plan, batch: int, block: int, tokens=None, dataset_dir=None) -> GPTDataLoader:
    cfg = SimpleNamespace(batch_size=batch, block_size=block, device=plan.device.type, seed=1337, rank=0)
    if dataset_dir is not None:
        return GPTDataLoader(cfg, tokenizer_stand_in(plan.vocab), dataset_dir=dataset_dir)
    return GPTDataLoader(cfg, tokenizer_stand_in(plan.vocab), tokens=tokens)


def write_shards(plan: Plan, root: Path) -> Path:
    rng = np.random.default_rng(0)
    train = ShardWriter(root / "train", plan.tokens_per_shard)
    for _ in range(plan.shard_tokens // plan.tokens_per_shard):
        train.write(rng.integers(0, plan.vocab, plan.tokens_per_shard, dtype=np.uint32))
    shards = train.close()
    val = ShardWriter(root / "val", plan.tokens_per_shard, first_index=len(shards))
    val.write(rng.integers(0, plan.vocab, plan.tokens_per_shard // 2, dtype=np.uint32))
    val.close()
    return root


def load_preset(name: str) -> tuple[dict, dict]:
    try:
        from mypt.config import load_config_file
    except ImportError:
        import mypt

        data = json.loads((Path(mypt.__file__).parent / "configs" / f"{name}.json").read_text())
        return dict(data.get("model", {})), dict(data.get("training", {}))
    model_d, train_d, _ = load_config_file(name)
    return dict(model_d), dict(train_d)


def build(plan: Plan, model_kw: dict, compiled: bool, mode: str | None = None):
    torch.manual_seed(0)
    raw = GPT(GPTConfig(**model_kw)).to(plan.device)
    return raw, (torch.compile(raw, dynamic=False, mode=mode) if compiled else raw)


# -- sections -----------------------------------------------------------------------------------

def synthetic_tokens(plan: Plan) -> np.ndarray:
    """The in-memory training tokens of the 124M fits (sections 1 and 6)."""
    return np.random.default_rng(1).integers(0, plan.vocab, plan.synthetic_tokens, dtype=np.uint32)


def sections_124(suite: Suite, tmp: Path, tokens: np.ndarray) -> None:
    plan = suite.plan
    lab, mode = plan.label124, ("compiled" if plan.compile else "eager")
    st = SimpleNamespace(fit={}, bare={}, shards={})
    shard_dir = suite.section("data: shards", write_shards, plan, tmp / "ds")
    built = suite.section(f"build {lab}", build, plan, plan.m124, plan.compile)
    if built is None:
        return None
    raw, cm = built
    block = plan.m124["block_size"]
    for b in plan.batches:
        timed = plan.timed_logs[b]
        steps = plan.log_interval * (1 + timed)
        tcfg = train_config(b, 1, steps, plan.log_interval, plan.device, plan.compile)
        syn = loader_for(plan, b, block, tokens=tokens)

        def do_fit(loader, key, store):
            m = run_fit(cm, raw, loader, tcfg, 1, timed)
            store[b] = m
            say(f"   fit {key}: {m.tok_s:,.0f} tok/s, {m.ms_step:.1f} ms/step, warm-up (first {plan.log_interval} "
                f"steps{', compile' if plan.compile and key == 'synthetic' else ''}) {m.warm_s:.1f} s")
            return m

        m = suite.section(f"fit {lab} b{b} synthetic", do_fit, syn, "synthetic", st.fit)
        if m is not None and plan.compile:
            suite.compile_s[(plan.m124["n_layer"], f"124M b{b}")] = m.warm_s

        def do_bare():
            batches = [syn.get_batch("train") for _ in range(4)]  # the loader's own layout: no recompile
            m = run_bare(cm, raw, batches, tcfg, plan.log_interval, plan.log_interval * timed)
            st.bare[b] = m
            say(f"   bare: {m.tok_s:,.0f} tok/s, {m.ms_step:.1f} ms/step, warm-up {m.warm_s:.1f} s")
            return m

        suite.section(f"bare {lab} b{b}", do_bare)
        f, bare = st.fit.get(b), st.bare.get(b)
        name = f"fit {lab} b{b} {mode}"
        if f is not None:
            suite.figure(Row(name, f.tok_s, f.mfu, f.peak_gb,
                             f"bare {bare.tok_s:,.0f} tok/s" + (f", peak {bare.peak_gb:.1f} GB" if bare.peak_gb else "")
                             if bare else "bare FAILED",
                             f.tok_s / bare.tok_s if bare else None,
                             "target >= 0.98" + (f"; compile+warm-up {f.warm_s:.0f} s" if plan.compile else "")))
        elif bare is not None:
            suite.figure(Row(f"bare {lab} b{b} {mode}", bare.tok_s, bare.mfu, bare.peak_gb, "fit FAILED"))

        if shard_dir is not None:
            def do_shards():
                loader = loader_for(plan, b, block, dataset_dir=shard_dir)
                try:
                    return do_fit(loader, "shards", st.shards)
                finally:
                    loader.close()

            s = suite.section(f"fit {lab} b{b} shards", do_shards)
            if s is not None:
                suite.figure(Row(f"fit {lab} b{b} shards {mode}", s.tok_s, s.mfu, s.peak_gb,
                                 f"synthetic {f.tok_s:,.0f} tok/s" if f else "synthetic FAILED",
                                 s.tok_s / f.tok_s if f else None, "target >= 0.99"))

        if b == plan.batches[0] and suite.wanted("profile"):
            def do_profile():
                lines = run_profile(cm, raw, syn, st.fit[b].ms_step if b in st.fit else None, lab)
                for line in lines:
                    say(line)
                suite.rows.append(Row(f"profile {lab} b{b}", note=lines[0].split(": ", 1)[1]))

            suite.section(f"profile {lab} b{b}", do_profile)
    return raw


def section_gen(suite: Suite, raw: GPT | None) -> None:
    plan = suite.plan
    if raw is None:
        raw, _ = build(plan, plan.m124, False)
    raw.eval()
    variants = [("fp32", raw)]
    if plan.device.type == "cuda":
        variants.append(("bf16", copy.deepcopy(raw).to(torch.bfloat16)))
    block = raw.config.block_size
    for dtype_name, model in variants:
        for prompt, new in plan.gen:
            if dtype_name == "bf16" and (prompt, new) != plan.gen[0]:
                continue

            def one():
                cached = run_generate(model, prompt, new, use_cache=True)
                full = run_generate(model, prompt, new, use_cache=False)
                slides = prompt + new > block
                note = ("past the window: the cache re-prefills half a block once every half block"
                        if slides else "all in the window: cache used throughout")
                suite.figure(Row(f"generate {plan.label124} {dtype_name} prompt {prompt} + {new} new, KV cache",
                                 cached, versus=f"no cache {full:,.1f} tok/s", ratio=cached / full, note=note))

            suite.section(f"generate {dtype_name} {prompt}+{new}", one)
    raw.train()


def section_preset(suite: Suite, preset: str, label: str, compiled: bool | None, log_interval: int, warm: int,
                   timed: int, model_override: dict | None = None, batch: int | None = None, note_extra: str = ""):
    plan = suite.plan
    if model_override is not None:
        model_d, train_d = dict(model_override), {}
    else:
        model_d, train_d = load_preset(preset)
        if plan.preset_model is not None:  # --smoke: a tiny model, the preset's training settings
            model_d = dict(plan.preset_model)
    model_d["vocab_size"] = plan.vocab
    if batch is not None:
        train_d["batch_size"] = batch
    train_d.pop("compile", None)
    n_layer = int(model_d.get("n_layer", 12))
    note = ""
    if compiled is None:  # what `mypt train` does with the preset: its compile, else on with CUDA
        saved = load_preset(preset)[1].get("compile") if model_override is None else False
        compiled = TrainConfig(compile=saved).compiles_on(plan.device.type)
        note = "compiled (default flags)" if compiled else "eager (default flags)"
    elif compiled:
        compiled, note = suite.compile_budget_ok(n_layer, label)
        note = note or "compiled"
    else:
        note = "eager"
    compiled = compiled and plan.compile
    raw, cm = build(plan, model_d, compiled)
    try:
        bs = int(train_d.get("batch_size", 12))
        accum = int(train_d.get("gradient_accumulation_steps", 1))
        tcfg = train_config(bs, accum, log_interval * (warm + timed), log_interval, plan.device, compiled, train_d)
        tokens = np.random.default_rng(2).integers(0, plan.vocab, max(plan.synthetic_tokens, 20 * raw.config.block_size),
                                                   dtype=np.uint32)
        loader = loader_for(plan, bs, raw.config.block_size, tokens=tokens)
        m = run_fit(cm, raw, loader, tcfg, warm, timed)
        mode = "compiled" if compiled else "eager"
        shape = f"{raw.config.n_layer}x{raw.config.n_embd}"
        name = f"{label} ({raw.num_params() / 1e6:.0f}M, {shape}) b{bs}x{accum} {mode}"
        extra = f"{note}; {m.ms_step:.0f} ms/step; warm-up{' incl. compile' if compiled else ''} {m.warm_s:.0f} s"
        extra += f"; {note_extra}" if note_extra else ""
        suite.figure(Row(name, m.tok_s, m.mfu, m.peak_gb, note=extra))
        if compiled:
            suite.compile_s[(raw.config.n_layer, label)] = m.warm_s
        return m
    finally:
        del raw, cm
        if compiled:
            torch._dynamo.reset()


# -- levers: what moves the 124M MFU ------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Lever:
    """One setting of the 124M fit, changed alone against the default compile at the same batch."""
    name: str
    batch: int | None = None  # None: the faster of the default batches measured
    mode: str | None = None  # torch.compile mode
    cudnn_attention: bool = True  # False: SDPA picks flash attention (FA2) instead of cuDNN's
    coordinate_descent: bool = False  # inductor tunes its own kernels' launch configurations

    @property
    def is_default(self) -> bool:
        return self.mode is None and self.cudnn_attention and not self.coordinate_descent

    @property
    def needs_compile(self) -> bool:
        return self.mode is not None or self.coordinate_descent


# Each one compilation, about 20 s on an H200, except coordinate-descent tuning (~3 min), last.
DEFAULT_LEVER = Lever("default compile", batch=32)
LEVERS = (DEFAULT_LEVER, Lever("default compile", batch=64),
          Lever("flash attention instead of cuDNN", cudnn_attention=False),
          Lever("mode reduce-overhead (CUDA graphs)", mode="reduce-overhead"),
          Lever("inductor coordinate-descent tuning", coordinate_descent=True))
AUTOTUNE = (Lever("mode max-autotune-no-cudagraphs", mode="max-autotune-no-cudagraphs"),
            Lever("mode max-autotune (autotune + CUDA graphs)", mode="max-autotune"))


@dataclasses.dataclass
class LeverState:
    tokens: np.ndarray
    default: dict = dataclasses.field(default_factory=dict)  # batch -> Measure of the default compile

    def best_batch(self, plan: Plan) -> int:
        if plan.device.type != "cuda":  # --smoke: the larger one, not the luck of two tiny timings
            return plan.batches[-1]
        return max(self.default, key=lambda b: self.default[b].tok_s) if self.default else 32


def lever_compile_config(lever: Lever) -> contextlib.ExitStack:
    """The lever's inductor tuning, with inductor's and AOTAutograd's on-disk caches off: their
    keys leave out settings such as the SDPA backends, so a lever could run the graph another
    lever compiled (seen: the flash lever reran the cuDNN graph, its compile 3 s against 20).
    Each lever compiles afresh."""
    import torch._functorch.config as functorch_config
    import torch._inductor.config as inductor_config

    stack = contextlib.ExitStack()
    stack.enter_context(inductor_config.patch(coordinate_descent_tuning=lever.coordinate_descent))
    for config, key in ((functorch_config, "enable_autograd_cache"), (inductor_config, "fx_graph_cache")):
        if hasattr(config, key):
            stack.enter_context(config.patch(**{key: False}))
    return stack


def run_lever(suite: Suite, lever: Lever, st: LeverState) -> Measure | None:
    plan = suite.plan
    smoke = plan.device.type != "cuda"
    if lever.needs_compile and not plan.compile and not smoke:
        say(f"   {lever.name}: skipped, --no-compile")
        return None
    batch = lever.batch or st.best_batch(plan)
    if smoke:
        batch = {32: plan.batches[0], 64: plan.batches[-1]}.get(batch, batch)
    cudnn_before = torch.backends.cuda.cudnn_sdp_enabled()
    torch._dynamo.reset()
    try:
        with lever_compile_config(lever):
            torch.backends.cuda.enable_cudnn_sdp(lever.cudnn_attention and cudnn_before)
            raw, cm = build(plan, plan.m124, plan.compile, lever.mode)
            timed = 4 if batch <= 32 else 3
            tcfg = train_config(batch, 1, plan.log_interval * (1 + timed), plan.log_interval, plan.device, plan.compile)
            loader = loader_for(plan, batch, plan.m124["block_size"], tokens=st.tokens)
            m = run_fit(cm, raw, loader, tcfg, 1, timed)
    finally:
        torch.backends.cuda.enable_cudnn_sdp(cudnn_before)
        torch._dynamo.reset()
    if lever.is_default:  # compared with the default at the smallest batch measured before it
        base_b = min(st.default, default=batch)
        st.default[batch] = m
    else:  # compared with the default at its own batch
        base_b = batch
    base = st.default.get(base_b) if st.default.get(base_b) is not m else None
    versus = f"default b{base_b} {base.tok_s:,.0f} tok/s" if base else ""
    suite.figure(Row(f"lever {plan.label124} b{batch}, {lever.name}", m.tok_s, m.mfu, m.peak_gb, versus,
                     m.tok_s / base.tok_s if base else None,
                     f"{'compile+' if plan.compile else ''}warm-up {m.warm_s:.0f} s, {m.ms_step:.1f} ms/step"
                     + ("; eager (smoke)" if smoke else "")))
    return m


def section_levers(suite: Suite, st: LeverState, levers: tuple[Lever, ...]) -> None:
    if not st.default and not any(lever.is_default for lever in levers):
        levers = (DEFAULT_LEVER, *levers)  # --only autotune: something to compare with
    for lever in levers:
        suite.section(f"lever {lever.name}" + (f" b{lever.batch}" if lever.batch else ""), run_lever, suite, lever, st)


def print_summary(suite: Suite) -> None:
    say()
    say("=" * 30 + " summary " + "=" * 30)
    say(f"{'figure':64s} {'tok/s':>11s} {'MFU':>6s} {'peak GB':>8s} {'ratio':>6s}  vs / note")
    for r in suite.rows:
        tok = f"{r.tok_s:,.0f}" if r.tok_s is not None else ""
        mfu = f"{r.mfu:.1%}" if r.mfu is not None else ""
        peak = f"{r.peak:.1f}" if r.peak is not None else ""
        ratio = f"{r.ratio:.3f}" if r.ratio is not None else ""
        rest = "; ".join(x for x in (r.versus, r.note) if x)
        say(f"{r.figure[:64]:64s} {tok:>11s} {mfu:>6s} {peak:>8s} {ratio:>6s}  {rest}")
    say(f"total {elapsed():.0f} s; failed sections: {', '.join(suite.failed) or 'none'}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU, no compile: checks every code path")
    ap.add_argument("--profile", action="store_true", help="also profile the 124M fit step (top CUDA kernels)")
    ap.add_argument("--levers", action="store_true",
                    help="also the 124M fit at batch 64, with flash attention, CUDA graphs and inductor tuning "
                         "(about 4 more minutes on an H200): what each does to tokens/s")
    ap.add_argument("--only", type=lambda s: [x.strip() for x in s.split(",") if x.strip()], default=None,
                    help=f"comma-separated sections to run, of {','.join(SECTIONS)}")
    ap.add_argument("--no-compile", action="store_true", help="eager everywhere (GPU)")
    ap.add_argument("--budget_s", type=float, default=400.0,
                    help="the 750M/350M sections run eager when compiling them would end past this many seconds")
    args = ap.parse_args()
    if args.only and set(args.only) - set(SECTIONS):
        ap.error(f"--only: unknown section(s) {sorted(set(args.only) - set(SECTIONS))}; known: {SECTIONS}")
    plan = make_plan(args)
    import mypt

    say(f"mypt GPU suite, {datetime.datetime.now().isoformat(timespec='seconds')}")
    if plan.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        props = torch.cuda.get_device_properties(plan.device)
        say(f"device: {props.name}, {props.total_memory / 2**30:.0f} GiB, {props.multi_processor_count} SMs | "
            f"torch {torch.__version__}, CUDA {torch.version.cuda} | bf16 autocast, TF32, fused AdamW, "
            f"compile={plan.compile}")
    else:
        say(f"device: cpu (--smoke: tiny shapes, figures check code paths only) | torch {torch.__version__}")
    say(f"mypt: {Path(mypt.__file__).parent} | python {sys.version.split()[0]} | MFU against {PEAK_FLOPS / 1e12:.0f} "
        f"TFLOP/s | budget {args.budget_s:.0f} s")
    suite = Suite(plan, args)
    tokens = synthetic_tokens(plan)
    with tempfile.TemporaryDirectory(prefix="gpu_suite_") as tmp:
        raw = None
        if suite.wanted("fit124") or suite.wanted("profile"):
            raw = sections_124(suite, Path(tmp), tokens)
        if suite.wanted("gen"):
            suite.section("generation", section_gen, suite, raw)
        del raw
        torch._dynamo.reset()
        if suite.wanted("mem150"):
            suite.section("150M_1024 preset memory", section_preset, suite, "150M_1024", "150M_1024 preset", None,
                          1, 1, 2, note_extra="peak memory is the figure here; the guide says ~12 GB")
        if suite.wanted("modern150"):
            suite.section("modern/150M_1024 preset", section_preset, suite, "modern/150M_1024",
                          "modern/150M_1024 preset", None, 1, 1, 2)
        if suite.wanted("preset750"):
            suite.section("750M preset", section_preset, suite, "pretrain/750M_1024_domain_adapt",
                          "750M_1024_domain_adapt preset", True, 1, 1, 3)
        if suite.wanted("m350"):
            suite.section("350M", section_preset, suite, "", plan.label350, True, 5, 1, 3,
                          plan.m350, plan.b350)
        # After the presets: their compile-or-eager choice reads the time budget, which the
        # levers' compilations would use up.
        lever_state = LeverState(tokens)
        if suite.wanted("levers"):
            section_levers(suite, lever_state, LEVERS)
        if suite.wanted("autotune"):
            section_levers(suite, lever_state, AUTOTUNE)
    print_summary(suite)
    return 1 if suite.failed else 0


if __name__ == "__main__":
    sys.exit(main())
