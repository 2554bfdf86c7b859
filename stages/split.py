"""Stage split: train/ and val/ shards plus dataset_metadata.json (the guide's dataset)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's mypt, whose files dvc.lock hashes, before any installed one
from mypt.signals import ctrl_c_says_aborted

ctrl_c_says_aborted()  # first: a Ctrl-C while the modules below load says Aborted!, not a traceback
import click
from mypt.dataset_dir import split_stage
from mypt.io import check_report_paths, report_set_aside, write_json
from mypt.options import MyptCommand, option, settings_options
from mypt.steps.split import COUNTERS, SplitSettings, summary_lines


SHARD_COUNTS = {"train_shards": "train", "val_shards": "val"}  # the report's shard counts, by split


@click.command(cls=MyptCommand)
@option("--in_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True)
@option("--out_dir", type=click.Path(file_okay=False, path_type=Path), required=True)
@option("--stats", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Metrics JSON to write.")
@option("--overwrite", is_flag=True, help="Replace a dataset in --out_dir that is not this split of --in_dir "
        "(prepare-dataset's, one appended to, another --val_fraction); never other files.")
@settings_options(SplitSettings)
def main(in_dir, out_dir, stats, overwrite, **flags) -> None:
    """Split the sharded corpus --in_dir into the dataset --out_dir."""
    # A previous report of this stage holds the split counts' names and its shard counts only.
    shape = dict.fromkeys([*COUNTERS, *SHARD_COUNTS], int)
    check_report_paths({"--stats": (stats, shape)}, [("--in_dir", in_dir), ("--out_dir", out_dir)])
    with report_set_aside(stats, out_dir):  # (never the previous report beside a new output)
        meta = split_stage(in_dir, out_dir, SplitSettings.from_flags(flags), overwrite)
    write_json(stats, {**meta["stats"]["split"], **{name: len(meta[split]["shards"])
                                                    for name, split in SHARD_COUNTS.items()}})
    for line in summary_lines(meta, out_dir):
        click.echo(line)


if __name__ == "__main__":
    main()
