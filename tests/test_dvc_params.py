"""params.yaml reaches the stages whole: each stage's cmd unpacks its section (`${clean}`), so
every key becomes a flag of the stage script, and a key the stage does not know (a typo) is
its "No such option" error instead of being ignored.

Checked without running DVC's stages: DVC renders every stage's cmd from the project's
dvc.yaml, params.yaml and .dvc/config, and the stage script's own click parser reads it back,
which must give each params value, booleans set either way included. (`dvc repro` with a typo:
tests/test_dvc_pipeline.py, slow.)"""

from __future__ import annotations

import configparser
import importlib.util
import re
import shlex
import shutil
from pathlib import Path

import click
import pytest
import yaml
from conftest import REPO

NOT_UNPACKED = {"corpora": "the inputs, one stage per corpus (foreach)",
                "adapt_mixture": "weights inside --dataset_dir NAME=PATH:WEIGHT"}


def stage_main(script: str) -> click.Command:
    spec = importlib.util.spec_from_file_location(f"_stage_{Path(script).stem}", REPO / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def rendered(tmp_path: Path, change=None, parsing_from_repo: bool = True) -> tuple[dict, dict[str, str]]:
    """(params, {stage: cmd}) as DVC renders them in a copy of the project (params edited by
    `change`); the copy's .dvc/config is the project's, or sets only parsing.bool."""
    from dvc.repo import Repo

    root, params = project_copy(tmp_path, change, parsing_from_repo)
    with Repo(str(root)) as repo:
        return params, {s.name: s.cmd for s in repo.index.stages}


def project_copy(tmp_path: Path, change=None, parsing_from_repo: bool = True) -> tuple[Path, dict]:
    """A copy of the project's dvc.yaml, params.yaml and .dvc/config that DVC can read without
    git, and its params."""
    root = tmp_path / "project"
    (root / ".dvc").mkdir(parents=True)
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    if change:
        change(params)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    if parsing_from_repo:
        shutil.copy(REPO / ".dvc" / "config", root / ".dvc" / "config")
    else:
        (root / ".dvc" / "config").write_text("[parsing]\n    bool = boolean_optional\n")
    (root / ".dvc" / "config.local").write_text("[core]\n    no_scm = true\n")  # no git repo needed here
    return root, params


def parse(cmd: str) -> tuple[str, click.Context]:
    """The stage script of `cmd` and its click context for the cmd's arguments (run in a
    directory where the paths that must exist do: empty directories)."""
    words = shlex.split(cmd)
    assert words[0] == "python" and words[1].startswith("stages/"), cmd
    main = stage_main(words[1])
    must_exist = {opt for p in main.params if isinstance(p.type, click.Path) and p.type.exists for opt in p.opts}
    for flag, value in zip(words, words[1:]):
        if flag in must_exist:
            Path(value).mkdir(parents=True, exist_ok=True)
    return words[1], main.make_context(words[1], words[2:])


def unpacked(stages_yaml: dict) -> dict[str, set[str]]:
    """Stage name -> the params sections its cmd unpacks whole (`${section}`)."""
    out = {}
    for name, stage in stages_yaml.items():
        out[name] = set(re.findall(r"\$\{(\w+)\}", (stage.get("do") or stage)["cmd"])) - {"item", "key"}
    return out


def flip_booleans(params: dict) -> None:
    """Every boolean of a stage's section set against its committed value: both the --x and
    the --no-x forms must reach the stage."""
    for section, values in params.items():
        if section not in NOT_UNPACKED:
            for key, value in values.items():
                if isinstance(value, bool):
                    values[key] = not value


@pytest.mark.parametrize("change", [None, flip_booleans], ids=["committed", "booleans_flipped"])
def test_every_stage_gets_every_key_of_its_section(tmp_path, monkeypatch, change):
    params, cmds = rendered(tmp_path, change, parsing_from_repo=False)
    monkeypatch.chdir(tmp_path)
    sections = unpacked(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"])
    covered = set()
    for address, cmd in cmds.items():
        script, ctx = parse(cmd)
        for section in sections[address.split("@")[0]]:
            covered.add(section)
            for key, value in params[section].items():
                assert ctx.params[key] == value, f"{address}: {section}.{key} = {value!r} reached {script} " \
                                                 f"as {ctx.params[key]!r}"
    assert covered == set(params) - set(NOT_UNPACKED), "a params section no stage unpacks: its typos pass"


def test_an_unknown_key_is_the_stage_s_error_naming_it(tmp_path, monkeypatch):
    _, cmds = rendered(tmp_path, lambda p: p["train"].update(learnin_rate=0.1), parsing_from_repo=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(click.NoSuchOption, match="--learnin_rate"):
        parse(cmds["train"])
    parse(cmds["adapt"])  # only the train stage reads the train section whole


def test_the_project_config_passes_false_booleans():
    """DVC's default (parsing.bool store_true) drops a false boolean from the cmd, so
    `clean.normalize: false` would leave normalize on without a word: the project's
    .dvc/config must render false as --no-x."""
    config = configparser.ConfigParser()
    config.read(REPO / ".dvc" / "config")
    assert config.get("parsing", "bool", fallback=None) == "boolean_optional", \
        ".dvc/config needs [parsing] bool = boolean_optional (see dvc.yaml's header)"


def test_a_whole_number_written_as_a_float_is_the_count_and_a_fraction_is_refused(tmp_path, monkeypatch):
    """params.yaml's `max_iters: 1e3` is a float in DVC's YAML 1.2 and reaches the stage as
    `--max_iters 1000.0`: the stage takes it as 1000. A fraction (`batch_size: 12.5`) is the
    stage's error naming the flag and the value."""
    from dvc.repo import Repo

    root, _ = project_copy(tmp_path)
    text = (root / "params.yaml").read_text()
    text = re.sub(r"(?m)^(  max_iters:) 750$", r"\1 1e3", text)
    text = re.sub(r"(?m)^(eval:\n(?:  .*\n)*?  batch_size:) 32$", r"\1 12.5", text)
    (root / "params.yaml").write_text(text)
    with Repo(str(root)) as repo:
        cmds = {s.name: s.cmd for s in repo.index.stages}
    monkeypatch.chdir(tmp_path)
    assert "--max_iters 1000.0" in cmds["train"]  # (what DVC passes)
    assert parse(cmds["train"])[1].params["max_iters"] == 1000
    with pytest.raises(click.BadParameter, match=r"'12.5' is not a whole number") as e:
        parse(cmds["eval@base"])
    assert "--batch_size" in e.value.param.opts


@pytest.mark.parametrize("script", sorted(p.relative_to(REPO).as_posix() for p in (REPO / "stages").glob("*.py")))
def test_every_stage_script_takes_h_for_help_as_mypt_does(script):
    from click.testing import CliRunner

    short, long = (CliRunner().invoke(stage_main(script), [flag]) for flag in ("-h", "--help"))
    assert short.exit_code == 0 and short.output == long.output and "Usage:" in short.output, short.output
