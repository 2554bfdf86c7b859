"""Stage tokenize: one corpus to token streams, with the pipeline's shared tokenizer.

(Not named tokenize.py: a script directory is first on sys.path, and that name would
shadow the standard library's tokenize module for every stage.)
"""

from pathlib import Path

import click

from mypt.cli import fail, option
from mypt.io import write_json
from mypt.prepare import tokenize
from mypt.text import InputError
from mypt.tokenizer import Tokenizer, TokenizerError


@click.command()
@option("--in_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True)
@option("--tokenizer_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True,
        help="Directory holding tokenizer_state.json (the vocab stage's output).")
@option("--out_dir", type=click.Path(file_okay=False, path_type=Path), required=True)
@option("--stats", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Metrics JSON to write.")
@option("--workers", type=click.IntRange(min=1), default=1, show_default=True)
def main(in_dir, tokenizer_dir, out_dir, stats, workers) -> None:
    """Tokenize --in_dir into --out_dir (NNNNN.tokens, NNNNN.docs, tokenizer_state.json)."""
    try:
        manifest = tokenize(in_dir, out_dir, Tokenizer.load(tokenizer_dir), workers=workers)
    except (InputError, TokenizerError) as e:
        fail(str(e))
    # Which characters were replaced stays in the dataset metadata; metrics keep numbers.
    write_json(stats, {k: v for k, v in manifest["stats"]["tokenize"].items() if k != "replaced_char_counts"})


if __name__ == "__main__":
    main()
