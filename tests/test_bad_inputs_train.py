"""Bad inputs to a training run (issue 18): a resume whose --max_iters is behind its checkpoint
or that starts from broken weights, a --metrics_dir that a checkpoint save would delete, seeds and
temperatures that a generator refuses, a flag error blamed on the preset, and a run whose data
fails (or whose loss turns NaN) in the middle: each one line, exit 1 or 2. A run that fails
mid-way leaves the checkpoint of the step it met (tests/test_train_failures.py resumes it)."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path
from typing import Callable

import pytest
from bad_inputs import Case, edit_json, gen, invoke, prep, run_case, train
from safetensors.torch import load_file, save_file

from mypt.io import sha256_file

SEED_HUGE = "99999999999999999999999"


def nan_weights(model: str) -> Callable[[Path], None]:
    """A checkpoint whose weights hold a NaN (as a run that diverged could save them)."""
    def setup(w: Path) -> None:
        path = w / "ck" / model / "model.safetensors"
        weights = load_file(path)
        name = sorted(weights)[0]
        weights[name].view(-1)[0] = float("nan")
        save_file(weights, path, metadata={"format": "pt"})
        config = json.loads((path.parent / "config.json").read_text())
        config["sha256"]["model.safetensors"] = sha256_file(path)  # saved so by a run, not damaged since
        (path.parent / "config.json").write_text(json.dumps(config))
    return setup


def unreadable_batch(at_call: int):
    """The data loader's `at_call`-th training batch cannot be read (EIO on its shard). Call 1
    is step 0's batch; call n is drawn during step n - 2."""
    def fault(monkeypatch: pytest.MonkeyPatch, w: Path) -> None:
        from mypt.data import GPTDataLoader

        real, calls = GPTDataLoader.get_batch, []

        def get_batch(self, split="train"):
            calls.append(split)
            if len(calls) == at_call:
                raise OSError(errno.EIO, os.strerror(errno.EIO), str(w / "ds" / "train" / "shard_00000.bin"))
            return real(self, split)
        monkeypatch.setattr(GPTDataLoader, "get_batch", get_batch)
    return fault


def nan_loss_from(training_call: int):
    """The model's training loss is NaN from its `training_call`-th forward on (call 1: step 0)."""
    def fault(monkeypatch: pytest.MonkeyPatch, w: Path) -> None:
        from mypt.model import GPT

        real, calls = GPT.forward, []

        def forward(self, idx, targets=None, cache=None):
            logits, loss = real(self, idx, targets, cache)
            if self.training and targets is not None:
                calls.append(1)
                if len(calls) >= training_call:
                    loss = loss * float("nan")
            return logits, loss
        monkeypatch.setattr(GPT, "forward", forward)
    return fault


def no_model_built(monkeypatch: pytest.MonkeyPatch, w: Path) -> None:
    """Building the model fails the test: the data's checks must come first (a model of
    --block_size 100000000 takes minutes and gigabytes to build)."""
    def refuse(*args, **kwargs):
        raise RuntimeError("the model was built before the data was checked")
    monkeypatch.setattr("mypt.train_command.GPT", refuse)


RUN4 = ("--dataset_dir", "ds", "--max_iters", "4", "--log_interval", "1")

CASES = [
    # -- --resume with nothing left to train (ck/m is trained to step 2) ----------------------
    Case("resume_max_iters_below_step", train("--dataset_dir", "ds", "--resume", "--max_iters", "1", model="m"),
         ["--max_iters 1", "step 2", "ck/m", "above 2"], out="ck"),
    Case("resume_without_data_names_the_recorded_data", train("--resume", "--max_iters", "4", model="m"),
         ["give exactly one of --dataset_dir", "a --resume takes the first run's data flags again",
          "ck/m/config.json records --dataset_dir ds"], out="ck"),
    Case("resume_without_data_of_a_text_file_run", train("--resume", "--max_iters", "4", model="m"),
         ["give exactly one of --dataset_dir", "records no dataset: its run read --input_file"], out="ck",
         setup=edit_json("ck/m/config.json", lambda c: c.update(dataset_dir=None))),
    # -- a checkpoint whose weights are not finite -------------------------------------------
    Case("resume_nan_checkpoint", train("--dataset_dir", "ds", "--resume", "--max_iters", "4", model="m"),
         ["--resume: ck/m/model.safetensors", "NaN", "earlier checkpoint", "--init_from_model"], out="ck",
         setup=nan_weights("m")),
    Case("init_from_nan_model", train("--dataset_dir", "ds", "--init_from_model", "m"),
         ["--init_from_model m: ck/m/model.safetensors", "NaN"], out="ck", setup=nan_weights("m")),
    # -- --metrics_dir where a checkpoint save would replace it ------------------------------
    Case("metrics_dir_in_checkpoint", train("--dataset_dir", "ds", "--metrics_dir", "ck/n/metrics"),
         ["--metrics_dir ck/n/metrics", "checkpoint directory ck/n"]),
    Case("metrics_dir_is_checkpoint", train("--dataset_dir", "ds", "--metrics_dir", "ck/n"),
         ["--metrics_dir ck/n", "checkpoint directory ck/n"]),
    Case("metrics_dir_in_resumed_checkpoint", train("--dataset_dir", "ds", "--resume", "--max_iters", "4",
                                                    "--metrics_dir", "ck/m/live", model="m"),
         ["--metrics_dir ck/m/live", "checkpoint directory ck/m"]),
    Case("metrics_dir_in_another_checkpoint", train("--dataset_dir", "ds", "--metrics_dir", "ck/m/live"),
         ["--metrics_dir ck/m/live", "ck/m is a mypt checkpoint"]),
    Case("checkpoints_dir_is_a_file", train("--dataset_dir", "ds", "--checkpoints_dir", "notes.txt"),
         ["--checkpoints_dir notes.txt", "is a file, not a directory"],
         setup=lambda w: (w / "notes.txt").write_text("mine")),
    # -- seeds: one range for every command (torch and numpy take 0 .. 2**63-1) --------------
    Case("train_seed_negative", train("--dataset_dir", "ds", "--seed", "-1"), ["--seed", "-1"], code=2),
    Case("train_seed_huge", train("--dataset_dir", "ds", "--seed", SEED_HUGE), ["--seed", SEED_HUGE], code=2),
    Case("prepare_seed_negative", prep("corpus.txt", "new_ds", "--seed", "-1"), ["--seed", "-1"], code=2),
    Case("prepare_seed_huge", prep("corpus.txt", "new_ds", "--seed", SEED_HUGE), ["--seed", SEED_HUGE], code=2),
    Case("generate_seed_negative", gen("--seed", "-1"), ["--seed", "-1"], code=2),
    Case("generate_seed_huge", gen("--seed", SEED_HUGE), ["--seed", SEED_HUGE], code=2),
    Case("config_seed_huge", train("--dataset_dir", "ds", "--config_file", "seed.json"),
         ["seed.json", "seed", SEED_HUGE], out="ck",
         setup=lambda w: (w / "seed.json").write_text(json.dumps({"training": {"seed": int(SEED_HUGE)}}))),
    # -- temperatures: 0 (greedy) or 1e-6 to 1e6 --------------------------------------------
    Case("temperature_below_float_range", gen("--temperature", "1e-39"), ["--temperature", "1e-39", "1e-06"],
         code=2),
    Case("temperature_tiny", gen("--temperature", "1e-7"), ["--temperature", "1e-7", "greedy"], code=2),
    # (past float32's range the logits all became 0: --top_k 1 sampled every token)
    Case("temperature_past_float_range", gen("--temperature", "1e39"), ["--temperature", "1e39", "1e+06"], code=2),
    # -- a rule between settings names where the values came from ----------------------------
    Case("heads_from_flags", train("--dataset_dir", "ds", "--n_embd", "33", "--n_head", "2"),
         ["--n_embd 33 --n_head 2: ", "divisible"], out="ck"),
    Case("heads_flag_and_preset", train("--dataset_dir", "ds", "--n_embd", "33"),
         ["--n_embd 33 with n_head 2 from preset tiny", "divisible"], out="ck"),
    Case("heads_from_file", train("--dataset_dir", "ds", "--config_file", "heads.json"),
         ["heads.json: model setting n_embd (33)"], out="ck",
         setup=lambda w: (w / "heads.json").write_text(json.dumps({"model": {"n_embd": 33, "n_head": 2}}))),
    Case("learning_rate_nan_flag", train("--dataset_dir", "ds", "--learning_rate", "nan"),
         ["'--learning_rate'", "nan is not a finite number in the range x>0.0"], out="ck", code=2),
    Case("learning_rate_inf_flag", train("--dataset_dir", "ds", "--learning_rate", "inf"),
         ["'--learning_rate'", "inf is not a finite number in the range x>0.0"], out="ck", code=2),
    # -- windows longer than the shards: the remedy depends on the whole split's length -------
    Case("block_longer_than_shards", train("--dataset_dir", "ds0", "--block_size", "2500"),
         ["ds0/train: no shard holds block_size+1 = 2501", "larger --tokens_per_shard", "--block_size"], out="ck",
         setup=lambda w: invoke("prepare-dataset", "--input_files", w / "corpus.txt", "--out_dir", w / "ds0",
                                "--tokenization", "char", "--val_fraction", "0", "--tokens_per_shard", "2000")),
    Case("block_longer_than_the_val_split", train("--dataset_dir", "ds", "--block_size", "1800"),
         ["ds/val: no shard holds block_size+1 = 1801", "the whole split holds", "--val_fraction", "--block_size"],
         out="ck"),
    Case("block_huge_refused_before_the_model", train("--dataset_dir", "ds", "--block_size", "100000000"),
         ["no shard holds block_size+1 = 100000001", "--block_size"], out="ck", fault=no_model_built),
    # -- what went wrong in a --dataset_dir, named -------------------------------------------
    Case("dataset_weight_not_a_number", train("--dataset_dir", "ds:abc"),
         ["--dataset_dir ds:abc: weight 'abc' is not a number", "ds:0.7"], out="ck"),
    Case("dataset_missing_with_a_colon", train("--dataset_dir", "nothere:abc"),
         ["--dataset_dir nothere:abc: no such directory nothere:abc"], out="ck"),
    Case("eval_dataset_is_a_step_output", train("--dataset_dir", "ds", "--eval_dataset_dir", "cleaned"),
         ["cleaned is not a dataset (no dataset_metadata.json)", "cleaned/manifest.json", "data/datasets/NAME"],
         out="ck", setup=lambda w: shutil.copy(w / "ds" / "tokenizer_state.json", w / "cleaned")),  # as data/shards/X
    # -- the run fails in the middle: the checkpoint of that step first ------------------------
    Case("shard_unreadable_mid_run", train(*RUN4), ["ds/train/shard_00000.bin", "Input/output error",
                                                    "(at step 1)", "checkpoint of step 1 is saved in ck/n",
                                                    "--resume"],
         out="ck", fault=unreadable_batch(3)),
    Case("shard_unreadable_at_the_first_step", train(*RUN4), ["shard_00000.bin", "(at step 0)",
                                                              "no checkpoint was written"],
         out="ck", fault=unreadable_batch(2)),
    Case("loss_nan_mid_run", train(*RUN4), ["loss is nan at step 3", "the last checkpoint (step 2) is in ck/n",
                                            "--learning_rate", "--resume from it"],
         out="ck", fault=nan_loss_from(4)),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_train_input_is_one_line(case: Case, world, tmp_path, monkeypatch):
    run_case(case, world, tmp_path, monkeypatch)


def test_a_nan_checkpoint_is_refused_before_any_step(world, tmp_path, monkeypatch):
    """The refusal of a NaN checkpoint comes from its weights, not from a first NaN loss."""
    from mypt.model import GPT

    def no_forward(*args, **kwargs):
        raise AssertionError("a step ran")
    monkeypatch.setattr(GPT, "forward", no_forward)
    case = next(c for c in CASES if c.id == "resume_nan_checkpoint")
    run_case(case, world, tmp_path, monkeypatch)  # (a step would raise, not exit)
