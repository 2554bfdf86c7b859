"""--tokenization hf:PATH (a tokenizers tokenizer.json) and `mypt train-tokenizer`, through the
CLI: ids equal tokenizers' own, literal special tokens stay text, ids above 65,535 survive the
uint32 shards, blocks never change ids, and bad files are one-line errors."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import mypt_cli, read_tokens, tree_bytes

import mypt.text
from mypt.cli import main
from mypt.generate import generate
from mypt.model import GPT, GPTConfig
from mypt.tokenizers import Tokenizer, make_tokenizer
from mypt.tokenizers.hf import HFTokenizer, space_boundary

tokenizers = pytest.importorskip("tokenizers")

WORDS = ("the king queen lord sword night crown blood love death heaven earth fire water stone "
         "walk speak hear see think know come go make take give").split()


def invoke(*args: str, ok: bool = True):
    result = CliRunner().invoke(main, list(args))
    if ok:
        assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def write_corpus(root: Path, seed: int = 0, lines: int = 600) -> Path:
    """A .txt document of sentences (punctuation at line ends, indentation, blank lines) and a
    .jsonl of short documents, one of which holds a literal <|endoftext|>."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    sentence = lambda: " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))).capitalize() \
        + rng.choice(".!?;,:")  # noqa: E731
    text = [("    " if rng.random() < 0.2 else "") + sentence() if rng.random() > 0.1 else "" for _ in range(lines)]
    (root / "book.txt").write_text("\n".join(text) + "\n", encoding="utf-8")
    docs = [sentence() for _ in range(150)] + ["The end <|endoftext|> is only text here."]
    (root / "forum.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs), encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(corpus directory, tokenizer.json) of a ~300-token BPE trained by `mypt train-tokenizer`."""
    root = tmp_path_factory.mktemp("hf")
    corpus = write_corpus(root / "corpus")
    done = invoke("train-tokenizer", "--input_files", str(corpus), "--vocab_size", "300", "--out",
                  str(root / "tok.json"))
    assert "300 tokens" in done.output and "hf:" in done.output
    return corpus, root / "tok.json"


def test_ids_equal_tokenizers_own_and_state_round_trips(trained, tmp_path):
    corpus, tok_json = trained
    own = tokenizers.Tokenizer.from_file(str(tok_json))
    tok = make_tokenizer(f"hf:{tok_json}")
    text = "Walk, speak!\n    The queen's crown 123 caf\u00e9 \u3000wide\n"
    assert tok.encode(text) == own.encode(text, add_special_tokens=False).ids
    assert tok.decode(tok.encode(text)) == text
    assert (tok.kind, tok.vocab_size, tok.eot_id) == ("hf", 300, 0)
    assert tok.cut_rule() is not None  # GPT-2's ByteLevel regex: .txt documents are cut into blocks
    tok.save(tmp_path)
    state = json.loads((tmp_path / "tokenizer_state.json").read_text(encoding="utf-8"))
    assert state["tokenizer_json"].strip() == tok_json.read_text(encoding="utf-8").strip()  # the whole file
    loaded = Tokenizer.load(tmp_path)
    assert loaded.state() == tok.state() and loaded.encode(text) == tok.encode(text)
    # A literal special token inside a document is ordinary text, as gpt2's encode_ordinary makes it.
    literal = "a <|endoftext|> b"
    assert 0 not in tok.encode(literal) and tok.decode(tok.encode(literal)) == literal


# Worker processes (multi-process, as the slow marker says).
@pytest.mark.slow
def test_prepare_gives_the_tokenizers_ids_whatever_the_blocks_and_workers(trained, tmp_path, monkeypatch):
    corpus, tok_json = trained
    monkeypatch.setattr(mypt.text, "BLOCK_BYTES", 512)  # many blocks in book.txt
    common = ["--tokenization", f"hf:{tok_json}", "--no_normalize", "--no_filter", "--no_dedup",
              "--val_fraction", "0", "--tokens_per_shard", "1000"]
    for name, workers in (("one", "1"), ("two", "2")):
        invoke("prepare-dataset", "--input_files", str(corpus), "--out_dir", str(tmp_path / name), "--workers",
               workers, *common)
    assert tree_bytes(tmp_path / "one") == tree_bytes(tmp_path / "two")
    book = corpus / "book.txt"
    assert len(mypt.text.split_blocks(book, safe=make_tokenizer(f"hf:{tok_json}").block_boundary)) > 5
    own = tokenizers.Tokenizer.from_file(str(tok_json))
    own.encode_special_tokens = True  # the literal <|endoftext|> of forum.jsonl stays text
    enc = lambda t: own.encode(t, add_special_tokens=False).ids  # noqa: E731
    expected = enc((corpus / "book.txt").read_text(encoding="utf-8")) + [0]
    for line in (corpus / "forum.jsonl").read_text(encoding="utf-8").splitlines():
        expected += enc(json.loads(line)["text"] + "\n") + [0]
    assert read_tokens(tmp_path / "one" / "train").tolist() == expected
    meta = json.loads((tmp_path / "one" / "dataset_metadata.json").read_text())
    assert meta["tokenizer"] == {"kind": "hf", "vocab_size": 300, "eot_id": 0}
    # The same flags again: the same dataset, replaced without --overwrite.
    invoke("prepare-dataset", "--input_files", str(corpus), "--out_dir", str(tmp_path / "one"), *common)


def test_a_tokenizer_that_marks_the_start_of_a_text_is_cut_only_before_a_space(tmp_path, monkeypatch):
    """Metaspace (sentencepiece style) prepends ▁ to a text that does not start with one: a cut at a
    newline would add one at every block; a cut before a space (▁ already there) keeps the ids."""
    hf = tokenizers.Tokenizer(tokenizers.models.BPE(unk_token="<unk>"))
    hf.pre_tokenizer = tokenizers.pre_tokenizers.Metaspace(prepend_scheme="first")
    hf.decoder = tokenizers.decoders.Metaspace(prepend_scheme="first")
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=200, special_tokens=["<unk>", "</s>"], show_progress=False)
    text = "\n".join(" ".join(random.Random(i).choice(WORDS) for _ in range(8)) + "." for i in range(300)) + "\n"
    hf.train_from_iterator([text], trainer)
    hf.save(str(tmp_path / "sp.json"))
    (tmp_path / "doc.txt").write_text(text, encoding="utf-8")
    monkeypatch.setattr(HFTokenizer, "block_bytes", 256)
    invoke("prepare-dataset", "--input_files", str(tmp_path / "doc.txt"), "--out_dir", str(tmp_path / "ds"),
           "--tokenization", f"hf:{tmp_path / 'sp.json'}", "--no_dedup", "--val_fraction", "0")
    tok = Tokenizer.load(tmp_path / "ds")
    assert tok.eot_id == hf.token_to_id("</s>") and tok.cut_rule() is space_boundary
    assert len(mypt.text.split_blocks(tmp_path / "doc.txt", 256, safe=tok.block_boundary)) > 30
    assert read_tokens(tmp_path / "ds" / "train").tolist() == hf.encode(text, add_special_tokens=False).ids + [1]


def test_ids_above_65535_are_kept_exactly(tmp_path):
    words = [f"w{i}" for i in range(70_000)]
    vocab = {w: i for i, w in enumerate(words)} | {" ": 70_000, "\n": 70_001, "<unk>": 70_002}
    hf = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab=vocab, unk_token="<unk>"))
    hf.pre_tokenizer = tokenizers.pre_tokenizers.Split(tokenizers.Regex(r"\s|\S+"), behavior="isolated")
    hf.decoder = tokenizers.decoders.Fuse()
    hf.save(str(tmp_path / "big.json"))
    rng = random.Random(3)
    docs = [" ".join(f"w{rng.choice([5, 65_535, 65_536, 69_999, rng.randrange(70_000)])}" for _ in range(20))
            for _ in range(50)]
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs), encoding="utf-8")
    invoke("prepare-dataset", "--input_files", str(tmp_path / "docs.jsonl"), "--out_dir", str(tmp_path / "ds"),
           "--tokenization", f"hf:{tmp_path / 'big.json'}", "--no_dedup", "--no_filter", "--val_fraction", "0")
    ids = read_tokens(tmp_path / "ds" / "train")
    expected = [i for d in docs for i in hf.encode(d + "\n").ids]  # no end-of-text token in this file
    assert ids.dtype == np.uint32 and ids.tolist() == expected and ids.max() >= 65_536
    tok = Tokenizer.load(tmp_path / "ds")
    assert tok.eot_id is None and tok.vocab_size == 70_003
    assert tok.decode(ids) == "".join(d + "\n" for d in docs)
    assert "OK" in invoke("verify-dataset", str(tmp_path / "ds")).output


def test_a_tokenizer_without_end_of_text_warns_once_and_ends_documents_with_a_newline(tmp_path):
    """No end-of-text token: documents are separated by a newline only (as with char), which
    the user is told, once, naming the file. (One that cannot encode a newline either is
    refused: tests/test_bad_inputs_generate.py.)"""
    vocab = {w: i for i, w in enumerate(WORDS)} | {" ": len(WORDS), "\n": len(WORDS) + 1, "<unk>": len(WORDS) + 2}
    hf = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab=vocab, unk_token="<unk>"))
    hf.pre_tokenizer = tokenizers.pre_tokenizers.Split(tokenizers.Regex(r"\s|\S+"), behavior="isolated")
    hf.decoder = tokenizers.decoders.Fuse()
    hf.save(str(tmp_path / "plain.json"))
    docs = ["the king", "the queen"]
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs), encoding="utf-8")
    result = invoke("prepare-dataset", "--input_files", str(tmp_path / "docs.jsonl"), "--out_dir", str(tmp_path / "ds"),
                    "--tokenization", f"hf:{tmp_path / 'plain.json'}", "--no_dedup", "--no_filter", "--val_fraction",
                    "0", "--workers", "1")
    warnings = [line for line in result.output.splitlines() if line.startswith("warning")]
    assert len(warnings) == 1 and "plain.json" in warnings[0] and "no end-of-text token" in warnings[0], result.output
    assert read_tokens(tmp_path / "ds" / "train").tolist() == [i for d in docs for i in hf.encode(d + "\n").ids]


def test_words_a_vocabulary_lacks_are_counted_and_named_in_a_prompt(tmp_path, capsys):
    """A word-level vocabulary encodes what it lacks as its unknown token: prepare-dataset says
    how many and which, and a prompt's unknown words are named (the model sees them all as one)."""
    vocab = {w: i for i, w in enumerate(WORDS)} | {" ": len(WORDS), "\n": len(WORDS) + 1, "<unk>": len(WORDS) + 2,
                                                   "<|endoftext|>": len(WORDS) + 3}
    hf = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab=vocab, unk_token="<unk>"))
    hf.pre_tokenizer = tokenizers.pre_tokenizers.Split(tokenizers.Regex(r"\s|\S+"), behavior="isolated")
    hf.decoder = tokenizers.decoders.Fuse()
    hf.add_special_tokens(["<|endoftext|>", "<unk>"])
    hf.save(str(tmp_path / "words.json"))
    docs = ["the king saw a dragon", "the dragon and the wyrm", "the queen", "a dragon"]
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs), encoding="utf-8")
    result = invoke("prepare-dataset", "--input_files", str(tmp_path / "docs.jsonl"), "--out_dir", str(tmp_path / "ds"),
                    "--tokenization", f"hf:{tmp_path / 'words.json'}", "--no_dedup", "--no_filter", "--val_fraction",
                    "0", "--workers", "1")
    assert "Pieces outside the tokenizer's vocabulary, each encoded as its unknown token: 8 " in result.output, \
        result.output
    meta = json.loads((tmp_path / "ds" / "dataset_metadata.json").read_text(encoding="utf-8"))
    assert meta["stats"]["tokenize"]["unknown_token_counts"] == {"dragon": 3, "a": 2, "saw": 1, "and": 1, "wyrm": 1}
    (tmp_path / "more.jsonl").write_text(json.dumps({"text": "the dragon"}) + "\n", encoding="utf-8")
    added = invoke("prepare-dataset", "--input_files", str(tmp_path / "more.jsonl"), "--append_to", str(tmp_path / "ds"),
                   "--no_dedup", "--no_filter", "--val_fraction", "0", "--workers", "1")
    assert "Pieces outside the tokenizer's vocabulary, each encoded as its unknown token: 1 (20.0% of the appended " \
           "tokens;" in added.output, added.output
    tok = Tokenizer.load(tmp_path / "ds")
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=1, n_head=1, n_embd=8))
    capsys.readouterr()
    generate(model, tok, "the dragon and the wyrm", max_new_tokens=1)
    err = capsys.readouterr().err
    assert "--prompt: 'dragon', 'and', 'wyrm' not in the model's vocabulary: each became its unknown token <unk>" \
        in err, err
    generate(model, tok, "the king", max_new_tokens=1)
    assert "warning" not in capsys.readouterr().err


def test_bad_tokenizer_files_are_one_line_errors(trained, tmp_path):
    corpus, tok_json = trained
    (tmp_path / "bad.json").write_text("{not json", encoding="utf-8")
    (tmp_path / "other.json").write_text('{"model": 3}', encoding="utf-8")
    (tmp_path / "tokdir").mkdir()
    (tmp_path / "tokdir" / "tokenizer.json").write_bytes(tok_json.read_bytes())
    (tmp_path / "empty").mkdir()
    inside = f"--tokenization hf:{tmp_path / 'tokdir' / 'tokenizer.json'}"
    for spec, words, code in [(f"hf:{tmp_path / 'missing.json'}", ["missing.json", "no such file"], 1),
                              (f"hf:{tmp_path / 'tokdir'}", ["is a directory, not a tokenizer.json: give the file, "
                                                            + inside], 1),
                              (f"hf:{tmp_path / 'empty'}", ["empty is a directory with no tokenizer.json"], 1),
                              (f"hf:{tmp_path / 'bad.json'}", ["bad.json", "not valid JSON"], 1),
                              (f"hf:{tmp_path / 'other.json'}", ["other.json", "not a tokenizers tokenizer.json"], 1),
                              ("hf:", ["hf:PATH"], 2), ("gpt2:x", ["takes no argument"], 2)]:
        result = invoke("prepare-dataset", "--input_files", str(corpus), "--out_dir", str(tmp_path / "ds"),
                        "--tokenization", spec, ok=False)
        assert result.exit_code == code, result.output
        assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
        errors = [line for line in result.output.splitlines() if line.startswith("Error")]
        assert len(errors) == 1 and all(w in errors[0] for w in words), result.output
        assert not (tmp_path / "ds").exists()
    help_text = invoke("prepare-dataset", "--help").output
    assert "[gpt2|char|hf:PATH]" in help_text


def test_train_tokenizer_never_replaces_another_file(trained, tmp_path):
    corpus, _ = trained
    out = tmp_path / "notes.json"
    out.write_text('{"mine": true}', encoding="utf-8")
    args = ["train-tokenizer", "--input_files", str(corpus), "--vocab_size", "280", "--out", str(out)]
    assert "already exists" in invoke(*args, ok=False).output
    assert "refused even with --overwrite" in invoke(*args, "--overwrite", ok=False).output
    assert out.read_text(encoding="utf-8") == '{"mine": true}'
    out.unlink()
    invoke(*args)
    invoke(*args, "--overwrite")  # its own tokenizer.json is replaced when asked


def test_train_tokenizer_writes_a_linked_out_at_its_target(trained, tmp_path):
    """--out LINK --overwrite replaces the tokenizer the link points to, and the link stays a
    link (as a linked --out_dir is replaced at its target); without --overwrite nothing changes."""
    corpus, tok = trained
    (tmp_path / "shared").mkdir()
    target = tmp_path / "shared" / "tok.json"
    target.write_bytes(tok.read_bytes())
    link = tmp_path / "tok.json"
    link.symlink_to(Path("shared") / "tok.json")  # relative, as `ln -s shared/tok.json` makes
    args = ["train-tokenizer", "--input_files", str(corpus), "--vocab_size", "280", "--out", str(link)]
    assert "already exists" in invoke(*args, ok=False).output
    assert link.is_symlink() and target.read_bytes() == tok.read_bytes()
    invoke(*args, "--overwrite")
    assert link.is_symlink() and os.readlink(link) == str(Path("shared") / "tok.json")
    assert HFTokenizer.from_file(target).vocab_size == 280
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shared", "tok.json"]
    assert sorted(p.name for p in (tmp_path / "shared").iterdir()) == ["tok.json"]


def test_train_tokenizer_says_what_it_did_not_learn_from(tmp_path, monkeypatch):
    """As prepare-dataset does: binary files, UTF-16 text (with its fix) and what the walk passed over."""
    monkeypatch.chdir(tmp_path)
    corpus = write_corpus(Path("corpus"))
    (corpus / "blob.txt").write_bytes(b"\x00\x01\x02" * 100)
    (corpus / "win.txt").write_text("hello world\n" * 50, encoding="utf-16")
    (corpus / "notes.md").write_text("# notes\n")
    (corpus / ".ipynb_checkpoints").mkdir()
    (corpus / ".ipynb_checkpoints" / "book-checkpoint.txt").write_text("stale\n")
    out = invoke("train-tokenizer", "--input_files", "corpus", "--vocab_size", "280", "--out", "tok.json").output
    assert "Binary files skipped: corpus/blob.txt, corpus/win.txt" in out
    assert "corpus/win.txt is UTF-16 text (a byte-order mark): convert it to UTF-8 (iconv" in out
    assert ("Files the directory walk skipped: 2 (hidden: corpus/.ipynb_checkpoints/book-checkpoint.txt; "
            "other suffixes: corpus/notes.md)") in out
    assert "Wrote tok.json" in out


@pytest.mark.slow
def test_train_tokenizer_prepare_train_generate(trained, tmp_path):
    corpus, tok_json = trained
    mypt_cli("prepare-dataset", "--input_files", str(corpus), "--out_dir", str(tmp_path / "ds"),
             "--tokenization", f"hf:{tok_json}", "--tokens_per_shard", "2000", cwd=tmp_path)
    tiny = ["--config_file", "tiny", "--max_iters", "4", "--device", "cpu", "--eval_interval", "2"]
    mypt_cli("train", "--dataset_dir", str(tmp_path / "ds"), "--model_name", "m", *tiny, cwd=tmp_path)
    ckpt = Tokenizer.load(tmp_path / "checkpoints" / "m")
    assert ckpt.kind == "hf" and ckpt.state() == Tokenizer.load(tmp_path / "ds").state()
    sample = mypt_cli("generate", "--model_name", "m", "--prompt", "The king", "--max_new_tokens", "20",
                      "--seed", "1", "--device", "cpu", cwd=tmp_path).stdout
    assert "The king" in sample
    # In memory too, and a different file than the dataset's is refused.
    mypt_cli("train", "--input_file", str(corpus / "book.txt"), "--tokenization", f"hf:{tok_json}",
             "--model_name", "mem", *tiny, cwd=tmp_path)
    assert Tokenizer.load(tmp_path / "checkpoints" / "mem").state() == ckpt.state()
    other = tmp_path / "other.json"
    invoke("train-tokenizer", "--input_files", str(corpus), "--vocab_size", "270", "--out", str(other))
    refused = mypt_cli("train", "--dataset_dir", str(tmp_path / "ds"), "--model_name", "x", "--tokenization",
                       f"hf:{other}", *tiny, cwd=tmp_path, check=False)
    assert refused.returncode == 1 and "another hf tokenizer" in refused.stderr


LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                r"\s*[\r\n]+|\s+(?!\S)|\s+")


@pytest.mark.parametrize("name, safe", [("gpt2_regex", True), ("llama3_regex", True), ("prefix_space", False),
                                        ("no_pre_tokenizer", False), ("prepend_normalizer", False),
                                        ("nfc_lowercase", True), ("nmt", False), ("bert_normalizer", False),
                                        ("byte_level_normalizer", False)])
def test_cut_safety_follows_the_pipeline(name, safe):
    """(Nmt, BertNormalizer and the ByteLevel normalizer act on each character alone, but make
    the newline a space or 'Ċ': cut there, a 9 MB .txt gave 2 ids fewer than encoded whole.)"""
    pt, norm = tokenizers.pre_tokenizers, tokenizers.normalizers
    hf = tokenizers.Tokenizer(tokenizers.models.BPE(vocab={"a": 0, "b": 1}, merges=[]))
    hf.pre_tokenizer = {
        "gpt2_regex": pt.ByteLevel(add_prefix_space=False),
        "llama3_regex": pt.Sequence([pt.Split(tokenizers.Regex(LLAMA3_REGEX), behavior="isolated"),
                                     pt.ByteLevel(add_prefix_space=False, use_regex=False)]),
        "prefix_space": pt.ByteLevel(add_prefix_space=True),
        "no_pre_tokenizer": None,
    }.get(name, pt.ByteLevel(add_prefix_space=False))
    normalizer = {"prepend_normalizer": norm.Sequence([norm.Prepend("\u2581"), norm.Replace(" ", "\u2581")]),
                  "nfc_lowercase": norm.Sequence([norm.NFC(), norm.Lowercase()]), "nmt": norm.Nmt(),
                  "bert_normalizer": norm.BertNormalizer(), "byte_level_normalizer": norm.ByteLevel()}.get(name)
    if normalizer is not None:  # (prepend: Llama 2's mark at the start of every text)
        hf.normalizer = normalizer
    assert (HFTokenizer(tokenizer_json=hf.to_str()).cut_rule() is not None) is safe


@pytest.mark.parametrize("chars, stand_in", [("ab \n", " "), ("ab ?\n", "?")])
def test_a_char_exports_stand_in_character_is_not_counted_as_unknown(tmp_path, capsys, chars, stand_in):
    """A char model's exported tokenizer.json gives what it lacks the id of its stand-in
    character (' ' or '?', as mypt's char tokenizer does): that character itself is in the
    vocabulary, not an unknown piece (every space was counted as one: 20% of a text)."""
    from mypt.hf_export import char_hf_tokenizer
    from mypt.tokenizers.char import CharTokenizer

    char_hf_tokenizer(CharTokenizer(chars=sorted(chars))).save(str(tmp_path / "tokenizer.json"))
    tok = HFTokenizer.from_file(tmp_path / "tokenizer.json")
    assert tok.unknown_token == stand_in
    ids, unknown = tok.encode_lossy("ab ba? ab")
    assert unknown == ({"?": 1} if stand_in == " " else {}) and len(ids) == 9
    assert tok.encode_lossy("abc ab")[1] == {"c": 1}
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=1, n_head=1, n_embd=8))
    capsys.readouterr()
    generate(model, tok, "ab ba", max_new_tokens=1)
    assert "warning" not in capsys.readouterr().err


def with_settings(tok_json: Path, out: Path, **settings) -> Path:
    """tok_json with top-level settings of a tokenizer.json set (truncation, padding, ...)."""
    config = json.loads(tok_json.read_text(encoding="utf-8"))
    out.write_text(json.dumps({**config, **settings}), encoding="utf-8")
    return out


TRUNCATION = {"direction": "Right", "max_length": 8, "strategy": "LongestFirst", "stride": 0}
PADDING = {"strategy": {"Fixed": 64}, "direction": "Right", "pad_to_multiple_of": None, "pad_id": 0,
           "pad_type_id": 0, "pad_token": "<|endoftext|>"}


def test_a_tokenizer_jsons_truncation_and_padding_are_off_named_and_not_part_of_its_identity(trained, tmp_path):
    """A Hub tokenizer.json made for a classifier (truncation 512) cut every document at that
    token, silently; padding filled each with pad ids. mypt tokenizes whole documents: the ids
    are the file's own without them, a warning names what was turned off, and the dataset's
    record is the same tokenizer's (a model of one trains on the other)."""
    corpus, tok_json = trained
    plain = make_tokenizer(f"hf:{tok_json}")
    records, tokens = {}, {}
    for name, settings in (("plain", {}), ("truncation", {"truncation": TRUNCATION}), ("padding", {"padding": PADDING}),
                           ("both", {"truncation": TRUNCATION, "padding": PADDING})):
        path = with_settings(tok_json, tmp_path / f"{name}.json", **settings)
        result = invoke("prepare-dataset", "--input_files", str(corpus), "--out_dir", str(tmp_path / name),
                        "--tokenization", f"hf:{path}", "--tokens_per_shard", "2000", "--workers", "1")
        turned_off = " and ".join(k for k in ("truncation", "padding") if k in settings)
        assert (f"sets {turned_off}, which mypt turns off" in result.output) == bool(settings), result.output
        meta = json.loads((tmp_path / name / "dataset_metadata.json").read_text())
        records[name] = meta["tokenizer_sha256"]
        tokens[name] = np.concatenate([read_tokens(tmp_path / name / s) for s in ("train", "val")])
        loaded = make_tokenizer(f"hf:{path}")
        sentence = " ".join(WORDS)  # more than 8 ids
        assert list(loaded.encode(sentence)) == list(plain.encode(sentence)) and len(plain.encode(sentence)) > 8
    assert len(set(records.values())) == 1, records
    for name in records:
        assert np.array_equal(tokens[name], tokens["plain"]), name
    invoke("verify-dataset", str(tmp_path / "truncation"))


def test_a_record_of_the_whole_tokenizer_json_as_mypt_wrote_it_before_still_verifies(trained, tmp_path):
    """Datasets prepared on 2026-12-05 recorded the sha256 of the whole tokenizer.json,
    post-processor, truncation and padding included: they still verify and train; another
    record is still refused."""
    import hashlib

    corpus, tok_json = trained
    path = with_settings(tok_json, tmp_path / "tok.json", truncation=TRUNCATION)
    invoke("prepare-dataset", "--input_files", str(corpus), "--out_dir", str(tmp_path / "ds"), "--tokenization",
           f"hf:{path}", "--tokens_per_shard", "2000", "--workers", "1")
    state = json.loads((tmp_path / "ds" / "tokenizer_state.json").read_text())
    whole = {**state, "tokenizer_json": json.loads(state["tokenizer_json"])}
    meta_path = tmp_path / "ds" / "dataset_metadata.json"
    meta = json.loads(meta_path.read_text())
    for record, ok in ((hashlib.sha256(json.dumps(whole, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
                                       .encode()).hexdigest(), True), ("0" * 64, False)):
        assert record != meta["tokenizer_sha256"]
        meta_path.write_text(json.dumps({**meta, "tokenizer_sha256": record}))
        result = invoke("verify-dataset", str(tmp_path / "ds"), ok=ok)
        assert ok or (result.exit_code == 1 and "not the tokenizer the shards were written with" in result.output)


def special_piece_tokenizer(path: Path, model: str) -> Path:
    """A Unigram (UnigramTrainer's special_tokens, T5's </s>), WordLevel, WordPiece or BPE tokenizer whose own
    vocabulary holds the special tokens <unk> and </s> as pieces (a BPE trained on text that quotes
    '</s>', with a pre-tokenizer that keeps it one word: merges that make it; `bpe ignore_merges`: a
    word found whole in the vocabulary is its id; `bpe ##`: merges of continuing subwords)."""
    texts = [" ".join(random.Random(i).choice(WORDS) for _ in range(12)) + " 1 < 2 / 3 > s" for i in range(300)]
    if model.startswith("bpe"):
        prefix = {"continuing_subword_prefix": "##"} if model == "bpe ##" else {}
        hf = tokenizers.Tokenizer(tokenizers.models.BPE(unk_token="<unk>", ignore_merges=model == "bpe ignore_merges",
                                                        **prefix))
        hf.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
        trainer = tokenizers.trainers.BpeTrainer(vocab_size=200, special_tokens=["<unk>", "</s>"], show_progress=False,
                                                 **prefix)
        texts = [text + " </s>" for text in texts]
    elif model == "unigram":
        hf = tokenizers.Tokenizer(tokenizers.models.Unigram())
        hf.pre_tokenizer, hf.decoder = tokenizers.pre_tokenizers.Metaspace(), tokenizers.decoders.Metaspace()
        trainer = tokenizers.trainers.UnigramTrainer(vocab_size=120, special_tokens=["<unk>", "</s>"],
                                                     unk_token="<unk>")
    elif model == "wordpiece":  # (WhitespaceSplit keeps '</s>' one word, which the vocabulary holds whole)
        hf = tokenizers.Tokenizer(tokenizers.models.WordPiece(unk_token="<unk>"))
        hf.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
        trainer = tokenizers.trainers.WordPieceTrainer(vocab_size=200, special_tokens=["<unk>", "</s>"],
                                                       show_progress=False)
    else:
        hf = tokenizers.Tokenizer(tokenizers.models.WordLevel(unk_token="<unk>"))
        hf.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
        trainer = tokenizers.trainers.WordLevelTrainer(special_tokens=["<unk>", "</s>"])
    hf.train_from_iterator(texts, trainer)
    hf.add_tokens(["<user>"])  # (transformers' add_tokens: an added token after the special ones, not special)
    hf.save(str(path))
    return path


@pytest.mark.parametrize("model", ["unigram", "wordlevel", "wordpiece", "bpe", "bpe ignore_merges", "bpe ##"])
def test_a_literal_end_of_text_is_ordinary_text_where_the_model_holds_it_as_a_piece(tmp_path, model):
    """encode_special_tokens keeps the added-token matcher off '</s>', but a Unigram, WordLevel, WordPiece or
    BPE model holds it in its own vocabulary (a BPE's merges make it from the characters of a quoted
    '</s>'): a document quoting it ended there (the end-of-text id inside it). Now each document
    holds no end-of-text id but its last; text without it keeps the tokenizer's own ids."""
    tok_json = special_piece_tokenizer(tmp_path / "tok.json", model)
    docs = ["the king speak </s> know <unk> fire", "the queen </s>", "</s>", "night crown blood"]
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    invoke("prepare-dataset", "--input_files", str(tmp_path / "docs.jsonl"), "--out_dir", str(tmp_path / "ds"),
           "--tokenization", f"hf:{tok_json}", "--val_fraction", "0", "--no_dedup", "--no_filter", "--workers", "1")
    tok = make_tokenizer(f"hf:{tok_json}")
    assert tok.eot_id == 1
    ids = read_tokens(tmp_path / "ds" / "train")
    assert (ids == tok.eot_id).sum() == len(docs) and ids[-1] == tok.eot_id
    if model == "unigram":  # its pieces spell it (a word-level vocabulary has it as an unknown word)
        assert tok.decode(ids[ids != tok.eot_id]).count("</s>") == 3
    if model.startswith("bpe"):  # (its characters' merges short of it: no unknown token)
        assert tok.unknown_token not in tok.decode(tok.encode("the queen </s>"))
    raw = tokenizers.Tokenizer.from_file(str(tok_json))
    for plain in ("the king and queen walk at night", "<user> the king"):  # (the added token keeps its id)
        assert list(tok.encode(plain)) == raw.encode(plain, add_special_tokens=False).ids


def test_bpe_dropout_is_off_so_preparation_is_deterministic(trained, tmp_path):
    """A tokenizer.json with BPE dropout gave other ids at each encode: two preparations of one
    corpus gave other shards, and verify-dataset passed both."""
    corpus, tok_json = trained
    config = json.loads(tok_json.read_text(encoding="utf-8"))
    dropout = tmp_path / "dropout.json"
    dropout.write_text(json.dumps({**config, "model": {**config["model"], "dropout": 0.3}}), encoding="utf-8")
    shards = []
    for name, path in (("a", dropout), ("b", dropout), ("plain", tok_json)):
        result = invoke("prepare-dataset", "--input_files", str(corpus), "--out_dir", str(tmp_path / name),
                        "--tokenization", f"hf:{path}", "--workers", "1")
        assert ("sets BPE dropout, which mypt turns off" in result.output) == (name == "a"), result.output  # (once)
        shards.append(tree_bytes(tmp_path / name / "train"))
    assert shards[0] == shards[1] == shards[2]
    # The same tokenizer, dropout off: a model of one trains on the others.
    assert len({json.loads((tmp_path / n / "dataset_metadata.json").read_text())["tokenizer_sha256"]
                for n in ("a", "b", "plain")}) == 1


def test_a_tokenizer_without_a_decoder_is_named(trained, tmp_path):
    """A byte-level BPE whose tokenizer.json has no decoder: its ids are right, but generate
    showed 'a Ġb,' for 'a b,': the warning says so, once, and how to add one."""
    corpus, tok_json = trained
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps({**json.loads(tok_json.read_text(encoding="utf-8")), "decoder": None}), encoding="utf-8")
    for path, warned in ((tok_json, False), (bare, True)):
        result = invoke("prepare-dataset", "--input_files", str(corpus), "--out_dir", str(tmp_path / path.stem),
                        "--tokenization", f"hf:{path}", "--workers", "1")
        assert ("the tokenizer.json has no decoder" in result.output) == warned, result.output
        assert result.output.count("no decoder") <= 1


# Llama 3's pre-tokenizer pattern: punctuation takes the newlines after it (".\n" one piece).
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                  r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def merging_newline_tokenizer(path: Path, kind: str):
    """A BPE without an end-of-text token whose one merge joins a newline to what comes before it:
    ".\n" under Llama 3's pattern, " \n" under GPT-2's byte-level one (the newline encoded apart
    gives other ids)."""
    if kind == "llama3":
        vocab = {c: i for i, c in enumerate(sorted(set("Hello there.\nBye ok") | {".\n", "<unk>"}))}
        hf = tokenizers.Tokenizer(tokenizers.models.BPE(vocab=vocab, merges=[(".", "\n")], unk_token="<unk>"))
        hf.pre_tokenizer = tokenizers.pre_tokenizers.Split(tokenizers.Regex(LLAMA3_PATTERN), behavior="isolated")
        hf.decoder = tokenizers.decoders.Fuse()
    else:
        alphabet = tokenizers.pre_tokenizers.ByteLevel.alphabet()
        vocab = {c: i for i, c in enumerate(sorted(alphabet) + ["ĠĊ"])}
        hf = tokenizers.Tokenizer(tokenizers.models.BPE(vocab=vocab, merges=[("Ġ", "Ċ")]))
        hf.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
        hf.decoder = tokenizers.decoders.ByteLevel()
    hf.save(str(path))
    return hf


@pytest.mark.parametrize("kind, texts", [("llama3", ["Hello there.", "Bye ok."]),
                                         ("bytelevel", ["Hello there.  ", "Bye ok. "])])
@pytest.mark.parametrize("dedup", [True, False])
def test_a_txt_without_a_final_newline_ends_with_the_ids_of_its_text_and_newline(tmp_path, kind, texts, dedup):
    """Without an end-of-text token a newline ends each document, its ids those of the text and
    its newline encoded together (README), also for a .txt whose last line lacks it, as cleaned
    unchanged under --no_normalize --no_dedup (a newline encoded apart is '.', '\\n' for '.\\n')."""
    hf = merging_newline_tokenizer(tmp_path / "tok.json", kind)
    for name, text in zip("ab", texts):
        (tmp_path / f"{name}.txt").write_text(text, encoding="utf-8")
    invoke("prepare-dataset", "--input_files", str(tmp_path / "a.txt"), str(tmp_path / "b.txt"), "--out_dir",
           str(tmp_path / "ds"), "--tokenization", f"hf:{tmp_path / 'tok.json'}", "--no_normalize", "--no_filter",
           *(["--dedup_min_chars", "1000"] if dedup else ["--no_dedup"]), "--val_fraction", "0", "--workers", "1")
    expected = [i for text in texts for i in hf.encode(text + "\n").ids]
    assert read_tokens(tmp_path / "ds" / "train").tolist() == expected
    assert len(hf.encode(texts[0] + "\n").ids) < len(hf.encode(texts[0]).ids + hf.encode("\n").ids)
