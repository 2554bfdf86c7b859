"""The layout's promises: DVC deps right by construction, imports one way, every setting
defined once and reachable from params.yaml."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import importlib.util
import os
import re
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from conftest import REPO

from mypt.config import GenerateSettings, GPTConfig, TrainConfig
from mypt.settings import Settings


def _subclasses(cls: type) -> list[type]:
    return [c for s in cls.__subclasses__() for c in (s, *_subclasses(s))]


def settings_classes() -> list[type]:
    """Every settings dataclass of mypt: the subclasses of `Settings`, after importing each
    module that defines one (found in the source, not listed here: a new step's settings
    are checked without touching this file)."""
    for path in sorted((REPO / "mypt").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        if any(isinstance(node, ast.ClassDef) and any(getattr(b, "id", None) == "Settings" for b in node.bases)
               for node in tree.body):
            importlib.import_module(".".join(path.relative_to(REPO).with_suffix("").parts))
    return sorted(set(_subclasses(Settings)), key=lambda c: f"{c.__module__}.{c.__qualname__}")


SETTINGS = settings_classes()


def load_script(path: Path):
    spec = importlib.util.spec_from_file_location(f"_script_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


dvc_deps = load_script(REPO / "scripts" / "dvc_deps.py")


def test_dvc_yaml_deps_cover_every_module_each_stage_imports():
    current = (REPO / "dvc.yaml").read_text(encoding="utf-8")
    assert dvc_deps.expected_text(REPO) == current, "run `python scripts/dvc_deps.py --write`"
    stages = yaml.safe_load(current)["stages"]
    for name, script in dvc_deps.stage_scripts(REPO / "dvc.yaml").items():
        deps = set((stages[name].get("do") or stages[name])["deps"])
        assert set(dvc_deps.closure(REPO / script, REPO)) <= deps, name


def test_deps_check_names_a_missing_module(tmp_path):
    # A dvc.yaml whose clean stage forgot mypt/text.py fails the check, naming the module.
    root = tmp_path / "project"
    for name in ("mypt", "stages"):
        import shutil

        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    text = (REPO / "dvc.yaml").read_text(encoding="utf-8")
    broken = text.replace("        - mypt/text.py\n", "", 1)
    (root / "dvc.yaml").write_text(broken, encoding="utf-8")
    assert "- mypt/text.py" in dvc_deps.expected_text(root)
    assert dvc_deps.expected_text(root) != broken


def test_the_train_stages_depend_on_the_presets_they_read():
    # The demo trains from the preset params.yaml names (train.config_file); its settings that
    # params.yaml leaves out (bias, gelu) come from there, so an edit must rerun train and adapt.
    import importlib.resources

    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    preset = importlib.resources.files("mypt") / "configs" / f"{params['train']['config_file']}.json"
    assert Path(str(preset)).is_file()
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    for name in ("train", "adapt"):
        deps = stages[name]["deps"]
        assert any(Path(str(preset)).resolve().is_relative_to((REPO / d).resolve()) for d in deps), name
    assert "mypt/configs" not in stages["eval"]["do"]["deps"]  # eval reads checkpoints, not presets


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    cycles, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return cycles


def test_imports_flow_one_way():
    # Explicit imports only: a parent package runs before its submodules, which is no cycle.
    graph = {m: {d for d in deps if not m.startswith(d + ".") and d != "mypt"}
             for m, deps in dvc_deps.import_graph(REPO).items()}
    assert _cycles(graph) == []
    assert "mypt.model" not in graph["mypt.train"] and "mypt.model" not in graph["mypt.checkpoint"]
    # The library never imports the commands; stages never import each other or the CLI.
    assert not any("mypt.cli" in deps for m, deps in graph.items() if m != "mypt.cli")
    for script in (REPO / "stages").glob("*.py"):
        assert "mypt.cli" not in dvc_deps.direct_imports(script, REPO), script.name
        assert "stages" not in script.read_text(encoding="utf-8").split("import", 1)[-1].split("\n")[0]


def test_stage_scripts_run_their_checkouts_mypt(tmp_path):
    """dvc.lock hashes this checkout's mypt/ as each stage's deps: a stage must run that code,
    not another mypt the Python has installed (a shared environment's, another clone's editable
    install), which would come first on sys.path after the script's own folder."""
    import subprocess
    import sys

    first_mypt = re.compile(r"^(from|import) mypt", re.M)
    for script in sorted((REPO / "stages").glob("*.py")):
        head = first_mypt.split(script.read_text(encoding="utf-8"), 1)[0]
        assert "sys.path.insert(0, str(Path(__file__).resolve().parents[1]))" in head, script.name
    (tmp_path / "mypt").mkdir()
    (tmp_path / "mypt" / "__init__.py").write_text('raise ImportError("another mypt")\n')
    done = subprocess.run([sys.executable, str(REPO / "stages" / "vocab.py"), "--help"], capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(tmp_path)}, cwd=tmp_path)
    assert done.returncode == 0 and "--out_dir" in done.stdout, done.stderr[-1000:]


def _command_options(script: Path) -> set[str]:
    command = load_script(script).main
    return {opt.lstrip("-") for p in command.params for opt in p.opts + p.secondary_opts}


def test_every_params_key_is_a_setting_that_its_stage_takes():
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    fields = {f.name for cls in SETTINGS for f in dataclasses.fields(cls)}
    used = set()
    for name, script in dvc_deps.stage_scripts(REPO / "dvc.yaml").items():
        cmd = (stages[name].get("do") or stages[name])["cmd"]
        options = _command_options(REPO / script)
        for flag, section, key in re.findall(r"--(\w+) \"?\$\{(\w+)\.(\w+)\}", cmd):  # --flag ${section.key}
            assert flag in options, f"{name}: {script} has no --{flag}"
            assert flag == key, f"{name}: --{flag} takes ${{{section}.{key}}}: a params key is its flag's name"
            used.add((section, key))
        for section in set(re.findall(r"\$\{(\w+)\}", cmd)) - {"item", "key"}:  # ${section}: every key a flag
            for key in params[section]:
                assert key in options, f"{name}: {script} has no --{key} (params.yaml {section}.{key}, ${{{section}}})"
                used.add((section, key))
    adapt_cmd = stages["adapt"]["cmd"]
    for section, values in params.items():
        if section == "corpora":  # the pipeline's inputs (foreach), not settings
            continue
        if section == "adapt_mixture":  # --dataset_dir NAME=PATH:WEIGHT, a weight per dataset
            for key in values:
                assert f"--dataset_dir {key}=data/datasets/{key}:${{adapt_mixture.{key}}}" in adapt_cmd, key
            continue
        for key in values:
            assert key in fields, f"params.yaml {section}.{key} is not a settings field"
            assert (section, key) in used, f"params.yaml {section}.{key} is passed to no stage"


def _option_flags(tree: ast.AST) -> list[tuple[str, int]]:
    """(flag, line) of every hand-written option(...)/click.option(...) with a default= other
    than None (None repeats no value: fetch-demo's optional --out_dir is not export-hf's)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) == "option":
            default = next((k.value for k in node.keywords if k.arg == "default"), None)
            written = default is not None and not (isinstance(default, ast.Constant) and default.value is None)
            if node.args and isinstance(node.args[0], ast.Constant) and written:
                found.append((node.args[0].value.split("/")[0].strip().lstrip("-"), node.lineno))
    return found


def test_no_setting_default_is_written_outside_its_field():
    fields = {f.name for cls in SETTINGS for f in dataclasses.fields(cls)} | \
        {f.metadata["flag"] for cls in SETTINGS for f in dataclasses.fields(cls) if f.metadata.get("flag")}
    for path in [REPO / "mypt" / "cli.py", *sorted((REPO / "stages").glob("*.py"))]:
        for flag, line in _option_flags(ast.parse(path.read_text(encoding="utf-8"))):
            assert flag not in fields, f"{path.name}:{line}: --{flag} is a setting: generate it (settings_options)"


def test_guide_flags_and_kebab_aliases_exist():
    from mypt.cli import main

    expected = {
        "prepare-dataset": ["input_files", "out_dir", "tokenization", "tokens_per_shard", "val_fraction",
                            "no_normalize", "no_filter", "no_dedup"],
        "train": ["dataset_dir", "input_file", "model_name", "config_file", "max_iters", "learning_rate",
                  "tokenization", "init_from_model", "eval_dataset_dir", "lr_decay_iters", "beta2", "resume"],
        "generate": ["model_name", "prompt"],
    }
    for command, flags in expected.items():
        params = main.get_command(None, command).params
        opts = {o for p in params for o in p.opts + p.secondary_opts}
        for flag in flags:
            assert f"--{flag}" in opts and f"--{flag.replace('_', '-')}" in opts, (command, flag)
    # Every training setting is a flag.
    train_opts = {o for p in main.get_command(None, "train").params for o in p.opts}
    assert {f"--{f.name}" for f in dataclasses.fields(TrainConfig)} <= train_opts


@pytest.mark.parametrize("cls, bad, message", [
    (GPTConfig, {"dropout": "0.1"}, "dropout: must be a number"),
    (GPTConfig, {"bias": "no"}, "bias: must be true or false"),
    (TrainConfig, {"batch_size": True}, "batch_size: must be an integer"),
    (TrainConfig, {"beta2": 1.0}, "beta2: must be < 1.0"),
    (TrainConfig, {"min_lr": -1.0}, "min_lr: must be >= 0.0"),
    (TrainConfig, {"dtype": "fp8"}, "dtype: 'fp8' is not one of"),
    (GenerateSettings, {"model_name": "m", "temperature": float("nan")}, "temperature: must be a finite number"),
])
def test_settings_check_types_and_ranges(cls, bad, message):
    from mypt.errors import ConfigError

    with pytest.raises(ConfigError, match=re.escape(message)):
        cls.from_dict(bad, "config.json")


def test_user_errors_are_one_line_without_traceback(tmp_path):
    from mypt.cli import main

    result = CliRunner().invoke(main, ["generate", "--model_name", str(tmp_path / "nope"), "--device", "cpu"])
    assert result.exit_code == 1 and "Traceback" not in result.output and "nope" in result.output
    result = CliRunner().invoke(main, ["generate", "--model_name", "x", "--temperature", "nan"])
    assert result.exit_code == 2 and "'--temperature': nan is not a finite number in the range x>=0.0" in result.output
