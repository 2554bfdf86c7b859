"""prepare-dataset through its CLI: round trips, determinism, and bad input."""

from __future__ import annotations

import gzip
import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import read_tokens, tree_bytes

import mypt.text
from mypt.cli import main
from mypt.steps.clean import clean
from mypt.steps.dedup import dedup
from mypt.tokenizers import Tokenizer

WORDS = ("the king queen lord sword night crown blood love death heaven earth fire water stone "
         "walk speak hear see think know come go make take give").split()


def sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 14))).capitalize() + rng.choice(".!?;,")


def make_corpus(root: Path, seed: int = 0, txt_lines: int = 400, jsonl_docs: int = 200) -> Path:
    """Three .txt documents with indentation, blank lines and repeats, and a .jsonl.gz of short docs."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    for name in ("wiki", "books", "news"):
        lines = []
        for i in range(txt_lines):
            r = rng.random()
            lines.append("" if r < 0.1 else ("    " + sentence(rng) if r < 0.3 else sentence(rng)))
            if r > 0.95:
                lines.append("This line is a repeated piece of boilerplate text.")
        (root / f"{name}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with gzip.open(root / "forum.jsonl.gz", "wt", encoding="utf-8") as f:
        for i in range(jsonl_docs):
            text = "\n".join(sentence(rng) for _ in range(rng.randint(1, 4)))
            f.write(json.dumps({"text": text, "id": i}) + "\n")
    return root


def prepare(*args: str, expect_ok: bool = True):
    result = CliRunner().invoke(main, ["prepare-dataset", *args])
    if expect_ok:
        assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def expected_documents(corpus: Path, tmp: Path) -> list[str]:
    """The documents that clean + dedup produce, in corpus order (via the library steps)."""
    clean([str(corpus)], tmp / "clean")
    manifest = dedup(tmp / "clean", tmp / "dedup")
    docs = []
    for s in manifest["sources"]:
        path = tmp / "dedup" / s["file"]
        if s["jsonl"]:
            docs += [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines()]
        elif path.stat().st_size:
            docs.append(path.read_text(encoding="utf-8"))
    return docs


def test_gpt2_round_trip_equals_tiktoken(tmp_path):
    import tiktoken

    corpus = make_corpus(tmp_path / "corpus")
    prepare("--input_files", str(corpus), "--out_dir", str(tmp_path / "ds"), "--val_fraction", "0",
            "--tokens_per_shard", "5000")
    docs = expected_documents(corpus, tmp_path / "steps")
    enc = tiktoken.get_encoding("r50k_base")
    expected = [t for d in docs for t in enc.encode_ordinary(d) + [enc.eot_token]]
    got = read_tokens(tmp_path / "ds" / "train")
    assert got.tolist() == expected
    assert Tokenizer.load(tmp_path / "ds").decode(got).split("<|endoftext|>")[:-1] == docs
    meta = json.loads((tmp_path / "ds" / "dataset_metadata.json").read_text())
    assert meta["total_tokens"] == len(expected) and meta["val"]["shards"] == []
    assert all(s["tokens"] == 5000 for s in meta["train"]["shards"][:-1])


def test_split_is_by_document_and_represents_every_source(tmp_path):
    corpus = make_corpus(tmp_path / "corpus")
    prepare("--input_files", str(corpus), "--out_dir", str(tmp_path / "ds"), "--val_fraction", "0.2",
            "--tokens_per_shard", "3000")
    docs = expected_documents(corpus, tmp_path / "steps")
    tok = Tokenizer.load(tmp_path / "ds")
    train = tok.decode(read_tokens(tmp_path / "ds" / "train")).split("<|endoftext|>")
    val = tok.decode(read_tokens(tmp_path / "ds" / "val")).split("<|endoftext|>")
    meta = json.loads((tmp_path / "ds" / "dataset_metadata.json").read_text())
    # Documents are whole units up to 1% of their source's tokens (a longer one is cut, so that
    # no unit weighs much in the draw): each such document is on exactly one side. (A piece may
    # also hold the end of a .txt chunk before it, which has no end-of-text of its own.)
    forum_tokens = next(s["tokens"] for s in meta["sources"] if s["name"].endswith("forum.jsonl.gz"))
    jsonl_docs = [d for d in docs if d.count("\n") <= 4]
    whole = [d for d in jsonl_docs if len(tok.encode(d)) + 1 <= math.ceil(forum_tokens / 100)]
    assert len(whole) > 0.8 * len(jsonl_docs)
    for d in whole:
        assert any(p.endswith(d) for p in train) != any(p.endswith(d) for p in val)
    assert all(s["val_tokens"] > 0 and s["train_tokens"] > 0 for s in meta["sources"])  # 3 big .txt files too
    assert 0.15 < meta["val"]["tokens"] / meta["total_tokens"] < 0.25
    n_train = len(meta["train"]["shards"])
    assert [s["file"] for s in meta["val"]["shards"]][0] == f"val/shard_{n_train:05d}.bin"
    assert sum(len(np.memmap(tmp_path / "ds" / s["file"], dtype=np.uint32)) for s in meta["val"]["shards"]) \
        == meta["val"]["tokens"]


def test_char_round_trip_and_tail_split(tmp_path):
    corpus = make_corpus(tmp_path / "corpus")
    prepare("--input_files", str(corpus / "wiki.txt"), "--out_dir", str(tmp_path / "ds"), "--tokenization", "char",
            "--split_mode", "tail", "--val_fraction", "0.1", "--tokens_per_shard", "4096")
    [doc] = expected_documents(corpus / "wiki.txt", tmp_path / "steps")
    tok = Tokenizer.load(tmp_path / "ds")
    assert tok.kind == "char" and tok.eot_id is None and "".join(tok.chars) == "".join(sorted(set(doc)))
    train, val = (tok.decode(read_tokens(tmp_path / "ds" / s)) for s in ("train", "val"))
    assert train + val == doc  # nanoGPT's convention: val is the tail of the file
    assert len(val) == round(0.1 * len(doc))


def test_one_long_document_among_short_ones_gets_its_share_of_val(tmp_path):
    # 99 short documents and one of about 93% of the tokens: drawn whole, the long one was one
    # of the 10 units in val and made val 93% of the tokens. Cut to at most 1% of the source,
    # val gets about its share whatever the seed.
    rng = random.Random(0)
    docs = [sentence(rng)[:40] for _ in range(99)] + [" ".join(sentence(rng) for _ in range(900))]
    rng.shuffle(docs)
    src = tmp_path / "skewed.jsonl"
    src.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs), encoding="utf-8")
    for seed in ("26", "1", "7"):
        prepare("--input_files", str(src), "--out_dir", str(tmp_path / f"ds{seed}"), "--tokenization", "char",
                "--val_fraction", "0.1", "--seed", seed, "--no_dedup", "--no_filter")
        meta = json.loads((tmp_path / f"ds{seed}" / "dataset_metadata.json").read_text())
        assert 0.05 < meta["val"]["tokens"] / meta["total_tokens"] < 0.15, (seed, meta["val"]["tokens"])


@pytest.mark.parametrize("files, chars", [(40, 1200), (1, 2000)])
def test_small_sources_are_cut_into_units_of_a_few_hundred_tokens_not_fragments(tmp_path, files, chars):
    """One short document per file (a layout the README suggests): each source alone was cut into
    100 units, of 12 tokens for a 1,200-token document, and val was a soup of fragments (its
    loss 0.2 above whole documents'), train full of holes. Small sources are now drawn together,
    in units of at least MIN_UNIT_TOKENS (256) where 10 remain; val still gets its share."""
    rng = random.Random(0)
    for i in range(files):
        text = " ".join(sentence(rng) for _ in range(200))[:chars - 1] + "\n"
        (tmp_path / "in" / f"doc{i:02d}.txt").parent.mkdir(exist_ok=True)
        (tmp_path / "in" / f"doc{i:02d}.txt").write_text(text, encoding="utf-8")
    prepare("--input_files", str(tmp_path / "in"), "--out_dir", str(tmp_path / "ds"), "--tokenization", "char",
            "--val_fraction", "0.1", "--no_dedup", "--no_filter")
    meta = json.loads((tmp_path / "ds" / "dataset_metadata.json").read_text())
    split = meta["stats"]["split"]
    assert split["val_units"] >= 1 and split["val_tokens"] / split["val_units"] >= 200, split
    assert 0.05 < meta["val"]["tokens"] / meta["total_tokens"] < 0.16, split


def test_tail_split_keeps_a_train_token_whatever_the_fraction(tmp_path):
    src = tmp_path / "small.txt"
    src.write_text("To be, or not to be: that is the question.\n", encoding="utf-8")
    prepare("--input_files", str(src), "--out_dir", str(tmp_path / "ds"), "--tokenization", "char",
            "--split_mode", "tail", "--val_fraction", "0.999")
    meta = json.loads((tmp_path / "ds" / "dataset_metadata.json").read_text())
    assert meta["train"]["tokens"] == 1 and meta["val"]["tokens"] == meta["total_tokens"] - 1
    tok = Tokenizer.load(tmp_path / "ds")
    train, val = (tok.decode(read_tokens(tmp_path / "ds" / s)) for s in ("train", "val"))
    assert train + val == src.read_text()


# Worker processes (multi-process, as the slow marker says).
@pytest.mark.slow
def test_output_is_identical_across_runs_and_worker_counts(tmp_path, monkeypatch):
    monkeypatch.setattr(mypt.text, "BLOCK_BYTES", 2048)  # many blocks, so workers really share the work
    corpus = make_corpus(tmp_path / "corpus")
    for name, workers in (("a", "1"), ("b", "1"), ("c", "2")):
        prepare("--input_files", str(corpus), "--out_dir", str(tmp_path / name), "--workers", workers,
                "--tokens_per_shard", "3000")
    a = tree_bytes(tmp_path / "a")
    assert len([k for k in a if k.endswith(".bin")]) > 3
    assert a == tree_bytes(tmp_path / "b") == tree_bytes(tmp_path / "c")


def test_gpt2_blocks_cut_only_where_encoding_is_unchanged(tmp_path, monkeypatch):
    import tiktoken

    monkeypatch.setattr(mypt.text, "BLOCK_BYTES", 64)
    rng = random.Random(1)
    pieces = ["word", " word", "  indented", "\t tab", "", "   ", "trailing  ", "x", "'s", "123", "é", "\u3000wide"]
    text = "\n".join("".join(rng.choice(pieces) for _ in range(rng.randint(0, 4))) for _ in range(3000)) + "\n"
    (tmp_path / "tricky.txt").write_text(text, encoding="utf-8")
    prepare("--input_files", str(tmp_path / "tricky.txt"), "--out_dir", str(tmp_path / "ds"), "--no_normalize",
            "--no_filter", "--no_dedup", "--val_fraction", "0", "--workers", "2")
    enc = tiktoken.get_encoding("r50k_base")
    assert read_tokens(tmp_path / "ds" / "train").tolist() == enc.encode_ordinary(text) + [enc.eot_token]


# ---------------------------------------------------------------------------------------------
# bad input: a clear error or a counted skip, never a traceback, never a half-written dataset

def assert_refused(result, *fragments: str, out_dir: Path | None = None):
    assert result.exit_code != 0
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    for fragment in fragments:
        assert fragment in result.output, result.output
    if out_dir is not None:
        assert not out_dir.exists()
        assert not any(p.name.startswith(".") for p in out_dir.parent.iterdir() if p.name != out_dir.name)


def test_missing_input_and_empty_directory(tmp_path):
    out = tmp_path / "ds"
    assert_refused(prepare("--input_files", str(tmp_path / "nope.txt"), "--out_dir", str(out), expect_ok=False),
                   "nope.txt", "does not exist", out_dir=out)
    (tmp_path / "empty").mkdir()
    assert_refused(prepare("--input_files", str(tmp_path / "empty"), "--out_dir", str(out), expect_ok=False),
                   "holds no text files", out_dir=out)


@pytest.mark.parametrize("flag, value, fragment", [
    ("--val_fraction", "1.0", "--val_fraction"), ("--val_fraction", "-0.1", "--val_fraction"),
    ("--tokens_per_shard", "0", "--tokens_per_shard"), ("--tokenization", "bpe", "--tokenization"),
])
def test_bad_settings_name_the_flag(tmp_path, flag, value, fragment):
    (tmp_path / "a.txt").write_text("Some text here.\n")
    out = tmp_path / "ds"
    result = prepare("--input_files", str(tmp_path / "a.txt"), "--out_dir", str(out), flag, value, expect_ok=False)
    assert result.exit_code == 2 and fragment in result.output and value in result.output
    assert not out.exists()


# A 50 MB input: with the slow tests.
@pytest.mark.slow
def test_binary_invalid_utf8_empty_file_and_long_line(tmp_path):
    corpus = make_corpus(tmp_path / "corpus", txt_lines=100, jsonl_docs=20)
    (corpus / "image.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    (corpus / "latin1.txt").write_bytes("Caf\u00e9 au lait, s'il vous pla\u00eet.\n".encode("latin-1"))
    (corpus / "empty.txt").write_bytes(b"")
    (corpus / "huge.txt").write_text(" ".join(["lorem ipsum dolor"] * 3_000_000) + " the end")  # ~50 MB, no newline
    result = prepare("--input_files", str(corpus), "--out_dir", str(tmp_path / "ds"), "--val_fraction", "0")
    meta = json.loads((tmp_path / "ds" / "dataset_metadata.json").read_text())
    clean_stats = meta["stats"]["clean"]
    assert meta["skipped_binary_files"] == [str(corpus / "image.txt")] and clean_stats["skipped_binary_files"] == 1
    assert clean_stats["invalid_utf8_bytes_replaced"] == 2 and "Invalid UTF-8 bytes replaced: 2" in result.output
    assert clean_stats["dropped_too_long"] == 1
    text = Tokenizer.load(tmp_path / "ds").decode(read_tokens(tmp_path / "ds" / "train"))
    assert "Caf\ufffd au lait" in text and "lorem" not in text
    assert "Binary files skipped" in result.output


def test_literal_endoftext_is_ordinary_text(tmp_path):
    import tiktoken

    doc = "Before <|endoftext|> after.\n"
    (tmp_path / "a.txt").write_text(doc)
    prepare("--input_files", str(tmp_path / "a.txt"), "--out_dir", str(tmp_path / "ds"), "--val_fraction", "0")
    ids = read_tokens(tmp_path / "ds" / "train").tolist()
    assert ids == tiktoken.get_encoding("r50k_base").encode_ordinary(doc) + [50256]
    assert ids.count(50256) == 1


def test_everything_filtered_away(tmp_path):
    (tmp_path / "nums.txt").write_text("1 2 3\n----\n42\n")
    out = tmp_path / "ds"
    assert_refused(prepare("--input_files", str(tmp_path / "nums.txt"), "--out_dir", str(out), expect_ok=False),
                   "everything was filtered away", "no_letters", "--no_filter", out_dir=out)


def test_existing_dataset_is_not_replaced_without_overwrite(tmp_path):
    corpus = make_corpus(tmp_path / "corpus", txt_lines=50, jsonl_docs=10)
    out = tmp_path / "ds"
    prepare("--input_files", str(corpus), "--out_dir", str(out))
    before = tree_bytes(out)
    prepare("--input_files", str(corpus), "--out_dir", str(out))  # same input and settings: rebuilt as it was
    assert tree_bytes(out) == before
    result = prepare("--input_files", str(corpus / "wiki.txt"), "--out_dir", str(out), expect_ok=False)
    assert result.exit_code == 1 and "already holds a different dataset" in result.output and "--overwrite" in result.output
    assert tree_bytes(out) == before
    prepare("--input_files", str(corpus / "wiki.txt"), "--out_dir", str(out), "--overwrite")
    assert json.loads((out / "dataset_metadata.json").read_text())["sources"][0]["name"].endswith("wiki.txt")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.md").write_text("mine")
    result = prepare("--input_files", str(corpus), "--out_dir", str(tmp_path / "other"), expect_ok=False)
    assert "not a mypt dataset" in result.output and (tmp_path / "other" / "notes.md").read_text() == "mine"


def test_reused_char_vocabulary_replaces_and_names_unknown_characters(tmp_path):
    (tmp_path / "base.txt").write_text("To be, or not to be?\nThat is the question.\n")
    (tmp_path / "domain.txt").write_text("Of Man's first disobedience; and the fruit {42}\n")
    prepare("--input_files", str(tmp_path / "base.txt"), "--out_dir", str(tmp_path / "base"), "--tokenization", "char",
            "--val_fraction", "0")
    # --tokenization follows --tokenizer_from when not given (char here); the replaced
    # characters are said, with their share of the tokens and their stand-in ('?': the
    # vocabulary has one; a space only where it has no '?').
    done = prepare("--input_files", str(tmp_path / "domain.txt"), "--out_dir", str(tmp_path / "dom"),
                   "--tokenizer_from", str(tmp_path / "base"), "--val_fraction", "0", "--no_filter")
    assert "Characters outside the tokenizer's vocabulary, each replaced by '?': 15 (31.2% of the tokens" \
        in done.output, done.output
    assert (tmp_path / "dom" / "tokenizer_state.json").read_bytes() == (tmp_path / "base" / "tokenizer_state.json").read_bytes()
    meta = json.loads((tmp_path / "dom" / "dataset_metadata.json").read_text())
    counts = meta["stats"]["tokenize"]["replaced_char_counts"]
    assert counts == {"O": 1, "f": 3, "M": 1, "'": 1, "d": 3, "c": 1, ";": 1, "{": 1, "4": 1, "2": 1, "}": 1}
    assert meta["stats"]["tokenize"]["replaced_chars"] == 15
    text = Tokenizer.load(tmp_path / "dom").decode(read_tokens(tmp_path / "dom" / "train"))
    assert "{" not in text and "?" in text and len(text) == len("Of Man's first disobedience; and the fruit {42}\n")
    result = prepare("--input_files", str(tmp_path / "domain.txt"), "--out_dir", str(tmp_path / "x"),
                     "--tokenization", "gpt2", "--tokenizer_from", str(tmp_path / "base"), expect_ok=False)
    assert "--tokenization gpt2 has another vocabulary" in result.output and "--tokenizer_from" in result.output
    assert "pass --tokenization char, or leave --tokenization out" in result.output


def test_missing_gpt2_vocabulary_names_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setenv("MYPT_CACHE_DIR", str(tmp_path / "empty-cache"))
    monkeypatch.delenv("TIKTOKEN_CACHE_DIR")
    (tmp_path / "a.txt").write_text("Some text.\n")
    result = prepare("--input_files", str(tmp_path / "a.txt"), "--out_dir", str(tmp_path / "ds"), expect_ok=False)
    assert result.exit_code == 1 and "mypt install-gpt2-vocab" in result.output
    assert not (tmp_path / "ds").exists()


def test_guide_summary_and_kebab_aliases(tmp_path):
    corpus = make_corpus(tmp_path / "corpus", txt_lines=50, jsonl_docs=10)
    result = prepare("--input-files", str(corpus / "wiki.txt"), str(corpus / "news.txt"), "--out-dir",
                     str(tmp_path / "ds"), "--tokens-per-shard", "1000", "--val-fraction", "0.2", "--no-dedup")
    meta = json.loads((tmp_path / "ds" / "dataset_metadata.json").read_text())
    assert len(meta["sources"]) == 2 and meta["settings"]["dedup"] is False
    n_train, n_val = len(meta["train"]["shards"]), len(meta["val"]["shards"])
    assert f"Total tokens: {meta['total_tokens']:,}" in result.output
    assert f"Total shards: {n_train + n_val}" in result.output
    assert f"Train shards: {n_train}" in result.output and str(tmp_path / "ds" / "train") in result.output
    assert f"Val shards:   {n_val}" in result.output and str(tmp_path / "ds" / "val") in result.output


@pytest.mark.parametrize("fraction, said", [("0.01", True), ("0.1", False)])
def test_a_val_share_far_from_val_fraction_is_said(tmp_path, fraction, said):
    """A corpus too small for the share asked (each source keeps a unit on each side) got 10% of
    its tokens in val for --val_fraction 0.01, and the summary said nothing of it."""
    rng = random.Random(1)
    (tmp_path / "a.txt").write_text("".join(rng.choice("abcdefgh \n") for _ in range(2500)))
    result = prepare("--input_files", str(tmp_path / "a.txt"), "--out_dir", str(tmp_path / "ds"), "--tokenization",
                     "char", "--val_fraction", fraction, "--no_dedup", "--workers", "1")
    meta = json.loads((tmp_path / "ds" / "dataset_metadata.json").read_text())
    share = meta["val"]["tokens"] / meta["total_tokens"]
    line = f"Val holds {share:.1%} of the tokens, not the {float(fraction):.1%} --val_fraction asked"
    assert (line in result.output) == said and ("--split_mode tail" in result.output) == said, result.output
    # An append asking another share is judged on its own part (the whole dataset's share was
    # compared with the first run's fraction: a false alarm).
    (tmp_path / "b.txt").write_text("".join(rng.choice("abcdefgh \n") for _ in range(60_000)))
    result = prepare("--input_files", str(tmp_path / "b.txt"), "--append_to", str(tmp_path / "ds"), "--val_fraction",
                     "0.3", "--no_dedup", "--workers", "1")
    assert "Appended: " in result.output and "Val holds" not in result.output, result.output


def test_dedup_keeps_the_first_copy_in_path_order_whatever_the_flag_order(tmp_path, monkeypatch):
    """The corpus order is the inputs' absolute paths sorted, whatever order and spelling the
    flag gives them (an absolute /…/b_books.txt with a relative a_web.txt too)."""
    shared = "This line is in both files, and only the first copy stays.\n"
    (tmp_path / "b_books.txt").write_text("Books open here with a line of their own.\n" + shared)
    (tmp_path / "a_web.txt").write_text(shared + "The web closes with a line of its own.\n")
    monkeypatch.chdir(tmp_path)
    texts = []
    for name, order in (("ba", (tmp_path / "b_books.txt", tmp_path / "a_web.txt")),
                        ("ab", (tmp_path / "a_web.txt", tmp_path / "b_books.txt")),
                        ("spelled", (tmp_path / "b_books.txt", "a_web.txt"))):
        prepare("--input_files", *(str(f) for f in order), "--out_dir", str(tmp_path / name),
                "--tokenization", "char", "--val_fraction", "0")
        texts.append(Tokenizer.load(tmp_path / name).decode(read_tokens(tmp_path / name / "train").tolist()))
    assert texts[0] == texts[1] == texts[2]
    assert texts[0].count(shared) == 1 and texts[0].index(shared) < texts[0].index("The web closes")
    assert texts[0].index("The web closes") < texts[0].index("Books open")  # a_web.txt's part first


def test_a_lone_surrogate_escape_in_jsonl_is_replaced_and_counted(tmp_path):
    """`"\\udc80"` in a JSONL's text (scraped JSON): json.loads keeps the lone surrogate, which
    no UTF-8 holds, and the clean step's write failed with a traceback. It is replaced by U+FFFD
    and counted as invalid UTF-8 is; a surrogate pair stays its one character."""
    src = tmp_path / "s.jsonl"
    src.write_text('{"text": "good document words here"}\n'
                   '{"text": "bad \\udc80 lone low surrogate words"}\n'
                   '{"text": "a pair \\ud83d\\ude00 is one character"}\n', encoding="utf-8")
    prepare("--input_files", str(src), "--out_dir", str(tmp_path / "ds"), "--tokenization", "char",
            "--val_fraction", "0", "--no_dedup")
    meta = json.loads((tmp_path / "ds" / "dataset_metadata.json").read_text())
    assert meta["stats"]["clean"]["invalid_utf8_bytes_replaced"] == 1
    text = Tokenizer.load(tmp_path / "ds").decode(read_tokens(tmp_path / "ds" / "train"))
    assert "bad \ufffd lone low" in text and "a pair \U0001F600 is" in text
    result = CliRunner().invoke(main, ["train-tokenizer", "--input_files", str(src), "--vocab_size", "280", "--out",
                                       str(tmp_path / "tok.json")])
    assert result.exit_code == 0, result.output


def test_out_dir_knows_its_inputs_by_their_bytes_not_their_names(tmp_path, monkeypatch):
    """prepare-dataset over a dataset it made: a file of the same name and size whose bytes
    changed is another input (refused without --overwrite, the dataset untouched), and the
    same bytes under another name are the same input (the dataset is rebuilt as it was)."""
    monkeypatch.chdir(tmp_path)
    text = "".join(f"The line number {i} of the text.\n" for i in range(200))
    Path("a.txt").write_text(text)
    settings = ["--tokenization", "char", "--val_fraction", "0.1"]
    prepare("--input_files", "a.txt", "--out_dir", "ds", *settings)
    before = tree_bytes(tmp_path / "ds")
    Path("a.txt").write_text(text.replace("line", "LINE"))  # the same size, other bytes
    result = prepare("--input_files", "a.txt", "--out_dir", "ds", *settings, expect_ok=False)
    assert result.exit_code == 1 and "already holds a different dataset" in result.output, result.output
    assert tree_bytes(tmp_path / "ds") == before
    Path("a.txt").unlink()
    Path("moved").mkdir()
    Path("moved/b.txt").write_text(text)
    prepare("--input_files", "moved/b.txt", "--out_dir", "ds", *settings)
    after = tree_bytes(tmp_path / "ds")
    assert {k: v for k, v in after.items() if "metadata" not in k} == \
        {k: v for k, v in before.items() if "metadata" not in k}


def test_split_copies_tokens_in_bounded_pieces(tmp_path, monkeypatch):
    """The split copies the tokens mypt.shards.COPY_TOKENS at a time, however long a run of one
    side is (--split_mode tail: most of a source): reads of 16M tokens made prepare-dataset of a
    200 MB JSONL peak at 179 MB there. The dataset is the same bytes."""
    import mypt.shards

    (tmp_path / "a.txt").write_text("".join(f"Line {i} of a long text, one document.\n" for i in range(300)))
    args = ["--input_files", str(tmp_path / "a.txt"), "--tokenization", "char", "--split_mode", "tail"]
    prepare(*args, "--out_dir", str(tmp_path / "whole"))
    monkeypatch.setattr(mypt.shards, "COPY_TOKENS", 1000)
    reads = []
    read = mypt.shards.TokenStream.read
    monkeypatch.setattr(mypt.shards.TokenStream, "read", lambda self, a, b: reads.append(b - a) or read(self, a, b))
    prepare(*args, "--out_dir", str(tmp_path / "pieces"))
    total = json.loads((tmp_path / "pieces" / "dataset_metadata.json").read_text())["total_tokens"]
    assert total > 5 * 1000 and sum(reads) >= total and max(reads) <= 1000
    assert tree_bytes(tmp_path / "pieces") == tree_bytes(tmp_path / "whole")
