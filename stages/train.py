"""Stage train (and adapt): mypt train, plus metrics, loss plots and a PNG for DVC."""

from pathlib import Path

import click

from mypt.cli import model_options, option, run_training_or_fail, train_request, training_options
from mypt.report import write_training_report


@click.command()
@model_options
@training_options
@option("--metrics", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Metrics JSON to write.")
@option("--plots_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
        help="Where train_loss.csv, eval_loss.csv and loss.png go.")
def main(model_name, dataset_dir, input_file, config_file, tokenization, init_from_model, eval_dataset_dir, resume,
         checkpoints_dir, metrics, plots_dir, **flags):
    """Train MODEL_NAME (all of `mypt train`'s flags) and write its metrics and plots."""
    result = run_training_or_fail(train_request(model_name, dataset_dir, input_file, config_file, tokenization,
                                                init_from_model, eval_dataset_dir, resume, checkpoints_dir, flags))
    write_training_report(result["history"], metrics, plots_dir, f"{model_name}: loss")


if __name__ == "__main__":
    main()
