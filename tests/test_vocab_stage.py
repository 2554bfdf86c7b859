"""The vocab stage (steps.vocab.vocab): its --out_dir is checked before the corpus is read,
as every step's output is (a char vocabulary is a pass over the whole corpus)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from test_dvc_params import stage_main


def test_a_refused_out_dir_is_named_before_the_corpus_is_read(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("not_a_step_output").mkdir()  # (read, it would be refused: no manifest.json)
    Path("model").mkdir()
    Path("model/config.json").write_text(json.dumps({"model_type": "gpt2"}))
    result = CliRunner().invoke(stage_main("stages/vocab.py"), ["--in_dir", "not_a_step_output", "--out_dir",
                                                                 "model", "--tokenization", "char"])
    assert result.exit_code == 1 and result.output.startswith("Error: --out_dir model already holds files that are "
                                                              "not a vocab"), result.output
    assert sorted(p.name for p in Path("model").iterdir()) == ["config.json"]


def test_the_vocab_stage_writes_the_corpus_char_table(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("corpus").mkdir()
    Path("corpus/a.txt").write_text("abc cab\n")
    clean = CliRunner().invoke(stage_main("stages/clean.py"), ["--input_files", "corpus", "--out_dir", "clean",
                                                               "--stats", "s.json"])
    assert clean.exit_code == 0, clean.output
    result = CliRunner().invoke(stage_main("stages/vocab.py"), ["--in_dir", "clean", "--out_dir", "vocab",
                                                                 "--tokenization", "char"])
    assert result.exit_code == 0 and result.output.startswith("vocab: "), result.output
    assert sorted(p.name for p in Path("vocab").iterdir()) == ["tokenizer_state.json"]
    from mypt.tokenizers import Tokenizer

    assert Tokenizer.load(Path("vocab")).decode(Tokenizer.load(Path("vocab")).encode("cab ")) == "cab "
