"""Stage shard: one corpus' token streams, in corpus order, as fixed-size uint32 shards."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's mypt, whose files dvc.lock hashes, before any installed one
from mypt.signals import ctrl_c_says_aborted

ctrl_c_says_aborted()  # first: a Ctrl-C while the modules below load says Aborted!, not a traceback
import click
from mypt.options import MyptCommand, option, settings_options
from mypt.steps.shard import ShardSettings, shard


@click.command(cls=MyptCommand)
@option("--in_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True)
@option("--out_dir", type=click.Path(file_okay=False, path_type=Path), required=True)
@settings_options(ShardSettings)
def main(in_dir, out_dir, **flags) -> None:
    """Write --out_dir/shard_NNNNN.bin, documents.bin and manifest.json."""
    shard(in_dir, out_dir, ShardSettings.from_flags(flags))


if __name__ == "__main__":
    main()
