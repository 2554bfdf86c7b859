"""The GPU code paths of mypt.train.fit, run on the CPU: autocast (bf16, and float16 with a
GradScaler), fused AdamW, torch.compile, DDP, and stopping on a signal. Each trains a tiny
model a few steps in-process; where cheap, a stopped run resumes to exactly the weights of an
uninterrupted one."""

from __future__ import annotations

import errno
import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import free_port
from torch.nn.parallel import DistributedDataParallel as DDP

from mypt import checkpoint
from mypt.config import TrainConfig
from mypt.data import GPTDataLoader, LoaderConfig
from mypt.errors import TrainingDiverged, TrainingStopped
from mypt.model import GPT, GPTConfig, load_model
from mypt.tokenizers import tokenizer_class
from mypt.precision import autocast_dtype
from mypt.signals import StopSignals
from mypt.train import configure_optimizer, fit, nonfinite_parameters

# A text a tiny model learns in a few dozen steps: short words over a small alphabet.
TEXT = " ".join(["the cat sat on the mat", "a dog ran to the log", "we see the sea"] * 300)
BLOCK = 16


def tokenizer():
    return tokenizer_class("char").from_corpus([TEXT])


def loader(tok, rank: int = 0) -> GPTDataLoader:
    return GPTDataLoader(LoaderConfig(8, BLOCK, "cpu", 1, rank), tok, tokens=tok.encode_array(TEXT))


def tiny_model(tok, dropout: float = 0.0) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=BLOCK, n_layer=1, n_head=2, n_embd=32, dropout=dropout))


def config(**kw) -> TrainConfig:
    defaults = dict(max_iters=30, eval_interval=10, eval_iters=2, log_interval=1, learning_rate=1e-2,
                    warmup_iters=2, device="cpu")
    return TrainConfig(**{**defaults, **kw})


def train(cfg: TrainConfig, ckpt: Path | None = None, stop_at: int | None = None, compile: bool = False,
          on_log=None):
    """fit a fresh tiny model; `stop_at`: SIGTERM this process when step `stop_at` is logged."""
    tok = tokenizer()
    model = tiny_model(tok)
    lines = []

    def log(line: str) -> None:
        lines.append(line)
        if on_log is not None:
            on_log(line)
        if stop_at is not None and line.startswith(f"iter {stop_at}:"):
            signal.raise_signal(signal.SIGTERM)

    run_model = torch.compile(model) if compile else model
    result = fit(run_model, loader(tok), config=cfg, checkpoint_dir=ckpt, tokenizer=tok,
                 checkpoint_extra={"training": cfg.to_dict()}, log=log)
    return result, lines


def resume(cfg: TrainConfig, ckpt: Path, compile: bool = False) -> dict:
    """What `mypt train --resume` does: weights, optimizer, RNG and sampler from the checkpoint."""
    model, tok, _ = load_model(ckpt)
    optimizer = configure_optimizer(model, cfg, torch.device("cpu"))
    state = checkpoint.load_training_state(ckpt, optimizer)
    return fit(torch.compile(model) if compile else model, loader(tok), optimizer, config=cfg, checkpoint_dir=ckpt, tokenizer=tok,
               resume_state=state, checkpoint_extra={"training": cfg.to_dict()}, log=lambda line: None)


def train_losses(history: list[dict]) -> list[float]:
    return [h["train_loss"] for h in history if "train_loss" in h]


def assert_learns(history: list[dict]) -> None:
    losses = train_losses(history)
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.5, losses


def stopped_then_resumed_equals_straight(cfg: TrainConfig, tmp_path: Path, stop_at: int) -> dict:
    straight, _ = train(cfg, tmp_path / "straight")
    with pytest.raises(TrainingStopped, match=f"SIGTERM: stopped at step {stop_at}; continue with --resume"):
        train(cfg, tmp_path / "stopped", stop_at=stop_at)
    state = json.loads((tmp_path / "stopped" / "training_state.json").read_text())
    assert state["step"] == stop_at
    resume(cfg, tmp_path / "stopped")
    for name in ("model.safetensors", "training_state.safetensors", "training_state.json"):  # (GradScaler too)
        assert (tmp_path / "straight" / name).read_bytes() == (tmp_path / "stopped" / name).read_bytes(), name
    assert_learns(straight["history"])
    return state


# ---------------------------------------------------------------------------------------------
# stopping

def test_no_checkpoint_is_written_before_the_first_step(tmp_path):
    # The step-0 evaluation is logged, but its checkpoint (a copy of the initial weights, a slow
    # write for a large model) is skipped; the first one comes at the next evaluation.
    ckpt, seen = tmp_path / "m", {}

    def on_log(line: str) -> None:
        if line.startswith(("step 0:", "iter 1:", "step 10:", "iter 11:")):
            seen[line.split(":")[0]] = (ckpt / "model.safetensors").exists()

    train(config(), ckpt, on_log=on_log)
    assert seen == {"step 0": False, "iter 1": False, "step 10": False, "iter 11": True}
    assert json.loads((ckpt / "training_state.json").read_text())["step"] == 30


class Diverging(GPT):
    """Its training loss turns nan at the 13th step (step 12); with `poison`, a weight turns
    nan first (weights already broken when the loss shows it)."""
    calls = 0
    poison = False

    def forward(self, idx, targets=None, cache=None):
        if self.training:
            self.calls += 1
            if self.poison and self.calls > 12:
                with torch.no_grad():
                    self.lm_head.weight[0, 0] = float("nan")
        logits, loss = super().forward(idx, targets, cache)
        if self.training and self.calls > 12:
            loss = loss * float("nan")
        return logits, loss


def fit_tiny(model: GPT, tok, ckpt: Path, data=None) -> dict:
    return fit(model, data or loader(tok), config=config(), checkpoint_dir=ckpt, tokenizer=tok,
               checkpoint_extra={"training": config().to_dict()}, log=lambda line: None)


def assert_resumes_to_the_straight_run(tmp_path: Path, ckpt: Path) -> None:
    """--resume from what a failure saved ends where an uninterrupted run does, byte for byte."""
    train(config(), tmp_path / "straight")
    resume(config(), ckpt)
    for name in ("model.safetensors", "training_state.safetensors"):
        assert (tmp_path / "straight" / name).read_bytes() == (ckpt / name).read_bytes(), name


@pytest.mark.slow
def test_a_loss_gone_nan_keeps_the_last_checkpoint_and_resume_continues_exactly(tmp_path):
    # The weights of step 12 give the NaN on its batch at any learning rate: not saved over the
    # checkpoint of step 10, which a lower rate can continue.
    tok = tokenizer()
    model = Diverging(tiny_model(tok).config)
    model.load_state_dict(tiny_model(tok).state_dict())
    with pytest.raises(TrainingDiverged, match=r"loss is nan at step 12: training stopped; the last checkpoint \(step "
                                               r"10\) is in .*m; lower --learning_rate or raise --warmup_iters, then "
                                               r"continue with --resume from it \(the weights of step 12 give this"):
        fit_tiny(model, tok, tmp_path / "m")
    state = json.loads((tmp_path / "m" / "training_state.json").read_text())
    assert state["step"] == 10 and all(np.isfinite(h.get("train_loss", 0)) for h in state["history"])
    assert_resumes_to_the_straight_run(tmp_path, tmp_path / "m")


def test_a_resumed_run_whose_first_step_diverges_blames_the_checkpoint_not_the_rate(tmp_path):
    train(config(max_iters=10), tmp_path / "m")
    model, tok, _ = load_model(tmp_path / "m")
    nan = Diverging(model.config)
    nan.load_state_dict(model.state_dict())
    nan.calls = 12  # its first forward (step 10) is NaN
    optimizer = configure_optimizer(nan, config(), torch.device("cpu"))
    state = checkpoint.load_training_state(tmp_path / "m", optimizer)
    with pytest.raises(TrainingDiverged, match=r"loss is nan at step 10: training stopped; the last checkpoint \(step "
                                               r"10\) is in .*m; the checkpoint's own weights give it, which no "
                                               r"learning rate fixes"):
        fit(nan, loader(tok), optimizer, config=config(), checkpoint_dir=tmp_path / "m", tokenizer=tok,
            resume_state=state, log=lambda line: None)


def test_weights_already_not_finite_are_not_saved_and_the_last_checkpoint_is_named(tmp_path):
    tok = tokenizer()
    model = Diverging(tiny_model(tok).config)
    model.poison = True
    with pytest.raises(TrainingDiverged, match=r"loss is nan at step 12: training stopped; the weights are not "
                                               r"finite \(transformer.wte.weight\); the last checkpoint \(step 10\) "
                                               r"is in .*m;"):
        fit_tiny(model, tok, tmp_path / "m")
    assert json.loads((tmp_path / "m" / "training_state.json").read_text())["step"] == 10


def test_a_gradient_gone_nan_with_a_finite_loss_is_caught_before_the_step(tmp_path):
    class NanGradient(GPT):  # from step 12, a term of value 0 whose gradient is NaN (sqrt at 0, times 0)
        calls = 0

        def forward(self, idx, targets=None, cache=None):
            logits, loss = super().forward(idx, targets, cache)
            if self.training:
                self.calls += 1
                if self.calls > 12:
                    loss = loss + (self.lm_head.weight.sum() * 0).sqrt()
            return logits, loss

    tok = tokenizer()
    with pytest.raises(TrainingDiverged, match=r"the gradient norm is nan at step 12: training stopped; the last "
                                               r"checkpoint \(step 10\) is in"):
        fit_tiny(NanGradient(tiny_model(tok).config), tok, tmp_path / "m")
    assert not nonfinite_parameters(load_model(tmp_path / "m")[0])  # the NaN gradient never reached the weights


class FailingLoader(GPTDataLoader):
    """get_batch(split) raises EIO at its `fail_at`-th call (the first is the batch of step 0;
    call n is drawn during step n - 2, for step n - 1); eval_batches at `fail_eval_at`, or that
    evaluation's batch `fail_eval_batch` (0 the first)."""

    def __init__(self, *args, fail_at: int | None = None, fail_eval_at: int | None = None,
                 fail_eval_batch: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.fail_at, self.fail_eval_at, self.calls, self.evals = fail_at, fail_eval_at, 0, 0
        self.fail_eval_batch = fail_eval_batch

    def get_batch(self, split="train"):
        self.calls += 1
        if self.calls == self.fail_at:
            raise OSError(errno.EIO, os.strerror(errno.EIO), "shard_00003.bin")
        return super().get_batch(split)

    def eval_batches(self, split, n):
        self.evals += 1
        if self.evals == self.fail_eval_at and self.fail_eval_batch is None:
            raise OSError(errno.EIO, os.strerror(errno.EIO), "shard_00009.bin")
        batches = super().eval_batches(split, n)
        if self.evals != self.fail_eval_at:
            return batches

        def failing():
            for i, batch in enumerate(batches):
                if i == self.fail_eval_batch:
                    raise OSError(errno.EIO, os.strerror(errno.EIO), "shard_00009.bin")
                yield batch
        return failing()


def failing_loader(tok, rank: int = 0, **kwargs) -> FailingLoader:
    return FailingLoader(LoaderConfig(8, BLOCK, "cpu", 1, rank), tok, tokens=tok.encode_array(TEXT), **kwargs)


@pytest.mark.slow
def test_a_shard_unreadable_mid_step_saves_that_step_and_resume_continues_exactly(tmp_path):
    tok = tokenizer()
    with pytest.raises(TrainingStopped, match=r"cannot use shard_00003.bin: Input/output error \(at step 13\): "
                                              r"training stopped; the checkpoint of step 13 is saved in .*m; once "
                                              r"it is fixed, continue with --resume"):
        fit_tiny(tiny_model(tok), tok, tmp_path / "m", failing_loader(tok, fail_at=15))
    assert json.loads((tmp_path / "m" / "training_state.json").read_text())["step"] == 13
    assert_resumes_to_the_straight_run(tmp_path, tmp_path / "m")


def test_a_val_shard_unreadable_at_an_evaluation_saves_that_step(tmp_path):
    tok = tokenizer()
    with pytest.raises(TrainingStopped, match=r"shard_00009.bin.*\(at step 20\).*checkpoint of step 20 is saved"):
        fit_tiny(tiny_model(tok), tok, tmp_path / "m", failing_loader(tok, fail_eval_at=3))  # evals at 0, 10, 20
    assert json.loads((tmp_path / "m" / "training_state.json").read_text())["step"] == 20


def test_a_failure_before_anything_is_trained_writes_no_checkpoint(tmp_path):
    tok = tokenizer()
    with pytest.raises(TrainingStopped, match=r"\(at step 0\): training stopped; no checkpoint was written"):
        fit_tiny(tiny_model(tok), tok, tmp_path / "m", failing_loader(tok, fail_at=2))
    assert not (tmp_path / "m").exists()


def test_sigterm_stops_after_the_step_and_resumes_exactly(tmp_path):
    # Stops at step 13, between the evaluations at 10 and 20: the stop writes its own checkpoint.
    stopped_then_resumed_equals_straight(config(), tmp_path, stop_at=13)


def test_signal_handlers_are_restored_after_fit(tmp_path):
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    train(config(max_iters=2))
    with pytest.raises(TrainingStopped):
        train(config(max_iters=5), stop_at=1)
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_a_second_signal_acts_at_once():
    # The previous SIGINT handler: Python's default, set here since a process may start with
    # SIGINT ignored (a non-interactive shell's `&` does that) and then Python installs none.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            with StopSignals() as signals:
                signal.raise_signal(signal.SIGINT)
                assert signals.received == "SIGINT"
                signal.raise_signal(signal.SIGINT)
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize("minutes, saved", [(1e-9, [0, 1, 2, 3, 4, 5]), (0, [None] * 6)])
def test_checkpoint_minutes_saves_between_evaluations(tmp_path, minutes, saved):
    # The checkpoint's step when each step is logged (eval_interval 10: evaluations at 0 and 6
    # only, and none saved at 0). checkpoint_minutes tiny: one before every step; 0: none
    # between evaluations.
    seen = []
    state = tmp_path / "m" / "training_state.json"

    def on_log(line: str) -> None:
        if line.startswith("iter"):
            seen.append(json.loads(state.read_text())["step"] if state.exists() else None)

    train(config(max_iters=6, checkpoint_minutes=minutes), tmp_path / "m", on_log=on_log)
    assert seen == saved
    assert json.loads(state.read_text())["step"] == 6


# ---------------------------------------------------------------------------------------------
# autocast, GradScaler, fused AdamW

def test_dtype_auto_on_cpu_is_bf16_only_with_amx_or_avx512_bf16_and_named_dtypes_autocast(monkeypatch):
    cpu = torch.device("cpu")
    for amx, avx512_bf16 in ((False, False), (True, False), (False, True)):
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
        assert autocast_dtype(config(dtype="auto"), cpu) is (torch.bfloat16 if amx or avx512_bf16 else None)
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported")  # a torch without the private checks
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported")
    assert autocast_dtype(config(dtype="auto"), cpu) is None
    assert autocast_dtype(config(dtype="float32"), cpu) is None
    assert autocast_dtype(config(dtype="bfloat16"), cpu) is torch.bfloat16
    assert autocast_dtype(config(dtype="float16"), cpu) is torch.float16


def test_dtype_auto_picks_bf16_only_where_the_gpu_runs_it_natively(monkeypatch):
    gpu = torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **kw: True)  # what a T4 says
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (7, 5))  # T4
    assert autocast_dtype(config(dtype="auto"), gpu) is torch.float16
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (8, 0))  # A100
    assert autocast_dtype(config(dtype="auto"), gpu) is torch.bfloat16
    assert autocast_dtype(config(dtype="float16"), gpu) is torch.float16


def test_cpu_autocast_keeps_attention_in_float32(monkeypatch):
    """Under CPU autocast the linear layers run in bfloat16 and attention in float32 (torch's
    CPU flash attention is slower in bfloat16); on the GPU attention runs in bfloat16."""
    import mypt.model

    seen = []
    sdpa = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(mypt.model.F, "scaled_dot_product_attention",
                        lambda q, k, v, **kw: seen.append((q.dtype, torch.is_autocast_enabled("cpu"))) or sdpa(q, k, v, **kw))
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=32))
    x = torch.randint(0, 32, (2, 8))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, loss = model(x, x)
    assert seen == [(torch.float32, False)] and logits.dtype == torch.bfloat16 and loss.dtype == torch.float32
    loss.backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in model.parameters())


def test_bf16_autocast_on_cpu_learns_and_resumes_exactly(tmp_path):
    _, lines = train(config(dtype="bfloat16", max_iters=2))
    assert lines[0].endswith("autocast: torch.bfloat16")
    stopped_then_resumed_equals_straight(config(dtype="bfloat16"), tmp_path, stop_at=13)


def test_resume_keeps_the_precision_the_run_started_in(tmp_path, monkeypatch):
    """--dtype auto started in bfloat16 on a CPU with AMX; resumed where auto would pick
    float32 (no AMX, or an older mypt's checkpoint moved here), it stays in bfloat16, says so,
    and ends as the uninterrupted run did."""
    import mypt.precision

    monkeypatch.setattr(mypt.precision, "cpu_runs_bf16", lambda: True)
    cfg = config(dtype="auto")
    train(cfg, tmp_path / "straight")
    with pytest.raises(TrainingStopped):
        train(cfg, tmp_path / "stopped", stop_at=13)
    assert json.loads((tmp_path / "stopped/training_state.json").read_text())["autocast"] == "bfloat16"
    monkeypatch.setattr(mypt.precision, "cpu_runs_bf16", lambda: False)
    model, tok, _ = load_model(tmp_path / "stopped")
    optimizer = configure_optimizer(model, cfg, torch.device("cpu"))
    lines = []
    fit(model, loader(tok), optimizer, config=cfg, checkpoint_dir=tmp_path / "stopped", tokenizer=tok,
        resume_state=checkpoint.load_training_state(tmp_path / "stopped", optimizer),
        checkpoint_extra={"training": cfg.to_dict()}, log=lines.append)
    assert lines[0] == ("autocast: bfloat16, as the run started (--dtype auto would pick float32 on this machine; "
                        "pass --dtype to change it)")
    for name in ("model.safetensors", "training_state.json"):
        assert (tmp_path / "straight" / name).read_bytes() == (tmp_path / "stopped" / name).read_bytes(), name


def test_float16_uses_a_grad_scaler_saved_in_the_checkpoint(tmp_path):
    _, lines = train(config(dtype="float16", max_iters=2))
    assert lines[0].endswith("autocast: torch.float16 with GradScaler")
    state = stopped_then_resumed_equals_straight(config(dtype="float16"), tmp_path, stop_at=13)
    assert state["scaler"]["scale"] > 0 and state["scaler"]["growth_interval"] == 2000


def test_no_grad_scaler_state_without_float16(tmp_path):
    train(config(max_iters=2, eval_interval=2), tmp_path / "m")
    assert "scaler" not in json.loads((tmp_path / "m/training_state.json").read_text())


def test_a_resume_reads_and_hashes_each_checkpoint_file_once(tmp_path, monkeypatch, count_opens):
    """A resume that reads the training state first (a sharded run picks its precision from it)
    then loads it verified training_state.json and .safetensors (the optimizer's moments, twice
    the model's size under AdamW) twice, and parsed config.json three times: given what the
    caller read, load_training_state reads each once."""
    ckpt = (tmp_path / "m").resolve()
    train(config(max_iters=2, eval_interval=2), ckpt)
    model, _, _ = load_model(ckpt)
    optimizer = configure_optimizer(model, config(), torch.device("cpu"))
    opens = count_opens(lambda path, mode: path.name if path.resolve().parent == ckpt else None)
    saved_config = checkpoint.read_config(ckpt)
    saved = checkpoint.read_training_state(ckpt, saved_config)
    state = checkpoint.load_training_state(ckpt, optimizer, 0, model, state=saved, config=saved_config)
    monkeypatch.undo()
    # (training_state.json: its bytes hashed and parsed; safetensors' own read of its file is not Python's open)
    assert opens == {"config.json": 1, "training_state.json": 1, "training_state.safetensors": 1}
    assert state["step"] == 2 and "optimizer" not in state and "optimizer" in saved  # (the caller's left whole)
    assert optimizer.state_dict()["state"]  # the moments restored


def test_adamw_is_fused_on_cpu():
    tok = tokenizer()
    optimizer = configure_optimizer(tiny_model(tok), config(), torch.device("cpu"))
    assert optimizer.defaults["fused"] is True
    result, _ = train(config())  # fit builds it the same way
    assert_learns(result["history"])


# ---------------------------------------------------------------------------------------------
# torch.compile and DDP

@pytest.mark.slow
def test_compiled_model_learns_and_resumes(tmp_path):
    # float32 (auto is bfloat16 on a CPU with AMX): a fresh compile may pick other kernels, and
    # their rounding differences stay under 1e-4 only in float32.
    cfg = config(max_iters=20, dtype="float32")
    result, _ = train(cfg, tmp_path / "straight", compile=True)
    assert_learns(result["history"])
    with pytest.raises(TrainingStopped, match="stopped at step 7;"):
        train(cfg, tmp_path / "stopped", stop_at=7, compile=True)
    resume(cfg, tmp_path / "stopped", compile=True)
    # Close, not bit-exact: a fresh compile of the resumed model may pick other kernels.
    a, b = (json.loads((tmp_path / n / "training_state.json").read_text()) for n in ("straight", "stopped"))
    assert [h["step"] for h in a["history"]] == [h["step"] for h in b["history"]]
    assert train_losses(b["history"]) == pytest.approx(train_losses(a["history"]), abs=1e-4)


def _spawn_two_ranks(worker, tmp_path: Path) -> None:
    """worker(rank, port, out) in two processes that form a gloo group on a free port."""
    import torch.multiprocessing as mp

    port = free_port()
    mp.spawn(worker, args=(port, str(tmp_path)), nprocs=2)


def _join(rank: int, port: int):
    """In a spawned worker: join the 2-rank group as torchrun's environment would."""
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    from mypt.distributed import setup_distributed

    return setup_distributed(torch.device("cpu"))


def _signal_rank1_in_step5(data: GPTDataLoader, rank: int) -> None:
    """Only rank 1 gets a SIGTERM, during its 5th step: both ranks must stop after it."""
    if rank != 1:
        return
    get_batch, calls = data.get_batch, []

    def get_batch_then_signal(split="train"):
        calls.append(split)
        if len(calls) == 6:  # the first prefetch, then one per step
            signal.raise_signal(signal.SIGTERM)
        return get_batch(split)

    data.get_batch = get_batch_then_signal


def _ddp_worker(rank: int, port: int, out: str) -> None:
    dist = _join(rank, port)
    tok = tokenizer()
    model = tiny_model(tok)
    data = loader(tok, rank)
    ddp = DDP(torch.compile(model))
    result = fit(ddp, data, config=config(), dist=dist, log=lambda line: None)
    weights = {k: v.detach().clone() for k, v in model.state_dict().items()}

    _signal_rank1_in_step5(data, rank)
    try:
        fit(ddp, data, config=config(), checkpoint_dir=Path(out) / "ckpt", tokenizer=tok, dist=dist,
            log=lambda line: None)
        outcome = "finished"
    except TrainingStopped as e:
        outcome = str(e)
    # A resumed rank continues its own stream of windows, not rank 0's.
    torch.distributed.barrier()  # rank 0 has written the checkpoint
    state = json.loads((Path(out) / "ckpt" / "training_state.json").read_text())
    resumed = loader(tok, rank)
    fit(ddp, resumed, config=config(max_iters=state["step"]), resume_state=state, dist=dist, log=lambda line: None)
    torch.save({"outcome": outcome, "history": result["history"], "weights": weights,
                "resumed_sampler": resumed.state_dict()}, f"{out}/rank{rank}.pt")
    torch.distributed.destroy_process_group()


def _ddp_dropout_worker(rank: int, port: int, out: str) -> None:
    """Straight to step 10, then stopped at 5 (a signal on rank 1) and resumed as `mypt train
    --resume` does, with dropout: each rank's masks come from its own RNG stream."""
    dist = _join(rank, port)
    tok, cfg, ckpt = tokenizer(), config(max_iters=10, eval_interval=5), Path(out) / "ckpt"

    def fresh() -> GPT:
        model = tiny_model(tok, dropout=0.2)
        torch.manual_seed(100 + rank)  # as train_command seeds: seed + rank
        return model

    straight = fresh()
    fit(DDP(straight), loader(tok, rank), config=cfg, dist=dist, log=lambda line: None)

    data = loader(tok, rank)
    _signal_rank1_in_step5(data, rank)
    with pytest.raises(TrainingStopped, match="stopped at step 5"):
        fit(DDP(fresh()), data, config=cfg, checkpoint_dir=ckpt, tokenizer=tok, dist=dist, log=lambda line: None)
    torch.distributed.barrier()  # rank 0 has written the checkpoint
    resumed, _, _ = load_model(ckpt)
    optimizer = configure_optimizer(resumed, cfg, torch.device("cpu"))
    state = checkpoint.load_training_state(ckpt, optimizer, rank)
    fit(DDP(resumed), loader(tok, rank), optimizer, config=cfg, resume_state=state, dist=dist, log=lambda line: None)
    same = all(torch.equal(a, b) for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()))
    torch.save({"same": same}, f"{out}/dropout_rank{rank}.pt")
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_ddp_with_dropout_resumes_to_the_weights_of_an_uninterrupted_run(tmp_path):
    # Each rank's RNG is saved and restored: with rank 0's on every rank (as before), rank 1's
    # dropout masks after the resume are rank 0's and the weights part from the straight run.
    _spawn_two_ranks(_ddp_dropout_worker, tmp_path)
    assert [torch.load(tmp_path / f"dropout_rank{r}.pt")["same"] for r in (0, 1)] == [True, True]


@pytest.mark.slow
def test_ddp_with_compile_learns_in_sync_and_stops_every_rank_at_one_step(tmp_path):
    _spawn_two_ranks(_ddp_worker, tmp_path)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert_learns(r0["history"])
    assert all(torch.equal(r0["weights"][k], r1["weights"][k]) for k in r0["weights"])  # DDP kept them equal
    assert r1["outcome"].startswith("SIGTERM: stopped at step 5; continue with --resume")
    assert r0["outcome"].startswith("SIGTERM on another rank: stopped at step 5;")  # (what stopped the run, said)
    state = json.loads((tmp_path / "ckpt/training_state.json").read_text())
    assert state["step"] == 5
    assert state["sampler_ranks"][0] != state["sampler_ranks"][1]
    for rank, result in enumerate((r0, r1)):  # each resumed rank drew its first batch from its own saved state
        expected = loader(tokenizer(), rank)
        expected.load_state_dict(state["sampler_ranks"][rank])
        expected.get_batch("train")
        assert result["resumed_sampler"] == expected.state_dict()


def _ddp_failure_worker(rank: int, port: int, out: str) -> None:
    """Rank 1 alone cannot read its batch for step 6 (drawn in step 5), then, in a second run,
    alone has a NaN loss at step 12, then, in a third, cannot read batch 10 of 20 of the
    evaluation at step 10 (the others vote on a stop at batch 8 and 16 of it): every rank stops
    at that step, none hangs, rank 0 saves."""
    dist = _join(rank, port)
    tok, outcomes = tokenizer(), []
    eio = failing_loader(tok, rank, fail_at=7 if rank == 1 else None)
    nan = Diverging(tiny_model(tok).config) if rank == 1 else tiny_model(tok)
    nan.load_state_dict(tiny_model(tok).state_dict())
    in_eval = failing_loader(tok, rank, fail_eval_at=2 if rank == 1 else None, fail_eval_batch=10)
    for name, model, data, cfg in (("eio", tiny_model(tok), eio, config()), ("nan", nan, loader(tok, rank), config()),
                                   ("eval", tiny_model(tok), in_eval, config(eval_iters=20))):
        try:
            fit(DDP(model), data, config=cfg, checkpoint_dir=Path(out) / name, tokenizer=tok, dist=dist,
                log=lambda line: None)
            outcomes.append("finished")
        except (TrainingStopped, TrainingDiverged) as e:
            outcomes.append(f"{type(e).__name__}: {e}")
    torch.save({"outcomes": outcomes}, f"{out}/failure_rank{rank}.pt")
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_ddp_a_failure_on_one_rank_stops_every_rank_at_its_step_with_its_checkpoint(tmp_path):
    _spawn_two_ranks(_ddp_failure_worker, tmp_path)
    r0, r1 = (torch.load(tmp_path / f"failure_rank{r}.pt")["outcomes"] for r in (0, 1))
    assert r0 == r1  # the same error, the same step, on every rank
    assert r0[0].startswith("TrainingStopped: rank 1: cannot use shard_00003.bin: Input/output error (at step 5): "
                            "training stopped; the checkpoint of step 5 is saved in"), r0
    assert r0[1].startswith("TrainingDiverged: rank 1: loss is nan at step 12: training stopped; the last "
                            "checkpoint (step 10) is in"), r0
    assert json.loads((tmp_path / "eio" / "training_state.json").read_text())["step"] == 5
    assert json.loads((tmp_path / "nan" / "training_state.json").read_text())["step"] == 10
    assert r0[2].startswith("TrainingStopped: rank 1: cannot use shard_00009.bin: Input/output error (at step 10): "
                            "training stopped; the checkpoint of step 10 is saved in"), r0


def test_a_failure_at_the_first_batch_of_a_resumed_run_names_its_checkpoint(tmp_path):
    tok = tokenizer()
    train(config(max_iters=10), tmp_path / "m")
    model, tok, _ = load_model(tmp_path / "m")
    optimizer = configure_optimizer(model, config(), torch.device("cpu"))
    state = checkpoint.load_training_state(tmp_path / "m", optimizer)
    with pytest.raises(TrainingStopped, match=r"shard_00003.bin: Input/output error \(at step 10\): training "
                                              r"stopped; the checkpoint of step 10 is in .*m; once it is fixed"):
        fit(model, failing_loader(tok, fail_at=1), optimizer, config=config(), checkpoint_dir=tmp_path / "m",
            tokenizer=tok, resume_state=state, log=lambda line: None)
