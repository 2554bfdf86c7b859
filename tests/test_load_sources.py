"""What load_model reads, and the errors that name it: a sharded (FSDP) checkpoint's weights
come from dcp/model/, which its errors name (it has no model.safetensors)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.distributed as tdist

from mypt import checkpoint
from mypt.errors import CheckpointError
from mypt.model import load_model
from mypt.train import configure_optimizer
from test_train_paths import config, tiny_model, tokenizer


def _sharded_checkpoint(path: Path, nan: bool = False) -> None:
    """A sharded save of the tiny model by a group of one rank (as `--parallel fsdp` on one
    process saves): dcp/model/ and no model.safetensors."""
    from mypt.fsdp import shard_model

    tok = tokenizer()
    model = tiny_model(tok)
    if nan:
        with torch.no_grad():
            model.transformer.h[0].mlp.c_fc.weight[0, 0] = float("nan")
    tdist.init_process_group("gloo", store=tdist.HashStore(), rank=0, world_size=1)
    try:
        sharded = shard_model(model, None, compiled=False)
        optimizer = configure_optimizer(sharded, config(), torch.device("cpu"))
        checkpoint.save(path, sharded, tok, {"training": {}}, optimizer, group=tdist.new_group(backend="gloo"))
    finally:
        tdist.destroy_process_group()
    assert (path / "dcp" / "model").is_dir() and not (path / "model.safetensors").exists()


def test_a_sharded_checkpoint_loads(tmp_path):
    _sharded_checkpoint(tmp_path / "ckpt")
    model, _, _ = load_model(tmp_path / "ckpt")
    want = tiny_model(tokenizer()).state_dict()
    assert all(torch.equal(v, want[k]) for k, v in model.state_dict().items())


def test_a_sharded_checkpoints_shape_error_names_its_shards(tmp_path):
    ckpt = tmp_path / "ckpt"
    _sharded_checkpoint(ckpt)
    config = json.loads((ckpt / "config.json").read_text())
    config["model"]["n_layer"] = 2  # (the weights hold one block)
    (ckpt / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="does not match the weights") as e:
        load_model(ckpt)
    assert f"{ckpt / 'dcp' / 'model'}" in str(e.value) and "model.safetensors" not in str(e.value)


def test_a_sharded_checkpoints_nan_error_names_its_shards(tmp_path):
    ckpt = tmp_path / "ckpt"
    _sharded_checkpoint(ckpt, nan=True)
    with pytest.raises(CheckpointError, match="NaN or infinite") as e:
        load_model(ckpt)
    assert str(e.value).startswith(f"{ckpt / 'dcp' / 'model'}: ") and "model.safetensors" not in str(e.value)


def test_a_whole_checkpoints_errors_name_its_file(tmp_path):
    ckpt, tok = tmp_path / "ckpt", tokenizer()
    model = tiny_model(tok)
    with torch.no_grad():
        model.transformer.h[0].mlp.c_fc.weight[0, 0] = float("nan")
    checkpoint.save(ckpt, model, tok, {"training": {}})
    with pytest.raises(CheckpointError, match="NaN or infinite") as e:
        load_model(ckpt)
    assert str(e.value).startswith(f"{ckpt / 'model.safetensors'}: ")


def test_loading_builds_no_weights_to_throw_away_and_keeps_the_embedding_tied(tmp_path):
    """load_model draws no random numbers (a random init, all overwritten, is what a load
    skipped); what it gives is the saved model, its head still the embedding, float32 from a
    file of bfloat16, on no meta device."""
    from safetensors.torch import load_file, save_file

    tok = tokenizer()
    saved = tiny_model(tok)
    checkpoint.save(tmp_path / "ckpt", saved, tok, {"training": {}})
    rng = torch.get_rng_state()
    model, _, _ = load_model(tmp_path / "ckpt")
    assert torch.equal(torch.get_rng_state(), rng)
    assert model.lm_head.weight is model.transformer.wte.weight
    assert all(torch.equal(v, saved.state_dict()[k]) for k, v in model.state_dict().items())
    assert all(t.device.type == "cpu" and t.dtype == torch.float32 and t.requires_grad for t in model.parameters())
    idx = torch.tensor([tok.encode("the cat")])
    assert torch.equal(model(idx)[0], saved(idx)[0])

    file = tmp_path / "ckpt" / "model.safetensors"
    save_file({k: v.bfloat16() for k, v in load_file(file).items()}, file, metadata={"format": "pt"})
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    config["sha256"].pop("model.safetensors")  # (an edit the record would refuse)
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps(config))
    model, _, _ = load_model(tmp_path / "ckpt")
    assert all(t.dtype == torch.float32 for t in model.state_dict().values())
    assert torch.equal(model.lm_head.weight, saved.lm_head.weight.detach().bfloat16().float())


def test_sharded_saves_of_the_same_state_are_the_same_bytes(tmp_path):
    """safetensors writes a file's metadata map in hash order: DCP's files of two saves of one
    state differed in bytes (and in sha256, DVC's hashes) though equal in every value."""
    for i in range(4):
        _sharded_checkpoint(tmp_path / str(i))
    files = sorted(p.relative_to(tmp_path / "0") for p in (tmp_path / "0" / "dcp").rglob("*.safetensors"))
    assert len(files) >= 2
    for i in range(1, 4):
        for f in files:
            assert (tmp_path / str(i) / f).read_bytes() == (tmp_path / "0" / f).read_bytes(), (i, f)
