"""FSDP2 under torchrun (`mypt train --parallel fsdp`): the model sharded per transformer block
and at the root, and its weights and optimizer state saved and read as sharded tensors through
torch.distributed.checkpoint (DCP).

The DCP files are safetensors (DCP's Hugging Face storage: one file per rank, each tensor's
offsets in its header), never pickles, so a checkpoint is read without unpickling anything, and
a run saved on N ranks is read back on M ranks, or whole by one process (read_full). The
weights and the optimizer's tensors go to two directories (WEIGHTS, OPTIMIZER), so generate,
eval and export-hf read and hash only the weights, a third of an AdamW run's bytes."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

from mypt.names import unstored
from mypt.errors import CheckpointError, named_os_error

MODEL = "model"  # the weights' key in the state dict DCP saves: their keys in its files start "model."
WEIGHTS, OPTIMIZER = "model", "optim"  # the directories save_dcp writes the two into


def is_sharded(model: torch.nn.Module) -> bool:
    """Whether `model`'s parameters are FSDP2 shards (DTensors)."""
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in model.parameters())


def full(t: torch.Tensor) -> torch.Tensor:
    """`t` whole on every rank: a DTensor gathered (a collective every rank must call), a
    plain tensor as it is."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def supported() -> bool:
    """Whether this torch has what --parallel fsdp uses: FSDP2's fully_shard and DCP's
    safetensors storage with every rank writing its shards (torch 2.13 tested)."""
    try:
        from torch.distributed.checkpoint import HuggingFaceStorageWriter
        from torch.distributed.fsdp import fully_shard  # noqa: F401
    except ImportError:
        return False
    import inspect

    return "save_distributed" in inspect.signature(HuggingFaceStorageWriter).parameters


def shard_model(model: torch.nn.Module, amp: torch.dtype | None, compiled: bool,
                device: torch.device | None = None) -> torch.nn.Module:
    """Shard `model` (a GPT) in place over every rank: each transformer block, then the root
    (embeddings, final norm, head), so that one block's parameters are gathered at a time.
    Parameters stay float32 in the shards (the optimizer's master copy); under autocast they are
    gathered in its dtype (half the bytes moved) and gradients reduced in float32. `compiled`:
    each block is compiled in place before it is sharded (nn.Module.compile keeps the state_dict
    keys, which a compiled wrapper would prefix with `_orig_mod.`). `device`: where a model
    built on the meta device is to hold its shards (fill_shards), else its parameters' device."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    device = next(model.parameters()).device if device is None else device
    world = torch.distributed.get_world_size()
    mesh = init_device_mesh(device.type, (world,))
    policy = MixedPrecisionPolicy(param_dtype=amp, reduce_dtype=torch.float32 if amp is not None else None)
    for block in model.transformer.h:
        if compiled:
            block.compile()
        fully_shard(block, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)
    return model


def _state_dicts(model: torch.nn.Module, optimizer) -> tuple[dict, dict]:
    """(model state dict, optimizer state dict) keyed by parameter names, sharded as the model
    is (whole for a model that is not sharded)."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    return stored_weights(model), get_optimizer_state_dict(model, optimizer)


def stored_weights(model: torch.nn.Module) -> dict:
    """The model's state dict as a checkpoint stores it (sharded as the model is): without the
    names it does not store (unstored: a tied head)."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return {k: v for k, v in get_model_state_dict(model).items() if k not in unstored(model.config)}


def save_dcp(directory: Path, model: torch.nn.Module, optimizer) -> list[dict]:
    """Every rank writes its shards of the weights into `directory`/WEIGHTS and of the optimizer's
    tensors into `directory`/OPTIMIZER (collectives: every rank calls it; the directory is
    shared). Returns the optimizer's param_groups (hyper-parameters, parameter names), which hold
    no tensors: the caller keeps them in JSON."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import HuggingFaceStorageWriter
    from torch.distributed.checkpoint.api import CheckpointException

    weights, optim = _state_dicts(model, optimizer)
    for part, state in ((WEIGHTS, {MODEL: weights}), (OPTIMIZER, {"optim": {"state": optim["state"]}})):
        try:
            dcp.save(state, storage_writer=HuggingFaceStorageWriter(str(Path(directory) / part), save_distributed=True))
        except CheckpointException as e:
            # A rank's write that failed (a full disk) comes back to every rank wrapped, with each
            # rank's traceback: 237 lines. As the OSError it is, training stops saying what is left.
            failed = next((exc for exc, _ in e.failures.values() if isinstance(exc, OSError)), None)
            if failed is None:
                raise
            raise named_os_error(failed, Path(directory) / part) from None  # (a write's, a full disk, names no file)
    # dcp.save returns on rank 0 after every rank's write is done (it gathers their results).
    if not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0:
        for path in sorted(Path(directory).glob("*/*.safetensors")):
            _sort_metadata(path)
    return optim["param_groups"]


def _sort_metadata(path: Path) -> None:
    """The file's header with its metadata map in key order, in place (the same length):
    safetensors writes that map in hash order, so two saves of one state would differ in bytes,
    in sha256 and in DVC's hashes, though equal in every value."""
    with open(path, "r+b") as f:
        size = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(size))
        header["__metadata__"] = dict(sorted(header.get("__metadata__", {}).items()))
        text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
        # Never longer: the same keys and values, reordered, serialized as safetensors does (byte-equal
        # on real files); were it ever, the file is left valid, only unsorted. (Padded with spaces.)
        if len(text) <= size:
            f.seek(8)
            f.write(text.ljust(size))


def _metadata(directory: Path) -> dict:
    """{key: DCP's metadata (size, dtype, the chunks saved)} of the files in `directory`, each
    tensor checked to be covered whole by its chunks: a rank's file missing (a run on several
    nodes whose checkpoints_dir is not one shared filesystem) would otherwise leave part of a
    tensor unread, silently."""
    from torch.distributed.checkpoint import HuggingFaceStorageReader

    tensors = HuggingFaceStorageReader(str(directory)).read_metadata().state_dict_metadata
    for key, meta in tensors.items():
        saved = sum(torch.Size(chunk.sizes).numel() for chunk in meta.chunks)
        if saved != torch.Size(meta.size).numel():
            raise CheckpointError(f"{directory}: {key} is saved in part ({saved} of {torch.Size(meta.size).numel()} "
                                  "values): a rank's shards are missing; with --parallel fsdp on several nodes, "
                                  "--checkpoints_dir must be one filesystem every node shares")
    return tensors


def shard_files_missing(directory: Path, ranks: int) -> bool:
    """Whether a part of `directory` (a save_dcp) lacks a rank's file after a save by `ranks`
    ranks (one file each)."""
    return any(len(list((Path(directory) / part).glob("*.safetensors"))) < ranks for part in (WEIGHTS, OPTIMIZER))


def load_optimizer(directory: Path, model: torch.nn.Module, optimizer, param_groups: list[dict]) -> None:
    """Restore the optimizer's state saved by save_dcp (`directory`: its OPTIMIZER directory)
    into `optimizer` over `model`, sharded or not, on any number of ranks: each reads the parts
    of the files its shards need."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import HuggingFaceStorageReader
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict, set_optimizer_state_dict

    _metadata(directory)
    optim = get_optimizer_state_dict(model, optimizer)  # a fresh optimizer's state: the shapes to fill
    with warnings.catch_warnings():  # (no process group: "assuming ... a single process", as meant)
        warnings.simplefilter("ignore", UserWarning)
        dcp.load({"optim": {"state": optim["state"]}}, storage_reader=HuggingFaceStorageReader(str(directory)),
                 no_dist=not is_sharded(model))
    set_optimizer_state_dict(model, optimizer, {"state": optim["state"], "param_groups": param_groups})


def load_full_optimizer(model: torch.nn.Module, optimizer, state: dict) -> None:
    """Restore a whole optimizer state (torch's own form, parameters numbered in the optimizer's
    order: a checkpoint of a DDP or one-process run) into the optimizer of a sharded model:
    each rank keeps its shard of every tensor."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    names = {p: n for n, p in model.named_parameters()}
    order = [names[p] for group in optimizer.param_groups for p in group["params"]]
    groups, start = [], 0
    for saved in state["param_groups"]:
        groups.append({**saved, "params": order[start:start + len(saved["params"])]})
        start += len(saved["params"])
    whole = {"state": {order[int(pid)]: values for pid, values in state["state"].items()}, "param_groups": groups}
    set_optimizer_state_dict(model, optimizer, whole, options=StateDictOptions(full_state_dict=True))


def _slots(directory: Path, device: str) -> dict[str, torch.Tensor]:
    """{key: an empty tensor of its shape and dtype on `device`} of the weights in `directory`
    (save_dcp's WEIGHTS directory), keyed as DCP saved them (MODEL + "." + name)."""
    return {k: torch.empty(tuple(m.size), dtype=m.properties.dtype, device=device)
            for k, m in _metadata(directory).items() if k.startswith(MODEL + ".")}


def read_full(directory: Path) -> dict[str, torch.Tensor]:
    """The weights of a DCP checkpoint (`directory`: save_dcp's WEIGHTS directory) whole, in
    one process (no process group): as model.safetensors holds them (names without the prefix,
    the tied embedding once)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import HuggingFaceStorageReader

    weights = _slots(directory, "cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        dcp.load(weights, storage_reader=HuggingFaceStorageReader(str(directory)), no_dist=True)
    return {k.removeprefix(MODEL + "."): v for k, v in weights.items()}


def read_shapes(directory: Path) -> dict[str, torch.Tensor]:
    """read_full's names, shapes and dtypes, as tensors on the meta device: only the files'
    headers are read (fill_shards reads the values, each rank its shards)."""
    return {k.removeprefix(MODEL + "."): v for k, v in _slots(directory, "meta").items()}


def fill_shards(directory: Path, model: torch.nn.Module, device: torch.device) -> None:
    """Give `model`, built on the meta device and sharded by shard_model, the weights of a
    save_dcp (`directory`: its WEIGHTS directory): each rank allocates its shards on `device` and
    reads only them, not the whole weights to shard (N times the bytes over N ranks); a
    collective, every rank calls it. Every tensor of the state dict is read, or DCP refuses the
    name the files lack: GPT holds no buffers (its rotary tables are computed in each forward),
    and its tied embedding is lm_head.weight."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import HuggingFaceStorageReader
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    model.to_empty(device=device)
    weights = stored_weights(model)
    dcp.load({MODEL: weights}, storage_reader=HuggingFaceStorageReader(str(directory)))
    set_model_state_dict(model, weights, options=StateDictOptions(strict=False))
