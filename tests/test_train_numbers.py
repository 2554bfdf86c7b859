"""The numbers a training run reports: a step's loss with gradient accumulation is the mean over
its micro-steps; ms/iter and tok/s count all the steps trained cost but the evaluations and saves
between them (nor, after --resume, steps the run did not train); the train stage's tokens add
every step at its own batch; a resume names the settings its flags change and the learning rate
they move."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner
from conftest import run

import mypt.tracking
import mypt.train
from mypt.cli import main
from mypt.model import GPT

REPO = Path(__file__).resolve().parent.parent


def invoke(*args) -> str:
    r = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return r.output


def dataset(tmp_path: Path) -> Path:
    (tmp_path / "c.txt").write_text("".join(f"Line {i} of the text, said the king {i * 3}.\n" for i in range(400)))
    invoke("prepare-dataset", "--input_files", tmp_path / "c.txt", "--out_dir", tmp_path / "ds", "--tokenization",
           "char", "--tokens_per_shard", "4000", "--workers", "1")
    return tmp_path / "ds"


def train_args(tmp_path: Path, *extra) -> list:
    return ["train", "--dataset_dir", tmp_path / "ds", "--model_name", "m", "--checkpoints_dir", tmp_path / "ck",
            "--config_file", "tiny", "--device", "cpu", "--no_compile", "--batch_size", "2", "--eval_iters", "2",
            *extra]


def test_a_steps_loss_is_the_mean_over_its_micro_steps(tmp_path, monkeypatch):
    dataset(tmp_path)
    micro: list[float] = []
    forward = GPT.forward

    def recording(self, *args, **kwargs):
        logits, loss = forward(self, *args, **kwargs)
        if self.training:
            micro.append(loss.item())
        return logits, loss

    monkeypatch.setattr(GPT, "forward", recording)
    out = invoke(*train_args(tmp_path, "--max_iters", "3", "--eval_interval", "3", "--log_interval", "1",
                             "--gradient_accumulation_steps", "4"))
    assert len(micro) == 12
    means = [sum(micro[i:i + 4]) / 4 for i in (0, 4, 8)]
    history = json.loads((tmp_path / "ck/m/training_state.json").read_text())["history"]
    assert [h["train_loss"] for h in history if "train_loss" in h] == pytest.approx(means, rel=1e-5)
    printed = [float(x) for x in re.findall(r"^iter \d+: loss (\d+\.\d+)", out, re.M)]
    assert printed == pytest.approx(means, abs=6e-5)  # (printed to 4 decimals)


def test_the_history_labels_each_loss_by_the_step_the_progress_line_and_curves_give(tmp_path):
    """training_state.json's history (and fit's result) puts a step's train loss at the steps done,
    as `iter N: loss` and dvclive's train_loss.tsv do, beside the val loss evaluated after it."""
    dataset(tmp_path)
    out = invoke(*train_args(tmp_path, "--max_iters", "4", "--eval_interval", "2", "--log_interval", "1",
                             "--metrics_dir", tmp_path / "live"))
    printed = {int(step): float(loss) for step, loss in re.findall(r"^iter (\d+): loss (\d+\.\d+)", out, re.M)}
    history = json.loads((tmp_path / "ck/m/training_state.json").read_text())["history"]
    train = {h["step"]: h["train_loss"] for h in history if "train_loss" in h}
    assert sorted(train) == sorted(printed) == [1, 2, 3, 4]
    assert all(abs(train[step] - printed[step]) < 6e-5 for step in printed)
    curve = (tmp_path / "live/plots/metrics/train_loss.tsv").read_text().splitlines()[1:]
    assert [int(row.split("\t")[0]) for row in curve] == [1, 2, 3, 4]
    assert [h["step"] for h in history if "val" in h] == [0, 2, 4]


def test_tok_s_counts_only_the_steps_trained(tmp_path, monkeypatch):
    """On a clock where a training micro-step takes 1 s and an evaluation batch 50 s, every
    progress line says 1000 ms/iter: after the evaluations, and after a resume at step 5 whose
    first line (step 8) covers the 3 steps it trained, not log_interval's 4."""
    dataset(tmp_path)
    now = [0.0]
    forward = GPT.forward

    def timed(self, *args, **kwargs):
        now[0] += 1.0 if self.training else 50.0
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(GPT, "forward", timed)
    monkeypatch.setattr(mypt.train, "time", SimpleNamespace(perf_counter=lambda: now[0], monotonic=time.monotonic))
    tokens_per_iter = 2 * 32  # batch 2 x tiny's block 32
    lines = invoke(*train_args(tmp_path, "--max_iters", "5", "--eval_interval", "5", "--log_interval", "4"))
    lines += invoke(*train_args(tmp_path, "--max_iters", "12", "--eval_interval", "5", "--log_interval", "4",
                                "--resume"))
    progress = re.findall(r"^iter (\d+): .*, (\d+) ms/iter, ([\d,]+) tok/s", lines, re.M)
    assert [int(step) for step, _, _ in progress] == [4, 8, 12]
    assert all(ms == "1000" and int(tok.replace(",", "")) == tokens_per_iter for _, ms, tok in progress), progress


@pytest.mark.slow
def test_the_train_stages_tokens_add_each_steps_own_batch_after_a_resume(tmp_path):
    dataset(tmp_path)
    stage = [sys.executable, str(REPO / "stages/train.py")]
    common = ["--dataset_dir", "ds", "--model_name", "m", "--checkpoints_dir", "ck", "--config_file", "tiny",
              "--device", "cpu", "--eval_iters", "1", "--eval_interval", "2"]
    run([*stage, *common, "--max_iters", "4", "--batch_size", "4", "--metrics", "a.json"], tmp_path)
    run([*stage, *common, "--max_iters", "6", "--batch_size", "2", "--resume", "--metrics", "b.json"], tmp_path)
    block = 32  # tiny's
    assert json.loads((tmp_path / "a.json").read_text())["tokens"] == 4 * 4 * block
    assert json.loads((tmp_path / "b.json").read_text())["tokens"] == 4 * 4 * block + 2 * 2 * block


def test_a_finished_checkpoint_from_before_the_token_count_counts_its_steps(tmp_path):
    """--resume of a run already at --max_iters whose training state has no token count (written
    before mypt kept one): the stage's tokens are its steps at the run's tokens per step, the
    same fallback a resumed run that trains starts from."""
    from test_dvc_params import stage_main

    dataset(tmp_path)
    invoke(*train_args(tmp_path, "--max_iters", "3", "--eval_interval", "3"))
    state_file = tmp_path / "ck/m/training_state.json"
    state = json.loads(state_file.read_text())
    assert state.pop("tokens") == 3 * 2 * 32
    state_file.write_text(json.dumps(state))
    config_file = tmp_path / "ck/m/config.json"  # (its record of the file's sha256, as such a save wrote it)
    config = json.loads(config_file.read_text())
    config["sha256"]["training_state.json"] = hashlib.sha256(state_file.read_bytes()).hexdigest()
    config_file.write_text(json.dumps(config))
    args = [str(a) for a in train_args(tmp_path, "--max_iters", "3", "--resume")[1:]]
    r = CliRunner().invoke(stage_main("stages/train.py"), [*args, "--metrics", str(tmp_path / "m.json")],
                           catch_exceptions=False)
    assert r.exit_code == 0 and "already trained" in r.output, r.output
    assert json.loads((tmp_path / "m.json").read_text())["tokens"] == 3 * 2 * 32


def test_resume_names_the_settings_it_changes_and_the_learning_rate_it_moves(tmp_path):
    dataset(tmp_path)
    invoke(*train_args(tmp_path, "--max_iters", "8", "--eval_interval", "8", "--warmup_iters", "2"))
    # A larger --max_iters stretches the cosine (lr_decay_iters follows it): at step 8 the saved
    # schedule is at min_lr, 3e-4, the new one back near its peak.
    out = invoke(*train_args(tmp_path, "--max_iters", "20", "--eval_interval", "10", "--warmup_iters", "2",
                             "--batch_size", "3", "--seed", "5", "--resume"))
    line = next(line for line in out.splitlines() if line.startswith("resuming m"))
    assert "settings changed from the checkpoint's run: " in line
    assert "| tokens per iteration: 96 (1 process(es) x 1 accumulation x 3 x 32) |" in out  # the new batch's
    assert "seed 5 (was 1337; no effect: a resume continues the checkpoint's random state)" in line
    assert "batch_size 3 (was 2)" in line and "max_iters 20 (was 8)" in line and "warmup" not in line
    # val's fixed batches are of batch_size windows: other windows from here (said; a max_iters alone is not)
    assert "val is measured on other windows from here (eval_iters batches of batch_size)" in line
    before, after = mypt.train.get_lr(8, _cfg(8)), mypt.train.get_lr(8, _cfg(20))
    assert before == pytest.approx(3e-4) and after > 4 * before
    assert f"the learning rate at step 8 is {after:.3g} (the checkpoint's schedule: {before:.3g})" in line
    # A run that set its decay (30 steps) resumed at step 10, mid-cosine, with a larger
    # --max_iters and no --config_file (so the checkpoint's settings are the base): the decay
    # stays, so the rate does too; only max_iters is named.
    invoke(*train_args(tmp_path, "--max_iters", "10", "--eval_interval", "10", "--warmup_iters", "2",
                       "--lr_decay_iters", "30", "--model_name", "k"))
    out = invoke("train", "--dataset_dir", tmp_path / "ds", "--model_name", "k", "--checkpoints_dir", tmp_path / "ck",
                 "--max_iters", "20", "--resume")
    line = next(line for line in out.splitlines() if line.startswith("resuming k"))
    assert line.endswith("settings changed from the checkpoint's run: max_iters 20 (was 10)"), line
    # With --config_file the preset's settings are the base (the README's rule): its decay
    # (none: max_iters) replaces the saved 30, and the line says so with the rate it moves.
    out = invoke(*train_args(tmp_path, "--max_iters", "30", "--eval_interval", "10", "--warmup_iters", "2",
                             "--model_name", "k", "--resume"))
    line = next(line for line in out.splitlines() if line.startswith("resuming k"))
    assert "lr_decay_iters None (was 30)" in line and "the learning rate at step 20 is" not in line
    # The model's dropout, the one model setting a resume may change, is named too (it was applied
    # unsaid); a resume without --dropout keeps the checkpoint's, unnamed.
    out = invoke("train", "--dataset_dir", tmp_path / "ds", "--model_name", "k", "--checkpoints_dir", tmp_path / "ck",
                 "--max_iters", "40", "--resume", "--dropout", "0.3")
    line = next(line for line in out.splitlines() if line.startswith("resuming k"))
    assert "settings changed from the checkpoint's run: max_iters 40 (was 30), dropout 0.3 (was 0.0); " in line, line
    out = invoke("train", "--dataset_dir", tmp_path / "ds", "--model_name", "k", "--checkpoints_dir", tmp_path / "ck",
                 "--max_iters", "41", "--resume")
    line = next(line for line in out.splitlines() if line.startswith("resuming k"))
    assert "settings changed from the checkpoint's run: max_iters 41 (was 40);" in line and "dropout" not in line, line


def test_resume_names_data_other_than_the_checkpoints(tmp_path, monkeypatch):
    """A resume on another dataset (or a mixture with other paths or weights, or a dataset
    prepared again at its path) is named in the resume line with the checkpoint's; the same data
    by another path (a resume from another directory, a copy) is not."""
    def prepared(name: str, text: str, *extra) -> Path:
        (tmp_path / f"{name}.txt").write_text(text)
        invoke("prepare-dataset", "--input_files", tmp_path / f"{name}.txt", "--out_dir", tmp_path / name,
               "--tokenizer_from", tmp_path / "ds", "--tokens_per_shard", "4000", "--workers", "1", *extra)
        return tmp_path / name

    def resume_line(*args) -> str:
        return next(line for line in invoke(*args).splitlines() if line.startswith("resuming"))

    dataset(tmp_path)
    prepared("ds2", "".join(f"Another text, line {i}, of the queen {i * 5}.\n" for i in range(400)))
    shutil.copytree(tmp_path / "ds", tmp_path / "copy")
    monkeypatch.chdir(tmp_path)
    invoke(*train_args(Path("."), "--max_iters", "2", "--eval_interval", "2"))
    monkeypatch.chdir(tmp_path / "ds")  # a resume from another directory: the same data by another path
    assert "data changed" not in resume_line(*train_args(Path(".."), "--max_iters", "3", "--resume"))
    monkeypatch.chdir(tmp_path)
    args = train_args(tmp_path, "--max_iters", "4", "--resume")
    args[args.index("--dataset_dir") + 1] = tmp_path / "copy"
    assert "data changed" not in resume_line(*args)
    args[args.index("--dataset_dir") + 1] = tmp_path / "ds2"
    args[args.index("--max_iters") + 1] = "5"
    assert resume_line(*args).endswith(f"; data changed from the checkpoint's run: --dataset_dir {tmp_path / 'ds2'} "
                                       f"(was --dataset_dir {tmp_path / 'copy'})")
    # ds2 prepared again at its path, from other text.
    prepared("ds2", "".join(f"A third text, line {i}, of the prince {i * 3}.\n" for i in range(400)), "--overwrite")
    args[args.index("--max_iters") + 1] = "6"
    assert resume_line(*args).endswith(f"; data changed since the checkpoint's run: {tmp_path / 'ds2'} prepared "
                                       "again or appended to (its dataset_metadata.json differs)")
    mixture = [f"a={tmp_path / 'ds'}:0.7", f"b={tmp_path / 'ds2'}:0.3"]
    base = train_args(tmp_path, "--model_name", "mx", "--max_iters", "2", "--eval_interval", "2")
    i = base.index("--dataset_dir")
    invoke(*base[:i], *base[i + 2:], "--dataset_dir", mixture[0], "--dataset_dir", mixture[1])
    swapped = [f"a={tmp_path / 'ds2'}:0.7", f"b={tmp_path / 'ds'}:0.3"]
    line = resume_line(*base[:i], *base[i + 2:], "--max_iters", "3", "--resume", "--dataset_dir", swapped[0],
                       "--dataset_dir", swapped[1])
    assert f"--dataset_dir {swapped[0]} --dataset_dir {swapped[1]} (was --dataset_dir {mixture[0]} " in line, line


def _cfg(max_iters: int):
    from mypt.config import TrainConfig
    return TrainConfig(learning_rate=3e-3, warmup_iters=2, max_iters=max_iters)


def test_a_new_run_from_a_model_may_change_its_dropout(tmp_path):
    """--init_from_model with another --dropout (fine-tuning with dropout from a base trained
    without it): dropout holds no weights, so the run starts from the base's weights exactly. A
    resume may change it from there on, as it may the learning rate."""
    from safetensors.torch import load_file

    dataset(tmp_path)
    invoke(*train_args(tmp_path, "--max_iters", "2", "--eval_interval", "2"))
    base = train_args(tmp_path, "--model_name", "ft", "--init_from_model", "m", "--dropout", "0.1")
    base.remove("--config_file"), base.remove("tiny")  # (the base's own settings)
    invoke(*base, "--max_iters", "0", "--eval_interval", "1")
    config = json.loads((tmp_path / "ck/ft/config.json").read_text())
    assert config["model"]["dropout"] == 0.1
    started, weights = load_file(tmp_path / "ck/ft/model.safetensors"), load_file(tmp_path / "ck/m/model.safetensors")
    assert started.keys() == weights.keys() and all(started[k].equal(weights[k]) for k in weights)
    invoke(*train_args(tmp_path, "--max_iters", "3", "--resume", "--dropout", "0.2"))
    assert json.loads((tmp_path / "ck/m/config.json").read_text())["model"]["dropout"] == 0.2
    assert json.loads((tmp_path / "ck/m/training_state.json").read_text())["step"] == 3


def test_wsd_holds_the_peak_then_decays_linearly_to_zero_at_max_iters(tmp_path):
    """--lr_schedule wsd as the log shows it: the warmup, the peak held, then the last
    --decay_fraction of the steps straight down to 0 (min_lr's default with wsd) at max_iters.
    Its --decay_fraction under the cosine changes nothing, and the run says so; so do steps
    past lr_decay_iters at a rate of 0. A checkpoint of an older mypt (no lr_schedule in its
    settings: the cosine) resumed with wsd names the change and the rate it moves."""
    dataset(tmp_path)
    out = invoke(*train_args(tmp_path, "--max_iters", "12", "--eval_interval", "12", "--log_interval", "1",
                             "--warmup_iters", "2", "--learning_rate", "1e-3", "--lr_schedule", "wsd",
                             "--decay_fraction", "0.5"))
    lrs = [float(x) for x in re.findall(r"^iter \d+: loss \S+, lr (\S+),", out, re.M)]
    # steps 0-11: warmup 1/3, 2/3, the peak to step 7, then 5/5 ... 1/5 of it (the decay's 5 of the 10 steps)
    assert lrs == pytest.approx([1e-3 / 3, 2e-3 / 3] + [1e-3] * 6 + [8e-4, 6e-4, 4e-4, 2e-4], rel=1e-2), out
    assert "has no effect" not in out
    cosine = invoke(*train_args(tmp_path, "--max_iters", "2", "--model_name", "c", "--decay_fraction", "0.5"))
    assert "warning: --decay_fraction has no effect: it acts with --lr_schedule wsd" in cosine, cosine
    zero = invoke(*train_args(tmp_path, "--max_iters", "6", "--model_name", "z", "--lr_schedule", "wsd",
                              "--lr_decay_iters", "4", "--warmup_iters", "1"))
    assert "warning: steps 4 to 5 train at learning rate 0 (min_lr 0, wsd's default, reached at lr_decay_iters 4)" \
        in zero, zero
    warm = invoke(*train_args(tmp_path, "--max_iters", "4", "--model_name", "w", "--lr_schedule", "wsd",
                              "--lr_decay_iters", "4", "--warmup_iters", "4"))
    assert "train at learning rate 0" not in warm  # (the warmup, to step 4, comes before the decay: min_lr at 4)
    config_file = tmp_path / "ck/c/config.json"
    config = json.loads(config_file.read_text())
    for key in ("lr_schedule", "decay_fraction"):
        del config["training"][key]
    config_file.write_text(json.dumps(config))
    out = invoke(*train_args(tmp_path, "--max_iters", "4", "--model_name", "c", "--decay_fraction", "0.5",
                             "--lr_schedule", "wsd", "--warmup_iters", "1", "--resume"))
    line = next(line for line in out.splitlines() if line.startswith("resuming c"))
    assert "lr_schedule 'wsd' (was 'cosine')" in line and "the learning rate at step 2 is " in line, line


def test_ms_per_iter_counts_the_votes_between_steps_and_the_progress_lines_own_cost(tmp_path, monkeypatch):
    """ms/iter and tok/s are a step's whole cost but the evaluations and saves: the ranks' vote
    between steps (an all_reduce each step under torchrun) and the last line's print and loggers
    count (each made 50 ms slower here: every line after the first has both, the first the vote)."""
    dataset(tmp_path)
    any_rank, call = mypt.train.any_rank, mypt.tracking.LiveMetrics.__call__

    def slow_vote(*args, **kwargs):
        time.sleep(0.05)
        return any_rank(*args, **kwargs)

    def slow_logger(self, step, values):
        time.sleep(0.05)
        return call(self, step, values)

    monkeypatch.setattr(mypt.train, "any_rank", slow_vote)
    monkeypatch.setattr(mypt.tracking.LiveMetrics, "__call__", slow_logger)
    out = invoke(*train_args(tmp_path, "--max_iters", "4", "--eval_interval", "4", "--log_interval", "1",
                             "--metrics_dir", tmp_path / "live"))
    ms = [int(x) for x in re.findall(r"^iter \d+: .*, (\d+) ms/iter", out, re.M)]
    assert len(ms) == 4 and ms[0] >= 50 and min(ms[1:]) >= 100, out
