"""--logger: a run's metrics through dvclive, TensorBoard, MLflow and W&B, each read back with its
own reader: the same metric names and steps in every one, and --resume continues each one's
run without logging a step twice."""

from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import char_dataset
from mypt.cli import main
from mypt.config import RunSettings
from mypt.errors import ConfigError, InputError
from mypt.tracking import open_tracker

SETTINGS = ["--device=cpu", "--max_iters=30", "--eval_interval=10", "--eval_iters=2", "--log_interval=5"]


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text("".join(f"Line {i} of the king's speech, and the queen's reply {i * 7}.\n" for i in range(300)))
    return path


@pytest.fixture
def logger_env(tmp_path, monkeypatch):
    """MLflow's store and W&B's files under tmp_path only, W&B offline and quiet."""
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID", "WANDB_DIR", "WANDB_API_KEY",
                "WANDB_PROJECT", "WANDB_ENTITY", "WANDB_RUN_ID", "WANDB_RESUME"):
        monkeypatch.delenv(var, raising=False)
    home = tmp_path / "wandb-home"
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONSOLE", "off")  # no wrapping of pytest's captured stdout
    monkeypatch.setenv("WANDB_DISABLE_CODE", "true")
    monkeypatch.setenv("WANDB_DISABLE_GIT", "true")
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(home / var.lower()))
    yield
    if sys.modules.get("wandb"):  # wandb keeps the variables it first read for the process: the next test's are new
        sys.modules["wandb"].teardown()


# Each logger's own reader: {metric: [(step, value), ...]} in the order logged.

def read_dvclive(directory: Path) -> dict:
    curves = {}
    for path in sorted((directory / "plots" / "metrics").glob("*.tsv")):
        with open(path, encoding="utf-8", newline="") as f:
            curves[path.stem] = [(int(r["step"]), float(r[path.stem])) for r in csv.DictReader(f, delimiter="\t")]
    return curves


def read_tensorboard(directory: Path) -> dict:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(directory / "tensorboard"), size_guidance={"scalars": 0})  # 0: keep every point
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def read_mlflow(directory: Path) -> dict:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{directory / 'mlflow.db'}")
    (run,) = client.search_runs(["0"])  # one run, resumed in place
    return {name: [(m.step, m.value) for m in sorted(client.get_metric_history(run.info.run_id, name),
                                                     key=lambda m: (m.step, m.timestamp))]
            for name in sorted(run.data.metrics)}


def wandb_records(path: Path):
    """The records of a .wandb transaction log: a 7-byte header (":W&B", key, version), then
    LevelDB's log format (32 KiB blocks; chunks of crc32c, length, type: 1 full, 2 first,
    3 middle, 4 last), each record one protobuf `Record` of wandb's own schema."""
    from wandb.proto.wandb_internal_pb2 import Record

    data, pos, block, pending = path.read_bytes(), 7, 32768, b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            yield Record.FromString(pending)
            pending = b""


def read_wandb(directory: Path) -> dict:
    """Every offline run directory of the one run id, oldest first (a resumed run gets one)."""
    import wandb

    wandb.teardown()  # run.finish() returns before wandb's service has written the log's last records
    logs = sorted((directory / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len({log.name for log in logs}) == 1, logs
    curves: dict = {}
    for log in logs:
        for record in wandb_records(log):
            if record.WhichOneof("record_type") == "history":
                row = {item.key or "/".join(item.nested_key): json.loads(item.value_json)
                       for item in record.history.item}
                for name, value in row.items():
                    if not name.startswith("_"):
                        curves.setdefault(name, []).append((row["_step"], value))
    return dict(sorted(curves.items()))


READERS = {"dvclive": read_dvclive, "tensorboard": read_tensorboard, "mlflow": read_mlflow, "wandb": read_wandb}
# Import and start cost more than a quick test's 2 s: MLflow's SQLite store (its schema made
# on first use), W&B's service process.
LOGGERS = ["dvclive", "tensorboard", pytest.param("mlflow", marks=pytest.mark.slow),
           pytest.param("wandb", marks=pytest.mark.slow)]


def test_logger_takes_comma_lists_and_repeats_and_defaults_to_dvclive_with_a_metrics_dir(tmp_path):
    run = RunSettings(model_name="m", input_file=None, metrics_dir=tmp_path / "m",
                      logger=("tensorboard,mlflow", "tensorboard", "wandb"))
    assert run.loggers == ("tensorboard", "mlflow", "wandb")
    assert RunSettings(model_name="m", metrics_dir=tmp_path / "m", logger="tensorboard").loggers == ("tensorboard",)
    assert RunSettings(model_name="m", metrics_dir=tmp_path / "m").loggers == ("dvclive",)
    assert RunSettings(model_name="m").loggers == ()


@pytest.mark.parametrize("flags, message", [
    (["--logger", "dvclive,tb", "--metrics_dir", "m"], "unknown logger 'tb': choose among dvclive, tensorboard"),
    (["--logger", "tensorboard"], "Error: --logger tensorboard writes its files (and the run ids --resume continues) "
                                  "under --metrics_dir: give --metrics_dir DIR too"),
    (["--logger", "dvclive", "--logger", "wandb", "--metrics_dir", "m"],
     "--logger wandb needs the wandb package, which is not installed: pip install 'mypt[wandb]'"),
])
def test_a_bad_logger_choice_is_one_line_before_the_run_starts(flags, message, corpus, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if wandb were not installed
    monkeypatch.chdir(tmp_path)
    done = CliRunner().invoke(main, ["train", "--input_file", str(corpus), "--tokenization", "char", "--model_name",
                                     "m", "--config_file", "tiny", *SETTINGS, *flags])
    assert done.exit_code == 1 and message in done.output and len(done.output.strip().splitlines()) == 1, done.output
    assert not (tmp_path / "m").exists() and not (tmp_path / "checkpoints").exists()


@pytest.mark.parametrize("name", LOGGERS)
def test_a_resumed_run_continues_the_killed_runs_curves_without_logging_a_step_twice(name, tmp_path, logger_env,
                                                                                     monkeypatch):
    directory = tmp_path / "live"
    if name == "mlflow":  # a store of MLflow's choosing: its file store takes 0.1 s to start, SQLite's 8 s
        monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
        monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    killed = open_tracker((name,), directory, "m")
    for step in (0, 10, 20, 30):  # fit hands an evaluation and the train loss of a step in two calls
        killed(step, {"val": 1.0 + step})
        killed(step, {"train_loss": 2.0 + step})
    killed.close(failed=True)  # killed after step 30; its last checkpoint is of step 20

    resumed = open_tracker((name,), directory, "m", resume=True, resume_step=20)
    for step in (30, 40):
        resumed(step, {"val": 100.0 + step})
        resumed(step, {"train_loss": 200.0 + step})
    resumed.close()

    curves = READERS[name](directory)
    if name in ("mlflow", "wandb"):  # the run's record names the model: another model's run is refused it
        assert json.loads((directory / f"{name}_run.json").read_text())["model"] == "m"
    assert sorted(curves) == ["train_loss", "val"]
    assert [step for step, _ in curves["val"]] == [step for step, _ in curves["train_loss"]] == [0, 10, 20, 30, 40]
    # dvclive and TensorBoard drop what a killed run logged after its checkpoint; MLflow's and
    # W&B's histories only grow, so a step keeps the value first logged.
    first = name in ("mlflow", "wandb")
    assert dict(curves["val"]) == {0: 1.0, 10: 11.0, 20: 21.0, 30: 31.0 if first else 130.0, 40: 140.0}
    assert dict(curves["train_loss"])[30] == (32.0 if first else 230.0)


@pytest.mark.slow
@pytest.mark.parametrize("name, message", [
    ("mlflow", ["--resume: the MLflow run 0123abcd of {d}/mlflow_run.json is not in the tracking store file://",
                "(it was logged to sqlite:///elsewhere.db): set MLFLOW_TRACKING_URI to that store, or delete"]),
    ("wandb", ["--logger wandb: ", "API key", "; or set WANDB_MODE=offline to log locally"]),  # wandb's words between
])
def test_a_logger_that_cannot_open_its_run_says_what_to_do(name, message, tmp_path, logger_env, monkeypatch):
    directory = tmp_path / "live"
    directory.mkdir()
    (directory / "mlflow_run.json").write_text('{"run_id": "0123abcd", "where": "sqlite:///elsewhere.db"}')
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.delenv("WANDB_MODE")  # online, and not logged in
    with pytest.raises(ConfigError) as e:
        open_tracker((name,), directory, "m", resume=True, resume_step=10)
    assert all(part.format(d=directory) in str(e.value) for part in message) and "\n" not in str(e.value)


def test_a_new_run_replaces_the_previous_runs_tensorboard_curves_as_dvclive_does(tmp_path):
    for value, steps in ((1.0, (0, 10, 20)), (2.0, (0, 10))):
        tracker = open_tracker(("tensorboard", "dvclive"), tmp_path / "live", "m")
        for step in steps:
            tracker(step, {"val": value})
        tracker.close()
    assert read_tensorboard(tmp_path / "live") == read_dvclive(tmp_path / "live") == {"val": [(0, 2.0), (10, 2.0)]}


@pytest.mark.parametrize("resume", [False, True])
def test_dvclive_cuts_back_and_clears_only_the_curves_its_run_logged(tmp_path, resume):
    """Which curves of a metrics directory are mypt's is what its metrics.json lists: a curve a
    mypt run could log (eval_NAME) but this one did not, put there by hand, is refused, not
    deleted by a new run nor cut back to the checkpoint's step by a resumed one."""
    directory = tmp_path / "live"
    killed = open_tracker(("dvclive",), directory, "m")
    for step in (0, 10, 20, 30):
        killed(step, {"val": 1.0 + step, "train_loss": 2.0 + step})
    killed.close(failed=True)
    (directory / "plots" / "metrics" / "eval_mine.tsv").write_text("step\teval_mine\n0\t1.5\n30\t1.2\n")
    before = {p: p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}
    with pytest.raises(InputError, match=r"holds files no mypt run wrote, .*: plots/metrics/eval_mine\.tsv;"):
        open_tracker(("dvclive",), directory, "m", resume=resume, resume_step=20 if resume else None)
    assert {p: p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()} == before


@pytest.mark.slow
def test_every_logger_gets_the_same_metrics_at_the_same_steps_and_resume_continues_each_run(corpus, tmp_path,
                                                                                          logger_env, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["train", "--input_file", str(corpus), "--tokenization", "char", "--model_name", "m", "--config_file",
            "tiny", *SETTINGS, "--metrics_dir", "runs/m", "--logger", "dvclive,tensorboard", "--logger",
            "mlflow,wandb"]
    done = CliRunner().invoke(main, args)
    assert done.exit_code == 0, done.output
    done = CliRunner().invoke(main, [*args, "--resume", "--max_iters=40"])
    assert done.exit_code == 0, done.output

    live = tmp_path / "runs" / "m"
    curves = {name: read(live) for name, read in READERS.items()}
    steps = {name: {metric: [step for step, _ in points] for metric, points in c.items()} for name, c in curves.items()}
    assert steps["dvclive"] == {"lr": list(range(5, 41, 5)), "tokens_per_s": list(range(5, 41, 5)),
                                "train_loss": list(range(5, 41, 5)), "val": [0, 10, 20, 30, 40]}
    assert steps["tensorboard"] == steps["mlflow"] == steps["wandb"] == steps["dvclive"]
    for name in ("tensorboard", "mlflow", "wandb"):  # the same values too (TensorBoard keeps float32)
        assert [v for _, v in curves[name]["val"]] == pytest.approx([v for _, v in curves["dvclive"]["val"]])
    assert json.loads((live / "wandb_run.json").read_text())["run_id"] in (live / "wandb" / "latest-run").resolve().name


@pytest.mark.parametrize("name", ["mlflow", "wandb"])
@pytest.mark.parametrize("record, said", [
    pytest.param("my notes", "holds {name}_run.json, which no mypt run wrote and --logger {name} would overwrite: "
                             "choose another --metrics_dir, or move it out of it", id="a user's file"),
    pytest.param('{"model": "other", "run_id": "0123abcd", "where": "elsewhere", "last_step": {"val": 20}}',
                 "holds {name}_run.json, the {name} run of model 'other', not of 'm': choose a --metrics_dir of this "
                 "model's own", id="another model's record"),
])
@pytest.mark.parametrize("resume", [False, True])
def test_a_run_record_no_run_of_this_model_wrote_is_refused_and_kept(name, record, said, resume, corpus, tmp_path,
                                                                     logger_env, monkeypatch):
    """MLflow's and W&B's record (the run --resume continues) is the model's own: a user's file of
    that name, or another model's record (a resume would log into its run), is refused in one
    line before the first step, before dvclive writes a file, and left as it was."""
    monkeypatch.chdir(tmp_path)
    args = ["train", "--input_file", str(corpus), "--tokenization", "char", "--model_name", "m", "--config_file",
            "tiny", *SETTINGS]
    if resume:
        assert CliRunner().invoke(main, [*args, "--max_iters=2"]).exit_code == 0
    live = tmp_path / "live"
    live.mkdir()
    (live / f"{name}_run.json").write_text(record)
    done = CliRunner().invoke(main, [*args, "--metrics_dir", "live", "--logger", f"dvclive,{name}",
                                     *(["--resume", "--max_iters=4"] if resume else [])])
    last = done.output.strip().splitlines()[-1]  # (after the tokenizer's lines of an --input_file run)
    assert done.exit_code == 1 and last.startswith(f"Error: --metrics_dir live {said.format(name=name)}"), done.output
    assert "step 0" not in done.output and "Traceback" not in done.output
    assert sorted(p.name for p in live.iterdir()) == [f"{name}_run.json"]
    assert (live / f"{name}_run.json").read_text() == record


@pytest.mark.slow
def test_a_finished_run_whose_loss_plot_cannot_be_written_warns_and_exits_0(corpus, tmp_path, monkeypatch):
    """A full disk as the run's last file, the loss PNG, is written: training completed and its
    checkpoint is saved, so the command says so in a warning and succeeds (a failed DVC stage loses
    its outputs, the checkpoint among them); metrics.json is ended all the same."""
    import errno

    monkeypatch.chdir(tmp_path)
    real = os.replace

    def full_disk(src, dst, *args, **kwargs):
        if str(dst).endswith("loss.png"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))
        return real(src, dst, *args, **kwargs)
    monkeypatch.setattr(os, "replace", full_disk)
    done = CliRunner().invoke(main, ["train", "--input_file", str(corpus), "--tokenization", "char", "--model_name",
                                     "m", "--config_file", "tiny", "--device=cpu", "--max_iters=2", "--eval_interval=1",
                                     "--eval_iters=1", "--metrics_dir", "runs/m"])
    assert done.exit_code == 0, done.output
    assert ("warning: training completed and its last checkpoint is saved, but in runs/m the loss plot was not drawn "
            "(cannot write runs/m/plots/images/loss.png: No space left on device") in done.output, done.output
    assert "metrics.json and the curves (plots/metrics/*.tsv) are whole" in done.output
    assert json.loads(Path("checkpoints/m/training_state.json").read_text())["step"] == 2
    assert json.loads(Path("runs/m/metrics.json").read_text())["step"] == 2
    assert not Path("runs/m/plots/images/loss.png").exists()

    # Through the Python API the warning is the caller's log line, as training's other lines are.
    from mypt.train_command import run_from_flags

    lines = []
    run_from_flags({"dataset_dir": (str(char_dataset(tmp_path)),), "model_name": "api", "config_file": "tiny",
                    "device": "cpu", "max_iters": 2, "eval_interval": 1, "eval_iters": 1,
                    "metrics_dir": Path("runs/api")}, log=lines.append)
    assert any(line.startswith("warning: training completed") for line in lines), lines
