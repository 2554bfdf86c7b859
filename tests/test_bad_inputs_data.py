"""Bad datasets (issue 18): shards that are not regular files, shards that differ from the
metadata, hand-edited metadata. Each refused by train, eval and --append_to as one line
naming the shard or the metadata field, before anything is read or written (no hang on a
FIFO or /dev/zero). verify-dataset's report of the same damage: tests/test_verify.py."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Callable

import pytest
from bad_inputs import Case, edit_json, run_case, train

ODD_TRAIN = "ds/train/shard_00099.bin"  # a name the loader lists, in each split, for an odd file
ODD_VAL = "ds/val/shard_00099.bin"
META = "ds/dataset_metadata.json"


def fifo(path: str) -> Callable[[Path], None]:
    return lambda w: os.mkfifo(w / path)


def link_to_dev_zero(path: str) -> Callable[[Path], None]:
    return lambda w: os.symlink("/dev/zero", w / path)


def directory(path: str) -> Callable[[Path], None]:
    return lambda w: (w / path).mkdir()


def overwrite_first_train_shard(w: Path) -> None:
    """The guide's `mv new_shards/* train/`: a listed shard replaced by another of 7 tokens."""
    first = json.loads((w / META).read_text())["train"]["shards"][0]["file"]
    (w / "ds" / first).write_bytes(b"\x01\x00\x00\x00" * 7)


def remove_val_shards(w: Path) -> None:
    for p in (w / "ds" / "val").glob("shard_*.bin"):
        p.unlink()


def val_entry_into_train(meta: dict) -> None:
    meta["val"]["shards"][0]["file"] = meta["train"]["shards"][0]["file"]


def listed_twice(meta: dict) -> None:
    meta["train"]["shards"].append(dict(meta["train"]["shards"][0]))


def new_text(w: Path) -> None:
    """Text in ds's vocabulary, for an append."""
    (w / "more.txt").write_text("".join(f"Line {i} of the queen's speech, and the king's reply {i * 3}.\n"
                                        for i in range(300, 400)))


def both(*setups: Callable[[Path], None]) -> Callable[[Path], None]:
    def setup(w: Path) -> None:
        for s in setups:
            s(w)
    return setup


def evaluate(name: str = "g") -> list[str]:
    return ["eval", "--model_name", "ck/m", "--dataset", f"{name}=ds", "--device", "cpu"]


def append(*extra: str) -> list[str]:
    return ["prepare-dataset", "--input_files", "more.txt", "--append_to", "ds", "--workers", "1", *extra]


TRAIN = train("--dataset_dir", "ds")
NOT_REGULAR = {"fifo": (fifo, ["FIFO"]), "dev_zero": (link_to_dev_zero, ["character device", "/dev/zero"]),
               "dir": (directory, ["a directory"])}

CASES = [
    # -- a shard that is not a regular file: refused at start-up, never read --------------------
    *[Case(f"train_{kind}_{split}_shard", TRAIN, [path, "must be a regular file", *words], out="ck",
           setup=make(path))
      for kind, (make, words) in NOT_REGULAR.items() for split, path in (("train", ODD_TRAIN), ("val", ODD_VAL))],
    Case("eval_fifo_val_shard", evaluate(), [ODD_VAL, "FIFO", "must be a regular file"], setup=fifo(ODD_VAL)),
    # (a file the metadata does not list is the user's, whatever it is: named as such)
    Case("append_fifo_shard", append(), [ODD_TRAIN, "is not listed in dataset_metadata.json"], out="ds",
         setup=both(new_text, fifo(ODD_TRAIN))),
    # -- shards that are not what the metadata lists -------------------------------------------
    Case("train_listed_shard_resized", TRAIN, ["ds/train/shard_00000.bin", "7 tokens on disk", "verify-dataset",
                                               "--append_to"], out="ck", setup=overwrite_first_train_shard),
    Case("train_listed_val_missing", TRAIN, ["ds/val/", "listed in dataset_metadata.json", "missing",
                                             "verify-dataset"], out="ck", setup=remove_val_shards),
    Case("eval_listed_val_missing", evaluate(), ["ds/val/", "missing", "verify-dataset"], setup=remove_val_shards),
    Case("append_listed_shard_resized", append(), ["ds/train/shard_00000.bin", "tokens on disk", "verify-dataset"],
         out="ds", setup=both(new_text, overwrite_first_train_shard)),
    # -- hand-edited metadata: refused naming the field, by every reader ---------------------
    *[Case(f"{cmd}_meta_{name}", args, [META, *words], out=out, setup=both(new_text, edit_json(META, change)))
      for name, change, words in (
          ("dtype_uint16", lambda m: m.update(dtype="uint16"), ["dtype", "'uint16'"]),
          ("byte_order_big", lambda m: m.update(byte_order="big"), ["byte_order", "'big'"]),
          ("listed_twice", listed_twice, ["train.shards[", "second time", "train.shards[0]"]),
          ("val_into_train", val_entry_into_train, ["val.shards[0].file", "'train/shard_00000.bin'", "val/"]),
          ("tokens_not_a_number", lambda m: m["train"]["shards"][0].update(tokens="many"),
           ["train.shards[0].tokens", "'many'"]),
          ("shards_not_a_list", lambda m: m["val"].update(shards=None), ["val.shards", "None"]),
          ("file_outside", lambda m: m["train"]["shards"][0].update(file="train/../../corpus.txt"),
           ["train.shards[0].file", "../"]),
          ("tokenizer_missing", lambda m: m.pop("tokenizer") and None, ["tokenizer", "None"]))
      for cmd, args, out in (("train", TRAIN, "ck"), ("eval", evaluate(), None), ("append", append(), "ds"))],
    # -- not a dataset -----------------------------------------------------------------------
    Case("append_to_no_metadata", ["prepare-dataset", "--input_files", "more.txt", "--append_to", "empty_ds",
                                   "--workers", "1"], ["--append_to", "empty_ds", "not a prepared dataset",
                                                       "prepare-dataset"],
         setup=both(new_text, directory("empty_ds"))),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_dataset_is_one_line(case: Case, world, tmp_path, monkeypatch):
    run_case(case, world, tmp_path, monkeypatch)


def minimal_metadata(w: Path) -> None:
    """Metadata written by hand, as the benches write it: no shard lists (the loader reads the files)."""
    meta = json.loads((w / META).read_text())
    (w / META).write_text(json.dumps({k: meta[k] for k in ("format_version", "dtype", "tokenizer")}))


CASES_MINIMAL = [
    Case("append_meta_without_shard_lists", append(), ["--append_to ds", "'train'", "--out_dir"], out="ds",
         setup=both(new_text, minimal_metadata)),
]


@pytest.mark.parametrize("case", CASES_MINIMAL, ids=[c.id for c in CASES_MINIMAL])
def test_metadata_without_shard_lists_is_refused_by_append(case: Case, world, tmp_path, monkeypatch):
    run_case(case, world, tmp_path, monkeypatch)


def test_metadata_without_shard_lists_still_trains(world, tmp_path, monkeypatch):
    """The loader trusts the files on disk where the metadata lists none (hand-made datasets)."""
    from bad_inputs import invoke

    shutil.copytree(world, tmp_path / "w", symlinks=True)
    monkeypatch.chdir(tmp_path / "w")
    minimal_metadata(tmp_path / "w")
    result = invoke(*train("--dataset_dir", "ds"))
    assert result.exit_code == 0 and "step 2: val" in result.output, result.output
