"""Stage train (and adapt): mypt train, plus metrics, loss plots and a PNG for DVC."""

from pathlib import Path

import click

from mypt.config import train_options
from mypt.options import MyptCommand, option
from mypt.report import write_training_report
from mypt.train_command import run_from_flags


@click.command(cls=MyptCommand)
@train_options
@option("--metrics", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Metrics JSON to write.")
@option("--plots_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
        help="Where train_loss.csv, eval_loss.csv and loss.png go.")
def main(metrics, plots_dir, **flags):
    """Train MODEL_NAME (all of `mypt train`'s flags) and write its metrics and plots."""
    result = run_from_flags(flags, log=click.echo)
    write_training_report(result["history"], metrics, plots_dir, f"{flags['model_name']}: loss")


if __name__ == "__main__":
    main()
