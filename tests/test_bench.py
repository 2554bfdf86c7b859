"""The GPU suite's --smoke run: every section's code path on the CPU with tiny shapes, so that
the one short GPU session a task may get is never lost to a broken script."""

from __future__ import annotations

import sys

import pytest
from conftest import REPO, run


@pytest.mark.slow
def test_gpu_suite_smoke_runs_every_section(tmp_path):
    out = run([sys.executable, str(REPO / "bench" / "gpu_suite.py"), "--smoke", "--levers", "--profile"],
              cwd=tmp_path).stdout
    assert "failed sections: none" in out, out
    summary = out.split(" summary ", 1)[1]
    for figure in ("fit tiny(124M) b4 eager", "fit tiny(124M) b8 shards eager", "profile tiny(124M) b4",
                   "generate tiny(124M) fp32 prompt 62 + 31 new, KV cache", "150M_1024 preset",
                   "750M_1024_domain_adapt preset", "tiny(350M)",
                   "lever tiny(124M) b8, default compile", "lever tiny(124M) b8, flash attention instead of cuDNN",
                   "lever tiny(124M) b8, mode reduce-overhead", "lever tiny(124M) b8, inductor coordinate-descent"):
        assert figure in summary, f"{figure!r} missing from the summary:\n{summary}"
    # max-autotune only when named: it is minutes of autotuning on a GPU.
    assert "max-autotune" not in out
