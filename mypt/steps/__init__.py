"""The data steps: clean -> dedup -> vocab -> tokenize -> shard -> split.

Each step is a module here that owns its settings class, its function and its `STEP`
definition. A step reads the directory the previous step wrote (its `manifest.json` names
the sources in corpus order and carries settings and stats forward) and builds its own
output directory crash-safely (`io.staged_dir`). The DVC stages call one step each;
`mypt.prepare` composes them. No step's output depends on the number of workers: work is
cut into blocks whose boundaries depend only on the data.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from mypt.errors import InputError
from mypt.io import Written, read_json
from mypt.names import MANIFEST

# What the clean and dedup steps write: one text file per source (`00003-wiki.txt`). With the
# manifest, everything such an output holds: a replace carries over anything else (io.staged_dir).
SOURCE_FILES = ("[0-9][0-9][0-9][0-9][0-9]-*.txt", "[0-9][0-9][0-9][0-9][0-9]-*.jsonl")


@dataclass(frozen=True)
class Step:
    name: str
    reads: tuple[str, ...] = ()  # the steps whose output directory this step takes as input


def read_input(step: Step, in_dir: Path) -> dict:
    """The manifest of `in_dir`, checked to be the output of a step that `step` reads."""
    path = Path(in_dir) / MANIFEST
    wanted = " or ".join(step.reads)
    if not path.is_file():
        raise InputError(f"{in_dir} has no {MANIFEST}: run the {wanted} step (or stage) first; "
                         f"the {step.name} step reads its output")
    manifest = read_json(path)
    if manifest.get("step") not in step.reads:
        raise InputError(f"{in_dir} is the output of the {manifest.get('step')!r} step, but the {step.name} "
                         f"step reads the output of {wanted}")
    return manifest


def step_files(step: Step, files: Callable[[dict], Iterable[str]]) -> Written:
    """What the step's previous output holds, by its manifest.json (io.check_written: only
    those files are mypt's to replace): `files` of the manifest. A manifest.json of another
    step, or of another tool, is not this step's output."""
    def written(out_dir: Path) -> list[str]:
        manifest = read_json(Path(out_dir) / MANIFEST)
        seen = manifest.get("step") if isinstance(manifest, dict) else None
        if seen != step.name:
            raise InputError(f"its {MANIFEST} is not the {step.name} step's ("
                             + (f"the {seen!r} step's" if isinstance(seen, str) else "no mypt step's") + ")")
        try:
            return list(files(manifest))
        except (KeyError, TypeError, ValueError, ZeroDivisionError, AttributeError) as e:
            raise InputError(f"its {MANIFEST} does not say what the {step.name} step wrote ({e!r})") from None
    return written


def part_file(index: int, kind: str) -> str:
    """The tokenize step's file of source `index`: its tokens (`00003.tokens`) or where its
    documents end (`00003.docs`)."""
    return f"{index:05d}.{kind}"


def source_files(manifest: dict) -> list[str]:
    """The clean and dedup steps' files: one per source, named in the manifest."""
    return [s["file"] for s in manifest["sources"]]


def bad_lines_note(manifest: dict) -> str | None:
    """What the console says about skipped JSONL lines (the clean stage, prepare-dataset)."""
    n = manifest["stats"].get("clean", {}).get("bad_json_lines", 0)
    if not n:
        return None
    return (f"Bad JSONL lines skipped: {n:,} (first: {manifest['first_bad_json_line']}); "
            "--strict makes them an error")
