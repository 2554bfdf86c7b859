"""The torch device a command runs on, from its --device flag."""

from __future__ import annotations

import torch

from mypt.errors import ConfigError


def resolve_device(name: str | None, said: str = "--device ") -> torch.device:
    """The torch device for a name; "auto" (or nothing) is cuda when a GPU is there, else mps
    on an Apple machine that has it, else cpu. `said`: how the messages name the setting (the
    flag, or a Python config's `device=`)."""
    if not name or name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if torch.backends.mps.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"{said}{name!r} is not a device mypt runs on: use auto, cpu, cuda, cuda:N or mps")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"{said}{name}: no CUDA GPU is usable here (torch {torch.__version__}); "
                              f"use {said}cpu, or auto")
        if device.index is not None and device.index >= count:
            raise ConfigError(f"{said}{name}: this machine has {count} GPU(s), cuda:0 to cuda:{count - 1}")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"{said}{name}: Apple's MPS is not available here; use {said}cpu, or auto")
    return device
