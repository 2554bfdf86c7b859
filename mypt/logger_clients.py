"""TensorBoard, MLflow and Weights & Biases: a fit's metrics through each one's official client
(`mypt train --logger`), imported only when a run chooses it. mypt.tracking opens them beside
dvclive and hands each the same calls: `logger(step, values)`, then `close(failed)`.

--resume continues the same run in each, and no step is logged twice:
- TensorBoard writes new event files in METRICS_DIR/tensorboard whose purge step is the
  checkpoint's step + 1: TensorBoard hides what a killed run logged after its checkpoint, and
  the resumed run's values take those steps (a new run purges from step 0: its curves replace
  the previous run's, as dvclive's do).
- MLflow and W&B continue the run whose id METRICS_DIR/mlflow_run.json or wandb_run.json
  keeps. Their histories only grow, so a step a killed run logged after its checkpoint keeps
  its first value: the same file keeps each metric's last logged step, and the resumed run
  logs a metric only past it. The file names the model: another model's record, or a file of
  that name no mypt run wrote, is refused before the run (check_run_records), not overwritten.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from mypt.errors import ConfigError, InputError
from mypt.io import read_json, write_json

# The variables that point MLflow elsewhere than METRICS_DIR/mlflow.db (mlflow reads them itself too).
MLFLOW_URI_ENV, MLFLOW_EXPERIMENT_ENV = "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME"


# The loggers that keep their run's id in METRICS_DIR, and the file each keeps it in.
RECORDS = {"mlflow": "mlflow_run.json", "wandb": "wandb_run.json"}


def _read_record(path: Path) -> dict | None:
    """The run record a mypt run wrote at `path` ({} where there is none), or None where the
    file is not one: a record is {"run_id", "where", "last_step"} and, since mypt named the
    model in it, "model"."""
    if not os.path.lexists(path):
        return {}
    if not path.is_file() or path.is_symlink():
        return None
    try:
        saved = read_json(path)  # (its message is check_run_record's to say)
    except (InputError, OSError):
        return None
    if not isinstance(saved.get("run_id"), str) or not isinstance(saved.get("last_step", {}), dict) or \
            not isinstance(saved.get("model", ""), str):
        return None
    return saved


def check_run_record(directory: Path, name: str, model: str | None) -> dict:
    """The record of logger `name` (RECORDS) in `directory`, {} where there is none: one a mypt
    run of `model` wrote (or one from before records named the model). A user's file of that
    name, or another model's record (a --resume would log into that model's run), is refused:
    the run would overwrite it."""
    saved = _read_record(Path(directory) / RECORDS[name])
    if saved is None:
        raise InputError(f"--metrics_dir {directory} holds {RECORDS[name]}, which no mypt run wrote and "
                         f"--logger {name} would overwrite: choose another --metrics_dir, or move it out of it")
    owner = saved.get("model")
    if model is not None and owner is not None and owner != model:
        raise InputError(f"--metrics_dir {directory} holds {RECORDS[name]}, the {name} run of model {owner!r}, "
                         f"not of {model!r}: choose a --metrics_dir of this model's own (the train stage uses "
                         "dvclive/MODEL_NAME)")
    return saved


def check_run_records(directory: Path, loggers: tuple[str, ...], model: str | None) -> dict[str, dict]:
    """Before a run: check_run_record of each chosen logger that keeps one, {name: record}."""
    return {name: check_run_record(directory, name, model) for name in loggers if name in RECORDS}


class RunRecord:
    """METRICS_DIR/NAME_run.json: the run a logger writes to, the model and each metric's last
    logged step, so --resume finds the run again and logs no step twice."""

    def __init__(self, directory: Path, name: str, resume: bool, model: str, saved: dict):
        """`saved`: the record as check_run_records read it before the run (open_tracker's). A new
        run (not `resume`) starts a new record."""
        self.path, self.model = Path(directory) / RECORDS[name], model
        saved = saved if resume else {}
        self.run_id: str | None = saved.get("run_id")
        self.where: str | None = saved.get("where")
        self.last: dict[str, int] = dict(saved.get("last_step", {}))

    def log(self, step: int, values: dict, send) -> None:
        """send(new) with the values of metrics not yet logged at `step` or later (none: no
        call), then record their step."""
        new = {k: v for k, v in values.items() if step > self.last.get(k, -1)}
        if new:
            send(new)
            self.save(self.run_id, self.where, new, step)

    def save(self, run_id: str, where: str, logged: dict | None = None, step: int = 0) -> None:
        self.run_id, self.where = run_id, where
        self.last.update({k: step for k in logged or {}})
        write_json(self.path, {"model": self.model, "run_id": run_id, "where": where, "last_step": self.last})


class TensorBoardLogger:
    def __init__(self, directory: Path, run_name: str, resume: bool, resume_step: int | None):
        from torch.utils.tensorboard import SummaryWriter

        purge = 0 if not resume else resume_step + 1 if resume_step is not None else None
        self.writer = SummaryWriter(str(Path(directory) / "tensorboard"), purge_step=purge)

    def __call__(self, step: int, values: dict) -> None:
        for name, value in values.items():
            self.writer.add_scalar(name, value, step)
        self.writer.flush()  # on disk when the call returns, as dvclive's files are

    def close(self, failed: bool = False) -> None:
        self.writer.close()


class MlflowLogger:
    def __init__(self, directory: Path, run_name: str, resume: bool, resume_step: int | None, record: dict):
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        self.record = RunRecord(directory, "mlflow", resume, run_name, record)
        # MLflow 3 refuses a plain-file store unless told to: SQLite is its local default.
        uri = os.environ.get(MLFLOW_URI_ENV) or f"sqlite:///{(Path(directory) / 'mlflow.db').resolve()}"
        self.client = MlflowClient(tracking_uri=uri)
        try:
            if self.record.run_id:
                self._continue(self.record.run_id, uri)
                self.run_id = self.record.run_id
            else:
                self.run_id = self.client.create_run(self._experiment(), run_name=run_name).info.run_id
        except MlflowException as e:
            raise ConfigError(f"--logger mlflow: the tracking store {uri} refused the run: "
                              f"{str(e).splitlines()[0]}") from None
        self.record.save(self.run_id, uri)

    def _continue(self, run_id: str, uri: str) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_run(run_id)
        except MlflowException as e:
            if e.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            raise ConfigError(f"--resume: the MLflow run {run_id} of {self.record.path} is not in the tracking "
                              f"store {uri} (it was logged to {self.record.where}): set {MLFLOW_URI_ENV} to that "
                              f"store, or delete {self.record.path} to log a new run") from None
        self.client.update_run(run_id, status="RUNNING")

    def _experiment(self) -> str:
        name = os.environ.get(MLFLOW_EXPERIMENT_ENV)
        if not name:
            return "0"  # MLflow's Default experiment, in every store
        found = self.client.get_experiment_by_name(name)
        return found.experiment_id if found else self.client.create_experiment(name)

    def __call__(self, step: int, values: dict) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.record.log(step, values, lambda new: self.client.log_batch(
            self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in new.items()]))

    def close(self, failed: bool = False) -> None:
        self.client.set_terminated(self.run_id, status="FAILED" if failed else "FINISHED")


class WandbLogger:
    def __init__(self, directory: Path, run_name: str, resume: bool, resume_step: int | None, record: dict):
        import wandb

        self.record = RunRecord(directory, "wandb", resume, run_name, record)
        # wandb's own variables win: WANDB_DIR over METRICS_DIR, WANDB_NAME over the model's name.
        where = {} if os.environ.get("WANDB_DIR") else {"dir": str(directory)}
        name = {} if os.environ.get("WANDB_NAME") else {"name": run_name}
        same = {"id": self.record.run_id, "resume": "allow"} if self.record.run_id else {}
        try:
            self.run = wandb.init(**name, **where, **same)
        except wandb.errors.Error as e:
            raise ConfigError(f"--logger wandb: {str(e).splitlines()[0].rstrip('.')}; or set WANDB_MODE=offline to log "
                              "locally and upload later with `wandb sync`") from None
        self.record.save(self.run.id, self.run.dir)

    def __call__(self, step: int, values: dict) -> None:
        # fit's step: the x of every chart, as in the other loggers
        self.record.log(step, values, lambda new: self.run.log(new, step=step))

    def close(self, failed: bool = False) -> None:
        self.run.finish(exit_code=1 if failed else 0)


CLIENTS = {"tensorboard": TensorBoardLogger, "mlflow": MlflowLogger, "wandb": WandbLogger}
