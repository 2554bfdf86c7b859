"""Stage train (and adapt): mypt train; --metrics_dir gets the run's dvclive metrics and
loss plots while it trains (declared as the stage's metrics and plots in dvc.yaml)."""

import click

from mypt.config import train_options
from mypt.options import MyptCommand
from mypt.gc_pause import gc_paused


@click.command(cls=MyptCommand)
@train_options
def main(**flags):
    """Train MODEL_NAME with all of `mypt train`'s flags."""
    with gc_paused():  # until the run is built (torch's imports): see mypt.gc_pause
        from mypt.train_command import run_from_flags

        run_from_flags(flags, log=click.echo)


if __name__ == "__main__":
    main()
