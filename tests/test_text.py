from collections import Counter

import pytest

from mypt.errors import InputError
from mypt.readers import resolve_inputs
from mypt.text import LineFilter, clean_lines, dedup_key, normalize


def test_normalize_nfc_newlines_controls_trailing_space():
    decomposed = "Cafe\u0301"  # e + combining acute
    text = f"\ufeff{decomposed}  \r\nline\x00two\t \rthird\x1b[0m\n"
    assert normalize(text) == "Caf\u00e9\nlinetwo\nthird[0m\n"


def test_normalize_is_not_nfkc():
    # NFKC would turn the ligature into "fi" and the superscript into "2".
    assert normalize("\ufb01 x\u00b2") == "\ufb01 x\u00b2"


def test_line_filter_reasons_and_blank_lines_kept():
    drops = Counter()
    lines = clean_lines("Hello\n-----\n12 34\n\n" + "x" * 50 + "\nok\n", True, LineFilter(max_line_chars=40), drops)
    assert lines == ["Hello", "", "ok"]
    assert drops == {"no_letters": 2, "too_long": 1}


def test_dedup_key_folds_case_and_whitespace():
    assert dedup_key("  The   KING\tis dead ") == dedup_key("the king is dead") == "the king is dead"


def test_resolve_inputs_sorted_dirs_globs(tmp_path):
    (tmp_path / "b.txt").write_text("b")
    (tmp_path / "a.jsonl").write_text("{}")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.txt.gz").write_bytes(b"")
    (tmp_path / "sub" / "notes.md").write_text("not text input")
    found = resolve_inputs([str(tmp_path), str(tmp_path / "*.txt")])
    assert [p.name for p in found] == ["a.jsonl", "b.txt", "c.txt.gz"]


@pytest.mark.parametrize("make, message", [
    (lambda d: str(d / "missing.txt"), "does not exist"),
    (lambda d: str(d / "nothing*.txt"), "matches nothing"),
    (lambda d: (d / "empty").mkdir() or str(d / "empty"), "holds no text files"),
])
def test_resolve_inputs_errors_name_the_flag(tmp_path, make, message):
    with pytest.raises(InputError, match=message) as e:
        resolve_inputs([make(tmp_path)])
    assert "--input_files" in str(e.value)
