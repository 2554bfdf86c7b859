"""Keep each dvc.yaml stage's deps equal to the mypt modules its script imports.

DVC does not follow imports, so a stage must list every module its script imports, directly
or not (function-level imports included): edit one and `dvc repro` reruns the stage. This
reads the import graph with `ast` (nothing is imported) and rewrites the `- mypt/...` lines
of each stage's deps, right after the stage script's own line: the modules, then the package
data they declare reading (a module's `DATA_DEPS`, e.g. the presets under mypt/configs).

    python scripts/dvc_deps.py --check   # exit 1 and list the differences when out of date
    python scripts/dvc_deps.py --write   # rewrite dvc.yaml's mypt deps

Also `import_graph()` for tests (the graph must have no cycle).
"""

from __future__ import annotations

import ast
import functools
import re
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent


def module_file(name: str, root: Path = REPO) -> Path | None:
    """mypt.a.b -> mypt/a/b.py or mypt/a/b/__init__.py (None when not a mypt module)."""
    base = root / Path(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def direct_imports(path: Path, root: Path = REPO) -> set[str]:
    """The mypt modules a file imports anywhere in it, and their parent packages."""
    stat = path.stat()
    return set(_direct_imports(str(path), stat.st_mtime_ns, stat.st_size, str(root)))


@functools.lru_cache(maxsize=None)
def _direct_imports(path: str, mtime_ns: int, size: int, root: str) -> frozenset[str]:
    # Cached by the file's version: every stage's closure reads the same modules (the check
    # took 4 s of parsing them again and again).
    path, root = Path(path), Path(root)
    found: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from mypt import checkpoint` imports a submodule; `from mypt.x import f`, a name.
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            if name.split(".")[0] != "mypt" or module_file(name, root) is None:
                continue
            parts = name.split(".")
            found.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return frozenset(found)


def _runtime_nodes(tree: ast.AST):
    """Every node of `tree` but the bodies of `if TYPE_CHECKING:` (imports for type hints
    only, which never run: they neither rerun a stage nor make a cycle)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            todo += node.orelse
        else:
            todo += ast.iter_child_nodes(node)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def import_graph(root: Path = REPO) -> dict[str, set[str]]:
    """mypt module -> the mypt modules it imports (parents of a module count: Python runs them)."""
    graph = {}
    for path in sorted((root / "mypt").rglob("*.py")):
        name = _module_name(path, root)
        graph[name] = direct_imports(path, root) - {name}
    return graph


def data_deps(path: Path) -> tuple[str, ...]:
    """The package data a module reads at run time, as it declares it: a top-level
    `DATA_DEPS = ("mypt/...", ...)` (the presets --config_file names, for one)."""
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "DATA_DEPS" for t in node.targets):
            return tuple(ast.literal_eval(node.value))
    return ()


def closure(script: Path, root: Path = REPO) -> list[str]:
    """Files of every mypt module `script` imports, directly or not, sorted; then the package
    data those modules declare (DATA_DEPS)."""
    graph = import_graph(root)
    todo, seen = list(direct_imports(script, root)), set()
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += graph.get(name, ())
    files = sorted((module_file(n, root) for n in seen), key=str)
    data = sorted({d for f in files for d in data_deps(f)})
    return [str(f.relative_to(root)) for f in files] + data


def stage_scripts(dvc_yaml: Path) -> dict[str, str]:
    """Stage name -> the stages/*.py script its cmd runs."""
    stages = yaml.safe_load(dvc_yaml.read_text(encoding="utf-8"))["stages"]
    out = {}
    for name, stage in stages.items():
        cmd = (stage.get("do") or stage)["cmd"]
        match = re.search(r"python (stages/\S+\.py)", cmd)
        if match:
            out[name] = match.group(1)
    return out


def expected_text(root: Path = REPO) -> str:
    """dvc.yaml with each stage's mypt deps set to its script's import closure."""
    dvc_yaml = root / "dvc.yaml"
    text = dvc_yaml.read_text(encoding="utf-8")
    scripts = stage_scripts(dvc_yaml)
    out, stage = [], None
    for line in text.splitlines(keepends=True):
        top = re.match(r"^  ([\w-]+):\s*$", line)
        if top:
            stage = top.group(1)
        if re.match(r"^\s*- mypt/\S+\s*$", line):
            continue  # rewritten below, after the script's line (every mypt/ dep is generated)
        out.append(line)
        script = scripts.get(stage)
        item = re.match(r"^(\s*)- (\S+)\s*$", line)
        if script and item and item.group(2) == script:
            out += [f"{item.group(1)}- {dep}\n" for dep in closure(root / script, root)]
    return "".join(out)


def main(argv: list[str]) -> int:
    if argv not in (["--check"], ["--write"]):
        print(__doc__)
        return 2
    current = (REPO / "dvc.yaml").read_text(encoding="utf-8")
    wanted = expected_text()
    if argv == ["--write"]:
        if wanted != current:
            (REPO / "dvc.yaml").write_text(wanted, encoding="utf-8")
        print("dvc.yaml deps are up to date" if wanted == current else "dvc.yaml deps rewritten")
        return 0
    if wanted == current:
        print("dvc.yaml deps are up to date")
        return 0
    import difflib

    sys.stdout.writelines(difflib.unified_diff(current.splitlines(True), wanted.splitlines(True),
                                               "dvc.yaml", "dvc.yaml (from the import graph)"))
    print("\ndvc.yaml deps are out of date: run `python scripts/dvc_deps.py --write`")
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
