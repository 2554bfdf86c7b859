"""Reading the corpus: what prepare-dataset and train-tokenizer accept and refuse, through the
`mypt` CLI. The one-line refusals are in tests/test_bad_inputs_inputs.py; here the cases that
need more than a message: a file truncated or grown while it is read, a JSONL file with a
byte-order mark, both commands giving the same refusal, and /dev/stdin fed by a pipe."""

from __future__ import annotations

import errno
import gzip
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import read_tokens
from denied import deny, deny_file

import mypt.readers
import mypt.readers.jsonl
import mypt.readers.txt
from mypt.cli import main
from mypt.tokenizers import Tokenizer

CHAR = ["--tokenization", "char", "--val_fraction", "0", "--workers", "1"]


def invoke(*args) -> object:
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=True)


def prepare(inp, out, *extra):
    return invoke("prepare-dataset", "--input_files", inp, "--out_dir", out, *CHAR, *extra)


def error_line(result) -> str:
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


def change_after_first_text(monkeypatch, reader_cls, change) -> None:
    """`change(path)` runs once, after the reader's first text of the file is read."""
    real = reader_cls.texts

    def texts(self, *args, **kwargs):
        for i, text in enumerate(real(self, *args, **kwargs)):
            if i == 0:
                change(self.path)
            yield text
    monkeypatch.setattr(reader_cls, "texts", texts)


def truncate(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def grow(path: Path) -> None:
    with open(path, "ab") as f:
        f.write(b'{"text": "one more document, written while mypt read the file"}\n')


@pytest.mark.parametrize("name, reader_cls, change, words", [
    ("a.txt", mypt.readers.txt.TxtReader, truncate, "changed (3,120 bytes when the run started, 1,560 now)"),
    ("a.jsonl", mypt.readers.jsonl.JsonlReader, grow, "changed ("),
])
def test_an_input_that_changes_while_read_is_an_error_naming_it(tmp_path, monkeypatch, name, reader_cls, change,
                                                               words):
    """A short (or long) dataset whose metadata records the file's old size is worse than
    no dataset: the file is named, and nothing is written."""
    monkeypatch.chdir(tmp_path)
    text = "".join(f"Line {i:03d} of a corpus that is read while it changes.\n" for i in range(60))  # 3,120 bytes
    Path(name).write_text(text if name.endswith(".txt") else
                          "".join(json.dumps({"text": line}) + "\n" for line in text.splitlines()))
    change_after_first_text(monkeypatch, reader_cls, change)
    line = error_line(prepare(name, "ds"))
    assert name in line and words in line and "while mypt read it" in line, line
    assert not Path("ds").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # no work directory left either


def test_train_tokenizer_refuses_an_input_truncated_while_read(tmp_path, monkeypatch):
    pytest.importorskip("tokenizers")
    monkeypatch.chdir(tmp_path)
    Path("a.txt").write_text("the king and the queen\n" * 200)
    change_after_first_text(monkeypatch, mypt.readers.txt.TxtReader, truncate)
    line = error_line(invoke("train-tokenizer", "--input_files", "a.txt", "--out", "tok.json", "--vocab_size", "300"))
    assert "a.txt changed (4,600 bytes when the run started, 2,300 now)" in line, line
    assert not Path("tok.json").exists()


def test_an_unchanged_corpus_records_the_size_it_read(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("a.txt").write_text("The king spoke to the queen.\n" * 50)
    assert prepare("a.txt", "ds").exit_code == 0
    meta = json.loads(Path("ds/dataset_metadata.json").read_text())
    assert meta["sources"][0]["bytes"] == Path("a.txt").stat().st_size


@pytest.mark.parametrize("compress", [None, "gz"])
def test_jsonl_with_a_byte_order_mark_keeps_its_first_document(tmp_path, monkeypatch, compress):
    monkeypatch.chdir(tmp_path)
    data = b"\xef\xbb\xbf" + b"".join(json.dumps({"text": t}).encode() + b"\n"
                                      for t in ("The first document.", "The second one."))
    name = "bom.jsonl" + (".gz" if compress else "")
    Path(name).write_bytes(gzip.compress(data) if compress else data)
    result = prepare(name, "ds", "--strict")  # --strict: a lost first line would be an error
    assert result.exit_code == 0, result.output
    meta = json.loads(Path("ds/dataset_metadata.json").read_text())
    assert meta["sources"][0]["documents"] == 2
    assert meta["stats"]["clean"]["bad_json_lines"] == 0
    assert "\ufeff" not in json.dumps(meta["tokenizer"]) and "Bad JSONL" not in result.output


def test_a_bom_inside_a_jsonl_file_is_still_a_bad_line(tmp_path, monkeypatch):
    """Only the file's first bytes may be a byte-order mark: one elsewhere is not JSON."""
    monkeypatch.chdir(tmp_path)
    Path("a.jsonl").write_bytes(b'{"text": "The first document."}\n\xef\xbb\xbf{"text": "A second one."}\n')
    line = error_line(prepare("a.jsonl", "ds", "--strict"))
    assert "a.jsonl:2" in line and "not valid JSON" in line, line


def test_empty_inputs_are_named_and_no_filter_is_not_suggested(tmp_path, monkeypatch):
    zstandard = pytest.importorskip("zstandard")
    monkeypatch.chdir(tmp_path)
    Path("a.txt.gz").write_bytes(gzip.compress(b""))
    Path("b.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(b"\n\n"))
    line = error_line(prepare("a.txt.gz", "ds", "--input_files", "b.jsonl.zst"))
    assert "no text in a.txt.gz, b.jsonl.zst" in line and "no_filter" not in line, line


def test_filtered_inputs_suggest_no_filter_and_name_the_empty_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("digits.txt").write_text("123\n456\n")
    Path("empty.txt").write_text("")
    line = error_line(prepare("digits.txt", "ds", "--input_files", "empty.txt"))
    assert "dropped_no_letters" in line and "--no_filter" in line and "no text at all in empty.txt" in line, line


def test_an_empty_file_beside_text_is_no_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("a.txt").write_text("The king spoke to the queen.\n" * 50)
    Path("b.txt").write_text("")
    assert prepare("a.txt", "ds", "--input_files", "b.txt").exit_code == 0


def test_prepare_dataset_and_train_tokenizer_refuse_inputs_alike(tmp_path, monkeypatch):
    """One input rule for both commands: the same message for each input refused."""
    pytest.importorskip("tokenizers")
    monkeypatch.chdir(tmp_path)
    Path("empty.txt").write_text("")
    Path("blank.txt").write_text(" \n\t\n")
    Path("binary.txt").write_bytes(bytes(range(256)) * 8)
    Path("notes.doc").write_text("text in a format mypt does not read")
    os.mkfifo("pipe.txt")
    Path("corp").mkdir()
    for inp in ("empty.txt", "blank.txt", "binary.txt", "notes.doc", "pipe.txt", "/dev/zero", "corp", "*.none"):
        a = error_line(prepare(inp, "ds"))
        b = error_line(invoke("train-tokenizer", "--input_files", inp, "--out", "tok.json", "--vocab_size", "300"))
        assert a == b, (inp, a, b)
    assert sorted(os.listdir()) == ["binary.txt", "blank.txt", "corp", "empty.txt", "notes.doc", "pipe.txt"]


def test_dev_stdin_from_a_pipe_is_refused_naming_it(tmp_path):
    """`--input_files /dev/stdin` with text piped in: refused as a FIFO, not read as nothing."""
    done = subprocess.run([sys.executable, "-m", "mypt.cli", "prepare-dataset", "--input_files", "/dev/stdin",
                           "--out_dir", "ds", *CHAR], cwd=tmp_path, input="The king spoke.\n" * 10,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Error: --input_files: '/dev/stdin' is a FIFO (named pipe)" in done.stderr, done.stderr
    assert not (tmp_path / "ds").exists()


def test_each_txt_document_ends_with_a_newline_whatever_the_last_file(tmp_path, monkeypatch):
    """char (no end-of-text id): a newline ends each .txt document that lacks one, decided by
    that document's own file. It was decided by the last file's: an empty last file failed
    with 'cannot use a file: Invalid argument', and a first file without a final newline ran
    into the next document when the last file had one."""
    monkeypatch.chdir(tmp_path)
    Path("a.txt").write_text("The first document, no final newline")
    Path("b.txt").write_text("The second document.\n")
    Path("c.txt").write_text("")
    result = prepare("a.txt", "ds", "--input_files", "b.txt", "c.txt", "--no_normalize", "--no_filter", "--no_dedup")
    assert result.exit_code == 0, result.output
    text = Tokenizer.load(Path("ds")).decode(read_tokens(Path("ds/train")).tolist())
    assert text == "The first document, no final newline\nThe second document.\n"


def test_a_file_name_that_is_not_utf8_is_read_and_recorded_escaped(tmp_path, monkeypatch):
    """A name of bytes that are not UTF-8 (`caf\\xe9.txt`, Latin-1), given or found in a corpus
    directory, is read; the metadata (UTF-8) records it as `caf\\\\xe9.txt`, not a crash
    writing it."""
    monkeypatch.chdir(tmp_path)
    text = "".join(f"The queen wrote letter {i} to the king.\n" for i in range(100))
    latin1 = os.fsdecode(b"caf\xe9.txt")
    Path(latin1).write_text(text)
    Path("corpus").mkdir()
    Path("corpus", latin1).write_text(text)
    Path("plain.txt").write_text(text)
    for inp, out, name in ((latin1, "ds", "caf\\xe9.txt"), ("corpus", "walked", "corpus/caf\\xe9.txt")):
        result = prepare(inp, out)
        assert result.exit_code == 0, result.output + repr(result.exception)
        meta = json.loads(Path(out, "dataset_metadata.json").read_text(encoding="utf-8"))
        assert [s["name"] for s in meta["sources"]] == [name]
    assert prepare("plain.txt", "plain").exit_code == 0
    assert read_tokens(Path("ds/train")).tolist() == read_tokens(Path("plain/train")).tolist()
    # The same input again: the same dataset (no --overwrite needed), and no append of it.
    assert prepare(latin1, "ds").exit_code == 0
    line = error_line(invoke("prepare-dataset", "--input_files", latin1, "--append_to", "ds"))
    assert "caf\\xe9.txt is already in --append_to ds" in line, line


def test_a_directory_walk_skips_hidden_files_reads_any_case_and_says_what_it_skipped(tmp_path, monkeypatch):
    """A notebook's stale checkpoint (sorted first, it would win dedup) and .git are not read;
    `LEAR.TXT` is; the summary and the clean stats name and count what the walk passed over."""
    monkeypatch.chdir(tmp_path)
    for d in ("corpus/.git", "corpus/.ipynb_checkpoints"):
        Path(d).mkdir(parents=True)
    Path("corpus/doc.txt").write_text("The king spoke to the queen.\n" * 20)
    Path("corpus/.ipynb_checkpoints/doc-checkpoint.txt").write_text("A stale copy of the king.\n" * 20)
    Path("corpus/.git/description.txt").write_text("Unnamed repository\n")
    Path("corpus/.git/HEAD").write_text("ref: refs/heads/main\n")  # hidden and not text: not counted
    Path("corpus/LEAR.TXT").write_text("Blow, winds, and crack your cheeks!\n" * 20)
    Path("corpus/notes.md").write_text("# notes\n")
    result = prepare("corpus", "ds")
    assert result.exit_code == 0, result.output
    meta = json.loads(Path("ds/dataset_metadata.json").read_text())
    assert [s["name"] for s in meta["sources"]] == ["corpus/LEAR.TXT", "corpus/doc.txt"]
    assert meta["stats"]["clean"]["skipped_hidden_files"] == 2
    assert meta["stats"]["clean"]["skipped_other_suffix_files"] == 1
    assert "skipped_unreadable_paths" not in meta["stats"]["clean"]  # (new kinds: recorded only when met)
    assert set(meta["walk_skipped_files"]) == {"hidden", "other_suffixes"}
    assert ("Files the directory walk skipped: 3 (hidden: corpus/.git/description.txt, "
            "corpus/.ipynb_checkpoints/doc-checkpoint.txt; other suffixes: corpus/notes.md)") in result.output
    # Named, a hidden file is read, and so is an upper-case suffix.
    assert prepare("corpus/.ipynb_checkpoints/doc-checkpoint.txt", "ds2", "--input_files", "corpus/LEAR.TXT",
                   "--input_files", "corpus/.git/description.txt").exit_code == 0
    names = [s["name"] for s in json.loads(Path("ds2/dataset_metadata.json").read_text())["sources"]]
    assert names == ["corpus/.git/description.txt", "corpus/.ipynb_checkpoints/doc-checkpoint.txt", "corpus/LEAR.TXT"]
    # A directory of hidden text only is refused, saying why.
    Path("hid/.cache").mkdir(parents=True)
    Path("hid/.cache/a.txt").write_text("text\n")
    assert "hidden files are not walked (hid/.cache/a.txt)" in error_line(prepare("hid", "ds3"))


def test_each_skipped_file_is_counted_once_however_its_directory_was_named(tmp_path, monkeypatch):
    """A directory named twice is walked once; a named directory inside another is walked as
    named (its hidden files are read, not counted skipped). The summary names the first names
    in sorted order whichever order the walk met them."""
    monkeypatch.chdir(tmp_path)
    Path("corpus/.old").mkdir(parents=True)
    Path("corpus/doc.txt").write_text("The king spoke to the queen.\n" * 20)
    Path("corpus/.old/draft.txt").write_text("A draft of the king's speech, first hand.\n" * 20)
    for name in ("e.md", "d.md", "c.md", "b.md", "a.md"):
        Path("corpus", name).write_text("# notes\n")
    result = prepare("corpus", "ds", "--input_files", "./corpus", "--input_files", "corpus/.old",
                     "--input_files", str(tmp_path / "corpus"))
    assert result.exit_code == 0, result.output
    meta = json.loads(Path("ds/dataset_metadata.json").read_text())
    assert [s["name"] for s in meta["sources"]] == ["corpus/.old/draft.txt", "corpus/doc.txt"]
    assert meta["stats"]["clean"]["skipped_hidden_files"] == 0
    assert meta["stats"]["clean"]["skipped_other_suffix_files"] == 5
    assert meta["walk_skipped_files"]["other_suffixes"] == ["corpus/a.md", "corpus/b.md", "corpus/c.md"]


def test_a_walk_without_skips_records_no_new_stats(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("corpus").mkdir()
    Path("corpus/a.txt").write_text("The king spoke to the queen.\n" * 20)
    result = prepare("corpus", "ds")
    assert result.exit_code == 0 and "directory walk skipped" not in result.output, result.output
    meta = json.loads(Path("ds/dataset_metadata.json").read_text())
    assert "skipped_hidden_files" not in meta["stats"]["clean"] and "walk_skipped_files" not in meta


@pytest.mark.parametrize("encoding, name", [("utf-16", "UTF-16"), ("utf-32", "UTF-32")])
def test_utf16_and_utf32_text_is_skipped_with_the_iconv_fix(tmp_path, monkeypatch, encoding, name):
    monkeypatch.chdir(tmp_path)
    Path("win.txt").write_text("hello world\n" * 50, encoding=encoding)
    Path("a.txt").write_text("The king spoke to the queen.\n" * 20)
    fix = f"win.txt is {name} text (a byte-order mark): convert it to UTF-8 (iconv -f {name} -t UTF-8 win.txt > "
    result = prepare("a.txt", "ds", "--input_files", "win.txt")
    assert result.exit_code == 0 and "Binary files skipped: win.txt" in result.output and fix in result.output, \
        result.output
    assert json.loads(Path("ds/dataset_metadata.json").read_text())["skipped_wide_text_files"]["win.txt"].startswith(fix)
    assert fix in error_line(prepare("win.txt", "ds2"))  # alone: no text to read, and the fix


def test_utf16_text_without_nul_bytes_is_not_read_as_garbage(tmp_path, monkeypatch):
    """Chinese in UTF-16 (without a newline, U+000A) has no NUL byte: the mark alone tells it from UTF-8."""
    monkeypatch.chdir(tmp_path)
    Path("zh.txt").write_text("国王对王后说话。" * 500, encoding="utf-16")
    assert b"\x00" not in Path("zh.txt").read_bytes()
    assert "zh.txt is UTF-16 text" in error_line(prepare("zh.txt", "ds"))


def test_an_output_under_a_file_says_the_file_is_no_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("a.txt").write_text("The king spoke to the queen.\n" * 20)
    line = error_line(prepare("a.txt", "a.txt/ds"))
    assert "a.txt: it is a file, where a folder is needed" in line, line  # (was "a.txt: File exists")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def warnings_of(result) -> list[str]:
    return [line for line in result.output.splitlines() if line.startswith("warning:")]


@pytest.mark.timeout(60)
def test_a_fifo_or_socket_found_by_a_walk_is_skipped_with_a_notice_never_opened(tmp_path, monkeypatch):
    """Binary files a walk finds are skipped, and so are FIFOs and sockets (they stopped the
    whole run): found by their stat, never opened (a FIFO blocks an open until a writer comes).
    One named is still refused (tests/test_bad_inputs_inputs.py)."""
    monkeypatch.chdir(tmp_path)
    Path("corp").mkdir()
    Path("corp/a.txt").write_text("The king spoke to the queen.\n" * 20)
    os.mkfifo("corp/pipe.txt")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind("corp/sock.txt")
        result = prepare("corp", "ds")
        assert result.exit_code == 0, result.output
        assert warnings_of(result) == [  # once, though prepare-dataset and its clean step both resolve the inputs
            "warning: --input_files: skipped 2 files found by a directory walk that mypt does not read, as it reads "
            "only regular files (save a stream to a file to read it): corp/pipe.txt, a FIFO (named pipe); "
            "corp/sock.txt, a socket"]
        meta = json.loads(Path("ds/dataset_metadata.json").read_text())
        assert [s["name"] for s in meta["sources"]] == ["corp/a.txt"]
        # Counted and named as hidden files are (they were a stderr line alone), old kinds beside them.
        assert meta["stats"]["clean"]["skipped_not_regular_files"] == 2
        assert meta["stats"]["clean"]["skipped_hidden_files"] == 0
        assert meta["walk_skipped_files"] == {"hidden": [], "other_suffixes": [],
                                              "not_regular": ["corp/pipe.txt", "corp/sock.txt"]}
        assert ("Files the directory walk skipped: 2 (not regular files: corp/pipe.txt, corp/sock.txt); save a "
                "stream to a file to read it") in result.output, result.output
        # A folder of nothing else is no corpus, saying why.
        Path("only").mkdir()
        os.mkfifo("only/pipe.txt")
        line = error_line(prepare("only", "ds2"))
        assert "holds no text files" in line and "only/pipe.txt is a FIFO (named pipe)" in line, line


def test_a_file_given_twice_is_read_once_with_a_notice_naming_its_spellings(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("corp").mkdir()
    Path("corp/a.txt").write_text("The king spoke to the queen.\n" * 20)
    Path("b.txt").write_text("The queen answered the king.\n" * 20)
    Path("link.txt").symlink_to("corp/a.txt")
    result = prepare("b.txt", "once")
    assert result.exit_code == 0 and warnings_of(result) == [], result.output
    result = prepare("b.txt", "ds", "--input_files", "./b.txt", "--input_files", "corp", "--input_files",
                     "corp/a.txt", "--input_files", "link.txt", "--input_files", str(tmp_path / "corp"))
    assert result.exit_code == 0, result.output
    assert warnings_of(result) == [
        "warning: --input_files: 3 inputs given more than once, each read once: b.txt (named twice); "
        f"corp (also as {tmp_path / 'corp'}); corp/a.txt (also as link.txt)"]
    meta = json.loads(Path("ds/dataset_metadata.json").read_text())
    assert [s["name"] for s in meta["sources"]] == ["b.txt", "corp/a.txt"]


def test_a_path_too_long_for_the_system_is_an_error_naming_the_flag(tmp_path, monkeypatch):
    """A name over 255 bytes was said not to exist; a file deep in a walked folder, its path
    over PATH_MAX (4,096 bytes on Linux), stopped the run with "File name too long" alone."""
    monkeypatch.chdir(tmp_path)
    line = error_line(prepare("x" * 300 + ".txt", "ds"))
    assert line.startswith("Error: --input_files: 'xxx") and "File name too long (a path of 304 bytes" in line, line
    here = os.open(".", os.O_RDONLY)  # (a path that long is made a folder at a time, each relative to the last)
    for name in ["deep"] + ["d" * 200] * 21:
        os.mkdir(name, dir_fd=here)
        below = os.open(name, os.O_RDONLY, dir_fd=here)
        os.close(here)
        here = below
    os.close(os.open("a.txt", os.O_WRONLY | os.O_CREAT, dir_fd=here))
    os.close(here)
    line = error_line(prepare("deep", "ds"))
    assert line.startswith("Error: --input_files: 'deep/ddd") and "File name too long" in line, line


WALK_SKIPPED = "warning: --input_files: skipped {} found by a directory walk that mypt cannot read: "
FOLDER = " (a folder, with the files in it)"  # (said of folders only: their files went too)


def test_a_folder_a_walk_cannot_list_is_skipped_with_a_notice(tmp_path, monkeypatch):
    """Its files went missing unsaid (a corpus silently smaller): a notice names it and why. A
    notice, not an error: a disk's root holds lost+found, which only root may list. In a hidden
    folder (never read) it is not said; the folder named itself is an error naming it."""
    monkeypatch.chdir(tmp_path)
    for folder in ("corp/locked", "corp/gone", "corp/.cache"):
        Path(folder).mkdir(parents=True)
        Path(folder, "b.txt").write_text("The queen answered the king.\n" * 20)
    Path("corp/a.txt").write_text("The king spoke to the queen.\n" * 20)
    give_back = [deny(monkeypatch, Path(folder)) for folder in ("corp/locked", "corp/.cache")]
    real_scandir = os.scandir

    def scandir(path="."):  # corp/gone is removed after its parent is listed, before it is (each walk)
        if path == os.path.join("corp", "gone"):
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
        return real_scandir(path)
    monkeypatch.setattr(os, "scandir", scandir)
    try:
        result = prepare("corp", "ds")
        line = error_line(prepare("corp/locked", "ds2"))
    finally:
        for lift in give_back:
            lift()
    assert result.exit_code == 0, result.output
    assert warnings_of(result) == [WALK_SKIPPED.format("2 paths") + f"corp/gone{FOLDER} no longer exists (removed "
                                   f"during the walk); corp/locked{FOLDER} cannot be read: permission denied"]
    meta = json.loads(Path("ds/dataset_metadata.json").read_text())
    assert [s["name"] for s in meta["sources"]] == ["corp/a.txt"]
    assert line == ("Error: --input_files: 'corp/locked' cannot be read: permission denied; check the permissions of "
                    "it and of the folders above it"), line  # (was: "holds no text files")


def test_a_broken_link_found_by_a_walk_is_skipped_with_a_notice(tmp_path, monkeypatch):
    """It stopped the whole run ("cannot be read (No such file or directory)"), as a file that
    cannot be looked up (a link that loops, a folder without search permission) did. One named
    is an error naming it (tests/test_bad_inputs_inputs.py)."""
    monkeypatch.chdir(tmp_path)
    Path("corp/sub").mkdir(parents=True)
    Path("corp/a.txt").write_text("The king spoke to the queen.\n" * 20)
    Path("corp/dead.txt").symlink_to("missing.txt")
    Path("corp/loop.txt").symlink_to("loop.txt")
    Path("corp/sub/b.txt").write_text("The queen answered the king.\n" * 20)
    Path("corp/notes").symlink_to("missing")  # (no text suffix: passed over, as before, though another input is named)
    Path("c.txt").write_text("A third voice.\n" * 20)
    lift = deny(monkeypatch, Path("corp/sub"), list_it=True)
    try:
        result = prepare("corp", "ds", "--input_files", "c.txt")
    finally:
        lift()
    assert result.exit_code == 0, result.output
    assert warnings_of(result) == [WALK_SKIPPED.format("3 paths") + "corp/dead.txt is a symbolic link to "
                                   "'missing.txt', which does not exist; corp/loop.txt is a symbolic link that loops "
                                   "(to itself, or through others); corp/sub/b.txt cannot be read: permission denied"]
    meta = json.loads(Path("ds/dataset_metadata.json").read_text())
    assert [s["name"] for s in meta["sources"]] == ["c.txt", "corp/a.txt"]
    assert meta["stats"]["clean"]["skipped_unreadable_paths"] == 3  # (the corpus is smaller than its folder)
    assert meta["walk_skipped_files"]["unreadable"] == ["corp/dead.txt", "corp/loop.txt", "corp/sub/b.txt"]
    # A folder of nothing else is no corpus, saying why.
    Path("only").mkdir()
    Path("only/dead.txt").symlink_to("missing.txt")
    line = error_line(prepare("only", "ds2"))
    assert "holds no text files" in line and "only/dead.txt is a symbolic link to 'missing.txt'" in line, line


@pytest.mark.parametrize("out", ["x" * 300, "new/" + "x" * 300 + "/ds"])
def test_an_out_dir_too_long_for_the_system_is_an_error_naming_the_flag(tmp_path, monkeypatch, out):
    """It said "cannot use PATH: File name too long", naming no flag (a long name under a new
    folder failed only where the lock's folder was made: new/ was left behind)."""
    monkeypatch.chdir(tmp_path)
    Path("a.txt").write_text("The king spoke to the queen.\n" * 20)
    line = error_line(prepare("a.txt", out))
    assert line.startswith(f"Error: --out_dir {out[:80]}...") and "File name too long" in line, line
    assert line.endswith("longest name 300: more than the system takes): choose a shorter --out_dir"), line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_a_file_that_may_not_be_read_is_skipped_by_a_walk_and_refused_named(tmp_path, monkeypatch):
    """It was "cannot be read as .txt ([Errno 13] Permission denied...); the file is damaged or
    truncated". Found by a walk, it is skipped as a folder that cannot be listed is, said, counted
    and named in the metadata; named, it is an error naming the flag and the fix."""
    monkeypatch.chdir(tmp_path)
    Path("corp/ok").mkdir(parents=True)
    Path("corp/a.txt").write_text("The king spoke to the queen.\n" * 20)
    Path("corp/ok/z.txt").write_text("The queen answered the king.\n" * 20)
    lift = deny_file(monkeypatch, Path("corp/ok/z.txt"))
    try:
        result = prepare("corp", "ds")
        named = [error_line(prepare("corp/ok/z.txt", "ds2")),
                 error_line(invoke("train-tokenizer", "--input_files", "corp/ok/z.txt", "--out", "tok.json"))]
    finally:
        lift()
    assert result.exit_code == 0, result.output
    assert warnings_of(result) == [WALK_SKIPPED.format("1 path") + "corp/ok/z.txt cannot be read: permission denied"]
    meta = json.loads(Path("ds/dataset_metadata.json").read_text())
    assert [s["name"] for s in meta["sources"]] == ["corp/a.txt"]
    assert meta["stats"]["clean"]["skipped_unreadable_paths"] == 1
    assert meta["walk_skipped_files"]["unreadable"] == ["corp/ok/z.txt"]
    assert ("Files the directory walk skipped: 1 (cannot be read: corp/ok/z.txt); check the permissions and links "
            "of what cannot be read") in result.output, result.output
    assert named == ["Error: --input_files: 'corp/ok/z.txt' cannot be read: permission denied; check the "
                     "permissions of it and of the folders above it"] * 2, named


def test_resolving_a_walked_folder_stats_each_file_once(tmp_path, monkeypatch):
    """The walk's stat of a file gives its kind (a regular file, read) and its identity (an input
    named twice is read once): one stat a file (two before, 20,026 for 10,000 files in 10 folders),
    so a file cannot change between two checks of it."""
    for i in range(300):
        folder = tmp_path / "corp" / f"{i // 100}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i}.txt").write_text(f"line {i}\n")
    real_stat, stats = os.stat, []
    monkeypatch.setattr(os, "stat", lambda path, *a, **k: stats.append(os.fspath(path)) or real_stat(path, *a, **k))
    inputs = mypt.readers.resolve_inputs([str(tmp_path / "corp")])
    assert len(inputs) == 300
    files = [p for p in stats if p.endswith(".txt")]
    assert sorted(files) == sorted(map(str, inputs)) and len(stats) < 300 + 20, len(stats)  # (+ folders)


def test_a_file_removed_after_the_walk_found_it_is_skipped_with_the_walks_notice(tmp_path, monkeypatch):
    """Removed just after the walk's stat (its one stat while the inputs are resolved), it is no
    input, said as the walk says it (it was "permission denied": the walk asks next whether it
    may be read)."""
    monkeypatch.chdir(tmp_path)
    Path("corp").mkdir()
    Path("corp/a.txt").write_text("The king spoke to the queen.\n" * 20)
    Path("corp/b.txt").write_text("The queen answered the king.\n" * 20)
    real_stat = os.stat

    def stat(path, *args, **kwargs):
        result = real_stat(path, *args, **kwargs)
        if os.fspath(path) == os.path.join("corp", "b.txt"):
            os.unlink(path)
        return result
    monkeypatch.setattr(os, "stat", stat)
    result = invoke("train-tokenizer", "--input_files", "corp", "--out", "tok.json", "--vocab_size", "300")
    assert result.exit_code == 0, result.output
    assert warnings_of(result) == [WALK_SKIPPED.format("1 path") + "corp/b.txt no longer exists (removed during the "
                                   "walk)"], result.output
