"""prepare-dataset --append_to: grow a dataset without losing or overwriting a shard.

The guide's recipe (prepare into data/new_shards, then `mv` its shards in) overwrites
shards, because every dataset numbers from shard_00000. Here the new input is prepared with
the dataset's own tokenizer and tokens_per_shard, and the grown dataset is built beside the
old one as `.NAME.partial`: the old shards hard-linked (copied where links are unavailable)
under their new numbers, the new shards moved in, metadata last. Numbering runs through
train, old then new, and then val, old then new, so val keeps the highest numbers; the old
train shards keep their names and bytes, and no shard is ever rewritten.

The swap is two renames: the dataset to `.NAME.append/old`, the partial directory to NAME.
Until the first, the old dataset is untouched; after the second, the new one is in place.
An append killed between them leaves the dataset in `.NAME.append/old`, and the next writer
of the dataset (an append or prepare-dataset --out_dir, under the same lock) puts it back
before anything else (dataset_dir.recover_dataset).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
from pathlib import Path
from typing import Iterable

from mypt.errors import InputError, OutputInPlace, listed, os_error_message
from mypt.io import (append_dir, check_movable, check_replaceable, is_own, keep_dir_attributes, loops, make_own_dir,
                     not_carried, partial_dir, remove_own, remove_work, unmark, write_json)
from mypt.lock import output_lock
from mypt.names import WORK_MARK
from mypt.dataset_dir import recover_dataset, restore_appended
from mypt.prepare import PrepareSettings, load_tokenizer_from, prepare_steps
from mypt.readers import KnownSources, resolve_inputs
from mypt.shards import (METADATA_FILE, SPLITS, TOKENIZER_RECORD, check_listed, list_shards, listed_entries,
                         read_metadata, shard_name, shard_tokens, unlisted_shards)
from mypt.steps.split import DATASET_FILES, SKIPPED_KEYS
from mypt.text import display_name
from mypt.settings import flag_name, is_recorded
from mypt.tokenizer_match import check_tokenizer
from mypt.tokenizers import spec_kind
# Settings the grown dataset must share with the old one (metadata records one of each).
INHERITED = ("tokenization", "tokens_per_shard")


def _recorded(settings: PrepareSettings, meta: dict, inherit: Iterable[str]) -> PrepareSettings:
    """The settings named in `inherit` (flags left at their defaults) take the values the
    dataset was prepared with, so appended text is cleaned, deduped and split the same way."""
    recorded, inherit = meta.get("settings", {}), set(inherit) - set(INHERITED)
    steps = {}
    for f in dataclasses.fields(settings):
        step = getattr(settings, f.name)
        changes = {sf.name: recorded[flag_name(sf)] for sf in dataclasses.fields(step)
                   if is_recorded(sf) and flag_name(sf) in inherit and flag_name(sf) in recorded}
        steps[f.name] = dataclasses.replace(step, **changes) if changes else step
    return dataclasses.replace(settings, **steps)


def _inherit(settings: PrepareSettings, meta: dict, inherit: Iterable[str], flag: str) -> PrepareSettings:
    settings = _recorded(settings, meta, inherit)
    have = {"tokenization": meta["tokenizer"]["kind"], "tokens_per_shard": meta["tokens_per_shard"]}
    inherit = set(inherit)
    tokenize = dataclasses.replace(settings.tokenize, tokenization=have["tokenization"]) \
        if "tokenization" in inherit else settings.tokenize
    shard = dataclasses.replace(settings.shard, tokens_per_shard=have["tokens_per_shard"]) \
        if "tokens_per_shard" in inherit else settings.shard
    settings = dataclasses.replace(settings, tokenize=tokenize, shard=shard)
    # The dataset records the kind (hf); --tokenization may name its file (hf:tok.json), which
    # prepare_steps then checks against the dataset's tokenizer.
    given = {"tokenization": spec_kind(settings.tokenize.tokenization),
             "tokens_per_shard": settings.shard.tokens_per_shard}
    for key in INHERITED:
        if given[key] != have[key]:
            raise InputError(f"{flag} holds a dataset with {key} {have[key]!r} but --{key} is {given[key]!r}: "
                             f"drop --{key} (the dataset's is used), or prepare a new dataset with --out_dir")
    return settings


# What an append rebuilds the metadata from (shards.check_metadata allows hand-written metadata without them).
APPEND_NEEDS = ("train", "val", "tokens_per_shard", "sources", "stats")


def _check_appendable(dataset_dir: Path, meta: dict, flag: str) -> None:
    missing = [key for key in APPEND_NEEDS if key not in meta]
    if missing:
        raise InputError(f"{flag} {dataset_dir}: {METADATA_FILE} has no {missing[0]!r} (written by hand?); an append "
                         "extends the metadata prepare-dataset writes: prepare the dataset again with --out_dir")


def _check_consistent(dataset_dir: Path, meta: dict, flag: str) -> None:
    """The shards on disk are exactly the listed ones, with the listed sizes (a cheap check;
    verify-dataset reads them all)."""
    hint = f"run `mypt verify-dataset {dataset_dir}` and repair the dataset before appending to it ({flag})"
    # A file not listed first: it is the user's, whatever its size (a 5-byte one was called a damaged shard).
    extra = unlisted_shards(dataset_dir, meta)
    if extra:
        raise InputError(f"{flag}: {dataset_dir / extra[0]} is not listed in {METADATA_FILE} (moved in by hand?); "
                         f"appending renumbers shards and would lose track of it: move it out, or {hint}")
    for split in SPLITS:
        on_disk = {f"{split}/{p.name}": shard_tokens(p) for p in list_shards(dataset_dir / split)}
        check_listed(dataset_dir, meta, split, on_disk, hint)


def _check_no_links(dataset_dir: Path, meta: dict, flag: str) -> None:
    """Refuse, before the work, a dataset whose train/ or val/ folder, a listed shard or its
    metadata is a symbolic link (train/ moved to another disk): the grown dataset is built beside the old one
    and renamed into its place, with a real folder and files where the link was, so the link
    would be dropped and its target left behind as it was (it failed half-way, 'File exists').
    A link to the whole dataset is grown at its target (append_dataset); a link to anything
    else in it (a user's folder, tokenizer_state.json) comes along as a link."""
    own = [*SPLITS, METADATA_FILE, *(e["file"] for split in SPLITS for e in listed_entries(meta, split))]
    links = [dataset_dir / rel for rel in own if (dataset_dir / rel).is_symlink()]
    if links:
        if loops(links[0]):  # (realpath would name the link itself, as if it were its own target)
            named = listed([f"{links[0]} is a symbolic link that loops (to itself, or through others)",
                            *map(str, links[1:])], 1)
            raise InputError(f"{flag} {dataset_dir}: {named}: refused, nothing changed; fix the link, or put the "
                             "folder or file itself in its place")
        named = listed([f"{links[0]} is a symbolic link (to {os.path.realpath(links[0])})", *map(str, links[1:])], 1)
        raise InputError(f"{flag} {dataset_dir}: {named}; an append builds the grown dataset beside the old one and "
                         "renames it into place, which cannot keep a link inside it: refused, nothing changed; put the "
                         "folder or file itself in place of the link (`dvc unprotect` does so in a DVC-tracked "
                         "dataset), or link the whole dataset folder instead (--append_to grows a linked dataset at "
                         "its target)")


def _check_not_in(inputs: list[Path], old: dict, dataset_dir: Path, flag: str) -> None:
    """Refuse an input already in the dataset (`old`: its metadata): readers.KnownSources, the
    names of a source recorded without a hash relative to the working directory of its run (not
    recorded): likely this one, or one above the dataset."""
    known = KnownSources(old["sources"], [Path.cwd(), *dataset_dir.absolute().parents])
    for path in inputs:
        found = known.find(path)
        if found is not None:
            raise InputError(f"--input_files {display_name(path)} is already in {flag} {dataset_dir} (its source "
                             f"{old['sources'][found[0]]['name']!r}: {found[1]}): appending it again would repeat "
                             "its text; leave it out")


def _link_or_copy(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dest)  # no bytes copied, and the old dataset's file is left as it is
    except OSError:  # a filesystem without hard links: copied with its mode and times (a private file stays private)
        shutil.copy2(src, dest)


def _add_counts(a: dict, b: dict) -> dict:
    """a + b for nested dicts of counts (stats); other values keep a's."""
    out = dict(a)
    for k, v in b.items():
        if isinstance(out.get(k), dict) and isinstance(v, dict):
            out[k] = _add_counts(out[k], v)
        elif k not in out:
            out[k] = v
        elif type(out[k]) in (int, float) and type(v) in (int, float):
            out[k] += v
    return out


def _own_names(meta: dict) -> set[str]:
    """The dataset's own files by its metadata `meta` (every other entry is the user's)."""
    return {METADATA_FILE, WORK_MARK} | {e["file"] for split in SPLITS for e in meta[split]["shards"]}


def _added(old_dir: Path, grown: Path, own: set[str]) -> list[str]:
    """What the user added to the old dataset (`old_dir`, swapped out) while _build copied it, after its walk (paths
    relative to it): what the grown dataset lacks. What _build brought along (the same path in both) is not."""
    found = []

    def walk(prefix: str) -> None:
        for entry in sorted(os.scandir(old_dir / prefix), key=lambda e: e.name):
            rel, there = prefix + entry.name, grown / (prefix + entry.name)
            if rel in own:
                continue
            if not os.path.lexists(there):
                found.append(rel)
            elif entry.is_dir(follow_symlinks=False) and there.is_dir() and not there.is_symlink():
                walk(rel + "/")
    walk("")
    return found


def _move_added(old_dir: Path, grown: Path, own: set[str]) -> None:
    """Move into the grown dataset what the user added to the old one meanwhile (_added): left
    there, it would be removed with the old dataset's names."""
    for rel in _added(old_dir, grown, own):
        os.replace(old_dir / rel, grown / rel)


def _build(dataset_dir: Path, old: dict, new_dir: Path, new: dict, stage: Path) -> dict:
    """Fill `stage` with the grown dataset; returns its metadata (written last)."""
    order = [(split, root, entry) for split in SPLITS
             for root, meta in ((dataset_dir, old), (new_dir, new)) for entry in meta[split]["shards"]]
    shards: dict[str, list[dict]] = {split: [] for split in SPLITS}
    for index, (split, root, entry) in enumerate(order):
        file = f"{split}/{shard_name(index)}"
        if root == dataset_dir:
            _link_or_copy(root / entry["file"], stage / file)
        else:
            (stage / split).mkdir(parents=True, exist_ok=True)
            os.replace(root / entry["file"], stage / file)  # new_dir is beside the dataset: same filesystem
        shards[split].append({**entry, "file": file})
    # Whatever else the user keeps in the dataset directory comes along unchanged.
    managed = _own_names(old)
    folders = [dataset_dir]
    for path in sorted(dataset_dir.rglob("*")):
        rel = path.relative_to(dataset_dir).as_posix()
        if path.is_symlink():
            os.symlink(os.readlink(path), stage / rel)
        elif path.is_dir():
            (stage / rel).mkdir(parents=True, exist_ok=True)
            folders.append(path)
        elif rel not in managed:
            _link_or_copy(path, stage / rel)
    tokens = {split: sum(e["tokens"] for e in shards[split]) for split in SPLITS}
    meta = {**old,  # the old keys, in their order: readers of the format see what they know
            "total_tokens": tokens["train"] + tokens["val"],
            "train": {"tokens": tokens["train"], "shards": shards["train"]},
            "val": {"tokens": tokens["val"], "shards": shards["val"]},
            "sources": old["sources"] + new["sources"],
            "stats": _add_counts(old["stats"], new["stats"])}
    # The tokenizer's record: the old one (checked before the work), or where an older mypt recorded
    # none, that of the dataset's tokenizer, which the new shards were written with.
    if record := old.get(TOKENIZER_RECORD) or new.get(TOKENIZER_RECORD):
        meta[TOKENIZER_RECORD] = record
    if new.get("skipped_binary_files"):
        meta["skipped_binary_files"] = old.get("skipped_binary_files", []) + new["skipped_binary_files"]
    # `settings` stay those of the first preparation; each append records its own.
    meta["appended"] = old.get("appended", []) + [{"sources": [s["name"] for s in new["sources"]],
                                                   "settings": new["settings"], "stats": new["stats"],
                                                   **{k: new[k] for k in SKIPPED_KEYS if new.get(k)}}]
    write_json(stage / METADATA_FILE, meta)
    # Every folder made again here (the dataset's, its train/ and val/, the user's) keeps the
    # old one's permissions and group (they were the umask's), and the user's their times,
    # deepest first, once their last file is written (the dataset's own have changed).
    for path in reversed(folders):
        rel = path.relative_to(dataset_dir)
        keep_dir_attributes(path, stage / rel, times=rel.parts[:1] not in ((), ("train",), ("val",)))
    return meta


def _left_added(work: Path, grown: Path, own: set[str], flag: str, e: OSError) -> None:
    """The error of an append whose grown dataset is in place but whose user's files added meanwhile (_added) could
    not all be moved in: named, with where they are (`work`/old, which holds the old dataset's files too)."""
    try:
        left = _added(work / "old", grown, own)
    except OSError:  # (the walk itself: named as a whole)
        left = None
    if left == []:  # (all moved: work holds mypt's files alone, removed as such)
        return
    unmark(work)  # it holds the user's files: never removed as mypt's (remove_own refuses it)
    what = "the files you added to it while the append ran are" if left is None else \
        f"{listed(left, 5)}, which you added to it while the append ran, {'is' if len(left) == 1 else 'are'}"
    raise OutputInPlace(f"{flag} {grown} is grown, but {what} still in {work / 'old'} ({os_error_message(e)}), "
                        f"beside the old dataset's own files: move {'it' if left and len(left) == 1 else 'them'} "
                        f"into {grown} by hand (only {'it' if left and len(left) == 1 else 'them'}), then remove "
                        f"{work}") from None


def append_dataset(input_files: list[str], dataset_dir: Path, settings: PrepareSettings = PrepareSettings(), *,
                   inherit: Iterable[str] = INHERITED, flag: str = "--append_to") -> dict:
    """Prepare `input_files` and add them to the dataset `dataset_dir` (see the module docstring).

    The settings named in `inherit` (by default tokenization and tokens_per_shard; the CLI
    passes every flag left at its default) take the dataset's recorded values; a tokenization
    or tokens_per_shard given that differs from the dataset's is refused. Returns the
    grown dataset's metadata. One writer at a time (mypt.lock), as for --out_dir.
    """
    dataset_dir = Path(dataset_dir)
    if dataset_dir.is_symlink():
        # Grow the dataset the link points to: swapping the link itself for a directory would
        # leave the target as it was, with the link's old name beside it.
        dataset_dir = Path(os.path.realpath(dataset_dir))
    inputs = resolve_inputs(input_files)
    check_replaceable(dataset_dir, inputs, flag, marker=METADATA_FILE, kind="mypt dataset")
    with output_lock(dataset_dir, flag):
        recover_dataset(dataset_dir, flag)
        check_movable(dataset_dir, DATASET_FILES, flag)  # (its swap moves the user's folders, a volume's too)
        old = read_metadata(dataset_dir, flag)
        _check_appendable(dataset_dir, old, flag)
        settings = _inherit(settings, old, inherit, f"{flag} {dataset_dir}")
        _check_no_links(dataset_dir, old, flag)
        _check_consistent(dataset_dir, old, flag)
        tokenizer = load_tokenizer_from(dataset_dir)  # the one the metadata records, or refused before the work
        # A --tokenization given is the dataset's own tokenizer (its kind: _inherit), as a file may hold another.
        spec = settings.tokenize.tokenization
        check_tokenizer(tokenizer, spec, f"{flag} {dataset_dir}", f"--tokenization {spec}",
                        "drop --tokenization (the dataset's is used), or prepare a new dataset with --out_dir",
                        InputError)
        _check_not_in(inputs, old, dataset_dir, flag)
        work, stage = append_dir(dataset_dir), partial_dir(dataset_dir)
        for leftover in (work, stage):  # of a killed run; we hold the lock
            remove_own(leftover, flag)
        make_own_dir(work)
        try:
            new = prepare_steps(input_files, work / "new", settings, tokenizer_from=dataset_dir, reused=tokenizer)
            make_own_dir(stage)
            meta = _build(dataset_dir, old, work / "new", new, stage)
            os.replace(dataset_dir, work / "old")
            try:
                os.replace(stage, dataset_dir)
            except BaseException:
                os.replace(work / "old", dataset_dir)
                raise
            try:
                unmark(dataset_dir)  # after the rename, as io._settle does
                unmarked = None
            except OSError as e:  # said once the user's files are moved in; work stays marked, removed below
                unmarked = e
            try:
                _move_added(work / "old", dataset_dir, _own_names(old))
            except OSError as e:
                _left_added(work, dataset_dir, _own_names(old), flag, e)
            if unmarked is not None:
                raise OutputInPlace(f"{flag} {dataset_dir} is grown: "
                                    + not_carried(dataset_dir, None, os_error_message(unmarked)))
            # Never to be put back now (restore_appended): the old dataset's names, being removed. Refused
            # (an I/O error), the append is done all the same: `finally` removes old/ with the work
            # directory, else the next writer does (recover_dataset: the staging is gone).
            with contextlib.suppress(OSError):
                os.replace(work / "old", work / "replaced")
        finally:
            # Interrupted between the two renames (Ctrl-C, SIGTERM, a failed restore): put the old
            # dataset back before anything is removed. After the swap, work/old holds only old
            # names of shards the dataset holds (or, without hard links, originals it copied).
            restore_appended(dataset_dir)
            if (dataset_dir / METADATA_FILE).is_file() and is_own(work):
                remove_work(work, ignore_errors=True)
            remove_work(stage, ignore_errors=True)
        return meta
