"""Stage eval: loss and perplexity of a checkpoint over whole val splits, deterministically."""

from pathlib import Path

import click

from mypt.config import EvalSettings
from mypt.data import check_same_tokenizer, resolve_device
from mypt.io import write_json
from mypt.model import load_model
from mypt.options import MyptCommand, option, settings_options
from mypt.train import evaluate_dataset


@click.command(cls=MyptCommand)
@option("--model_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True,
        help="Checkpoint directory (checkpoints/NAME).")
@option("--dataset", "datasets", multiple=True, required=True, metavar="NAME=DIR",
        help="A dataset whose val split to evaluate, under a name (several allowed).")
@option("--metrics", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Metrics JSON to write.")
@settings_options(EvalSettings)
def main(model_dir, datasets, metrics, **flags):
    """Write {NAME: {loss, perplexity, tokens}} for every --dataset NAME=DIR."""
    s = EvalSettings.from_flags(flags)
    specs = [spec.partition("=") for spec in datasets]
    for spec, (_, sep, _) in zip(datasets, specs):
        if not sep:
            raise click.BadParameter(f"{spec!r}: expected NAME=DIR", param_hint="--dataset")
    model, tokenizer, _ = load_model(model_dir, resolve_device(s.device))
    for name, _, directory in specs:
        check_same_tokenizer(tokenizer, Path(directory), f"the model {model_dir}",
                             f"--dataset {name}={directory}")
    results = {}
    for name, _, directory in specs:
        results[name] = evaluate_dataset(model, Path(directory), s.batch_size, s.max_tokens)
        click.echo(f"{name}: loss {results[name]['loss']:.4f}, perplexity {results[name]['perplexity']:.2f} "
                   f"over {results[name]['tokens']:,} tokens")
    write_json(metrics, results)


if __name__ == "__main__":
    main()
