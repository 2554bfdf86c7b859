"""Stage split: train/ and val/ shards plus dataset_metadata.json (the guide's dataset)."""

from pathlib import Path

import click

from mypt.cli import fail, option, print_summary
from mypt.io import write_json
from mypt.split import split
from mypt.text import InputError


@click.command()
@option("--in_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True)
@option("--out_dir", type=click.Path(file_okay=False, path_type=Path), required=True)
@option("--stats", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Metrics JSON to write.")
@option("--val_fraction", type=click.FloatRange(0.0, 1.0, max_open=True), default=0.1, show_default=True)
@option("--chunk_tokens", type=click.IntRange(min=1), default=16384, show_default=True)
@option("--split_mode", type=click.Choice(["random", "tail"]), default="random", show_default=True)
@option("--seed", type=int, default=1337, show_default=True)
def main(in_dir, out_dir, stats, val_fraction, chunk_tokens, split_mode, seed) -> None:
    """Split the sharded corpus --in_dir into the dataset --out_dir."""
    try:
        meta = split(in_dir, out_dir, val_fraction=val_fraction, chunk_tokens=chunk_tokens,
                     split_mode=split_mode, seed=seed)
    except InputError as e:
        fail(str(e))
    write_json(stats, {**meta["stats"]["split"], "train_shards": len(meta["train"]["shards"]),
                       "val_shards": len(meta["val"]["shards"])})
    print_summary(meta, out_dir)


if __name__ == "__main__":
    main()
