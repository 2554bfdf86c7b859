"""export-hf never replaces what it did not write, through the CLI: weights fine-tuned in place
over an export (its record's sha256 no longer matches) are refused by a re-export, and a disk
that fills while it writes is one line that leaves the previous export as it was."""

from __future__ import annotations

import collections
import hashlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import tiny_checkpoint, tree_bytes
from conftest import export_hf as export

import mypt.hf_export
import mypt.io

transformers = pytest.importorskip("transformers")


def one_line_error(result) -> str:
    assert result.exit_code == 1, result.output + repr(result.exception)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in result.output, result.output
    return lines[0]


def test_a_re_export_refuses_weights_fine_tuned_in_place(tmp_path):
    """Fine-tuned with transformers and saved over the export: the re-export names the file
    and changes nothing; moved out of the way, the export is written again and the user's
    model card stays."""
    model = tiny_checkpoint(tmp_path / "m")
    out = tmp_path / "hfft"
    export(model, out)
    record = json.loads((out / "mypt_export.json").read_text())
    assert set(record["sha256"]) == set(record["files"]) and "model.safetensors" in record["sha256"]
    (out / "README.md").write_text("# my model card\n")

    hf = transformers.AutoModelForCausalLM.from_pretrained(out)
    with torch.no_grad():
        hf.transformer.h[0].mlp.c_fc.weight[0, 0] += 1.0  # a step of fine-tuning
    hf.save_pretrained(out)
    tuned = tree_bytes(out)
    changed = [name for name, digest in record["sha256"].items()
               if hashlib.sha256(tuned[name]).hexdigest() != digest]
    assert "model.safetensors" in changed
    line = one_line_error(export(model, out, ok=False))
    assert f"--out_dir {out}: " in line and "changed since mypt exported" in line, line
    assert all(name in line for name in changed) and "move" in line and "choose another --out_dir" in line, line
    assert tree_bytes(out) == tuned  # the fine-tuned weights, untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hfft", "m"]  # no work directory left

    # The user keeps their weights elsewhere: the export is written again, the card kept.
    (tmp_path / "tuned").mkdir()
    for name in changed:
        os.replace(out / name, tmp_path / "tuned" / name)
    export(model, out)
    assert (out / "README.md").read_text() == "# my model card\n"
    assert (tmp_path / "tuned" / "model.safetensors").read_bytes() == tuned["model.safetensors"]
    assert (out / "model.safetensors").read_bytes() != tuned["model.safetensors"]


def test_an_export_file_made_a_link_to_the_same_bytes_is_named_as_a_link(tmp_path):
    """A file of the export replaced by a link to a copy (deduplicated storage, a user's
    tidy-up) is the user's: refused, and the reason is the link, not a sha256 that differs."""
    model = tiny_checkpoint(tmp_path / "m")
    out = tmp_path / "hf"
    export(model, out)
    shutil.copy(out / "config.json", tmp_path / "config.json")
    (out / "config.json").unlink()
    (out / "config.json").symlink_to(tmp_path / "config.json")
    line = one_line_error(export(model, out, ok=False))
    assert "config.json (now a symbolic link) changed since mypt exported it" in line and "sha256" not in line, line
    assert (out / "config.json").is_symlink()


@pytest.mark.parametrize("legacy", ["record without sums", "sums null", "no record"])
def test_an_export_from_before_the_sums_is_replaced_only_where_nothing_differs(tmp_path, legacy, monkeypatch):
    """mypt_export.json written before the sums, or none (an older mypt's export): its files
    were replaced unchecked, a fine-tuned model.safetensors and an edited config.json too. Now
    only what the new export writes byte for byte is replaced; the new record has the sums. Each
    file, the new export's and the old one's, is hashed once (the weights were hashed twice)."""
    model = tiny_checkpoint(tmp_path / "m")
    out = tmp_path / "hf"
    export(model, out)
    record = json.loads((out / "mypt_export.json").read_text())

    def make_legacy():
        if legacy == "no record":
            (out / "mypt_export.json").unlink()
        elif legacy == "sums null":
            (out / "mypt_export.json").write_text(json.dumps({**record, "sha256": None}))
        else:
            (out / "mypt_export.json").write_text(json.dumps({"files": record["files"], "model": record["model"]}))

    make_legacy()
    (out / "model.safetensors").write_bytes(b"fine-tuned")
    before = tree_bytes(out)
    line = one_line_error(export(model, out, ok=False))
    assert "is an export from before mypt recorded its files' sums" in line and "model.safetensors" in line, line
    assert "config.json" not in line and "nothing changed" in line, line
    assert tree_bytes(out) == before
    (out / "model.safetensors").unlink()  # the user's answer: it was mypt's
    hashed = collections.Counter()
    real_sha256 = mypt.io.sha256_file
    for module in (mypt.io, mypt.hf_export):
        monkeypatch.setattr(module, "sha256_file", lambda path: hashed.update([str(path)]) or real_sha256(path))
    export(model, out)
    assert json.loads((out / "mypt_export.json").read_text())["sha256"] == record["sha256"]
    assert hashed and max(hashed.values()) == 1, hashed


def test_a_file_the_record_lists_without_a_sum_is_replaced_only_by_the_same_bytes(tmp_path):
    """A record that lists a file but gives no sum for it (the others summed: edited by hand) let
    the export drop it unchecked: a user's README.md listed so was deleted (a hostile tester's).
    Such a file is refused unless the new export writes it byte for byte."""
    model = tiny_checkpoint(tmp_path / "m")
    out = tmp_path / "hf"
    export(model, out)
    record = json.loads((out / "mypt_export.json").read_text())
    (out / "mypt_export.json").write_text(json.dumps({**record, "files": [*record["files"], "README.md"]}))
    (out / "README.md").write_text("# my model card\n")
    before = tree_bytes(out)
    line = one_line_error(export(model, out, ok=False))
    assert "README.md" in line and "mypt cannot tell whether" in line and "nothing changed" in line, line
    assert tree_bytes(out) == before


def test_an_edited_tokenizer_file_of_an_export_from_before_the_sums_is_refused_before_the_weights(tmp_path,
                                                                                                   monkeypatch):
    """An export from before the sums is compared with the new one's bytes: the whole new export
    was built (the weights converted and written: a long export's work) before an edited file was
    refused. The tokenizer files are written first and compared before the weights; the model's
    files (config.json comes with its weights) are compared once written."""
    model = tiny_checkpoint(tmp_path / "m")
    out = tmp_path / "hf"
    export(model, out)
    record = json.loads((out / "mypt_export.json").read_text())
    (out / "mypt_export.json").write_text(json.dumps({"files": record["files"], "model": record["model"]}))
    config = json.loads((out / "tokenizer_config.json").read_text())
    (out / "tokenizer_config.json").write_text(json.dumps({**config, "model_max_length": 4096}))
    before = tree_bytes(out)
    saves = []
    real_save = transformers.PreTrainedModel.save_pretrained
    monkeypatch.setattr(transformers.PreTrainedModel, "save_pretrained",
                        lambda *args, **kwargs: saves.append(args) or real_save(*args, **kwargs))
    line = one_line_error(export(model, out, ok=False))
    assert "is an export from before mypt recorded its files' sums" in line and "tokenizer_config.json" in line, line
    assert "nothing changed" in line and not saves, line
    assert tree_bytes(out) == before
    (out / "tokenizer_config.json").unlink()  # the user's answer: it was mypt's
    export(model, out)
    assert len(saves) == 1 and json.loads((out / "mypt_export.json").read_text())["sha256"] == record["sha256"]


def test_a_damaged_sum_is_refused(tmp_path):
    model = tiny_checkpoint(tmp_path / "m")
    out = tmp_path / "hf"
    export(model, out)
    record = json.loads((out / "mypt_export.json").read_text())
    (out / "mypt_export.json").write_text(json.dumps({**record, "sha256": ["x"]}))
    before = tree_bytes(out)
    line = one_line_error(export(model, out, ok=False))
    assert "mypt_export.json is damaged" in line and "sha256" in line, line
    assert tree_bytes(out) == before


@pytest.mark.parametrize("message", [
    "Error while serializing: I/O error: No space left on device (os error 28)",
    'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })'])
def test_a_full_disk_is_one_line_and_keeps_the_previous_export(tmp_path, monkeypatch, message):
    """safetensors' writer (its Rust serialize_file, under transformers' save_pretrained)
    fails as on a full disk, having written part of the file."""
    import safetensors.torch
    from safetensors import SafetensorError

    model = tiny_checkpoint(tmp_path / "m")
    out = tmp_path / "hf"
    export(model, out)
    (out / "README.md").write_text("# card\n")
    before = tree_bytes(out)

    def full_disk(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"\0" * 100)
        raise SafetensorError(message)
    monkeypatch.setattr(safetensors.torch, "serialize_file", full_disk)
    line = one_line_error(export(model, out, ok=False))
    assert line == (f"Error: cannot write {out}: No space left on device; free some space, or choose an output on "
                    "another disk"), line
    assert tree_bytes(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf", "m"]  # no work directory left


@pytest.mark.slow
def test_a_real_write_failure_of_the_weights_is_one_line(tmp_path):
    """The real writer, in a process whose files may not grow past 64 KiB (RLIMIT_FSIZE: the
    write fails with EFBIG, as a full disk fails with ENOSPC): the weights (110 KB) cannot be
    written, the message says so in one line, and the previous export is as it was."""
    model = tiny_checkpoint(tmp_path / "m")
    out = tmp_path / "hf"
    export(model, out)
    before = tree_bytes(out)

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # (else the kernel kills the writer)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 10, 64 << 10))
    run = subprocess.run([sys.executable, "-m", "mypt.cli", "export-hf", "--model_name", str(model), "--out_dir",
                          str(out)], cwd=tmp_path, capture_output=True, text=True, preexec_fn=limit, timeout=300,
                         env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    lines = (run.stdout + run.stderr).strip().splitlines()
    assert run.returncode == 1 and len(lines) == 1, run.stdout + run.stderr
    assert lines[0] == f"Error: cannot write {out}: File too large", lines
    assert tree_bytes(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf", "m"]
