import os
import random
import re
import unicodedata
from collections import Counter
from pathlib import Path

import pytest

from mypt.errors import InputError
from mypt.readers import resolve_inputs
from mypt.normalize import LineFilter, clean_lines, normalize
from mypt.steps.dedup import dedup_key, dedup_keys


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


# Pieces of lines that make the block-level passes take every branch: non-ASCII letters only,
# digits and punctuation only, whitespace of every kind, case folds that change length.
PIECES = ["The", "king", "STRASSE", "\u00df", "\u0130", "caf\u00e9", "\u4e2d\u6587", "\u03a3\u03c3",
          "12", "--", "!?", "_", " ", "  ", "\t", "\r", "\x0b", "\x0c", "\x1c", "\x85", "\u00a0", "\u2028",
          "\u3000", "\ud800", ""]


def random_block(rng: random.Random, n_lines: int, pieces: list[str] = PIECES) -> str:
    return "\n".join("".join(rng.choice(pieces) for _ in range(rng.randint(0, 6))) for _ in range(n_lines))


def reference_normalize(text: str) -> str:
    """normalize as one regular expression a rule (its first version)."""
    text = unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\r", "\n"))
    text = re.sub("[\x00-\x08\x0b-\x1f\x7f-\x9f\ufeff]", "", text)
    return re.sub(r"[^\S\n]+$", "", text, flags=re.MULTILINE)


@pytest.mark.parametrize("seed", range(20))
def test_normalize_equals_its_reference(seed):
    rng = random.Random(seed)
    ascii_pieces = [p for p in PIECES if p.isascii()] + ["\x01", "\x7f", "\t\n", " \n", "\n"]
    for pieces in (PIECES, ascii_pieces, ["a", "b c", "\n", " "], ["word", " ", "\n"]):
        text = random_block(rng, rng.choice([1, 5, 200]), pieces)
        assert normalize(text) == reference_normalize(text)


@pytest.mark.parametrize("seed", range(20))
def test_block_level_filter_and_keys_equal_the_per_line_rules(seed):
    # clean_lines and dedup_keys work over whole blocks; they must give what the rule of
    # each line gives (LineFilter.reason, casefold + split + join).
    rng = random.Random(seed)
    text = random_block(rng, rng.choice([1, 5, 200]))
    line_filter = LineFilter(max_line_chars=rng.choice([3, 10, 100]))
    for normalize_text in (False, True):
        drops, expected_drops = Counter(), Counter()
        lines = clean_lines(text, normalize_text, line_filter, drops)
        base = normalize(text) if normalize_text else text
        expected = []
        for line in base.removesuffix("\n").split("\n") if base else []:  # (no text: no line, not one blank)
            why = line_filter.reason(line)
            if why:
                expected_drops[why] += 1
            else:
                expected.append(line)
        assert lines == expected and drops == expected_drops
    lines = text.split("\n")
    assert dedup_keys(lines) == [" ".join(line.casefold().split()) for line in lines]
    regular = ["the king is dead", "long live the king", "x"]
    assert dedup_keys(regular) == regular and dedup_keys([]) == []


def test_a_text_that_normalizes_to_nothing_has_no_line():
    # A file's last line without its end, spaces or DOS's \x1a end mark, alone in a block or a
    # piece: no line, where a blank line was added. A newline alone is one blank line.
    for normalize_text in (False, True):
        assert clean_lines("", normalize_text, None, Counter()) == []
        assert clean_lines("\n", normalize_text, LineFilter(10), Counter()) == [""]
    assert clean_lines(" \x1a", True, LineFilter(10), Counter()) == []


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


def test_a_file_named_twice_is_read_once_however_it_is_spelled(tmp_path, monkeypatch):
    """Overlapping globs, another spelling of the path, a link to the file: one input (with
    --no_dedup, reading it twice doubled its text in the dataset)."""
    import json

    from click.testing import CliRunner

    from mypt.cli import main

    monkeypatch.chdir(tmp_path)
    Path("c.txt").write_text("".join(f"Line {i} of the text.\n" for i in range(400)))
    os.symlink("c.txt", "link.txt")
    totals = []
    for out, inputs in (("one", ["c.txt"]), ("many", ["c.txt", str(tmp_path / "c.txt"), "./c.txt", "link.txt", "*.txt"])):
        r = CliRunner().invoke(main, ["prepare-dataset", "--input_files", *inputs, "--out_dir", out,
                                      "--tokenization", "char", "--workers", "1", "--no_dedup"])
        assert r.exit_code == 0, r.output
        meta = json.loads(Path(out, "dataset_metadata.json").read_text())
        totals.append((meta["total_tokens"], len(meta["sources"])))
    assert totals[0] == totals[1] and totals[0][1] == 1
    # the spelling kept does not depend on the order of the patterns (nor on glob's listing)
    assert resolve_inputs(["link.txt", "c.txt"]) == resolve_inputs(["c.txt", "link.txt"]) == [Path("c.txt")]


def test_an_existing_path_with_glob_characters_is_that_file_not_a_glob(tmp_path, monkeypatch):
    """`data[1].txt` is the file of that name (not data1.txt), `report[final].txt` exists (not
    "the glob matches nothing"), `what?.txt` is one file (not whatx.txt too); a glob is a glob
    only when no such path exists."""
    monkeypatch.chdir(tmp_path)
    for name in ("data[1].txt", "data1.txt", "report[final].txt", "what?.txt", "whatx.txt"):
        Path(name).write_text(name)
    for name in ("data[1].txt", "report[final].txt", "what?.txt"):
        assert resolve_inputs([name]) == [Path(name)]
    Path("what?.txt").unlink()
    assert resolve_inputs(["what?.txt"]) == [Path("whatx.txt")]
    (tmp_path / "dir[1]").mkdir()
    (tmp_path / "dir[1]" / "a.txt").write_text("a")
    assert resolve_inputs(["dir[1]"]) == [Path("dir[1]/a.txt")]
    (tmp_path / "dir1").mkdir()
    (tmp_path / "dir1" / "b.txt").write_text("b")
    assert resolve_inputs(["dir[1]/*.txt"]) == [Path("dir[1]/a.txt")]  # the folder as named, the glob after it
    assert resolve_inputs([str(tmp_path / "dir[1]" / "*.txt")]) == [tmp_path / "dir[1]" / "a.txt"]
    assert resolve_inputs(["dir[12]/*.txt"]) == [Path("dir1/b.txt")]  # no folder of that name: a glob


def test_a_folder_and_its_subfolders_named_together_read_every_file_once(tmp_path, monkeypatch):
    """`corpus/**/` names corpus/ and each folder under it: each is walked alone (the outer walk
    leaves them to their own), so corpus/ holding no text of its own is no error; a hidden file
    named beside its folder is read, not also counted as passed over."""
    from mypt.readers import WalkSkipped

    monkeypatch.chdir(tmp_path)
    Path("corpus/2020/01").mkdir(parents=True)
    Path("corpus/2020/01/a.txt").write_text("a")
    Path("corpus/2020/notes.md").write_text("n")
    Path("corpus/.n.txt").write_text("n")
    for patterns in (["corpus/**/"], ["corpus", "corpus/2020"], ["corpus/2020", "corpus"]):
        walk = WalkSkipped()
        assert resolve_inputs(patterns, walk) == [Path("corpus/2020/01/a.txt")], patterns
        assert (walk.hidden.count, walk.other.count, walk.other.first) == (1, 1, ["corpus/2020/notes.md"]), patterns
    walk = WalkSkipped()
    assert resolve_inputs(["corpus", "corpus/.n.txt"], walk) == [Path("corpus/.n.txt"), Path("corpus/2020/01/a.txt")]
    assert (walk.hidden.count, walk.other.count) == (0, 1)
    with pytest.raises(InputError, match="the directory 'corpus/2020/01' holds no text files"):
        Path("corpus/2020/01/a.txt").unlink()
        resolve_inputs(["corpus", "corpus/2020/01"])
