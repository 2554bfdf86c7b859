"""The loggers a training run writes its metrics to (`mypt train --logger`): their names, the
package each needs and where each writes.

A leaf the settings read (mypt.config): every command's options are built from them, so this
module imports no client. mypt.tracking opens the loggers a run chose; dvclive's client is
mypt.tracking's own, TensorBoard's, MLflow's and W&B's are in mypt.logger_clients.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Iterable

from mypt.errors import ConfigError


@dataclass(frozen=True)
class Logger:
    package: str  # the module its client imports
    extra: str | None  # the extra of mypt that installs it (None: one of mypt's own dependencies)
    writes: str  # where its metrics go, for --logger's help


LOGGERS = {
    "dvclive": Logger("dvclive", None, "METRICS_DIR/metrics.json and plots/, for `dvc exp show` and `dvc plots "
                                       "show`"),
    "tensorboard": Logger("tensorboard", "tensorboard", "event files in METRICS_DIR/tensorboard (`tensorboard "
                                                        "--logdir METRICS_DIR/tensorboard`)"),
    "mlflow": Logger("mlflow", "mlflow", "a run in $MLFLOW_TRACKING_URI's store, else in METRICS_DIR/mlflow.db "
                                         "(`mlflow ui --backend-store-uri sqlite:///METRICS_DIR/mlflow.db`); "
                                         "$MLFLOW_EXPERIMENT_NAME chooses the experiment"),
    "wandb": Logger("wandb", "wandb", "a Weights & Biases run, set up by wandb's own variables (WANDB_PROJECT, "
                                      "WANDB_MODE=offline...), its local files in METRICS_DIR/wandb unless "
                                      "WANDB_DIR says"),
}
DEFAULT = ("dvclive",)  # what --metrics_dir alone writes (as before --logger existed)


def logger_help() -> str:
    """--logger's help text: each logger and where it writes."""
    each = "; ".join(f"{name}: {logger.writes}" for name, logger in LOGGERS.items())
    return (f"Where the run's metrics go while it trains (needs --metrics_dir): {', '.join(LOGGERS)}, several as a "
            f"comma list or the flag given again. {each}. Default: dvclive. Every logger gets the same metric names "
            "and steps; --resume continues each one's run.")


def parse_loggers(values: Iterable[str]) -> tuple[str, ...]:
    """`("dvclive,tensorboard", "wandb")` -> `("dvclive", "tensorboard", "wandb")`: each
    named once, in the order given."""
    names: list[str] = []
    for value in values:
        for name in value.split(","):
            name = name.strip()
            if name and name not in LOGGERS:
                raise ConfigError(f"unknown logger {name!r}: choose among {', '.join(LOGGERS)} (a comma list, or "
                                  "--logger given again)")
            if name and name not in names:
                names.append(name)
    return tuple(names)


def _installed(package: str) -> bool:
    try:
        return importlib.util.find_spec(package) is not None
    except ValueError:  # a module set to None in sys.modules (how tests hide a package)
        return False


def check_installed(names: Iterable[str]) -> None:
    """Refuse, before a run starts, a logger whose package is not installed (found without
    importing it: a client costs seconds to import)."""
    for name in names:
        logger = LOGGERS[name]
        if not _installed(logger.package):
            how = f"pip install 'mypt[{logger.extra}]'" if logger.extra else f"pip install {logger.package}"
            raise ConfigError(f"--logger {name} needs the {logger.package} package, which is not installed: {how} "
                              f"(or leave {name} out of --logger)")
