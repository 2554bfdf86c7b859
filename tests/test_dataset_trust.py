"""What a dataset says of itself holds: its tokenizer is the one its shards were written with
(the sha256 of the tokenizer state, recorded where datasets are written and checked where they
are read); an append refuses a dataset folder it cannot rebuild (a linked train/); an input of
blank lines is no document."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import REPO

import mypt.text
from mypt.cli import main

TINY = ["--config_file", "tiny", "--device", "cpu", "--max_iters", "2", "--eval_interval", "2", "--eval_iters", "1"]


def text(root: Path, name: str = "a.txt", lines: int = 200, word: str = "king") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / name
    path.write_text("".join(f"Line {i} of the {word}'s speech, and the reply {i * 7}.\n" for i in range(lines)))
    return path


def cli(*args: str, ok: bool = True) -> str:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == (0 if ok else 1), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)  # no traceback
    return result.output


def prepare(out: Path, *inputs: Path, extra: tuple[str, ...] = ()) -> dict:
    cli("prepare-dataset", "--input_files", *inputs, "--out_dir", out, "--tokenization", "char",
        "--tokens_per_shard", "2000", *extra)
    return json.loads((out / "dataset_metadata.json").read_text())


def canonical_sha256(state: dict) -> str:
    return hashlib.sha256(json.dumps(state, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
                          .encode("utf-8")).hexdigest()


def swap_vocabulary(ds: Path) -> None:
    """Another char vocabulary of the same size in the dataset's tokenizer_state.json: one
    character of the corpus ('a') replaced by one it lacks ('Z'). kind, vocab_size and eot_id
    agree with the metadata; every id is in range; the shards now decode as other text."""
    path = ds / "tokenizer_state.json"
    state = json.loads(path.read_text())
    assert "a" in state["chars"] and "Z" not in state["chars"]
    state["chars"] = state["chars"].replace("a", "Z")
    path.write_text(json.dumps(state, ensure_ascii=False, indent=1) + "\n")


@pytest.fixture
def dataset(tmp_path) -> Path:
    prepare(tmp_path / "ds", text(tmp_path / "in"))
    return tmp_path / "ds"


# -- 1. the tokenizer's record ------------------------------------------------------------------

def test_prepare_records_the_tokenizer_and_verify_refuses_another_vocabulary_of_its_size(dataset):
    meta = json.loads((dataset / "dataset_metadata.json").read_text())
    state = json.loads((dataset / "tokenizer_state.json").read_text())
    assert meta["tokenizer_sha256"] == canonical_sha256(state)
    assert cli("verify-dataset", dataset).startswith("OK:")
    # The same tokenizer saved another way (its keys and characters in another order, other
    # spacing) is the same tokenizer: still verified.
    path = dataset / "tokenizer_state.json"
    path.write_text(json.dumps({**dict(reversed(state.items())), "chars": state["chars"][::-1]}, indent=4))
    assert cli("verify-dataset", dataset).startswith("OK:")
    swap_vocabulary(dataset)
    lines = cli("verify-dataset", dataset, ok=False).splitlines()
    assert len(lines) == 2 and lines[1].startswith("FAILED: 1 problem"), lines
    assert lines[0].startswith(f"{path}: the tokenizer's sha256 is ") and meta["tokenizer_sha256"] in lines[0]
    assert "not the tokenizer the shards were written with" in lines[0] and "HINT: restore the file" in lines[0]


def test_training_append_and_tokenizer_from_refuse_a_swapped_tokenizer_in_one_line(dataset, tmp_path):
    swap_vocabulary(dataset)
    want = f"{dataset / 'tokenizer_state.json'}: the tokenizer's sha256 is "
    out = cli("train", "--dataset_dir", dataset, "--model_name", "m", "--checkpoints_dir", tmp_path / "ck", *TINY,
              ok=False)
    assert out.splitlines()[-1].startswith(f"Error: {want}"), out
    assert not (tmp_path / "ck" / "m" / "model.safetensors").exists()
    more = text(tmp_path / "more", "b.txt", word="queen")
    before = sorted(p.name for p in tmp_path.iterdir())
    out = cli("prepare-dataset", "--input_files", more, "--append_to", dataset, ok=False)
    assert len(out.splitlines()) == 1 and out.startswith(f"Error: {want}"), out
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # refused before the work: nothing left beside it
    out = cli("prepare-dataset", "--input_files", more, "--out_dir", tmp_path / "domain", "--tokenizer_from", dataset,
              ok=False)
    assert want in out and not (tmp_path / "domain").exists(), out
    # Named as such before it is compared with anything else: a mixture's other dataset (which
    # it was said to differ from), the data of an --eval_dataset_dir, a model under `mypt eval`.
    good = tmp_path / "good"
    prepare(good, text(tmp_path / "in"))
    for flags in (["--dataset_dir", f"a={dataset}", "--dataset_dir", f"b={good}"],
                  ["--dataset_dir", good, "--eval_dataset_dir", dataset]):
        out = cli("train", *flags, "--model_name", "mix", "--checkpoints_dir", tmp_path / "ck", *TINY, ok=False)
        assert out.splitlines()[-1].startswith(f"Error: {want}"), out
    cli("train", "--dataset_dir", good, "--model_name", "g", "--checkpoints_dir", tmp_path / "ck", *TINY)
    out = cli("eval", "--model_name", tmp_path / "ck" / "g", "--dataset", f"d={dataset}", ok=False)
    assert out.splitlines()[-1].startswith(f"Error: {want}"), out


def test_a_dataset_prepared_before_the_record_verifies_trains_and_appends_as_before(dataset, tmp_path):
    meta_path = dataset / "dataset_metadata.json"
    meta = json.loads(meta_path.read_text())
    del meta["tokenizer_sha256"]
    meta_path.write_text(json.dumps(meta, indent=1))
    swap_vocabulary(dataset)  # nothing records the vocabulary: nothing can tell (as before)
    assert cli("verify-dataset", dataset).startswith("OK:")
    cli("train", "--dataset_dir", dataset, "--model_name", "m", "--checkpoints_dir", tmp_path / "ck", *TINY)
    # An append records the tokenizer the dataset holds, which its new shards were written with.
    cli("prepare-dataset", "--input_files", text(tmp_path / "more", "b.txt", word="queen"), "--append_to", dataset)
    state = json.loads((dataset / "tokenizer_state.json").read_text())
    assert json.loads(meta_path.read_text())["tokenizer_sha256"] == canonical_sha256(state)
    assert cli("verify-dataset", dataset).startswith("OK:")


def test_an_append_keeps_the_record_and_a_damaged_record_is_named(dataset, tmp_path):
    recorded = json.loads((dataset / "dataset_metadata.json").read_text())["tokenizer_sha256"]
    cli("prepare-dataset", "--input_files", text(tmp_path / "more", "b.txt", word="queen"), "--append_to", dataset)
    meta = json.loads((dataset / "dataset_metadata.json").read_text())
    assert meta["tokenizer_sha256"] == recorded and len(meta["sources"]) == 2
    assert cli("verify-dataset", dataset).startswith("OK:")
    meta["tokenizer_sha256"] = "not a digest"
    (dataset / "dataset_metadata.json").write_text(json.dumps(meta))
    lines = cli("verify-dataset", dataset, ok=False).splitlines()
    assert lines[0].startswith(f"{dataset / 'dataset_metadata.json'}: tokenizer_sha256 is 'not a digest', not a "
                               "sha256 hex digest"), lines


def stage(script: str, *args, cwd: Path) -> None:
    done = subprocess.run([sys.executable, str(REPO / "stages" / script), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def staged_dataset(corpus: Path, w: Path, *dedup_flags: str) -> dict:
    """The stages run by hand on `corpus` in `w`, as `dvc repro` runs them (char tokens): the
    dataset's metadata (the dataset is w/dataset)."""
    stage("clean.py", "--input_files", corpus, "--out_dir", w / "clean", "--stats", w / "clean.json", cwd=w.parent)
    stage("dedup.py", "--in_dir", w / "clean", "--out_dir", w / "dedup", "--stats", w / "dedup.json", *dedup_flags,
          cwd=w.parent)
    stage("vocab.py", "--in_dir", w / "dedup", "--out_dir", w / "vocab", "--tokenization", "char", cwd=w.parent)
    stage("tokenize_corpus.py", "--in_dir", w / "dedup", "--tokenizer_dir", w / "vocab", "--out_dir", w / "tokens",
          "--stats", w / "tokenize.json", cwd=w.parent)
    stage("shard.py", "--in_dir", w / "tokens", "--out_dir", w / "shards", "--tokens_per_shard", "2000", cwd=w.parent)
    stage("split.py", "--in_dir", w / "shards", "--out_dir", w / "dataset", "--stats", w / "split.json", cwd=w.parent)
    return json.loads((w / "dataset" / "dataset_metadata.json").read_text())


def test_the_dvc_stages_record_the_tokenizer_as_prepare_dataset_does(tmp_path):
    """The stages run by hand, as `dvc repro` runs them: split records the same sha256."""
    corpus = text(tmp_path / "in")
    direct = prepare(tmp_path / "ds", corpus)
    w = tmp_path / "data"
    staged = staged_dataset(corpus, w)
    assert staged["tokenizer_sha256"] == direct["tokenizer_sha256"]
    swap_vocabulary(w / "dataset")
    assert "the tokenizer's sha256 is" in cli("verify-dataset", w / "dataset", ok=False)


def test_the_dvc_stages_with_dedup_off_write_the_metadata_prepare_dataset_no_dedup_does(tmp_path):
    """The dedup stage off (`--no_enabled`) recorded dedup_min_chars and an empty dedup count
    that prepare-dataset --no_dedup does not: two datasets of the same data whose metadata
    differed."""
    corpus = text(tmp_path / "in")
    direct = prepare(tmp_path / "ds", corpus, extra=("--no_dedup",))
    staged = staged_dataset(corpus, tmp_path / "data", "--no_enabled")
    assert staged["settings"] == direct["settings"] and staged["stats"] == direct["stats"]


def good_char(tmp_path: Path) -> Path:
    prepare(tmp_path / "char", text(tmp_path / "char_in"))
    return tmp_path / "char"


def test_a_hugging_face_tokenizer_is_recorded_as_the_json_it_holds(tmp_path):
    """An hf dataset's tokenizer state keeps the tokenizer.json whole, as text: re-indented
    inside tokenizer_state.json, or saved compact, it is the same tokenizer (verified, appended
    to, trained on with the other); another token's id is another tokenizer (refused)."""
    pytest.importorskip("tokenizers")
    corpus = text(tmp_path / "in", lines=300)
    cli("train-tokenizer", "--input_files", corpus, "--vocab_size", "300", "--out", tmp_path / "tok.json")
    ds = tmp_path / "ds"
    cli("prepare-dataset", "--input_files", corpus, "--out_dir", ds, "--tokenization", f"hf:{tmp_path / 'tok.json'}")
    path = ds / "tokenizer_state.json"
    state = json.loads(path.read_text())
    inner = json.loads(state["tokenizer_json"])
    path.write_text(json.dumps({**state, "tokenizer_json": json.dumps(inner, indent=4, ensure_ascii=False)}))
    assert cli("verify-dataset", ds).startswith("OK:")
    # The same tokenizer.json saved compact is the same tokenizer for an append (it was "another
    # hf tokenizer ... than --tokenizer_from", a flag not given) and for a mixture's datasets.
    (tmp_path / "compact.json").write_text(json.dumps(json.loads((tmp_path / "tok.json").read_text())))
    more = text(tmp_path / "more", "b.txt", word="queen")
    cli("prepare-dataset", "--input_files", more, "--out_dir", tmp_path / "ds2", "--tokenization",
        f"hf:{tmp_path / 'compact.json'}")
    cli("train", "--dataset_dir", ds, "--dataset_dir", tmp_path / "ds2", "--model_name", "m", "--checkpoints_dir",
        tmp_path / "ck", *TINY)
    cli("prepare-dataset", "--input_files", text(tmp_path / "more", "c.txt", word="duke"), "--append_to", ds,
        "--tokenization", f"hf:{tmp_path / 'compact.json'}")
    cli("train-tokenizer", "--input_files", more, "--vocab_size", "290", "--out", tmp_path / "other.json")
    out = cli("prepare-dataset", "--input_files", text(tmp_path / "more", "d.txt", word="earl"), "--append_to", ds,
              "--tokenization", f"hf:{tmp_path / 'other.json'}", ok=False)
    assert f"another hf tokenizer, with another vocabulary (hf:{tmp_path / 'other.json'}), than --append_to {ds}" \
        in out and "--tokenizer_from" not in out, out
    out = cli("train", "--dataset_dir", ds, "--dataset_dir", good_char(tmp_path), "--model_name", "x",
              "--checkpoints_dir", tmp_path / "ck", *TINY, ok=False)
    assert out.rstrip().endswith(f"prepare it again with that tokenizer (prepare-dataset --tokenizer_from {ds})"), out
    vocab = inner["model"]["vocab"]
    a, b = sorted(vocab)[100:102]
    vocab[a], vocab[b] = vocab[b], vocab[a]
    path.write_text(json.dumps({**state, "tokenizer_json": json.dumps(inner, ensure_ascii=False)}))
    assert "the tokenizer's sha256 is" in cli("verify-dataset", ds, ok=False)


# -- 2. a linked train/ under --append_to ---------------------------------------------------------

@pytest.mark.parametrize("linked", ["train", "val", "train/shard_00001.bin", "dataset_metadata.json"])
def test_append_refuses_a_linked_folder_or_shard_in_the_dataset_before_the_work(dataset, tmp_path, linked):
    """train/ moved to another disk and linked: the append (which builds the grown dataset
    beside the old one and renames it into place) failed half-way with 'File exists'. It is
    refused before the work, naming the link; the dataset is left as it was, and still trains."""
    elsewhere = tmp_path / "elsewhere" / linked
    elsewhere.parent.mkdir(parents=True)
    (dataset / linked).rename(elsewhere)
    (dataset / linked).symlink_to(elsewhere)
    more = text(tmp_path / "more", "b.txt", word="queen")
    before = {p.relative_to(tmp_path).as_posix(): p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file()}
    out = cli("prepare-dataset", "--input_files", more, "--append_to", dataset, ok=False)
    assert len(out.splitlines()) == 1, out
    assert out.startswith(f"Error: --append_to {dataset}: {dataset / linked} is a symbolic link (to {elsewhere})")
    assert "refused, nothing changed" in out and "link the whole dataset folder instead" in out
    after = {p.relative_to(tmp_path).as_posix(): p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file()}
    assert after == before  # nothing made, moved or left beside it
    assert (dataset / linked).is_symlink()
    assert cli("verify-dataset", dataset).startswith("OK:")


def test_append_names_the_first_link_and_how_many_more(dataset, tmp_path):
    """Both split folders moved to another disk and linked: the first is named with its target,
    the other counted."""
    for linked in ("train", "val"):
        (dataset / linked).rename(tmp_path / linked)
        (dataset / linked).symlink_to(tmp_path / linked)
    out = cli("prepare-dataset", "--input_files", text(tmp_path / "more", "b.txt"), "--append_to", dataset, ok=False)
    assert out.startswith(f"Error: --append_to {dataset}: {dataset / 'train'} is a symbolic link (to "
                          f"{tmp_path / 'train'}) (and 1 more); an append builds"), out


@pytest.mark.parametrize("linked", ["val", "train/shard_00001.bin"])
def test_append_names_a_link_that_loops_as_one(dataset, tmp_path, linked):
    """A link to itself was named as a link to its own path ('ds/val is a symbolic link (to ds/val)')."""
    shutil.rmtree(dataset / linked) if (dataset / linked).is_dir() else (dataset / linked).unlink()
    (dataset / linked).symlink_to(dataset / linked)
    out = cli("prepare-dataset", "--input_files", text(tmp_path / "more", "b.txt"), "--append_to", dataset, ok=False)
    assert out.startswith(f"Error: --append_to {dataset}: {dataset / linked} is a symbolic link that loops (to itself, "
                          "or through others): refused, nothing changed"), out
    assert len(out.splitlines()) == 1 and (dataset / linked).is_symlink()


# -- 3. an input of blank lines ---------------------------------------------------------------------

BLANK = "\n\n   \n\t\n\u3000\n\n"  # blank lines, spaces, a tab, an ideographic space


@pytest.mark.parametrize("flags", [(), ("--no_filter",), ("--no_normalize",), ("--no_filter", "--no_normalize"),
                                   ("--no_dedup",), ("--no_dedup", "--no_normalize")])
def test_an_input_of_blank_lines_is_no_document_and_is_named_like_an_empty_one(tmp_path, monkeypatch, flags):
    """A .txt input of whitespace only gave a document of newline tokens (and its spaces and
    tab entered a char vocabulary), not named among the inputs without text. It is what an
    empty input is, whatever --no_filter and --no_normalize keep; in several blocks too."""
    monkeypatch.setattr(mypt.text, "BLOCK_BYTES", 64)  # several blocks a file
    monkeypatch.chdir(tmp_path)
    text(tmp_path, "a.txt")
    (tmp_path / "blank.txt").write_text(BLANK * 20)
    (tmp_path / "empty.txt").write_text("")
    out = cli("prepare-dataset", "--input_files", "a.txt", "blank.txt", "empty.txt", "--out_dir", "ds",
              "--tokenization", "char", "--tokens_per_shard", "2000", "--workers", "1", *flags)
    assert "Inputs left without text (empty, or emptied by the filter or dedup): blank.txt, empty.txt\n" in out, out
    meta = json.loads((tmp_path / "ds" / "dataset_metadata.json").read_text())
    assert [(s["name"], s["documents"], s["tokens"]) for s in meta["sources"]] == [
        ("a.txt", 1, meta["total_tokens"]), ("blank.txt", 0, 0), ("empty.txt", 0, 0)]
    assert meta["stats"]["clean"]["documents_emptied"] == 2 and meta["stats"]["clean"]["documents_out"] == 1
    alone = prepare(tmp_path / "alone", Path("a.txt"), extra=("--workers", "1", *flags))
    assert meta["tokenizer"] == alone["tokenizer"]  # nothing of it in the vocabulary either
    assert meta["stats"].get("dedup") == alone["stats"].get("dedup")  # nor in dedup's counts
    assert meta["stats"]["clean"]["lines_out"] == alone["stats"]["clean"]["lines_out"]


def test_a_txt_input_the_filter_leaves_blank_is_emptied_and_no_filter_keeps_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text(tmp_path, "a.txt")
    (tmp_path / "rulers.txt").write_text("-----\n\n12 34\n\n=====\n")  # no letters: every text line filtered
    out = cli("prepare-dataset", "--input_files", "a.txt", "rulers.txt", "--out_dir", "ds", "--tokenization", "char")
    assert "Inputs left without text (empty, or emptied by the filter or dedup): rulers.txt\n" in out, out
    meta = json.loads((tmp_path / "ds" / "dataset_metadata.json").read_text())
    assert meta["sources"][1]["documents"] == 0 and meta["stats"]["clean"]["dropped_no_letters"] == 3
    out = cli("prepare-dataset", "--input_files", "a.txt", "rulers.txt", "--out_dir", "kept", "--tokenization", "char",
              "--no_filter")
    assert "without text" not in out
    meta = json.loads((tmp_path / "kept" / "dataset_metadata.json").read_text())
    assert meta["sources"][1]["documents"] == 1 and meta["sources"][1]["tokens"] == len("-----\n\n12 34\n\n=====\n")


def test_the_clean_stage_writes_a_blank_input_empty_as_prepare_dataset_does(tmp_path, monkeypatch):
    """The DVC path (each stage reading the previous one's output back) counts it alike."""
    monkeypatch.chdir(tmp_path)
    text(tmp_path, "a.txt")
    (tmp_path / "blank.txt").write_text(BLANK)
    stage("clean.py", "--input_files", "a.txt", "blank.txt", "--out_dir", "clean", "--stats", "clean.json",
          cwd=tmp_path)
    manifest = json.loads((tmp_path / "clean" / "manifest.json").read_text())
    assert (tmp_path / "clean" / manifest["sources"][1]["file"]).read_bytes() == b""
    stats = json.loads((tmp_path / "clean.json").read_text())
    assert stats["documents_emptied"] == 1 and stats["documents_out"] == 1
    direct = prepare(tmp_path / "ds", Path("a.txt"), Path("blank.txt"))
    assert direct["stats"]["clean"] == manifest["stats"]["clean"]
