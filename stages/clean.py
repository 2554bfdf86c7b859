"""Stage clean: decode, normalize and filter one corpus; stats with drop reasons."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's mypt, whose files dvc.lock hashes, before any installed one
from mypt.signals import ctrl_c_says_aborted

ctrl_c_says_aborted()  # first: a Ctrl-C while the modules below load says Aborted!, not a traceback
import click
from mypt.io import check_report_paths, report_set_aside, write_json
from mypt.options import GreedyCommand, input_files_option, option, settings_options
from mypt.readers import formats_help, named_paths
from mypt.steps import bad_lines_note
from mypt.steps.clean import COUNTERS, CleanSettings, clean


@click.command(cls=GreedyCommand)
@input_files_option(formats_help())
@option("--out_dir", type=click.Path(file_okay=False, path_type=Path), required=True)
@option("--stats", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Metrics JSON to write.")
@settings_options(CleanSettings)
def main(input_files, out_dir, stats, **flags) -> None:
    """Clean --input_files into --out_dir (one file per source, plus manifest.json)."""
    # Each input as the run reads it: a glob's matches, a directory whole.
    inputs = [m for p in input_files if p for m in named_paths(p)]  # (an empty one: clean names it)
    # A previous report of this stage holds the clean counts' names only (an older mypt's, some of them).
    check_report_paths({"--stats": (stats, dict.fromkeys(COUNTERS, int))},
                       [("--out_dir", out_dir), *(("--input_files", p) for p in inputs)])
    with report_set_aside(stats, out_dir):  # (never the previous report beside a new output)
        manifest = clean(list(input_files), out_dir, CleanSettings.from_flags(flags))
    write_json(stats, manifest["stats"]["clean"])
    if note := bad_lines_note(manifest):
        click.echo(note)


if __name__ == "__main__":
    main()
