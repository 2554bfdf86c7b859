"""Stage dedup: exact line dedup across all files of one corpus, in bounded memory."""

from pathlib import Path

import click

from mypt.cli import fail, option
from mypt.io import write_json
from mypt.prepare import dedup
from mypt.text import InputError


@click.command()
@option("--in_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True)
@option("--out_dir", type=click.Path(file_okay=False, path_type=Path), required=True)
@option("--stats", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Metrics JSON to write.")
@option("--enabled", type=bool, default=True, show_default=True, help="false passes the files through unchanged.")
@option("--min_chars", type=click.IntRange(min=0), default=24, show_default=True,
        help="Lines whose dedup key is shorter are never dropped.")
@option("--memory_mb", type=click.IntRange(min=1), default=256, show_default=True,
        help="Memory budget for keys; beyond it dedup spills to disk, still exact.")
@option("--workers", type=click.IntRange(min=1), default=1, show_default=True)
def main(in_dir, out_dir, stats, enabled, min_chars, memory_mb, workers) -> None:
    """Dedup the cleaned corpus --in_dir into --out_dir."""
    try:
        manifest = dedup(in_dir, out_dir, enabled=enabled, min_chars=min_chars, memory_mb=memory_mb, workers=workers)
    except (InputError, ValueError) as e:
        fail(str(e))
    write_json(stats, manifest["stats"]["dedup"])


if __name__ == "__main__":
    main()
