"""`mypt train --resume --parallel fsdp` on 2 CPU ranks (gloo): each rank reads its shards of
the checkpoint, not the whole model, and hashes its share of the files; the resumed run ends
at the bytes of an uninterrupted one; a changed shard or NaN weights are refused on every rank."""

from __future__ import annotations

import importlib.util
import json
import shutil
import warnings
from pathlib import Path

import pytest
import torch

from conftest import char_dataset, torchrun
from mypt import checkpoint
from mypt.io import sha256_file

REPO = Path(__file__).resolve().parent.parent
TEXT = "\n".join(["the cat sat on the mat", "a dog ran to the log", "we see the sea by the tree"] * 400)


def _bench():
    """bench/fsdp_resume_reads.py, whose read counter (a sitecustomize) the test installs."""
    spec = importlib.util.spec_from_file_location("fsdp_resume_reads", REPO / "bench" / "fsdp_resume_reads.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_a_sharded_resume_reads_each_ranks_share_and_ends_where_an_uninterrupted_run_does(tmp_path):
    char_dataset(tmp_path, TEXT)
    # (--lr_decay_iters fixed: the schedule of a run to 4 and of one to 6 alike.)
    train = ["train", "--dataset_dir", "ds", "--config_file", "tiny", "--eval_interval", "2", "--lr_decay_iters", "6",
             "--device", "cpu", "--dtype", "float32", "--parallel", "fsdp"]
    torchrun([*train, "--model_name", "cut", "--max_iters", "4"], tmp_path)
    ckpts = tmp_path / "checkpoints"
    shutil.copytree(ckpts / "cut", ckpts / "counted")

    # The restore alone (--max_iters at the checkpoint's step: nothing trained, nothing saved),
    # each rank's reads counted.
    bench, counts = _bench(), tmp_path / "counts"
    env = bench.counted_env(tmp_path / "hook", counts, REPO)
    out = torchrun([*train, "--model_name", "counted", "--max_iters", "4", "--resume"], tmp_path, env=env).stdout
    assert "already trained to --max_iters 4" in out, out
    dcp = ckpts / "counted" / "dcp"
    files = sorted(p.relative_to(dcp).as_posix() for p in dcp.rglob("*.safetensors"))
    assert len(files) == 4  # (2 ranks saved: a file each, of the weights and of the optimizer's state)
    ranks = bench.per_rank(counts, dcp)
    assert len(ranks) == 2
    # Each file hashed once, by one rank (not all four by each).
    assert sorted(ranks[0]["hashed"] + ranks[1]["hashed"]) == files, ranks
    weights = sum(p.stat().st_size for p in (dcp / "model").glob("*.safetensors"))
    for r in ranks:  # each rank's half of the weights read (not the whole, to shard)
        assert 0 < r["model"] < 0.6 * weights, (r, weights)

    # Resumed on 2 ranks, the run ends at the bytes of a run never stopped.
    torchrun([*train, "--model_name", "cut", "--max_iters", "6", "--resume"], tmp_path)
    torchrun([*train, "--model_name", "straight", "--max_iters", "6"], tmp_path)
    resumed, straight = (checkpoint.read_weights(ckpts / name)[1] for name in ("cut", "straight"))
    assert sorted(resumed) == sorted(straight)
    assert all(torch.equal(resumed[k], straight[k]) for k in straight)
    assert json.loads((ckpts / "cut" / "training_state.json").read_text())["step"] == 6


@pytest.mark.slow
def test_a_sharded_resume_refuses_a_changed_shard_or_nan_weights_on_every_rank(tmp_path):
    char_dataset(tmp_path, TEXT)
    train = ["train", "--dataset_dir", "ds", "--config_file", "tiny", "--eval_interval", "2", "--device", "cpu",
             "--dtype", "float32", "--parallel", "fsdp"]
    torchrun([*train, "--model_name", "flipped", "--max_iters", "2"], tmp_path)
    ckpts = tmp_path / "checkpoints"
    shutil.copytree(ckpts / "flipped", ckpts / "nan")

    # A flipped byte in the optimizer's second file: the rank that hashes it (rank 1) says so, the
    # other stops with it (said once a node); nothing trained.
    shard = sorted((ckpts / "flipped" / "dcp" / "optim").glob("*.safetensors"))[1]
    data = bytearray(shard.read_bytes())
    data[-1] ^= 1
    shard.write_bytes(bytes(data))
    done = torchrun([*train, "--model_name", "flipped", "--max_iters", "4", "--resume"], tmp_path, check=False)
    assert done.returncode != 0 and "step 3" not in done.stdout
    said = f"--resume: {shard.relative_to(tmp_path)} does not match the sha256 its config.json records"
    assert said in done.stderr, done.stderr[-3000:]

    # A NaN in one rank's shard of the weights (the file's sha256 recorded again): refused on
    # every rank, the count of the whole tensor's bad values named.
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import HuggingFaceStorageReader, HuggingFaceStorageWriter

    from mypt.fsdp import MODEL

    nan = ckpts / "nan"
    meta = HuggingFaceStorageReader(str(nan / "dcp" / "model")).read_metadata().state_dict_metadata
    tensors = {k: torch.empty(tuple(m.size), dtype=m.properties.dtype) for k, m in meta.items()}
    with warnings.catch_warnings():  # (no process group: "assuming ... a single process", as meant)
        warnings.simplefilter("ignore", UserWarning)
        dcp.load(tensors, storage_reader=HuggingFaceStorageReader(str(nan / "dcp" / "model")), no_dist=True)
        name = f"{MODEL}.lm_head.weight"
        tensors[name][-1, 0] = float("nan")  # (the last row: rank 1's shard)
        shutil.rmtree(nan / "dcp" / "model")
        dcp.save(tensors, storage_writer=HuggingFaceStorageWriter(str(nan / "dcp" / "model"), save_distributed=True),
                 no_dist=True)
    config = json.loads((nan / "config.json").read_text())
    config["sha256"] = {k: v for k, v in config["sha256"].items() if not k.startswith("dcp/model/")}
    config["sha256"].update({f"dcp/model/{p.name}": sha256_file(p) for p in (nan / "dcp" / "model").iterdir()})
    (nan / "config.json").write_text(json.dumps(config))
    done = torchrun([*train, "--model_name", "nan", "--max_iters", "4", "--resume"], tmp_path, check=False)
    assert done.returncode != 0 and "step 3" not in done.stdout
    said = f"--resume: {Path('checkpoints/nan/dcp/model')}: lm_head.weight holds 1 NaN or infinite values of "
    assert said in done.stderr, done.stderr[-3000:]
