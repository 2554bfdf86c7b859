from __future__ import annotations

import io
import json
import tarfile

import pytest
from click.testing import CliRunner

from mypt.cli import main
from mypt.errors import TokenizerError
from mypt.tokenizers import Tokenizer
from mypt.tokenizers.char import CharTokenizer
from mypt.tokenizers.gpt2 import GPT2Tokenizer, r50k_cache_path


def test_gpt2_and_char_round_trip_through_state(tmp_path):
    text = "Hello, world! <|endoftext|> caf\u00e9\n"
    for tok in (GPT2Tokenizer(), CharTokenizer(chars=sorted(set(text))), Tokenizer(None, "gpt2")):
        d = tmp_path / tok.kind
        d.mkdir(exist_ok=True)
        tok.save(d)
        state = json.loads((d / "tokenizer_state.json").read_text())
        assert state["format_version"] == 1 and state["kind"] == tok.kind
        loaded = Tokenizer.load(d)
        assert loaded.encode(text) == tok.encode(text) and loaded.decode(tok.encode(text)) == text
        assert (loaded.vocab_size, loaded.eot_id) == ((50257, 50256) if tok.kind == "gpt2" else (len(set(text)), None))
    assert 50256 not in GPT2Tokenizer().encode(text)  # the literal is ordinary text


def test_char_errors(tmp_path):
    with pytest.raises(TokenizerError, match="outside the char vocabulary"):
        CharTokenizer(chars="abc").encode("abd")
    with pytest.raises(TokenizerError, match="unknown tokenization 'bpe'"):
        Tokenizer(None, "bpe")
    with pytest.raises(TokenizerError, match="no tokenizer_state.json"):
        Tokenizer.load(tmp_path)


def fake_sdist(path, payload: bytes):
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("openai_whisper-20250625/whisper/assets/gpt2.tiktoken")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))


def test_install_gpt2_vocab_checks_sha256(tmp_path, monkeypatch):
    vocab = r50k_cache_path().read_bytes()
    monkeypatch.setenv("MYPT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("TIKTOKEN_CACHE_DIR")
    fake_sdist(tmp_path / "bad.tar.gz", vocab[:-10] + b"tampered!\n")
    result = CliRunner().invoke(main, ["install-gpt2-vocab", "--sdist", str(tmp_path / "bad.tar.gz")])
    assert result.exit_code == 1 and "refusing to install" in result.output
    assert not r50k_cache_path().exists()

    fake_sdist(tmp_path / "good.tar.gz", vocab)
    result = CliRunner().invoke(main, ["install-gpt2-vocab", "--sdist", str(tmp_path / "good.tar.gz")])
    assert result.exit_code == 0 and "installed" in result.output
    assert r50k_cache_path().read_bytes() == vocab and str(tmp_path / "cache") in str(r50k_cache_path())
    assert "already installed" in CliRunner().invoke(main, ["install-gpt2-vocab"]).output


def test_help_texts_come_from_the_registry():
    from mypt.tokenizers import spec_help

    assert spec_help(described=False) == "gpt2, char or hf:PATH"
    assert spec_help().startswith("gpt2 (tiktoken r50k_base, end-of-text after every document), char (")


def test_damaged_state_file_names_it(tmp_path):
    (tmp_path / "tokenizer_state.json").write_text("[1]")
    with pytest.raises(TokenizerError, match="tokenizer_state.json: expected a JSON object, got list"):
        Tokenizer.load(tmp_path)
    (tmp_path / "tokenizer_state.json").write_text("{")
    with pytest.raises(TokenizerError, match="tokenizer_state.json: not valid JSON"):
        Tokenizer.load(tmp_path)
