"""mypt verify-dataset: a good dataset passes; each kind of damage fails naming the shard."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from mypt.cli import main


def text(root: Path, name: str = "a.txt", lines: int = 200, word: str = "king") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / name
    path.write_text("".join(f"Line {i} of the {word}'s speech, and the reply {i * 7}.\n" for i in range(lines)))
    return path


@pytest.fixture
def dataset(tmp_path) -> Path:
    out = tmp_path / "ds"
    result = CliRunner().invoke(main, ["prepare-dataset", "--input_files", str(text(tmp_path / "in")), "--out_dir",
                                       str(out), "--tokenization", "char", "--tokens_per_shard", "2000"])
    assert result.exit_code == 0, result.output
    return out


def verify(path: Path, *extra: str, ok: bool):
    result = CliRunner().invoke(main, ["verify-dataset", str(path), *extra])
    assert result.exit_code == (0 if ok else 1), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)  # no traceback
    return result.output.splitlines()


def shards(ds: Path) -> list[Path]:
    return sorted(ds.glob("*/shard_*.bin"))


def test_metadata_records_the_sha256_of_every_shard(dataset):
    meta = json.loads((dataset / "dataset_metadata.json").read_text())
    entries = meta["train"]["shards"] + meta["val"]["shards"]
    assert len(entries) == len(shards(dataset)) > 2
    for e in entries:
        assert list(e) == ["file", "tokens", "sha256"]  # old keys first, in their order
        assert e["sha256"] == hashlib.sha256((dataset / e["file"]).read_bytes()).hexdigest()


def test_good_dataset_passes(dataset):
    meta = json.loads((dataset / "dataset_metadata.json").read_text())
    lines = verify(dataset, ok=True)
    assert lines == [f"OK: {len(shards(dataset))} shards, {meta['total_tokens']:,} tokens verified in {dataset}"]


def test_flipped_byte_fails_naming_the_shard(dataset):
    shard = shards(dataset)[1]
    data = bytearray(shard.read_bytes())
    data[8] = data[8] - 1 if data[8] else 1  # token 2's low byte: the id stays in range, only the checksum sees it
    shard.write_bytes(bytes(data))
    lines = verify(dataset, ok=False)
    assert lines[-1].startswith("FAILED: 1 problem in")
    assert lines[0].startswith(f"{shard}: sha256") and "differs" in lines[0]


def test_truncated_shard_fails(dataset):
    shard = shards(dataset)[0]
    shard.write_bytes(shard.read_bytes()[:-6])  # one and a half tokens short
    lines = verify(dataset, ok=False)
    assert any(line.startswith(f"{shard}:") and "not a whole number of uint32 tokens" in line for line in lines)
    assert any(line.startswith(f"{shard}:") and "tokens on disk" in line for line in lines)


def test_out_of_range_id_fails(dataset):
    # A shard written by hand with a listed size and checksum, so only the id check can see it.
    meta_path = dataset / "dataset_metadata.json"
    meta = json.loads(meta_path.read_text())
    vocab = meta["tokenizer"]["vocab_size"]
    entry = meta["train"]["shards"][0]
    ids = np.fromfile(dataset / entry["file"], dtype=np.uint32)
    ids[5] = vocab + 3
    (dataset / entry["file"]).write_bytes(ids.astype("<u4").tobytes())
    entry["sha256"] = hashlib.sha256(ids.astype("<u4").tobytes()).hexdigest()
    meta_path.write_text(json.dumps(meta))
    lines = verify(dataset, ok=False)
    assert lines[:-1] == [f"{dataset / entry['file']}: 1 token id(s) >= vocab_size {vocab} (first: id {vocab + 3} "
                          "at token 5)"]


def test_missing_shard_fails_and_extra_shard_warns_unless_strict(dataset):
    first, last = shards(dataset)[0], shards(dataset)[-1]
    moved = dataset / "train" / "shard_00099.bin"
    last.rename(moved)  # a val shard gone, and a shard the metadata does not list
    lines = verify(dataset, ok=False)
    assert any(line.startswith(f"{last}: listed in dataset_metadata.json") and "missing" in line for line in lines)
    assert f"warning: {moved}: not listed in dataset_metadata.json (moved in by hand?): training reads it, but it " \
           "cannot be verified against a checksum" in lines
    moved.rename(last)
    extra = dataset / "train" / "shard_00099.bin"
    extra.write_bytes(first.read_bytes())
    lines = verify(dataset, ok=True)
    assert lines[0].startswith(f"warning: {extra}:") and lines[-1].endswith("(1 warning)")
    # The summary counts the listed shards as verified, the unlisted one apart (it was one more
    # "verified" shard).
    meta = json.loads((dataset / "dataset_metadata.json").read_text())
    assert lines[-1] == (f"OK: {len(shards(dataset)) - 1} shards, {meta['total_tokens']:,} tokens verified in "
                         f"{dataset}, and 1 unlisted shard of {first.stat().st_size // 4:,} tokens (ids checked, "
                         "nothing to verify them against) (1 warning)")
    lines = verify(dataset, "--strict", ok=False)
    assert lines[0].startswith(f"{extra}: not listed") and lines[-1].startswith("FAILED: 1 problem")


def test_bad_metadata_json_fails(dataset):
    (dataset / "dataset_metadata.json").write_text('{"format_version": 1, "train": ')
    lines = verify(dataset, ok=False)
    assert lines[0].startswith(f"{dataset / 'dataset_metadata.json'}: not valid JSON")
    # the shards are still read (none crashes the check), not each called unlisted: the
    # metadata is the one problem (a dataset of thousands of shards printed a line for each)
    assert len(lines) == 2 and lines[1].startswith("FAILED: 1 problem"), lines


def test_metadata_totals_and_tokenizer_must_agree(dataset):
    meta_path = dataset / "dataset_metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["train"]["tokens"] += 1
    meta["tokenizer"]["vocab_size"] += 1
    meta_path.write_text(json.dumps(meta))
    lines = verify(dataset, ok=False)
    assert any("train.tokens" in line for line in lines)
    assert any(line.startswith(f"{dataset / 'tokenizer_state.json'}: vocab_size") for line in lines)


def test_per_source_counts_must_add_up(tmp_path):
    # Two sources; their train and val counts are what the split wrote, and verify checks that
    # they add up to each source's tokens and to the splits'.
    out = tmp_path / "ds"
    result = CliRunner().invoke(main, ["prepare-dataset", "--input_files", str(text(tmp_path / "in")),
                                       str(text(tmp_path / "in", "b.txt", word="queen")), "--out_dir", str(out),
                                       "--tokenization", "char", "--tokens_per_shard", "2000"])
    assert result.exit_code == 0, result.output
    verify(out, ok=True)
    meta_path = out / "dataset_metadata.json"
    good = json.loads(meta_path.read_text())
    assert len(good["sources"]) == 2
    meta = json.loads(json.dumps(good))
    meta["sources"][0]["val_tokens"] += 5  # one source's split no longer adds up, nor the val total
    meta_path.write_text(json.dumps(meta))
    lines = verify(out, ok=False)
    name, s = meta["sources"][0]["name"], meta["sources"][0]
    assert lines[:-1] == [
        f"{meta_path}: source {name!r} has {s['tokens']:,} tokens but gives {s['train_tokens']:,} to train and "
        f"{s['val_tokens']:,} to val",
        f"{meta_path}: its sources give {meta['val']['tokens'] + 5:,} tokens to val, but val.tokens is "
        f"{meta['val']['tokens']}"]
    meta = json.loads(json.dumps(good))
    meta["sources"][1]["train_tokens"] -= 7  # moved to val: each source adds up, the splits do not
    meta["sources"][1]["val_tokens"] += 7
    meta_path.write_text(json.dumps(meta))
    lines = verify(out, ok=False)
    assert [line.split(": its sources give ")[1] for line in lines[:-1]] == [
        f"{meta['train']['tokens'] - 7:,} tokens to train, but train.tokens is {meta['train']['tokens']}",
        f"{meta['val']['tokens'] + 7:,} tokens to val, but val.tokens is {meta['val']['tokens']}"]


def test_metadata_without_checksums_still_verifies(dataset):
    meta_path = dataset / "dataset_metadata.json"
    meta = json.loads(meta_path.read_text())
    for split in ("train", "val"):
        for e in meta[split]["shards"]:
            del e["sha256"]  # as an older mypt wrote it
    meta_path.write_text(json.dumps(meta))
    lines = verify(dataset, ok=True)
    assert lines[0].startswith("note: dataset_metadata.json records no checksums") and lines[-1].startswith("OK:")


@pytest.mark.parametrize("missing", [lambda e: e.pop("sha256"), lambda e: e.update(sha256=None)])
def test_a_shard_without_a_checksum_beside_others_is_named(dataset, missing):
    """One without (deleted, or null) beside the others' is named, not passed as verified with
    its bytes unchecked: a warning (a dataset an older mypt prepared without checksums and a
    newer one appended to has such shards)."""
    meta_path = dataset / "dataset_metadata.json"
    meta = json.loads(meta_path.read_text())
    missing(meta["train"]["shards"][1])
    meta_path.write_text(json.dumps(meta))
    shard = dataset / meta["train"]["shards"][1]["file"]
    lines = verify(dataset, ok=True)
    assert lines[0] == (f"warning: {shard}: no sha256 in dataset_metadata.json, where other shards have one (an "
                        "older mypt's shard, appended to since, or an edit by hand): its bytes cannot be verified")
    assert lines[-1].endswith("(1 warning)")


@pytest.mark.parametrize("kind,make,words", [
    ("fifo", os.mkfifo, "a FIFO (named pipe)"),
    ("dev_zero", lambda p: os.symlink("/dev/zero", p), "a character device (a link to /dev/zero)"),
    ("directory", os.mkdir, "a directory"),
])
def test_a_shard_that_is_not_a_regular_file_is_named_not_read(dataset, kind, make, words):
    """A FIFO would block the check forever, /dev/zero never ends: each is refused by its stat."""
    for split in ("train", "val"):
        odd = dataset / split / "shard_00099.bin"
        make(odd)
        lines = verify(dataset, ok=False)
        assert lines[0] == (f"{odd}: a shard must be a regular file, this is {words}; move it out of "
                            f"{dataset / split}, then run `mypt verify-dataset {dataset}`")
        assert lines[-1].startswith("FAILED: 1 problem in")
        os.rmdir(odd) if odd.is_dir() and not odd.is_symlink() else odd.unlink()


def test_a_listed_shard_replaced_by_a_fifo_is_named(dataset):
    shard = shards(dataset)[0]
    shard.unlink()
    os.mkfifo(shard)
    lines = verify(dataset, ok=False)
    assert lines[0].startswith(f"{shard}: a shard must be a regular file, this is a FIFO")


def edit_meta(ds: Path, change) -> None:
    path = ds / "dataset_metadata.json"
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))


@pytest.mark.parametrize("change,field", [
    (lambda m: m.update(dtype="uint16"), "dtype is 'uint16'"),
    (lambda m: m.update(byte_order="big"), "byte_order is 'big'"),
    (lambda m: m["train"]["shards"].insert(1, dict(m["train"]["shards"][0])),
     "train.shards[1].file lists 'train/shard_00000.bin' a second time (first as train.shards[0])"),
    (lambda m: m["val"]["shards"].append(dict(m["train"]["shards"][0])),
     "val.shards[1].file is 'train/shard_00000.bin': a val shard is a file val/shard_NNNNN.bin"),
    (lambda m: m["val"]["shards"][0].update(file="train/" + m["val"]["shards"][0]["file"].split("/")[1]),
     "val.shards[0].file is 'train/shard_"),
    (lambda m: m["train"]["shards"][0].update(sha256="xyz"), "train.shards[0].sha256 is 'xyz'"),
])
def test_hand_edited_metadata_fails_naming_the_field(dataset, change, field):
    """Metadata that verify would otherwise pass (totals still add up, every file exists)."""
    edit_meta(dataset, change)
    lines = verify(dataset, ok=False)
    assert lines[0].startswith(f"{dataset / 'dataset_metadata.json'}: {field}"), lines[0]


def test_metadata_without_shard_lists_cannot_be_verified(dataset):
    """Metadata written by hand (the loader then reads the files as they are): verify says so."""
    edit_meta(dataset, lambda m: [m.pop(k) for k in ("train", "val")])
    lines = verify(dataset, ok=False)
    assert f"{dataset / 'dataset_metadata.json'}: no train section: its shards cannot be verified" in lines
    assert f"{dataset / 'dataset_metadata.json'}: no val section: its shards cannot be verified" in lines


def test_a_dataset_named_like_a_yaml_boolean_after_strict(tmp_path, monkeypatch):
    # `--strict yes` is a switch and the dataset `yes`, not a value given to the switch (the
    # stages' hint for params.yaml's `strict: yes` comes only where click refuses the word).
    out = tmp_path / "yes"
    result = CliRunner().invoke(main, ["prepare-dataset", "--input_files", str(text(tmp_path / "in")), "--out_dir",
                                       str(out), "--tokenization", "char"])
    assert result.exit_code == 0, result.output
    monkeypatch.chdir(tmp_path)
    assert verify(Path("yes"), ok=True)[-1].startswith("OK: ")
    result = CliRunner().invoke(main, ["verify-dataset", "--strict", "yes"])
    assert result.exit_code == 0 and result.output.startswith("OK: "), result.output
