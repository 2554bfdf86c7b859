"""Input formats through prepare-dataset: parquet (by row group), zstd streams, --text_key,
damaged files, and bad JSONL lines (reported, or an error with --strict)."""

from __future__ import annotations

import importlib.util
import json
import random
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import REPO, read_tokens, tree_bytes

import mypt.text
from mypt.cli import main
from mypt.readers import reader_for
from mypt.tokenizers import Tokenizer

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
zstandard = pytest.importorskip("zstandard")

WORDS = "the king queen lord sword night crown blood love death heaven earth fire water stone".split()


def docs(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return ["\n".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))).capitalize() + "."
                      for _ in range(rng.randint(1, 3))) + f" Doc {i}." for i in range(n)]


def prepare(*args: str) -> object:
    return CliRunner().invoke(main, ["prepare-dataset", "--val_fraction", "0", "--no_dedup", *args])


def ok(result) -> object:
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def documents(ds: Path) -> list[str]:
    """The documents of a gpt2 dataset, in order (each ends with the newline clean adds)."""
    return Tokenizer.load(ds).decode(read_tokens(ds / "train")).split("<|endoftext|>")[:-1]


def refused(result, *fragments: str) -> str:
    """A one-line error: exit 1, no traceback, naming what it must."""
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output + repr(result.exception)
    assert len(result.output.strip().splitlines()) == 1, result.output
    for fragment in fragments:
        assert fragment in result.output, result.output
    return result.output


def write_zst(path: Path, data: bytes, frames: int = 1) -> None:
    """`data` compressed as `frames` zstd frames, cut at arbitrary bytes (mid-line)."""
    cuts = [len(data) * i // frames for i in range(frames + 1)]
    c = zstandard.ZstdCompressor()
    path.write_bytes(b"".join(c.compress(data[a:b]) for a, b in zip(cuts, cuts[1:])))


# ---------------------------------------------------------------------------------------------
# parquet


def test_parquet_rows_are_documents_in_order_and_row_groups_split_the_work(tmp_path):
    texts = docs(120)
    texts[5] = None  # a null text is an empty document
    pq.write_table(pa.table({"id": list(range(120)), "text": texts}), tmp_path / "c.parquet", row_group_size=25)
    assert reader_for(tmp_path / "c.parquet").blocks() == [(i, i + 1) for i in range(5)]  # a row group each
    out = {}
    for workers in ("1", "2"):
        ok(prepare("--input_files", str(tmp_path / "c.parquet"), "--out_dir", str(tmp_path / workers),
                   "--workers", workers))
        out[workers] = tree_bytes(tmp_path / workers)
    assert out["1"] == out["2"]
    assert documents(tmp_path / "1") == [t + "\n" for t in texts if t]
    meta = json.loads((tmp_path / "1" / "dataset_metadata.json").read_text())
    assert meta["stats"]["clean"]["documents_in"] == 120 and meta["stats"]["clean"]["documents_emptied"] == 1
    assert meta["settings"]["text_key"] == "text"


def test_text_key_names_the_field_of_jsonl_and_parquet(tmp_path):
    texts = docs(30)
    pq.write_table(pa.table({"content": texts[:15], "text": ["not this"] * 15}), tmp_path / "a.parquet")
    (tmp_path / "b.jsonl").write_text("".join(json.dumps({"content": t, "text": "not this"}) + "\n"
                                              for t in texts[15:]))
    ok(prepare("--input_files", str(tmp_path / "a.parquet"), str(tmp_path / "b.jsonl"), "--out_dir",
               str(tmp_path / "ds"), "--text_key", "content"))
    assert documents(tmp_path / "ds") == [t + "\n" for t in texts]
    meta = json.loads((tmp_path / "ds" / "dataset_metadata.json").read_text())
    assert meta["settings"]["text_key"] == "content"
    refused(prepare("--input_files", str(tmp_path / "a.parquet"), "--out_dir", str(tmp_path / "x"),
                    "--text_key", "body"), "a.parquet", "no column 'body'", "content", "--text_key")
    pq.write_table(pa.table({"text": [1, 2]}), tmp_path / "ints.parquet")
    refused(prepare("--input_files", str(tmp_path / "ints.parquet"), "--out_dir", str(tmp_path / "x")),
            "ints.parquet", "not text", "--text_key")


# ---------------------------------------------------------------------------------------------
# zstd


def test_zstd_streams_equal_their_plain_files(tmp_path, monkeypatch):
    # Several frames cut mid-line, more compressed bytes than one 64 KiB read, and line-aligned
    # pieces far smaller than the file: the stream is read across every boundary.
    monkeypatch.setattr(mypt.text, "BLOCK_BYTES", 4096)
    rng = random.Random(1)
    texts = [" ".join("".join(rng.choice("abcdefghij klmnop") for _ in range(rng.randint(20, 200)))
                      for _ in range(rng.randint(1, 3))) for _ in range(2000)]
    jsonl = "".join(json.dumps({"text": t}) + "\n" for t in texts).encode()
    txt = "\n".join(texts).encode() + b"\n"
    for name, data in (("a.jsonl", jsonl), ("b.txt", txt)):
        (tmp_path / "plain").mkdir(exist_ok=True)
        (tmp_path / "zst").mkdir(exist_ok=True)
        (tmp_path / "plain" / name).write_bytes(data)
        write_zst(tmp_path / "zst" / f"{name}.zst", data, frames=5)
    assert (tmp_path / "zst" / "a.jsonl.zst").stat().st_size > 1 << 16
    for kind in ("plain", "zst"):
        ok(prepare("--input_files", str(tmp_path / kind), "--out_dir", str(tmp_path / f"ds_{kind}"),
                   "--workers", "1", "--no_filter"))
    plain, zst = (tree_bytes(tmp_path / f"ds_{k}" / "train") for k in ("plain", "zst"))
    assert plain == zst
    assert documents(tmp_path / "ds_zst")[:2000] == [t.rstrip() + "\n" for t in texts]


@pytest.mark.parametrize("name, damage, fragment", [
    ("c.parquet", lambda data: data[: len(data) // 2], "c.parquet"),  # truncated: no footer
    ("c.jsonl.zst", lambda data: data[:-7], "c.jsonl.zst"),  # truncated inside the last frame
    ("c.txt.zst", lambda data: b"\x28\xb5\x2f\xfd" + bytes(range(256)) * 4, "c.txt.zst"),  # garbage after the magic
    ("c.jsonl.gz", lambda data: b"\x1f\x8b" + b"garbage" * 20, "c.jsonl.gz"),
])
def test_damaged_file_is_a_one_line_error_naming_it(tmp_path, name, damage, fragment):
    texts = docs(200)
    if name.endswith(".parquet"):
        pq.write_table(pa.table({"text": texts}), tmp_path / name, row_group_size=50)
    elif name.endswith(".gz"):
        (tmp_path / name).write_bytes(b"")
    else:
        write_zst(tmp_path / name, "".join(json.dumps({"text": t}) + "\n" for t in texts).encode())
    (tmp_path / name).write_bytes(damage((tmp_path / name).read_bytes()))
    out = refused(prepare("--input_files", str(tmp_path / name), "--out_dir", str(tmp_path / "ds")),
                  fragment, "damaged or truncated")
    assert "Traceback" not in out and not (tmp_path / "ds").exists()


@pytest.mark.parametrize("module, name", [("zstandard", "a.txt.zst"), ("pyarrow", "a.parquet")])
def test_missing_package_names_the_extra(tmp_path, monkeypatch, module, name):
    (tmp_path / name).write_bytes(b"\x28\xb5\x2f\xfd" if name.endswith(".zst") else b"PAR1....PAR1")
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now raises ImportError
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    refused(prepare("--input_files", str(tmp_path / name), "--out_dir", str(tmp_path / "ds"), "--workers", "1"),
            name, module, "pip install 'mypt[formats]'")


# ---------------------------------------------------------------------------------------------
# bad JSONL lines


def bad_corpus(root: Path) -> Path:
    """Two JSONL files; the first bad line is line 150 of the second (several blocks in)."""
    root.mkdir()
    good = [json.dumps({"text": t}) for t in docs(400)]
    (root / "a.jsonl").write_text("\n".join(good[:100]) + "\n")
    lines = good[100:]
    lines[149] = '{"text": "unterminated'
    lines[200] = '["a list"]'
    lines[250] = '{"body": "no text field"}'
    (root / "b.jsonl").write_text("\n".join(lines) + "\n")
    return root


def test_bad_jsonl_lines_reported_and_strict_fails_at_the_first(tmp_path, monkeypatch):
    monkeypatch.setattr(mypt.text, "BLOCK_BYTES", 2048)  # many blocks: the bad lines are in later ones
    corpus = bad_corpus(tmp_path / "corpus")
    first = f"{corpus / 'b.jsonl'}:150: not valid JSON"
    for workers in ("1", "2"):
        result = ok(prepare("--input_files", str(corpus), "--out_dir", str(tmp_path / f"ds{workers}"),
                            "--workers", workers))
        assert f"Bad JSONL lines skipped: 3 (first: {first}); --strict makes them an error" in result.output
        meta = json.loads((tmp_path / f"ds{workers}" / "dataset_metadata.json").read_text())
        assert meta["stats"]["clean"]["bad_json_lines"] == 3 and meta["first_bad_json_line"] == first
        assert "strict" not in meta["settings"]  # it never changes the bytes written
        out = refused(prepare("--input_files", str(corpus), "--out_dir", str(tmp_path / "strict"), "--workers",
                              workers, "--strict"), first, "--strict")
        assert not (tmp_path / "strict").exists(), out


def test_bad_line_reasons_and_the_clean_stage_says_so(tmp_path):
    (tmp_path / "c.jsonl").write_text('{"text": "Fine words here."}\n\n[1]\n{"body": "x"}\n')
    spec = importlib.util.spec_from_file_location("clean_stage", REPO / "stages" / "clean.py")
    stage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stage)
    result = CliRunner().invoke(stage.main, ["--input_files", str(tmp_path / "c.jsonl"), "--out_dir",
                                             str(tmp_path / "clean"), "--stats", str(tmp_path / "s.json")])
    assert result.exit_code == 0, result.output
    assert f"Bad JSONL lines skipped: 2 (first: {tmp_path / 'c.jsonl'}:3: not a JSON object)" in result.output
    assert json.loads((tmp_path / "s.json").read_text())["bad_json_lines"] == 2
    result = CliRunner().invoke(stage.main, ["--input_files", str(tmp_path / "c.jsonl"), "--out_dir",
                                             str(tmp_path / "clean2"), "--stats", str(tmp_path / "s2.json"),
                                             "--strict"])
    refused(result, f"{tmp_path / 'c.jsonl'}:3: not a JSON object")
    (tmp_path / "d.jsonl").write_text('{"body": "Fine words here."}\n')
    refused(prepare("--input_files", str(tmp_path / "d.jsonl"), "--out_dir", str(tmp_path / "ds"), "--strict"),
            f"{tmp_path / 'd.jsonl'}:1: no string field 'text'", "--text_key")


def test_a_file_no_reader_takes_is_refused(tmp_path):
    (tmp_path / "notes.md").write_text("Some words of text.\n")
    (tmp_path / "c.parquet.gz").write_bytes(b"PAR1")  # parquet needs seeking: never read through gzip
    for name in ("notes.md", "c.parquet.gz"):
        refused(prepare("--input_files", str(tmp_path / name), "--out_dir", str(tmp_path / "ds")),
                name, "not a format mypt reads", ".parquet", ".jsonl.zst", "rename it to .txt", "name the folder")


@pytest.mark.parametrize("value_type", ["string", "large_string"])
def test_parquet_dictionary_encoded_text_is_read_as_text(tmp_path, value_type):
    """pandas' category columns and some writers store text as a dictionary of strings."""
    texts = docs(12)
    column = pa.array(texts, type=getattr(pa, value_type)()).dictionary_encode()
    pq.write_table(pa.table({"text": column, "ids": pa.array([1] * 12).dictionary_encode()}), tmp_path / "d.parquet")
    ok(prepare("--input_files", str(tmp_path / "d.parquet"), "--out_dir", str(tmp_path / "ds")))
    assert documents(tmp_path / "ds") == [t + "\n" for t in texts]
    result = prepare("--input_files", str(tmp_path / "d.parquet"), "--out_dir", str(tmp_path / "ds2"),
                     "--text_key", "ids")  # a dictionary of numbers is still no text
    assert result.exit_code == 1 and "column 'ids' holds int64, not text" in result.output, result.output


def test_a_walk_follows_links_to_folders_each_once(tmp_path):
    """A corpus spread over disks by a link to a folder: its files were passed over unsaid (the
    walk did not follow links to folders). They are inputs now; a link back up (a loop) and a
    second way to a file read nothing twice."""
    corpus, books = tmp_path / "corpus", tmp_path / "disk2" / "books"
    books.mkdir(parents=True)
    corpus.mkdir()
    for i in range(3):
        (books / f"b{i}.txt").write_text(f"Book {i}: the king and the queen walk far.\n")
    (corpus / "local.txt").write_text("A local document of words.\n")
    (corpus / "books").symlink_to(books)
    (corpus / "up").symlink_to(tmp_path)  # back up: corpus/up/corpus/... and corpus/up/disk2/books again
    ok(prepare("--input_files", str(corpus), "--out_dir", str(tmp_path / "ds"), "--val_fraction", "0"))
    meta = json.loads((tmp_path / "ds" / "dataset_metadata.json").read_text())
    names = sorted(Path(s["name"]).name for s in meta["sources"])
    assert names == ["b0.txt", "b1.txt", "b2.txt", "local.txt"], names
