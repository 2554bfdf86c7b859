"""Stage eval: loss and perplexity of a checkpoint over whole val splits, deterministically."""

from pathlib import Path

import click

from mypt.checkpoint import CheckpointError, load_model
from mypt.cli import fail, option
from mypt.data import DataError, resolve_device
from mypt.io import write_json
from mypt.model import ConfigError
from mypt.train import evaluate_dataset


@click.command()
@option("--model_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True,
        help="Checkpoint directory (checkpoints/NAME).")
@option("--dataset", "datasets", multiple=True, required=True, metavar="NAME=DIR",
        help="A dataset whose val split to evaluate, under a name (several allowed).")
@option("--metrics", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Metrics JSON to write.")
@option("--batch_size", type=click.IntRange(min=1), default=32, show_default=True)
@option("--max_tokens", type=click.IntRange(min=1), default=None, help="Evaluate at most this many tokens per split.")
@option("--device", default="auto", show_default=True)
def main(model_dir, datasets, metrics, batch_size, max_tokens, device):
    """Write {NAME: {loss, perplexity, tokens}} for every --dataset NAME=DIR."""
    try:
        model, _, _ = load_model(model_dir, resolve_device(device))
        results = {}
        for spec in datasets:
            name, sep, directory = spec.partition("=")
            if not sep:
                raise click.BadParameter(f"{spec!r}: expected NAME=DIR", param_hint="--dataset")
            results[name] = evaluate_dataset(model, Path(directory), batch_size, max_tokens)
            click.echo(f"{name}: loss {results[name]['loss']:.4f}, perplexity {results[name]['perplexity']:.2f} "
                       f"over {results[name]['tokens']:,} tokens")
    except (CheckpointError, DataError, ConfigError, FileNotFoundError) as e:
        fail(str(e))
    write_json(metrics, results)


if __name__ == "__main__":
    main()
