"""The train command: `mypt train` and the train stage build a run from flags here (config
file or preset, tokenizer, model, loaders, resume), then call mypt.train.fit."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from mypt import checkpoint
from mypt.data import GPTDataLoader, LoaderConfig, MixtureLoader
from mypt.dataset_spec import DatasetSpec, parse_dataset_specs
from mypt.config import GPTConfig, RunSettings, TrainConfig, load_config_file
from mypt.device import resolve_device
from mypt.distributed import (Dist, all_ranks, before_training, built_on_every_rank, cpu_group, has_start_store,
                              restart_warning, setup_distributed, tell_ranks_start_failed)
from mypt.errors import CheckpointError, ConfigError, DataError, listed
from mypt.fsdp import fill_shards, shard_model, stored_weights, supported
from mypt.hf_import import hf_dir, import_hf, read_hf_config
from mypt.io import check_dir_path, check_movable, check_replaceable, recover_output, set_aside_hint, sha256_file
from mypt.lock import lock_path, output_lock
from mypt.names import METADATA_FILE
from mypt.model import GPT, check_finite, load_model, nonfinite
from mypt.precision import autocast_dtype, dtype_name, run_autocast
from mypt.settings import as_flag, flags_differ, says_none
from mypt.shards import dataset_tokenizer, read_metadata
from mypt.gc_pause import resume_gc
from mypt.tokenizer_match import check_tokenizer, prepare_again
from mypt.tokenizers import Tokenizer, make_tokenizer, tokenizer_class
from mypt.loggers import check_installed
from mypt.optim import apply_hyperparameters, check_resumable, configure_optimizer, muon_lr
from mypt.tracking import MetricsDir, check_metrics_dir, check_metrics_path, open_tracker
from mypt.train import (compiled as compiled_for_training, evaluated_at, fit, get_lr, saved_streams, tokens_per_step,
                        trained_tokens)

# What the train stages read besides code: the presets --config_file names (a preset edited
# reruns them; scripts/dvc_deps.py lists this directory in their deps).
DATA_DEPS = ("mypt/configs",)

# How --input_file is read: mypt.input_text.read_input_text, passed in by `mypt train` (cli.py).
# Passed, not imported: the DVC stages train on prepared datasets, and importing it here would
# make them depend on every input format's reader.
ReadText = Callable[[Path], str]


def _tokenizer_for(req: RunSettings, specs: list[DatasetSpec], log: Callable[[str], None], read_text: ReadText):
    """The run's tokenizer: the (first) dataset's, or one for --input_file. Logs the guide's
    start-up check (where the tokenizer comes from, the vocabulary size)."""
    for spec in specs:
        if not spec.path.is_dir():
            raise DataError(f"--dataset_dir {spec.text}: no directory {spec.path}" + (
                set_aside_hint(spec.path) or f"; HINT: prepare it with `mypt prepare-dataset --input_files ... "
                                             f"--out_dir {spec.path}`"))
        kind = read_metadata(spec.path, "--dataset_dir")["tokenizer"]["kind"]
        if req.tokenization:
            check_tokenizer(kind, req.tokenization, f"the dataset {spec.text}", f"--tokenization {req.tokenization}",
                            f"pass --tokenization {kind}, or prepare the dataset again with --tokenization "
                            f"{req.tokenization}", ConfigError)
    if specs:
        log(f"Loading tokenizer state from {specs[0].path}...")
        tokenizer = dataset_tokenizer(specs[0].path)
        if req.tokenization:
            check_tokenizer(tokenizer, req.tokenization, f"the dataset {specs[0].text}",
                            f"--tokenization {req.tokenization}", "drop --tokenization (the dataset's is used), or "
                            "prepare the dataset again with it", ConfigError)
    else:
        spec = req.tokenization or "gpt2"
        cls = tokenizer_class(spec)
        log(f"Building the {cls.kind} tokenizer for {req.input_file}..." if cls.learns_vocabulary
            else f"Using the {cls.kind} tokenizer...")
        tokenizer = make_tokenizer(spec, [read_text(req.input_file)]) if cls.learns_vocabulary \
            else make_tokenizer(spec)
    log(f"Vocabulary size: {tokenizer.vocab_size}")
    return tokenizer


def run_training(req: RunSettings, overrides: dict | None = None, log: Callable[[str], None] = print,
                 read_text: ReadText | None = None, refuse_unfinished_init: bool = False) -> dict:
    """Build everything `mypt train` needs from `req`, then fit. `overrides`: model and
    training settings from flags (they win over the config file's). `read_text`: how
    --input_file is read (mypt.input_text.read_input_text); without it --input_file is refused.
    `refuse_unfinished_init`: a new run from a checkpoint whose run stopped short of its
    max_iters is refused (the adapt stage's), not only warned of (see _unfinished_init).
    Returns fit's result. Under torchrun, a rank that fails before the process group forms
    tells the others, which stop with its error instead of waiting for it."""
    try:
        return _checked_run(req, overrides, log, read_text, refuse_unfinished_init)
    except Exception as e:
        tell_ranks_start_failed(e)
        raise


def _checked_run(req: RunSettings, overrides: dict | None, log: Callable[[str], None],
                 read_text: ReadText | None, refuse_unfinished_init: bool) -> dict:
    if bool(req.dataset_dir) == (req.input_file is not None):
        raise ConfigError("give exactly one of --dataset_dir (a prepared dataset, or several for a mixture) or "
                          "--input_file (one text file)" + _resumed_data_hint(req))
    if req.input_file is not None and read_text is None:
        raise ConfigError(f"--input_file {req.input_file}: one text file is `mypt train`'s in-memory mode; this "
                          "command trains on prepared datasets: prepare it with `mypt prepare-dataset` and pass "
                          "--dataset_dir")
    if req.resume and req.overwrite:
        raise ConfigError("--resume continues this model's run; --overwrite replaces it: pick one")
    specs = parse_dataset_specs(req.dataset_dir)
    check_dir_path(req.checkpoints_dir, "--checkpoints_dir")
    ckpt_dir = Path(req.checkpoints_dir) / req.model_name
    if req.auto_resume:
        req = _auto_resumed(req, ckpt_dir, log if _rank0() else (lambda line: None))
    # One run per checkpoint: a second would delete this one's `.NAME.partial`; and one per
    # --metrics_dir: a second would clear or cut this one's curves. Under DDP only rank 0 saves
    # and logs, so only rank 0 takes the locks, and checks --metrics_dir and the loggers: what is
    # in the directory under its lock (the run's loggers start from what it found there: each
    # file read once). The other ranks learn a refusal as they wait for every rank to start
    # (mypt.distributed); checking on their own nodes, they judged another filesystem's folder.
    # Where the ranks meet in no start store (torchrun --max_restarts with its agent's store:
    # mypt.distributed.has_start_store), each checks on its own, or rank 0 would stop alone and
    # the others wait for it in init_process_group until its timeout.
    found = None
    if req.metrics_dir is not None and _rank0():  # before its lock, whose file goes beside it (not the root or home)
        check_metrics_path(req.metrics_dir, checkpoint_dir=ckpt_dir)
        check_installed(req.loggers)
    elif req.metrics_dir is not None and not has_start_store():
        check_metrics_dir(req.metrics_dir, checkpoint_dir=ckpt_dir, dvclive="dvclive" in req.loggers,
                          resume=req.resume, model=req.model_name, loggers=req.loggers)
        check_installed(req.loggers)
    with contextlib.ExitStack() as locks:
        if _rank0():
            locks.enter_context(output_lock(ckpt_dir, "--model_name"))
            if req.metrics_dir is not None:
                locks.enter_context(output_lock(Path(req.metrics_dir), "--metrics_dir"))
                found = check_metrics_dir(req.metrics_dir, checkpoint_dir=ckpt_dir, dvclive="dvclive" in req.loggers,
                                          resume=req.resume, model=req.model_name, loggers=req.loggers)
        return _run_training(req, specs, ckpt_dir, overrides, log, read_text, found, refuse_unfinished_init)


def _auto_resumed(req: RunSettings, ckpt_dir: Path, log: Callable[[str], None]) -> RunSettings:
    """--auto_resume: the run as --resume where MODEL_NAME holds a checkpoint (a save a kill
    interrupted is finished first), else as a new run. The checkpoint must be this command's
    run: one that started from other weights (another --init_from_model, or none) is refused,
    not continued in its place."""
    if req.resume or req.overwrite:
        raise ConfigError(f"--auto_resume decides itself whether to resume: pass it without "
                          f"{'--resume' if req.resume else '--overwrite'}")
    try:
        found = checkpoint.holds_model(checkpoint.resolve(ckpt_dir, None))
    except CheckpointError:  # no directory (or what is in its way, which the new run then names)
        found = False
    if not found:
        log(f"--auto_resume: no checkpoint in {ckpt_dir} yet: a new run")
        return req
    recorded = checkpoint.read_config(ckpt_dir).get("init_from_model")
    spec = req.init_from_model
    # Where --init_from_model points, found or not: a resume needs no base weights, which may
    # have moved since (a name is the model of that name under --checkpoints_dir, or a path).
    hf = hf_dir(spec)
    places = [] if spec is None else [hf] if hf else [Path(spec), Path(req.checkpoints_dir) / spec]
    same = recorded is None if spec is None else \
        isinstance(recorded, str) and os.path.realpath(recorded) in {os.path.realpath(p) for p in places}
    if not same:
        raise ConfigError(f"--auto_resume: {ckpt_dir} holds a run started from {recorded or 'new weights'}, where "
                          f"this command starts from {spec or 'new weights'} (--init_from_model): another run; pass "
                          "--resume to continue it anyway, --overwrite to replace it, or another --model_name")
    return dataclasses.replace(req, resume=True, init_from_model=None)


def _none_texts() -> dict[str, str]:
    """{setting: its word for None} of the model and training settings (--rope_scaling none)."""
    return {**TrainConfig.none_texts(), **GPTConfig.none_texts()}


def unused_flags(overrides: dict, cfgs: "_Configs") -> list[str]:
    """A warning for each flag given, or setting a --config_file names, that changes nothing in
    this run (--muon_learning_rate with AdamW, --rope_theta with learned positions): said, not
    silently ignored."""
    settings = {**cfgs.model.to_dict(), **cfgs.train.to_dict()}
    acts_with = {**type(cfgs.train).acts_with(), **type(cfgs.model).acts_with()}
    given = {**{name: f"{name} {cfgs.origins[name]}" for name in cfgs.file_names},
             **{name: f"--{name}" for name, value in overrides.items() if value is not None}}

    def deciding(other: str) -> str:  # the setting that decides, said where it came from
        if overrides.get(other) is not None:
            return f"--{other} {settings[other]}"
        return f"{other} {settings[other]} {cfgs.origins.get(other, '(the default)')}"

    # (--rope_scaling none clears a scaling: harmless where nothing would scale)
    nones = _none_texts()
    cleared = {name for name, v in overrides.items() if says_none(nones.get(name), v)}
    return [f"warning: {given[name]} has no effect: it acts with --{other} {value}, this run has {deciding(other)}"
            for name, (other, value) in acts_with.items()
            if name in given and name not in cleared and settings[other] != value]


def text_tokens(text: str, tokenizer: Tokenizer) -> np.ndarray:
    """The in-memory mode (--input_file): the file's tokens as a uint32 array."""
    return tokenizer.encode_array(text).astype(np.uint32)


def new_run_schedule(train_d: dict, overrides: dict) -> dict:
    """The base model's training settings for a new run from its weights (--init_from_model):
    a setting derived from one the new run sets (TrainConfig.derived(): lr_decay_iters from
    max_iters, min_lr from learning_rate) is dropped unless given again, so that the cosine
    decays over the new run to a tenth of the new rate (a base trained with lr_decay_iters
    5000 would otherwise hold a 600-step adaptation near its peak)."""
    derived = TrainConfig.derived()
    return {k: v for k, v in train_d.items() if not (derived.get(k) in overrides and k not in overrides)}


def _load_start(cfgs: _Configs, device: torch.device, req: RunSettings,
                shapes_only: bool = False) -> tuple[GPT, Tokenizer]:
    """The model a run starts from (--resume, --init_from_model). An hf:DIR is imported from its
    config as the settings read it; a mypt checkpoint's weights are read with the config.json
    they were saved with (checkpoint.read_weights: a save by another run may replace it
    meanwhile). `shapes_only`: a sharded checkpoint's model comes on the meta device, for a
    sharded resume to fill (load_model's, _fill_shards)."""
    with _start_named(req):
        if cfgs.hf:
            model, tokenizer, _ = import_hf(cfgs.init, device, cfgs.saved)
        else:
            model, tokenizer, _ = load_model(cfgs.init, device, shapes_only)
    return model, tokenizer


@contextlib.contextmanager
def _start_named(req: RunSettings):
    """A checkpoint the run starts from that cannot be used (damaged, weights not finite:
    load_model's checks) named with the flag that chose it, not blamed on the first step's loss."""
    try:
        yield
    except CheckpointError as e:
        if req.resume:
            raise CheckpointError(f"--resume: {e} (or start a new run from a sound model's weights with "
                                  "--init_from_model)") from None
        raise CheckpointError(f"--init_from_model {req.init_from_model}: {e}") from None


def _sharded(req: RunSettings, dist: Dist) -> bool:
    """Whether the run shards its model (--parallel fsdp on several processes)."""
    return dist.world_size > 1 and req.parallel == "fsdp"


def _fill_shards(model: GPT, req: RunSettings, ckpt_dir: Path, config: dict, device: torch.device,
                 dist: Dist) -> None:
    """A sharded resume's weights into `model` (built on the meta device, sharded): each rank
    reads its shards (fsdp.fill_shards), and the ranks refuse NaN or inf together, each counting
    them in its shards (load_model's check, of the whole tensors)."""
    from safetensors import SafetensorError
    from torch.distributed.checkpoint.api import CheckpointException

    where = checkpoint.weights_source(ckpt_dir, config)
    with _start_named(req):
        try:
            fill_shards(where, model, device)
        except (SafetensorError, CheckpointException) as e:
            raise CheckpointError(f"{where}: its shards cannot be read into this run's model "
                                  f"({str(e).splitlines()[0]}); the checkpoint was changed or damaged: use another "
                                  "one, or train again") from None
        weights = stored_weights(model)
        counts: dict[str, int] = {}
        for theirs in all_ranks(nonfinite({k: v.to_local() for k, v in weights.items()}), cpu_group(dist)):
            for name, bad in theirs.items():
                counts[name] = counts.get(name, 0) + bad
        check_finite(weights, str(where), counts)


def _steps_left(saved_step: int, max_iters: int, ckpt_dir: Path, auto: bool) -> bool:
    """Whether --resume (`auto`: --auto_resume's) has steps to train from the checkpoint's step
    to --max_iters. One below that step is an error: it would train nothing, and say nothing,
    while the user expects more."""
    if max_iters < saved_step:
        raise ConfigError(f"{'--auto_resume' if auto else '--resume'}: --max_iters {max_iters} is below step "
                          f"{saved_step} of {ckpt_dir}, which is trained past it: pass --max_iters above {saved_step} "
                          f"to train further (or --overwrite{' without --auto_resume' if auto else ''} to start a new "
                          "run)")
    return max_iters > saved_step


def _resumed_data_hint(req: RunSettings) -> str:
    """For a --resume given no data: what the run trained on, from its config.json (the resume
    takes the first run's data flags again; the record says what they were)."""
    config = Path(req.checkpoints_dir) / req.model_name / checkpoint.CONFIG_FILE
    if not req.resume or req.dataset_dir or req.input_file is not None or not config.is_file():
        return ""
    try:
        saved = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    data = saved.get("dataset_dir") if isinstance(saved, dict) else None
    if isinstance(data, str):
        data = [data]
    elif not (isinstance(data, list) and all(isinstance(d, str) for d in data)):
        return ("; a --resume takes the first run's data flags again (this model's config.json records no "
                "dataset: its run read --input_file)")
    return (f"; a --resume takes the first run's data flags again: {config} records "
            + " ".join(f"--dataset_dir {d}" for d in data) + " (paths as given from the first run's directory)")


def _data_record(specs: list[DatasetSpec]) -> str | list[str] | None:
    """The --dataset_dir a checkpoint records: the path, or a mixture's NAME=PATH:WEIGHT each."""
    return str(specs[0].path) if len(specs) == 1 else [f"{s.name}={s.path}:{s.weight:g}" for s in specs] or None


def _text_nfc(specs: list[DatasetSpec]) -> bool | None:
    """Whether the text trained on was Unicode NFC, for generate to read a prompt as it
    (generate.as_trained): prepare-dataset's normalize setting, True where every dataset had it,
    False where one had not (--no_normalize: the model saw text as it came); None where a
    dataset's metadata does not record it. --input_file (no specs) reads text as it is: False."""
    if not specs:
        return False
    said = [read_metadata(s.path, "--dataset_dir").get("settings", {}).get("normalize") for s in specs]
    return False if False in said else True if all(v is True for v in said) else None


def _data_sums(specs: list[DatasetSpec]) -> list[str]:
    """The sha256 of each dataset's metadata (its shards, sizes and sums): a dataset prepared
    again at the same path has other metadata unless its tokens are the same."""
    return [sha256_file(Path(s.path) / METADATA_FILE) for s in specs]


def _data_changed(saved: str | list[str] | None, now: str | list[str] | None, saved_sums: list | None = None,
                  sums: list | None = None, specs: list[DatasetSpec] = ()) -> str:
    """What the resume line adds when the run trains on other data than the checkpoint's (another
    dataset, a mixture's names or weights, or a dataset prepared again or appended to at its
    path): the sampler goes on from its saved position. With both runs' metadata sums, a dataset
    is its sum, so the same data reached by another path (a resume from another directory) is
    not named."""
    def entries(record) -> list[tuple[str, str, str]]:
        if isinstance(record, str):
            return [("", os.path.abspath(record), "")]
        out = []
        for entry in record or []:
            name, _, rest = entry.partition("=")
            path, _, weight = rest.rpartition(":")
            out.append((name, os.path.abspath(path), weight))
        return out

    if saved is None:
        return ""
    old, new = entries(saved), entries(now)
    if saved_sums and sums and len(saved_sums) == len(old) and len(sums) == len(new):
        if [(n, w, h) for (n, _, w), h in zip(old, saved_sums)] == [(n, w, h) for (n, _, w), h in zip(new, sums)]:
            return ""
        if old == new:  # the same paths, other bytes
            again = [s.text or str(s.path) for s, a, b in zip(specs, saved_sums, sums) if a != b]
            return (f"; data changed since the checkpoint's run: {', '.join(again)} prepared again or appended to "
                    f"(its {METADATA_FILE} differs)")
    elif old == new:
        return ""
    shown = lambda r: " ".join(f"--dataset_dir {e}" for e in ([r] if isinstance(r, str) else r or []))  # noqa: E731
    return f"; data changed from the checkpoint's run: {shown(now)} (was {shown(saved)})"


def _eval_data_changed(saved_config: dict, now: Path | None, now_sum: str | None) -> str:
    """What the resume line adds when --eval_dataset_dir is not the checkpoint's run's: its
    curve (eval_general) would otherwise go on under one name over other data. A dataset is
    its metadata's sum, so the same one reached by another path is not named. A checkpoint
    that records none of it (written before it was recorded) says nothing."""
    if "eval_dataset_dir" not in saved_config:
        return ""
    saved, saved_sum = saved_config.get("eval_dataset_dir"), saved_config.get("eval_dataset_sha256")
    if saved is None and now is None or saved is not None and now is not None and saved_sum == now_sum:
        return ""
    if now is None:
        return (f"; --eval_dataset_dir {saved} of the checkpoint's run not given: eval_general is not evaluated from "
                "here (pass it again to continue its curve)")
    if saved is None:
        return f"; --eval_dataset_dir {now} added: eval_general starts at this step"
    again = os.path.abspath(saved) == os.path.abspath(now)
    return (f"; eval data changed since the checkpoint's run: --eval_dataset_dir {now} "
            + (f"prepared again or appended to (its {METADATA_FILE} differs)" if again else f"(was {saved})")
            + ": eval_general measures other data from here, under the same name")


def _changed_on_resume(saved: dict, cfg: TrainConfig, step: int, saved_dropout: float, dropout: float,
                       new_ranks: range = range(0)) -> str:
    """What the resume line adds when flags changed the checkpoint's training settings (a
    resume continues with the flags given over the saved ones), or its model's dropout (the one
    model setting a resume may change): each setting with its saved value, and where the
    learning-rate schedule moved, the rate at this step under each (a larger --max_iters
    stretches the cosine: the rate goes back up; wsd's stays while at its peak). `new_ranks`:
    the ranks the checkpoint's run did not have (a resume on more processes)."""
    now = cfg.to_dict()
    # A setting the checkpoint lacks (an older mypt's, before the setting existed) had its default.
    saved = {**TrainConfig().to_dict(), **saved}
    changed = {k: v for k, v in saved.items() if k in now and now[k] != v}
    shown = {**changed, **({"dropout": saved_dropout} if dropout != saved_dropout else {})}
    if not shown:
        return ""
    values = {**now, "dropout": dropout}
    # The seed starts a run's streams: a resumed one draws on from the checkpoint's random state,
    # but for a rank it did not save, whose windows and dropout start from the seed (train._joining_seed).
    span = "" if not new_ranks else f"rank {new_ranks[0]}" if len(new_ranks) == 1 \
        else f"ranks {new_ranks[0]}-{new_ranks[-1]}"
    inert = {"seed": f"; it seeds only {span}, new to this resume: the others continue the checkpoint's random "
                     "state" if new_ranks else "; no effect: a resume continues the checkpoint's random state"}
    line = "; settings changed from the checkpoint's run: " + ", ".join(
        f"{k} {values[k]!r} (was {v!r}{inert.get(k, '')})" for k, v in shown.items())
    if {"batch_size", "eval_iters"} & set(changed):  # (val is eval_iters fixed batches of batch_size windows)
        line += ("; val is measured on other windows from here (eval_iters batches of batch_size): its curve may "
                 "move at this step with no change of the model, and best_val compares the two samples")
    try:
        old = TrainConfig.from_dict({**now, **changed})
    except ConfigError:  # settings an older mypt wrote that this one no longer takes
        return line
    before, after = get_lr(step, old), get_lr(step, cfg)
    if not math.isclose(before, after, rel_tol=1e-9):
        line += f"; the learning rate at step {step} is {after:.3g} (the checkpoint's schedule: {before:.3g})"
    if cfg.optimizer == "muon" and not math.isclose(muon_lr(before, old), muon_lr(after, cfg), rel_tol=1e-9):
        line += f", Muon's {muon_lr(after, cfg):.3g} (the checkpoint's schedule: {muon_lr(before, old):.3g})"
    return line


def _new_ranks(state: dict, dist: Dist) -> range:
    """The ranks a resumed run has that its checkpoint's did not (their streams start from the
    seed: train._Run.restore); none where the checkpoint saved no window stream."""
    saved = saved_streams(state)
    return range(len(saved), dist.world_size) if saved else range(0)


def _complete(req: RunSettings, resume_state: dict, tokens_per_iter: int, dist: Dist,
              log: Callable[[str], None]) -> dict:
    """--resume of a run already at --max_iters: said, exit 0 (a job that resumes until it
    succeeds, killed after its last save, ends), the checkpoint as it is."""
    if dist.is_main:
        log(f"{req.model_name} is already trained to --max_iters {resume_state['step']} (its checkpoint's step): "
            "the run is complete, nothing to do; pass a larger --max_iters to train it further")
    if dist.world_size > 1:
        torch.distributed.destroy_process_group()
    return {"history": resume_state.get("history", []), "step": resume_state["step"],
            "tokens": trained_tokens(resume_state, tokens_per_iter), "best_val": resume_state.get("best_val")}


def _rank0() -> bool:
    """Whether this process is rank 0 (or alone), before the process group exists."""
    return os.environ.get("WORLD_SIZE", "1") == "1" or os.environ.get("RANK", "0") == "0"


@dataclass
class _Configs:
    """The run's settings, resolved from the flags, the config file or preset, and the
    checkpoint it starts from."""

    model: GPTConfig
    train: TrainConfig
    source: str  # where the settings came from (a preset, a file, a checkpoint's config.json)
    init: Path | None  # the checkpoint (or hf: directory) the weights start from
    hf: bool  # init is an hf:DIR
    saved_init: str | None  # --resume: where the run's weights first came from
    init_rows: int | None  # the embedding rows init's config says (an hf:DIR's may pad past the ids)
    file_names: frozenset = frozenset()  # the settings a --config_file names
    flag_names: frozenset = frozenset()  # the model settings flags give
    # Where each setting not left to its default came from, flags aside ("in preset tiny", "in
    # --config_file my.json", "in checkpoints/m/config.json"): for messages.
    origins: dict = dataclasses.field(default_factory=dict)
    window: int | None = None  # an hf:DIR Mistral's sliding window, where it set the import's block_size
    # init's config.json as read once (read_config's; an hf:DIR's as read_hf_config gives it): a
    # resume checks its training state against it; an hf:DIR is imported from it.
    saved: dict | None = None


def _start_from(req: RunSettings, ckpt_dir: Path) -> tuple[Path | None, bool]:
    """(the directory the weights start from, whether it is an hf:DIR)."""
    hf_init = hf_dir(req.init_from_model)  # hf:DIR, a transformers GPT-2 directory
    init = hf_init or (checkpoint.resolve(req.init_from_model, req.checkpoints_dir) if req.init_from_model else None)
    if req.resume and init:
        raise ConfigError("--resume continues this model's own run; --init_from_model starts a new one: pick one")
    if req.resume:
        try:
            init = checkpoint.resolve(ckpt_dir, None)
        except CheckpointError as e:
            raise CheckpointError(f"--resume: {e}") from None
    return init, hf_init is not None


def _resolve_configs(req: RunSettings, tokenizer: Tokenizer, overrides: dict | None, ckpt_dir: Path) -> _Configs:
    """The model and training settings: the flags over the config file or preset, or over the
    checkpoint's own settings when the run starts from one without --config_file (with one, over
    the file's settings, and the checkpoint's model settings the file leaves out)."""
    init, hf = _start_from(req, ckpt_dir)
    saved = (read_hf_config(init) if hf else checkpoint.read_config(init)) if init is not None else None
    saved_init = saved.get("init_from_model") if req.resume else None  # (the provenance it recorded)
    model_source, file_names = None, frozenset()
    if saved is not None and not req.config_file:  # continue with the checkpoint's own settings
        model_d, train_d, source = dict(saved["model"]), saved.get("training", {}), f"{init}/config.json"
        origins = {k: f"in {source}" for k, v in {**model_d, **train_d}.items() if v is not None}
    else:
        preset = req.config_file or ("small_char" if tokenizer.kind == "char" else "150M")
        model_d, train_d, source = load_config_file(preset)
        values = {**model_d, **train_d}
        named = [k for k, v in values.items() if v is not None]  # (null: the default, nothing chosen)
        # (A user's file, not a preset: a preset's gelu under --mlp relu2 is no choice of theirs;
        # nor is a word for None, "rope_scaling": "none", that clears a value as the flag's does.)
        nones = _none_texts()
        file_names = frozenset(k for k in named if not says_none(nones.get(k), values[k])) \
            if not source.startswith("preset ") else frozenset()
        origins = {k: f"in --config_file {source}" if file_names else f"in {source}" for k in named}
        if saved is not None:
            origins = {**{k: f"in {init}/config.json" for k, v in saved["model"].items() if v is not None},
                       **origins}
            # From a model's weights, a config file gives the training settings and the model
            # settings it names; the others are the model's. Its defaults in their place turned
            # an imported Llama 3's rope_theta 500000 into 10000 and its context into 256, with
            # nothing said (those may change for a new run), or refused the rest one by one.
            # A resume keeps its dropout unless --dropout says otherwise: the file's would change
            # it unsaid, and the run would not end where an uninterrupted one does.
            named = {k: v for k, v in model_d.items() if not (req.resume and k == "dropout")}
            model_d = {**saved["model"], **named}
            model_source = f"{source} with the settings of {init} it leaves out"
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    if init is not None and not req.resume and not req.config_file:  # the base's settings, a new run
        train_d = new_run_schedule(train_d, overrides)
    model_flags = {k: overrides.pop(k) for k in GPTConfig.field_names() if k in overrides}
    model_d.update(model_flags)
    model_d["vocab_size"] = tokenizer.vocab_size
    # An error names the flags when the values came from them, the file or preset otherwise.
    train_cfg = TrainConfig.from_dict({**train_d, **overrides}, source, flags=overrides)
    model_cfg = GPTConfig.from_dict(model_d, model_source or source, flags=model_flags)
    return _Configs(model_cfg, train_cfg, source, init, hf, saved_init,
                    saved["model"].get("vocab_size") if saved is not None else None, file_names,
                    frozenset(model_flags), origins, saved.get("sliding_window") if hf else None, saved)


def _setup_device(train_cfg: TrainConfig, dist_timeout_minutes: float) -> tuple[torch.device, Dist]:
    """The device (this rank's GPU under DDP) and the process group; seeds torch's RNG."""
    device = resolve_device(train_cfg.device)
    dist = setup_distributed(device, dist_timeout_minutes)
    if device.type == "cuda":
        # Under torchrun each rank takes its node's GPU of its local rank; one process the GPU
        # --device names (cuda:1 trained on cuda:0), else the first.
        device = torch.device("cuda", dist.local_rank if dist.world_size > 1 else device.index or 0)
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True  # TF32 matmuls: ~free speed on Ampere and later
        torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(train_cfg.seed)  # every rank builds the same new model (see _rank_streams)
    return device, dist


def _rank_streams(train_cfg: TrainConfig, dist: Dist) -> None:
    """After the model is built, each rank's own random stream (its dropout masks). Before it,
    all share the seed, so every rank's new model is the one a single process builds: FSDP
    shards it as it is (DDP copied rank 0's to the others, FSDP copied nothing: each rank's
    half of a matrix was its own seed's)."""
    if dist.world_size > 1:
        torch.manual_seed(train_cfg.seed + dist.rank)


def _build_model(req: RunSettings, cfgs: _Configs, tokenizer: Tokenizer, device: torch.device,
                 shapes_only: bool = False) -> GPT:
    """A new model, or the one the run starts from, refused when its vocabulary or
    architecture is not the run's (`shapes_only`: see _load_start)."""
    if cfgs.init is None:
        return GPT(cfgs.model).to(device)
    init = cfgs.init
    model, init_tok = _load_start(cfgs, device, req, shapes_only)
    check_tokenizer(tokenizer, init_tok, "this data", str(init), f"prepare the data with --tokenizer_from {init}",
                    ConfigError)
    # What holds no weights may change. --dropout: a new run from these weights (fine-tuning a
    # model trained without it), or a resume from there on, as it may the learning rate
    # (nanoGPT's one model setting a resume may change). For a new run, --block_size (nanoGPT's
    # crop_block_size: GPT-2 at 256, a Llama import of 131072 positions at what the data and
    # memory allow: rotary positions hold no weights; learned ones keep their first rows), and
    # the rotation's --rope_theta and --rope_scaling (a longer context than the model was trained
    # for, as Llama 3.1 and Code Llama extended theirs). A resume keeps the checkpoint's.
    free = ("dropout",) if req.resume else ("dropout", "block_size", "rope_theta", "rope_scaling")
    wanted = dataclasses.replace(model.config, **{k: getattr(cfgs.model, k) for k in free})
    if model.config != cfgs.model and wanted == cfgs.model:
        block = cfgs.model.block_size
        if block != model.config.block_size:
            try:
                model.set_block_size(block)
            except ValueError as e:  # learned positions cannot grow
                raise ConfigError(f"--block_size {block}: {init} {e}: pass --block_size {model.config.block_size} "
                                  "or less") from None
        model.set_dropout(cfgs.model.dropout)
        model.config = wanted  # (the rotation's settings: read by each forward)
    if model.config != cfgs.model:
        raise ConfigError(_another_architecture(init, model.config, cfgs, free))
    return model


# Model settings whose default follows others (None: n_head's heads, n_embd / n_head wide, the
# MLP's width for its kind): said with their values, and where they were not given, as following.
_FOLLOWING = {"n_kv_head": "n_head", "head_size": "n_embd and n_head", "mlp_width": "n_embd and mlp"}


def _another_architecture(init: Path, theirs_cfg: GPTConfig, cfgs: _Configs, free: tuple[str, ...]) -> str:
    """The refusal of a run whose model settings are not the checkpoint's: each setting that
    differs, where the run's value came from (a flag, the config file or preset, the default,
    or the settings it follows), the checkpoint's value and the flags that give it, in one
    round. The settings
    that follow others are said by their values (None read "None" to a user who typed 8) and
    left out when neither side gave them (fixing what they follow fixes them); the settings
    that may change (`free`), and those that act with another setting that differs (--gelu
    of a swiglu model, rope_scaling of learned positions), are not named."""
    shown = lambda cfg: {**cfg.to_dict(), "n_kv_head": cfg.kv_heads, "head_size": cfg.head_dim,  # noqa: E731
                         "mlp_width": cfg.mlp_hidden}
    mine, theirs, saved = shown(cfgs.model), shown(theirs_cfg), theirs_cfg.to_dict()
    given = cfgs.flag_names | cfgs.file_names
    moot = {k for k, (field, value) in GPTConfig.acts_with().items() if value != theirs[field] or value != mine[field]}
    following = {k for k in _FOLLOWING if saved[k] is None and k not in given}
    differ = {k: (v, theirs[k]) for k, v in mine.items()
              if v != theirs[k] and k not in free and k not in moot and k not in following}

    nones = GPTConfig.none_texts()  # (a setting's None a flag can give: --rope_scaling none)

    def said(k: str, v) -> str:
        if k in cfgs.flag_names:
            return f"--{k} {nones[k] if v is None and k in nones else repr(v)}"
        return f"{k} {v!r} (following {_FOLLOWING[k]})" if k in _FOLLOWING and k not in given \
            else f"{k} {v!r} {cfgs.origins.get(k, '(the default)')}"

    def item(k: str, v, ckpt) -> str:
        if isinstance(v, bool) and isinstance(ckpt, bool):  # as typed, wherever the value came from
            return flags_differ(k, v, ckpt, "the checkpoint",
                                "" if k in cfgs.flag_names else f" {cfgs.origins.get(k, '(the default)')}")
        return f"{said(k, v)} (the checkpoint: {ckpt!r})"

    return (f"{init} has another architecture than this run's settings: "
            + ", ".join(item(k, mine, ckpt) for k, (mine, ckpt) in differ.items())
            + "; leave --config_file and the model flags out to keep the checkpoint's, or pass its "
            + " ".join(as_flag(k, ckpt, whole=True) if ckpt is not None
                       else f"--{k} {nones[k]}" if k in nones else f"default --{k} (no flag)"
                       for k, (_, ckpt) in differ.items()))


def _init_state(req: RunSettings, cfgs: _Configs) -> dict | None:
    """training_state.json of the mypt checkpoint a new run starts from (--init_from_model),
    read once for what the run says of it (_unfinished_init, init_line), or None: no such
    checkpoint (hf:, a resume, which continues its own run, whose start was checked), or one
    whose state cannot be read (none, a damaged one: the weights' load judges the checkpoint).
    Only the JSON part: the optimizer's state beside it (gigabytes) is not hashed. Read on every
    rank, as the refusal it may lead to is each rank's before the ranks meet."""
    if cfgs.init is None or cfgs.hf or req.resume:
        return None
    try:
        return checkpoint.read_training_state(cfgs.init, cfgs.saved, tensors=False)
    except (CheckpointError, OSError):
        return None


def _unfinished_init(req: RunSettings, cfgs: _Configs, state: dict | None) -> str | None:
    """What a new run from a mypt checkpoint (--init_from_model; `state`: its _init_state) says
    of one whose run stopped short of its max_iters (Ctrl-C, SIGTERM, a crash after a periodic
    save, or a run still training), or None: an adaptation of a half-trained base would say
    only `init from checkpoints/base (step 21)`."""
    planned = cfgs.saved.get("training", {}).get("max_iters") if isinstance(cfgs.saved, dict) else None
    step = state.get("step") if state is not None else None
    if not (isinstance(step, int) and isinstance(planned, int) and step < planned):
        return None
    return (f"--init_from_model {req.init_from_model}: trained to step {step} of the {planned} its run planned "
            f"(--max_iters in {cfgs.init / checkpoint.CONFIG_FILE}): that run stopped early, or still trains")


def init_line(init: Path, hf: bool, rows: int | None, vocab_size: int, state: dict | None) -> str:
    """What a new run from other weights (--init_from_model) says of them: the directory, for a
    Hugging Face one the rows of a padded vocabulary left out (`rows` its config's, `vocab_size`
    the tokenizer's ids), and for a mypt checkpoint its step and the val loss evaluated there
    (`state`: its training_state.json, _init_state's; this is only a report)."""
    if hf:  # (its config was read: rows is its vocab_size)
        return f"init from hf:{init}" + (f" ({rows - vocab_size} embedding rows past the tokenizer's {vocab_size:,} "
                                         "ids left out: padding no id reaches)" if rows > vocab_size else "")
    step = state.get("step") if state is not None else None
    if not isinstance(step, int):
        return f"init from {init}"
    history = state.get("history") if isinstance(state.get("history"), list) else []
    val = next((e.get("val") for e in reversed(history) if isinstance(e, dict) and e.get("step") == step), None)
    return f"init from {init} (step {step}" + (f", val {val:.4f})" if isinstance(val, (int, float)) else ")")


def _build_loaders(req: RunSettings, specs: list[DatasetSpec], tokenizer: Tokenizer, cfgs: _Configs,
                   device: torch.device, dist: Dist,
                   read_text: ReadText | None) -> tuple[GPTDataLoader | MixtureLoader, dict[str, GPTDataLoader]]:
    """(the training loader, {"general": the --eval_dataset_dir loader} or {})."""
    train_cfg = cfgs.train
    loader_cfg = LoaderConfig(train_cfg.batch_size, cfgs.model.block_size, str(device), train_cfg.seed, dist.rank)
    if len(specs) > 1:
        loader = MixtureLoader(loader_cfg, tokenizer, specs)
    elif specs:
        loader = GPTDataLoader(loader_cfg, tokenizer, dataset_dir=specs[0].path)
    else:
        loader = GPTDataLoader(loader_cfg, tokenizer, tokens=text_tokens(read_text(req.input_file), tokenizer))
    eval_loaders = {}
    if req.eval_dataset_dir is not None:
        check_tokenizer(tokenizer, dataset_tokenizer(req.eval_dataset_dir), "the training data",
                        f"--eval_dataset_dir {req.eval_dataset_dir}",
                        prepare_again(specs[0].path if specs else Path(req.checkpoints_dir) / req.model_name))
        # A dataset also trained on (the adapt stage's replay of general text) keeps its own
        # loader: fit evaluates a loader once, and eval_general is then val_general's value.
        trained = {Path(part.dataset_dir).resolve(): part for _, _, part in loader.val_parts()
                   if part.dataset_dir is not None}
        eval_loaders["general"] = (trained.get(Path(req.eval_dataset_dir).resolve())
                                   or GPTDataLoader(loader_cfg, tokenizer, dataset_dir=req.eval_dataset_dir,
                                                    eval_only=True))
    return loader, eval_loaders


def _run_training(req: RunSettings, specs: list[DatasetSpec], ckpt_dir: Path, overrides: dict | None,
                  log: Callable[[str], None], read_text: ReadText | None, found: MetricsDir | None,
                  refuse_unfinished_init: bool) -> dict:
    # A trained model is the user's work: replaced only when asked (also one a killed save left
    # as .NAME.old: put back first). Every rank checks before setup_distributed, so none can
    # have saved yet.
    if _rank0():  # (and what is in the way of the first save: refused now, not after the first hour)
        recover_output(ckpt_dir, checkpoint.CHECKPOINT_FILES, "--model_name")
    # Only mypt's own checkpoint, or an empty directory, is ever replaced: refused now, not at
    # the first save after an hour of training.
    checkpoint.check_ours(ckpt_dir)
    check_replaceable(ckpt_dir, flag="--model_name", marker=checkpoint.CONFIG_FILE, kind="mypt checkpoint")
    check_movable(ckpt_dir, checkpoint.CHECKPOINT_FILES, "--model_name")  # (every save moves the checkpoint aside)
    if not req.resume and not req.overwrite and checkpoint.holds_model(ckpt_dir):
        raise ConfigError(f"--model_name {req.model_name}: {ckpt_dir} already holds a trained model; pass --resume "
                          f"to continue it, --overwrite to replace it, or choose a new --model_name")
    tokenizer = _tokenizer_for(req, specs, log if _rank0() else (lambda line: None), read_text)
    cfgs = _resolve_configs(req, tokenizer, overrides, ckpt_dir)
    init_state = _init_state(req, cfgs)
    unfinished = _unfinished_init(req, cfgs, init_state)
    if unfinished and refuse_unfinished_init:
        raise ConfigError(f"{unfinished}. Finish it first: `dvc repro -f train` for the pipeline's base (DVC trains "
                          "it again; without -f, a base committed unfinished comes back from DVC's run cache), or "
                          "its own command again with --resume (`mypt train --model_name NAME ... "
                          "--resume`, then `dvc commit` its stage); or pass --allow_unfinished_init (params.yaml: "
                          "`allow_unfinished_init: true` in this stage's section) to start from it as it is")
    if _rank0():
        for line in [*unused_flags(overrides or {}, cfgs), restart_warning(),
                     unfinished and f"warning: {unfinished}: this run starts from its weights as they are"]:
            if line:
                log(line)
    data_sums = _data_sums(specs)  # (recorded in every save; compared on resume and between ranks)
    device, dist = _setup_device(cfgs.train, req.dist_timeout_minutes)
    with before_training(dist, "the ranks' check that they have the same settings"):
        _check_ranks_agree(req, cfgs, specs, data_sums, dist, device)
    # A sharded resume reads each rank's shards of the checkpoint, not the whole (_fill_shards),
    # and hashes its files a share a rank, every rank told of a changed one before any reads it.
    sharded_resume = req.resume and _sharded(req, dist)
    if sharded_resume:
        with before_training(dist, "the ranks' check of the checkpoint's shards"), \
                built_on_every_rank(cpu_group(dist)), _start_named(req):
            checkpoint.check_shards(cfgs.init, cfgs.saved, dist.rank, dist.world_size)
    # The data first: its checks (a window longer than every shard) take a moment, where a
    # model of a mistaken --block_size could take minutes and gigabytes to build. Each rank
    # reads its node's copy of the data and of the starting weights: one may refuse alone.
    with before_training(dist, "the ranks' check that each built its data loaders and model"), \
            built_on_every_rank(cpu_group(dist)):
        loader, eval_loaders = _build_loaders(req, specs, tokenizer, cfgs, device, dist, read_text)
        model = _build_model(req, cfgs, tokenizer, device, shapes_only=sharded_resume)
    _rank_streams(cfgs.train, dist)
    if cfgs.init is not None and not req.resume and dist.is_main:
        log(init_line(cfgs.init, cfgs.hf, cfgs.init_rows, model.config.vocab_size, init_state))
        if cfgs.window is not None and model.config.block_size > cfgs.window:
            log(f"warning: --block_size {model.config.block_size} is past the sliding window of hf:{cfgs.init} "
                f"({cfgs.window} tokens): mypt attends over the whole context, where the model attended over the "
                f"last {cfgs.window} tokens only, so past {cfgs.window} it computes what the model never did until "
                f"trained on it (a context extension); --block_size {cfgs.window} keeps the model's attention")
    if len(specs) == 1 and "val" not in loader.splits and dist.is_main:  # (a mixture's loader says it itself)
        log(f"warning: --dataset_dir {specs[0].path} has no val split (prepared with --val_fraction 0?): training "
            "reports no val loss and best_val stays empty"
            + ("" if eval_loaders else "; add --eval_dataset_dir for one"))
    return _train(req, specs, cfgs, model, tokenizer, loader, eval_loaders, ckpt_dir, device, dist, log, data_sums,
                  found)


# What _check_ranks_agree compares by content (nodes may mount it elsewhere), named in its message by paths.
DATA_KEY = "the data (--dataset_dir, --input_file)"
STARTING_WEIGHTS = "the starting weights (--init_from_model, --resume)"
SHARED_CHECKPOINTS = "--checkpoints_dir, one folder for every node"  # (compared under --parallel fsdp)


def _rank_settings(req: RunSettings, cfgs: _Configs, specs: list[DatasetSpec], data_sums: list[str],
                   device: torch.device) -> tuple[dict, dict]:
    """What _check_ranks_agree compares of this rank ({name: value}), and the paths it shows of
    what is compared by content."""
    # A mixture's names key its saved sampler state; one dataset's name is a label (and follows
    # where each node mounts it).
    data = [(s.name if len(specs) > 1 else "", s.weight, digest) for s, digest in zip(specs, data_sums)] if specs \
        else sha256_file(req.input_file)
    by_sum = lambda path, name: sha256_file(Path(path) / name) if path is not None else None  # noqa: E731
    mine = {**{f"--{k}": v for k, v in {**cfgs.model.to_dict(), **cfgs.train.to_dict()}.items()},
            "--parallel": req.parallel, "--resume": req.resume, "--overwrite": req.overwrite,
            "--model_name": req.model_name, DATA_KEY: data,
            # FSDP evaluates on the sharded model (an extra eval set on one rank: collectives that
            # never meet) and copies no rank's weights to the others (another base: drift).
            "--eval_dataset_dir": by_sum(req.eval_dataset_dir, METADATA_FILE),
            STARTING_WEIGHTS: by_sum(cfgs.init, checkpoint.CONFIG_FILE),
            # The same flags resolve per node: --dtype auto is bfloat16 on an A100 and float16 on a
            # V100 (float32 on a CPU without bfloat16), and the ranks' copies drifted apart unsaid. (A
            # resumed run under auto keeps the precision its checkpoint records: run_autocast.)
            "the device --device picks": device.type,
            "the precision --dtype picks": "the checkpoint's" if req.resume and cfgs.train.dtype == "auto"
            else dtype_name(autocast_dtype(cfgs.train, device))}
    # Shown, not compared: the paths of what is compared by content, where each rank has it
    # (64-digit sums said nothing to the user).
    paths = {DATA_KEY: [str(s.path) for s in specs] if specs else str(req.input_file),
             "--eval_dataset_dir": req.eval_dataset_dir and str(req.eval_dataset_dir),
             STARTING_WEIGHTS: cfgs.init and str(cfgs.init), "--checkpoints_dir": str(req.checkpoints_dir)}
    if req.parallel == "fsdp":  # every rank writes its shards there: seen whole at the first save (an hour in)
        lock = lock_path(Path(req.checkpoints_dir) / req.model_name)  # (rank 0 holds it: run_training)
        # Its pid and its time: a lock a killed run left in a node's own folder may hold the same pid
        # (a container's), never the time of rank 0's, made by this run.
        mine[SHARED_CHECKPOINTS] = (lock.read_text(errors="replace"), lock.stat().st_mtime_ns) if lock.is_file() \
            else None
    return mine, paths


def _check_ranks_agree(req: RunSettings, cfgs: _Configs, specs: list[DatasetSpec], data_sums: list[str],
                       dist: Dist, device: torch.device) -> None:
    """Under torchrun every rank must train the same run: nodes started with another flag
    (--eval_interval) hung, one evaluating while the others trained, or drifted apart silently
    (--learning_rate: each rank stepped the averaged gradients by its own rate). Compared once,
    before anything collective; the data by its content, since nodes may mount it elsewhere."""
    if dist.world_size == 1:
        return
    group = cpu_group(dist)
    with built_on_every_rank(group):  # (each rank reads its node's files for them: one may fail alone)
        mine, paths = _rank_settings(req, cfgs, specs, data_sums, device)
    ranks = all_ranks((mine, paths), group)
    first, first_paths = ranks[0]
    for rank, (theirs, their_paths) in enumerate(ranks[1:], 1):
        differ = [k for k in first if theirs.get(k) != first[k]]
        if SHARED_CHECKPOINTS in differ:
            theirs_dir, dir0 = their_paths["--checkpoints_dir"], first_paths["--checkpoints_dir"]
            if theirs_dir != dir0:  # (the flag, not the filesystem: rank 1 was named with its own lock's path)
                raise ConfigError(f"rank {rank} was started with --checkpoints_dir {theirs_dir} (rank 0: {dir0}), "
                                  "where it does not see rank 0's lock file: with --parallel fsdp every rank writes "
                                  "its shards into one checkpoint; give every rank the same --checkpoints_dir, one "
                                  "filesystem every node shares (NFS, Lustre)")
            lock = lock_path(Path(req.checkpoints_dir) / req.model_name)
            raise ConfigError(f"--checkpoints_dir {req.checkpoints_dir}: rank {rank} does not see rank 0's lock "
                              f"file {lock} in it: with --parallel fsdp every rank writes its shards into the "
                              "checkpoint, so --checkpoints_dir must be one filesystem every node shares (NFS, Lustre)")
        if differ:
            hint = "start every node with the same mypt train command and flags"
            if "--resume" in differ and req.auto_resume:
                hint = (f"--auto_resume found a checkpoint on one node only: --checkpoints_dir {req.checkpoints_dir} "
                        "must be one filesystem every node shares (NFS, Lustre)")
            elif all(k.startswith("the ") and k.endswith(" picks") for k in differ):
                hint = ("its hardware differs from rank 0's: pass --dtype bfloat16 or float32 (and --device "
                        "cuda or cpu), so that every rank trains alike")
            def shown(k: str, of: dict, of_paths: dict) -> str:
                if k not in of_paths or of.get(k) is None:
                    return f"{of.get(k)!r}"
                return f"{of_paths[k]!r}" + (" (its contents)" if of is theirs else ", compared by content")

            def item(k: str) -> str:
                if k.startswith("--") and isinstance(theirs.get(k), bool) and isinstance(first.get(k), bool):
                    return flags_differ(k[2:], theirs[k], first[k], "rank 0")
                return f"{k} {shown(k, theirs, their_paths)} (rank 0: {shown(k, first, first_paths)})"
            raise ConfigError(f"rank {rank} was started with other settings than rank 0: "
                              + listed([item(k) for k in differ], 5) + f"; {hint}")


def _shard(model: GPT, cfgs: _Configs, saved: dict | None, device: torch.device, dist: Dist, compiled: bool) -> None:
    """--parallel fsdp: shard the model over the ranks, its weights gathered in the run's
    autocast dtype (`saved`: a resumed run's training state, whose dtype it started in, see
    run_autocast)."""
    if not supported():
        raise ConfigError(f"--parallel fsdp needs a newer torch than {torch.__version__} (FSDP2 and DCP's safetensors "
                          "storage; tested with 2.13): upgrade torch, or pass --parallel ddp")
    amp = run_autocast(cfgs.train, device, saved, dist, lambda line: None)
    if amp == torch.float16:  # a GradScaler sees only its rank's shards: ranks would skip different steps
        raise ConfigError("--parallel fsdp trains in bfloat16 or float32, not float16 (this GPU's --dtype auto): "
                          "pass --dtype float32, or --parallel ddp")
    shard_model(model, amp, compiled, device)


def _train(req: RunSettings, specs: list[DatasetSpec], cfgs: _Configs, model: GPT, tokenizer: Tokenizer, loader,
           eval_loaders: dict, ckpt_dir: Path, device: torch.device, dist: Dist, log: Callable[[str], None],
           data_sums: list[str], found: MetricsDir | None) -> dict:
    """The model wrapped for training (FSDP: sharded, each block compiled; else torch.compile,
    DDP), the optimizer and the state --resume restores, the metrics tracker (`found`: what
    check_metrics_dir found in --metrics_dir), then fit."""
    train_cfg = cfgs.train
    compiled = train_cfg.compiles_on(device.type)
    sharded = _sharded(req, dist)
    if train_cfg.cuda_graphs_on(device.type) and dist.world_size > 1:  # (DDP's and FSDP's collectives are not captured)
        raise ConfigError(f"--cuda_graphs: one process only, this run has {dist.world_size} processes under "
                          "torchrun; pass --no_cuda_graphs")
    # The checkpoint's config.json (as _resolve_configs read it) and training state, read and
    # verified once: the optimizer's moments, twice the model's size under AdamW, are costly to hash.
    saved_config = cfgs.saved if req.resume else {}
    saved_state = checkpoint.read_training_state(ckpt_dir, saved_config) if req.resume and sharded else None
    # A sharded resume from a sharded checkpoint: the model on the meta device, its files hashed
    # by check_shards (_run_training).
    empty = next(model.parameters()).is_meta
    with before_training(dist, "the restore of the checkpoint" if req.resume else "the model's sharding"):
        if sharded:  # before the optimizer, which then holds the shards
            _shard(model, cfgs, saved_state, device, dist, compiled)
            if empty:
                _fill_shards(model, req, ckpt_dir, saved_config, device, dist)
        optimizer = configure_optimizer(model, train_cfg, device)
        saved_training = saved_config.get("training", {})
        if req.resume:
            check_resumable(saved_training, train_cfg, ckpt_dir)
        resume_state = checkpoint.load_training_state(ckpt_dir, optimizer, dist.rank, model, state=saved_state,
                                                      config=saved_config, shards_checked=empty) \
            if req.resume else None
    if resume_state:
        apply_hyperparameters(optimizer, train_cfg)
    # (A run stopped in its last step, its final evaluation skipped, is not complete: it evaluates and saves.)
    if resume_state and not _steps_left(resume_state["step"], train_cfg.max_iters, ckpt_dir, req.auto_resume) \
            and evaluated_at(resume_state.get("history", []), resume_state["step"]):
        # A killed run's rows past the checkpoint go, from the loggers that keep them in files (a
        # remote run, MLflow's or W&B's, is not reopened on each resubmission of a finished job).
        cut = tuple(name for name in req.loggers if name in ("dvclive", "tensorboard"))
        if req.metrics_dir is not None and dist.is_main and cut:
            open_tracker(cut, req.metrics_dir, req.model_name, resume=True, resume_step=resume_state["step"],
                         found=found, log=log).close()
        return _complete(req, resume_state, tokens_per_step(loader, train_cfg, dist), dist, log)
    eval_sum = sha256_file(Path(req.eval_dataset_dir) / METADATA_FILE) if req.eval_dataset_dir is not None else None
    if resume_state and dist.is_main:
        log(f"resuming {req.model_name} from step {resume_state['step']}"
            + _changed_on_resume(saved_training, train_cfg, resume_state["step"],
                                 saved_config.get("model", {}).get("dropout", model.config.dropout),
                                 model.config.dropout,
                                 _new_ranks(resume_state, dist))
            + _data_changed(saved_config.get("dataset_dir"), _data_record(specs), saved_config.get("dataset_sha256"),
                            data_sums, specs)
            + _eval_data_changed(saved_config, req.eval_dataset_dir, eval_sum))
    train_model = compiled_for_training(model, train_cfg)  # (a sharded model comes compiled block by block)
    if dist.world_size > 1 and not sharded:
        from torch.nn.parallel import DistributedDataParallel as DDP

        with before_training(dist, "DDP's start (rank 0's weights copied to every rank)"):
            train_model = DDP(train_model, device_ids=[dist.local_rank] if device.type == "cuda" else None)
    extra = {"training": train_cfg.to_dict(), "config_source": cfgs.source,
             # provenance: where the weights first came from (kept across --resume)
             "init_from_model": (cfgs.saved_init if req.resume else str(cfgs.init) if cfgs.init is not None else None),
             "dataset_dir": _data_record(specs), "dataset_sha256": data_sums, "text_nfc": _text_nfc(specs),
             "eval_dataset_dir": req.eval_dataset_dir and str(req.eval_dataset_dir), "eval_dataset_sha256": eval_sum}
    tracker = None
    if req.metrics_dir is not None and dist.is_main:  # after every check: dvclive clears the directory
        tracker = open_tracker(req.loggers, req.metrics_dir, req.model_name, resume=req.resume,
                               resume_step=resume_state["step"] if resume_state else None, found=found, log=log)
    resume_gc()  # the run is built: the collector walks only what training allocates (mypt.gc_pause)
    failed = True
    try:
        result = fit(train_model, loader, optimizer, eval_loaders, train_cfg, ckpt_dir, tokenizer, resume_state,
                     extra, dist, log, on_metrics=tracker, overwrite=req.overwrite)
        failed = False
        return result
    finally:
        if tracker is not None:
            tracker.close(failed)  # MLflow and W&B mark a run that raised as failed
        if dist.world_size > 1:
            torch.distributed.destroy_process_group()


def run_from_flags(flags: dict, log: Callable[[str], None] = print, read_text: ReadText | None = None,
                   refuse_unfinished_init: bool = False) -> dict:
    """`mypt train` and the train stage: parsed flags -> the request and the setting
    overrides -> run_training."""
    request = RunSettings.from_flags(flags)
    overrides = {k: v for k, v in flags.items() if k not in RunSettings.field_names()}
    return run_training(request, overrides, log, read_text, refuse_unfinished_init)
