"""Muon's optimizer step alone: torch.optim.Muon's own step (a loop over the matrices) against
mypt's (mypt.optim.muon_step: the matrices of one shape orthogonalized in one batch) and, on a
GPU, mypt's step replayed from a CUDA graph (mypt.optim.MuonGraph, --cuda_graphs), on the same
model's matrices and gradients, in the same run. The fused AdamW step over the same matrices is
printed beside them for scale, and how far the graph's matrices are from the eager step's after
the same steps (a check that the graph replays the step).

    python bench/muon_step.py                       # the baby GPT's matrices (6 x 384) and 124M's (12 x 768)
    python bench/muon_step.py --sizes baby --steps 5   # quick
    python bench/muon_step.py --sizes baby --fsdp_ranks 2   # under FSDP, 2 gloo ranks on the CPU

On the CPU both orthogonalize as mypt does there (bfloat16 where the CPU multiplies it, AMX or
AVX512-BF16, else float32: torch's own bfloat16 iteration is 24x slower there), so the CPU
figures compare the loop with the batch only. With --fsdp_ranks N the matrices are FSDP's
shards on N CPU processes (gloo), and mypt's step, each matrix orthogonalized by one rank, is
timed against the step before that split: every rank gathered every matrix and orthogonalized
all of them.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import sys
import time
from pathlib import Path

import torch
from torch.distributed.tensor import distribute_tensor

sys.path.append(str(Path(__file__).resolve().parents[1]))  # a plain checkout; PYTHONPATH or an install wins

from mypt.model import GPT, GPTConfig  # noqa: E402
from mypt import optim  # noqa: E402
from mypt.fsdp import full, shard_model  # noqa: E402
from mypt.optim import MuonGraph, muon_parameter_names, muon_step, orthogonalize  # noqa: E402

SIZES = {"tiny": dict(n_layer=2, n_head=2, n_embd=32), "baby": dict(n_layer=6, n_head=6, n_embd=384),
         "124M": dict(n_layer=12, n_head=12, n_embd=768)}
MODERN = dict(position="rope", norm="rmsnorm", mlp="relu2", qk_norm=True, vocab_size=50304, block_size=256)


@contextlib.contextmanager
def torch_iteration_on_cpu(device: torch.device):
    """On the CPU, torch's loop runs mypt's iteration (its dtype there): the comparison is loop against batch."""
    from torch.optim import _muon

    if device.type != "cpu":
        yield
        return
    original = _muon._zeropower_via_newtonschulz
    _muon._zeropower_via_newtonschulz = lambda g, coefficients, steps, eps: orthogonalize(
        g[None], {"ns_coefficients": coefficients, "ns_steps": steps, "eps": eps})[0]
    try:
        yield
    finally:
        _muon._zeropower_via_newtonschulz = original


def timed(step, device: torch.device, steps: int) -> float:
    """Milliseconds per call, after two warm-up calls."""
    for _ in range(2):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps * 1e3


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="baby,124M", help="comma list of " + ", ".join(SIZES))
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--fsdp_ranks", type=int, default=0, help="time the step on FSDP's shards on this many CPU ranks")
    args = ap.parse_args(argv)
    if args.fsdp_ranks:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        torch.multiprocessing.spawn(fsdp_rank, args=(args, port), nprocs=args.fsdp_ranks)
        return
    device = torch.device(args.device)
    print(f"Muon step on {device} (torch {torch.__version__}), ms per step, {args.steps} steps after 2 warm-up")
    for size in args.sizes.split(","):
        torch.manual_seed(0)
        model = GPT(GPTConfig(**SIZES[size], **MODERN)).to(device)
        params = dict(model.named_parameters())
        matrices = [params[n] for n in muon_parameter_names(model)]
        for p in matrices:
            p.grad = torch.randn_like(p)
        shapes = sorted({tuple(p.shape) for p in matrices})
        torchs = torch.optim.Muon(matrices, lr=0.02, weight_decay=0.0, adjust_lr_fn="original")
        ours = torch.optim.Muon(matrices, lr=0.02, weight_decay=0.0, adjust_lr_fn="original")
        adamw = torch.optim.AdamW(matrices, lr=1e-3, fused=device.type in ("cuda", "cpu"))
        with torch_iteration_on_cpu(device):
            loop = timed(torchs.step, device, args.steps)
        batched = timed(lambda: muon_step(ours), device, args.steps)
        graphed = "        -" if device.type != "cuda" else graph_column(matrices, device, args.steps, loop)
        fused = timed(adamw.step, device, args.steps)
        print(f"{size}: {len(matrices)} matrices of {len(shapes)} shapes | torch.optim.Muon {loop:8.2f} | "
              f"mypt batched {batched:8.2f} ({loop / batched:.1f}x faster) | CUDA graph {graphed} | "
              f"fused AdamW {fused:6.2f}", flush=True)


def graph_column(matrices: list, device: torch.device, steps: int, loop_ms: float) -> str:
    """MuonGraph's ms per step (its warm-up and capture before the timing), and the largest
    difference from the eager step's matrices after the same steps from the same start."""
    start = [p.detach().clone() for p in matrices]
    copies = [torch.nn.Parameter(p.detach().clone()) for p in matrices]
    graph, eager = MuonGraph(), torch.optim.Muon(copies, lr=0.02, weight_decay=0.1, adjust_lr_fn="original")
    on_graph = torch.optim.Muon(matrices, lr=0.02, weight_decay=0.1, adjust_lr_fn="original")
    for step in range(MuonGraph.WARM + 4):  # warm-up, capture, replays: each step's own gradients and rate
        for c, p in zip(copies, matrices):
            p.grad = torch.randn_like(p)
            c.grad = p.grad
        for group in on_graph.param_groups + eager.param_groups:
            group["lr"] = 0.02 / (1 + step)
        graph.step(on_graph)
        muon_step(eager)
    diff = max((p - c).abs().max().item() for p, c in zip(matrices, copies))
    moved = max((p - s).abs().max().item() for p, s in zip(matrices, start))
    ms = timed(lambda: graph.step(on_graph), device, steps)
    return f"{ms:8.2f} ({loop_ms / ms:.1f}x faster; matrices within {diff:.1e} of eager's, moved {moved:.1e})"


def fsdp_rank(rank: int, args: argparse.Namespace, port: int) -> None:
    """One of --fsdp_ranks processes: mypt's step on the shards, and the step before the split."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=args.fsdp_ranks)
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // args.fsdp_ranks))  # (the ranks share the cores)
    cpu = torch.device("cpu")
    if rank == 0:
        print(f"Muon step on FSDP's shards, {args.fsdp_ranks} CPU ranks (gloo, {torch.get_num_threads()} threads "
              f"each), ms per step, {args.steps} steps after 2 warm-up")
    for size in args.sizes.split(","):
        torch.manual_seed(0)
        model = shard_model(GPT(GPTConfig(**SIZES[size], **MODERN)), None, compiled=False)
        params = dict(model.named_parameters())
        matrices = [params[n] for n in muon_parameter_names(model)]
        for p in matrices:  # (each rank its rows of one whole, the same seed on all)
            p.grad = distribute_tensor(torch.randn(p.shape), p.device_mesh, p.placements, src_data_rank=None)
        split, every = (torch.optim.Muon(matrices, lr=0.02, weight_decay=0.0, adjust_lr_fn="original")
                        for _ in range(2))
        ms = timed(lambda: muon_step(split), cpu, args.steps)
        sharded, optim._sharded_orthogonalized = optim._sharded_orthogonalized, gathered
        try:
            before = timed(lambda: muon_step(every), cpu, args.steps)
        finally:
            optim._sharded_orthogonalized = sharded
        if rank == 0:
            print(f"{size}: {len(matrices)} matrices | each orthogonalized by one rank {ms:8.2f} | "
                  f"by every rank (before) {before:8.2f} ({before / ms:.1f}x)", flush=True)
    torch.distributed.destroy_process_group()


def gathered(params: list, updates: list, group: dict):
    """optim._sharded_orthogonalized as it was: every rank gathers each update whole,
    orthogonalizes every matrix and keeps its own rows."""
    for part in optim._batches(params, list(range(len(params)))):
        ortho = orthogonalize(torch.stack([full(updates[i]) for i in part]), group).to(params[part[0]].dtype)
        yield part, [distribute_tensor(o, params[i].device_mesh, params[i].placements, src_data_rank=None)
                     for o, i in zip(ortho.unbind(0), part)]


if __name__ == "__main__":
    sys.exit(main())
