"""Fault injection: kill, stop, race and starve mypt, then check that nothing was lost.

    python bench/faults.py                 # 20 random kill points each (about 10 minutes on 2 cores)
    python bench/faults.py --kills 5       # a quicker pass
    python bench/faults.py --only readers,dvc-kill

Cases (each prints tried / survived / lost):
- SIGKILL of prepare-dataset at random moments: nothing left looks complete, and a rerun gives
  the bytes of an uninterrupted run, with no work directories left behind.
- SIGKILL of training at random moments: `--resume` (a fresh run when no checkpoint was written
  yet) ends on the uninterrupted run's model.safetensors, byte for byte.
- SIGTERM of training once it takes steps: exit status 1 with "stopped at step N", progress kept
  (the checkpoint is at step N), and `--resume` ends on the uninterrupted run's bytes.
- Two concurrent runs on one output (prepare-dataset, and training): the second fails at once
  naming the first's process; the first's output is the uninterrupted one.
- Disk full (a small tmpfs mounted for the purpose; skipped where the machine refuses to mount):
  prepare-dataset --overwrite and a checkpoint save fail with one line, no traceback, no
  leftovers, and the previous dataset or checkpoint intact.
- SIGKILL of a resumed training whose checkpoint directory holds the user's notes and samples/:
  after `--resume`, the user's files are all there and the model is the uninterrupted one.
- A reader loading the checkpoint in a loop while the run saves at every step: every read is a
  whole checkpoint, and the run ends on the bytes it has without readers.
- `prepare-dataset --append_to` on the dataset (thousands of shards) a run is training on: the
  run ends normally, or stops with a checkpoint that `--resume` continues; never a lost run.
- An input truncated while prepare-dataset reads it: one line naming the file, no dataset left.
- A train shard deleted under a running training: the run holds its shards open and ends on the
  bytes of an uninterrupted run.
- SIGKILL of export-hf over a previous export holding the user's README.md and eval_results/:
  they are intact after the kill, and after a re-export.
- SIGKILL of the `dvc` process alone (not its stage) during `dvc repro`, then the README's
  recovery (`rm dvc.lock && dvc repro` when dvc.lock is left empty or cut short): the pipeline
  ends up to date with the outputs of an uninterrupted run, restored from DVC's run cache with no
  stage rerun; plus the empty dvc.lock such a kill can leave, made on purpose since a random kill
  rarely lands in DVC's write.
"Lost" counts runs after which the user's previous output or a finished output differs from
what it should be; "survived" needs every check of the case to hold.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MYPT = [sys.executable, "-m", "mypt.cli"]
TPS = 2000  # tokens per shard: many shards, so kills land between shard writes


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def run(args: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([*MYPT, *args], cwd=cwd, capture_output=True, text=True)
    if check and done.returncode != 0:
        raise SystemExit(f"setup failed: mypt {' '.join(args)}\n{done.stdout}\n{done.stderr}")
    return done


def timed(args: list[str], cwd: Path) -> float:
    t = time.perf_counter()
    run(args, cwd)
    return time.perf_counter() - t


def kill_after(args: list[str], cwd: Path, delay: float, sig: int) -> tuple[int, str]:
    proc = subprocess.Popen([*MYPT, *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=delay)
        return proc.returncode, out  # finished first: its output must still be right
    except subprocess.TimeoutExpired:
        proc.send_signal(sig)
        out, _ = proc.communicate()
        return proc.returncode, out


def signal_after_line(args: list[str], cwd: Path, marker: str, delay: float, sig: int) -> tuple[int, str]:
    """Send `sig` `delay` seconds after the run prints a line starting with `marker` (training
    under way, so there is progress to keep)."""
    proc = subprocess.Popen([*MYPT, *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith(marker):
            break
    time.sleep(delay)
    if proc.poll() is None:
        proc.send_signal(sig)
    rest, _ = proc.communicate()
    return proc.returncode, "".join(lines) + rest


class Tally:
    def __init__(self, name: str):
        self.name, self.tried, self.survived, self.lost, self.notes = name, 0, 0, 0, []

    def case(self, ok: bool, lost: bool = False, note: str = "") -> None:
        self.tried += 1
        self.survived += ok
        self.lost += lost
        if not ok and note:
            self.notes.append(note)

    def line(self) -> str:
        extra = f"  ({'; '.join(self.notes[:3])})" if self.notes else ""
        return f"{self.name}: {self.tried} tried, {self.survived} survived, {self.lost} lost{extra}"


def one_line_error(out: str) -> bool:
    return "Traceback" not in out and sum(line.startswith("Error") for line in out.splitlines()) == 1


def write_corpus(root: Path, lines: int) -> None:
    rng = random.Random(3)
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi".split()
    root.mkdir(parents=True)
    for name in ("a", "b", "c"):
        text = "\n".join(" ".join(rng.choice(words) for _ in range(rng.randint(3, 16))) for _ in range(lines))
        (root / f"{name}.txt").write_text(text + "\n")


def prepare_args(corpus: str, out: str, *extra: str) -> list[str]:
    return ["prepare-dataset", "--input_files", corpus, "--out_dir", out, "--workers", "1", "--tokenization", "char",
            "--tokens_per_shard", str(TPS), *extra]


def train_args(name: str, *extra: str) -> list[str]:
    return ["train", "--dataset_dir", "ref", "--model_name", name, "--checkpoints_dir", "ck", "--config_file", "tiny",
            "--max_iters", "60", "--eval_interval", "10", "--eval_iters", "2", "--log_interval", "5",
            "--device", "cpu", *extra]


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith(".") and p.name != ".git")


def prepare_kills(work: Path, n: int, t_ref: float, ref: dict, rng: random.Random) -> Tally:
    tally = Tally("prepare-dataset SIGKILL")
    for i in range(n):
        runs = work / f"pk{i}"
        runs.mkdir()
        out = runs / "ds"
        rc, _ = kill_after(prepare_args("corpus", str(out.relative_to(work))), work, rng.uniform(0.2, t_ref), signal.SIGKILL)
        # Killed after the dataset was renamed into place (during clean-up) is fine; anything
        # that looks complete must be complete.
        looks_complete = [p for p in runs.rglob("dataset_metadata.json")]
        premature = bool(looks_complete) and (looks_complete != [out / "dataset_metadata.json"] or tree(out) != ref)
        run(prepare_args("corpus", str(out.relative_to(work))), work)
        same = tree(out) == ref
        clean = leftovers(runs) == []
        tally.case(same and clean and not premature, lost=not same,
                   note=f"run {i}: same={same} clean={clean} premature={premature}")
    return tally


def train_kills(work: Path, n: int, t_ref: float, ref: bytes, rng: random.Random, sig: int) -> Tally:
    tally = Tally(f"train {signal.Signals(sig).name}")
    for i in range(n):
        name = f"{signal.Signals(sig).name.lower()}{i}"
        if sig == signal.SIGTERM:  # once steps are being taken: the progress must be kept
            rc, out = signal_after_line(train_args(name), work, "iter ", rng.uniform(0.0, 0.5), sig)
        else:
            rc, out = kill_after(train_args(name), work, rng.uniform(0.3, t_ref), sig)
        ckpt = work / "ck" / name
        ok = True
        if sig == signal.SIGTERM and rc != 0:
            # progress kept: one line, and the checkpoint holds the step it stopped at
            stopped = [int(w) for line in out.splitlines() if "stopped at step" in line
                       for w in [line.split("stopped at step ")[1].split(";")[0]]]
            import json

            state = json.loads((ckpt / "training_state.json").read_text()) if (ckpt / "training_state.json").exists() \
                else {}
            ok = rc == 1 and one_line_error(out) and stopped and state.get("step") == stopped[0]
        resume = ["--resume"] if (ckpt / "training_state.json").exists() else (["--overwrite"] if ckpt.exists() else [])
        if rc != 0:
            run(train_args(name, *resume), work)
        same = (ckpt / "model.safetensors").read_bytes() == ref
        tally.case(bool(ok) and same, lost=not same, note=f"run {i}: rc={rc} resumed={bool(resume)} same={same}")
    return tally


def concurrent(work: Path, ref_ds: dict, ref_model: bytes) -> Tally:
    tally = Tally("two runs on one output")
    for kind in ("prepare", "train"):
        if kind == "prepare":
            args, lock, result = prepare_args("corpus", "race/ds"), work / "race" / ".ds.lock", lambda: tree(work / "race" / "ds") == ref_ds
            (work / "race").mkdir()
        else:
            args, lock = train_args("race"), work / "ck" / ".race.lock"
            result = lambda: (work / "ck" / "race" / "model.safetensors").read_bytes() == ref_model  # noqa: E731
        first = subprocess.Popen([*MYPT, *args], cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while not lock.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        second = subprocess.run([*MYPT, *args], cwd=work, capture_output=True, text=True)
        first.wait()
        refused = second.returncode == 1 and "in use by process" in second.stdout + second.stderr
        same = first.returncode == 0 and result()
        tally.case(refused and same, lost=not same, note=f"{kind}: refused={refused} same={same}")
    return tally


def user_files(ckpt: Path) -> dict[str, bytes]:
    files = {"NOTES.md": b"what I tried\n", "samples/s1.txt": b"a sample\n"}
    for rel, data in files.items():
        (ckpt / rel).parent.mkdir(parents=True, exist_ok=True)
        (ckpt / rel).write_bytes(data)
    return files


def kept(ckpt: Path, files: dict[str, bytes]) -> bool:
    return all((ckpt / rel).is_file() and (ckpt / rel).read_bytes() == data for rel, data in files.items())


def resume_kills_keep_user_files(work: Path, n: int, t_ref: float, ref: bytes, rng: random.Random) -> Tally:
    tally = Tally("train SIGKILL, user files in the checkpoint")
    for i in range(n):
        name = f"notes{i}"
        ckpt = work / "ck" / name
        proc = subprocess.Popen([*MYPT, *train_args(name)], cwd=work, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while not (ckpt / "config.json").exists() and time.monotonic() < deadline:  # the first checkpoint
            time.sleep(0.01)
        mine = user_files(ckpt)
        time.sleep(rng.uniform(0.0, t_ref / 2))
        proc.kill()
        rc = proc.wait()
        if rc != 0:
            run(train_args(name, "--resume"), work)
        same = (ckpt / "model.safetensors").read_bytes() == ref
        ok = kept(ckpt, mine)
        tally.case(same and ok and leftovers(work / "ck") == [], lost=not (same and ok),
                   note=f"run {i}: same={same} user files kept={ok} leftovers={leftovers(work / 'ck')}")
    return tally


READER = """
import sys, time
from mypt import checkpoint
from mypt.model import load_model
reads = errors = 0
deadline = time.monotonic() + float(sys.argv[2])
while time.monotonic() < deadline:
    try:
        load_model(checkpoint.resolve(sys.argv[1], "ck"))
        reads += 1
    except Exception as e:  # counted: any failure of a read is what this case looks for
        errors += 1
        print(f"read failed: {e}", file=sys.stderr)
print(reads, errors)
"""


def readers_during_saves(work: Path, t_ref: float) -> Tally:
    tally = Tally("reader during saves at every step")
    args = lambda name: train_args(name, "--eval_interval", "1", "--eval_iters", "1")  # noqa: E731
    run(args("every_step_ref"), work)
    ref = (work / "ck" / "every_step_ref" / "model.safetensors").read_bytes()
    for i in range(2):
        name = f"every_step{i}"
        trainer = subprocess.Popen([*MYPT, *args(name)], cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True)
        deadline = time.monotonic() + 60
        while not (work / "ck" / name / "config.json").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        mine = user_files(work / "ck" / name)
        reader = subprocess.run([sys.executable, "-c", READER, name, str(max(3.0, t_ref))], cwd=work,
                                capture_output=True, text=True)
        out, _ = trainer.communicate()
        reads, errors = (int(x) for x in reader.stdout.split()) if reader.returncode == 0 else (0, -1)
        same = trainer.returncode == 0 and (work / "ck" / name / "model.safetensors").read_bytes() == ref
        ok = kept(work / "ck" / name, mine)
        tally.case(same and ok and reads > 0 and errors == 0, lost=not (same and ok),
                   note=f"run {i}: reads={reads} failed reads={errors} same={same} user files kept={ok} "
                        f"{reader.stderr.strip().splitlines()[-1][:160] if reader.stderr.strip() else ''}")
    return tally


def append_under_training(work: Path) -> Tally:
    """The dataset has thousands of shards (TPS tokens each): far more than a reader keeps open."""
    tally = Tally("append under a running training")
    for i in range(2):
        ds = work / f"grow{i}"
        subprocess.run(["cp", "-r", str(work / "ref"), str(ds)], check=True)
        name = f"grow{i}"
        args = ["train", "--dataset_dir", ds.name, "--model_name", name, "--checkpoints_dir", "ck",
                "--config_file", "tiny", "--max_iters", "120", "--eval_interval", "20", "--eval_iters", "2",
                "--log_interval", "5", "--device", "cpu"]
        trainer = subprocess.Popen([*MYPT, *args], cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in trainer.stdout:
            if line.startswith("iter "):
                break
        (work / f"more{i}").mkdir(exist_ok=True)
        (work / f"more{i}" / "new.txt").write_text("".join(f"new line {j} of more text\n" for j in range(3000)))
        appended = run(["prepare-dataset", "--input_files", f"more{i}", "--append_to", ds.name, "--workers", "1"],
                       work, check=False)
        out = trainer.communicate()[0]
        rc = trainer.returncode
        state = work / "ck" / name / "training_state.json"
        if rc != 0 and state.exists():  # stopped with its checkpoint: --resume must continue it
            resumed = run([*args, "--resume"], work, check=False)
            rc = resumed.returncode
        ok = rc == 0 and appended.returncode == 0
        tally.case(ok, lost=rc != 0, note=f"run {i}: append rc={appended.returncode} training rc={rc} "
                                          f"{out.strip().splitlines()[-1][:160] if out.strip() else ''}")
    return tally


def input_changed_while_read(work: Path, rng: random.Random) -> Tally:
    tally = Tally("input truncated while prepare-dataset reads it")
    for i in range(2):
        src = work / f"growing{i}.txt"
        src.write_text((work / "corpus" / "a.txt").read_text() * 20)
        proc = subprocess.Popen([*MYPT, *prepare_args(src.name, f"cut{i}")], cwd=work, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        time.sleep(rng.uniform(0.3, 1.0))
        with open(src, "r+b") as f:
            f.truncate(src.stat().st_size // 2)
        out = proc.communicate()[0]
        if proc.returncode == 0:  # it had read the file whole before the cut: nothing to judge
            tally.notes.append(f"run {i}: finished before the cut")
            continue
        named = src.name in out and one_line_error(out)
        nothing = not (work / f"cut{i}").exists() and not [p for p in leftovers(work) if f"cut{i}" in p]
        tally.case(named and nothing, note=f"run {i}: named={named} nothing left={nothing} {out.strip()[-160:]}")
    return tally


def shard_deleted_under_training(work: Path, ref: bytes) -> Tally:
    tally = Tally("train shard deleted under a running training")
    ds = work / "doomed"
    subprocess.run(["cp", "-r", str(work / "ref"), str(ds)], check=True)
    args = ["train", "--dataset_dir", ds.name, *train_args("doomed")[3:]]
    proc = subprocess.Popen([*MYPT, *args], cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        if line.startswith("iter "):
            break
    for shard in sorted((ds / "train").glob("shard_*.bin"))[::2]:
        shard.unlink()
    out = proc.communicate()[0]
    same = proc.returncode == 0 and (work / "ck" / "doomed" / "model.safetensors").read_bytes() == ref
    tally.case(same, lost=not same, note=f"rc={proc.returncode} {out.strip()[-160:]}")
    return tally


def export_kills(work: Path, n: int, rng: random.Random) -> Tally:
    tally = Tally("export-hf SIGKILL over an export with the user's files")
    try:
        import transformers  # noqa: F401
    except ImportError:
        tally.notes.append("skipped: transformers is not installed")
        return tally
    export = ["export-hf", "--model_name", "ck/ref", "--out_dir", "hf_out"]
    t = timed(export, work)
    mine = {"README.md": b"# my model card\n", "eval_results/x.json": b"{}\n"}
    for rel, data in mine.items():
        (work / "hf_out" / rel).parent.mkdir(parents=True, exist_ok=True)
        (work / "hf_out" / rel).write_bytes(data)
    for i in range(n):
        kill_after(export, work, rng.uniform(0.2, t), signal.SIGKILL)
        after_kill = kept(work / "hf_out", mine) or kept(work / ".hf_out.old", mine)
        done = run(export, work, check=False)
        ok = done.returncode == 0 and kept(work / "hf_out", mine) and \
            not [p for p in leftovers(work) if p.startswith(".hf_out.")]
        tally.case(after_kill and ok, lost=not kept(work / "hf_out", mine),
                   note=f"kill {i}: user files after the kill={after_kill} re-export rc={done.returncode}")
    return tally


# The train stage's outputs are declared as dvc.yaml's are (a file kept in git is a metric or a
# plot), so that the recovery restores it from DVC's run cache as it does the real pipeline.
DVC_YAML = """stages:
  prepare:
    cmd: {python} -m mypt.cli prepare-dataset --input_files corpus --out_dir ds --workers 1 --tokenization char
    deps: [corpus]
    outs: [ds]
  train:
    cmd: {python} -m mypt.cli train --dataset_dir ds --model_name m --config_file tiny --max_iters 30
      --eval_interval 10 --eval_iters 2 --device cpu --metrics_dir dvclive/m
    deps: [ds]
    outs: [checkpoints/m, dvclive/m/plots/metrics]
    metrics:
      - dvclive/m/metrics.json: {{cache: false}}
    plots:
      - dvclive/m/plots/images: {{cache: false}}
"""


def dvc(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "DVC_NO_ANALYTICS": "1"})


def dvc_kills(work: Path, n: int, rng: random.Random) -> Tally:
    """SIGKILL of the dvc process alone: its stage's process lives on (as after a crash of the
    shell's dvc), and dvc.lock may be left half-written. The README's recovery must hold."""
    tally = Tally("dvc repro, dvc killed alone")
    proj = work / "dvcproj"
    proj.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=proj, check=True)
    dvc(["init", "-q"], proj)
    write_corpus(proj / "corpus", 3000)
    (proj / "dvc.yaml").write_text(DVC_YAML.format(python=sys.executable))
    # A first commit: dvclive (the train stage's --metrics_dir) fails in a git repository without one.
    subprocess.run(["git", "add", "dvc.yaml", ".dvc"], cwd=proj, check=True)
    subprocess.run(["git", "-c", "user.name=faults", "-c", "user.email=faults@localhost", "commit", "-qm", "project"],
                   cwd=proj, check=True)
    t = time.perf_counter()
    done = dvc(["repro"], proj)
    t_ref = time.perf_counter() - t
    if done.returncode != 0:
        tally.notes.append(f"reference dvc repro failed: {done.stdout[-300:]} {done.stderr[-300:]}")
        return tally
    ref = (proj / "checkpoints" / "m" / "model.safetensors").read_bytes()
    for i in range(n + 1):
        for out in ("ds", "checkpoints", "dvclive", "dvc.lock"):
            subprocess.run(["rm", "-rf", str(proj / out)])
        if i < n:
            proc = subprocess.Popen([sys.executable, "-m", "dvc", "repro"], cwd=proj, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, env={**os.environ, "DVC_NO_ANALYTICS": "1"})
            time.sleep(rng.uniform(0.5, t_ref))
            proc.kill()  # dvc alone; the stage it started finishes or dies on its own
            proc.wait()
            time.sleep(1.0)
        else:  # what a kill inside DVC's write of dvc.lock leaves
            dvc(["repro"], proj)
            (proj / "dvc.lock").write_text("")
        first = dvc(["repro"], proj)
        # The README's recovery, when dvc.lock is damaged (DVC says "dvc.lock' validation failed"
        # or cannot parse it): remove it and repro; the run cache restores unchanged stages.
        rerun = False
        if first.returncode != 0 and "dvc.lock" in first.stdout + first.stderr:
            (proj / "dvc.lock").unlink()
            first = dvc(["repro"], proj)
            rerun = "Running stage" in first.stdout  # the README says no stage reruns
        status = dvc(["status"], proj)
        same = (proj / "checkpoints" / "m").is_dir() and (proj / "checkpoints" / "m" / "model.safetensors").read_bytes() == ref
        ok = first.returncode == 0 and "up to date" in status.stdout and same and not rerun
        tally.case(ok, lost=not same, note=f"kill {i}: repro rc={first.returncode} same={same} rerun={rerun} "
                                         f"status={status.stdout.strip()[:80]!r}")
    return tally


def mount_tmpfs(path: Path, size: int) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def disk_full(work: Path) -> Tally:
    tally = Tally("disk full (tmpfs)")
    full = work / "full"
    small = work / "small"
    write_corpus(small, 300)
    if not mount_tmpfs(full, 600 * 1024):
        tally.notes.append("skipped: this machine refuses to mount a tmpfs")
        return tally
    try:
        # A dataset that fits, then a bigger one with --overwrite that cannot: the first must stay.
        run(prepare_args("small", "full/ds"), work)
        before = tree(full / "ds")
        done = run(prepare_args("corpus", "full/ds", "--overwrite"), work, check=False)
        ok = done.returncode == 1 and one_line_error(done.stdout + done.stderr) and "No space left" in done.stdout + done.stderr
        intact = tree(full / "ds") == before
        tally.case(ok and intact and leftovers(full) == [], lost=not intact,
                   note=f"prepare: rc={done.returncode} intact={intact} leftovers={leftovers(full)}")
        # A checkpoint that fits once but not twice (a save stages the new one beside the old).
        subprocess.run(["umount", str(full)], check=True)
        run(["train", "--dataset_dir", "ref", "--model_name", "m", "--checkpoints_dir", "ck_full_probe", "--config_file",
             "tiny", "--max_iters", "10", "--eval_interval", "10", "--eval_iters", "1", "--device", "cpu"], work)
        size = sum(p.stat().st_size for p in (work / "ck_full_probe" / "m").iterdir())
        mount_tmpfs(full, int(size * 1.5) + 64 * 1024)
        os.system(f"cp -r {work / 'ck_full_probe' / 'm'} {full / 'm'}")
        before = tree(full / "m")
        done = run(["train", "--dataset_dir", "ref", "--model_name", "m", "--checkpoints_dir", "full", "--config_file",
                    "tiny", "--max_iters", "20", "--eval_interval", "10", "--eval_iters", "1", "--device", "cpu",
                    "--resume", "--n_embd", "32"], work, check=False)
        out = done.stdout + done.stderr
        if done.returncode == 0:  # it fitted after all: nothing to judge
            tally.notes.append("train: the second checkpoint fitted; size the tmpfs smaller")
        else:
            intact = tree(full / "m") == before
            ok = done.returncode == 1 and one_line_error(out)
            tally.case(ok and intact and leftovers(full) == [], lost=not intact,
                       note=f"train: rc={done.returncode} intact={intact} leftovers={leftovers(full)} "
                            f"said: {out.strip().splitlines()[-1][:200] if out.strip() else ''}")
    finally:
        subprocess.run(["umount", str(full)], capture_output=True)
    return tally


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=20, help="random kill points per case")
    ap.add_argument("--sigterms", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", default="", help="comma-separated cases to run (prepare-kill, train-kill, train-term, "
                                               "concurrent, disk-full, user-files, readers, append, input-cut, shard-deleted, "
                                               "export-kill, dvc-kill)")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="mypt-faults-"))
    write_corpus(work / "corpus", 40_000)
    t_prep = timed(prepare_args("corpus", "ref"), work)
    ref_ds = tree(work / "ref")
    t_train = timed(train_args("ref"), work)
    ref_model = (work / "ck" / "ref" / "model.safetensors").read_bytes()
    print(f"work dir {work}: reference prepare-dataset {t_prep:.1f} s ({len(ref_ds)} files), "
          f"reference training {t_train:.1f} s", flush=True)
    cases = {
        "prepare-kill": lambda: prepare_kills(work, args.kills, t_prep, ref_ds, rng),
        "train-kill": lambda: train_kills(work, args.kills, t_train, ref_model, rng, signal.SIGKILL),
        "train-term": lambda: train_kills(work, args.sigterms, t_train, ref_model, rng, signal.SIGTERM),
        "concurrent": lambda: concurrent(work, ref_ds, ref_model),
        "disk-full": lambda: disk_full(work),
        "user-files": lambda: resume_kills_keep_user_files(work, max(1, args.kills // 4), t_train, ref_model, rng),
        "readers": lambda: readers_during_saves(work, t_train),
        "append": lambda: append_under_training(work),
        "input-cut": lambda: input_changed_while_read(work, rng),
        "shard-deleted": lambda: shard_deleted_under_training(work, ref_model),
        "export-kill": lambda: export_kills(work, max(1, args.kills // 4), rng),
        "dvc-kill": lambda: dvc_kills(work, max(1, args.kills // 4), rng),
    }
    tallies = []
    for name, fn in cases.items():
        if args.only and name not in args.only.split(","):
            continue
        tallies.append(fn())
        print(tallies[-1].line(), flush=True)
    tried, survived, lost = (sum(getattr(t, k) for t in tallies) for k in ("tried", "survived", "lost"))
    print(f"TOTAL: {tried} cases tried, {survived} survived, {lost} lost anything")


if __name__ == "__main__":
    main()
