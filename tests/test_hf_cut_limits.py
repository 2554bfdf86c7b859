"""Where an hf tokenizer's text is cut into parts encoded apart (HFTokenizer._piece_cuts inside a long line,
_run_cuts inside a long run of one whitespace character, cut_rule's blocks), the parts' ids joined must be
the library's ids of the whole text. Each case here is a tokenizer that an earlier cut rule got wrong: an
ordinary added token matched in the normalized text, and pre-tokenizers whose pieces reach further than
the characters a cut's check looks at."""

from __future__ import annotations

import pytest

import mypt.tokenizers.hf as hf_module
from mypt.text import split_blocks
from mypt.tokenizers.hf import HFTokenizer

tokenizers = pytest.importorskip("tokenizers")
pt = tokenizers.pre_tokenizers

LONG = 300  # (LONG_RUN in these tests: cuts about every 300 characters)


def byte_level(merges=(), pre_tokenizer=None, normalizer=None, added=()) -> tuple[HFTokenizer, object]:
    """(mypt's tokenizer, the library's, set as mypt encodes) of a byte-level BPE with `merges`, an
    end-of-text token and the ordinary added tokens `added` (add_tokens: matched after the normalizer)."""
    alphabet = sorted(pt.ByteLevel.alphabet())
    vocab = {c: i for i, c in enumerate(alphabet)} | {a + b: len(alphabet) + i for i, (a, b) in enumerate(merges)}
    hf = tokenizers.Tokenizer(tokenizers.models.BPE(vocab=vocab, merges=list(merges)))
    hf.pre_tokenizer = pre_tokenizer or pt.ByteLevel(add_prefix_space=False)
    hf.decoder = tokenizers.decoders.ByteLevel()
    if normalizer is not None:
        hf.normalizer = normalizer
    hf.add_special_tokens(["<|endoftext|>"])
    hf.add_tokens(list(added))
    whole = tokenizers.Tokenizer.from_str(hf.to_str())
    whole.encode_special_tokens = True
    return HFTokenizer(tokenizer_json=hf.to_str()), whole


@pytest.mark.parametrize("normalizer, written", [
    (tokenizers.normalizers.Lowercase(), "<TOK>"), (tokenizers.normalizers.Lowercase(), "<Tok>"),
    (tokenizers.normalizers.NFKC(), "＜tok＞"), (tokenizers.normalizers.StripAccents(), "<to" + "\u0301" * 100 + "k>")],
    ids=["Lowercase <TOK>", "Lowercase <Tok>", "NFKC", "StripAccents, 100 marks"])
def test_no_cut_where_an_added_token_is_matched_after_the_normalizer(normalizer, written, monkeypatch):
    """An ordinary added token (add_tokens: normalized) is matched in the normalized text: Lowercase
    makes '<TOK>' the token '<tok>', NFKC '＜tok＞', StripAccents drops the marks inside '<to\u0301...k>',
    more of them than a cut's check looks at. A piece cut inside such a token (where letters meet '>', or
    marks) or a run cut beside it gave other ids than the whole text's."""
    monkeypatch.setattr(hf_module, "LONG_RUN", LONG)
    tok, whole = byte_level(normalizer=normalizer, added=["<tok>"])
    line = "ab" * (LONG // 2 - 1) + "q" + written + "zz" + "ab" * (LONG // 2 + 100)
    runs = "x" + written + " " * (2 * LONG + 11) + "y" + " " * (2 * LONG + 11) + written + "y\n"
    for text in (line, runs, (line + " ") * 3, "<tok>" + line):
        assert tok.encode(text) == whole.encode(text, add_special_tokens=False).ids, text
    other = line.replace(written, "<tik>")  # (no token there: cut as before)
    assert tok._piece_cuts(other, 0, len(other)) and tok.encode(other) == whole.encode(other).ids


def _split(pattern: str) -> object:
    """A Split of `pattern` before a byte-level mapping without GPT-2's pattern (the Split's pieces are the
    pieces)."""
    return pt.Sequence([pt.Split(tokenizers.Regex(pattern), behavior="isolated"),
                        pt.ByteLevel(add_prefix_space=False, use_regex=False)])


def test_no_cut_with_a_split_pattern_whose_pieces_reach_further_than_a_cut_looks(tmp_path, monkeypatch):
    """A Split regex of a code tokenizer keeps a string literal, or a comment across lines, one piece of
    any length: a piece cut inside a 202-character literal (the 64 characters before it show none), a block
    cut at a newline inside a comment (the 8 bytes before it show none), and a run cut that looked at one
    character after the run (' +(?=ab)' joins the spaces before 'ab') gave other ids than the whole text's.
    Such a pattern's text is encoded whole; the known patterns (GPT-2's, Llama 3's, ...) keep their cuts."""
    monkeypatch.setattr(hf_module, "LONG_RUN", LONG)
    literal, _ = byte_level([("a", "1")], _split(r'"[^"\n]*"|\p{L}+|\p{N}+|[^\s\p{L}\p{N}]+|\s+'))
    comment, _ = byte_level([("Ċ", "b")], _split(r"/\*[\s\S]*?\*/|\p{L}+|\p{N}+|[^\s\p{L}\p{N}]+|\s+"))
    ahead, _ = byte_level([("Ġ", "Ġ")], _split(r" +(?=ab)|\s|\S+"))
    lines = "int x;\n" * 20 + "/* note\n" + "b a\n" * 200 + "*/\n" + "y = 1;\n" * 20
    cases = [(literal, "k9+" * (LONG // 3 - 40) + 'x = "' + "a1" * 100 + '";' + "k9+" * (LONG // 3 + 100)),
             (comment, lines), (ahead, "x" + " " * (2 * LONG + 11) + "ab\n")]
    for tok, text in cases:
        whole = tokenizers.Tokenizer.from_str(tok.tokenizer_json)
        assert tok.encode(text) == whole.encode(text).ids
        (tmp_path / "in.txt").write_text(text, encoding="utf-8")
        data = text.encode()
        blocks = split_blocks(tmp_path / "in.txt", 256, safe=tok.block_boundary)
        assert [i for a, b in blocks for i in whole.encode(data[a:b].decode()).ids] == whole.encode(text).ids
    known, _ = byte_level([("a", "1")], _split(r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+"
                                               r"|\s+(?!\S)|\s+"))  # (GPT-2's pattern)
    for tok, text in [(known, cases[0][1]), (known, "x" + " " * (2 * LONG + 11) + "y\n")]:
        assert tok._piece_cuts(text, 0, len(text)) or tok._run_cuts(text)
        assert tok.encode(text) == tokenizers.Tokenizer.from_str(tok.tokenizer_json).encode(text).ids
    (tmp_path / "in.txt").write_text(lines, encoding="utf-8")
    assert len(split_blocks(tmp_path / "in.txt", 256, safe=known.block_boundary)) > 1


def test_pre_tokenizers_that_remember_text_far_back_are_not_cut():
    """FixedLength counts its pieces from the text's start, and UnicodeScripts joins one script's letters
    across a run of spaces of any length: no cut rule (a block's check sees a few bytes). UnicodeScripts
    after WhitespaceSplit or ByteLevel, which leave no space in its pieces, keeps its cuts."""
    def rule(*members):
        tok, _ = byte_level(pre_tokenizer=pt.Sequence(list(members)))
        return tok.cut_rule()

    assert rule(pt.FixedLength(4)) is None and rule(pt.UnicodeScripts()) is None
    assert rule(pt.WhitespaceSplit(), pt.UnicodeScripts()) is not None
    assert rule(pt.ByteLevel(add_prefix_space=False), pt.UnicodeScripts()) is not None
