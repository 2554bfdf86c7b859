"""The README run as written: every block of commands in it either names the test that runs
those commands or says it is illustrative (the convention is in the README's Development
section). A command block is a fenced block in bash/sh/shell, or any fenced block with a
`$ ` prompt line; its marker is the HTML comment on the line above the fence:

    <!-- tested: tests/test_dvc_workflow.py::test_stage_by_hand_then_commit_leaves_status_clean -->
    <!-- illustrative: a 150M model trained for 50,000 steps -->

A tested block's commands must appear in the named tests: each program with its subcommand
(`mypt eval`, `dvc commit`, `python stages/eval.py`) and each `--flag` it passes, so a flag
renamed in the code and the tests but not in the README fails here."""

from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path

import pytest
from conftest import REPO

MARKER = re.compile(r"<!--\s*(tested|illustrative):\s*(.+?)\s*-->")
SHELL = {"bash", "sh", "shell", "console"}


def command_blocks(text: str) -> list[tuple[int, str, str]]:
    """(line number of the fence, the marker line above it, the block's text)."""
    lines, blocks, i = text.splitlines(), [], 0
    while i < len(lines):
        if lines[i].startswith("```"):
            lang, start = lines[i][3:].strip(), i
            end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
            body = lines[start + 1:end]
            if lang in SHELL or any(line.startswith("$ ") for line in body):
                above = lines[start - 1] if start else ""
                blocks.append((start + 1, above, "\n".join(body)))
            i = end
        i += 1
    return blocks


def commands(block: str) -> list[list[str]]:
    """The words of each command (continuations joined, comments and outputs dropped)."""
    text = block.replace("\\\n", " ")
    if any(line.startswith("$ ") for line in text.splitlines()):  # a transcript: the prompt lines
        text = "\n".join(line[2:] for line in text.splitlines() if line.startswith("$ "))
    out = []
    for line in text.splitlines():
        for part in re.split(r"&&|\|", line):
            words = shlex.split(part, comments=True)
            if words:
                out.append(words)
    return out


def needles(words: list[str]) -> list[str]:
    """What a test running this command must contain: the program's subcommand (or stage
    script) and every --flag."""
    program, rest = words[0], words[1:]
    found = [w.split("=")[0] for w in rest if w.startswith("--")]
    if program == "mypt" and rest:
        found.append(rest[0])
    if program in ("dvc", "git"):  # as the tests spell them: dvc("metrics", "show", ...)
        found += [f'"{w}"' for w in rest[:2] if re.fullmatch(r"[a-z]+", w)]
    if program == "python" and rest and rest[0].startswith("stages/"):
        found.append(rest[0])
    return found


def source_of(ref: str) -> str:
    """The source of the test `tests/FILE.py::NAME` and of the functions of FILE it calls,
    directly or not (its helpers and fixtures)."""
    path, _, name = ref.partition("::")
    text = (REPO / path).read_text(encoding="utf-8")
    functions = {node.name: ast.get_source_segment(text, node) for node in ast.parse(text).body
                 if isinstance(node, ast.FunctionDef)}
    assert name in functions, f"{ref}: no such test"
    todo, seen = [name], set()
    while todo:
        current = todo.pop()
        if current not in seen:
            seen.add(current)
            todo += [f for f in functions if re.search(rf"\b{f}\b", functions[current])]
    return "\n".join(functions[f] for f in seen)


BLOCKS = command_blocks((REPO / "README.md").read_text(encoding="utf-8"))


def test_the_readme_has_command_blocks():
    assert len(BLOCKS) > 10  # the extraction finds them (a changed fence style would pass everything)


@pytest.mark.parametrize("line, above, block", BLOCKS, ids=[f"README.md:{b[0]}" for b in BLOCKS])
def test_every_command_block_is_tested_or_illustrative(line, above, block):
    marker = MARKER.fullmatch(above.strip())
    assert marker, f"README.md:{line}: put <!-- tested: tests/FILE.py::TEST --> or <!-- illustrative: WHY --> " \
                   f"on the line above this block:\n{block}"
    if marker[1] == "illustrative":
        return
    sources = "\n".join(source_of(ref.strip()) for ref in marker[2].split(","))
    for words in commands(block):
        missing = [n for n in needles(words) if n not in sources]
        assert not missing, f"README.md:{line}: {' '.join(words)!r}: {missing} appear in none of {marker[2]}"
