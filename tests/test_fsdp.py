"""`--parallel fsdp` (issue 22 item 2) on 2 CPU ranks (gloo): FSDP2 trains as DDP does, a
SIGTERM on one rank stops every rank at one step with a sharded checkpoint that resumes to the
weights of an uninterrupted run; the checkpoint resumes on 1 process and on 2, and generate,
eval and export-hf read it."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import re
import shutil
import signal
from pathlib import Path

import pytest
import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from conftest import mypt_cli, torchrun
from mypt import checkpoint
from mypt.config import RunSettings
from mypt.errors import CheckpointError, ConfigError, InputError, MyptError, TrainingStopped
from mypt.fsdp import fill_shards, full, shard_model
from mypt.io import sha256_file
from mypt.model import GPT, load_model
from mypt.names import TIED
from mypt.train import configure_optimizer, fit
from mypt.train_command import run_training
from test_train_paths import (_join, _spawn_two_ranks, config, failing_loader, loader, tiny_model, tokenizer,
                              train_losses)

TEXT = "\n".join(["the cat sat on the mat", "a dog ran to the log", "we see the sea by the tree"] * 400)


def quiet(line: str) -> None:
    pass


def _signal_rank1_at_batch(data, rank: int, call: int) -> None:
    """Only rank 1 gets a SIGTERM, while it reads its `call`-th batch: every rank must stop."""
    if rank != 1:
        return
    get_batch, calls = data.get_batch, []

    def get_batch_then_signal(split="train"):
        calls.append(split)
        if len(calls) == call:
            signal.raise_signal(signal.SIGTERM)
        return get_batch(split)

    data.get_batch = get_batch_then_signal


def _resumed(ckpt: Path, cfg, rank: int) -> tuple:
    """(model, optimizer, training state) of sharded checkpoint `ckpt` on 2 ranks, as `mypt train
    --resume --parallel fsdp` restores them: the files hashed a share a rank, the model built on
    the meta device and sharded, each rank reading its shards of the weights and optimizer."""
    cpu = torch.device("cpu")
    checkpoint.check_shards(ckpt, checkpoint.read_config(ckpt), rank, 2)
    model, _, saved = load_model(ckpt, shapes_only=True)
    shard_model(model, None, compiled=False, device=cpu)
    fill_shards(checkpoint.weights_source(ckpt, saved), model, cpu)
    optimizer = configure_optimizer(model, cfg, cpu)
    return model, optimizer, checkpoint.load_training_state(ckpt, optimizer, rank, model, config=saved,
                                                            shards_checked=True)


def _fsdp_worker(rank: int, port: int, out: str) -> None:
    dist = _join(rank, port)
    tok = tokenizer()
    # float32 whatever the CPU (auto is bfloat16 where it has AMX); two micro-steps, so that
    # gradients are reduced once per step, and the grad clip (default 1.0) acting on them.
    cfg = config(max_iters=10, eval_interval=5, gradient_accumulation_steps=2, dtype="float32")
    extra = {"training": cfg.to_dict()}
    ddp = fit(DDP(tiny_model(tok)), loader(tok, rank), config=cfg, dist=dist, log=quiet)
    straight = shard_model(tiny_model(tok), None, compiled=False)
    result = fit(straight, loader(tok, rank), config=cfg, checkpoint_dir=Path(out) / "straight", tokenizer=tok,
                 checkpoint_extra=extra, dist=dist, log=quiet)
    weights = {k: full(v).detach().clone() for k, v in straight.state_dict().items()}

    data = loader(tok, rank)
    _signal_rank1_at_batch(data, rank, call=6)  # the first prefetch, then two per step: in step 2
    try:
        fit(shard_model(tiny_model(tok), None, compiled=False), data, config=cfg, checkpoint_dir=Path(out) / "ckpt",
            tokenizer=tok, checkpoint_extra=extra, dist=dist, log=quiet)
        outcome = "finished"
    except TrainingStopped as e:
        outcome = str(e)
    torch.distributed.barrier()  # every rank has written its shards
    resumed, optimizer, state = _resumed(Path(out) / "ckpt", cfg, rank)
    fit(resumed, loader(tok, rank), optimizer, config=cfg, resume_state=state, dist=dist, log=quiet)
    same = all(torch.equal(full(v), weights[k]) for k, v in resumed.state_dict().items())

    # Rank 1 alone cannot read a batch: every rank stops at that step, which is saved (the
    # finite-weights check and the save are collectives here: a rank left out would hang).
    try:
        fit(shard_model(tiny_model(tok), None, compiled=False), failing_loader(tok, rank, fail_at=7 if rank else None),
            config=cfg, checkpoint_dir=Path(out) / "eio", tokenizer=tok, checkpoint_extra=extra, dist=dist, log=quiet)
        failure = "finished"
    except TrainingStopped as e:
        failure = str(e)

    # A file that appears among the shards mid-run (an rsync's temporary, here before the second
    # save) stops that save, named, on every rank; the checkpoint in place stays whole.
    stray = Path(out) / "stray" / "dcp" / "model" / ".shard-00001-model-00001-of-00001.safetensors.Xa1b2c"
    save, saves = checkpoint.save, []

    def save_after_a_stray_came(path, *args, **kwargs):
        saves.append(path)
        if len(saves) == 2 and rank == 0:
            stray.write_text("partial")
        return save(path, *args, **kwargs)

    checkpoint.save = save_after_a_stray_came
    try:  # "finished", or the error the sharded run stopped with
        fit(shard_model(tiny_model(tok), None, compiled=False), loader(tok, rank), config=cfg,
            checkpoint_dir=Path(out) / "stray", tokenizer=tok, checkpoint_extra=extra, dist=dist, log=quiet)
        stopped = "finished"
    except MyptError as e:
        stopped = str(e)
    finally:
        checkpoint.save = save
    torch.save({"ddp": ddp["history"], "fsdp": result["history"], "weights": weights, "outcome": outcome,
                "same": same, "failure": failure, "stopped": stopped}, f"{out}/rank{rank}.pt")
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_fsdp_trains_as_ddp_and_a_signal_stops_every_rank_with_a_checkpoint_that_resumes_exactly(tmp_path):
    _spawn_two_ranks(_fsdp_worker, tmp_path)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    # The same seed and data: FSDP's losses are DDP's to float32 rounding (reduce-scatter and
    # all-reduce sum in another order).
    assert train_losses(r0["fsdp"]) == pytest.approx(train_losses(r0["ddp"]), abs=1e-5)
    assert train_losses(r0["fsdp"])[-1] < train_losses(r0["fsdp"])[0] - 0.5
    assert r1["outcome"].startswith("SIGTERM: stopped at step 3; continue with --resume")
    assert r0["outcome"].startswith("SIGTERM on another rank: stopped at step 3;")
    assert json.loads((tmp_path / "ckpt/training_state.json").read_text())["step"] == 3
    assert r0["same"] and r1["same"]  # resumed to the uninterrupted run's weights, bit for bit
    assert r0["failure"] == r1["failure"]
    assert re.match(r"rank 1: cannot use .*Input/output error \(at step 2\): training stopped; the checkpoint of "
                    r"step 2 is saved in", r0["failure"]), r0["failure"]
    assert json.loads((tmp_path / "eio/training_state.json").read_text())["step"] == 2
    stray = tmp_path / "stray/dcp/model/.shard-00001-model-00001-of-00001.safetensors.Xa1b2c"
    assert f"{stray} is named like the mypt checkpoint's own files" in r0["stopped"], r0["stopped"]
    assert f"{tmp_path / 'stray'} holds the last one saved, whole; continue from it with --resume" in r0["stopped"]
    assert r1["stopped"] == r0["stopped"]  # (rank 0's cause on every rank: said once a node)
    assert stray.read_text() == "partial"
    assert json.loads((tmp_path / "stray/training_state.json").read_text())["step"] == 5
    with pytest.raises(CheckpointError, match=f"{re.escape(str(stray))} is not one of the shards .* move it out of"):
        load_model(tmp_path / "stray")
    stray.unlink()
    load_model(tmp_path / "stray")  # (the step 5 checkpoint, whole)
    # The sharded checkpoint, read whole in one process, is the trained model.
    _, whole, _ = checkpoint.read_weights(tmp_path / "straight")
    assert set(whole) == set(r0["weights"]) - {TIED}
    assert all(torch.equal(whole[k], r0["weights"][k]) for k in whole)


@pytest.mark.parametrize("named", [True, False])
def test_a_full_disk_in_a_sharded_save_is_the_oserror_it_is(tmp_path, monkeypatch, named):
    """A rank's shard write that failed (a full disk) came back from DCP as a CheckpointException
    holding every rank's traceback (237 lines under torchrun); as the OSError it is, training
    stops with the one line DDP gives, naming the file and the last checkpoint. A real full disk
    fails in the write, whose error names no file (a hostile tester's tmpfs): the folder is named."""
    from torch.distributed.checkpoint.filesystem import FileSystem

    from mypt.fsdp import save_dcp

    def full_disk(self, path, mode):
        raise OSError(errno.ENOSPC, "No space left on device", *([str(path)] if named else []))

    monkeypatch.setattr(FileSystem, "create_stream", full_disk)
    model = tiny_model(tokenizer())  # (one process, no group: DCP wraps a failure as under torchrun)
    with pytest.raises(OSError) as e:
        save_dcp(tmp_path / "dcp", model, configure_optimizer(model, config(), torch.device("cpu")))
    assert e.value.errno == errno.ENOSPC and "dcp/model" in (e.value.filename or "")


def _untied(tok) -> GPT:
    """The tiny model 33 wide (3 heads) with an output head of its own (--no_tie_embeddings): two
    tensors to shard and save; and Muon matrices of 99 and 33 rows, which 2 ranks shard unevenly
    (50 and 49 rows, 17 and 16)."""
    model = tiny_model(tok)
    torch.manual_seed(0)
    return GPT(dataclasses.replace(model.config, tie_embeddings=False, n_embd=33, n_head=3))


def _count_orthogonalized() -> list[int]:
    """In a worker: from now on, the matrices of each orthogonalize call in this process."""
    from mypt import optim

    counted, orthogonalize = [], optim.orthogonalize

    def counting(stack: torch.Tensor, group: dict) -> torch.Tensor:
        counted.append(stack.size(0))
        return orthogonalize(stack, group)

    optim.orthogonalize = counting
    return counted


def _fsdp_muon_worker(rank: int, port: int, out: str) -> None:
    dist = _join(rank, port)
    tok = tokenizer()
    counted = _count_orthogonalized()
    # lr_decay_iters fixed: the run cut at step 4 keeps the whole run's schedule.
    cfg = config(optimizer="muon", max_iters=8, lr_decay_iters=8, eval_interval=4, dtype="float32")
    extra = {"training": cfg.to_dict()}
    ddp = fit(DDP(_untied(tok)), loader(tok, rank), config=cfg, dist=dist, log=quiet)
    orthogonalized = {"ddp": sum(counted)}
    counted.clear()
    straight = shard_model(_untied(tok), None, compiled=False)
    result = fit(straight, loader(tok, rank), config=cfg, dist=dist, log=quiet)
    orthogonalized["fsdp"] = sum(counted)
    weights = {k: full(v).detach().clone() for k, v in straight.state_dict().items()}
    fit(shard_model(_untied(tok), None, compiled=False), loader(tok, rank), config=dataclasses.replace(cfg, max_iters=4),
        checkpoint_dir=Path(out) / "half", tokenizer=tok, checkpoint_extra=extra, dist=dist, log=quiet)
    torch.distributed.barrier()
    resumed, optimizer, state = _resumed(Path(out) / "half", cfg, rank)
    fit(resumed, loader(tok, rank), optimizer, config=cfg, resume_state=state, dist=dist, log=quiet)
    same = all(torch.equal(full(v), weights[k]) for k, v in resumed.state_dict().items())
    untied = resumed.lm_head.weight is not resumed.transformer.wte.weight
    torch.save({"ddp": ddp["history"], "fsdp": result["history"], "same": same, "untied": untied,
                "orthogonalized": orthogonalized}, f"{out}/rank{rank}.pt")
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_fsdp_trains_with_muon_as_ddp_and_resumes_exactly(tmp_path):
    """Muon under FSDP: each matrix's momentum is orthogonalized whole by one rank, which
    receives every rank's rows of it and sends each its rows of the result, so the run is
    DDP's while each rank orthogonalizes half the matrices (DDP's ranks, all of them); its
    sharded checkpoint (Muon's momentum included) resumes to the uninterrupted run's weights.
    The model's head is untied: its own tensor is sharded, saved and read back too."""
    _spawn_two_ranks(_fsdp_muon_worker, tmp_path)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    # (Within 1e-4: where the CPU multiplies bfloat16, Muon iterates in it, and the two runs'
    # gradient sums, equal to float32's last bits, can round to neighbouring bfloat16 values:
    # 4e-5 seen; orthogonalizing each shard's rows instead of the whole matrix moved them 1.4e-2.)
    assert train_losses(r0["fsdp"]) == pytest.approx(train_losses(r0["ddp"]), abs=1e-4)
    assert train_losses(r0["fsdp"])[-1] < train_losses(r0["fsdp"])[0] - 0.5
    assert r0["same"] and r1["same"] and r0["untied"]
    # 4 matrices x 8 steps: each DDP rank orthogonalized all 32, each FSDP rank 16 (the MLP's
    # c_fc and attention's c_attn on rank 0, the two c_proj on rank 1: rows x cols x min(rows,
    # cols) of 231 x 33 x 33 against 165 x 33 x 33).
    assert r0["orthogonalized"]["ddp"] == r1["orthogonalized"]["ddp"] == 32
    assert r0["orthogonalized"]["fsdp"] == r1["orthogonalized"]["fsdp"] == 16


# (rows, cols): rows that 2 ranks shard unevenly (3: 2 and 1) or leave one rank none of (1).
MATRICES = [(16, 8), (7, 8), (3, 4), (3, 4), (5, 3), (1, 6)]


def _muon_step_worker(rank: int, port: int, out: str) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import distribute_tensor

    from mypt import optim

    _join(rank, port)
    optim.cpu_runs_bf16 = lambda: False  # the float32 iteration on any CPU: the steps compared bit for bit
    counted = _count_orthogonalized()

    def matrices() -> torch.nn.Sequential:  # (fully_shard wants a module with a forward; never called)
        torch.manual_seed(0)
        return torch.nn.Sequential(*(torch.nn.Linear(cols, rows, bias=False) for rows, cols in MATRICES))

    whole, sharded = matrices(), fully_shard(matrices(), mesh=init_device_mesh("cpu", (2,)))
    muons = [torch.optim.Muon(m.parameters(), lr=0.02, weight_decay=0.1, adjust_lr_fn="original")
             for m in (whole, sharded)]
    torch.manual_seed(1)
    steps = []
    for batch_elements in (optim.BATCH_ELEMENTS, optim.BATCH_ELEMENTS, 40):  # 40: rank 1 in 3 rounds, rank 0 in 1
        optim.BATCH_ELEMENTS = batch_elements
        for p, q in zip(whole.parameters(), sharded.parameters()):
            p.grad = torch.randn_like(p)
            q.grad = distribute_tensor(p.grad, q.device_mesh, q.placements, src_data_rank=None)
        optim.muon_step(muons[0])
        counted.clear()
        optim.muon_step(muons[1])
        steps.append(sum(counted))
    same = all(torch.equal(full(q), p) and torch.equal(full(muons[1].state[q]["momentum_buffer"]),
                                                       muons[0].state[p]["momentum_buffer"])
               for p, q in zip(whole.parameters(), sharded.parameters()))
    torch.save({"same": same, "orthogonalized": steps}, f"{out}/rank{rank}.pt")
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_muon_step_on_shards_is_the_step_on_whole_matrices_each_rank_orthogonalizing_its_share(tmp_path):
    """mypt's Muon step on FSDP2's shards of matrices against the same step on the whole
    matrices in one process, from the same gradients, three steps: the same matrices and
    momentum bit for bit, while each matrix was orthogonalized by one rank only."""
    _spawn_two_ranks(_muon_step_worker, tmp_path)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert r0["same"] and r1["same"]
    # The work goes as rows x cols x min(rows, cols): 16 x 8's 1024 to rank 0, the other five's
    # 515 to rank 1.
    assert r0["orthogonalized"] == [1, 1, 1] and r1["orthogonalized"] == [5, 5, 5]


# A rank's count of opens of training_state.safetensors to read it (Python's open, whose mode the
# audit event gives: os.open's, None, is the check of a file's flags before a save), written to
# $COUNT_DIR/PID at its exit.
OPEN_COUNTER = """
import atexit, os, sys
opens = []
sys.addaudithook(lambda event, args: opens.append(1) if event == "open" and isinstance(args[0], (str, os.PathLike))
                 and args[1] is not None and os.fspath(args[0]).endswith("training_state.safetensors") else None)
if "LOCAL_RANK" in os.environ:
    atexit.register(lambda: open(os.path.join(os.environ["COUNT_DIR"], str(os.getpid())), "w").write(str(len(opens))))
"""


@pytest.mark.slow
def test_fsdp_checkpoint_resumes_on_one_process_and_two_and_is_read_by_generate_eval_export(tmp_path):
    (tmp_path / "corpus.txt").write_text(TEXT)
    mypt_cli("prepare-dataset", "--input_files", "corpus.txt", "--out_dir", "ds", "--tokenization", "char",
             cwd=tmp_path)
    train = ["train", "--dataset_dir", "ds", "--model_name", "f", "--config_file", "tiny", "--eval_interval", "4",
             "--device", "cpu"]
    # bfloat16: the shards are gathered in it (FSDP's MixedPrecisionPolicy), as on a GPU.
    first = torchrun([*train, "--parallel", "fsdp", "--max_iters", "8", "--dtype", "bfloat16"], tmp_path)
    assert "2 process(es)" in first.stdout and first.stdout.count("step 8: val") == 1
    # A new run starts from the model one process builds on the same seed, as DDP's does (each
    # rank's half of a matrix was its own rank's seed's).
    for name, ranks in (("alone", 1), ("sharded", 2)):
        torchrun([*train, "--parallel", "fsdp", "--model_name", name, "--max_iters", "0"], tmp_path, ranks=ranks)
    alone, sharded = (load_model(tmp_path / "checkpoints" / name)[0].state_dict() for name in ("alone", "sharded"))
    assert (tmp_path / "checkpoints/sharded/dcp").is_dir()
    assert all(torch.equal(alone[k], sharded[k]) for k in alone)
    ckpt = tmp_path / "checkpoints/f"
    assert (ckpt / "dcp").is_dir() and not (ckpt / "model.safetensors").exists()
    sums = json.loads((ckpt / "config.json").read_text())["sha256"]
    # The weights and the optimizer's tensors apart, one file per rank each, every file recorded.
    files = sorted(p.relative_to(ckpt).as_posix() for p in (ckpt / "dcp").rglob("*") if p.is_file())
    assert sorted(k for k in sums if k.startswith("dcp/")) == files
    assert {f.rsplit("/", 1)[0] for f in files} == {"dcp/model", "dcp/optim"}
    assert all(len(list((ckpt / "dcp" / part).glob("*.safetensors"))) == 2 for part in ("model", "optim"))
    assert len(sums) > len(files)  # and the other files, as always

    assert "sample 1" in mypt_cli("generate", "--model_name", "f", "--prompt", "the", "--max_new_tokens", "8",
                                  cwd=tmp_path).stdout
    metrics = json.loads(mypt_cli("eval", "--model_name", "f", "--dataset", "g=ds", "--json", cwd=tmp_path).stdout)
    assert 0 < metrics["g"]["loss"] < 4
    mypt_cli("export-hf", "--model_name", "f", "--out_dir", "hf", cwd=tmp_path)
    assert (tmp_path / "hf/model.safetensors").is_file()
    with pytest.raises(ConfigError, match="already holds a trained model; pass --resume"):
        run_training(RunSettings(model_name="f", dataset_dir=str(tmp_path / "ds"),
                                 checkpoints_dir=tmp_path / "checkpoints"), {"max_iters": 8})

    # A shard changed, or a file added among them (an rsync's temporary), is refused, as any
    # checkpoint file is: the added one named, to move out (a --resume refuses it at its start,
    # nothing changed); the weights are read without the optimizer's files (generate, eval,
    # export-hf never hash them), which --resume checks when it reads them.
    for part in ("model", "optim"):
        for damage in ("flip", "add"):
            bad = tmp_path / f"bad_{part}_{damage}"
            shutil.copytree(ckpt, bad)
            shard = sorted((bad / "dcp" / part).glob("*.safetensors"))[0]
            added = bad / "dcp" / part / f".{shard.name}.Xa1b2c"
            if damage == "flip":
                data = bytearray(shard.read_bytes())
                data[-1] ^= 1
                shard.write_bytes(bytes(data))
            else:
                added.write_bytes(shard.read_bytes())
            if part == "model":
                message = "does not match the sha256" if damage == "flip" else \
                    f"{re.escape(str(added))} is not one of the shards its config.json records: .* move it out of"
                with pytest.raises(CheckpointError, match=message):
                    load_model(bad)
                continue
            load_model(bad)
            error, message = (CheckpointError, "does not match the sha256") if damage == "flip" else \
                (InputError, f"{re.escape(str(added))} is named like the mypt checkpoint's own files")
            with pytest.raises(error, match=message):
                run_training(RunSettings(model_name=bad.name, dataset_dir=str(tmp_path / "ds"), checkpoints_dir=tmp_path,
                                         resume=True), {"max_iters": 12, "device": "cpu"})
            assert damage == "flip" or added.read_bytes() == shard.read_bytes()

    # A sharded checkpoint of the earlier layout (each rank's file held its shards of the weights
    # and of the optimizer state together, in dcp/ itself) is read, and resumes to the bytes the
    # new layout resumes to; a stray empty dcp/model/ beside it changes nothing (config.json's
    # records say which layout a checkpoint has).
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import HuggingFaceStorageReader, HuggingFaceStorageWriter

    old, new = tmp_path / "checkpoints" / "old", tmp_path / "checkpoints" / "new"
    shutil.copytree(ckpt, new)
    shutil.copytree(ckpt, old)
    both = {}
    for part in ("model", "optim"):
        meta = HuggingFaceStorageReader(str(old / "dcp" / part)).read_metadata().state_dict_metadata
        tensors = {k: torch.empty(tuple(m.size), dtype=m.properties.dtype) for k, m in meta.items()}
        dcp.load(tensors, storage_reader=HuggingFaceStorageReader(str(old / "dcp" / part)), no_dist=True)
        both.update(tensors)
        shutil.rmtree(old / "dcp" / part)
    dcp.save(both, storage_writer=HuggingFaceStorageWriter(str(old / "dcp"), save_distributed=True), no_dist=True)
    (old / "dcp" / "model").mkdir()
    config = json.loads((old / "config.json").read_text())
    config["sha256"] = {k: v for k, v in config["sha256"].items() if not k.startswith("dcp/")}
    config["sha256"].update({f"dcp/{p.name}": sha256_file(p) for p in (old / "dcp").glob("*.safetensors")})
    (old / "config.json").write_text(json.dumps(config))
    weights = [load_model(c)[0].state_dict() for c in (old, new)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[1])
    for name in ("old", "new"):
        run_training(RunSettings(model_name=name, dataset_dir=str(tmp_path / "ds"), resume=True,
                                 checkpoints_dir=tmp_path / "checkpoints"), {"max_iters": 9, "device": "cpu"})
    weights = [load_model(c)[0].state_dict() for c in (old, new)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[1])
    # Without the optimizer's part the weights are still read; --resume names what is missing.
    shutil.copytree(ckpt, tmp_path / "checkpoints" / "no_optim")
    shutil.rmtree(tmp_path / "checkpoints" / "no_optim" / "dcp" / "optim")
    load_model(tmp_path / "checkpoints" / "no_optim")
    with pytest.raises(CheckpointError, match=r"records other files .*dcp/optim.*missing: \[dcp/optim/"):
        run_training(RunSettings(model_name="no_optim", dataset_dir=str(tmp_path / "ds"), resume=True,
                                 checkpoints_dir=tmp_path / "checkpoints"), {"max_iters": 9, "device": "cpu"})

    # Saved on 2 ranks, resumed on 1 process (saved whole), then on 2 ranks again (sharded); a
    # file the user put in dcp/ is theirs, kept through both (the shards are mypt's, by name).
    (ckpt / "dcp" / "NOTES.txt").write_text("my notes")
    one = mypt_cli(*train, "--resume", "--max_iters", "12", cwd=tmp_path).stdout
    assert "resuming f from step 8" in one and "step 12: val" in one
    assert (ckpt / "model.safetensors").is_file() and sorted(os.listdir(ckpt / "dcp")) == ["NOTES.txt"]
    # Each rank verifies the optimizer's state once at start-up (the sharded resume hashed it
    # twice); rank 0 once more as its save checks that the files it replaces are mypt's, unedited.
    counts = tmp_path / "opens"
    counts.mkdir()
    (tmp_path / "hook").mkdir()
    (tmp_path / "hook" / "sitecustomize.py").write_text(OPEN_COUNTER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "hook"), os.environ.get("PYTHONPATH", "")]),
           "COUNT_DIR": str(counts)}
    two = torchrun([*train, "--resume", "--max_iters", "16", "--parallel", "fsdp"], tmp_path, env=env).stdout
    assert "resuming f from step 12" in two and "step 16: val" in two
    assert sorted(int(f.read_text()) for f in counts.iterdir()) == [1, 2]
    assert (ckpt / "dcp/model").is_dir() and not (ckpt / "model.safetensors").exists()
    assert sorted(os.listdir(ckpt / "dcp")) == ["NOTES.txt", "model", "optim"]
    assert (ckpt / "dcp" / "NOTES.txt").read_text() == "my notes"
    assert json.loads((ckpt / "training_state.json").read_text())["step"] == 16


def test_a_sharded_checkpoints_weights_are_named_where_they_were_read(tmp_path):
    """load_model's messages about the weights name the place read_weights read them from, by
    one rule (checkpoint.weights_source): a sharded checkpoint of the earlier layout (its shards
    in dcp/ itself) with an empty dcp/model/ beside them, as a user may leave one, was read from
    dcp/ but its NaN weights were blamed on dcp/model/."""
    import warnings

    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import HuggingFaceStorageWriter

    from mypt.fsdp import MODEL

    tok, ckpt = tokenizer(), tmp_path / "old"
    fit(tiny_model(tok), loader(tok), config=config(max_iters=1, eval_interval=1), checkpoint_dir=ckpt,
        tokenizer=tok, log=quiet)
    _, weights, _ = checkpoint.read_weights(ckpt)
    name = sorted(weights)[0]
    weights[name].view(-1)[0] = float("nan")
    with warnings.catch_warnings():  # (no process group: "assuming ... a single process", as meant)
        warnings.simplefilter("ignore", UserWarning)
        dcp.save({f"{MODEL}.{k}": v for k, v in weights.items()},
                 storage_writer=HuggingFaceStorageWriter(str(ckpt / "dcp"), save_distributed=True), no_dist=True)
    (ckpt / "model.safetensors").unlink()
    (ckpt / "dcp" / "model").mkdir()
    config_json = json.loads((ckpt / "config.json").read_text())
    del config_json["sha256"]["model.safetensors"]
    config_json["sha256"].update({f"dcp/{p.name}": sha256_file(p) for p in (ckpt / "dcp").glob("*") if p.is_file()})
    (ckpt / "config.json").write_text(json.dumps(config_json))
    with pytest.raises(CheckpointError, match=rf"^{re.escape(str(ckpt / 'dcp'))}: {re.escape(name)} holds 1 NaN"):
        load_model(ckpt)
