"""Stage eval: loss and perplexity of a checkpoint over whole val splits, deterministically."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's mypt, whose files dvc.lock hashes, before any installed one
from mypt.signals import ctrl_c_says_aborted

ctrl_c_says_aborted()  # first: a Ctrl-C while the modules below load says Aborted!, not a traceback
import click
from mypt.config import EvalSettings
from mypt.eval_command import evaluate_model, parse_datasets
from mypt import checkpoint
from mypt.io import ANY_NAME, check_report_paths, write_reports
from mypt.options import MyptCommand, option, settings_options


@click.command(cls=MyptCommand)
@settings_options(EvalSettings)
@option("--dataset", "datasets", multiple=True, required=True, metavar="[NAME=]DIR",
        help="A dataset whose val split to evaluate, under a name (several allowed; a bare DIR is named by its "
             "last part).")
@option("--metrics", type=click.Path(dir_okay=False, path_type=Path), required=True,
        help="Headline JSON to write: {loss: {NAME: val loss}}.")
@option("--stats", type=click.Path(dir_okay=False, path_type=Path),
        help="Full JSON to write: {NAME: {loss, perplexity, tokens}}.")
def main(datasets, metrics, stats, **flags):
    """Evaluate the model on every --dataset [NAME=]DIR: its val losses go to --metrics (what
    `dvc metrics show` and `dvc exp show` compare), perplexity and token counts to --stats."""
    settings, named = EvalSettings.from_flags(flags), parse_datasets(datasets)
    # The reports' shapes, as written below; an older eval wrote --stats' shape to --metrics.
    full = {ANY_NAME: {"loss": float, "perplexity": float, "tokens": int}}
    check_report_paths({"--metrics": (metrics, [{"loss": {ANY_NAME: float}}, full]), "--stats": (stats, full)},
                       [("--model_name", checkpoint.resolve(settings.model_name, settings.checkpoints_dir)),
                        *(("--dataset", d) for d in named.values())])
    results = evaluate_model(settings, named, click.echo)
    # One key per dataset under "loss": the rows of `dvc metrics show` (one per model) share
    # the columns loss.general, loss.domain.
    write_reports({metrics: {"loss": {name: r["loss"] for name, r in results.items()}},
                   **({stats: results} if stats is not None else {})})


if __name__ == "__main__":
    main()
