"""A resumed checkpoint through `mypt train`: the precision an older mypt's checkpoint trained in,
said only where its files tell; config.json read once by each check of the folder a save
replaces; a link where a save makes a folder, refused before training."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file, save_file

from mypt import checkpoint
from mypt.cli import main
from mypt.config import TrainConfig
from mypt.distributed import Dist
from mypt.io import sha256_file


def _flags(tmp_path: Path, max_iters: int) -> list[str]:
    (tmp_path / "t.txt").write_text("some text to learn from\n" * 40)
    return ["train", "--input_file", str(tmp_path / "t.txt"), "--tokenization", "char", "--config_file", "tiny",
            "--checkpoints_dir", str(tmp_path / "ck"), "--model_name", "m", "--device", "cpu", "--max_iters",
            str(max_iters), "--eval_iters", "1", "--eval_interval", "100", "--batch_size", "2"]


def _train(tmp_path: Path, *extra: str, max_iters: int = 2) -> str:
    result = CliRunner().invoke(main, [*_flags(tmp_path, max_iters), *extra])
    assert result.exit_code == 0, result.output
    return result.output


def _made_older(ckpt: Path, gpu: bool = False, **state) -> None:
    """`ckpt` as an older mypt left it: training_state.json without "autocast" (and with `state`
    added), its run's GPU random state saved where `gpu`; config.json's sums made to match."""
    saved = json.loads((ckpt / "training_state.json").read_text())
    del saved["autocast"]
    (ckpt / "training_state.json").write_text(json.dumps({**saved, **state}, indent=1) + "\n")
    if gpu:  # (a CUDA generator's state: 16 bytes)
        tensors = load_file(ckpt / "training_state.safetensors")
        save_file({**tensors, "rng/cuda": torch.zeros(16, dtype=torch.uint8)}, ckpt / "training_state.safetensors")
    config = json.loads((ckpt / "config.json").read_text())
    for name in ("training_state.json", "training_state.safetensors"):
        config["sha256"][name] = sha256_file(ckpt / name)
    (ckpt / "config.json").write_text(json.dumps(config, indent=2) + "\n")


SCALER = {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000,
          "_growth_tracker": 0}


@pytest.mark.parametrize("state, said, trained", [
    # bfloat16 or float16 by the GPU's generation: not known, and not claimed.
    ({}, "autocast: bfloat16, --dtype auto's pick on this machine: the checkpoint does not record the precision "
         "its run trained in; pass --dtype to choose it", "bfloat16"),
    # A GradScaler's state: float16, whatever machine saved it.
    ({"scaler": SCALER}, "autocast: float16, as the run started (--dtype auto would pick bfloat16 on this "
                         "machine; pass --dtype to change it)", "float16"),
])
def test_an_older_gpu_checkpoint_resumed_on_a_cpu_claims_no_precision_it_does_not_know(tmp_path, monkeypatch, state,
                                                                                     said, trained):
    """An older mypt's checkpoint (no "autocast" in its training state) saved on a GPU under
    --dtype auto, resumed with --dtype auto on a CPU: its run was not float32, whatever this
    machine is."""
    import mypt.precision

    monkeypatch.setattr(mypt.precision, "cpu_runs_bf16", lambda: True)  # (auto's pick here: bfloat16)
    _train(tmp_path, "--dtype", "auto")
    ckpt = tmp_path / "ck" / "m"
    _made_older(ckpt, gpu=True, **state)
    output = _train(tmp_path, "--dtype", "auto", "--resume", max_iters=4)
    assert said in output.splitlines() and "float32" not in output, output
    assert json.loads((ckpt / "training_state.json").read_text())["autocast"] == trained


def test_an_older_cpu_checkpoint_resumed_on_a_gpu_keeps_float32(tmp_path, monkeypatch):
    """An older mypt's checkpoint saved on a CPU under --dtype auto trained in float32 (auto
    picked bfloat16 on no CPU then): resumed under auto on a GPU that runs bfloat16, it stays in
    float32 and says so. (No GPU here: the device is named, its generation given.)"""
    import mypt.precision

    monkeypatch.setattr(mypt.precision, "cpu_runs_bf16", lambda: False)
    _train(tmp_path, "--dtype", "auto")
    ckpt = tmp_path / "ck" / "m"
    _made_older(ckpt)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    lines = []
    amp = mypt.precision.run_autocast(TrainConfig(dtype="auto"), torch.device("cuda"),
                                      checkpoint.read_training_state(ckpt), Dist(), lines.append)
    assert amp is None and lines == ["autocast: float32, as the run started (--dtype auto would pick bfloat16 on this "
                                     "machine; pass --dtype to change it)"]


def test_check_ours_and_each_save_read_config_json_once(tmp_path, count_opens):
    """The checks of the folder a save replaces (check_ours at the start, each save's) read
    config.json once each: whose it is and what it records are one reading."""
    from mypt.model import load_model

    _train(tmp_path)
    ckpt = tmp_path / "ck" / "m"
    reads = lambda path, mode: "config" if path == ckpt / "config.json" and "r" in mode else None  # noqa: E731
    ours = count_opens(reads)
    checkpoint.check_ours(ckpt)
    assert ours == {"config": 1}
    loading = count_opens(reads)
    load_model(ckpt)
    loaded = loading["config"]
    opens = count_opens(reads)
    _train(tmp_path, "--resume", max_iters=4)  # one save, at its end (--eval_interval 100)
    # The run's settings, check_ours, the weights (load_model's reading), the save.
    assert opens == {"config": 1 + 1 + loaded + 1}


@pytest.mark.parametrize("link", ["dcp", "dcp/model"])
def test_a_link_where_a_save_makes_a_folder_is_refused_before_training(tmp_path, link):
    """A user's link named dcp (or dcp/model in a dcp/ folder of theirs) in a whole checkpoint:
    any save of it may make that folder (a --parallel fsdp resume does), and a link cannot be
    merged with it: refused before training, whatever the run, nothing changed."""
    _train(tmp_path)
    ckpt = tmp_path / "ck" / "m"
    (tmp_path / "elsewhere").mkdir()
    (ckpt / link).parent.mkdir(exist_ok=True)
    os.symlink(tmp_path / "elsewhere", ckpt / link)
    before = {p: p.read_bytes() for p in ckpt.iterdir() if p.is_file()}
    for extra in (["--resume"], ["--overwrite"]):
        result = CliRunner().invoke(main, [*_flags(tmp_path, 4), *extra])
        assert result.exit_code == 1 and f"{ckpt / link} is a link, where a save of the checkpoint makes a folder" \
            in result.output and "step 1" not in result.output, result.output
        assert {p: p.read_bytes() for p in ckpt.iterdir() if p.is_file()} == before


def test_a_run_from_a_checkpoint_reads_its_training_state_once_for_what_it_says(tmp_path, count_opens):
    """--init_from_model reads the base's training_state.json once for what the run says of it
    (whether the base's run finished; its step and val loss in the `init from` line), where each
    said it from a reading of its own."""
    _train(tmp_path, max_iters=2)
    base = tmp_path / "ck" / "m"
    opens = count_opens(lambda path, mode: "state" if path == base / "training_state.json" else None)
    result = CliRunner().invoke(main, [*_flags(tmp_path, 1), "--model_name", "next", "--init_from_model", str(base)])
    assert result.exit_code == 0 and f"init from {base} (step 2, val " in result.output, result.output
    assert opens == {"state": 1}  # one checked reading: its sha256 and its JSON from the same bytes


def test_a_resume_with_another_boolean_model_setting_names_it_as_its_flag(tmp_path):
    """A refused resume says a boolean model setting as the flag a user types (--no_qk_norm), for
    this run and for the checkpoint, as `mypt train --help` spells it, not its Python value
    (`--qk_norm False (the checkpoint: True)`), given as a flag or in a --config_file."""
    _train(tmp_path, "--qk_norm")
    ckpt = tmp_path / "ck" / "m"
    (tmp_path / "c.json").write_text(json.dumps({"model": {"qk_norm": False}}))
    for flags, said in ((["--no_qk_norm", "--bias"],
                         f"{ckpt} has another architecture than this run's settings: --bias (the checkpoint: "
                         "--no_bias), --no_qk_norm (the checkpoint: --qk_norm); leave --config_file and the model "
                         "flags out to keep the checkpoint's, or pass its --no_bias --qk_norm"),
                        (["--config_file", str(tmp_path / "c.json")],
                         f"--no_qk_norm in --config_file {tmp_path / 'c.json'} (the checkpoint: --qk_norm)")):
        result = CliRunner().invoke(main, [*_flags(tmp_path, 4), "--resume", *flags])
        assert result.exit_code == 1 and said in result.output, result.output
        assert "True" not in result.output and "False" not in result.output, result.output
