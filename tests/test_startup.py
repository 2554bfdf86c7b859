"""Start-up of `mypt train`: it loads only what training needs, opens each shard once (kept
open for the run) and no other file of the dataset than its metadata and tokenizer, and
pauses the garbage collector only while the run is built. (Its time is measured by
bench/startup.py, never asserted here.)"""

from __future__ import annotations

import gc
import json
import subprocess
import sys

import pytest
from click.testing import CliRunner
from conftest import REPO

from mypt.cli import main

# Never needed to train on a prepared char dataset without --metrics_dir: the data steps and
# the other commands' modules, the input formats' packages, the tracker, tiktoken (gpt2 only).
NOT_FOR_TRAINING = ("mypt.prepare", "mypt.steps", "mypt.train_tokenizer", "mypt.readers", "mypt.verify",
                    "mypt.append", "dvc", "dvclive", "transformers", "tokenizers", "pyarrow", "zstandard", "tiktoken",
                    "matplotlib", "yaml", "ray", "mypt.ray_engine", "tensorboard",
                    "mlflow", "wandb")


def loaded(modules: list[str], names: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == n or m.startswith(n + ".") for n in names))


def run_python(code: str, *args: str, cwd=REPO) -> dict:
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_help_loads_no_torch_and_builds_each_command_when_asked():
    code = ("import json, sys\nfrom mypt.cli import main\n"
            "main(sys.argv[1:], standalone_mode=False)\nprint(json.dumps(sorted(sys.modules)))")
    modules = run_python(code, "train", "--help")
    assert loaded(modules, ("torch", "mypt.prepare", "mypt.steps", "mypt.train_tokenizer")) == []
    # The commands built on first use are listed, and their help shows their generated options.
    listing = CliRunner().invoke(main, ["--help"]).output
    assert all(name in listing for name in ("prepare-dataset", "train-tokenizer", "train", "verify-dataset"))
    assert "--tokens_per_shard" in CliRunner().invoke(main, ["prepare-dataset", "--help"]).output
    assert "--vocab_size" in CliRunner().invoke(main, ["train-tokenizer", "--help"]).output


def test_a_train_command_that_fails_before_training_leaves_the_collector_on(tmp_path):
    assert gc.isenabled()
    done = CliRunner().invoke(main, ["train", "--dataset_dir", str(tmp_path / "missing"), "--model_name", "m",
                                     "--checkpoints_dir", str(tmp_path / "ck"), "--config_file", "tiny", "--device", "cpu"])
    assert done.exit_code == 1 and "no directory" in done.output
    assert gc.isenabled()


# Runs `mypt train` and reports what it imported, which files of the dataset it opened, and
# whether the garbage collector is on again.
TRAIN_AND_REPORT = """
import gc, json, os, sys
opened = []
sys.addaudithook(lambda event, args: opened.append(os.fspath(args[0])) if event == "open" and
                 isinstance(args[0], (str, bytes, os.PathLike)) else None)
from mypt.cli import main
main(sys.argv[1:], standalone_mode=False)
ds = os.path.abspath("ds") + os.sep
print(json.dumps({"modules": sorted(sys.modules), "gc": gc.isenabled(),
                  "opened": [os.path.relpath(p, ds) for p in map(os.path.abspath, opened) if p.startswith(ds)]}))
"""


@pytest.mark.slow
def test_train_loads_only_what_training_needs_and_reads_few_shards(tmp_path):
    text = "".join(f"Line {i} of the king's speech to the realm.\n" for i in range(800))
    (tmp_path / "corpus.txt").write_text(text)
    done = CliRunner().invoke(main, ["prepare-dataset", "--input_files", str(tmp_path / "corpus.txt"), "--out_dir",
                                     str(tmp_path / "ds"), "--tokenization", "char", "--tokens_per_shard", "100",
                                     "--val_fraction", "0.05", "--no_dedup", "--workers", "1"])
    assert done.exit_code == 0, done.output
    shards = len(list((tmp_path / "ds").rglob("shard_*.bin")))
    assert shards > 300
    report = run_python(TRAIN_AND_REPORT, "train", "--dataset_dir", "ds", "--model_name", "m", "--config_file", "tiny",
                        "--device", "cpu", "--max_iters", "1", "--eval_interval", "1", "--eval_iters", "1",
                        cwd=tmp_path)
    assert loaded(report["modules"], NOT_FOR_TRAINING) == []
    assert report["gc"]
    # The loader opens every shard once at start-up and keeps it open (shards.ShardFiles, since
    # 82337bf: an --append_to renaming val under the run changes nothing it samples), so an open
    # is not a read here; each shard is opened once, and no other file of the dataset is.
    shard_files = [p for p in report["opened"] if p.endswith(".bin")]
    assert len(shard_files) == len(set(shard_files)) == shards
    assert set(report["opened"]) - set(shard_files) <= {"dataset_metadata.json", "tokenizer_state.json"}
