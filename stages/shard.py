"""Stage shard: one corpus' token streams, in corpus order, as fixed-size uint32 shards."""

from pathlib import Path

import click

from mypt.cli import fail, option
from mypt.prepare import shard
from mypt.text import InputError


@click.command()
@option("--in_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True)
@option("--out_dir", type=click.Path(file_okay=False, path_type=Path), required=True)
@option("--tokens_per_shard", type=click.IntRange(min=1), default=10_000_000, show_default=True)
def main(in_dir, out_dir, tokens_per_shard) -> None:
    """Write --out_dir/shard_NNNNN.bin, documents.bin and manifest.json."""
    try:
        shard(in_dir, out_dir, tokens_per_shard=tokens_per_shard)
    except InputError as e:
        fail(str(e))


if __name__ == "__main__":
    main()
