"""Stage vocab: the tokenizer every corpus of the pipeline shares (char: built from the
general corpus, so the domain corpus is tokenized with the base model's vocabulary)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's mypt, whose files dvc.lock hashes, before any installed one
from mypt.signals import ctrl_c_says_aborted

ctrl_c_says_aborted()  # first: a Ctrl-C while the modules below load says Aborted!, not a traceback
import click
from mypt.options import MyptCommand, option, settings_options
from mypt.steps.tokenize import TokenizeSettings
from mypt.steps.vocab import vocab


@click.command(cls=MyptCommand)
@option("--in_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True,
        help="Cleaned (or deduped) corpus whose characters make the char vocabulary.")
@option("--out_dir", type=click.Path(file_okay=False, path_type=Path), required=True)
@settings_options(TokenizeSettings)
def main(in_dir, out_dir, **flags) -> None:
    """Write --out_dir/tokenizer_state.json."""
    click.echo(f"vocab: {vocab(in_dir, out_dir, TokenizeSettings.from_flags(flags))}")


if __name__ == "__main__":
    main()
