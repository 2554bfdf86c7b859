"""Live tracking: a running fit's metrics written as they come, through dvclive (so `dvc exp
show`, `dvc plots show` and DVC's VS Code extension follow a run while it trains) and the
other loggers `mypt train --logger` chooses (mypt.logger_clients: TensorBoard, MLflow, W&B).
`open_tracker` gives fit one `on_metrics` callback that hands every logger the same calls.

`LiveMetrics(DIR)` is dvclive's logger (`mypt train --metrics_dir DIR`, the default logger; the
train and adapt stages use dvclive/base and dvclive/adapted). DIR gets dvclive's layout:

    metrics.json                 the latest value of each metric, best_val and step
    plots/metrics/NAME.tsv       step and value: train_loss, lr, tokens_per_s (every
                                 log_interval), val and eval_* (every eval_interval)
    plots/images/loss.png        the loss curves, drawn from the .tsv files when the run ends

dvclive only writes these files: it saves no DVC experiment and writes no dvc.yaml (the
pipeline declares the files in its own dvc.yaml).
"""

from __future__ import annotations

import csv
import json
import math
import os
from contextlib import ExitStack
from pathlib import Path

from mypt.errors import InputError
from mypt.io import atomic_write_text, check_replaceable
from mypt.logger_clients import CLIENTS
from mypt.report import write_loss_png


def _live(directory: Path, resume: bool):
    from dvclive import Live
    from dvclive.dvc import _find_dvc_root

    class QuietLive(Live):
        def _init_dvc(self):
            # Outside a DVC repository, dvclive (3.49) runs `dvc init` in the enclosing git
            # repository: a training run must not change the user's repository. Inside one
            # (and under `dvc repro`/`dvc exp run`) it keeps its DVC integration.
            if os.environ.get("DVC_ROOT") or _find_dvc_root():
                super()._init_dvc()

    # save_dvc_exp=False: `dvc exp run` saves experiments, a run by hand is not one.
    # dvcyaml=None: dvc.yaml is the project's, never rewritten by a training run.
    return QuietLive(str(directory), resume=resume, save_dvc_exp=False, dvcyaml=None)


def check_metrics_dir(directory: Path, checkpoint_dir: Path | None = None, dvclive: bool = True) -> None:
    """dvclive deletes its directory's metrics.json, params.yaml, dvc.yaml, report and
    plots/ subfolders on start: refuse the current, home or root directory and (when the run
    writes with `dvclive`) one holding a project's dvc.yaml or params.yaml. (A directory left by
    a previous run, or by DVC, which removes the declared files but not the emptied plots/, is
    fine.) Also refuse one in the run's `checkpoint_dir`: every checkpoint save replaces that
    directory."""
    if checkpoint_dir is not None:
        inside, ckpt = Path(directory).resolve(), Path(checkpoint_dir).resolve()
        if inside == ckpt or ckpt in inside.parents:
            raise InputError(f"--metrics_dir {directory} is inside the checkpoint directory {checkpoint_dir}, which "
                             "every checkpoint save replaces: choose a --metrics_dir outside it (the train stage "
                             "uses dvclive/MODEL_NAME)")
    check_replaceable(directory, flag="--metrics_dir")
    for name in ("dvc.yaml", "params.yaml") if dvclive else ():
        if (Path(directory) / name).is_file():
            raise InputError(f"--metrics_dir {directory} holds {name}, which dvclive would delete: "
                             "choose a directory of its own for the run's metrics")
    metrics = Path(directory) / "metrics.json"
    if dvclive and metrics.is_file() and not _written_by_dvclive(metrics):
        raise InputError(f"--metrics_dir {directory} holds a metrics.json that no training run wrote (no \"step\"), "
                         "which dvclive would replace: move it, or choose a directory of its own for the run's "
                         "metrics")


def _written_by_dvclive(path: Path) -> bool:
    """Whether a metrics.json is a run's (dvclive writes the step beside the values)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(data, dict) and "step" in data


def _row_step(line: str, column: int) -> float:
    """The step of a .tsv row (a damaged row counts as past every step: dropped)."""
    try:
        return int(line.split("\t")[column])
    except (IndexError, ValueError):
        return math.inf


class LiveMetrics:
    """fit's `on_metrics(step, values)`: each call is one dvclive step, on disk when it
    returns. `close()` draws the PNG and ends dvclive's run. `resume=True` continues the
    directory's curves (`mypt train --resume`); `resume_step`, the checkpoint's step, first
    drops the rows a killed run logged after it, which the resumed run logs again."""

    def __init__(self, directory: Path, title: str = "loss", resume: bool = False, resume_step: int | None = None):
        check_metrics_dir(directory)
        self.directory, self.title = Path(directory), title
        if resume and resume_step is not None:
            self._drop_rows_after(resume_step)
        self.live = _live(self.directory, resume)
        if resume and resume_step is not None:
            self._best_val_from_rows()

    def _drop_rows_after(self, step: int) -> None:
        """Keep the rows of steps up to `step`: a checkpoint of step S is saved after S's
        evaluation and train loss are logged, and a resumed run logs from S + 1 on."""
        for path in sorted((self.directory / "plots" / "metrics").rglob("*.tsv")):
            lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
            if not lines:
                continue
            header = lines[0].rstrip("\r\n").split("\t")
            if "step" not in header:
                continue  # not a dvclive metric file: left alone
            column = header.index("step")
            kept = [lines[0]] + [line for line in lines[1:] if _row_step(line, column) <= step]
            if len(kept) != len(lines):
                atomic_write_text(path, "".join(kept))

    def _best_val_from_rows(self) -> None:
        """best_val of the summary as the kept val rows say (a dropped row may have held it)."""
        vals = [value for _, value in self.curve("val")]
        if vals:
            self.live.summary["best_val"] = min(vals)
        else:
            self.live.summary.pop("best_val", None)

    def __call__(self, step: int, values: dict) -> None:
        self.live.step = step
        for name, value in values.items():
            self.live.log_metric(name, value)
        if "val" in values:  # summary only: the column `dvc exp show` compares runs by
            best = min(values["val"], self.live.summary.get("best_val", math.inf))
            self.live.log_metric("best_val", best, plot=False)
        self.live.next_step()  # writes metrics.json (its step += 1 is overwritten by the next call)

    def close(self, failed: bool = False) -> None:  # dvclive has no failed state: `failed` is the loggers' API
        curves = {name: self.curve(name) for name in self._loss_names()}
        write_loss_png({k: v for k, v in curves.items() if v}, self.directory / "plots" / "images" / "loss.png",
                       self.title)
        self.live.end()

    def curve(self, name: str) -> list[tuple[int, float]]:
        """(step, value) of a logged metric, by step; a resumed run's repeated steps keep
        their last value."""
        path = Path(self.live.plots_dir) / "metrics" / f"{name}.tsv"
        if not path.is_file():
            return []
        with open(path, encoding="utf-8", newline="") as f:
            points = {int(row["step"]): float(row[name]) for row in csv.DictReader(f, delimiter="\t")}
        return sorted(points.items())

    def _loss_names(self) -> list[str]:
        found = sorted(p.stem for p in (Path(self.live.plots_dir) / "metrics").glob("eval_*.tsv"))
        return ["train_loss", "val", *found]


class Tracker:
    """fit's `on_metrics`: each call handed to every logger, in --logger's order."""

    def __init__(self, loggers: list):
        self.loggers = loggers

    def __call__(self, step: int, values: dict) -> None:
        for logger in self.loggers:
            logger(step, values)

    def close(self, failed: bool = False) -> None:
        """Close every logger, even after one fails to (its error is raised then)."""
        with ExitStack() as stack:
            for logger in reversed(self.loggers):
                stack.callback(logger.close, failed)


def open_tracker(names: tuple[str, ...], directory: Path, run_name: str, resume: bool = False,
                 resume_step: int | None = None) -> Tracker:
    """The loggers `names` (mypt.loggers.LOGGERS) writing to `directory`, a run called
    `run_name`. `resume` continues each logger's run from `resume_step`, the checkpoint's step:
    the resumed run logs the steps after it, each once. A logger that fails to open closes
    those opened before it."""
    opened: list = []
    try:
        for name in names:
            if name == "dvclive":
                opened.append(LiveMetrics(directory, f"{run_name}: loss", resume=resume, resume_step=resume_step))
            else:
                Path(directory).mkdir(parents=True, exist_ok=True)
                opened.append(CLIENTS[name](Path(directory), run_name, resume, resume_step))
    except BaseException:
        Tracker(opened).close(failed=True)
        raise
    return Tracker(opened)
