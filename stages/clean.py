"""Stage clean: decode, normalize and filter one corpus; stats with drop reasons."""

from pathlib import Path

import click

from mypt.cli import GreedyCommand, fail, option
from mypt.io import write_json
from mypt.prepare import clean
from mypt.text import InputError


@click.command(cls=GreedyCommand)
@option("--input_files", multiple=True, required=True, help="Files, directories or globs (several allowed).")
@option("--out_dir", type=click.Path(file_okay=False, path_type=Path), required=True)
@option("--stats", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Metrics JSON to write.")
@option("--normalize", type=bool, default=True, show_default=True, help="true/false: NFC, newlines, control chars, trailing spaces.")
@option("--filter", "filter_", type=bool, default=True, show_default=True, help="true/false: the line filter.")
@option("--max_line_chars", type=click.IntRange(min=1), default=100_000, show_default=True)
@option("--workers", type=click.IntRange(min=1), default=1, show_default=True)
def main(input_files, out_dir, stats, normalize, filter_, max_line_chars, workers) -> None:
    """Clean --input_files into --out_dir (one file per source, plus manifest.json)."""
    try:
        manifest = clean(list(input_files), out_dir, normalize=normalize, filter=filter_,
                         max_line_chars=max_line_chars, workers=workers)
    except InputError as e:
        fail(str(e))
    write_json(stats, manifest["stats"]["clean"])


if __name__ == "__main__":
    main()
