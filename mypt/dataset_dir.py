"""A dataset directory's writers' shared first steps: what a killed run left beside it is put
back or removed (recover_dataset: prepare-dataset, --append_to and the split stage take it
under the dataset's lock before any check reads the dataset), and the split stage's replace of
a dataset (split_stage: by prepare-dataset's rules, not unasked)."""

from __future__ import annotations

import os
from pathlib import Path

from mypt.errors import InputError
from mypt.io import (append_dir, appended_aside, check_replaceable, is_own, output_target, recover_output, remove_own,
                     remove_work)
from mypt.lock import output_lock
from mypt.names import WORK_MARK, sibling
from mypt.shards import METADATA_FILE, read_metadata
from mypt.steps import read_input
from mypt.steps.split import DATASET_FILES, SplitSettings, split
from mypt.steps.split import STEP as SPLIT_STEP


def work_dir(out_dir: Path) -> Path:
    """prepare_steps' intermediate files (`.NAME.work`). Absolute: with the ray engine, tasks
    on other nodes write into it."""
    return sibling(Path(out_dir).absolute(), "work")


def restore_appended(dataset_dir: Path) -> None:
    """Undo an append killed between its two renames: the dataset back from `.NAME.append/old`.
    Only one mypt set aside (marked): a folder of another's is named, not moved."""
    old = append_dir(dataset_dir) / "old"
    if os.path.lexists(dataset_dir) or not (old / METADATA_FILE).is_file():
        return
    if not is_own(append_dir(dataset_dir)):
        raise InputError(f"{dataset_dir} is missing and {old} holds a dataset that mypt did not set aside (no "
                         f"{WORK_MARK} in {append_dir(dataset_dir)}): refused, nothing changed; if an earlier mypt's "
                         f"killed --append_to left it, put it back by hand (`mv {old} {dataset_dir}`)")
    if appended_aside(dataset_dir) is None:
        return  # the append swapped (then the user removed the dataset): recover_dataset removes old/
    os.replace(old, dataset_dir)
    remove_work(append_dir(dataset_dir))  # the rest: the append's own files


def recover_dataset(dataset_dir: Path, flag: str) -> None:
    """A writer's first step on a dataset (prepare-dataset --out_dir, --append_to; under its
    lock): a dataset a killed run set aside is put back (a swap's `.NAME.old`, an append's
    `.NAME.append/old`), before any check reads the dataset, so --overwrite decides on it as
    on any other; and what is in the way of the new output's staging is refused now, not after
    hours of cleaning and tokenizing."""
    target = output_target(Path(dataset_dir))
    restore_appended(target)
    # Killed after its swap (before renaming old/ to replaced/), an append leaves in old/ only
    # the names of the dataset it replaced: marked, and its staging gone (looked at before
    # recover_output removes a staging).
    swapped = is_own(append_dir(target)) and appended_aside(target) is None
    recover_output(target, DATASET_FILES, flag)
    remove_own(work_dir(Path(dataset_dir)), flag)  # a killed run's, else refused now
    if swapped or not (append_dir(target) / "old" / METADATA_FILE).is_file():
        remove_own(append_dir(target), flag)


def split_stage(in_dir: Path, out_dir: Path, settings: SplitSettings, overwrite: bool = False) -> dict:
    """The split stage's work (stages/split.py) under prepare-dataset's rules for a dataset
    already in `out_dir`: one a killed run set aside is put back first; it is replaced when it
    is this split of this corpus (the stage's own earlier output: `dvc repro` removes it first,
    a run by hand finds it), any other (prepare-dataset's of other files, one appended to,
    another val_fraction) only with --overwrite. It replaced them unasked."""
    out_dir = Path(out_dir)
    check_replaceable(out_dir, [in_dir], "--out_dir", marker=METADATA_FILE, kind="mypt dataset")
    with output_lock(out_dir, "--out_dir"):
        recover_dataset(out_dir, "--out_dir")
        manifest = read_input(SPLIT_STEP, in_dir)
        if not overwrite and (out_dir / METADATA_FILE).is_file():
            old = read_metadata(out_dir, "--out_dir")
            sources = lambda record: [(s["name"], s["bytes"]) for s in record["sources"]]  # noqa: E731
            check_same_dataset(out_dir, old, sources(old) == sources(manifest), {**manifest["settings"],
                               **settings.recorded()}, f" than this split of --in_dir {in_dir}")
        return split(in_dir, out_dir, settings, manifest)


def check_same_dataset(out_dir: Path, old: dict, same_sources: bool, settings: dict, than: str = "") -> None:
    """Refuse (without --overwrite) to replace the dataset `old` (its metadata) by another: other
    sources, or other settings than `settings` (a setting the old one does not record, from an
    earlier mypt, is taken as the same)."""
    if not same_sources or any(old["settings"].get(k, v) != v for k, v in settings.items()):
        raise InputError(f"--out_dir {out_dir} already holds a different dataset ({old['total_tokens']:,} tokens "
                         f"from {len(old['sources'])} source(s)){than}; pass --overwrite to replace it, or choose "
                         "another --out_dir")
