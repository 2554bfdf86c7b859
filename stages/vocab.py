"""Stage vocab: the tokenizer every corpus of the pipeline shares (char: built from the
general corpus, so the domain corpus is tokenized with the base model's vocabulary)."""

from pathlib import Path

import click

from mypt.cli import fail, option
from mypt.io import staged_dir
from mypt.prepare import build_vocab
from mypt.text import InputError
from mypt.tokenizer import TokenizerError


@click.command()
@option("--in_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True,
        help="Cleaned (or deduped) corpus whose characters make the char vocabulary.")
@option("--out_dir", type=click.Path(file_okay=False, path_type=Path), required=True)
@option("--tokenization", type=click.Choice(["gpt2", "char"]), default="gpt2", show_default=True)
@option("--workers", type=click.IntRange(min=1), default=1, show_default=True)
def main(in_dir, out_dir, tokenization, workers) -> None:
    """Write --out_dir/tokenizer_state.json."""
    try:
        tokenizer = build_vocab(in_dir, tokenization, workers)
    except (InputError, TokenizerError) as e:
        fail(str(e))
    with staged_dir(out_dir) as stage:
        tokenizer.save(stage)
    click.echo(f"vocab: {tokenizer}")


if __name__ == "__main__":
    main()
