"""prepare-dataset --append_to: a dataset grows without losing, overwriting or reordering a shard."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import read_tokens, tree_bytes

import mypt.append
from mypt.cli import main
from mypt.io import make_own_dir, mark_own, partial_dir
from mypt.names import WORK_MARK

# Both corpora use the same characters, so the char vocabulary of the first holds the second.
LETTERS = "abcdefghijklmnopqrstuvwxyz"


def corpus(path: Path, seed: int, lines: int = 300) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(" ".join("".join(rng.choice(list(LETTERS), rng.integers(2, 8)))
                                     for _ in range(rng.integers(4, 12))) + ".\n" for _ in range(lines)))
    return path


def cli(*args: str, ok: bool = True):
    result = CliRunner().invoke(main, list(args))
    if ok:
        assert result.exit_code == 0, result.output + repr(result.exception)
    else:
        assert result.exit_code != 0 and (result.exception is None or isinstance(result.exception, SystemExit)), \
            result.output + repr(result.exception)  # a one-line error, no traceback
    return result


SETTINGS = ["--tokenization", "char", "--tokens_per_shard", "1500", "--val_fraction", "0.2"]


@pytest.fixture
def dataset(tmp_path) -> Path:
    cli("prepare-dataset", "--input_files", str(corpus(tmp_path / "in" / "first.txt", 0)),
        "--out_dir", str(tmp_path / "ds"), *SETTINGS)
    return tmp_path / "ds"


def numbers(directory: Path) -> list[int]:
    return [int(p.stem.split("_")[1]) for p in sorted(directory.glob("shard_*.bin"))]


def leftovers(ds: Path) -> list[str]:
    return sorted(p.name for p in ds.parent.iterdir() if p.name.startswith(f".{ds.name}."))


def test_append_numbers_after_the_old_shards_and_keeps_val_last(dataset, tmp_path):
    old = tree_bytes(dataset)
    old_meta = json.loads((dataset / "dataset_metadata.json").read_text())
    old_train, old_val = read_tokens(dataset / "train"), read_tokens(dataset / "val")
    inode = (dataset / "train" / "shard_00000.bin").stat().st_ino
    second = corpus(tmp_path / "in" / "second.txt", 1)
    # What the second corpus alone gives with the same tokenizer and settings.
    cli("prepare-dataset", "--input_files", str(second), "--out_dir", str(tmp_path / "alone"),
        "--tokenizer_from", str(dataset), *SETTINGS)
    new_train, new_val = read_tokens(tmp_path / "alone" / "train"), read_tokens(tmp_path / "alone" / "val")

    out = cli("prepare-dataset", "--input_files", str(second), "--append_to", str(dataset), "--val_fraction", "0.2")
    assert f"Appended: {new_train.size + new_val.size:,} tokens from 1 source(s)" in out.output

    # Old train shards keep their names and bytes, first; the new train tokens follow.
    for name in (n for n in old if n.startswith("train/")):
        assert (dataset / name).read_bytes() == old[name]
    assert read_tokens(dataset / "train").tolist() == old_train.tolist() + new_train.tolist()
    # Val: the highest numbers, old val then new val; numbering is contiguous.
    assert read_tokens(dataset / "val").tolist() == old_val.tolist() + new_val.tolist()
    train_n, val_n = numbers(dataset / "train"), numbers(dataset / "val")
    assert train_n + val_n == list(range(len(train_n) + len(val_n))) and len(val_n) > len(old_meta["val"]["shards"])

    meta = json.loads((dataset / "dataset_metadata.json").read_text())
    assert list(meta)[:len(old_meta)] == list(old_meta)  # old keys, old order
    for split in ("train", "val"):
        files = sorted((dataset / split).glob("shard_*.bin"))
        assert [e["file"] for e in meta[split]["shards"]] == [f"{split}/{p.name}" for p in files]
        assert [e["tokens"] for e in meta[split]["shards"]] == [p.stat().st_size // 4 for p in files]
        assert meta[split]["tokens"] == read_tokens(dataset / split).size
    assert meta["total_tokens"] == old_meta["total_tokens"] + new_train.size + new_val.size
    assert [s["name"] for s in meta["sources"]] == [s["name"] for s in old_meta["sources"]] + [str(second)]
    assert meta["stats"]["split"]["val_tokens"] == old_val.size + new_val.size
    assert meta["appended"][0]["sources"] == [str(second)]
    assert (dataset / "train" / "shard_00000.bin").stat().st_ino == inode  # hard-linked, not copied
    assert leftovers(dataset) == []
    assert cli("verify-dataset", str(dataset)).output.startswith("OK: ")


def test_append_with_another_tokenizer_or_shard_size_is_refused(dataset, tmp_path):
    before = tree_bytes(dataset)
    second = corpus(tmp_path / "in" / "second.txt", 1)
    out = cli("prepare-dataset", "--input_files", str(second), "--append_to", str(dataset),
              "--tokenization", "gpt2", ok=False)
    assert "tokenization 'char'" in out.output and "--tokenization is 'gpt2'" in out.output
    out = cli("prepare-dataset", "--input_files", str(second), "--append_to", str(dataset),
              "--tokens_per_shard", "99", ok=False)
    assert "--tokens_per_shard is 99" in out.output
    out = cli("prepare-dataset", "--input_files", str(second), "--append_to", str(dataset),
              "--out_dir", str(tmp_path / "x"), ok=False)
    assert "--out_dir" in out.output and "--append_to" in out.output
    assert tree_bytes(dataset) == before and leftovers(dataset) == []


def test_appending_the_same_input_twice_is_refused(dataset, tmp_path):
    before = tree_bytes(dataset)
    out = cli("prepare-dataset", "--input_files", str(tmp_path / "in" / "first.txt"), "--append_to", str(dataset),
              ok=False)
    assert "already in --append_to" in out.output
    assert tree_bytes(dataset) == before


def test_failed_append_leaves_the_dataset_untouched(dataset, tmp_path, monkeypatch):
    before = tree_bytes(dataset)
    (tmp_path / "nums.txt").write_text("1 2 3\n----\n42\n")  # bad input: everything is filtered away
    out = cli("prepare-dataset", "--input_files", str(tmp_path / "nums.txt"), "--append_to", str(dataset), ok=False)
    assert "everything was filtered away" in out.output
    assert tree_bytes(dataset) == before and leftovers(dataset) == []

    def disk_full(*args, **kwargs):  # fails after every shard is linked into .ds.partial
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(mypt.append, "write_json", disk_full)
    out = CliRunner().invoke(main, ["prepare-dataset", "--input_files", str(corpus(tmp_path / "b.txt", 1)),
                                    "--append_to", str(dataset)])
    assert out.exit_code == 1 and "No space left on device" in out.output and "Traceback" not in out.output
    assert tree_bytes(dataset) == before and leftovers(dataset) == []


def test_hand_moved_shard_is_refused_and_a_half_swapped_dataset_is_restored(dataset, tmp_path):
    second = corpus(tmp_path / "in" / "second.txt", 1)
    extra = dataset / "train" / "shard_00077.bin"
    extra.write_bytes(np.arange(10, dtype="<u4").tobytes())
    out = cli("prepare-dataset", "--input_files", str(second), "--append_to", str(dataset), ok=False)
    assert str(extra) in out.output and "verify-dataset" in out.output
    # Of any size: a file of 5 bytes was called a damaged shard (prepare the dataset again).
    extra.write_bytes(b"notes")
    out = cli("prepare-dataset", "--input_files", str(second), "--append_to", str(dataset), ok=False)
    assert f"--append_to: {extra} is not listed in dataset_metadata.json" in out.output, out.output
    extra.unlink()
    before = tree_bytes(dataset)
    # An append killed between its two renames leaves the dataset in .ds.append/old and the grown
    # one in its staging: the next one restores the dataset.
    make_own_dir(tmp_path / ".ds.append")
    shutil.copytree(dataset, partial_dir(dataset))
    mark_own(partial_dir(dataset))
    os.replace(dataset, tmp_path / ".ds.append" / "old")
    cli("prepare-dataset", "--input_files", str(second), "--append_to", str(dataset))
    assert leftovers(dataset) == []
    assert all((dataset / name).read_bytes() == data for name, data in before.items() if name.startswith("train/"))
    assert cli("verify-dataset", str(dataset)).output.startswith("OK: ")


def test_user_files_in_the_dataset_directory_come_along(dataset, tmp_path):
    (dataset / "NOTES.md").write_text("where this came from")
    cli("prepare-dataset", "--input_files", str(corpus(tmp_path / "b.txt", 1)), "--append_to", str(dataset))
    assert (dataset / "NOTES.md").read_text() == "where this came from"


def test_without_hard_links_the_old_shards_are_copied(dataset, tmp_path, monkeypatch):
    before = tree_bytes(dataset)

    def no_links(src, dst, **kwargs):
        raise OSError(1, "Operation not permitted")  # as on filesystems without hard links

    monkeypatch.setattr(os, "link", no_links)
    cli("prepare-dataset", "--input_files", str(corpus(tmp_path / "b.txt", 1)), "--append_to", str(dataset))
    assert all((dataset / name).read_bytes() == data for name, data in before.items() if name.startswith("train/"))
    assert leftovers(dataset) == [] and cli("verify-dataset", str(dataset)).output.startswith("OK: ")


def test_flags_left_at_their_defaults_take_the_dataset_settings(tmp_path):
    cli("prepare-dataset", "--input_files", str(corpus(tmp_path / "in" / "first.txt", 0)), "--out_dir",
        str(tmp_path / "ds"), *SETTINGS, "--no_filter", "--val_fraction", "0.25", "--dedup_min_chars", "7")
    cli("prepare-dataset", "--input_files", str(corpus(tmp_path / "in" / "second.txt", 1)),
        "--append_to", str(tmp_path / "ds"))
    meta = json.loads((tmp_path / "ds" / "dataset_metadata.json").read_text())
    added = meta["appended"][-1]["settings"]
    assert added["filter"] is False and added["val_fraction"] == 0.25 and added["dedup_min_chars"] == 7
    cli("prepare-dataset", "--input_files", str(corpus(tmp_path / "in" / "third.txt", 2)),
        "--append_to", str(tmp_path / "ds"), "--val_fraction", "0.5")  # a flag given wins
    assert json.loads((tmp_path / "ds" / "dataset_metadata.json").read_text())["appended"][-1]["settings"][
        "val_fraction"] == 0.5


def test_append_to_a_symlink_grows_its_target(dataset, tmp_path):
    """--append_to LINK acts on the dataset the link points to: the link stays a link, nothing
    is left beside either."""
    link = tmp_path / "link"
    link.symlink_to(dataset)
    old_tokens = json.loads((dataset / "dataset_metadata.json").read_text())["total_tokens"]
    cli("prepare-dataset", "--input_files", str(corpus(tmp_path / "b.txt", 1)), "--append_to", str(link))
    assert link.is_symlink() and link.resolve() == dataset.resolve()
    assert json.loads((dataset / "dataset_metadata.json").read_text())["total_tokens"] > old_tokens
    assert leftovers(dataset) == [] and leftovers(link) == []
    assert cli("verify-dataset", str(link)).output.startswith("OK: ")


def test_an_input_already_in_the_dataset_is_refused_however_its_path_is_spelled(tmp_path, monkeypatch):
    """The same file is recognised through `sub/../`, from another working directory, and in a
    dataset whose metadata recorded `..` (before names were normalized)."""
    monkeypatch.chdir(tmp_path)
    corpus(Path("lear.txt"), 0)
    Path("sub").mkdir()
    cli("prepare-dataset", "--input_files", "sub/../lear.txt", "--out_dir", "ds", *SETTINGS)
    meta = json.loads(Path("ds/dataset_metadata.json").read_text())
    assert [s["name"] for s in meta["sources"]] == ["lear.txt"]
    before = tree_bytes(Path("ds"))
    for inputs, ds in (("sub/../lear.txt", "ds"), (str(tmp_path / "sub/../lear.txt"), "ds")):
        assert "already in --append_to" in cli("prepare-dataset", "--input_files", inputs, "--append_to", ds,
                                               ok=False).output
    monkeypatch.chdir("sub")
    for inputs, ds in (("../lear.txt", "../ds"), ("../sub/../lear.txt", str(tmp_path / "ds"))):
        assert "already in --append_to" in cli("prepare-dataset", "--input_files", inputs, "--append_to", ds,
                                               ok=False).output
    monkeypatch.chdir(tmp_path)
    assert tree_bytes(Path("ds")) == before
    meta["sources"][0]["name"] = "sub/../lear.txt"  # as mypt recorded it before
    Path("ds/dataset_metadata.json").write_text(json.dumps(meta, indent=2) + "\n")
    before = tree_bytes(Path("ds"))
    assert "already in --append_to" in cli("prepare-dataset", "--input_files", "lear.txt", "--append_to", "ds",
                                           ok=False).output
    assert tree_bytes(Path("ds")) == before
    # ... and prepare-dataset --out_dir still takes it for the same dataset
    cli("prepare-dataset", "--input_files", "lear.txt", "--out_dir", "ds", *SETTINGS)
    assert tree_bytes(Path("ds")).keys() == before.keys()


def test_appended_line_names_the_stand_in_and_the_share_of_the_appended_text(dataset, tmp_path):
    """Characters outside the dataset's vocabulary: their share of the appended tokens (of the
    whole dataset it showed 0.0%), and the character that replaced them (this vocabulary has no
    '?': a space)."""
    extra = tmp_path / "in" / "extra.txt"
    extra.write_text("abc XYZ def.\n" * 4)
    out = cli("prepare-dataset", "--input_files", str(extra), "--append_to", str(dataset)).output
    added = json.loads((dataset / "dataset_metadata.json").read_text())["appended"][-1]["stats"]
    tokens = added["split"]["train_tokens"] + added["split"]["val_tokens"]
    assert added["tokenize"]["replaced_chars"] == 12 and tokens == 52
    assert "Appended: 52 tokens from 1 source(s)\n" in out, out
    assert "Characters outside the tokenizer's vocabulary, each replaced by a space: 12 (23.1% of the appended " \
           "tokens;" in out, out


def test_the_appends_summary_counts_what_the_append_did_not_the_whole_dataset(tmp_path):
    """The totals are the dataset's; the filter's, dedup's and the walk's counts are the appended
    text's (they were the first preparation's, said again after every append)."""
    first = tmp_path / "in" / "first.txt"
    first.parent.mkdir(parents=True)
    first.write_text("1234 5678\n" * 3 + "the same line, again and again.\n" * 5 + "a line of its own here.\n" * 40)
    made = cli("prepare-dataset", "--input_files", str(first), "--out_dir", str(tmp_path / "ds"), *SETTINGS).output
    assert "Lines dropped by the filter: {'no_letters': 3}" in made and "Duplicate lines dropped: 4\n" in made, made
    more = tmp_path / "more"
    (more / ".hidden").mkdir(parents=True)
    (more / ".hidden" / "x.txt").write_text("skipped by the walk\n")
    (more / "new.txt").write_text("".join(f"line {c} of the new text, in words.\n" for c in LETTERS))
    out = cli("prepare-dataset", "--input_files", str(more), "--append_to", str(tmp_path / "ds")).output
    meta = json.loads((tmp_path / "ds" / "dataset_metadata.json").read_text())
    assert f"Total tokens: {meta['total_tokens']:,}\n" in out and "Appended: " in out
    assert "Lines dropped" not in out and "Duplicate lines dropped: 0\n" in out, out
    assert meta["stats"]["dedup"]["duplicate_lines_dropped"] == 4  # (the dataset's: summed over both runs)
    assert meta["appended"][-1]["walk_skipped_files"] and "x.txt" in out, out


def test_an_append_with_the_datasets_tokenizer_file_builds_it_once(tmp_path, monkeypatch):
    """--append_to with --tokenization hf:FILE: the file's tokenizer is built once, to check it is
    the dataset's (prepare_steps takes the one the append checked), and the appended part
    records the kind, as the dataset does."""
    pytest.importorskip("tokenizers")
    from mypt.tokenizers.hf import HFTokenizer

    first = corpus(tmp_path / "in" / "first.txt", 0)
    cli("train-tokenizer", "--input_files", str(first), "--vocab_size", "300", "--out", str(tmp_path / "tok.json"))
    spec = f"hf:{tmp_path / 'tok.json'}"
    cli("prepare-dataset", "--input_files", str(first), "--out_dir", str(tmp_path / "ds"), "--tokenization", spec)
    built = []
    real = HFTokenizer.from_argument.__func__
    monkeypatch.setattr(HFTokenizer, "from_argument", classmethod(lambda cls, arg: built.append(arg) or real(cls, arg)))
    cli("prepare-dataset", "--input_files", str(corpus(tmp_path / "in" / "second.txt", 1)), "--append_to",
        str(tmp_path / "ds"), "--tokenization", spec)
    assert built == [str(tmp_path / "tok.json")]
    meta = json.loads((tmp_path / "ds" / "dataset_metadata.json").read_text())
    assert meta["settings"]["tokenization"] == meta["appended"][0]["settings"]["tokenization"] == "hf"


def test_files_the_user_adds_while_the_append_copies_the_dataset_come_along(dataset, tmp_path, monkeypatch):
    """A file written into the dataset while the append linked (or, without hard links, copied) the
    old dataset into the grown one was left in the old one, and removed with its names. It is
    moved into the grown dataset; what was there before the copy comes along as it did."""
    (dataset / "notes.txt").write_text("before\n")
    real_build = mypt.append._build

    def build(dataset_dir, *args):
        meta = real_build(dataset_dir, *args)
        (dataset_dir / "written_meanwhile.txt").write_text("mine\n")
        (dataset_dir / "train" / "late_note.txt").write_text("mine too\n")
        (dataset_dir / "samples").mkdir()
        (dataset_dir / "samples" / "s.txt").write_text("a sample\n")
        return meta
    monkeypatch.setattr(mypt.append, "_build", build)
    cli("prepare-dataset", "--input_files", str(corpus(tmp_path / "in" / "second.txt", 1)), "--append_to", str(dataset))
    mine = {"notes.txt": "before\n", "written_meanwhile.txt": "mine\n", "train/late_note.txt": "mine too\n",
            "samples/s.txt": "a sample\n"}
    assert {rel: (dataset / rel).read_text() for rel in mine} == mine
    assert leftovers(dataset) == []
    assert cli("verify-dataset", str(dataset)).output.startswith("OK:")


def test_a_file_added_meanwhile_that_cannot_be_moved_is_kept_and_named(dataset, tmp_path, monkeypatch):
    """Where the grown dataset refuses the file added meanwhile, it stays where the old dataset
    went, named in the error, and the next run refuses that folder rather than removing it."""
    real_build, real_replace = mypt.append._build, os.replace

    def build(dataset_dir, *args):
        meta = real_build(dataset_dir, *args)
        (dataset_dir / "written_meanwhile.txt").write_text("mine\n")
        return meta

    def replace(src, dest, **kwargs):
        if str(src).endswith("written_meanwhile.txt"):
            raise PermissionError(13, "Permission denied", str(dest))
        return real_replace(src, dest, **kwargs)
    monkeypatch.setattr(mypt.append, "_build", build)
    monkeypatch.setattr(os, "replace", replace)
    more = str(corpus(tmp_path / "in" / "second.txt", 1))
    out = cli("prepare-dataset", "--input_files", more, "--append_to", str(dataset), ok=False).output
    aside = dataset.parent / f".{dataset.name}.append"
    # Named alone: old/ holds the whole old dataset too, its metadata among them, which moved in would undo the append.
    assert f"is grown, but written_meanwhile.txt, which you added to it while the append ran, is still in " \
           f"{aside / 'old'}" in out and "move it into" in out and "(only it)" in out, out
    assert (aside / "old" / "written_meanwhile.txt").read_text() == "mine\n"
    monkeypatch.undo()
    out = cli("prepare-dataset", "--input_files", str(corpus(tmp_path / "in" / "third.txt", 2)), "--append_to",
              str(dataset), ok=False).output
    assert "did not make this folder" in out and (aside / "old" / "written_meanwhile.txt").is_file(), out


def test_a_work_mark_left_in_the_grown_dataset_is_said_alone_and_removed_by_the_next_append(dataset, tmp_path,
                                                                                            monkeypatch):
    """The grown dataset's work mark that cannot be removed (a full disk, an I/O error) is all that is left: said so,
    and the append's work folder (which holds the whole old dataset) removed. The message said the files added
    meanwhile were in `.ds.append/old` and to move them in by hand (the old metadata over the grown one's), and
    the next --append_to was refused until `.ds.append` was removed by hand."""
    real_unlink = os.unlink

    def unlink(path, *args, **kwargs):
        if Path(path) == dataset / WORK_MARK and (tmp_path / ".ds.append" / "old").is_dir():  # (after the swap)
            raise OSError(28, "No space left on device", str(path))
        return real_unlink(path, *args, **kwargs)
    monkeypatch.setattr(os, "unlink", unlink)
    out = cli("prepare-dataset", "--input_files", str(corpus(tmp_path / "in" / "second.txt", 1)), "--append_to",
              str(dataset), ok=False).output
    monkeypatch.undo()
    assert f"{dataset} is in place, whole, but its work mark {WORK_MARK} is left in it" in out, out
    assert "by hand" not in out and leftovers(dataset) == [], out
    cli("prepare-dataset", "--input_files", str(corpus(tmp_path / "in" / "third.txt", 2)), "--append_to",
        str(dataset))
    assert not (dataset / WORK_MARK).exists() and leftovers(dataset) == []
    assert cli("verify-dataset", str(dataset)).output.startswith("OK:")


def test_without_hard_links_a_users_file_keeps_its_permissions_and_time(dataset, tmp_path, monkeypatch):
    """Where the append copies (no hard links), a private file of the user's in the dataset came
    back readable by all (the umask's mode) and dated now; it keeps its mode and time."""
    notes = dataset / "private" / "notes.md"
    notes.parent.mkdir()
    notes.write_text("mine alone\n")
    notes.chmod(0o600)
    os.utime(notes, (1_000_000_000, 1_000_000_000))

    def no_links(src, dst, **kwargs):
        raise OSError(1, "Operation not permitted")  # as on filesystems without hard links

    monkeypatch.setattr(os, "link", no_links)
    cli("prepare-dataset", "--input_files", str(corpus(tmp_path / "b.txt", 1)), "--append_to", str(dataset))
    assert notes.read_text() == "mine alone\n"
    assert (notes.stat().st_mode & 0o777, notes.stat().st_mtime) == (0o600, 1_000_000_000)


def test_each_source_records_the_hash_of_its_pieces_which_append_compares(tmp_path, monkeypatch):
    """`sources[].sha256_pieces` is the sha256 of the sha256 digests of the input's PIECE_BYTES
    pieces (mypt.source_hash), hashed by the clean step's blocks; an append of the same bytes
    under another name is recognised by it. A dataset of an older mypt records a plain sha256
    under `sha256`: its sources are recognised by that."""
    import hashlib

    import mypt.readers.base
    import mypt.text

    piece = 1000  # small pieces and blocks (in this process: --workers 1), so that several blocks hash several pieces
    monkeypatch.setattr(mypt.readers.base, "PIECE_BYTES", piece)
    monkeypatch.setattr(mypt.text, "BLOCK_BYTES", 2500)
    first = corpus(tmp_path / "in" / "first.txt", 0)
    data = first.read_bytes()
    assert len(data) > 4 * 2500 and len(data) % piece  # blocks, and a short last piece
    cli("prepare-dataset", "--input_files", str(first), "--out_dir", str(tmp_path / "ds"), "--workers", "1",
        *SETTINGS)
    meta = json.loads((tmp_path / "ds" / "dataset_metadata.json").read_text())
    pieces = b"".join(hashlib.sha256(data[i:i + piece]).digest() for i in range(0, len(data), piece))
    assert meta["sources"][0]["sha256_pieces"] == hashlib.sha256(pieces).hexdigest()
    assert "sha256" not in meta["sources"][0]
    moved = tmp_path / "elsewhere" / "renamed.txt"
    moved.parent.mkdir()
    moved.write_bytes(data)
    before = tree_bytes(tmp_path / "ds")
    out = cli("prepare-dataset", "--input_files", str(moved), "--append_to", str(tmp_path / "ds"), ok=False)
    assert "already in --append_to" in out.output and "the same bytes" in out.output
    # As an older mypt recorded it: the plain sha256 of the bytes, still recognised.
    source = meta["sources"][0]
    del source["sha256_pieces"]
    source["sha256"] = hashlib.sha256(data).hexdigest()
    (tmp_path / "ds" / "dataset_metadata.json").write_text(json.dumps(meta, indent=2) + "\n")
    out = cli("prepare-dataset", "--input_files", str(moved), "--append_to", str(tmp_path / "ds"), ok=False)
    assert "already in --append_to" in out.output and "the same bytes" in out.output
    assert {k: v for k, v in tree_bytes(tmp_path / "ds").items() if "metadata" not in k} == \
        {k: v for k, v in before.items() if "metadata" not in k}
