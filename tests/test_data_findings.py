"""Data preparation's answers to a hostile tester's inputs: shard order past the names' padding,
JSONL nested past Python's recursion limit, parquet columns named twice or read back as
string_view, an Arrow file cut at a record batch's end, an input removed during a run, the
memory of reading a large token file, an input appended from another directory, and dedup's
block files past their names' padding."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from test_dvc_params import stage_main

import mypt.shards
import mypt.text
from mypt.cli import main
from mypt.data import GPTDataLoader, LoaderConfig
from mypt.io import read_json, write_json
from mypt.names import METADATA_FILE
from mypt.readers.base import Reader
from mypt.readers.jsonl import NESTED
from mypt.tokenizers import Tokenizer


def invoke(command, *args) -> str:
    result = CliRunner().invoke(command, [str(a) for a in args])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def shards_of_a_corpus(tokens_per_shard: int) -> None:
    """corpus/a.txt (40 lines) through the clean, vocab, tokenize and shard stages, in the current
    directory: the shard step's output in sh/ (tokenized in tok/)."""
    Path("corpus").mkdir()
    Path("corpus/a.txt").write_text("".join(f"Line {i} of the text.\n" for i in range(40)))
    invoke(stage_main("stages/clean.py"), "--input_files", "corpus", "--out_dir", "clean", "--stats", "s1.json")
    invoke(stage_main("stages/vocab.py"), "--in_dir", "clean", "--out_dir", "vocab", "--tokenization", "char")
    invoke(stage_main("stages/tokenize_corpus.py"), "--in_dir", "clean", "--tokenizer_dir", "vocab", "--out_dir",
           "tok", "--stats", "s2.json")
    invoke(stage_main("stages/shard.py"), "--in_dir", "tok", "--out_dir", "sh", "--tokens_per_shard",
           str(tokens_per_shard))

def test_shards_past_the_names_padding_keep_the_corpus_order(tmp_path, monkeypatch):
    """shard_name pads to 5 digits, so shard_100000.bin sorts between shard_10000.bin and
    shard_10001.bin as text: the split stage read the shard step's output in that order and
    wrote the tokens scrambled from token 10,001 on (verify-dataset passed it). Names padded to
    one digit here stand for 100,000 shards: shard_10.bin sorts before shard_2.bin as text.
    The split stage and the loader read shards by index."""
    monkeypatch.chdir(tmp_path)
    unpadded = lambda index: f"shard_{index}.bin"  # noqa: E731
    monkeypatch.setattr(mypt.shards, "shard_name", unpadded)  # (the shard and split steps name shards through it)
    shards_of_a_corpus(7)
    corpus = np.fromfile("tok/00000.tokens", dtype=np.uint32)
    assert Path("sh/shard_12.bin").is_file() and corpus.size > 12 * 7
    invoke(stage_main("stages/split.py"), "--in_dir", "sh", "--out_dir", "ds", "--stats", "s3.json",
           "--val_fraction", "0", "--chunk_tokens", "7")
    listed = read_json(Path("ds", METADATA_FILE))["train"]["shards"]
    assert [e["file"] for e in listed] == [f"train/shard_{i}.bin" for i in range(len(listed))]
    written = np.concatenate([np.fromfile(Path("ds", e["file"]), dtype=np.uint32) for e in listed])
    assert np.array_equal(written, corpus)
    # The loader's pass in shard order: each 7-token shard gives one window of 6, its first tokens.
    loader = GPTDataLoader(LoaderConfig(batch_size=4, block_size=6), Tokenizer.load(Path("ds")), dataset_dir="ds")
    windows = np.concatenate([x.numpy() for x, _ in loader.sequential_batches("train")])
    full = corpus.size // 7
    assert np.array_equal(windows[:full], corpus[:full * 7].reshape(full, 7)[:, :6])


def run_cli(*args) -> object:
    return CliRunner().invoke(main, [str(a) for a in args])


def test_a_jsonl_line_nested_past_the_recursion_limit_is_a_bad_line(tmp_path):
    """json.loads raises RecursionError, not ValueError, on a line nested about 1,000 levels
    deep: prepare-dataset and train-tokenizer ended in a traceback. It is a bad line like any
    other: counted and skipped, or named file:line under --strict."""
    deep = '{"text": "Deep one.", "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
    lines = [f'{{"text": "Document {i} holds some words of its own."}}' for i in range(30)]
    lines[5] = deep
    path = tmp_path / "c.jsonl"
    path.write_text("\n".join(lines) + "\n")
    first = f"{path}:6: {NESTED}"
    result = run_cli("prepare-dataset", "--input_files", path, "--out_dir", tmp_path / "ds", "--tokenization", "char",
                     "--workers", "1")
    assert result.exit_code == 0, result.output
    assert f"Bad JSONL lines skipped: 1 (first: {first})" in result.output
    assert read_json(tmp_path / "ds" / METADATA_FILE)["stats"]["clean"]["bad_json_lines"] == 1
    result = run_cli("prepare-dataset", "--input_files", path, "--out_dir", tmp_path / "strict", "--tokenization",
                     "char", "--workers", "1", "--strict")
    assert result.exit_code == 1 and first in result.output and "Traceback" not in result.output, result.output
    result = run_cli("train-tokenizer", "--input_files", path, "--vocab_size", "270", "--out", tmp_path / "tok.json")
    assert result.exit_code == 0, result.output
    # A .json whose first line is nested so deep is sniffed as JSON Lines, not as a spread-out document.
    (tmp_path / "d.json").write_text(deep + "\n" + lines[0] + "\n")
    result = run_cli("prepare-dataset", "--input_files", tmp_path / "d.json", "--out_dir", tmp_path / "ds2",
                     "--tokenization", "char", "--workers", "1", "--val_fraction", "0")
    assert result.exit_code == 0 and "Bad JSONL lines skipped: 1" in result.output, result.output


def test_parquet_text_column_named_twice_is_named_and_string_view_is_text(tmp_path):
    """Two columns named `text` ended in a KeyError traceback; a string_view column (what
    pyarrow 16+ may read a string column back as, and write) was refused as not text."""
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    texts = [f"Document {i} holds some words of its own." for i in range(12)]
    table = pa.Table.from_arrays([pa.array(texts), pa.array(texts)], names=["text", "text"])
    pq.write_table(table, tmp_path / "twice.parquet")
    result = run_cli("prepare-dataset", "--input_files", tmp_path / "twice.parquet", "--out_dir", tmp_path / "ds",
                     "--tokenization", "char")
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert f"{tmp_path / 'twice.parquet'}: 2 columns are named 'text'" in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "ds").exists()
    pq.write_table(pa.table({"text": pa.array(texts, pa.string_view())}), tmp_path / "view.parquet")
    result = run_cli("prepare-dataset", "--input_files", tmp_path / "view.parquet", "--out_dir", tmp_path / "ds",
                     "--tokenization", "char", "--val_fraction", "0")
    assert result.exit_code == 0, result.output
    assert read_json(tmp_path / "ds" / METADATA_FILE)["stats"]["clean"]["documents_in"] == 12


@pytest.mark.parametrize("name", ["a.txt", "a.jsonl"])
def test_an_input_removed_between_its_blocks_is_said_removed(tmp_path, monkeypatch, name):
    """A .jsonl removed during a run was 'cannot be read as .jsonl ([Errno 2] ...); the file is
    damaged or truncated' where a .txt removed alike was 'removed while mypt read it': the open
    of its next block failed, and was taken as damage. One message for both."""
    monkeypatch.setattr(mypt.text, "BLOCK_BYTES", 2048)  # many blocks
    path = tmp_path / name
    lines = [f"Document {i} holds some words of its own." for i in range(400)]
    path.write_text("".join((f'{{"text": "{t}"}}' if name.endswith(".jsonl") else t) + "\n" for t in lines))
    read = Reader.checked_texts

    def removed_after_the_first_block(self, start, *args):
        if start > 0 and path.exists():
            path.unlink()
        return read(self, start, *args)

    monkeypatch.setattr(Reader, "checked_texts", removed_after_the_first_block)
    result = run_cli("prepare-dataset", "--input_files", path, "--out_dir", tmp_path / "ds", "--tokenization", "char",
                     "--workers", "1")
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert f"{path} was removed while mypt read it" in result.output and "damaged" not in result.output, result.output
    assert not (tmp_path / "ds").exists()


def rss_file_kb() -> int:
    """The process' resident file-backed memory (kB): pages of mapped files count there."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1])
    pytest.skip("no RssFile in /proc/self/status")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="Linux's /proc")
def test_the_shard_and_split_steps_hold_no_token_file_in_memory(tmp_path, monkeypatch):
    """The shard and split steps read token files through one memory map per file, whose pages
    stayed resident as the read went on: max RSS grew with the largest source (478 MB for a
    200 MB JSONL, its 436 MB token file). They are read with pread: the file-backed resident
    memory of a 64 MB token file read whole stays flat."""
    from mypt.steps.clean import clean
    from mypt.steps.shard import ShardSettings, shard
    from mypt.steps.split import SplitSettings, split
    from mypt.steps.tokenize import TokenizeSettings, tokenize
    from mypt.steps.vocab import build_vocab

    (tmp_path / "a.txt").write_text("Some words of a text.\nAnd more of them.\n")
    clean([str(tmp_path / "a.txt")], tmp_path / "c")
    tokenize(tmp_path / "c", tmp_path / "t", build_vocab(tmp_path / "c", TokenizeSettings(tokenization="char")))
    # A source of 16M tokens (64 MB): the tokenize step's files and manifest, as a large source gives them.
    n = 1 << 24
    tokens = np.resize(np.fromfile(tmp_path / "t" / "00000.tokens", dtype=np.uint32), n)
    tokens.tofile(tmp_path / "t" / "00000.tokens")
    np.array([n], dtype=np.uint64).tofile(tmp_path / "t" / "00000.docs")
    manifest = read_json(tmp_path / "t" / "manifest.json")
    manifest["sources"][0].update(documents=1, tokens=n)
    write_json(tmp_path / "t" / "manifest.json", manifest)
    seen = []
    write = mypt.shards.ShardWriter.write

    def noting(self, data):  # after each read of the stream
        seen.append(rss_file_kb())
        return write(self, data)

    monkeypatch.setattr(mypt.shards.ShardWriter, "write", noting)
    before = rss_file_kb()
    shard(tmp_path / "t", tmp_path / "s", ShardSettings(tokens_per_shard=n))
    split(tmp_path / "s", tmp_path / "ds", SplitSettings(val_fraction=0))
    assert len(seen) >= 2 and max(seen) - before < 16 * 1024, (before, seen)
    assert np.array_equal(np.fromfile(tmp_path / "ds" / "train" / "shard_00000.bin", dtype=np.uint32), tokens)


def test_append_knows_an_input_by_its_bytes_not_the_directory_its_name_was_recorded_in(tmp_path, monkeypatch):
    """Sources are named relative to the preparing run's working directory, which is not
    recorded (a dataset moves between machines): --append_to guessed it. A file prepared from
    inside its folder and appended from above was taken again (its text twice); another file
    of the same relative name and size was refused as already in. Each source records its
    sha256: the same bytes are refused under any name, other bytes taken under any name."""
    text = "".join(f"Line {i} of the king's long speech to the queen.\n" for i in range(80))
    (tmp_path / "cwdA").mkdir()
    (tmp_path / "cwdA" / "a.txt").write_text(text)
    (tmp_path / "cwdB").mkdir()
    (tmp_path / "cwdB" / "a.txt").write_text(text.replace("king", "lord"))  # the same size, other bytes
    settings = ["--tokenization", "char", "--workers", "1"]
    monkeypatch.chdir(tmp_path / "cwdA")
    assert run_cli("prepare-dataset", "--input_files", "a.txt", "--out_dir", "../dsA", *settings).exit_code == 0
    meta = read_json(tmp_path / "dsA" / METADATA_FILE)
    assert [s["name"] for s in meta["sources"]] == ["a.txt"] and len(meta["sources"][0]["sha256_pieces"]) == 64
    monkeypatch.chdir(tmp_path)
    result = run_cli("prepare-dataset", "--input_files", "cwdA/a.txt", "--append_to", "dsA")
    assert result.exit_code == 1 and "cwdA/a.txt is already in --append_to dsA (its source 'a.txt': the same " \
        "bytes)" in result.output, result.output
    assert read_json(tmp_path / "dsA" / METADATA_FILE) == meta
    monkeypatch.chdir(tmp_path / "cwdB")
    result = run_cli("prepare-dataset", "--input_files", "a.txt", "--append_to", "../dsA", "--workers", "1")
    assert result.exit_code == 0, result.output
    assert [s["name"] for s in read_json(tmp_path / "dsA" / METADATA_FILE)["sources"]] == ["a.txt", "a.txt"]


def test_hashed_blocks_past_the_names_padding_are_read_in_block_order(tmp_path, monkeypatch):
    """Hashing names clean block INDEX's files with 6 digits, and dedup read them back in name
    order: past 999,999 blocks (4 TB of text) block 1000000 came between 100000 and 100001,
    paired with another block's records. Names padded to one digit here stand for them (block 10
    sorts before block 2 as text): the chained dedup still gives the bytes of reading back."""
    import mypt.steps.dedup as dedup_step
    from mypt.steps.clean import CleanSettings, clean
    from mypt.steps.dedup import DedupSettings, Hashing, dedup

    monkeypatch.setattr(mypt.text, "BLOCK_BYTES", 300)  # many clean blocks
    monkeypatch.setattr(dedup_step, "block_stem", lambda out_dir, index: out_dir / str(index))
    rng = random.Random(5)
    pool = [f"a line of the corpus that recurs, number {i}" for i in range(30)]
    lines = [rng.choice(pool) if rng.random() < 0.6 else f"unique line {i} of text" for i in range(300)]
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "book.txt").write_text("\n".join(lines) + "\n")
    settings = CleanSettings(workers=1)
    clean([str(tmp_path / "in")], tmp_path / "clean", settings)
    (tmp_path / "hashed").mkdir()
    clean([str(tmp_path / "in")], tmp_path / "clean_hashed", settings, sink=Hashing(tmp_path / "hashed", 24))
    assert (tmp_path / "hashed" / "12.json").is_file()
    read_back = dedup(tmp_path / "clean", tmp_path / "dedup", DedupSettings(workers=1))
    chained = dedup(tmp_path / "clean_hashed", tmp_path / "dedup_chained", DedupSettings(workers=1),
                    hashed=tmp_path / "hashed")
    assert chained == read_back and read_back["stats"]["dedup"]["duplicate_lines_dropped"] > 50
    for s in read_back["sources"]:
        assert (tmp_path / "dedup_chained" / s["file"]).read_bytes() == (tmp_path / "dedup" / s["file"]).read_bytes()


def test_the_split_stage_refuses_shards_other_than_those_its_manifest_lists(tmp_path, monkeypatch):
    """The split stage read whatever shard files the shard step's output held: a stray shard's
    tokens were left out unsaid (the split reads the manifest's token count), a missing one
    shifted every later token onto other documents. Both are refused, naming the directory, the
    counts and the fix."""
    import shutil

    monkeypatch.chdir(tmp_path)
    shards_of_a_corpus(100)
    tokens = np.fromfile("tok/00000.tokens", dtype=np.uint32).size
    shards = -(-tokens // 100)
    assert shards > 3
    shutil.copytree("sh", "stray")
    shutil.copyfile("sh/shard_00000.bin", f"stray/shard_{shards:05d}.bin")
    shutil.copytree("sh", "missing")
    Path("missing/shard_00001.bin").unlink()
    for in_dir, have, files, said in (("stray", tokens + 100, shards + 1, f"not listed: shard_{shards:05d}.bin"),
                                      ("missing", tokens - 100, shards - 1, "missing: shard_00001.bin")):
        result = CliRunner().invoke(stage_main("stages/split.py"), ["--in_dir", in_dir, "--out_dir", f"ds_{in_dir}",
                                                                    "--stats", f"s_{in_dir}.json"])
        assert result.exit_code == 1 and "Traceback" not in result.output, result.output
        assert f"{in_dir}: its shards hold {have:,} tokens in {files} files, but its manifest.json says the shard " \
               f"step wrote {tokens:,} tokens in {shards}; {said}: " in result.output, result.output
        assert "run the shard stage again (`dvc repro`" in result.output, result.output
        assert not Path(f"ds_{in_dir}").exists()
    invoke(stage_main("stages/split.py"), "--in_dir", "sh", "--out_dir", "ds", "--stats", "s3.json")
