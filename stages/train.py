"""Stage train (and adapt): mypt train; --metrics_dir gets the run's dvclive metrics and
loss plots while it trains, --metrics the run's headline numbers when it ends."""

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's mypt, whose files dvc.lock hashes, before any installed one
from mypt.signals import ctrl_c_says_aborted

ctrl_c_says_aborted()  # first: a Ctrl-C while the modules below load says Aborted!, not a traceback
import click
from mypt.config import train_options
from mypt.options import option
from mypt.rank_command import RankCommand
from mypt.gc_pause import gc_paused


@click.command(cls=RankCommand)
@train_options
@option("--metrics", type=click.Path(dir_okay=False, path_type=Path),
        help="Headline JSON to write when training ends: tokens (all the model trained on, every "
             "run's steps at their own batch) and seconds (this run's wall time).")
@option("--allow_unfinished_init/--no_allow_unfinished_init", default=False,
        help="Start from an --init_from_model checkpoint whose run stopped short of its --max_iters (refused "
             "without it: the adapt stage would adapt a half-trained base).")
def main(metrics, allow_unfinished_init, **flags):
    """Train MODEL_NAME with all of `mypt train`'s flags."""
    started = time.monotonic()
    with gc_paused():  # until the run is built (torch's imports, the checks' first): see mypt.gc_pause
        if metrics is not None:
            _check_metrics_path(metrics, flags)
        from mypt.train_command import run_from_flags

        result = run_from_flags(flags, log=click.echo, refuse_unfinished_init=not allow_unfinished_init)
    if metrics is not None and int(os.environ.get("RANK", "0")) == 0:  # under torchrun, rank 0 writes
        _write_metrics(metrics, result, time.monotonic() - started)


def _check_metrics_path(metrics: Path, flags: dict) -> None:
    """--metrics outside every directory the run reads or writes (a checkpoint's config.json,
    the dvclive directory, a dataset's metadata), before anything is built."""
    from mypt.dataset_spec import DatasetSpec
    from mypt.io import check_report_paths
    from mypt.tokenizers import parse_spec

    checkpoints = Path(flags["checkpoints_dir"])
    dirs = [("--metrics_dir", flags.get("metrics_dir")), ("--input_file", flags.get("input_file")),
            ("--eval_dataset_dir", flags.get("eval_dataset_dir"))]
    if flags.get("model_name"):  # (missing: the run's own check names the flag)
        dirs.append(("--model_name", checkpoints / flags["model_name"]))
    if flags.get("init_from_model"):
        dirs.append(("--init_from_model", _init_dir(flags)))
    config = flags.get("config_file")
    if config and Path(config).is_file():  # a JSON of the user's (a preset name is no path)
        dirs.append(("--config_file", Path(config)))
    if flags.get("tokenization"):  # KIND:PATH, a tokenizer file the run reads
        dirs.append(("--tokenization", parse_spec(flags["tokenization"])[1]))
    dirs += [("--dataset_dir", DatasetSpec.parse(spec).path) for spec in flags.get("dataset_dir") or ()]
    check_report_paths({"--metrics": (metrics, {"tokens": int, "seconds": float})}, dirs)  # as _write_metrics writes it


def _init_dir(flags: dict) -> Path:
    """--init_from_model's directory: an hf:DIR, a checkpoint path, or a name in --checkpoints_dir."""
    from mypt.hf_import import hf_dir

    init = flags["init_from_model"]
    return hf_dir(init) or (Path(init) if Path(init).is_dir() else Path(flags["checkpoints_dir"]) / init)


def _write_metrics(path: Path, result: dict, seconds: float) -> None:
    """tokens: what the model trained on over all its runs (counted step by step, so a resume
    with another batch size or number of processes adds each step's own); seconds: this run's
    wall time, start-up, evaluations and checkpoints included (after --resume, not the earlier
    runs')."""
    from mypt.io import write_json

    write_json(path, {"tokens": result["tokens"], "seconds": round(seconds, 1)})


if __name__ == "__main__":
    main()
