"""--optimizer muon: Muon for the blocks' 2-D weights, AdamW for the rest, as one optimizer that
the fit loop, GradScaler, checkpoints and DDP use like AdamW. Tiny models, a few steps each."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import re
from pathlib import Path

import pytest
import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from mypt import checkpoint
from mypt.config import RunSettings, TrainConfig
from mypt.errors import ConfigError
from mypt.input_text import read_input_text
from mypt.model import GPT, GPTConfig, load_model
from mypt import optim
from mypt.optim import configure_optimizer, muon_parameter_names, orthogonalize
from mypt.train import fit
from mypt.train_command import run_training
from test_train_paths import BLOCK, TEXT, _join, _spawn_two_ranks, loader, tokenizer

CPU = torch.device("cpu")


def tiny_model(tok, n_layer: int = 1) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=BLOCK, n_layer=n_layer, n_head=2, n_embd=32,
                         dropout=0.0))


def config(**kw) -> TrainConfig:
    # lr_decay_iters fixed: a run cut at half of max_iters keeps the whole run's schedule.
    defaults = dict(optimizer="muon", max_iters=20, lr_decay_iters=20, eval_interval=10, eval_iters=2,
                    log_interval=1, learning_rate=1e-2, muon_learning_rate=0.02, warmup_iters=2, device="cpu")
    return TrainConfig(**{**defaults, **kw})


def test_muon_trains_the_blocks_matrices_and_adamw_the_rest():
    model = tiny_model(tokenizer(), n_layer=2)
    linears = {f"{name}.weight" for name, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) and name.startswith("transformer.h.")}
    assert len(linears) == 8  # per block: attention's c_attn and c_proj, the MLP's c_fc and c_proj
    assert set(muon_parameter_names(model)) == linears
    optimizer = configure_optimizer(model, config(), CPU)
    params = dict(model.named_parameters())
    by_id = {id(p): n for n, p in params.items()}
    muon = {by_id[id(p)] for g in optimizer.param_groups if g.get("muon") for p in g["params"]}
    adamw = [by_id[id(p)] for g in optimizer.param_groups if not g.get("muon") for p in g["params"]]
    assert muon == linears
    assert sorted(adamw) == sorted(set(params) - linears)  # every other parameter, once
    assert {"transformer.wte.weight", "transformer.wpe.weight"} <= set(adamw)  # (lm_head is wte: tied)
    decayed = {by_id[id(p)] for g in optimizer.param_groups if not g.get("muon") and g["weight_decay"] > 0
               for p in g["params"]}
    assert decayed == {"transformer.wte.weight", "transformer.wpe.weight"}  # not the norms, not the biases


@pytest.mark.parametrize("muon_weight_decay", [None, 0.0, 0.3])
def test_muon_weight_decay_is_its_own_and_defaults_to_weight_decay(muon_weight_decay):
    """With zero gradients a step is the decay alone: Muon's matrices scale by 1 - lr x
    muon_weight_decay (weight_decay when left out), AdamW's embeddings by 1 - lr x weight_decay."""
    model = tiny_model(tokenizer())
    cfg = config(weight_decay=0.1, muon_weight_decay=muon_weight_decay)
    optimizer = configure_optimizer(model, cfg, CPU)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    muon_decay = 0.1 if muon_weight_decay is None else muon_weight_decay
    for name, p in model.named_parameters():
        decay = (0.02 * muon_decay if name in muon_parameter_names(model) else
                 1e-2 * 0.1 if name in ("transformer.wte.weight", "transformer.wpe.weight") else 0.0)
        torch.testing.assert_close(p.detach(), before[name] * (1 - decay), rtol=0, atol=1e-7, msg=name)


def test_muon_learns_and_follows_the_schedule_at_its_own_peak():
    tok = tokenizer()
    model = tiny_model(tok)
    cfg = config(max_iters=20, lr_decay_iters=None)
    optimizer = configure_optimizer(model, cfg, CPU)
    lines = []
    result = fit(model, loader(tok), optimizer, config=cfg, log=lines.append)
    losses = [h["train_loss"] for h in result["history"] if "train_loss" in h]
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.5, losses
    adamw_lr, muon_lr = (g["lr"] for g in (optimizer.param_groups[0], optimizer.param_groups[-1]))
    assert optimizer.param_groups[-1].get("muon") and not optimizer.param_groups[0].get("muon")
    assert muon_lr == pytest.approx(adamw_lr * 0.02 / 1e-2) and adamw_lr < 1e-2  # decayed from the peak
    # Both rates are shown (and sent to the loggers), each the one its groups stepped at.
    shown = re.search(r"lr (\S+), muon_lr (\S+),", [x for x in lines if x.startswith("iter ")][-1])
    assert float(shown[2]) == pytest.approx(2 * float(shown[1]), rel=1e-2)
    # An AdamW passed with a config that says muon: no Muon rate is shown, none stepped.
    lines.clear()
    fit(model, loader(tok), torch.optim.AdamW(model.parameters(), lr=1e-3), config=dataclasses.replace(cfg, max_iters=2),
        log=lines.append)
    assert [x for x in lines if x.startswith("iter ")] and not [x for x in lines if "muon_lr" in x]


NS = {"ns_coefficients": (3.4445, -4.775, 2.0315), "ns_steps": 5, "eps": 1e-7}  # torch.optim.Muon's defaults


@pytest.mark.parametrize("bf16_hardware", [False, True])
def test_orthogonalize_is_torchs_iteration_for_a_whole_stack(monkeypatch, bf16_hardware):
    """On the CPU in bfloat16 as torch runs it where the CPU multiplies bfloat16 (AMX,
    AVX512-BF16), else in float32 (emulated bfloat16 is 24x slower): the machine's answer
    faked both ways."""
    from torch.optim import _muon

    monkeypatch.setattr(optim, "cpu_runs_bf16", lambda: bf16_hardware)
    dtype, alone = (torch.bfloat16, 2e-2) if bf16_hardware else (torch.float32, 1e-6)
    torch.manual_seed(0)
    for shape in ((48, 16), (16, 48)):
        stack = torch.randn(3, *shape)
        ours = orthogonalize(stack, NS)
        assert ours.dtype == dtype and ours.shape == stack.shape
        for i in range(3):
            theirs = _muon._zeropower_via_newtonschulz(stack[i], NS["ns_coefficients"], 5, 1e-7)
            assert theirs.dtype == torch.bfloat16
            assert torch.allclose(ours[i].float(), theirs.float(), atol=0.03)  # torch's, to bfloat16's precision
            # Each matrix as if alone: the batch shares nothing (its own norm, its own products).
            assert torch.allclose(ours[i].float(), orthogonalize(stack[i:i + 1], NS)[0].float(), atol=alone)
            # Orthogonalized: the quintic leaves singular values around 1 (0.5 to 1.5), not the grad's.
            values = torch.linalg.svdvals(ours[i].float())
            assert values.min() > 0.5 and values.max() < 1.5


@pytest.mark.parametrize("nesterov", [True, False])
def test_the_step_a_cuda_graph_records_is_the_eager_step(nesterov):
    """MuonGraph records optim._update with the rates as 0-d tensors (a graph reads them at each
    replay; a number would be baked in). The same steps with the rate as a tensor give the
    eager step's matrices and momentum. (The graph itself needs CUDA: bench/muon_step.py
    compares it with the eager step on a GPU.)"""
    from mypt.optim import _momentum_buffers, _stepped, _update, muon_step

    eager_model, tensor_model = tiny_model(tokenizer(), n_layer=2), tiny_model(tokenizer(), n_layer=2)
    eager, by_tensor = (configure_optimizer(m, config(weight_decay=0.1), CPU).muon for m in (eager_model, tensor_model))
    torch.manual_seed(1)
    for lr in (0.02, 0.01, 0.005):  # a rate that changes, as the schedule's does
        for (_, p), (_, q) in zip(eager_model.named_parameters(), tensor_model.named_parameters()):
            p.grad = torch.randn_like(p)
            q.grad = p.grad.clone()
        for group in eager.param_groups + by_tensor.param_groups:
            group.update(lr=lr, nesterov=nesterov)
        muon_step(eager)
        for group, params in _stepped(by_tensor):
            with torch.no_grad():  # (as MuonGraph.step runs it)
                    _update(params, [p.grad for p in params], _momentum_buffers(by_tensor, params), group,
                        torch.tensor(float(group["lr"])))
    for (name, p), (_, q) in zip(eager_model.named_parameters(), tensor_model.named_parameters()):
        assert torch.allclose(p, q, rtol=0, atol=1e-6), name
        if p in eager.state:
            assert torch.equal(eager.state[p]["momentum_buffer"], by_tensor.state[q]["momentum_buffer"]), name


class _Capture(TorchDispatchMode):
    """What a CUDA graph's capture records, on the CPU: each aten op with its arguments and
    outputs. Like a capture it leaves no effect on the tensors that existed before it."""

    def __init__(self):
        super().__init__()
        self.ops, self.made, self.before = [], set(), {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        for i, arg in enumerate(func._schema.arguments):
            if arg.alias_info is not None and arg.alias_info.is_write:
                value = kwargs[arg.name] if arg.name in kwargs else (args[i] if i < len(args) else None)
                for t in value if isinstance(value, (list, tuple)) else [value]:
                    if isinstance(t, torch.Tensor) and id(t) not in self.made:
                        self.before.setdefault(id(t), (t, t.clone()))
        out = func(*args, **kwargs)
        self.made.update(id(t) for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor))
        self.ops.append((func, args, kwargs, out))
        return out


class _CPUGraph:
    """torch.cuda.CUDAGraph's semantics on the CPU: replay runs the captured ops again on the
    tensors they were captured with, each output at its captured address."""

    def __init__(self):
        self.ops = []

    def replay(self):
        with torch.no_grad():
            for func, args, kwargs, out in self.ops:
                result = func(*args, **kwargs)
                for o, r in zip(tree_flatten(out)[0], tree_flatten(result)[0]):
                    if isinstance(o, torch.Tensor) and o.data_ptr() != r.data_ptr():
                        o.copy_(r)


@contextlib.contextmanager
def _cpu_capture(graph: _CPUGraph, stream=None):
    capture = _Capture()
    with capture:
        yield
    with torch.no_grad():
        for t, value in capture.before.values():
            t.copy_(value)  # (a capture runs nothing)
    graph.ops = capture.ops


def test_muon_graph_replays_the_eager_step_with_each_steps_gradients_and_rate(monkeypatch):
    """MuonGraph on a CPU stand-in for CUDA graphs: a replay must read the step's new gradients
    and rate (not those of the capture), and a state loaded on resume or a new momentum must be
    recorded anew. Against muon_step on a copy of the model, the same gradients and rates."""
    class Stream:
        def wait_stream(self, other):
            pass

    for name, value in (("Stream", lambda *a, **k: Stream()), ("current_stream", lambda *a, **k: Stream()),
                        ("stream", lambda s: contextlib.nullcontext()), ("device", lambda d: contextlib.nullcontext()),
                        ("CUDAGraph", _CPUGraph), ("graph", _cpu_capture)):
        monkeypatch.setattr(torch.cuda, name, value)
    graphed_model, eager_model = tiny_model(tokenizer(), n_layer=2), tiny_model(tokenizer(), n_layer=2)
    graphed = configure_optimizer(graphed_model, config(cuda_graphs=True, weight_decay=0.1), torch.device("cuda"))
    eager = configure_optimizer(eager_model, config(weight_decay=0.1), CPU)
    assert graphed.graph is not None and eager.graph is None
    torch.manual_seed(1)
    recorded = []
    for step in range(14):
        for (_, p), (_, q) in zip(graphed_model.named_parameters(), eager_model.named_parameters()):
            p.grad = torch.randn_like(p)
            q.grad = p.grad.clone()
        for optimizer in (graphed, eager):
            for group in optimizer.param_groups:
                group["lr"] = 0.02 / (1 + step)  # a schedule's
        if step == 7:  # a resume's state (new momentum tensors), then other hyperparameters
            graphed.load_state_dict(copy.deepcopy(graphed.state_dict()))
        if step == 11:
            for optimizer in (graphed, eager):
                optimizer.muon.param_groups[0]["momentum"] = 0.9
        graphed.step()
        eager.step()
        recorded.append(graphed.graph.graph is not None)
        for (name, p), (_, q) in zip(graphed_model.named_parameters(), eager_model.named_parameters()):
            assert torch.allclose(p, q, rtol=0, atol=1e-6), (step, name)
    # Three warm-up steps, then replays; again after the load and after the new momentum.
    assert recorded == [False] * 3 + [True] * 4 + [False] * 3 + [True] + [False] * 3


def test_cuda_graphs_are_for_compiled_single_micro_step_runs_on_cuda():
    assert config(cuda_graphs=True).cuda_graphs_on("cuda")
    assert config(cuda_graphs=True).compile_mode("cuda") == "reduce-overhead"
    assert not config(cuda_graphs=True, compile=False).cuda_graphs_on("cuda")
    assert not config(cuda_graphs=True, compile=True).cuda_graphs_on("cpu")
    assert config().compile_mode("cuda") is None
    model = tiny_model(tokenizer())
    assert isinstance(configure_optimizer(model, config(cuda_graphs=True), torch.device("cuda")).graph, optim.MuonGraph)
    assert configure_optimizer(model, config(cuda_graphs=True), CPU).graph is None
    with pytest.raises(ValueError, match=r"cuda_graphs takes no gradient accumulation \(gradient_accumulation_steps 4\)"
                                         r".*\(--batch_size 48 --gradient_accumulation_steps 1\) or pass --no_cuda_graphs"):
        config(cuda_graphs=True, gradient_accumulation_steps=4, batch_size=12)


def test_cuda_graphs_on_the_cpu_trains_as_without_and_says_it_does_nothing(tmp_path):
    tok = tokenizer()
    lines = []
    fit(tiny_model(tok), loader(tok), config=config(cuda_graphs=True, max_iters=2, lr_decay_iters=2),
        checkpoint_dir=tmp_path / "with", tokenizer=tok, log=lines.append)
    fit(tiny_model(tok), loader(tok), config=config(max_iters=2, lr_decay_iters=2), checkpoint_dir=tmp_path / "without",
        tokenizer=tok, log=lambda line: None)
    assert "warning: --cuda_graphs does nothing here: it needs CUDA and the compiled model (device cpu, compile False); " \
           "pass --no_cuda_graphs" in lines
    assert (tmp_path / "with" / "model.safetensors").read_bytes() == (tmp_path / "without" / "model.safetensors").read_bytes()


@pytest.mark.parametrize("batch_elements, adjust_lr_fn, nesterov", [
    (optim.BATCH_ELEMENTS, "original", True),  # mypt's settings
    (1, "original", True),  # each matrix a batch of its own
    (optim.BATCH_ELEMENTS, "match_rms_adamw", False)])
def test_muon_steps_as_torch_optim_muon_does(monkeypatch, batch_elements, adjust_lr_fn, nesterov):
    """Three steps of mypt's batched Muon against torch.optim.Muon's own step on a copy of the
    model, the same gradients, torch's loop running the same float32 iteration (the iteration
    itself is compared with torch's above): the same matrices and momentum, bit for bit. So
    the momentum, weight decay and rate scaling are torch's."""
    from torch.optim import _muon

    monkeypatch.setattr(optim, "BATCH_ELEMENTS", batch_elements)
    monkeypatch.setattr(_muon, "_zeropower_via_newtonschulz", lambda g, coefficients, steps, eps: orthogonalize(
        g[None], {"ns_coefficients": coefficients, "ns_steps": steps, "eps": eps})[0])
    tok = tokenizer()
    ours_model, torch_model = tiny_model(tok, n_layer=2), tiny_model(tok, n_layer=2)  # (shapes repeat per layer)
    ours = configure_optimizer(ours_model, config(weight_decay=0.1), CPU)
    for group in ours.muon.param_groups:
        group.update(adjust_lr_fn=adjust_lr_fn, nesterov=nesterov)
    names = muon_parameter_names(ours_model)
    mine, theirs_params = dict(ours_model.named_parameters()), dict(torch_model.named_parameters())
    theirs = torch.optim.Muon([theirs_params[n] for n in names], lr=0.02, momentum=0.95, weight_decay=0.1,
                              nesterov=nesterov, adjust_lr_fn=adjust_lr_fn)
    before = {n: mine[n].detach().clone() for n in names}
    torch.manual_seed(1)
    for _ in range(3):
        for name, p in ours_model.named_parameters():
            p.grad = torch.randn_like(p)
            theirs_params[name].grad = p.grad.clone()
        ours.step()
        theirs.step()
    for name in names:
        assert not torch.equal(mine[name], before[name]), name
        assert torch.equal(mine[name], theirs_params[name]), name
        assert set(ours.state[mine[name]]) == {"momentum_buffer"}  # torch's state, as torch keeps it
        assert torch.equal(ours.state[mine[name]]["momentum_buffer"],
                           theirs.state[theirs_params[name]]["momentum_buffer"]), name


def test_under_fsdp_each_matrix_has_one_rank_and_the_ranks_equal_work():
    """Under FSDP one rank orthogonalizes each matrix (optim._owners; the exchange itself is
    tests/test_fsdp.py's): 124M's 48 matrices on 8 ranks come to the same work on each, rows x
    cols x min(rows, cols) summed. The rows a rank is sent back are those DTensor's Shard(0) puts
    on it, as FSDP2 shards (torch.chunk's split: the last ranks fewer or none)."""
    from torch.distributed.tensor import Shard

    shapes = [(2304, 768), (768, 768), (3072, 768), (768, 3072)] * 12  # per block: c_attn, c_proj, c_fc, c_proj
    owners = optim._owners(shapes, 8)
    work = [sum(r * c * min(r, c) for (r, c), o in zip(shapes, owners) if o == rank) for rank in range(8)]
    assert work == [18 * 768 ** 3] * 8  # 144 / 8
    assert optim._owners(shapes, 1) == [0] * 48
    for world in (1, 2, 3, 8):
        for n in range(20):
            assert optim._chunk_rows(n, world) == [Shard(0)._local_shard_size_and_offset(n, world, r)[0]
                                                   for r in range(world)], (n, world)


def _straight_then_resumed(cfg: TrainConfig, tmp_path: Path) -> tuple[Path, Path]:
    tok = tokenizer()
    fit(tiny_model(tok), loader(tok), config=cfg, checkpoint_dir=tmp_path / "straight", tokenizer=tok,
        log=lambda line: None)
    fit(tiny_model(tok), loader(tok), config=dataclasses.replace(cfg, max_iters=cfg.max_iters // 2),
        checkpoint_dir=tmp_path / "half", tokenizer=tok, log=lambda line: None)
    model, tok, _ = load_model(tmp_path / "half")  # what --resume does
    optimizer = configure_optimizer(model, cfg, CPU)
    state = checkpoint.load_training_state(tmp_path / "half", optimizer)
    assert state["step"] == cfg.max_iters // 2
    fit(model, loader(tok), optimizer, config=cfg, checkpoint_dir=tmp_path / "half", tokenizer=tok,
        resume_state=state, log=lambda line: None)
    return tmp_path / "straight", tmp_path / "half"


@pytest.mark.parametrize("dtype", ["float32", pytest.param("float16", marks=pytest.mark.slow)])  # float16: the GradScaler
def test_muon_resumes_to_the_bytes_of_an_uninterrupted_run(tmp_path, dtype):
    straight, resumed = _straight_then_resumed(config(dtype=dtype, max_iters=8, lr_decay_iters=8, eval_interval=4),
                                               tmp_path)
    for name in ("model.safetensors", "training_state.safetensors", "training_state.json"):
        assert (straight / name).read_bytes() == (resumed / name).read_bytes(), name
    saved = checkpoint._load_safetensors(straight / "training_state.safetensors")
    assert any(key.endswith("/momentum_buffer") for key in saved)  # Muon's state is in the checkpoint


def test_muon_without_torch_optim_muon_names_the_flag_and_the_version(monkeypatch):
    monkeypatch.delattr(torch.optim, "Muon")
    monkeypatch.setattr(torch, "__version__", "2.8.0")
    with pytest.raises(ConfigError, match=r"^--optimizer muon needs torch.optim.Muon \(PyTorch 2.9 or later\), "
                                          r"this is torch 2.8.0: upgrade torch, or train with --optimizer adamw$"):
        configure_optimizer(tiny_model(tokenizer()), config(), CPU)


def test_resuming_under_the_other_optimizer_is_refused(tmp_path):
    (tmp_path / "t.txt").write_text(TEXT)
    req = RunSettings(model_name="m", input_file=tmp_path / "t.txt", tokenization="char", config_file="tiny",
                      checkpoints_dir=tmp_path / "ck")
    run_training(req, {"device": "cpu", "max_iters": 2, "optimizer": "adamw"}, log=lambda line: None,
                 read_text=read_input_text)
    before = (tmp_path / "ck/m/model.safetensors").read_bytes()
    resume = dataclasses.replace(req, resume=True, config_file=None)
    with pytest.raises(ConfigError, match=r"^--optimizer muon: .*m was trained with adamw, whose optimizer state "
                                          r"cannot continue under muon; resume with --optimizer adamw, or start a "
                                          r"new run from its weights with --init_from_model .*m --optimizer muon$"):
        run_training(resume, {"device": "cpu", "max_iters": 4, "optimizer": "muon"}, log=lambda line: None,
                     read_text=read_input_text)
    assert (tmp_path / "ck/m/model.safetensors").read_bytes() == before


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_hyperparameters_changed_on_resume_are_the_ones_that_train(tmp_path, optimizer):
    """torch's load_state_dict puts the checkpoint's weight decay, betas and momentum back into
    the optimizer: a --resume with new values must train with them (they are what config.json
    records), not silently with the old ones."""
    (tmp_path / "t.txt").write_text(TEXT)
    req = RunSettings(model_name="m", input_file=tmp_path / "t.txt", tokenization="char", config_file="tiny",
                      checkpoints_dir=tmp_path / "ck")
    run_training(req, {"device": "cpu", "max_iters": 2, "optimizer": optimizer}, log=lambda line: None,
                 read_text=read_input_text)
    changed = {"weight_decay": 0.05, "beta1": 0.8, "beta2": 0.9, "muon_weight_decay": 0.01, "muon_momentum": 0.9}
    run_training(dataclasses.replace(req, resume=True, config_file=None),
                 {"device": "cpu", "max_iters": 4, "optimizer": optimizer, **changed}, log=lambda line: None,
                 read_text=read_input_text)
    groups = json.loads((tmp_path / "ck/m/training_state.json").read_text())["optimizer"]["param_groups"]
    adamw = [g for g in groups if not g.get("muon")]
    assert [g["weight_decay"] for g in adamw] == [0.05, 0.0]  # matrices and embeddings; norms and biases
    assert all(g["betas"] == [0.8, 0.9] for g in adamw)
    assert [(g["weight_decay"], g["momentum"]) for g in groups if g.get("muon")] == (
        [(0.01, 0.9)] if optimizer == "muon" else [])


def _ddp_worker(rank: int, port: int, out: str) -> None:
    dist = _join(rank, port)
    tok = tokenizer()
    model = tiny_model(tok)
    cfg = config()
    result = fit(DDP(model), loader(tok, rank), configure_optimizer(model, cfg, CPU), config=cfg, dist=dist,
                 checkpoint_dir=Path(out) / "ckpt", tokenizer=tok, log=lambda line: None)
    torch.save({"weights": model.state_dict(), "history": result["history"]}, f"{out}/rank{rank}.pt")
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_muon_under_ddp_keeps_the_ranks_in_sync(tmp_path):
    _spawn_two_ranks(_ddp_worker, tmp_path)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert all(torch.equal(r0["weights"][k], r1["weights"][k]) for k in r0["weights"])  # one all-reduced step
    losses = [h["train_loss"] for h in r0["history"] if "train_loss" in h]
    assert sum(losses[-5:]) < sum(losses[:5]), losses
    assert (tmp_path / "ckpt/training_state.safetensors").is_file()


@pytest.mark.parametrize("settings, message", [
    ({"min_lr": 0.1, "learning_rate": 1e-3}, r"min_lr \(0.1\) is above learning_rate \(0.001\)"),
    ({"lr_decay_iters": 4, "warmup_iters": 8}, r"lr_decay_iters \(4\) is below warmup_iters \(8\)"),
    ({"learning_rate": 20.0, "weight_decay": 0.1}, r"learning_rate x weight_decay \(20 x 0.1\) must be below 1"),
    ({"optimizer": "muon", "muon_learning_rate": 20.0, "weight_decay": 0.1},
     r"muon_learning_rate x weight_decay \(20 x 0.1\) must be below 1"),
    ({"optimizer": "muon", "muon_learning_rate": 0.5, "muon_weight_decay": 2.0},
     r"muon_learning_rate x muon_weight_decay \(0.5 x 2\) must be below 1"),
])
def test_a_schedule_no_run_survives_is_refused_naming_its_settings(settings, message):
    """A floor above the peak (the rate would climb 1000x past what --help calls the peak), and a
    decoupled decay of a whole step or more (it zeroes or flips the weights)."""
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**settings)
    TrainConfig(**{**settings, "optimizer": "adamw", "learning_rate": 1e-3, "min_lr": None,
                   "muon_weight_decay": None, "lr_decay_iters": None})  # the same keys at sound values


def test_a_flag_that_acts_only_with_another_setting_is_said_to_do_nothing(tmp_path):
    (tmp_path / "t.txt").write_text(TEXT)
    lines = []
    run_training(RunSettings(model_name="m", input_file=tmp_path / "t.txt", tokenization="char", config_file="tiny",
                             checkpoints_dir=tmp_path / "ck"),
                 {"device": "cpu", "max_iters": 1, "muon_learning_rate": 0.05, "rope_theta": 500.0},
                 log=lines.append, read_text=read_input_text)
    assert [line for line in lines if line.startswith("warning: --")] == [
        "warning: --muon_learning_rate has no effect: it acts with --optimizer muon, this run has optimizer adamw "
        "(the default)",
        "warning: --rope_theta has no effect: it acts with --position rope, this run has position learned (the "
        "default)"]
    lines.clear()
    run_training(RunSettings(model_name="m2", input_file=tmp_path / "t.txt", tokenization="char", config_file="tiny",
                             checkpoints_dir=tmp_path / "ck"),
                 {"device": "cpu", "max_iters": 1, "mlp": "relu2", "gelu": "exact"},
                 log=lines.append, read_text=read_input_text)
    assert [line for line in lines if line.startswith("warning: --")] == [
        "warning: --gelu has no effect: it acts with --mlp gelu, this run has --mlp relu2"]
    # A setting a config file names is said too (a flag that overrides the file is named as the flag).
    config = tmp_path / "mine.json"
    config.write_text(json.dumps({"model": {"n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 16,
                                            "rope_scaling": "llama3:factor=8,low_freq_factor=1,high_freq_factor=4,"
                                                            "original_max_position_embeddings=8"},
                                  "training": {"muon_learning_rate": 0.05, "batch_size": 4, "warmup_iters": 0,
                                               "muon_weight_decay": None}}))  # (null: the default, not said)
    lines.clear()
    run_training(RunSettings(model_name="m3", input_file=tmp_path / "t.txt", tokenization="char",
                             config_file=str(config), checkpoints_dir=tmp_path / "ck"),
                 {"device": "cpu", "max_iters": 1, "muon_learning_rate": 0.03}, log=lines.append,
                 read_text=read_input_text)
    assert [line for line in lines if line.startswith("warning: ")] == [
        "warning: --muon_learning_rate has no effect: it acts with --optimizer muon, this run has optimizer adamw "
        "(the default)",
        f"warning: rope_scaling in --config_file {config} has no effect: it acts with --position rope, this run has "
        "position learned (the default)"]
    # The file's own word for no scaling clears one, as the flag's does: nothing to say.
    config.write_text(json.dumps({**json.loads(config.read_text()), "model": {
        **json.loads(config.read_text())["model"], "rope_scaling": "none"}}))
    lines.clear()
    run_training(RunSettings(model_name="m4", input_file=tmp_path / "t.txt", tokenization="char",
                             config_file=str(config), checkpoints_dir=tmp_path / "ck"),
                 {"device": "cpu", "max_iters": 1}, log=lines.append, read_text=read_input_text)
    assert [line for line in lines if line.startswith("warning: ")] == [
        f"warning: muon_learning_rate in --config_file {config} has no effect: it acts with --optimizer muon, this "
        "run has optimizer adamw (the default)"]
    # The setting that decides is named where it was given: a flag, the user's file, a preset, the
    # checkpoint the run starts from, else the default.
    config.write_text(json.dumps({"model": {"n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 16,
                                            "mlp": "relu2"},
                                  "training": {"optimizer": "adamw", "batch_size": 4, "warmup_iters": 0}}))
    for i, (flags, said) in enumerate((({"muon_momentum": 0.9, "gelu": "exact"},
                         [f"--muon_momentum has no effect: it acts with --optimizer muon, this run has optimizer "
                          f"adamw in --config_file {config}",
                          f"--gelu has no effect: it acts with --mlp gelu, this run has mlp relu2 in --config_file "
                          f"{config}"]),
                        ({"gelu": "exact", "mlp": "swiglu"},
                         ["--gelu has no effect: it acts with --mlp gelu, this run has --mlp swiglu"]),
                        # (clearing a scaling is said nothing of: there is none to act)
                        ({"gelu": "exact", "rope_scaling": " None"},
                         [f"--gelu has no effect: it acts with --mlp gelu, this run has mlp relu2 in --config_file "
                          f"{config}"]))):
        lines.clear()
        run_training(RunSettings(model_name=f"file{i}",
                                 input_file=tmp_path / "t.txt", tokenization="char", config_file=str(config),
                                 checkpoints_dir=tmp_path / "ck"),
                     {"device": "cpu", "max_iters": 1, **flags}, log=lines.append, read_text=read_input_text)
        assert [line.removeprefix("warning: ") for line in lines if line.startswith("warning: ")] == said
    for flags, said in (({"config_file": "modern/small_char", "gelu": "exact", "n_layer": 1, "n_embd": 12,
                          "n_head": 2, "block_size": 16, "batch_size": 2, "eval_iters": 1, "warmup_iters": 0},
                         "--gelu has no effect: it acts with --mlp gelu, this run has mlp relu2 in preset "
                         "modern/small_char"),
                        ({"init_from_model": str(tmp_path / "ck" / "m"), "rope_theta": 100.0, "warmup_iters": 0},
                         "--rope_theta has no effect: it acts with --position rope, this run has position learned in "
                         f"{tmp_path / 'ck' / 'm'}/config.json")):
        lines.clear()
        run_training(RunSettings(model_name=f"from_{sorted(flags)[0]}", input_file=tmp_path / "t.txt",
                                 tokenization="char", checkpoints_dir=tmp_path / "ck",
                                 config_file=flags.pop("config_file", None),
                                 init_from_model=flags.pop("init_from_model", None)),
                     {"device": "cpu", "max_iters": 1, **flags}, log=lines.append, read_text=read_input_text)
        assert [line.removeprefix("warning: ") for line in lines if line.startswith("warning: ")] == [said]
