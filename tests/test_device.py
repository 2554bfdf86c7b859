"""--device auto: cuda when a GPU is there, else Apple's MPS where it is available, else cpu
(the machine's answers faked with monkeypatch)."""

from __future__ import annotations

import pytest
import torch

from mypt.device import resolve_device
from mypt.errors import ConfigError


@pytest.mark.parametrize("cuda, mps, expected", [(True, True, "cuda"), (False, True, "mps"), (False, False, "cpu")])
def test_auto_prefers_cuda_then_mps_then_cpu(monkeypatch, cuda, mps, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    for name in ("auto", None, ""):
        assert resolve_device(name).type == expected


def test_mps_asked_for_where_there_is_none_is_an_error(monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=r"^--device mps: Apple's MPS is not available here; use --device cpu"):
        resolve_device("mps")


def test_one_process_trains_on_the_gpu_device_names(monkeypatch):
    """--device cuda:1 in one process trains on cuda:1 (it took the local rank, 0); cuda alone
    the first GPU. (The machine's GPUs faked: set_device records where training goes.)"""
    from mypt.config import TrainConfig
    from mypt.train_command import _setup_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    chosen = []
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert [_setup_device(TrainConfig(device=name), 10.0)[0] for name in ("cuda:1", "cuda", "cuda:0")] == \
        [torch.device("cuda", 1), torch.device("cuda", 0), torch.device("cuda", 0)] == chosen
