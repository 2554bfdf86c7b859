"""What generate and eval print (issue 18): a sample that stops at once still shows its header
and prompt; eval's --max_tokens is at most; a prompt of bytes that are not UTF-8, as a shell
passes them, is one line; --prompt_file (issue 21) is the prompt its file holds."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
from bad_inputs import gen, invoke
from conftest import run


@pytest.fixture
def w(world, tmp_path, monkeypatch) -> Path:
    """A copy of the bad-input world (a char dataset `ds`, a tiny model `ck/m`), as cwd."""
    w = tmp_path / "w"
    shutil.copytree(world, w, symlinks=True)
    monkeypatch.chdir(w)
    return w


def test_a_sample_stopped_at_its_first_piece_still_prints_header_and_prompt(w):
    greedy = ["--prompt", "Line", "--temperature", "0", "--num_samples", "2"]
    result = invoke(*gen(*greedy))
    assert result.exit_code == 0, result.output
    first = result.output.split("--- sample 1 ---\nLine", 1)[1][0]  # the first character generated
    result = invoke(*gen(*greedy, "--stop", first))
    assert result.exit_code == 0, result.output
    assert result.output == "--- sample 1 ---\nLine\n--- sample 2 ---\nLine\n"


def test_prompt_file_is_the_prompt_as_written(w):
    """--prompt_file FILE: the file's text, its last newline and a byte-order mark's absence
    included, samples exactly as --prompt with that text does."""
    (w / "p.txt").write_bytes(b"\xef\xbb\xbfLine 3 of\n")
    greedy = ["--temperature", "0", "--max_new_tokens", "12"]
    from_file = invoke(*gen(*greedy, "--prompt_file", "p.txt"))
    assert from_file.exit_code == 0, from_file.output
    assert from_file.output == invoke(*gen(*greedy, "--prompt", "Line 3 of\n")).output
    assert from_file.output.startswith("--- sample 1 ---\nLine 3 of\n")


def _eval_tokens(*extra: str) -> int:
    result = invoke("eval", "--model_name", "m", "--checkpoints_dir", "ck", "--dataset", "val=ds", "--device", "cpu",
                    "--json", *extra)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)["val"]["tokens"]


def test_eval_max_tokens_is_at_most(w):
    whole = _eval_tokens()  # the world's model has block_size 32
    assert whole > 64
    assert _eval_tokens("--max_tokens", "32") == 32
    assert _eval_tokens("--max_tokens", "63") == 32  # whole windows only: rounded down, never up
    assert _eval_tokens("--max_tokens", "64") == 64
    assert _eval_tokens("--max_tokens", str(10 * whole)) == whole


@pytest.mark.slow
def test_a_prompt_of_bytes_that_are_not_utf8_is_one_line(w):
    """As a shell passes `--prompt $'Line \\xff'`: bytes, decoded by Python with surrogateescape."""
    done = run([sys.executable, "-m", "mypt.cli", *gen(), "--prompt", b"Line \xff"], cwd=w, check=False)
    errors = [line for line in done.stderr.splitlines() + done.stdout.splitlines() if line.startswith("Error")]
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert errors == ["Error: --prompt b'Line \\xff': not valid UTF-8 (byte b'\\xff' at character 5); give --prompt "
                      "as UTF-8 text (check the terminal's or the script's encoding)"]


def test_eval_names_the_model_it_loaded_and_takes_a_bare_dataset_dir(w):
    """A bare --dataset DIR is named by its last part; the first line says which checkpoint
    --model_name resolved to (a name and a same-named path could mean two)."""
    result = invoke("eval", "--model_name", "m", "--checkpoints_dir", "ck", "--dataset", "ds", "--device", "cpu")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"model: {Path('ck') / 'm'}" and lines[1].startswith("ds: loss ")
    as_json = invoke("eval", "--model_name", "m", "--checkpoints_dir", "ck", "--dataset", "ds", "--device", "cpu", "--json")
    assert set(json.loads(as_json.output)) == {"ds"}
    # a directory whose path holds "=" (runs/lr=3e-4/ds) is a DIR, not NAME=DIR; so is "."
    Path("runs/lr=3e-4").mkdir(parents=True)
    os.symlink(Path("ds").resolve(), "runs/lr=3e-4/ds")
    as_json = invoke("eval", "--model_name", "m", "--checkpoints_dir", "ck", "--dataset", "runs/lr=3e-4/ds",
                     "--device", "cpu", "--json")
    assert as_json.exit_code == 0 and set(json.loads(as_json.output)) == {"ds"}, as_json.output


def test_a_model_not_found_names_every_place_looked_and_the_flag(w):
    result = invoke("generate", "--model_name", "m", "--checkpoints_dir", "nope", "--prompt", "Line")
    assert result.exit_code == 1, result.output
    assert f"no checkpoint 'm' (looked in {Path('nope', 'm')} (--checkpoints_dir nope) and m)" in result.output
    assert "--checkpoints_dir that holds it" in result.output
    result = invoke("generate", "--model_name", "m", "--checkpoints_dir", "ck", "--prompt", "Line")
    assert result.exit_code == 0, result.output


def test_eval_refuses_a_dataset_of_another_vocabulary_before_evaluating_any(w):
    result = invoke("eval", "--model_name", "ck/m", "--dataset", "g=ds", "--dataset", "o=other", "--device", "cpu")
    assert result.exit_code == 1 and "--dataset o=other" in result.output and "vocabulary" in result.output
    assert "g: loss" not in result.output, result.output  # nothing evaluated first, to be thrown away


@pytest.mark.slow
def test_generate_into_a_pipe_closed_early_ends_quietly(w):
    """`mypt generate ... | head`: the reader has what it wanted; no "Error: cannot use a file:
    Broken pipe", no traceback (as a Unix tool ends)."""
    import subprocess

    proc = subprocess.Popen([sys.executable, "-m", "mypt.cli", *gen("--prompt", "Line", "--num_samples", "200",
                                                                   "--max_new_tokens", "200")],
                            cwd=w, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert len(proc.stdout.read(30)) == 30
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 1 and err == "", err


def test_eval_names_the_shard_of_a_token_id_past_the_vocabulary_deep_in_it(w):
    """Eval reads every val token: an id no tokenizer gives, past the first 4,096 the loader's
    start-up check reads, is one line naming the shard (it was torch's IndexError traceback)."""
    import numpy as np

    made = invoke("prepare-dataset", "--input_files", "corpus.txt", "--out_dir", "big", "--tokenizer_from", "ds",
                  "--val_fraction", "0.5", "--tokens_per_shard", "100000", "--workers", "1")
    assert made.exit_code == 0, made.output
    [shard] = (w / "big" / "val").glob("shard_*.bin")
    tokens = np.fromfile(shard, dtype="<u4")
    assert tokens.size > 4096 + 100
    tokens[4096 + 100] = 1000
    tokens.tofile(shard)
    result = invoke("eval", "--model_name", "ck/m", "--dataset", "big", "--device", "cpu")
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert f"{Path('big') / 'val' / shard.name}: token id 1000 is outside the char vocabulary" in result.output, \
        result.output
