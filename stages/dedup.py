"""Stage dedup: exact line dedup across all files of one corpus, in bounded memory."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's mypt, whose files dvc.lock hashes, before any installed one
from mypt.signals import ctrl_c_says_aborted

ctrl_c_says_aborted()  # first: a Ctrl-C while the modules below load says Aborted!, not a traceback
import click
from mypt.io import check_report_paths, report_set_aside, write_json
from mypt.options import MyptCommand, option, settings_options
from mypt.steps.dedup import COUNTERS, DedupSettings, dedup


@click.command(cls=MyptCommand)
@option("--in_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True)
@option("--out_dir", type=click.Path(file_okay=False, path_type=Path), required=True)
@option("--stats", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Metrics JSON to write.")
@settings_options(DedupSettings)
def main(in_dir, out_dir, stats, **flags) -> None:
    """Dedup the cleaned corpus --in_dir into --out_dir."""
    # A previous report of this stage holds the dedup counts' names only (an older mypt's, some of them).
    check_report_paths({"--stats": (stats, dict.fromkeys(COUNTERS, int))}, [("--in_dir", in_dir),
                                                                             ("--out_dir", out_dir)])
    with report_set_aside(stats, out_dir):  # (never the previous report beside a new output)
        manifest = dedup(in_dir, out_dir, DedupSettings.from_flags(flags))
    write_json(stats, manifest["stats"].get("dedup", {}))  # (off: no counts, as prepare-dataset --no_dedup)


if __name__ == "__main__":
    main()
