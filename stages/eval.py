"""Stage eval: loss and perplexity of a checkpoint over whole val splits, deterministically."""

from pathlib import Path

import click

from mypt.config import EvalSettings
from mypt.eval_command import evaluate_model, parse_datasets
from mypt.io import write_json
from mypt.options import MyptCommand, option, settings_options


@click.command(cls=MyptCommand)
@settings_options(EvalSettings)
@option("--dataset", "datasets", multiple=True, required=True, metavar="NAME=DIR",
        help="A dataset whose val split to evaluate, under a name (several allowed).")
@option("--metrics", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Metrics JSON to write.")
def main(datasets, metrics, **flags):
    """Write {NAME: {loss, perplexity, tokens}} for every --dataset NAME=DIR."""
    write_json(metrics, evaluate_model(EvalSettings.from_flags(flags), parse_datasets(datasets), click.echo))


if __name__ == "__main__":
    main()
