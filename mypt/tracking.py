"""Live tracking: a running fit's metrics written as they come, through dvclive (so `dvc exp
show`, `dvc plots show` and DVC's VS Code extension follow a run while it trains) and the
other loggers `mypt train --logger` chooses (mypt.logger_clients: TensorBoard, MLflow, W&B).
`open_tracker` gives fit one `on_metrics` callback that hands every logger the same calls.

`LiveMetrics(DIR)` is dvclive's logger (`mypt train --metrics_dir DIR`, the default logger; the
train and adapt stages use dvclive/base and dvclive/adapted). DIR gets dvclive's layout:

    metrics.json                 the latest value of each metric, best_val, step and the
                                 model's name ("model": what marks the directory as mypt's)
    plots/metrics/NAME.tsv       step and value: train_loss, lr, muon_lr, tokens_per_s (every
                                 log_interval), val, val_* and eval_* (every eval_interval)
    plots/images/loss.png        the loss curves, drawn from the .tsv files when the run ends

dvclive only writes these files: it saves no DVC experiment and writes no dvc.yaml (the
pipeline declares the files in its own dvc.yaml). A directory holding anything else dvclive
would delete, another tool's dvclive run among them, is refused (check_metrics_dir).

A run killed at any moment (preemption: requeued with --resume) leaves a directory its resume
takes: metrics.json is replaced whole at each step, never rewritten in place, and what a kill
or a crash left damaged of the run's own files (an emptied metrics.json, a row cut short) is
rebuilt or dropped by the resumed run.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from mypt.errors import InputError, MyptError, listed, os_error_message
from mypt.checkpoint import holds_mypt_config
from mypt.io import atomic_write_text, check_dir_path, check_replaceable
from mypt.names import METADATA_FILE
from mypt.logger_clients import CLIENTS, RECORDS, check_run_records
from mypt.report import write_loss_png


def _live(directory: Path, resume: bool):
    from dvclive import Live
    from dvclive.dvc import _find_dvc_root
    from dvclive.plots import NumpyEncoder
    from scmrepo.exceptions import SCMError

    class QuietLive(Live):
        def _init_dvc(self):
            # Outside a DVC repository, dvclive (3.49) runs `dvc init` in the enclosing git
            # repository: a training run must not change the user's repository. Inside one
            # (and under `dvc repro`/`dvc exp run`) it keeps its DVC integration.
            if os.environ.get("DVC_ROOT") or _find_dvc_root():
                try:
                    super()._init_dvc()
                except SCMError:  # (3.49 asks a git repository with no commit yet for its HEAD)
                    pass  # nothing to tie the run to: its files are written as outside DVC

        def make_summary(self):
            # dvclive (3.41 to 3.49) rewrites metrics.json in place at every step: a kill between
            # its truncation and its write left it empty, and --resume refused the directory.
            # Written whole under a new name, then renamed over it: never seen half-written.
            if self._step is not None:
                self.summary["step"] = self.step
            atomic_write_text(Path(self.metrics_file), json.dumps(self.summary, indent=4, cls=NumpyEncoder) + "\n")

    # save_dvc_exp=False: `dvc exp run` saves experiments, a run by hand is not one.
    # dvcyaml=None: dvc.yaml is the project's, never rewritten by a training run.
    return QuietLive(str(directory), resume=resume, save_dvc_exp=False, dvcyaml=None)


# What dvclive deletes in its directory when a new run starts (Live._init_cleanup, 3.49): its
# plot folders whole, and its metrics.json, params.yaml, reports and `*dvc.yaml` at the top.
_CLEARED_FOLDERS = ("plots/metrics", "plots/images", "plots/custom", "plots/sklearn")
_CLEARED_REPORTS = ("report.html", "report.md")  # (metrics.json, params.yaml: checked by name)
# The curves mypt's runs log (fit's on_metrics: train_loss, lr, muon_lr, tokens_per_s; val, a
# mixture's val_NAME and --eval_dataset_dir's eval_NAME): the names a resumed run may cut back or
# continue. Which of them a directory holds as mypt's is what its metrics.json says (_mypt_run).
_CURVES = ("train_loss", "lr", "muon_lr", "tokens_per_s", "val")
_CURVE_PREFIXES = ("val_", "eval_")
_PROGRESS = {"train_loss", "lr", "tokens_per_s"}  # logged together at every log_interval
_LEGACY_CURVES = ("train_loss", "lr", "tokens_per_s", "val")  # before metrics.json's "model" (no muon_lr yet)
METRICS_JSON = "metrics.json"
LOSS_PNG = "plots/images/loss.png"


class _Curves:
    """The curves of a metrics directory, each file read and decoded once however many checks
    look at it: its lines as first read, or None where the file cannot be read or is not UTF-8."""

    def __init__(self, directory: Path):
        self.directory, self._lines = directory, {}

    def path(self, name: str) -> Path:
        return self.directory / "plots" / "metrics" / f"{name}.tsv"  # (dvclive's plots_dir: DIR/plots)

    def lines(self, name: str) -> list[str] | None:
        """Its lines with their ends, or None (not there, not UTF-8)."""
        if name not in self._lines:
            try:
                self._lines[name] = self.path(name).read_bytes().decode("utf-8").splitlines(keepends=True)
            except (OSError, UnicodeDecodeError):
                self._lines[name] = None
        return self._lines[name]

    def header_fits(self, name: str) -> bool:
        """It is UTF-8 text (dvclive's: a bad byte past the header crashed the resume's cut-back of
        its rows) whose first line is dvclive's header of the curve (step, then the name) or empty."""
        lines = self.lines(name)
        return lines is not None and (not lines or lines[0].rstrip("\r\n") in ("", f"step\t{name}"))

    def points(self, name: str) -> list[tuple[int, float]]:
        """(step, value) of the curve, by step; repeated steps keep their last value. None of a file
        that is not UTF-8 (check_metrics_dir refuses such a curve of the run before it is read here)."""
        lines = self.lines(name)
        if lines is None:
            return []
        # Rows as csv splits them (at \n and \r only), not as splitlines does: a damaged row holding
        # a \f or a \v stays one row, as it is in the file.
        rows = csv.DictReader(io.StringIO("".join(lines), newline=""), delimiter="\t")
        return sorted({int(row["step"]): float(row[name]) for row in rows}.items())

    def replace(self, name: str, text: str) -> None:
        atomic_write_text(self.path(name), text)
        self._lines[name] = text.splitlines(keepends=True)


@dataclass
class MetricsDir:
    """What check_metrics_dir found in a --metrics_dir, for the run's loggers to start from
    without reading it again: the mypt run whose curves are there, (model, curve names), or
    None; whether its metrics.json is one a kill left damaged or missing (a resume rebuilds it);
    each chosen logger's run record ({}: none, a new run); the curves as read."""

    run: tuple[str | None, set[str]] | None = None
    killed: bool = False
    records: dict[str, dict] = field(default_factory=dict)
    curves: _Curves | None = None


def check_metrics_path(directory: Path, checkpoint_dir: Path | None = None) -> None:
    """The part of check_metrics_dir that needs no file of the directory read: a path a
    directory (and its lock, beside it) can be made at, outside the run's checkpoint, any other
    checkpoint and any dataset, and not the current, home or root directory."""
    check_dir_path(directory, "--metrics_dir")
    _check_not_inside_outputs(Path(directory), checkpoint_dir)
    check_replaceable(directory, flag="--metrics_dir")


def check_metrics_dir(directory: Path, checkpoint_dir: Path | None = None, dvclive: bool = True,
                      resume: bool = False, model: str | None = None,
                      loggers: tuple[str, ...] = ()) -> MetricsDir:
    """A --metrics_dir a run may write, before anything is built; what it found there is returned,
    for open_tracker to start from. Refused: the current, home or root directory; one at or
    inside a checkpoint (every save replaces it) or a dataset; and, when the run writes with
    dvclive, whatever the run would delete or change that no mypt run wrote: a project's
    dvc.yaml or params.yaml, a metrics.json that is not a mypt run's (another tool's dvclive
    run: its curves with it), a report, and (for a new run: dvclive clears its plot folders on
    start) any file under plots/ other than the curves and the loss image of the
    mypt run whose metrics.json is there. A directory whose metrics.json names another `model`
    holds that model's curves: refused too (a resume would cut them, a new run delete them).
    `loggers`: the run's others, whose run records there must be this model's
    (check_run_records)."""
    check_metrics_path(directory, checkpoint_dir)
    records = check_run_records(Path(directory), loggers, model)
    if not dvclive:
        return MetricsDir(records=records)
    directory = Path(directory)
    curves = _Curves(directory)
    for name in ("params.yaml", *(p.name for p in directory.glob("*dvc.yaml"))):
        if (directory / name).is_file():
            raise InputError(f"--metrics_dir {directory} holds {name}, which dvclive would delete: "
                             "choose a directory of its own for the run's metrics")
    # A damaged or missing metrics.json (_killed_run) only for a resume: it names no owner, and a new
    # run's dvclive would delete the curves beside it (another model's, with its metrics.json removed).
    summary = _read_summary(directory)
    run, killed = _mypt_run(directory, summary, curves), None
    if run is None and resume:
        run = killed = _killed_run(directory, summary, model)
    owner = run[0] if run else None  # (None too for a run from before mypt named the model)
    if model is not None and owner is not None and owner != model:
        raise InputError(f"--metrics_dir {directory} holds the curves of model {owner!r} (its metrics.json), not "
                         f"of {model!r}: choose a --metrics_dir of this model's own (the train stage uses "
                         "dvclive/MODEL_NAME)")
    foreign = _foreign_files(directory, resume, run, curves)
    damage = _damage(directory, summary) if foreign and foreign[0] == METRICS_JSON else None
    if damage:  # (a new run's: a resume takes such a file where its curves are a mypt run's, _killed_run)
        resumable = not resume and _killed_run(directory, summary, model) is not None
        raise InputError(f"--metrics_dir {directory}: its metrics.json {damage}, so it names no run, and mypt cannot "
                         "tell whose curves are beside it: it deletes nothing it cannot tell is its own. "
                         + ("To continue that run, pass --resume (which rebuilds metrics.json from its curves); to "
                            "start a new one, " if resumable else "")
                         + "choose another --metrics_dir, or empty this one")
    if foreign:
        shown = listed(foreign, 5)
        why = " (a metrics.json that no training run wrote with mypt: another tool's run?)" \
            if foreign[0] == METRICS_JSON else ""
        done = "the resumed run would change" if resume else "dvclive would delete when the run starts"
        raise InputError(f"--metrics_dir {directory} holds files no mypt run wrote{why}, which {done}: {shown}; "
                         "choose another --metrics_dir, or move them out of it")
    return MetricsDir(run, killed is not None, records, curves)


def _check_not_inside_outputs(directory: Path, checkpoint_dir: Path | None) -> None:
    """--metrics_dir neither at nor inside the run's checkpoint directory, another mypt
    checkpoint or a dataset: a save or a re-prepare replaces those whole."""
    target = directory.resolve()
    if checkpoint_dir is not None:
        ckpt = Path(checkpoint_dir).resolve()
        if target == ckpt or ckpt in target.parents:
            raise InputError(f"--metrics_dir {directory} is inside the checkpoint directory {checkpoint_dir}, which "
                             "every checkpoint save replaces: choose a --metrics_dir outside it (the train stage "
                             "uses dvclive/MODEL_NAME)")
    for place in (target, *target.parents):
        if place == Path(place.anchor):
            break
        kind = "a mypt checkpoint, which every save of its model replaces" if holds_mypt_config(place) else \
            "a mypt dataset, which a new prepare-dataset replaces" if (place / METADATA_FILE).is_file() else None
        if kind:
            raise InputError(f"--metrics_dir {directory}: {place} is {kind}; choose a --metrics_dir outside it "
                             "(the train stage uses dvclive/MODEL_NAME)")


def _foreign_files(directory: Path, resume: bool, run: tuple[str | None, set[str]] | None,
                   curves: _Curves) -> list[str]:
    """What the run would delete (dvclive's clean-up of a new run) or change (a resumed run:
    metrics.json, the curves it cuts back and continues, loss.png) that is not the mypt run's of
    `run` (_mypt_run), as paths relative to `directory`, metrics.json first."""
    if resume:
        files = sorted(f"{name}.tsv" for name in _mypt_curves(directory))
        touched = [METRICS_JSON, LOSS_PNG, *(f"plots/metrics/{f}" for f in files)]
    else:
        touched = [METRICS_JSON, *_CLEARED_REPORTS]
        for folder in _CLEARED_FOLDERS:
            touched += [p.relative_to(directory).as_posix() for p in sorted((directory / folder).rglob("*"))
                        if p.is_symlink() or p.is_file()] if (directory / folder).is_dir() else []
    ours = set() if run is None else {METRICS_JSON, LOSS_PNG, *(f"plots/metrics/{name}.tsv" for name in run[1])}
    return [rel for rel in touched if os.path.lexists(directory / rel) and
            (rel not in ours or (directory / rel).is_symlink()
             or (rel.endswith(".tsv") and not curves.header_fits(Path(rel).stem)))]  # (our .tsv: in plots/metrics)


def _read_summary(directory: Path) -> str | None:
    """The text of `directory`'s metrics.json ("" where there is none), or None where it is a
    link, not a file, unreadable or not UTF-8: what _mypt_run and _killed_run read."""
    path = directory / METRICS_JSON
    if path.is_symlink() or (path.exists() and not path.is_file()):
        return None
    try:
        return path.read_text(encoding="utf-8") if path.is_file() else ""
    except (OSError, UnicodeDecodeError):
        return None


def _mypt_run(directory: Path, summary: str | None, curves: _Curves) -> tuple[str | None, set[str]] | None:
    """(model, curve names) of the mypt run whose metrics.json `directory` holds (`summary`, its
    text as _read_summary read it), or None where there is none or it is not one a mypt run
    wrote. A mypt run's metrics.json is dvclive's summary (each logged metric's latest value, a
    number, and the step) with the model's name under "model", which mypt writes first thing.
    One written before mypt named the model (early December 2026) is known by its metrics
    alone: each a name mypt then logged, a step, the three of a progress line together, val
    with best_val (and with any val_NAME)."""
    try:
        data = json.loads(summary) if summary else None
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    model = data.pop("model", None)
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in data.values()):
        return None
    names = set(data) - {"step", "best_val"}
    if isinstance(model, str) and model:
        return model, names | _first_logged(directory, data.get("step"), names, curves)
    if model is not None or not isinstance(data.get("step"), int) or not names:
        return None
    known = all(name in _LEGACY_CURVES or name.startswith(_CURVE_PREFIXES) for name in names)
    progress = (_PROGRESS & names) in (set(), _PROGRESS)
    has_val = "val" in names
    evaluated = has_val == ("best_val" in data) and (has_val or not any(n.startswith("val_") for n in names))
    return (None, names) if known and progress and evaluated else None


def _killed_run(directory: Path, summary: str | None, model: str | None) -> tuple[str | None, set[str]] | None:
    """(model, curve names) of the mypt run whose metrics.json a kill left damaged or missing
    (dvclive rewrote it in place before mypt wrote it whole, and wrote none before the first
    step; a crash of the machine may still leave it cut short or zeroed), or None. The file is
    a leftover only where it is empty, or the start of a summary naming `model` cut short (a
    foreign file of that name is kept), and the directory's curves are as a mypt run logs
    them: a resume rebuilds it from them, a new run clears them."""
    if summary is None:
        return None
    text = summary.strip("\0 \t\r\n")
    head = '{\n    "model": ' + json.dumps(model)  # (dvclive's layout: the name mypt puts first)
    try:
        json.loads(text)
        return None  # whole: _mypt_run says whose it is
    except ValueError:
        if text and (model is None or not (text.startswith(head) or head.startswith(text))):
            return None
    # An empty or missing metrics.json names no model: its curves are taken as `model`'s (a new run
    # clears them, a resume cuts them back to its checkpoint). Acceptable: a mypt run writes it
    # whole first thing, so only a kill or a crash of a run in this directory leaves it so, and a
    # directory is one model's (the train stage's dvclive/MODEL_NAME; --metrics_dir's lock).
    curves = _mypt_curves(directory)
    return (model, curves) if (_PROGRESS & curves) in (set(), _PROGRESS) else None


def _damage(directory: Path, summary: str | None) -> str | None:
    """What a kill or a crash left of `directory`'s metrics.json (`summary`, its text), said as
    the end of a sentence, or None where it is missing, whole, or not left so by a crash."""
    if summary is None or not (directory / METRICS_JSON).is_file():
        return None
    if summary == "":
        return "is empty (what a kill leaves of a file rewritten in place)"
    if not summary.strip("\0"):
        # A file system may commit a file's size before its data (XFS; ext4 with data=writeback):
        # after a power loss the file has its length, and its unwritten blocks read as zeros.
        return (f"is {len(summary)} NUL bytes (what a power loss leaves of a file written just before it: its size "
                "reached the disk, its data did not)")
    return None


def _first_logged(directory: Path, step: float | None, listed: set[str], curves: _Curves) -> set[str]:
    """The curves that the step a kill interrupted logged for the first time: dvclive appends a
    metric's row as it is logged and lists the metric in metrics.json at the step's end, so a run
    killed between the two left a curve that its metrics.json (last step `step`, curves `listed`)
    does not list. Such a curve is one mypt logs holding one whole row, of the interrupted step:
    the step that the listed curves' rows past `step` show, or, in the run's first step (no step
    yet), the one step all such curves share. Anything else (a file put there by hand, the rows
    of a run before) is no such curve; headers are checked with the others' (_foreign_files)."""
    rows: dict[str, float] = {}  # the one row's step of each curve metrics.json does not list
    past: set[float] = set()  # the last rows' steps of the listed curves
    for name in _mypt_curves(directory) | listed:
        lines = curves.lines(name)
        if lines is None:
            continue
        if name in listed:
            past |= {_row_step(lines[-1])} if len(lines) > 1 else set()
        elif len(lines) == 2:
            rows[name] = _row_step(lines[1])
    past = {s for s in past if s != math.inf and (step is None or s > step)}  # (a cut row shows no step)
    if past:
        return {name for name, at in rows.items() if at == max(past)}
    return set(rows) if step is None and len(set(rows.values())) == 1 and math.inf not in rows.values() else set()


def _mypt_curves(directory: Path) -> set[str]:
    """The names of the .tsv files in `directory`'s plots/metrics that are curves mypt logs."""
    return {p.stem for p in (directory / "plots" / "metrics").glob("*.tsv")
            if p.stem in _CURVES or p.stem.startswith(_CURVE_PREFIXES)}


def _row_step(line: str) -> float:
    """The step of a .tsv row: dvclive's `step<TAB>value` and its line end. A damaged row (a
    kill or a crash cut it short) counts as past every step: dropped."""
    fields = line.rstrip("\r\n").split("\t")
    try:
        float(fields[-1])
        return int(fields[0]) if line.endswith("\n") and len(fields) == 2 else math.inf
    except ValueError:
        return math.inf


def _kind_of(values: dict) -> str | None:
    """Which of fit's calls `values` are: an evaluation's losses, a progress line's, or neither."""
    if any(name == "val" or name.startswith(_CURVE_PREFIXES) for name in values):
        return "evaluation"
    return "progress" if any(name in _PROGRESS or name == "muon_lr" for name in values) else None


class LiveMetrics:
    """fit's `on_metrics(step, values)`: each call is one dvclive step, on disk when it
    returns. `close()` draws the PNG and ends dvclive's run. `resume=True` continues the
    directory's curves (`mypt train --resume`); `resume_step`, the checkpoint's step, first
    drops the rows a killed run logged after it, which the resumed run logs again. `found`:
    check_metrics_dir's of the directory, with dvclive (checked here where not given: a
    LiveMetrics built by hand, as fit's on_metrics)."""

    def __init__(self, directory: Path, title: str = "loss", resume: bool = False, resume_step: int | None = None,
                 model: str | None = None, found: MetricsDir | None = None):
        found = found if found is not None else check_metrics_dir(directory, resume=resume, model=model)
        self.directory, self.title = Path(directory), title
        curves = found.curves  # (as checked: each file read once)
        if resume:
            dropped = self._drop_rows_after(curves, found.run[1] if found.run else set(),
                                            math.inf if resume_step is None else resume_step)
            # (its step and latest values were a dropped row's: a resume that finds the run
            # complete logs nothing to replace them)
            if found.killed or dropped:
                self._rebuild_summary(curves, model, found.run[1])
        self.live = _live(self.directory, resume)
        if model is not None:  # whose curves these are (a run of another model is refused them)
            self.live.summary["model"] = model
            if not resume:  # on disk from the start (dvclive writes it after the first step)
                self.live.make_summary()
        if resume:
            self._best_val_from_rows(curves)

    def _rebuild_summary(self, curves: _Curves, model: str | None, names: set[str]) -> None:
        """metrics.json as the killed run would have left it: the model, each curve's last value
        and step (the resumed run's first steps replace them; dvclive reads it to continue)."""
        summary: dict = {} if model is None else {"model": model}
        for name in sorted(names):
            points = curves.points(name)
            if points:
                summary[name] = points[-1][1]
                summary["step"] = max(summary.get("step", 0), points[-1][0])
        atomic_write_text(self.directory / METRICS_JSON, json.dumps(summary, indent=4) + "\n")

    def _drop_rows_after(self, curves: _Curves, names: set[str], step: float) -> bool:
        """Keep the whole rows of steps up to `step`: a checkpoint of step S is saved after S's
        evaluation and train loss are logged, and a resumed run logs from S + 1 on. A row a kill
        cut short goes too: dvclive appends after it, and reading it back fails. Whether any went."""
        dropped = False
        for name in sorted(names):  # the curves of the run its metrics.json lists: no other file
            path = curves.path(name)
            if not path.is_file() or path.is_symlink() or not curves.header_fits(name):
                continue  # (check_metrics_dir refused those)
            lines = curves.lines(name)
            if not lines:
                continue
            kept = [lines[0]] + [line for line in lines[1:] if _row_step(line) <= step]
            if len(kept) != len(lines):
                curves.replace(name, "".join(kept))
                dropped = True
        return dropped

    def _best_val_from_rows(self, curves: _Curves) -> None:
        """best_val of the summary as the kept val rows say (a dropped row may have held it)."""
        vals = [value for _, value in curves.points("val")]
        if vals:
            self.live.summary["best_val"] = min(vals)
        else:
            self.live.summary.pop("best_val", None)

    def __call__(self, step: int, values: dict) -> None:
        self.live.step = step
        # metrics.json holds what this run logs: an evaluation's (or a progress line's) values
        # replace the last one's whole, so that a curve a resumed run no longer logs (an
        # --eval_dataset_dir left out, AdamW after Muon) does not stay in it as the latest value.
        kind = _kind_of(values)
        if kind:
            for name in [k for k in self.live.summary if k not in values and _kind_of({k: 0}) == kind]:
                del self.live.summary[name]
        for name, value in values.items():
            self.live.log_metric(name, value)
        if "val" in values:  # summary only: the column `dvc exp show` compares runs by
            best = min(values["val"], self.live.summary.get("best_val", math.inf))
            self.live.log_metric("best_val", best, plot=False)
        self.live.next_step()  # writes metrics.json (its step += 1 is overwritten by the next call)

    def close(self, failed: bool = False) -> None:  # dvclive has no failed state: `failed` is the loggers' API
        """Draw the loss PNG and end dvclive's run; one that cannot be written (a full disk)
        raises MetricsUnfinished, saying which (the plot alone: metrics.json and the curves are
        whole), once dvclive's run is ended all the same."""
        plot = ended = None
        try:
            curves = {name: self.curve(name) for name in self._loss_names()}
            write_loss_png({k: v for k, v in curves.items() if v}, self.directory / LOSS_PNG, self.title)
        except OSError as e:
            plot = os_error_message(e)
        try:
            self.live.end()
        except OSError as e:
            ended = os_error_message(e)
        if ended is not None:
            also = f", and the loss plot was not drawn ({plot})" if plot else ""
            raise MetricsUnfinished(f"in {self.directory} dvclive's run did not end ({ended}): its {METRICS_JSON} may "
                                    f"lack the last values{also}")
        if plot is not None:
            raise MetricsUnfinished(f"in {self.directory} the loss plot was not drawn ({plot}); {METRICS_JSON} and the "
                                    "curves (plots/metrics/*.tsv) are whole")

    def curve(self, name: str) -> list[tuple[int, float]]:
        """(step, value) of a logged metric, by step; a resumed run's repeated steps keep
        their last value."""
        return _Curves(self.directory).points(name)  # (as on disk now: dvclive appended since the start)

    def _loss_names(self) -> list[str]:
        found = sorted(p.stem for p in (Path(self.live.plots_dir) / "metrics").glob("eval_*.tsv"))
        return ["train_loss", "val", *found]


class MetricsUnfinished(MyptError):
    """A logger's last files that could not be written as the run ended (LiveMetrics.close)."""


class Tracker:
    """fit's `on_metrics`: each call handed to every logger, in --logger's order. `log`: where
    a warning goes (training's log)."""

    def __init__(self, loggers: list, log: Callable[[str], None] = print):
        self.loggers, self.log = loggers, log

    def __call__(self, step: int, values: dict) -> None:
        for logger in self.loggers:
            logger(step, values)

    def close(self, failed: bool = False) -> None:
        """Close every logger, even after one fails to (its error is raised then). The run's
        last metrics files unwritten (MetricsUnfinished) are a warning: a run that completed,
        its last checkpoint saved, is not failed for its plot (a DVC stage that fails loses its
        outputs, the checkpoint among them); one that failed keeps its own error."""
        def closing(logger) -> None:
            try:
                logger.close(failed)
            except MetricsUnfinished as e:
                done = "the run stopped" if failed else "training completed and its last checkpoint is saved"
                self.log(f"warning: {done}, but {e}")

        with ExitStack() as stack:
            for logger in reversed(self.loggers):
                stack.callback(closing, logger)


def open_tracker(names: tuple[str, ...], directory: Path, run_name: str, resume: bool = False,
                 resume_step: int | None = None, found: MetricsDir | None = None,
                 log: Callable[[str], None] = print) -> Tracker:
    """The loggers `names` (mypt.loggers.LOGGERS) writing to `directory`, a run called
    `run_name`. `resume` continues each logger's run from `resume_step`, the checkpoint's step:
    the resumed run logs the steps after it, each once. `found`: what check_metrics_dir found
    in `directory` for this run (checked here where not given, before any logger opens: a
    refusal changes nothing). A logger that fails to open closes those opened before it. `log`:
    where the tracker's warnings go."""
    if found is None:
        found = check_metrics_dir(directory, dvclive="dvclive" in names, resume=resume, model=run_name, loggers=names)
    opened: list = []
    try:
        for name in names:
            if name == "dvclive":
                opened.append(LiveMetrics(directory, f"{run_name}: loss", resume=resume, resume_step=resume_step,
                                          model=run_name, found=found))
            else:
                Path(directory).mkdir(parents=True, exist_ok=True)
                record = {"record": found.records[name]} if name in RECORDS else {}
                opened.append(CLIENTS[name](Path(directory), run_name, resume, resume_step, **record))
    except BaseException:
        Tracker(opened, log).close(failed=True)
        raise
    return Tracker(opened, log)
