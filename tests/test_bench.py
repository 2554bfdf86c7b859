"""The GPU suite's --smoke run: every section's code path on the CPU with tiny shapes, so that
the one short GPU session a task may get is never lost to a broken script."""

from __future__ import annotations

import importlib.util
import re
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


@pytest.mark.slow
def test_cpu_benches_run(tmp_path):
    """bench/train_cpu.py and bench/loader.py at tiny sizes: the scripts whose figures the
    README quotes keep running as the library changes (both had broken on renamed imports)."""
    out = run([sys.executable, str(REPO / "bench" / "train_cpu.py"), "--iters", "12", "--repeats", "1"],
              cwd=tmp_path).stdout
    share = re.search(r"mypt train: +([\d,]+) tok/s .* = (\d+)% of the bare loop", out)
    assert share and int(share.group(1).replace(",", "")) > 0 and int(share.group(2)) > 0, out
    out = run([sys.executable, str(REPO / "bench" / "loader.py"), "--shards", "2,4", "--tokens_per_shard", "5000",
               "--batches", "10"], cwd=tmp_path).stdout
    assert out.count("memmap") >= 1 and "     4       20,000 |" in out, out


@pytest.mark.slow
def test_quality_bench_compares_recipes(tmp_path):
    """bench/quality.py at its tiny size: both recipes train on the demo's Shakespeare and the
    comparison against the GPT-2 recipe's final loss is printed (the README quotes its figures)."""
    out = run([sys.executable, str(REPO / "bench" / "quality.py"), "--size", "tiny", "--points", "2",
               "--recipes", "gpt2,modern", "--target", "9.5"], cwd=tmp_path).stdout
    assert "time to the gpt2 recipe's final val loss" in out, out
    assert re.search(r"gpt2: final val \d+\.\d+; reaches", out) and re.search(r"modern: final val \d+\.\d+", out), out
    # --target: a loss both reach at their first evaluation (ln 65 = 4.2), before the clock
    # starts (it starts after the first step: the warm-up, printed apart, is left out).
    assert re.search(r"time to val 9\.5000:\n +gpt2: 0\.0 s\n +modern: 0\.0 s", out), out
    assert re.search(r"steps at \d+\.\d ms/step, \d+ s, of which \d+\.\d s of warm-up", out), out
    out = run([sys.executable, str(REPO / "bench" / "quality.py"), "--size", "tiny", "--recipes", "modern",
               "--profile"], cwd=tmp_path).stdout
    assert "MuonAdamW.step" in out and "Self CPU time total" in out, out


@pytest.mark.slow
def test_quality_bench_by_steps_calibrates_nothing(tmp_path, monkeypatch, capsys):
    """--steps N fixes every recipe's step count: the 35 calibration steps that time a step for a
    wall-clock budget were run anyway, for each recipe, their timing unused. The run times its
    own steps instead (still printed)."""
    spec = importlib.util.spec_from_file_location("quality", REPO / "bench" / "quality.py")
    quality = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(quality)

    def calibrate(*args, **kwargs):
        raise AssertionError("calibrated a step time that --steps leaves unused")
    monkeypatch.setattr(quality, "step_seconds", calibrate)
    monkeypatch.chdir(tmp_path)
    quality.main(["--size", "tiny", "--steps", "4", "--points", "2", "--recipes", "gpt2", "--target", "9.5"])
    out = capsys.readouterr().out
    assert re.search(r"  4 steps at \d+\.\d ms/step, \d+ s, of which \d+\.\d s of warm-up", out), out
    assert re.search(r"time to val 9\.5000:\n +gpt2: 0\.0 s", out), out  # the first evaluation: before the clock


@pytest.mark.slow
def test_gpu_check_runs_every_part_in_its_smoke_mode(tmp_path):
    """bench/gpu_check.sh, the GPU figures of issue 20 in one run, at tiny sizes on the CPU:
    each part runs and leaves its output (a GPU session is too short to lose to a broken script)."""
    import os
    import subprocess

    done = subprocess.run(["bash", str(REPO / "bench" / "gpu_check.sh"), "--smoke"], cwd=tmp_path, text=True,
                          capture_output=True, env={**os.environ, "PYTHON": sys.executable}, timeout=600)
    assert done.returncode == 0 and "FAILED" not in done.stdout, done.stdout[-3000:] + done.stderr[-2000:]
    out = {name: (tmp_path / "gpu_check_out" / f"{name}.txt").read_text() for name in ("suite", "muon_step", "quality")}
    assert "failed sections: none" in out["suite"] and "modern/150M_1024 preset" in out["suite"], out["suite"]
    assert re.search(r"tiny: 8 matrices of 4 shapes \| torch\.optim\.Muon +\d+\.\d+ \| mypt batched +\d+\.\d+ "
                     r"\(\d+\.\dx faster\) \| CUDA graph +- \| fused AdamW +\d+\.\d+", out["muon_step"]), out["muon_step"]
    assert "time to val 1.4700:" in out["quality"], out["quality"]


@pytest.mark.slow
def test_dedup_memory_bench_runs(tmp_path):
    """bench/dedup_memory.py at 2 MiB: every corpus shape through both entry points (it asserts
    that they write the same bytes), each with a peak memory figure."""
    out = run([sys.executable, str(REPO / "bench" / "dedup_memory.py"), "--mb", "2", "--dedup_memory_mb", "1",
               "--tmp", str(tmp_path)], cwd=tmp_path).stdout
    for corpus in ("distinct lines", "one line repeated", "seven lines repeated", "distinct lines, one .gz"):
        for entry in ("dvc stage", "prepare-dataset"):
            assert re.search(rf"{re.escape(corpus)} +{entry} +\d+ MiB", out), out


@pytest.mark.slow
def test_long_lines_and_pathological_benches_run(tmp_path):
    """bench/long_lines.py and bench/pathological.py at 1 MiB: every case of each runs (at 1 MiB
    every line is under the 64 MiB a line mypt holds, so --no_filter is no error), with its figure."""
    out = run([sys.executable, str(REPO / "bench" / "long_lines.py"), "--mb", "1"], cwd=tmp_path).stdout
    for step in ("clean stage", "prepare-dataset"):
        table = out.split(step + "\n", 1)[1].split("\n\n", 1)[0]
        for case in ("lines", "one-line", "one-line --no_filter", "cr-only", "old-mac", "zst-lines", "zst-one-line",
                     "paragraphs", "cjk-lines"):
            assert re.search(rf"^{re.escape(case)} +\d+ +[\d.]+ +[\d.]+ +ok$", table, re.M), table
    out = run([sys.executable, str(REPO / "bench" / "pathological.py"), "--run_mb", "1", "--files", "50",
               "--workers", "1"], cwd=tmp_path).stdout
    for figure in ("gpt2: 1 MiB of newlines between two lines:", "train-tokenizer: 1 MiB of blank lines",
                   "short_words, 1,397,999 characters", "prepare-dataset, 50 tiny files", "work folder peak:"):
        assert figure in out, out
