"""prepare-dataset: the data steps composed (clean -> dedup -> vocab -> tokenize -> shard ->
split) in a work directory that is removed afterwards, so only the dataset remains.

The DVC stages call the same step functions one at a time (mypt.steps), and both give
byte-identical shards from the same input and settings. Where one step would only read back
what the previous one wrote, prepare-dataset streams instead, through the same functions:
dedup's first phase hashes the lines clean writes as they are written (clean's `sink`: the
steps chained, as datatrove chains its steps), split reads the token files in place of the
shards (shard.sharded_view), and one pool of workers serves every step.

With `--engine ray` the steps' work units run as Ray tasks (mypt.ray_engine) on one Ray
connection for the whole run; the bytes are the local engine's.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from mypt.errors import InputError
from mypt.io import check_movable, check_replaceable, check_written, make_own_dir, remove_own, remove_work
from mypt.lock import output_lock
from mypt.names import EXPORT_RECORD
from mypt.parallel import engine_session, shared_pool
from mypt.readers import KnownSources, input_bytes, resolve_inputs
from mypt.dataset_dir import check_same_dataset, recover_dataset, work_dir
from mypt.shards import METADATA_FILE, dataset_tokenizer, read_metadata
from mypt.steps.clean import CleanSettings, clean
from mypt.steps.dedup import DedupSettings, Hashing, dedup
from mypt.steps.shard import ShardSettings, sharded_view
from mypt.steps.split import DATASET_FILES, SplitSettings, dataset_files, split_tokens
from mypt.steps.tokenize import TokenizeSettings, tokenize
from mypt.steps.vocab import build_vocab
from mypt.text import recorded_as, source_place
from mypt.tokenizer_match import check_tokenizer
from mypt.tokenizers import Tokenizer, make_tokenizer, spec_kind, tokenizer_class


@dataclass(frozen=True)
class PrepareSettings:
    """The settings of every step of prepare-dataset (one flag each, spelled as the fields'
    `flag` metadata says: `--dedup_min_chars` is DedupSettings.min_chars)."""

    clean: CleanSettings = field(default_factory=CleanSettings)
    dedup: DedupSettings = field(default_factory=DedupSettings)
    tokenize: TokenizeSettings = field(default_factory=TokenizeSettings)
    shard: ShardSettings = field(default_factory=ShardSettings)
    split: SplitSettings = field(default_factory=SplitSettings)

    STEP_SETTINGS = (CleanSettings, DedupSettings, TokenizeSettings, ShardSettings, SplitSettings)

    @classmethod
    def from_flags(cls, flags: dict) -> "PrepareSettings":
        return cls(*(settings_cls.from_flags(flags) for settings_cls in cls.STEP_SETTINGS))

    def recorded(self) -> dict:
        """What decides the dataset's bytes, as recorded in its metadata."""
        out: dict = {}
        for f in dataclasses.fields(self):
            out.update(getattr(self, f.name).recorded())
        return out


def check_out_dir(out_dir: Path, settings: PrepareSettings, paths: list[Path], overwrite: bool) -> None:
    """Refuse to replace a different dataset unless told to overwrite: other settings, or other
    sources (each input known by its size and recorded hash, readers.KnownSources: a file of
    the same name with other bytes is another source, the same bytes under another name the
    same). Where an output may go at all (never over the inputs, the current or home
    directory, or foreign files, even with --overwrite) is io.check_replaceable's rule,
    checked before this."""
    out_dir = Path(out_dir)
    if overwrite or not (out_dir / METADATA_FILE).is_file():
        return
    old = read_metadata(out_dir)
    new_settings = settings.recorded()
    # A dataset records the kind (hf), the flag may name its file (hf:tok.json).
    new_settings["tokenization"] = spec_kind(new_settings["tokenization"])
    # The settings first, and the sizes: a dataset they tell apart is refused before any input is hashed.
    sizes = Counter(input_bytes(p) for p in paths)
    check_same_dataset(out_dir, old, not Counter(s["bytes"] for s in old["sources"]) - sizes, new_settings)
    # Names recorded in this working directory; skipped binary files are recorded by name only.
    here = [Path.cwd()]
    known, taken, rest = KnownSources(old["sources"], here), set(), []
    for path in paths:
        found = known.find(path, taken)
        if found is None:
            rest.append(source_place(path))
        else:
            taken.add(found[0])
    binary = [place for n in old.get("skipped_binary_files", []) for place in recorded_as(n, here)]
    check_same_dataset(out_dir, old, len(taken) == len(old["sources"]) and sorted(rest) == sorted(binary),
                       new_settings)


def prepare_dataset(input_files: list[str], out_dir: Path, settings: PrepareSettings = PrepareSettings(), *,
                    tokenizer_from: Path | None = None, overwrite: bool = False,
                    reused: Tokenizer | None = None) -> dict:
    """Clean, dedup, tokenize, shard and split `input_files` into the dataset `out_dir`.

    Intermediate files live in `.OUT.work` beside `out_dir` and are removed at the end.
    `tokenizer_from` reuses the vocabulary of another dataset or checkpoint (domain adaptation);
    `reused`: its tokenizer, when the caller loaded it already and checked it against
    `settings.tokenize.tokenization` (a Hub model's tokenizer.json is parsed and probed once).
    One run at a time per `out_dir` (mypt.lock): a second would delete this one's work directory.
    """
    out_dir = Path(out_dir)
    paths = resolve_inputs(input_files)  # once here for both checks (the clean step resolves its own)
    inputs = paths + ([tokenizer_from] if tokenizer_from is not None else [])
    check_replaceable(out_dir, inputs, "--out_dir", marker=METADATA_FILE, kind="mypt dataset")
    with output_lock(out_dir, "--out_dir"):
        # Before the checks and the long steps: a dataset a killed swap left aside is put back
        # (then --overwrite decides on it), and what is in the way of the split step's output
        # is refused now, not after hours of cleaning and tokenizing.
        recover_dataset(out_dir, "--out_dir")
        check_out_dir(out_dir, settings, paths, overwrite)
        check_written(out_dir, DATASET_FILES, dataset_files, METADATA_FILE, "--out_dir", "mypt dataset")
        check_movable(out_dir, DATASET_FILES)
        return prepare_steps(input_files, out_dir, settings, tokenizer_from, reused)


def load_tokenizer_from(path: Path) -> Tokenizer:
    """--tokenizer_from: a mypt dataset's or checkpoint's tokenizer (tokenizer_state.json), or
    the one a Hugging Face model directory's model trains with (--init_from_model hf:DIR). A
    dataset's must be the one its metadata records (--append_to reads it here too). An export's
    directory is a Hugging Face one (its tokenizer_state.json is stale once transformers
    changed its tokenizer.json: hf_import reads it only while it is not)."""
    path = Path(path)
    exported = (path / EXPORT_RECORD).is_file()
    if not exported and ((path / "tokenizer_state.json").is_file() or not (path / "config.json").is_file()):
        return dataset_tokenizer(path)
    from mypt.hf_import import hf_model_tokenizer

    return hf_model_tokenizer(path, "--tokenizer_from")


def prepare_steps(input_files: list[str], out_dir: Path, settings: PrepareSettings,
                  tokenizer_from: Path | None = None, reused: Tokenizer | None = None) -> dict:
    """The steps of prepare_dataset, without its checks and lock (the caller holds them)."""
    spec = settings.tokenize.tokenization
    tokenizer = None
    if reused is not None:  # checked by the caller (building an hf:FILE spec's tokenizer again parses and probes it)
        tokenizer = reused
    elif tokenizer_from is not None:
        tokenizer = load_tokenizer_from(tokenizer_from)
        hint = "drop one of the two flags" if tokenizer.kind == spec_kind(spec) else \
            f"pass --tokenization {tokenizer.kind}, or leave --tokenization out (it then follows --tokenizer_from)"
        check_tokenizer(tokenizer, spec, f"--tokenizer_from {tokenizer_from}", f"--tokenization {spec}", hint,
                        InputError)
    elif not tokenizer_class(spec).learns_vocabulary:
        tokenizer = make_tokenizer(spec)  # fail now, not after cleaning, when a vocabulary file is missing
    work = work_dir(out_dir)
    remove_own(work, "--out_dir")  # a killed run's (we hold the lock)
    make_own_dir(work)
    try:
        with engine_session(settings.clean):
            return _run_steps(input_files, out_dir, work, settings, tokenizer)
    finally:
        remove_work(work, ignore_errors=True)


def _run_steps(input_files: list[str], out_dir: Path, work: Path, settings: PrepareSettings,
               tokenizer: Tokenizer | None) -> dict:
    # A pool of workers serves the steps that map, started on first use. Two in turn: one
    # for clean, one from dedup's write phase to tokenize, so that no idle worker adds to
    # the memory of dedup's decide phase in the parent (and none to split's).
    with shared_pool(settings.clean):
        # Dedup's first phase (hashing) is chained into clean's pass over the lines, so
        # they are not read back.
        hashed = work / "hashed"
        hashed.mkdir()  # empty when dedup is off
        sink = Hashing(hashed, settings.dedup.min_chars) if settings.dedup.enabled else None
        clean(input_files, work / "clean", settings.clean, sink=sink)
    text_dir = work / "clean"
    with shared_pool(settings.clean):
        if settings.dedup.enabled:
            dedup(work / "clean", work / "dedup", settings.dedup, hashed=hashed)
            shutil.rmtree(work / "clean")
            shutil.rmtree(hashed)
            text_dir = work / "dedup"
        tokenizer = tokenizer or build_vocab(text_dir, settings.tokenize)
        tokenize(text_dir, work / "tokens", tokenizer, settings.tokenize)
    shutil.rmtree(text_dir)
    # split reads the token files as the shards would hold them: writing the shards would
    # only copy them once more.
    return split_tokens(*sharded_view(work / "tokens", settings.shard), work / "tokens", out_dir, settings.split)
