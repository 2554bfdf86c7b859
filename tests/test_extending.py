"""ARCHITECTURE.md's "To add X, touch these files" table, checked by doing it.

A copy of the project gets a throwaway tokenizer kind (`bytes`: one token per UTF-8 byte) and
a throwaway input format (`.lines`: one document per line), each written into exactly the
files the table names for it (`TOUCHED`). The copy's commands run in subprocesses that import
the copy's mypt (PYTHONPATH), and must follow: `--tokenization` offers the kind,
prepare-dataset reads the format and tokenizes with the kind end to end, and
`scripts/dvc_deps.py` finds the stages whose deps must list the new modules.

The copy is taken from the working tree as it is, so a change that makes the table untrue
(a list to extend elsewhere, a registry that moved) fails here.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import REPO, read_tokens

# Subprocesses over a copy of the project (10 s of the quick loop): with the slow tests.
pytestmark = pytest.mark.slow

COPIED = ["mypt", "stages", "scripts", "dvc.yaml", "params.yaml", "pyproject.toml"]

# The table's row -> the files this test touches to add one (NAME: the new module's name).
TOUCHED = {
    "a tokenizer kind": ["mypt/tokenizers/NAME.py", "mypt/tokenizers/__init__.py"],
    "an input format": ["mypt/readers/NAME.py", "mypt/readers/__init__.py"],
}

TOKENIZER_MODULE = '''"""`bytes`: one token per UTF-8 byte (a throwaway kind of tests/test_extending.py)."""

from __future__ import annotations

import numpy as np

from mypt.tokenizers.base import Tokenizer, register


@register
class BytesTokenizer(Tokenizer):
    kind = "bytes"

    @property
    def vocab_size(self) -> int:
        return 256

    def encode_array(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.uint32)

    def decode(self, ids) -> str:
        return bytes(np.asarray(ids, dtype=np.uint8)).decode("utf-8", errors="replace")
'''

READER_MODULE = '''"""`.lines`: one document per non-blank line (a throwaway format of tests/test_extending.py)."""

from __future__ import annotations

from typing import Iterator

from mypt.readers.base import Reader, register
from mypt.text import DecodeCounter


@register
class LinesReader(Reader):
    suffix = ".lines"
    one_document = False

    def texts(self, start: int, end: int, decoder: DecodeCounter, stats) -> Iterator[str]:
        for chunk in self.chunks(start, end):
            for raw in chunk.split(b"\\n"):
                if raw.strip():
                    stats["documents_in"] += 1
                    yield decoder.decode(raw)
'''

ADDED = {  # what is written into the files of TOUCHED (NAME = bytelevel, lines)
    "a tokenizer kind": {"mypt/tokenizers/bytelevel.py": TOKENIZER_MODULE,
                         "mypt/tokenizers/__init__.py": "from mypt.tokenizers import bytelevel  # noqa: E402,F401\n"},
    "an input format": {"mypt/readers/lines.py": READER_MODULE,
                        "mypt/readers/__init__.py": "from mypt.readers import lines  # noqa: E402,F401\n"},
}
NEW_MODULES = {"mypt/tokenizers/bytelevel.py": "mypt/tokenizers/__init__.py",  # new module -> its registry
               "mypt/readers/lines.py": "mypt/readers/__init__.py"}


def table_rows() -> dict[str, str]:
    """ARCHITECTURE.md's "To add X" table: X -> the text of its files cell."""
    text = (REPO / "ARCHITECTURE.md").read_text(encoding="utf-8")
    section = text.split("## To add X", 1)[1].split("\n## ", 1)[0]
    return {m.group(1).strip(): m.group(2) for m in re.finditer(r"^\| ([^|`]+?) \| (.+) \|$", section, re.M)}


def run_in(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """`python ARGS` in the copy, importing the copy's mypt."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run([sys.executable, *args], cwd=root, env=env, capture_output=True, text=True)
    if check and done.returncode != 0:
        raise AssertionError(f"python {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done


def copy_project(root: Path, names: list[str]) -> Path:
    """`names` (files and directories of the working tree) copied under `root`."""
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(REPO / name, root / name)
    return root


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A copy of the project with the kind and the format added as the table says."""
    root = copy_project(tmp_path_factory.mktemp("extended"), COPIED)
    # The deps as the copy's own import graph gives them before the additions, so that what
    # --check reports below is the additions only (tests/test_architecture.py checks the repo's).
    run_in(root, "scripts/dvc_deps.py", "--write")
    for files in ADDED.values():
        for rel, text in files.items():
            path = root / rel
            if path.exists():  # a registry: the import goes last, after everything it imports
                text = path.read_text(encoding="utf-8").rstrip("\n") + "\n" + text
            path.write_text(text, encoding="utf-8")
    return root


def test_the_table_names_every_file_this_test_touches():
    rows = table_rows()
    for x, files in TOUCHED.items():
        assert x in rows, f"ARCHITECTURE.md's table has no row {x!r} (rows: {list(rows)})"
        named = set(re.findall(r"`([\w./-]+\.(?:py|yaml|toml|md))`", rows[x]))
        assert set(files) <= named, f"{x}: the table must name {sorted(set(files) - named)}"
        touched = {re.sub(r"/\w+\.py$", "/NAME.py", p) if not p.endswith("__init__.py") else p for p in ADDED[x]}
        assert touched == set(files)


def test_the_copy_runs_its_own_mypt(project):
    done = run_in(project, "-c", "import mypt, mypt.tokenizers as t, mypt.readers as r; "
                                 "print(mypt.__file__); print(sorted(t.TOKENIZERS)); print(r.suffixes())")
    file, kinds, suffixes = done.stdout.splitlines()
    assert Path(file).resolve().is_relative_to(project.resolve()), file
    assert "bytes" in kinds and "'.lines'" in suffixes and "'.lines.gz'" in suffixes, done.stdout


@pytest.mark.parametrize("command", [["-m", "mypt.cli", "prepare-dataset"], ["-m", "mypt.cli", "train"],
                                     ["stages/vocab.py"]], ids=["prepare-dataset", "train", "vocab-stage"])
def test_tokenization_choices_follow(project, command):
    out = run_in(project, *command, "--help").stdout
    choices = re.search(r"--tokenization \[([^\]]+)\]", out)
    assert choices and "bytes" in choices.group(1).split("|"), out


def _option_help(out: str, flag: str) -> str:
    """The help text of one option in `--help` output (its metavar left out)."""
    block = re.search(rf"^  {flag}\b.*?(?=^  -)", out, re.M | re.S).group(0)
    return re.sub(r"\[[^\]]*\]", "", block)


@pytest.mark.parametrize("command, flag, name", [
    ("prepare-dataset", "--tokenization", "bytes"),
    ("train", "--tokenization", "bytes"),
    ("prepare-dataset", "--input_files", ".lines"),
    ("train-tokenizer", "--input_files", ".lines"),
])
def test_help_texts_name_the_new_kind_and_format(project, command, flag, name):
    out = run_in(project, "-m", "mypt.cli", command, "--help").stdout
    assert name in _option_help(out, flag)


def test_prepare_dataset_reads_the_format_and_tokenizes_with_the_kind(project, tmp_path):
    first, second = "héllo wörld\nsecond line\n".encode(), "third\n".encode()
    (tmp_path / "a.lines").write_bytes(first)
    (tmp_path / "b.lines.gz").write_bytes(gzip.compress(second))  # a compression is a layer under any format
    ds = tmp_path / "ds"
    run_in(project, "-m", "mypt.cli", "prepare-dataset", "--input_files", str(tmp_path / "a.lines"),
           str(tmp_path / "b.lines.gz"), "--out_dir", str(ds), "--tokenization", "bytes", "--val_fraction", "0",
           "--no_normalize", "--no_filter", "--no_dedup", "--workers", "1")
    meta = json.loads((ds / "dataset_metadata.json").read_text(encoding="utf-8"))
    assert meta["tokenizer"]["kind"] == "bytes" and meta["tokenizer"]["vocab_size"] == 256
    assert [s["documents"] for s in meta["sources"]] == [2, 1]  # one document per line
    assert meta["stats"]["clean"]["documents_in"] == 3
    assert read_tokens(ds / "train").tolist() == list(first + second)  # each document's bytes and its newline
    decoded = run_in(project, "-c", "import sys; from mypt.tokenizers import Tokenizer; "
                                    "print(Tokenizer.load(sys.argv[1]).decode(range(104, 106)))", str(ds))
    assert decoded.stdout == "hi\n"
    # A format mypt does not read is refused naming the suffixes, the new one among them.
    (tmp_path / "c.nope").write_text("x\n")
    refused = run_in(project, "-m", "mypt.cli", "prepare-dataset", "--input_files", str(tmp_path / "c.nope"),
                     "--out_dir", str(tmp_path / "ds2"), "--tokenization", "bytes", check=False)
    assert refused.returncode == 1 and ".lines" in refused.stdout + refused.stderr


def test_dvc_deps_follow_the_new_modules(project):
    stages = yaml.safe_load((project / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    deps = {name: set((s.get("do") or s)["deps"]) for name, s in stages.items()}
    check = run_in(project, "scripts/dvc_deps.py", "--check", check=False)
    assert check.returncode == 1, check.stdout
    for module, registry in NEW_MODULES.items():
        users = [name for name, d in deps.items() if registry in d]
        assert users, f"no stage imports {registry}"  # else this check proves nothing
        added = re.findall(rf"^\+\s+- {re.escape(module)}$", check.stdout, re.M)
        assert len(added) == len(users), (module, users, check.stdout)

    run_in(project, "scripts/dvc_deps.py", "--write")
    assert run_in(project, "scripts/dvc_deps.py", "--check").stdout.strip() == "dvc.yaml deps are up to date"
    stages = yaml.safe_load((project / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    for name, s in stages.items():
        now = set((s.get("do") or s)["deps"])
        for module, registry in NEW_MODULES.items():
            assert (module in now) == (registry in deps[name]), (name, module)
        assert now - set(NEW_MODULES) == deps[name], name  # nothing else moved


@pytest.mark.slow
def test_train_and_generate_follow_the_kind_and_the_format(project, tmp_path):
    lines = "".join(f"line {i}: héllo wörld, the quick brown fox\n" for i in range(300))
    (tmp_path / "a.lines").write_text(lines, encoding="utf-8")
    run_in(project, "-m", "mypt.cli", "prepare-dataset", "--input_files", str(tmp_path / "a.lines"), "--out_dir",
           str(tmp_path / "ds"), "--tokenization", "bytes", "--val_fraction", "0.2", "--workers", "1")
    flags = ["--checkpoints_dir", str(tmp_path / "ck"), "--config_file", "tiny", "--max_iters", "4",
             "--eval_interval", "2", "--eval_iters", "1", "--device", "cpu"]
    trained = run_in(project, "-m", "mypt.cli", "train", "--dataset_dir", str(tmp_path / "ds"), "--model_name", "m",
                     *flags)
    assert "Vocabulary size: 256" in trained.stdout, trained.stdout
    out = run_in(project, "-m", "mypt.cli", "generate", "--model_name", "m", "--checkpoints_dir", str(tmp_path / "ck"),
                 "--prompt", "hé", "--max_new_tokens", "8", "--temperature", "0", "--device", "cpu").stdout
    assert "hé" in out, out
    # --input_file tokenizes plain text in memory: the new format is sent to prepare-dataset.
    refused = run_in(project, "-m", "mypt.cli", "train", "--input_file", str(tmp_path / "a.lines"), "--model_name",
                     "n", "--tokenization", "bytes", *flags, check=False)
    assert refused.returncode == 1 and "prepare-dataset" in refused.stdout + refused.stderr, refused.stdout


STAGE_STEP = '''"""Step linecount: the lines of a deduped corpus (a throwaway step of tests/test_extending.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mypt.settings import Settings, setting
from mypt.steps import Step, read_input

STEP = Step("linecount", reads=("dedup",))


@dataclass(frozen=True)
class LinecountSettings(Settings):
    LABEL = "linecount setting"

    min_chars: int = setting(1, "Count lines at least this long.", min=0)


def linecount(in_dir: Path, settings: LinecountSettings = LinecountSettings()) -> dict:
    manifest = read_input(STEP, in_dir)
    lines = [line for s in manifest["sources"]
             for line in (Path(in_dir) / s["file"]).read_text(encoding="utf-8").splitlines()]
    return {"lines": sum(len(line) >= settings.min_chars for line in lines)}
'''

STAGE_SCRIPT = '''"""Stage linecount (a throwaway stage of tests/test_extending.py)."""

import sys
from pathlib import Path

import click

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's mypt, whose files dvc.lock hashes
from mypt.io import write_json
from mypt.options import MyptCommand, option, settings_options
from mypt.steps.linecount import LinecountSettings, linecount


@click.command(cls=MyptCommand)
@option("--in_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True)
@option("--stats", type=click.Path(dir_okay=False, path_type=Path), required=True)
@settings_options(LinecountSettings)
def main(in_dir, stats, **flags) -> None:
    write_json(stats, linecount(in_dir, LinecountSettings.from_flags(flags)))


if __name__ == "__main__":
    main()
'''

STAGE_ENTRY = '''
  linecount:
    foreach: ${corpora}
    do:
      cmd: python stages/linecount.py --in_dir data/dedup/${key} --stats metrics/linecount_${key}.json ${linecount}
      deps:
        - stages/linecount.py
        - data/dedup/${key}
      metrics:
        - metrics/linecount_${key}.json:
            cache: false
'''


@pytest.mark.slow
def test_a_stage_at_the_end_of_the_chain_passes_the_layout_checks_with_the_files_the_table_names(tmp_path):
    """The pipeline-stage row, for a stage no other step reads and prepare-dataset does not
    run: its step, its script, its params section and its dvc.yaml entry (deps written by
    dvc_deps.py) pass the copy's own layout tests (settings, params, deps), with no list of
    stages or settings to extend; a params key the script does not take fails them."""
    files = table_rows()["a pipeline stage"].split(". ", 1)[0]  # the first sentence: what every stage touches
    assert set(re.findall(r"`([\w./]+\.(?:py|yaml))`", files)) == \
        {"mypt/steps/NAME.py", "stages/NAME.py", "params.yaml", "dvc.yaml"}, files
    root = copy_project(tmp_path / "project", [*COPIED, "tests", ".dvc/config"])
    (root / "mypt/steps/linecount.py").write_text(STAGE_STEP, encoding="utf-8")
    (root / "stages/linecount.py").write_text(STAGE_SCRIPT, encoding="utf-8")
    with open(root / "dvc.yaml", "a", encoding="utf-8") as f:
        f.write(STAGE_ENTRY)
    params = (root / "params.yaml").read_text(encoding="utf-8")
    run_in(root, "scripts/dvc_deps.py", "--write")
    assert "- mypt/steps/linecount.py" in (root / "dvc.yaml").read_text(encoding="utf-8")

    layout = ["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_architecture.py"]
    (root / "params.yaml").write_text(params + "\nlinecount:\n  min_char: 1\n", encoding="utf-8")
    typo = run_in(root, *layout, check=False)
    assert typo.returncode == 1 and "linecount.min_char" in typo.stdout, typo.stdout[-3000:]
    (root / "params.yaml").write_text(params + "\nlinecount:\n  min_chars: 1\n", encoding="utf-8")
    run_in(root, *layout, "tests/test_dvc_params.py")
