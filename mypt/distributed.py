"""DDP and FSDP under torchrun: the process group, the model inside its wrappers, and the ranks
agreeing on when to stop and save (so that every rank's collectives meet)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


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


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model itself, inside its DDP (`.module`) and torch.compile (`._orig_mod`) wrappers:
    the one whose parameters and state_dict keys are the checkpoint's."""
    raw = model.module if hasattr(model, "module") else model
    return getattr(raw, "_orig_mod", raw)


def sync_gradients(model: torch.nn.Module, on: bool) -> None:
    """Whether the next backward all-reduces DDP's gradients: only on the last micro-step of
    gradient accumulation. FSDP reduce-scatters on every micro-step, on purpose: skipping it
    would keep every parameter's gradient whole on each rank until the last one (4 bytes a
    parameter, what sharding saves), while its all-gathers of the weights happen on every
    micro-step anyway."""
    if hasattr(model, "require_backward_grad_sync"):  # DDP
        model.require_backward_grad_sync = on


def cpu_group(dist: Dist):
    """The process group that agrees on stopping and saving: gloo, so that the flags are CPU
    tensors and agreeing on them every step never waits for the GPU."""
    if dist.world_size == 1:
        return None
    import torch.distributed as tdist

    if tdist.get_backend() == "gloo":
        return tdist.group.WORLD
    global _gloo  # one per process group: each new_group opens connections between all nodes
    if _gloo is None or _gloo[0] is not tdist.group.WORLD:
        _gloo = (tdist.group.WORLD, tdist.new_group(backend="gloo"))
    return _gloo[1]


_gloo = None  # (the process group, its gloo group)


def any_rank(flags: list[bool], group) -> list[bool]:
    """Each flag, set when it is set on any rank: all ranks stop (and save) at the same step."""
    if group is None:
        return flags
    import torch.distributed as tdist

    t = torch.tensor([int(f) for f in flags])
    tdist.all_reduce(t, op=tdist.ReduceOp.MAX, group=group)
    return [bool(v) for v in t.tolist()]


def all_ranks(obj, group) -> list:
    """[obj of rank 0, obj of rank 1, ...] on every rank."""
    if group is None:
        return [obj]
    import torch.distributed as tdist

    out = [None] * tdist.get_world_size(group)
    tdist.all_gather_object(out, obj, group=group)
    return out
