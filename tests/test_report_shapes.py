"""A stage's --stats / --metrics replaces an existing file only when it has the shape of the
report that stage writes for that flag (io.check_report_paths): a user's results that happen to
be a JSON object of numbers are refused before any work, left as they were; the stage's own
previous report (an older mypt's with fewer keys, one of other corpora) is replaced on a rerun."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import tree_bytes
from test_dvc_params import stage_main

# A results file of the user's: numbers only, as the old rule took every mypt report to be.
RESULTS = '{"hellaswag_acc": 0.2841, "n_examples": 10042}\n'
COUNTS = '{"n_examples": 10042}\n'  # the user's own counts: lowercase names, whole numbers, none a stage's
VOCAB = '{"!": 0, "a": 1, "Ġthe": 2}\n'  # a tokenizer's vocab.json: counts, by its names
REFUSED = "exists and is not a report mypt writes"

DATA = {  # stage: its flags, --stats apart (run from the project folder, in order)
    "clean": ["--input_files", "corpus", "--out_dir", "clean"],
    "dedup": ["--in_dir", "clean", "--out_dir", "dedup"],
    "vocab": ["--in_dir", "dedup", "--out_dir", "vocab", "--tokenization", "char"],
    "tokenize_corpus": ["--in_dir", "dedup", "--tokenizer_dir", "vocab", "--out_dir", "tok"],
    "shard": ["--in_dir", "tok", "--out_dir", "sh", "--tokens_per_shard", "2000"],
    "split": ["--in_dir", "sh", "--out_dir", "ds"],
}
TRAIN = ["--dataset_dir", "ds", "--model_name", "m", "--checkpoints_dir", "ck", "--config_file", "tiny",
         "--device", "cpu", "--max_iters", "1", "--eval_interval", "1", "--eval_iters", "1", "--batch_size", "2"]
EVAL = ["--model_name", "ck/m", "--dataset", "general=ds", "--device", "cpu", "--max_tokens", "64"]


def stage(name: str, *args, code: int = 0) -> str:
    r = CliRunner().invoke(stage_main(f"stages/{name}.py"), [str(a) for a in args])
    assert r.exit_code == code, r.output
    return r.output


def stats_flags(name: str) -> list[str]:
    return [] if name in ("vocab", "shard") else ["--stats", f"stats/{name}.json"]


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """The pipeline's stages run once by hand on a small corpus: their data, a tiny model, and
    each stage's report in stats/ and metrics/."""
    root = tmp_path_factory.mktemp("project")
    before = os.getcwd()
    os.chdir(root)
    try:
        Path("corpus").mkdir()
        Path("corpus/a.txt").write_text("".join(f"Line {i} of the king's speech to the queen.\n" for i in range(300)))
        for name, flags in DATA.items():
            stage(name, *flags, *stats_flags(name))
        stage("train", *TRAIN, "--metrics", "metrics/train.json")
        stage("eval", *EVAL, "--metrics", "metrics/eval.json", "--stats", "stats/eval.json")
    finally:
        os.chdir(before)
    return root


@pytest.fixture
def here(project, monkeypatch) -> Path:
    monkeypatch.chdir(project)
    return project


def test_eval_refuses_a_users_results_file_of_numbers(here):
    """The hostile tester's repro: eval's --metrics onto the user's own benchmark results."""
    Path("myresults").mkdir(exist_ok=True)
    Path("myresults/hellaswag.json").write_text(RESULTS)
    before = tree_bytes(here)
    out = stage("eval", *EVAL, "--metrics", "myresults/hellaswag.json", "--stats", "st.json", code=1)
    assert f"Error: --metrics myresults/hellaswag.json {REFUSED}" in out and "nothing changed" in out, out
    assert len(out.strip().splitlines()) == 1 and tree_bytes(here) == before


@pytest.mark.parametrize("name", ["clean", "dedup", "tokenize_corpus", "split", "train", "eval --metrics",
                                  "eval --stats"])
@pytest.mark.parametrize("mine", [RESULTS, VOCAB, COUNTS, '{"general": {"loss": 1.5}}\n', '{"files": -1}\n'],
                         ids=["results", "vocab", "counts", "eval_stats", "negative_count"])
def test_every_stage_refuses_a_file_that_is_not_its_report(here, name, mine):
    """Each report flag, onto a file of numbers that is not its own report's shape (eval's --stats
    shape at a data step's --stats, a negative count, the user's counts under a name no stage writes)
    is refused before the work."""
    name, flag = name.split() if " " in name else (name, "--metrics" if name == "train" else "--stats")
    if (name, mine) == ("eval", '{"general": {"loss": 1.5}}\n'):
        mine = '{"general": {"accuracy": 0.5}}\n'  # (that one is eval's own --stats shape, and its old --metrics)
    Path("mine.json").write_text(mine)
    flags = {"train": [*TRAIN, "--model_name", "m3"], "eval": EVAL}.get(name) or DATA[name]
    others = {"eval": {"--metrics": "metrics/eval.json", "--stats": "stats/eval.json"}}.get(name, {})
    args = [*flags, *(a for f, p in others.items() if f != flag for a in (f, p)), flag, "mine.json"]
    before = tree_bytes(here)
    out = stage(name, *args, code=1)
    assert f"Error: {flag} mine.json {REFUSED}" in out and "nothing changed" in out, out
    assert tree_bytes(here) == before


@pytest.mark.parametrize("name", ["clean", "dedup", "tokenize_corpus", "split", "eval"])
def test_a_stage_replaces_its_own_previous_report(here, name):
    """A rerun by hand replaces the stage's reports: its own, an older mypt's with fewer keys,
    one of corpora since renamed, and eval's --metrics as it was written before it had --stats."""
    if name == "eval":
        reports = {"metrics/eval.json": "--metrics", "stats/eval.json": "--stats"}
        flags = [*EVAL, *(a for p, flag in reports.items() for a in (flag, p))]
    else:
        reports, flags = {f"stats/{name}.json": "--stats"}, [*DATA[name], *stats_flags(name)]
    written = {p: json.loads(Path(p).read_text()) for p in reports}
    stage(name, *flags)
    assert {p: json.loads(Path(p).read_text()) for p in reports} == written  # (the same run, the same numbers)
    older = {p: dict(list(report.items())[1:]) for p, report in written.items()}  # one key fewer
    if name == "eval":  # of a corpus since renamed, one key fewer; --metrics as it was before --stats
        older = {"metrics/eval.json": {"old": written["stats/eval.json"]["general"]},
                 "stats/eval.json": {"old": dict(list(written["stats/eval.json"]["general"].items())[1:])}}
    for p, report in older.items():
        Path(p).write_text(json.dumps(report))
    stage(name, *flags)
    assert {p: json.loads(Path(p).read_text()) for p in reports} == written


def test_the_train_stage_replaces_its_own_previous_metrics(here):
    report = json.loads(Path("metrics/train.json").read_text())
    assert set(report) == {"tokens", "seconds"}
    Path("metrics/train.json").write_text(json.dumps({"tokens": 1}))  # an older one, with fewer keys
    stage("train", *TRAIN, "--model_name", "m2", "--metrics", "metrics/train.json")  # (m stays eval's model)
    assert json.loads(Path("metrics/train.json").read_text())["tokens"] == report["tokens"]


def test_tokenize_replaces_a_report_with_an_hf_tokenizers_unknown_token_counts(here):
    """The tokenize stage's report keeps an hf tokenizer's per-token counts of what became its
    unknown token (names any string): a previous report with them is its own."""
    Path("stats/tokenize_corpus.json").write_text(json.dumps({"tokens": 5, "unknown_tokens": 3,
                                                              "unknown_token_counts": {"Ω x": 2, "ß": 1}}))
    stage("tokenize_corpus", *DATA["tokenize_corpus"], "--stats", "stats/tokenize_corpus.json")
    assert "unknown_token_counts" not in json.loads(Path("stats/tokenize_corpus.json").read_text())


def many_counters(root: Path) -> None:
    """A corpus folder whose cleaning, dedup and tokenizing meet nearly every counter, those counted
    only when seen too: bad bytes, a line too long, one without letters, blank and short lines,
    duplicates, a bad JSONL line and an emptied document, and what the directory walk passes over
    (binary, hidden, another suffix, a FIFO, a broken link)."""
    c = root / "corpus"
    c.mkdir()
    prose = "".join(f"Line {i} of the king's speech to the queen, said again.\n" for i in range(200))
    (c / "a.txt").write_bytes(prose.encode() + b"Bad \xff\xfe bytes here.\n\n12345\nShort.\n" + b"x" * 300 + b"\n")
    (c / "b.txt").write_text(prose)  # every line a duplicate of a.txt's
    docs = [{"text": "A document of its own, with words.\nShort."}, {"text": "Line 3 of the king's speech to the "
            "queen, said again."}, {"text": "12345"}, {"text": 7}]
    (c / "c.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs) + "not json\n")
    (c / "d.txt").write_bytes(b"binary\x00data\n")
    (c / ".hidden.txt").write_text("Hidden text.\n")
    (c / "notes.md").write_text("Notes.\n")
    os.mkfifo(c / "pipe.txt")
    (c / "gone.txt").symlink_to(c / "nowhere.txt")


SEEN = {"clean": {"bad_json_lines", "invalid_utf8_bytes_replaced", "dropped_too_long", "dropped_no_letters",
                  "documents_emptied", "skipped_binary_files", "skipped_hidden_files", "skipped_other_suffix_files",
                  "skipped_not_regular_files", "skipped_unreadable_paths"},
        "dedup": {"blank_lines", "short_lines_kept", "duplicate_lines_dropped", "documents_emptied"},
        "tokenize_corpus": {"tokens", "replaced_chars"}, "split": {"train_shards", "val_shards"}}


@pytest.mark.slow
def test_a_stage_declares_every_counter_its_report_holds(tmp_path, monkeypatch):
    """Each data stage replaces a previous report holding only the counter names it declares; every
    name it writes must be one, or its own rerun would refuse its report. Run twice on inputs that meet
    the counters counted only when seen: a counter added without being declared fails here."""
    monkeypatch.chdir(tmp_path)
    many_counters(tmp_path)
    flags = {**DATA, "clean": [*DATA["clean"], "--max_line_chars", "200"]}
    for name in DATA:
        stage(name, *flags[name], *stats_flags(name))
    for name, seen in SEEN.items():
        report = json.loads(Path(f"stats/{name}.json").read_text())
        assert seen <= set(report), (name, report)  # (written: the inputs met them)
        stage(name, *flags[name], *stats_flags(name))  # the report of the first run is its own
        assert json.loads(Path(f"stats/{name}.json").read_text()) == report
