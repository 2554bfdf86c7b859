"""Mixed precision: the autocast dtype a run trains in (--dtype), on this machine or as the
run started."""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Callable

import torch

from mypt.config import TrainConfig
from mypt.distributed import Dist


def cpu_runs_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 matrices in hardware: Intel's AMX tiles (Xeon since
    Sapphire Rapids) or AVX512-BF16's dot products (AMD Zen 4 and later, Intel Cooper Lake).
    torch says so only through private functions, hence the fallback to no."""
    return any(bool(getattr(torch.cpu, check, lambda: False)())
               for check in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"))


def autocast_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for float32. auto: bfloat16 on GPUs that run it natively
    (compute capability 8.0, Ampere, and later), float16 (with a GradScaler) on older ones
    (is_bf16_supported() says True on a T4, which only emulates bf16). On the CPU, bfloat16
    where the hardware multiplies it (cpu_runs_bf16): with AMX the linear layers' matmuls are
    3-4x faster than in float32 at the demo model's shapes and a training step about a third
    shorter, with AVX512-BF16 (an AMD EPYC Zen 4) the demo model's step 1.35x faster (attention
    stays float32, see CausalSelfAttention); elsewhere bfloat16 is emulated, slower than
    float32, and auto is float32."""
    if cfg.dtype == "float32" or device.type not in ("cuda", "cpu"):
        return None
    if cfg.dtype == "auto":
        if device.type == "cpu":
            return torch.bfloat16 if cpu_runs_bf16() else None
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
        # auto resolves on the machine it runs on (bfloat16 hardware or not, GPU generation): a
        # resumed run keeps the precision it started in, so it ends as the uninterrupted run would.
        # Its training state records it (an older mypt's checkpoint, where its files tell:
        # checkpoint.read_training_state); where nothing tells, this machine's pick is said as such.
        started = resume_state.get("autocast")
        if started is None:
            if dist.is_main:
                log(f"autocast: {dtype_name(amp)}, --dtype auto's pick on this machine: the checkpoint does not "
                    "record the precision its run trained in; pass --dtype to choose it")
        elif started != dtype_name(amp):
            if dist.is_main:
                log(f"autocast: {started}, as the run started (--dtype auto would pick {dtype_name(amp)} "
                    "on this machine; pass --dtype to change it)")
            amp = autocast_dtype(dataclasses.replace(cfg, dtype=started), device)
    return amp
