"""Stage tokenize: one corpus to token streams, with the pipeline's shared tokenizer.

(Not named tokenize.py: a script directory is first on sys.path, and that name would
shadow the standard library's tokenize module for every stage.)
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's mypt, whose files dvc.lock hashes, before any installed one
from mypt.signals import ctrl_c_says_aborted

ctrl_c_says_aborted()  # first: a Ctrl-C while the modules below load says Aborted!, not a traceback
import click
from mypt.io import ANY_NAME, check_report_paths, report_set_aside, write_json
from mypt.options import MyptCommand, option, settings_options
from mypt.steps.tokenize import COUNTERS, TokenizeSettings, tokenize
from mypt.tokenizers import Tokenizer


@click.command(cls=MyptCommand)
@option("--in_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True)
@option("--tokenizer_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True,
        help="Directory holding tokenizer_state.json (the vocab stage's output).")
@option("--out_dir", type=click.Path(file_okay=False, path_type=Path), required=True)
@option("--stats", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Metrics JSON to write.")
@settings_options(TokenizeSettings, skip=("tokenization",))  # the vocab stage's choice
def main(in_dir, tokenizer_dir, out_dir, stats, **flags) -> None:
    """Tokenize --in_dir into --out_dir (NNNNN.tokens, NNNNN.docs, tokenizer_state.json)."""
    # A previous report of this stage holds these names only (an older mypt's, some of them).
    shape = {"unknown_token_counts": {ANY_NAME: int}, **dict.fromkeys(COUNTERS, int)}
    check_report_paths({"--stats": (stats, shape)}, [("--in_dir", in_dir), ("--tokenizer_dir", tokenizer_dir),
                                                     ("--out_dir", out_dir)])
    with report_set_aside(stats, out_dir):  # (never the previous report beside a new output)
        manifest = tokenize(in_dir, out_dir, Tokenizer.load(tokenizer_dir), TokenizeSettings.from_flags(flags))
    # Which characters were replaced stays in the dataset metadata; metrics keep numbers.
    write_json(stats, {k: v for k, v in manifest["stats"]["tokenize"].items() if k != "replaced_char_counts"})


if __name__ == "__main__":
    main()
