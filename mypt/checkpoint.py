"""Checkpoints: `checkpoints/<model_name>/` holding

    model.safetensors          weights (a tied embedding stored once, as lm_head.weight)
    config.json                model and training configs, provenance (init_from_model; dataset_dir and
                               its dataset_metadata.json sha256, named by a resume on other data;
                               text_nfc: whether that text was NFC, how generate reads a prompt)
    tokenizer_state.json       the tokenizer, so generation needs nothing else
    training_state.safetensors optimizer moments and RNG states (tensors)
    training_state.json        step, sampler state (per rank under DDP), GradScaler state
                               (float16), history, optimizer hyper-parameters

A run sharded with FSDP (`--parallel fsdp`) saves, instead of model.safetensors and the
optimizer's tensors, `dcp/model/` and `dcp/optim/`: every rank's shards of each, written through
DCP as safetensors (mypt.fsdp), read back on any number of ranks, the weights whole by
read_weights (generate, eval, export-hf: they never read the optimizer's). Every rank takes part
in such a save; rank 0 writes the rest and swaps it in. (Sharded checkpoints saved before the
two were apart hold both in `dcp/` itself, and still load.)

Only safetensors and JSON are ever read: loading never unpickles anything. config.json records
the sha256 of every other file (`sha256`), checked on every load, so a flipped byte is an error
naming the file, never a silently different model. A checkpoint is built in `.NAME.partial/`
and swapped in with renames under the checkpoint's lock, so a kill at any moment leaves either
the previous checkpoint or the new one, never a mix; anything else a user keeps in the
directory (notes, samples/) is carried over by each save (io.staged_dir). Readers never rename:
one that finds a swap a kill interrupted finishes it only when no writer holds the lock, and one
that reads across a save reads again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from mypt.distributed import all_ranks, unwrap
from mypt.errors import (BusyError, CheckpointError, ConfigError, InputError, MyptError, TokenizerError, listed,
                         os_error_message, safetensors_os_error)
from mypt.io import (atomic_write_text, check_written, is_own, not_own_message, old_dir, output_target, parse_json,
                     read_json, recover_staged, sha256_file, staged_dir, umask_mode)
from mypt.lock import output_lock
from mypt.names import CONFIG_FILE, STATE_FILE, is_mypt_config, unstored

if TYPE_CHECKING:  # a type only: checkpoints save any tokenizer without the registry
    from mypt.tokenizers import Tokenizer

FORMAT_VERSION = 1
# The names of a checkpoint's files. Of a checkpoint, only those its config.json records are
# mypt's (recorded_files): a save replaces these and carries over anything else; a file of the
# user's under one of these names is refused before training (check_ours), never deleted.
DCP_DIR = "dcp"  # a sharded run's weights and optimizer tensors (mypt.fsdp)
# fsdp.save_dcp writes dcp/model/ and dcp/optim/ (fsdp.WEIGHTS, OPTIMIZER): wholly mypt's, since
# every file there is read as a shard (_dcp_part), so a file there it did not record (an rsync
# temporary) is refused, not carried into the next save. dcp/ itself, which held both before,
# only its shards by name: a user's file there (or a dcp/ folder of theirs beside a whole
# checkpoint) is theirs, carried over like any other.
DCP_FILES = (f"{DCP_DIR}/*.safetensors", f"{DCP_DIR}/model/*", f"{DCP_DIR}/optim/*")
CHECKPOINT_FILES = ("model.safetensors", CONFIG_FILE, STATE_FILE, "training_state.safetensors",
                    "training_state.json", *DCP_FILES)


def recover(path: Path) -> None:
    """Finish a save that a kill interrupted (see io.recover_staged). Only for a writer that
    holds the checkpoint's lock (mypt.lock.output_lock): readers use resolve."""
    recover_staged(Path(path), CHECKPOINT_FILES, "--model_name")


def _recover_unless_written(path: Path) -> None:
    """A reader's part of recovery: finish an interrupted save if no writer holds the lock; a
    writer holding it is mid-swap, which ends in moments."""
    for _ in range(100):
        try:
            with output_lock(path, "--model_name"):
                recover(path)
            return
        except BusyError:
            time.sleep(0.02)
            if path.is_dir():
                return


def resolve(model: str | os.PathLike, checkpoints_dir: str | os.PathLike | None = "checkpoints") -> Path:
    """A checkpoint directory given as a path or as a model name under `checkpoints_dir`
    (None: a path only, as --resume's own checkpoint is)."""
    def interrupted(p: Path) -> bool:  # a save killed (or now) between its two renames
        return not p.is_dir() and is_own(old_dir(output_target(p)))

    path = Path(model)
    under = path if checkpoints_dir is None else Path(checkpoints_dir) / model
    here, named = path.is_dir() or interrupted(path), under.is_dir() or interrupted(under)
    if here and named and not set(str(model)) & {"/", os.sep} and path.resolve() != under.resolve():
        # A bare name could mean either: taking one silently would evaluate (or export) another
        # model. A path with a directory part (./base, checkpoints/base) is that path.
        raise CheckpointError(f"--model_name {model} names two directories, {path} (a path from here) and {under} "
                              f"(a model in {checkpoints_dir}): pass --model_name {under} or --model_name ./{path}")
    if not here:
        path = under if named else path
    if interrupted(path):
        _recover_unless_written(path)
    if not path.is_dir() and str(model).startswith("hf:"):  # (a directory named hf:x is looked for first)
        raise CheckpointError(f"{model}: hf: names a Hugging Face directory for `mypt train --init_from_model` only; "
                              "generate, eval and export-hf read mypt checkpoints (train from it first)")
    for p in (path, under) if not path.is_dir() else ():  # an unmarked `.NAME.old`: interrupted() is false
        if os.path.lexists(old_dir(output_target(p))):
            raise CheckpointError(f"no checkpoint {str(model)!r} in {p}: " +
                                  not_own_message(old_dir(output_target(p)), "--model_name", aside_of=p))
    if not path.is_dir():
        looked = f"{path}" if path == under else f"{under} (--checkpoints_dir {checkpoints_dir}) and {path}"
        raise CheckpointError(f"no checkpoint {str(model)!r} (looked in {looked}); train one with "
                              f"`mypt train --model_name {Path(model).name} ...`, or pass the --checkpoints_dir "
                              "that holds it")
    return path


def save(path: Path, model, tokenizer: Tokenizer, config_extra: dict, optimizer=None,
         state: dict | None = None, rng_ranks: list[dict] | None = None, group=None) -> None:
    """`rng_ranks`: under DDP, every rank's rng_state() (gathered by the caller), so that each
    rank resumes its own random streams (dropout masks differ between ranks). A sharded model
    (FSDP) is saved by every rank together (`group`: the CPU group that tells them where)."""
    from mypt.fsdp import is_sharded

    if is_sharded(unwrap(model)):
        _save_sharded(path, model, tokenizer, config_extra, optimizer, state, rng_ranks, group)
        return
    # Built in .NAME.partial and swapped in by io.staged_dir (the previous checkpoint is moved
    # to .NAME.old until the new one is in place: see recover); only a directory that holds a
    # checkpoint (config.json) or nothing is ever replaced. staged_dir's lock keeps readers'
    # recovery out of the swap (the training command holds it already: it is re-entrant).
    with contextlib.ExitStack() as stack:
        staging = _start_save(Path(path), stack)
        _write(staging, model, tokenizer, config_extra, optimizer, state, rng_ranks)


def _start_save(path: Path, stack: contextlib.ExitStack) -> Path:
    """The staging directory of a save, entered on `stack` (rank 0's, in a sharded save). What
    is in the way is refused here, before anything is written, as at the start of training;
    met mid-run (a file that appeared since), the error says the checkpoint in place is whole."""
    try:  # (what config.json records, staged_dir checks: before the work and after)
        return stack.enter_context(staged_dir(path, marker=CONFIG_FILE, owned=CHECKPOINT_FILES, flag="--model_name",
                                              written=recorded_files, kind="mypt checkpoint"))
    except MyptError as e:
        if not holds_model(path):
            raise
        raise type(e)(f"{e} (this checkpoint not saved: {path} holds the last one saved, whole; continue from it "
                      "with --resume)") from None


def recorded_files(path: Path) -> list[str] | None:
    """What checkpoint `path` holds by its config.json (io.check_written): the files whose sha256
    it records, dcp/'s shards included. Anything else named like a checkpoint's files is the
    user's. None for a checkpoint saved before the sums (its files' names decide). A config.json
    mypt did not write (a Hugging Face model's, a user's) is refused: a save replaces config.json
    and the weights. One reading of config.json answers both (check_ours and every save ask)."""
    config = _read_json_object(Path(path) / CONFIG_FILE)
    if not is_mypt_config(config):
        raise ConfigError(f"it holds a {CONFIG_FILE} mypt did not write (no format_version: a Hugging Face model's, "
                          "or yours), so it is not a mypt checkpoint and is never replaced, with --overwrite or "
                          "without")
    sums = config.get("sha256")
    if sums is None:
        return None
    if not isinstance(sums, dict):
        raise CheckpointError(f"its {CONFIG_FILE}'s sha256 is not a map of its files")
    return [name for name in sums if name != MODEL_SUM]


def holds_mypt_config(path: Path) -> bool:
    """Whether directory `path` holds a config.json that mypt wrote (a JSON object with its
    format_version), not a Hugging Face model's or a user's."""
    try:
        data = json.loads((Path(path) / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return is_mypt_config(data)


def check_ours(path: Path) -> None:
    """Refuse a directory whose config.json mypt did not write (no format_version: a Hugging
    Face model, a user's file). A save replaces a checkpoint's config.json and weights, so only
    mypt's own checkpoint, or a directory without config.json (io.check_replaceable's rule),
    is ever replaced, --overwrite or not; and of it only the files its config.json records: a
    file of the user's named like a checkpoint's (dcp/mine.safetensors) is refused, naming it,
    and so is a link where a save makes a folder (_refuse_linked_folders)."""
    check_written(path, CHECKPOINT_FILES, recorded_files, CONFIG_FILE, "--model_name", "mypt checkpoint")
    _refuse_linked_folders(Path(path))


# The folders a save makes: dcp/ and its parts (DCP_FILES' folders).
DCP_FOLDERS = (DCP_DIR, f"{DCP_DIR}/model", f"{DCP_DIR}/optim")


def _refuse_linked_folders(path: Path) -> None:
    """Refuse a link of the user's where a save makes a folder (dcp/, dcp/model/, dcp/optim/).
    Whatever this run's kind: a sharded run (--parallel fsdp) resumes a whole checkpoint and the
    reverse, so any save of the checkpoint may make dcp/; a folder of the user's there is merged
    with mypt's, a link cannot be, and io.check_movable leaves links to their writer (--append_to
    follows a dataset's), so a sharded run met it at its first save, after the work."""
    for rel in DCP_FOLDERS:
        if os.path.islink(path / rel):
            raise InputError(f"{path / rel} is a link, where a save of the checkpoint makes a folder (a sharded run's "
                             f"shards, --parallel fsdp): mypt did not make it, and a save would replace it: refused, "
                             f"nothing changed; move it out of {path} (or rename it) and run again")


def _save_sharded(path: Path, model, tokenizer: Tokenizer, config_extra: dict, optimizer, state: dict | None,
                  rng_ranks: list[dict] | None, group) -> None:
    """Rank 0 opens the staging directory and tells the others where it is; every rank writes
    its shards into dcp/ there; then rank 0 writes the other files and swaps it in, as save."""
    import torch.distributed as tdist

    from mypt.fsdp import save_dcp, shard_files_missing

    main = tdist.get_rank() == 0
    with contextlib.ExitStack() as stack:
        staging = None
        if main:
            try:
                staging = _start_save(Path(path), stack)
            finally:  # (also when it failed: the other ranks must not wait for ever)
                all_ranks(None if staging is None else str(staging), group)
        else:
            staging = all_ranks(None, group)[0]
            if staging is None:
                raise CheckpointError(f"{path}: rank 0 could not start the checkpoint (its error says why)")
        param_groups = save_dcp(Path(staging) / DCP_DIR, unwrap(model), optimizer)
        if main and shard_files_missing(Path(staging) / DCP_DIR, tdist.get_world_size()):
            raise CheckpointError(f"{path}: the other ranks' shards did not arrive in it: with --parallel fsdp on "
                                  "several nodes, --checkpoints_dir must be one filesystem every node shares")
        if main:
            _write(Path(staging), model, tokenizer, config_extra, optimizer, state, rng_ranks, param_groups)


def rng_state(device: torch.device) -> dict:
    """The random states a training step on `device` draws from (dropout): {"torch": the CPU's,
    "cuda": that GPU's own, on a GPU}. The device's, not the current one's: a model on cuda:1
    draws from cuda:1's generator whichever GPU is current."""
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    """Put back rng_state(device)'s states (a GPU's onto `device` only when it is a GPU: a run
    on the CPU draws from none)."""
    torch.set_rng_state(state["torch"])
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


def _save_file(tensors: dict, path: Path, **kwargs) -> None:
    """safetensors' save_file (the file's mode as any new file's, see umask_mode); its I/O
    failures (a full disk) become the OSError they are."""
    try:
        save_file(tensors, path, **kwargs)
        umask_mode(path)
    except SafetensorError as e:
        if (error := safetensors_os_error(e, path)) is None:
            raise
        raise error from None


def _write(staging: Path, model, tokenizer: Tokenizer, config_extra: dict, optimizer, state: dict | None,
           rng_ranks: list[dict] | None = None, sharded_groups: list[dict] | None = None) -> None:
    """`sharded_groups`: the optimizer's param_groups of a sharded save, whose tensors are in dcp/."""
    raw = unwrap(model)
    if sharded_groups is None:
        weights = {k: v.detach().contiguous().cpu() for k, v in raw.state_dict().items()
                   if k not in unstored(raw.config)}
        # One metadata key only: safetensors writes its metadata map in hash order, and a fixed
        # file (same weights, same bytes) is worth more than a version tag (config.json has one).
        _save_file(weights, staging / "model.safetensors", metadata={"format": "pt"})
    tokenizer.save(staging)
    if optimizer is not None and state is not None:
        tensors, opt_json = _flatten_optimizer(optimizer.state_dict()) if sharded_groups is None \
            else ({}, {"param_groups": sharded_groups, DCP_DIR: True})
        tensors.update({f"rng/{kind}": value for kind, value in rng_state(_device(raw)).items()})
        for rank, states in enumerate(rng_ranks or []):  # rng/torch/1: rank 1's
            tensors.update({f"rng/{kind}/{rank}": value for kind, value in states.items()})
        _save_file(tensors, staging / "training_state.safetensors")
        atomic_write_text(staging / "training_state.json",
                          json.dumps({**state, "optimizer": opt_json}, indent=1) + "\n")
    # Last, with the checksum of every file above.
    files = [f for f in CHECKPOINT_FILES if f != CONFIG_FILE and (staging / f).is_file()] + _dcp_files(staging)
    sums = {f: sha256_file(staging / f) for f in files}
    settings = raw.config.to_dict()
    sums[MODEL_SUM] = model_sum(settings)
    config = {"format_version": FORMAT_VERSION, "model": settings, **config_extra, "sha256": sums}
    atomic_write_text(staging / CONFIG_FILE, json.dumps(config, indent=2) + "\n")


def _dcp_files(path: Path, under: Path | None = None) -> list[str]:
    """The files of a sharded save under `under` (default: all of dcp/), named as config.json's
    sha256 names them (dcp/model/NAME)."""
    under = path / DCP_DIR if under is None else under
    return sorted(p.relative_to(path).as_posix() for p in under.rglob("*") if p.is_file()) if under.is_dir() else []


def _dcp_where(path: Path, config: dict, part: str) -> Path:
    """The directory of dcp/ that holds `part`, by config.json's records (dcp/ itself in a
    checkpoint saved before the parts were apart), unchecked."""
    split = any(k.startswith(f"{DCP_DIR}/{part}/") for k in config.get("sha256", {}))
    return path / DCP_DIR / part if split else path / DCP_DIR


def _dcp_part(path: Path, config: dict, part: str, hashed: bool = True) -> Path:
    """The directory of dcp/ that holds `part` (fsdp.WEIGHTS or fsdp.OPTIMIZER; dcp/ itself in a
    checkpoint saved before they were apart: config.json's sha256 says which), after checking
    that it holds exactly the files config.json records there, each with its sha256: every file
    there is read as a shard, so one added or left out would change the weights silently. Only
    that part is read and hashed (`hashed` False: its sha256 checked by the caller, a sharded
    resume's ranks a share each: check_shards)."""
    where = _dcp_where(path, config, part)
    prefix = where.relative_to(path).as_posix() + "/"
    recorded = sorted(k for k in config.get("sha256", {}) if k.startswith(prefix))
    found = _dcp_files(path, where)
    extra, missing = sorted(set(found) - set(recorded)), sorted(set(recorded) - set(found))
    if recorded and extra and not missing:  # (one the user put there since the save, e.g. an rsync's temporary)
        raise CheckpointError(f"{listed([str(path / rel) for rel in extra], 1)} is not one of the shards its "
                              f"{CONFIG_FILE} records: mypt did not write it, and every file in {where} is read as a "
                              f"shard; move it out of {where} and run again")
    if not recorded or missing:
        what = (f"records no shards in {DCP_DIR}/" if not recorded else
                f"records other files in {where} (not recorded: [{listed(extra, 3)}], missing: "
                f"[{listed(missing, 3)}])")
        raise CheckpointError(f"{path}: its {CONFIG_FILE} {what}: the checkpoint was changed or damaged after it "
                              "was saved; use another checkpoint (or copy it again), or train again")
    if hashed:
        verify(path, config, tuple(found))
    return where


def check_shards(path: Path, config: dict, rank: int, ranks: int) -> None:
    """A sharded resume's check of a sharded checkpoint's files, before any is read: both parts
    of dcp/ hold the files `config` (its config.json) records (_dcp_part), and of their sha256
    rank `rank` of `ranks` checks every ranks-th file from its rank-th, so that the ranks hash
    each file once between them, where every rank hashing every file reads 3 times the weights'
    bytes under AdamW (84 GB a rank at each resume of a 7B model). A rank that finds one changed
    raises alone: the caller tells the others (distributed.built_on_every_rank). Nothing to check
    in a checkpoint whose weights are whole (model.safetensors)."""
    from mypt.fsdp import OPTIMIZER, WEIGHTS

    path = Path(path)
    if weights_source(path, config) == path / "model.safetensors":
        return
    # (A checkpoint saved before the parts were apart has both in dcp/ itself: its files once.)
    parts = {_dcp_part(path, config, part, hashed=False) for part in (WEIGHTS, OPTIMIZER)}
    files = sorted(f for where in parts for f in _dcp_files(path, where))
    verify(path, config, tuple(files[rank::ranks]))


# config.json's own model settings, summed as written: the same weights under another n_head
# (or gelu, or rope_theta) load without an error and compute another model.
MODEL_SUM = "config.json:model"


def model_sum(model: dict) -> str:
    return hashlib.sha256(json.dumps(model, sort_keys=True).encode()).hexdigest()


def check_model_settings(path: Path, config: dict) -> None:
    """config.json's model settings as saved (load_model checks it last, after the checks that
    name what an edit broke: a type, a shape): an edit the weights' shapes cannot show (n_head,
    gelu, rope_theta) would compute another model without a word. A checkpoint saved before
    the settings' sum has none: nothing to check."""
    sums = config.get("sha256")
    if isinstance(sums, dict) and sums.get(MODEL_SUM) is not None and model_sum(config.get("model")) != sums[MODEL_SUM]:
        raise CheckpointError(f"{Path(path) / CONFIG_FILE}: its model settings were edited after the save (they no "
                              "longer match the sum it records): the weights would compute another model; put the "
                              "settings back (or copy the checkpoint again), or train again")


def verify(path: Path, config: dict, names: tuple[str, ...]) -> None:
    """Check `names` of checkpoint `path` against the sha256 its config.json records (a
    checkpoint written before checksums has none: nothing to check)."""
    for name in names:
        want = _recorded_sum(config, name)
        if want is not None and (path / name).is_file() and sha256_file(path / name) != want:
            raise _changed(path / name)


def verify_bytes(path: Path, config: dict, name: str, raw: bytes) -> None:
    """verify of file `name` of checkpoint `path` from its bytes `raw`, read by the caller: what is
    checked and what is then parsed are one reading."""
    want = _recorded_sum(config, name)
    if want is not None and hashlib.sha256(raw).hexdigest() != want:
        raise _changed(path / name)


def _recorded_sum(config: dict, name: str) -> str | None:
    sums = config.get("sha256")
    return sums.get(name) if isinstance(sums, dict) else None


def _changed(file: Path) -> CheckpointError:
    return CheckpointError(f"{file} does not match the sha256 its {CONFIG_FILE} records: the file was changed or "
                           "damaged after it was saved; use another checkpoint (or copy it again), or train again")


def _flatten_optimizer(sd: dict) -> tuple[dict, dict]:
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for key, value in st.items():
            if torch.is_tensor(value):
                tensors[f"opt/{pid}/{key}"] = value.detach().contiguous().cpu()
            else:
                scalars[f"{pid}/{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _load_safetensors(path: Path) -> dict:
    with _reading(path):
        return load_file(path)


@contextlib.contextmanager
def _reading(path: Path):
    """Reading safetensors file `path`: its failures as CheckpointErrors that name it."""
    try:
        yield
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing: the checkpoint {path.parent} is incomplete (its {CONFIG_FILE} "
                              "records the file); copy it whole again, or train again") from None
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {os_error_message(e)}") from None
    except SafetensorError as e:
        raise CheckpointError(f"{path} is not a safetensors file ({e}); mypt never unpickles "
                              "checkpoints (a pickle can run code): refused") from None
    except RuntimeError as e:  # a file gone between safetensors' own check and its open (a save's swap)
        raise CheckpointError(f"cannot read {path}: {e}") from None


def read_config(path: Path) -> dict:
    """config.json of a checkpoint: {"format_version", "model": {...}, "training": {...}, ...}."""
    path = Path(path) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{path.parent} is not a mypt checkpoint (no config.json)")
    config = _read_json_object(path)
    if "format_version" not in config:
        raise CheckpointError(f"{path.parent} is not a mypt checkpoint: its config.json has no format_version (a "
                              "Hugging Face model directory, such as one export-hf wrote, starts a training run as "
                              f"`mypt train --init_from_model hf:{path.parent}`)")
    if config.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: format_version {config.get('format_version')!r}, this mypt reads "
                              f"{FORMAT_VERSION}")
    for key in ("model", "training"):
        if not isinstance(config.get(key, {}), dict):
            raise CheckpointError(f"{path}: {key!r} must be an object of settings, got {config[key]!r}; "
                                  "the checkpoint was edited or damaged: save it again by training")
    return config


def _read_json_object(path: Path, raw: bytes | None = None) -> dict:
    """read_json of a checkpoint's file, or of its bytes `raw` where the caller has read them."""
    hint = "the checkpoint was edited or damaged"
    return read_json(path, CheckpointError, hint) if raw is None else parse_json(raw, path, CheckpointError, hint)


def read_weights(path: Path, shapes_only: bool = False) -> tuple[dict, dict, Tokenizer]:
    """(config.json, weights, tokenizer) of a checkpoint directory, checked against the recorded
    sha256; the model is built by mypt.model.load_model, so this module needs no model code
    (imports flow one way). A save that swaps the directory while it is read (a run saving as
    generate starts) makes it read the new checkpoint again: all three come from one save.
    `shapes_only`: a sharded checkpoint's weights come as tensors on the meta device (names,
    shapes, dtypes), their files neither read nor hashed: for a sharded resume, whose ranks hash
    them (check_shards) and read each its shards (fsdp.fill_shards)."""
    from mypt.tokenizers import Tokenizer

    path = Path(path)
    for attempt in range(5):
        before = _identity(path)
        try:
            config, weights = _read_weights(path, shapes_only)
            tokenizer = Tokenizer.load(path)
        except (CheckpointError, TokenizerError, OSError):
            if attempt < 4 and _identity(path) != before:
                continue
            raise
        if _identity(path) == before:
            return config, weights, tokenizer
    raise CheckpointError(f"{path} was replaced by a save five times while it was read: try again")


def _identity(path: Path) -> int | None:
    """The directory's inode: each save puts a new directory in place."""
    for _ in range(50):
        try:
            return os.stat(path).st_ino
        except FileNotFoundError:  # mid-swap: the new directory is renamed in next
            time.sleep(0.01)
    return None


def weights_source(path: Path, config: dict) -> Path:
    """Where a checkpoint's weights are, the one rule that read_weights reads them by and that
    messages about them name them by: model.safetensors, or a sharded (FSDP) save's shards,
    dcp/model/ (dcp/ itself in a checkpoint saved before the parts were apart: `config`, its
    config.json, records which). Only looked up: read_weights checks them."""
    path = Path(path)
    if (path / "model.safetensors").is_file() or not _holds_shards(path):
        return path / "model.safetensors"
    from mypt.fsdp import WEIGHTS

    return _dcp_where(path, config, WEIGHTS)


def _read_weights(path: Path, shapes_only: bool = False) -> tuple[dict, dict]:
    if not holds_model(path):
        pickles = [p.name for p in path.glob("*") if p.suffix in (".pt", ".pth", ".pkl", ".bin", ".ckpt")]
        hint = f" (found {pickles}: pickles are refused, they can run code)" if pickles else ""
        raise CheckpointError(f"{path} holds no model.safetensors{hint}")
    config = read_config(path)
    if weights_source(path, config) != path / "model.safetensors":
        return config, _read_sharded_weights(path, config, shapes_only)
    verify(path, config, ("model.safetensors", STATE_FILE))
    return config, _load_safetensors(path / "model.safetensors")


def _read_sharded_weights(path: Path, config: dict, shapes_only: bool = False) -> dict:
    """A sharded (FSDP) checkpoint's weights, whole (`shapes_only`: on the meta device, unhashed)."""
    from torch.distributed.checkpoint.api import CheckpointException

    from mypt.fsdp import WEIGHTS, read_full, read_shapes

    verify(path, config, (STATE_FILE,))
    where = _dcp_part(path, config, WEIGHTS, hashed=not shapes_only)
    try:
        return read_shapes(where) if shapes_only else read_full(where)
    except (SafetensorError, CheckpointException, RuntimeError, ValueError) as e:
        raise CheckpointError(f"{where}: its shards cannot be read as one model ({str(e).splitlines()[0]}); "
                              "the checkpoint was changed or damaged: use another one, or train again") from None


def holds_model(path: Path) -> bool:
    """Whether checkpoint directory `path` holds trained weights (whole or sharded)."""
    return (Path(path) / "model.safetensors").is_file() or _holds_shards(Path(path))


def _holds_shards(path: Path) -> bool:
    """Whether `path` holds a sharded save's weights (not only a user's dcp/ folder)."""
    return any(any(path.glob(pattern)) for pattern in DCP_FILES)


def read_training_state(path: Path, config: dict | None = None, tensors: bool = True) -> dict:
    """training_state.json of a checkpoint (step, sampler, history, the optimizer's JSON part,
    `autocast`: the dtype the run trained in, see _trained_in), checked against its sha256
    (with `tensors`, training_state.safetensors too: the optimizer's state, twice the weights
    under AdamW, for a caller that reads only the step need not be hashed). `config`: its
    read_config, where the caller has it."""
    path = Path(path)
    if not (path / "training_state.json").is_file():
        raise CheckpointError(f"{path} has no training state to resume from (training_state.json); "
                              "start a new run, or use --init_from_model to start from its weights")
    config = read_config(path) if config is None else config
    raw = (path / "training_state.json").read_bytes()  # hashed and parsed: one reading
    verify_bytes(path, config, "training_state.json", raw)
    if tensors:
        verify(path, config, ("training_state.safetensors",))
    state = _read_json_object(path / "training_state.json", raw)
    if not isinstance(state.get("step"), int) or not isinstance(state.get("optimizer"), dict):
        raise CheckpointError(f"{path / 'training_state.json'}: no integer 'step' and 'optimizer' object; the "
                              "checkpoint was edited or damaged: start a new run, or --init_from_model to keep its "
                              "weights")
    if "autocast" not in state and (trained := _trained_in(path, state, config)) is not None:
        state["autocast"] = trained
    return state


def _trained_in(path: Path, state: dict, config: dict) -> str | None:
    """The autocast dtype (as --dtype spells it) that the run of an older mypt's checkpoint, whose
    training state does not record it, trained in, where its files tell; None where they do not.
    A GradScaler's state is saved under float16 only. Under --dtype float32: float32. Under auto
    on a CPU (or MPS): float32, auto's pick there then; such a run saved no GPU random state
    (rng/cuda). Not known: auto on a GPU (bfloat16 or float16 by its generation, and by older
    rules before that), a named bfloat16 (float32 on MPS)."""
    dtype = config.get("training", {}).get("dtype", "auto")  # (auto: every mypt's default)
    if "scaler" in state:
        return "float16"
    if dtype == "float32":
        return "float32"
    if dtype == "auto":
        with _reading(path / "training_state.safetensors"), \
                safe_open(path / "training_state.safetensors", "pt") as f:  # (its header only)
            on_gpu = any(key.startswith("rng/cuda") for key in f.keys())
        return None if on_gpu else "float32"
    return None


def load_training_state(path: Path, optimizer, rank: int = 0, model=None, state: dict | None = None,
                        config: dict | None = None, shards_checked: bool = False) -> dict:
    """Restore optimizer and RNG states (under DDP, `rank`'s own; a rank the checkpoint does not
    record keeps its own, see _rank_rng); returns training_state.json (step, sampler, history).
    `model`: the one the optimizer trains, needed to restore a sharded checkpoint's state (one
    saved under FSDP) or any checkpoint's into a sharded model; its device's GPU stream is the
    one restored (without it, the current GPU's). `state` and `config`: this checkpoint's
    read_training_state and read_config, where the caller has them: each file is then read and
    hashed once (the optimizer's moments are twice the model's size under AdamW). `shards_checked`:
    the optimizer's shards were hashed by check_shards (a sharded resume's ranks, a share each)."""
    path = Path(path)
    state = dict(read_training_state(path, config) if state is None else state)
    tensors = _load_safetensors(path / "training_state.safetensors")
    opt = state.pop("optimizer")
    _load_optimizer(path, config, opt, tensors, optimizer, model, shards_checked)
    mine = _rank_rng(tensors, rank)
    if mine is not None:
        device = _device(unwrap(model)) if model is not None else \
            torch.device("cuda" if torch.cuda.is_available() else "cpu")
        set_rng_state(mine, device)
    return state


def _rank_rng(tensors: dict, rank: int) -> dict | None:
    """`rank`'s saved random states: rng/KIND/RANK, or for rank 0 rng/KIND (the saving process's
    own, rank 0's: all a one-process run records). None for a rank the saving run did not have:
    fit starts it a stream of its own, as it does its windows (rank 0's would give it rank 0's
    dropout masks)."""
    def saved(kind: str):
        return tensors.get(f"rng/{kind}/{rank}", tensors.get(f"rng/{kind}") if rank == 0 else None)

    if saved("torch") is None:
        return None
    return {kind: saved(kind) for kind in ("torch", "cuda") if saved(kind) is not None}


def _device(model: torch.nn.Module) -> torch.device:
    """The device a model trains on (its parameters': a sharded one's shards are there too)."""
    return next(model.parameters()).device


def _load_optimizer(path: Path, config: dict | None, opt: dict, tensors: dict, optimizer, model,
                    shards_checked: bool = False) -> None:
    """The optimizer's state from dcp/ (a sharded save) or from training_state.safetensors.
    `config`: the checkpoint's read_config, read here where not given."""
    from torch.distributed.checkpoint.api import CheckpointException

    from mypt.fsdp import OPTIMIZER, is_sharded, load_full_optimizer, load_optimizer

    if opt.get(DCP_DIR):
        where = _dcp_part(path, read_config(path) if config is None else config, OPTIMIZER, hashed=not shards_checked)
        try:
            load_optimizer(where, unwrap(model), optimizer, opt["param_groups"])
        except (SafetensorError, CheckpointException, RuntimeError, KeyError) as e:
            raise CheckpointError(f"{where}: the optimizer's shards cannot be read into this run's optimizer "
                                  f"({str(e).splitlines()[0]}); the checkpoint was changed or damaged: use another "
                                  "one, or start a new run from its weights with --init_from_model") from None
        return
    per_param: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("opt/"):
            _, pid, name = key.split("/", 2)
            per_param.setdefault(int(pid), {})[name] = value
    for key, value in opt["scalars"].items():
        pid, name = key.split("/", 1)
        per_param.setdefault(int(pid), {})[name] = value
    if model is not None and is_sharded(unwrap(model)):
        load_full_optimizer(unwrap(model), optimizer, {"state": per_param, "param_groups": opt["param_groups"]})
    else:
        optimizer.load_state_dict({"state": per_param, "param_groups": opt["param_groups"]})
