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
