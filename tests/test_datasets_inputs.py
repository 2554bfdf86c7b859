"""Inputs written by Hugging Face `datasets` (issue 21): a `Dataset.save_to_disk` directory
(Arrow stream files listed by state.json) is one input, and `Dataset.to_json` output (JSON
Lines named .json) is read as JSONL; both give the tokens of the same texts as a .jsonl.
The fixtures are written with pyarrow directly, as datasets writes them (no datasets needed)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from conftest import tree_bytes
from test_formats import docs, documents, ok, prepare, refused

pa = pytest.importorskip("pyarrow")


def save_to_disk(root: Path, columns: dict, shards: int = 2, batch_rows: int = 7) -> Path:
    """What Dataset.save_to_disk writes: Arrow IPC streams in batches, state.json, dataset_info.json."""
    root.mkdir(parents=True)
    table = pa.table(columns)
    names = [f"data-{i:05d}-of-{shards:05d}.arrow" for i in range(shards)]
    cuts = [table.num_rows * i // shards for i in range(shards + 1)]
    for name, a, b in zip(names, cuts, cuts[1:]):
        with pa.ipc.new_stream(str(root / name), table.schema) as writer:
            for batch in table.slice(a, b - a).to_batches(max_chunksize=batch_rows):
                writer.write_batch(batch)
    (root / "state.json").write_text(json.dumps({"_data_files": [{"filename": n} for n in names],
                                                 "_fingerprint": "0", "_split": None}))
    (root / "dataset_info.json").write_text(json.dumps({"features": {k: {"dtype": "string", "_type": "Value"}
                                                                     for k in columns}}))
    return root


def jsonl(path: Path, texts: list, key: str = "text") -> Path:
    path.write_text("".join(json.dumps({key: t, "id": i}) + "\n" for i, t in enumerate(texts)))
    return path


def test_saved_dataset_and_to_json_give_the_tokens_of_the_same_jsonl(tmp_path):
    texts = docs(60)
    with_null = texts[:10] + [None] + texts[10:]  # a null text is an empty document, as in parquet
    save_to_disk(tmp_path / "saved", {"content": with_null, "text": ["not this"] * 61}, shards=3)
    jsonl(tmp_path / "out.json", with_null, key="content")  # Dataset.to_json's default: JSON Lines, null kept
    jsonl(tmp_path / "ref.jsonl", texts, key="content")
    out = {}
    for name, workers in (("ref.jsonl", "1"), ("out.json", "1"), ("saved", "1"), ("saved", "2")):
        ds = tmp_path / f"ds-{name}-{workers}"
        result = ok(prepare("--input_files", str(tmp_path / name), "--out_dir", str(ds), "--text_key", "content",
                            "--workers", workers))
        out[name, workers] = tree_bytes(ds / "train")
        # JSON Lines keeps its rule (a null text is a bad line, skipped and counted), named as such.
        assert ("out.json:11: its 'content' is null" in result.output) == (name == "out.json"), result.output
    assert out["ref.jsonl", "1"] == out["out.json", "1"] == out["saved", "1"] == out["saved", "2"]
    assert documents(tmp_path / "ds-saved-2") == [t + "\n" for t in texts]
    meta = json.loads((tmp_path / "ds-saved-1" / "dataset_metadata.json").read_text())
    assert [s["name"] for s in meta["sources"]] == [str(tmp_path / "saved")]  # one source, not three files
    assert meta["stats"]["clean"]["documents_in"] == 61 and meta["stats"]["clean"]["documents_emptied"] == 1
    # The same inputs again: the same dataset, rebuilt without --overwrite (its size is the files').
    ok(prepare("--input_files", str(tmp_path / "saved"), "--out_dir", str(tmp_path / "ds-saved-1"),
               "--text_key", "content"))


def test_a_walked_folder_reads_saved_datasets_whole_and_leaves_json_files(tmp_path):
    corpus = tmp_path / "corpus"
    save_to_disk(corpus / "b_saved", {"text": docs(20)})
    (corpus / "a.txt").write_text("A plain text document.\n")
    (corpus / "manifest.json").write_text('{"step": "fetch"}\n')  # metadata beside a corpus: not read
    ok(prepare("--input_files", str(corpus), "--out_dir", str(tmp_path / "ds")))
    meta = json.loads((tmp_path / "ds" / "dataset_metadata.json").read_text())
    assert [s["name"] for s in meta["sources"]] == [str(corpus / "a.txt"), str(corpus / "b_saved")]
    assert documents(tmp_path / "ds") == ["A plain text document.\n"] + [t + "\n" for t in docs(20)]


def test_what_is_not_read_is_a_one_line_error(tmp_path, monkeypatch):
    save_to_disk(tmp_path / "dd" / "train", {"text": docs(5)})
    save_to_disk(tmp_path / "dd" / "test", {"text": docs(5)})
    (tmp_path / "dd" / "dataset_dict.json").write_text('{"splits": ["train", "test"]}')
    (tmp_path / "array.json").write_text(json.dumps([{"text": t} for t in docs(5)]))
    (tmp_path / "pretty.json").write_text(json.dumps({"text": "one document"}, indent=2))
    save_to_disk(tmp_path / "cut", {"text": docs(5)})
    (tmp_path / "cut" / "data-00001-of-00002.arrow").unlink()
    cases = [
        ("dd", ["DatasetDict", "train", "test", str(tmp_path / "dd" / "test")]),
        ("array.json", ["array.json", "one JSON array, not JSON Lines", ".jsonl"]),
        ("pretty.json", ["pretty.json", "one JSON object over several lines", ".jsonl"]),
        ("cut", ["state.json", "data-00001-of-00002.arrow", "incomplete"]),
    ]
    for name, fragments in cases:
        refused(prepare("--input_files", str(tmp_path / name), "--out_dir", str(tmp_path / "ds")), *fragments)
    save_to_disk(tmp_path / "saved", {"body": docs(5)})
    refused(prepare("--input_files", str(tmp_path / "saved"), "--out_dir", str(tmp_path / "ds")),
            "no column 'text'", "body", "--text_key")
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # `import pyarrow` now raises ImportError
    refused(prepare("--input_files", str(tmp_path / "saved"), "--out_dir", str(tmp_path / "ds"), "--workers", "1"),
            "saved", "pyarrow", "pip install 'mypt[formats]'")
    assert not (tmp_path / "ds").exists()


def test_a_saved_dataset_with_an_indices_mapping_is_refused(tmp_path):
    """datasets 1.x saved a select, shuffle, filter or split as the whole table and an
    indices.arrow of the rows that are the dataset: read whole, the dropped rows (a split's test
    rows) came back, in storage order, silently."""
    saved = save_to_disk(tmp_path / "saved", {"text": docs(10)})
    with pa.ipc.new_stream(str(saved / "indices.arrow"), pa.schema([("indices", pa.uint64())])) as writer:
        writer.write_table(pa.table({"indices": pa.array([7, 3], pa.uint64())}))
    state = json.loads((saved / "state.json").read_text())
    (saved / "state.json").write_text(json.dumps({**state, "_indices_data_files": [{"filename": "indices.arrow"}]}))
    out = refused(prepare("--input_files", str(saved), "--out_dir", str(tmp_path / "ds")))
    assert "lists an indices mapping (_indices_data_files" in out and "ds.flatten_indices()" in out, out
    assert not (tmp_path / "ds").exists()


def test_a_saved_dataset_of_many_files_stats_each_file_a_few_times(tmp_path, monkeypatch):
    """Each block (an Arrow file) is checked for the files it read, not the whole dataset again:
    after every block, state.json was parsed and every file stat'ed (2,000 files: 245 s, now 10 s)."""
    files = 60
    saved = save_to_disk(tmp_path / "saved", {"text": docs(files)}, shards=files)
    stats = []
    real_stat = os.stat

    def counted(path, *args, **kwargs):
        if str(path).startswith(str(saved)):
            stats.append(path)
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", counted)
    ok(prepare("--input_files", str(saved), "--out_dir", str(tmp_path / "ds"), "--workers", "1",
               "--tokenization", "char"))
    assert len(stats) < 10 * files, len(stats)  # (before: a stat of every file after each block, 60 * 61)
    meta = json.loads((tmp_path / "ds" / "dataset_metadata.json").read_text())
    assert meta["stats"]["clean"]["documents_in"] == files


def test_an_arrow_file_cut_at_a_record_batch_end_is_refused(tmp_path):
    """pyarrow takes the end of a file at the end of a record batch as the stream's end: a saved
    dataset's Arrow file cut there was read short, with no error (a cut inside a batch was
    caught). The end-of-stream mark every closed writer leaves says the file is whole; a file
    in the pre-0.15 format (its own mark) is read."""
    texts = docs(20)
    saved = save_to_disk(tmp_path / "saved", {"text": texts}, shards=1, batch_rows=7)
    arrow = saved / "data-00000-of-00001.arrow"
    sink = pa.BufferOutputStream()  # the same writer's bytes up to the first batch's end
    writer = pa.ipc.new_stream(sink, pa.schema([("text", pa.string())]))
    writer.write_batch(pa.table({"text": texts}).to_batches(max_chunksize=7)[0])
    boundary = sink.tell()
    assert arrow.read_bytes()[:boundary] == sink.getvalue().to_pybytes()
    os.truncate(arrow, boundary)
    out = refused(prepare("--input_files", str(saved), "--out_dir", str(tmp_path / "ds")),
                  str(saved), "data-00000-of-00001.arrow ends without the end-of-stream mark", "cut short",
                  "save it again")
    assert not (tmp_path / "ds").exists(), out
    legacy = save_to_disk(tmp_path / "legacy", {"text": texts}, shards=1)
    with pa.ipc.new_stream(str(legacy / "data-00000-of-00001.arrow"), pa.schema([("text", pa.string())]),
                           options=pa.ipc.IpcWriteOptions(use_legacy_format=True)) as writer:
        writer.write_table(pa.table({"text": texts}), max_chunksize=7)
    ok(prepare("--input_files", str(legacy), "--out_dir", str(tmp_path / "ds")))
    assert documents(tmp_path / "ds") == [t + "\n" for t in texts]
