"""An hf tokenizer's .txt blocks: cut where its pre-tokenizer allows (HFTokenizer.cut_rule), the
ids of the blocks encoded apart must be those of the whole text, for every kind of tokenizer:
train-tokenizer's (GPT-2's ByteLevel pattern: any script, blank lines, indents, CRLF), Llama 3's
pattern (after the last newline of a run of whitespace), one with an ordinary
added token of spaces (no cuts inside runs), word-level ones, and Metaspace (before a space after a
newline; with split false, never cut).
CJK or indented text with an hf tokenizer was one block for the whole file (16 MiB of CJK lines:
3.76 GB peak RSS)."""

from __future__ import annotations

import random

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import read_tokens
from test_block_scan import AROUND, period_cuts_keep_ids
from test_tokenize_blocks import cjk_lines, crlf_lines, deep_indents, indented_lines, paragraphs, random_text

import mypt.steps.tokenize as tokenize_step
import mypt.tokenizers.hf as hf_module
from mypt.cli import main
from mypt.text import split_blocks
from mypt.tokenizers import gpt2
from mypt.tokenizers.hf import HFTokenizer

tokenizers = pytest.importorskip("tokenizers")

LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                r"\s*[\r\n]+|\s+(?!\S)|\s+")


def counted_blocks(monkeypatch, block_bytes: int) -> list[int]:
    """hf blocks of `block_bytes` in the tokenize step; the list it returns gets the number of
    blocks of each .txt source the step cuts."""
    counts = []

    def spy(path, *args, **kwargs):
        counts.append(len(blocks := split_blocks(path, *args, **kwargs)))
        return blocks

    monkeypatch.setattr(HFTokenizer, "block_bytes", block_bytes)
    monkeypatch.setattr(tokenize_step, "split_blocks", spy)
    return counts


def corpus(rng: random.Random) -> str:
    """Text of every kind the fuzz cuts: a BPE trained on it merges "\\n ", "  ", "\\r\\n", CJK pairs."""
    return "".join(make(rng, 80) for make in (paragraphs, cjk_lines, indented_lines, crlf_lines)) + \
        "".join(random_text(rng, 200) for _ in range(20)) + deep_indents(rng, 10)


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict[str, tuple[HFTokenizer, object]]:
    """Each kind of tokenizer: (mypt's HFTokenizer, the rule cut_rule is expected to pick)."""
    root = tmp_path_factory.mktemp("hf_blocks")
    text = corpus(random.Random(0))
    (root / "corpus.txt").write_bytes(text.encode())
    result = CliRunner().invoke(main, ["train-tokenizer", "--input_files", str(root / "corpus.txt"), "--vocab_size",
                                       "600", "--out", str(root / "bpe.json"), "--no_normalize"])
    assert result.exit_code == 0, result.output
    pt, tk = tokenizers.pre_tokenizers, tokenizers

    def trained(model, trainer, pre, normalizer=None, added=()):
        hf = tk.Tokenizer(model)
        hf.pre_tokenizer = pre
        if normalizer is not None:
            hf.normalizer = normalizer
        hf.train_from_iterator([text], trainer)
        if added:
            hf.add_tokens(list(added))
        return HFTokenizer(tokenizer_json=hf.to_str())

    bpe = lambda: tk.trainers.BpeTrainer(vocab_size=600, special_tokens=["<|endoftext|>"], show_progress=False,  # noqa
                                         initial_alphabet=pt.ByteLevel.alphabet())
    byte_level = pt.ByteLevel(add_prefix_space=False)
    llama3 = pt.Sequence([pt.Split(tk.Regex(LLAMA3_REGEX), behavior="isolated"),
                          pt.ByteLevel(add_prefix_space=False, use_regex=False)])
    return {
        "train-tokenizer": (HFTokenizer(tokenizer_json=(root / "bpe.json").read_text()), gpt2.regex_safe_boundary),
        "llama3 pattern": (trained(tk.models.BPE(), bpe(), llama3), gpt2.newline_run_boundary),
        "added token of spaces": (trained(tk.models.BPE(), bpe(), byte_level, added=["    ", "\t\t"]),
                                  gpt2.lone_newline_boundary),
        "nfkc, whitespace split, word-level": (
            trained(tk.models.WordLevel(unk_token="[UNK]"), tk.trainers.WordLevelTrainer(special_tokens=["[UNK]"]),
                    pt.WhitespaceSplit(), tk.normalizers.NFKC()), gpt2.regex_safe_boundary),
        "bert pre-tokenizer, wordpiece": (
            trained(tk.models.WordPiece(unk_token="[UNK]"), tk.trainers.WordPieceTrainer(
                vocab_size=600, special_tokens=["[UNK]"], show_progress=False), pt.BertPreTokenizer(),
                    tk.normalizers.Lowercase()), gpt2.regex_safe_boundary),
        "metaspace": (trained(tk.models.BPE(unk_token="<unk>"), tk.trainers.BpeTrainer(
            vocab_size=300, special_tokens=["<unk>", "</s>"], show_progress=False), pt.Metaspace()),
            hf_module.space_boundary),
        "unigram, metaspace first": (trained(tk.models.Unigram(), tk.trainers.UnigramTrainer(
            vocab_size=300, special_tokens=["<unk>", "</s>"], unk_token="<unk>", show_progress=False),
            pt.Metaspace(prepend_scheme="first")), hf_module.space_boundary),
        "metaspace, split false": (trained(tk.models.BPE(unk_token="<unk>"), tk.trainers.BpeTrainer(
            vocab_size=300, special_tokens=["<unk>", "</s>"], show_progress=False), pt.Metaspace(split=False)), None),
    }


TEXTS = [cjk_lines, indented_lines, crlf_lines, paragraphs, deep_indents,
         lambda rng, n: "".join(random_text(rng, 12) for _ in range(n)),
         lambda rng, n: "".join(rng.choice([cjk_lines, indented_lines, crlf_lines, paragraphs])(rng, 3)
                                for _ in range(n // 3))]


SLOW = pytest.mark.slow  # (a fuzz a kind: two kinds in the quick loop, every kind in the full run)


@pytest.mark.parametrize("kind", ["train-tokenizer", pytest.param("llama3 pattern", marks=SLOW),
                                  pytest.param("added token of spaces", marks=SLOW),
                                  pytest.param("nfkc, whitespace split, word-level", marks=SLOW),
                                  pytest.param("bert pre-tokenizer, wordpiece", marks=SLOW), "metaspace",
                                  pytest.param("unigram, metaspace first", marks=SLOW), "metaspace, split false"])
def test_hf_blocks_give_the_whole_texts_ids(made, kind, tmp_path):
    tok, rule = made[kind]
    assert tok.cut_rule() is rule
    rng, path, cuts = random.Random(kind), tmp_path / "t.txt", 0
    for i in range(70):
        text = TEXTS[i % len(TEXTS)](rng, rng.randint(5, 40))
        path.write_bytes(text.encode())
        blocks = split_blocks(path, rng.choice([1, 16, 64, 200]), safe=tok.block_boundary)
        data = path.read_bytes()
        ids = np.concatenate([tok.encode_array(data[a:b].decode()) for a, b in blocks]).tolist()
        assert ids == tok.encode(text), (kind, repr(text))
        cuts += len(blocks) - 1
    if rule is None:
        assert cuts == 0
    else:  # (fewer for the newline rules: no cuts inside runs)
        assert cuts > (300 if rule is gpt2.regex_safe_boundary else 100), cuts


@pytest.mark.parametrize("kind, make, least", [
    ("train-tokenizer", cjk_lines, 30), ("train-tokenizer", indented_lines, 30), ("train-tokenizer", crlf_lines, 30),
    ("train-tokenizer", paragraphs, 30), ("llama3 pattern", cjk_lines, 30), ("llama3 pattern", indented_lines, 30),
    ("llama3 pattern", crlf_lines, 30), ("llama3 pattern", paragraphs, 30)])
def test_hf_cuts_cjk_indented_and_crlf_lines(made, kind, make, least, tmp_path):
    """Text with no newline between two printable ASCII characters was never cut (the ASCII rule);
    with Llama 3's pattern, indented, CRLF and blank-line text was not either (a lone newline's rule)."""
    tok, _ = made[kind]
    text = make(random.Random(1), 300)
    (tmp_path / "t.txt").write_bytes(text.encode())
    blocks = split_blocks(tmp_path / "t.txt", 64, safe=tok.block_boundary)
    assert len(blocks) > least, len(blocks)


def test_a_cut_the_probe_allows_is_checked_on_the_text_around_it(made, monkeypatch):
    """The probe's characters stand for their kind: a cut whose own text the pre-tokenizer does not
    split (here faked) is not made."""
    tok, _ = made["train-tokenizer"]
    assert tok.block_boundary("中文".encode(), "的句子".encode()) == 0
    monkeypatch.setattr(tok, "_pieces", lambda text: [text])  # (one piece: no cut keeps it)
    assert tok.block_boundary("中文".encode(), "的句子".encode()) is None


def test_prepare_dataset_cuts_cjk_and_indented_txt_sources_with_an_hf_tokenizer(made, tmp_path, monkeypatch):
    """Through prepare-dataset (no normalization, filter or dedup: the text as it is): blocks of
    ~512 bytes, the ids of train-tokenizer's tokenizer on each whole text."""
    tok, _ = made["train-tokenizer"]
    (tmp_path / "tok.json").write_text(tok.tokenizer_json)
    rng = random.Random(2)
    texts = {"cjk.txt": cjk_lines(rng, 200), "indented.txt": indented_lines(rng, 200),
             "crlf.txt": crlf_lines(rng, 200)}
    counts = counted_blocks(monkeypatch, 512)
    for name, text in texts.items():
        (tmp_path / name).write_bytes(text.encode())
        counts.clear()
        result = CliRunner().invoke(main, ["prepare-dataset", "--input_files", str(tmp_path / name), "--out_dir",
                                           str(tmp_path / f"ds_{name}"), "--val_fraction", "0", "--workers", "1",
                                           "--no_normalize", "--no_filter", "--no_dedup", "--tokenization",
                                           f"hf:{tmp_path / 'tok.json'}"])
        assert result.exit_code == 0, result.output + repr(result.exception)
        assert read_tokens(tmp_path / f"ds_{name}" / "train").tolist() == tok.encode(text) + [tok.eot_id], name
        assert counts and counts[0] > len(text.encode()) // 1024, (name, counts)


@SLOW
@pytest.mark.parametrize("kind", ["train-tokenizer", "llama3 pattern", "added token of spaces",
                                  "nfkc, whitespace split, word-level", "bert pre-tokenizer, wordpiece"])
def test_runs_of_a_line_of_whitespace_cut_at_the_probed_period_keep_the_ids(made, kind):
    """Each kind's period (HFTokenizer._run_period: probed per unit, checked with the text before the
    run) keeps the ids of runs of every length from 1 to 300 and longer ones, between random text."""
    tok, _ = made[kind]
    assert period_cuts_keep_ids(tok, random.Random(kind)) > 3000


@pytest.mark.parametrize("kind", ["train-tokenizer", "llama3 pattern", "added token of spaces",
                                  "nfkc, whitespace split, word-level", "bert pre-tokenizer, wordpiece"])
def test_each_kind_cuts_long_runs_of_each_line_of_whitespace(made, kind, tmp_path):
    """Blank, CRLF (which a BPE that merges "\\r\\n" cuts after the newline only), space, tab,
    U+3000 and U+00A0 lines: a run of 5,000 after a word, in blocks of 1 KiB, the whole text's ids."""
    tok, _ = made[kind]
    path = tmp_path / "t.txt"
    for line in ["\n", "\r\n", " \n", "\t\n", "\u3000\n", "\xa0\n"]:
        text = "Words.\n" + line * 5_000 + "end.\n"
        path.write_bytes(text.encode())
        blocks = split_blocks(path, 1024, safe=tok.block_boundary)
        assert len(blocks) > len(text.encode()) // 2048, (line, len(blocks))
        data = path.read_bytes()
        assert np.concatenate([tok.encode_array(data[a:b].decode()) for a, b in blocks]).tolist() == \
            tok.encode(text), line


def test_prepare_dataset_cuts_long_runs_of_whitespace_lines_with_an_hf_tokenizer(made, tmp_path, monkeypatch):
    """A run of blank lines, or of CRLF, space, tab or U+3000 lines, was one block with an hf
    tokenizer however long (64 MiB of newlines: 14.2 GB peak; the tokenizers library holds about
    230 bytes a character): cut at the probed period. Blocks of 512 bytes, and the ids of a run
    whose block holds the whole file."""
    tok, _ = made["train-tokenizer"]
    (tmp_path / "tok.json").write_text(tok.tokenizer_json)
    text = "".join(f"Words {i}.{unit}" + unit * 3_000 for i, unit in enumerate(["\n", "\r\n", " \n", "\t\n",
                                                                                "\u3000\n"])) + "end.\n"
    (tmp_path / "in.txt").write_bytes(text.encode())
    tokens = {}
    for block_bytes in (512, 1 << 30):
        counts = counted_blocks(monkeypatch, block_bytes)
        out = tmp_path / f"ds_{block_bytes}"
        result = CliRunner().invoke(main, ["prepare-dataset", "--input_files", str(tmp_path / "in.txt"), "--out_dir",
                                           str(out), "--val_fraction", "0", "--workers", "1", "--no_normalize",
                                           "--no_filter", "--no_dedup", "--tokenization",
                                           f"hf:{tmp_path / 'tok.json'}"])
        assert result.exit_code == 0, result.output + repr(result.exception)
        tokens[block_bytes] = read_tokens(out / "train").tolist()
        if block_bytes == 512:
            assert counts and counts[0] > len(text.encode()) // 1024, counts
        else:
            assert counts == [1], counts
    assert tokens[512] == tokens[1 << 30] == tok.encode(text) + [tok.eot_id]


def _added_token_kinds() -> dict[str, tuple[HFTokenizer, object]]:
    """Tokenizers whose ordinary added token `<tok>` encode splits out of the text before it
    pre-tokenizes (the rule cut_rule must pick), and a RoBERTa-style special `<mask>` with lstrip,
    which mypt never matches (encode_special_tokens)."""
    pt, tk = tokenizers.pre_tokenizers, tokenizers
    text = corpus(random.Random(3))

    def trained(pre, *added, model=None, trainer=None):
        hf = tk.Tokenizer(model or tk.models.BPE())
        hf.pre_tokenizer = pre
        hf.train_from_iterator([text], trainer or tk.trainers.BpeTrainer(
            vocab_size=600, special_tokens=["<|endoftext|>"], show_progress=False,
            initial_alphabet=pt.ByteLevel.alphabet()))
        for token in added:
            (hf.add_special_tokens if token.special else hf.add_tokens)([token])
        return HFTokenizer(tokenizer_json=hf.to_str())

    byte_level = pt.ByteLevel(add_prefix_space=False)
    llama3 = pt.Sequence([pt.Split(tk.Regex(LLAMA3_REGEX), behavior="isolated"),
                          pt.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok, mask = tk.AddedToken("<tok>"), tk.AddedToken("<mask>", lstrip=True, special=True)
    return {
        "byte-level, <tok>": (trained(byte_level, tok), gpt2.lone_newline_boundary),
        "byte-level, <tok> rstrip": (trained(byte_level, tk.AddedToken("<tok>", rstrip=True)),
                                     gpt2.lone_newline_boundary),
        # (tokens of letters and digits, or of letters, "_" and "<>": where their kinds meet _piece_cuts would cut)
        "byte-level, ab12 and <tool_call>": (trained(byte_level, tk.AddedToken("ab12"), tk.AddedToken("<tool_call>")),
                                             gpt2.lone_newline_boundary),
        "llama3 pattern, <tok>": (trained(llama3, tok), gpt2.newline_run_boundary),
        "byte-level, special <mask> lstrip": (trained(byte_level, mask), gpt2.regex_safe_boundary),
        "whitespace split, word-level, <tok>": (trained(pt.WhitespaceSplit(), tok, model=tk.models.WordLevel(
            unk_token="[UNK]"), trainer=tk.trainers.WordLevelTrainer(special_tokens=["[UNK]"])),
                                                gpt2.regex_safe_boundary),
    }


@pytest.fixture(scope="module")
def with_added():
    return _added_token_kinds()


# Pieces of text around added tokens: whitespace runs and newlines of each kind, words, CJK.
_FRAGMENTS = ["<tok>", "<mask>", "<|endoftext|>", "x", "foo", "中文", ".", "1", "\n", "\n\n", "\r\n", " ", "    ",
              "\t", "\n    ", " \n", "\n ", "\u3000"]


@pytest.mark.parametrize("text", ["x\n    <tok> y\n", "foo \n<tok>", "x\n <tok>", "<tok>\n    x\n", "a\n<tok>\nb\n"])
def test_an_added_token_after_a_run_of_whitespace_keeps_its_ids(with_added, text, tmp_path):
    """encode splits an ordinary added token out before it pre-tokenizes: the run before it ends
    its stretch of text and stays one piece, "\\n    " (a cut inside it gave "\\n   ", " ": other
    ids). The reviewer's texts, cut wherever the rule allows (blocks of a byte)."""
    tok, _ = with_added["byte-level, <tok>"]
    path = tmp_path / "t.txt"
    path.write_bytes(text.encode())
    blocks = split_blocks(path, 1, safe=tok.block_boundary)
    ids = np.concatenate([tok.encode_array(text.encode()[a:b].decode()) for a, b in blocks]).tolist()
    assert ids == tok.encode(text), blocks


@pytest.mark.parametrize("kind", ["byte-level, <tok>", pytest.param("byte-level, <tok> rstrip", marks=SLOW),
                                  pytest.param("llama3 pattern, <tok>", marks=SLOW),
                                  pytest.param("byte-level, special <mask> lstrip", marks=SLOW),
                                  pytest.param("whitespace split, word-level, <tok>", marks=SLOW)])
def test_blocks_with_added_tokens_beside_whitespace_give_the_whole_texts_ids(with_added, kind, tmp_path):
    """Differential fuzz: added tokens (and literal special ones) beside runs of whitespace and
    newlines, cut wherever the rule allows; a special token mypt never matches does not keep the
    widest rule from a RoBERTa-style file (`<mask>` with lstrip: it was one block)."""
    tok, rule = with_added[kind]
    rng, path, cuts = random.Random(kind), tmp_path / "t.txt", 0
    for _ in range(150):
        text = "".join(rng.choice(_FRAGMENTS) for _ in range(rng.randint(3, 40)))
        path.write_bytes(text.encode())
        blocks = split_blocks(path, rng.choice([1, 8]), safe=tok.block_boundary)
        ids = np.concatenate([tok.encode_array(text.encode()[a:b].decode()) for a, b in blocks]).tolist()
        assert ids == tok.encode(text), (kind, repr(text), blocks)
        cuts += len(blocks) - 1
    assert tok.cut_rule() is rule
    assert cuts > (100 if rule is gpt2.regex_safe_boundary else 10), cuts  # (newline cuts are rarer)


def test_prepare_dataset_keeps_the_ids_of_added_tokens_after_indents(with_added, tmp_path, monkeypatch):
    """Through prepare-dataset, blocks of a few bytes: indented lines that begin with an added token."""
    tok, _ = with_added["byte-level, <tok>"]
    (tmp_path / "tok.json").write_text(tok.tokenizer_json)
    rng = random.Random(4)
    text = "".join(f"{rng.choice(['x', 'def', '中文'])}\n{' ' * rng.randint(1, 8)}<tok> y{rng.choice(['', ' '])}\n"
                   for _ in range(200))
    (tmp_path / "in.txt").write_bytes(text.encode())
    counts = counted_blocks(monkeypatch, 16)
    result = CliRunner().invoke(main, ["prepare-dataset", "--input_files", str(tmp_path / "in.txt"), "--out_dir",
                                       str(tmp_path / "ds"), "--val_fraction", "0", "--workers", "1",
                                       "--no_normalize", "--no_filter", "--no_dedup", "--tokenization",
                                       f"hf:{tmp_path / 'tok.json'}"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert read_tokens(tmp_path / "ds" / "train").tolist() == tok.encode(text) + [tok.eot_id]
    assert counts and counts[0] > 50, counts


@pytest.mark.parametrize("before, after, at", [
    (b"one.\n", b"Two", 0), (b"foo\r", b"bar", 0), (b"def f():", b"    return", 0), (b"end ", b"next", 0),
    (b"a", "\u3000中".encode(), 0), (b"a", b"\nb", None), (b"a", b"\r\nb", None), (b"a", b"  \n b", None),
    (b"a", b" " * 300, None), (b"a", b"\xe4\xb8", None)])
def test_newline_run_boundary_cuts_after_a_runs_last_newline(before, after, at):
    """After the last \\r or \\n of a run whose end `after` shows; nowhere else."""
    assert gpt2.newline_run_boundary(before, after) == at


# The characters of the runs inside a line that _run_cuts cuts (one whitespace character repeated).
RUN_CHARS = [" ", "\t", "\u3000", "\xa0", "\n", "\r", "\x85", "\u2028"]
ALL_KINDS = ["train-tokenizer", "llama3 pattern", "added token of spaces", "nfkc, whitespace split, word-level",
             "bert pre-tokenizer, wordpiece", "metaspace", "unigram, metaspace first", "metaspace, split false"]


def _joined_kinds() -> dict[str, HFTokenizer]:
    """Hand-made BPEs whose merges pair a letter or a tab with the whitespace after it, by rank "aa", "\\t\\t",
    "a" + W and "\\t" + W, then W + W for each whitespace character W, with a pre-tokenizer that joins a run to
    what is before it: none, ByteLevel without its pattern, Metaspace (all but spaces), GPT-2's pattern (to
    the whitespace before it). BPE pairs such a run's characters as the parity of that text's length says."""
    pt, tk = tokenizers.pre_tokenizers, tokenizers

    def bpe(pre, byte_level: bool) -> HFTokenizer:
        if byte_level:
            alphabet, ws = pt.ByteLevel.alphabet(), {" ": "Ġ", "\t": "ĉ", "\n": "Ċ", "\r": "č"}
        else:
            alphabet, ws = set("".join(AROUND + RUN_CHARS) + "axy<tok>▁"), {w: w for w in RUN_CHARS}
        tab, spaces = ws["\t"], ws.values()
        merges = [("a", "a"), (tab, tab)] + [(c, w) for c in ("a", tab) for w in spaces if w != c] + \
            [(w, w) for w in spaces if w != tab]
        vocab = {c: i for i, c in enumerate(sorted(alphabet) + ["<unk>"])}
        for a, b in merges:
            vocab.setdefault(a + b, len(vocab))
        hf = tk.Tokenizer(tk.models.BPE(vocab=vocab, merges=merges, unk_token="<unk>"))
        if pre is not None:
            hf.pre_tokenizer = pre
        hf.add_special_tokens(["<|endoftext|>"])
        return HFTokenizer(tokenizer_json=hf.to_str())

    return {"joined: no pre-tokenizer": bpe(None, False),
            "joined: byte-level, no pattern": bpe(pt.ByteLevel(add_prefix_space=False, use_regex=False), True),
            "joined: metaspace never": bpe(pt.Metaspace(prepend_scheme="never"), False),
            "joined: byte-level": bpe(pt.ByteLevel(add_prefix_space=False), True)}


@pytest.fixture(scope="module")
def joined():
    return _joined_kinds()


@pytest.mark.parametrize("kind, lead, char", [("joined: no pre-tokenizer", "a", " "),
                                              ("joined: byte-level, no pattern", "a", " "),
                                              ("joined: metaspace never", "a", "\t"),
                                              ("joined: byte-level", "\t", " ")])
def test_a_run_joined_to_the_text_before_it_is_cut_only_where_that_text_cannot_change_its_ids(
        joined, kind, lead, char, monkeypatch):
    """A run of one whitespace character in one piece with what is before it: 9 or 11 a's (or tabs) before it
    pair the run otherwise than 8 or 10, which look the same in the 8 bytes its period's check saw (cut: other
    ids). Cut only where that piece starts where no text before it moves it; the library's ids of the whole."""
    tok = joined[kind]
    whole = tokenizers.Tokenizer.from_str(tok.tokenizer_json)
    monkeypatch.setattr(hf_module, "LONG_RUN", 16)
    for m in range(1, 20):
        for n in (100, 101):
            text = "x " + lead * m + char * n + "x"
            assert tok.encode(text) == whole.encode(text, add_special_tokens=False).ids, (kind, m, n)


@pytest.mark.parametrize("kind, lead", [("joined: metaspace never", "a"), ("joined: byte-level", "\t")])
def test_blank_lines_joined_to_the_text_before_them_are_cut_only_where_that_text_cannot_change_their_ids(
        joined, kind, lead, tmp_path):
    """Blank lines after a word (Metaspace, which joins a newline to it) or after tabs (GPT-2's pattern: one
    piece of whitespace), of each count 8-11: uncut, the whole text's ids; the blank lines after " y", whose
    piece starts at its space (Metaspace) or after it, are cut at their period."""
    tok, path = joined[kind], tmp_path / "t.txt"
    for m in (8, 9, 10, 11):
        text = "x " + lead * m + "\n" * 3000 + " y" + "\n" * 3000 + " y\n"
        path.write_bytes(text.encode())
        blocks = split_blocks(path, 64, safe=tok.block_boundary)
        data = path.read_bytes()
        assert np.concatenate([tok.encode_array(data[a:b].decode()) for a, b in blocks]).tolist() == \
            tok.encode(text), (kind, m)
        assert len(blocks) > 3000 // 100, len(blocks)


@pytest.mark.parametrize("kind", [k if k in ("train-tokenizer", "metaspace", "joined: byte-level")
                                  else pytest.param(k, marks=SLOW)
                                  for k in ALL_KINDS + ["byte-level, <tok>", "byte-level, <tok> rstrip",
                                                        "joined: no pre-tokenizer", "joined: byte-level, no pattern",
                                                        "joined: metaspace never", "joined: byte-level"]])
def test_long_runs_of_one_whitespace_character_encoded_in_parts_keep_the_ids(made, with_added, joined, kind,
                                                                             monkeypatch):
    """A run of one whitespace character inside a text, 2 * LONG_RUN or more, is encoded in parts cut at
    its probed period (HFTokenizer._run_cuts): the ids of the library's encode of the whole text, for runs
    of each character between random text, LONG_RUN drawn small (every cut point a different count of
    units from the run's start, and from its end)."""
    tok = {**made, **with_added}[kind][0] if kind in made or kind in with_added else joined[kind]
    whole = tokenizers.Tokenizer.from_str(tok.tokenizer_json)
    rng, cut = random.Random(kind), 0
    # (and a's or tabs before a run, more than the 8 bytes a check of its period saw, and the 64 characters
    # _run_cuts sees)
    around = AROUND + ["<tok>", "<tok>\t", "\t<tok>", "a" * 9, "a" * 11, "\t" * 9, "a" * 70, "\t" * 71]
    for i in range(160):
        monkeypatch.setattr(hf_module, "LONG_RUN", rng.randint(16, 80))
        char = RUN_CHARS[i % len(RUN_CHARS)]
        before = "".join(rng.choice(around) for _ in range(rng.randint(0, 3)))
        after = "".join(rng.choice(around) for _ in range(rng.randint(0, 3)))
        text = before + char * rng.randint(1, 1500) + after
        assert tok.encode(text) == whole.encode(text, add_special_tokens=False).ids, (kind, before, char, after)
        cut += len(tok._run_cuts(text))
    # (metaspace: some characters have no period; rstrip: no cut; no pre-tokenizer: none but where _run_cuts sees
    # all the text before the run)
    assert cut == 0 if "rstrip" in kind else \
        cut > (200 if "metaspace" in kind else 500 if "no pre-tokenizer" in kind else 1000), cut


class _Encodes:
    """A tokenizers.Tokenizer that records the length of each text it encodes (its other attributes its own)."""

    def __init__(self, real, lengths: list[int]):
        object.__setattr__(self, "_real", real)
        object.__setattr__(self, "lengths", lengths)

    def __getattr__(self, name):
        return getattr(self._real, name)

    def __setattr__(self, name, value):
        setattr(self._real, name, value)

    def encode(self, text, *args, **kwargs):
        self.lengths.append(len(text))
        return self._real.encode(text, *args, **kwargs)


def test_prepare_dataset_encodes_a_long_run_of_spaces_inside_a_line_in_parts(made, tmp_path, monkeypatch):
    """A line with a run of spaces (tabs, U+3000) between words, --no_filter: one block, which the
    library encoded at once however long (4 MiB of spaces: +598 MiB peak). Each encode holds a few
    LONG_RUN characters at most, and the dataset's ids are the library's for the whole text."""
    tok, _ = made["train-tokenizer"]
    (tmp_path / "tok.json").write_text(tok.tokenizer_json)
    monkeypatch.setattr(hf_module, "LONG_RUN", 1000, raising=False)  # (a module without it: no cuts)
    lengths: list[int] = []
    real = hf_module._for_mypt
    monkeypatch.setattr(hf_module, "_for_mypt", lambda *args: _Encodes(real(*args), lengths))
    text = "A line with runs:" + " " * 20_000 + "then tabs" + "\t" * 9_000 + "and U+3000" + "\u3000" * 7_000 + \
        "inside it.\nNext line.\n"
    (tmp_path / "in.txt").write_bytes(text.encode())
    result = CliRunner().invoke(main, ["prepare-dataset", "--input_files", str(tmp_path / "in.txt"), "--out_dir",
                                       str(tmp_path / "ds"), "--val_fraction", "0", "--workers", "1", "--no_filter",
                                       "--tokenization", f"hf:{tmp_path / 'tok.json'}"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    whole = tokenizers.Tokenizer.from_str(tok.tokenizer_json).encode(text, add_special_tokens=False).ids
    assert read_tokens(tmp_path / "ds" / "train").tolist() == whole + [tok.eot_id]
    assert lengths and max(lengths) < 3 * 1000 + 100, max(lengths)


def _prepare(tmp_path, text: str, tok: HFTokenizer, *flags: str):
    """prepare-dataset of `text` as one .txt file with `tok` (no normalization, filter or dedup)."""
    (tmp_path / "tok.json").write_text(tok.tokenizer_json)
    (tmp_path / "in.txt").write_bytes(text.encode())
    result = CliRunner().invoke(main, ["prepare-dataset", "--input_files", str(tmp_path / "in.txt"), "--out_dir",
                                       str(tmp_path / "ds"), "--val_fraction", "0", "--workers", "1",
                                       "--no_normalize", "--no_filter", "--no_dedup", *flags, "--tokenization",
                                       f"hf:{tmp_path / 'tok.json'}"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


@pytest.mark.parametrize("kind", ["metaspace", "unigram, metaspace first"])
def test_prepare_dataset_cuts_a_txt_source_before_spaces_with_a_metaspace_tokenizer(made, kind, tmp_path,
                                                                                   monkeypatch):
    """A SentencePiece-style tokenizer (Metaspace: a newline is part of the words beside it) encoded each
    .txt file whole, one block however big (memory of its size, ~200 bytes a byte): cut just before the
    first space after a newline, where Metaspace splits, with the whole text's ids."""
    tok, _ = made[kind]
    rng = random.Random(6)
    text = paragraphs(rng, 100) + cjk_lines(rng, 50) + indented_lines(rng, 100) + "\n\n\n" * 300 + paragraphs(rng, 50)
    counts = counted_blocks(monkeypatch, 512)
    result = _prepare(tmp_path, text, tok)
    assert read_tokens(tmp_path / "ds" / "train").tolist() == tok.encode(text) + [tok.eot_id]
    assert counts and counts[0] > len(text.encode()) // 1024, counts
    assert "encoded whole" not in result.output


def test_a_txt_source_no_cut_keeps_the_ids_of_is_said_with_its_size(made, tmp_path, monkeypatch):
    """A Metaspace that splits nowhere (split false: the text is one word) has no safe cut: each .txt
    file is one block, said before it is encoded, in one line naming the file and its size."""
    tok, _ = made["metaspace, split false"]
    text = paragraphs(random.Random(7), 100)
    counts = counted_blocks(monkeypatch, 512)
    result = _prepare(tmp_path, text, tok)
    assert read_tokens(tmp_path / "ds" / "train").tolist() == tok.encode(text) + [tok.eot_id]
    assert counts == [1], counts
    said = [line for line in result.output.splitlines() if "encoded whole" in line]
    assert len(said) == 1 and "in.txt" in said[0] and f"({len(text.encode()) / 2**20:,.1f} MiB)" in said[0], said


def _long_line(rng: random.Random, n: int) -> str:
    """About `n` characters of base64, words, code, CJK, digits, runs of letters, some lines."""
    kinds = [lambda: "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")
                             for _ in range(rng.randint(1, 60))),
             lambda: " ".join(rng.choice(["word", "the", "it's", "x1", "foo()", "a.b", "中文", "'ll", "——", "\n",
                                          ".\n\n", " \n", "\n    "])
                              for _ in range(rng.randint(1, 20))),
             lambda: rng.choice(AROUND) * rng.randint(1, 5), lambda: "x" * rng.randint(1, 200),
             lambda: rng.choice(["<tok>", "<tok>  ", "a<tok>b", "<mask>", "<|endoftext|>", "ab12", "xab12ab123",
                                 "<tool_call>", "</tool_call>1", "a_<tool_call>_b"]),
             lambda: str(rng.randint(0, 10 ** 12))]
    parts = []
    while sum(map(len, parts)) < n:
        parts.append(rng.choice(kinds)())
    return "".join(parts)


@pytest.mark.parametrize("kind", [k if k in ("train-tokenizer", "metaspace", "byte-level, ab12 and <tool_call>")
                                  else pytest.param(k, marks=SLOW)
                                  for k in ALL_KINDS + ["llama3 pattern, <tok>", "byte-level, <tok>",
                                                        "byte-level, <tok> rstrip",
                                                        "byte-level, ab12 and <tool_call>"]])
def test_long_lines_encoded_in_parts_at_piece_boundaries_keep_the_ids(made, with_added, kind, monkeypatch):
    """A long stretch that no run cut shortens (a line of a few MB: base64, minified code; a block) is encoded
    in parts cut where the pre-tokenizer splits (HFTokenizer._piece_cuts): the ids of the library's encode of
    the whole text, LONG_RUN and PIECE_SEARCH drawn small (cuts everywhere a boundary may be)."""
    tok, _ = {**made, **with_added}[kind]
    whole = tokenizers.Tokenizer.from_str(tok.tokenizer_json)
    whole.encode_special_tokens = True
    rng, cut = random.Random(kind), 0
    for _ in range(40):
        monkeypatch.setattr(hf_module, "LONG_RUN", rng.randint(80, 300))
        monkeypatch.setattr(hf_module, "PIECE_SEARCH", rng.randint(1, 64))
        text = _long_line(rng, rng.randint(500, 3000))
        assert tok.encode(text) == whole.encode(text, add_special_tokens=False).ids, (kind, text)
        cut += len(tok._piece_cuts(text, 0, len(text)))
    assert cut == 0 if "split false" in kind else cut > 100, cut  # (split false: no cut rule, no cut)


def test_prepare_dataset_encodes_a_long_base64_line_in_parts(made, tmp_path, monkeypatch):
    """A line of a few MB without whitespace (base64) under --no_filter was one encode (4 MiB: 1,170 MiB peak
    with hf): parts of a few LONG_RUN characters at most, the whole text's ids."""
    tok, _ = made["train-tokenizer"]
    monkeypatch.setattr(hf_module, "LONG_RUN", 1000, raising=False)  # (a module without it: no cuts)
    lengths: list[int] = []
    real = hf_module._for_mypt
    monkeypatch.setattr(hf_module, "_for_mypt", lambda *args: _Encodes(real(*args), lengths))
    rng = random.Random(8)
    text = "Before it.\n" + "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
                                    for _ in range(30_000)) + "\nAfter it.\n"
    _prepare(tmp_path, text, tok)
    whole = tokenizers.Tokenizer.from_str(tok.tokenizer_json).encode(text, add_special_tokens=False).ids
    assert read_tokens(tmp_path / "ds" / "train").tolist() == whole + [tok.eot_id]
    assert lengths and max(lengths) < 3 * 1000 + 4096, max(lengths)
