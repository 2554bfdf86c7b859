"""Mixed precision: the autocast dtype a run trains in (--dtype), on this machine or as the
run started."""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Callable

import torch

from mypt.config import TrainConfig
from mypt.distributed import Dist


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


def dtype_name(amp: torch.dtype | None) -> str:
    """The autocast dtype as --dtype spells it: float32 for none."""
    return str(amp).removeprefix("torch.") if amp is not None else "float32"


def autocast(device: torch.device, amp: torch.dtype | None):
    """torch.autocast in `amp` on `device`'s type, or nothing for float32 (None)."""
    return torch.autocast(device.type, dtype=amp) if amp is not None else contextlib.nullcontext()


def run_autocast(cfg: TrainConfig, device: torch.device, resume_state: dict | None, dist: Dist,
                 log: Callable[[str], None]) -> torch.dtype | None:
    """The run's autocast dtype: --dtype's on this device, except that a resumed run keeps the
    one it started in under --dtype auto."""
    amp = autocast_dtype(cfg, device)
    if resume_state is not None and cfg.dtype == "auto":
        # auto resolves on the machine it runs on (AMX or not, GPU generation): a resumed run
        # keeps the precision it started in, so it ends as the uninterrupted run would. A
        # checkpoint from before this was recorded started on the CPU in float32 (auto's rule
        # then) or on a GPU by the same rule as now.
        started = resume_state.get("autocast", "float32" if device.type == "cpu" else None)
        if started is not None and started != dtype_name(amp):
            if dist.is_main:
                log(f"autocast: {started}, as the run started (--dtype auto would pick {dtype_name(amp)} "
                    "on this machine; pass --dtype to change it)")
            amp = autocast_dtype(dataclasses.replace(cfg, dtype=started), device)
    return amp
