"""Bytes each rank reads of a sharded (FSDP) checkpoint's dcp/ files as `mypt train --resume
--parallel fsdp` restores it on 2 CPU ranks (gloo): through Python's open (sha256 checks, the
files' headers) and as tensors through safetensors (the weights, the optimizer's state).

    python bench/fsdp_resume_reads.py                      # this checkout
    python bench/fsdp_resume_reads.py --roots OLD NEW      # two source trees on one checkpoint

(OLD: e.g. `git archive HEAD~1 mypt | tar -x -C OLD`.) A checkpoint is trained once, by the first
root, then restored by each root with --max_iters at its step: the restore, and no training or
save after it. W below is the weights' bytes (dcp/model), N the ranks: reading the weights
whole and hashing every file on every rank reads about 4W + 2W/N a rank, a rank's share 6W/N."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# A rank's reads of *.safetensors files, by path: [bytes through Python's open, bytes of tensors
# through safetensors' safe_open], written to $COUNT_DIR/rankR.json at its exit (a sitecustomize).
COUNTER = '''
import atexit, builtins, io, json, os
if "RANK" in os.environ and os.environ.get("COUNT_DIR"):
    import safetensors
    _reads = {}

    def _add(path, kind, n):
        _reads.setdefault(os.path.abspath(os.fspath(path)), [0, 0])[kind] += n

    class _File:
        def __init__(self, f, path):
            self._f, self._path = f, path
        def read(self, *args):
            data = self._f.read(*args)
            _add(self._path, 0, len(data))
            return data
        def readinto(self, b):
            n = self._f.readinto(b)
            _add(self._path, 0, n or 0)
            return n
        def __enter__(self):
            return self
        def __exit__(self, *args):
            return self._f.__exit__(*args)
        def __getattr__(self, name):
            return getattr(self._f, name)

    _open = io.open

    def _counted(file, mode="r", *args, **kwargs):
        f = _open(file, mode, *args, **kwargs)
        named = isinstance(file, (str, os.PathLike)) and os.fspath(file).endswith(".safetensors")
        return _File(f, file) if named and mode == "rb" else f

    builtins.open = io.open = _counted

    class _Slice:
        def __init__(self, s, path):
            self._s, self._path = s, path
        def __getitem__(self, key):
            t = self._s[key]
            _add(self._path, 1, t.numel() * t.element_size())
            return t
        def __getattr__(self, name):
            return getattr(self._s, name)

    _safe_open = safetensors.safe_open

    class _SafeOpen:
        def __init__(self, filename, *args, **kwargs):
            self._f, self._path = _safe_open(filename, *args, **kwargs), filename
        def __enter__(self):
            self._f.__enter__()
            return self
        def __exit__(self, *args):
            return self._f.__exit__(*args)
        def get_slice(self, key):
            return _Slice(self._f.get_slice(key), self._path)
        def get_tensor(self, key):
            t = self._f.get_tensor(key)
            _add(self._path, 1, t.numel() * t.element_size())
            return t
        def __getattr__(self, name):
            return getattr(self._f, name)

    safetensors.safe_open = _SafeOpen
    atexit.register(lambda: _open(os.path.join(os.environ["COUNT_DIR"], "rank" + os.environ["RANK"] + ".json"),
                                  "w").write(json.dumps(_reads)))
'''


def counted_env(hook_dir: Path, count_dir: Path, root: Path) -> dict:
    """The environment of a torchrun whose ranks count their reads into `count_dir` (COUNTER
    installed as sitecustomize in `hook_dir`), running mypt from source tree `root`."""
    hook_dir.mkdir(parents=True, exist_ok=True)
    count_dir.mkdir(parents=True, exist_ok=True)
    (hook_dir / "sitecustomize.py").write_text(COUNTER)
    path = os.pathsep.join([str(hook_dir), str(root), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "COUNT_DIR": str(count_dir)}


def per_rank(count_dir: Path, dcp: Path) -> list[dict]:
    """[{"hashed": files read whole through Python, "file": bytes through Python, "model": tensor
    bytes of dcp/model, "optim": of dcp/optim}] of each rank, from its COUNTER file."""
    sizes = {str(p): p.stat().st_size for p in dcp.rglob("*.safetensors")}
    out = []
    for rank in range(len(list(count_dir.glob("rank*.json")))):
        reads = {k: v for k, v in json.loads((count_dir / f"rank{rank}.json").read_text()).items() if k in sizes}
        out.append({"hashed": sorted(Path(k).relative_to(dcp).as_posix() for k, (b, _) in reads.items()
                                     if b >= sizes[k]),
                    "file": sum(b for b, _ in reads.values()),
                    "model": sum(t for k, (_, t) in reads.items() if Path(k).parent.name == "model"),
                    "optim": sum(t for k, (_, t) in reads.items() if Path(k).parent.name == "optim")})
    return out


def torchrun(args: list[str], cwd: Path, env: dict, ranks: int = 2) -> None:
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ranks),
                    "-m", "mypt.cli", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--roots", nargs="+", type=Path, default=[REPO], help="mypt source trees to compare")
    parser.add_argument("--n_layer", type=int, default=4)
    parser.add_argument("--n_embd", type=int, default=256)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fsdp_reads_"))
    try:
        plain = {**os.environ, "PYTHONPATH": str(args.roots[0])}
        (work / "corpus.txt").write_text("\n".join(["the cat sat on the mat", "a dog ran to the log"] * 2000))
        subprocess.run([sys.executable, "-m", "mypt.cli", "prepare-dataset", "--input_files", "corpus.txt",
                        "--out_dir", "ds", "--tokenization", "char"], cwd=work, env=plain, check=True,
                       capture_output=True)
        train = ["train", "--dataset_dir", "ds", "--config_file", "tiny", "--n_layer", str(args.n_layer), "--n_embd",
                 str(args.n_embd), "--max_iters", "2", "--eval_interval", "2", "--device", "cpu", "--dtype",
                 "float32", "--parallel", "fsdp"]
        torchrun([*train, "--model_name", "m"], work, plain)
        dcp = work / "checkpoints" / "m" / "dcp"
        weights = sum(p.stat().st_size for p in (dcp / "model").glob("*.safetensors"))
        optim = sum(p.stat().st_size for p in (dcp / "optim").glob("*.safetensors"))
        print(f"dcp/model {weights / 1e6:.1f} MB (W), dcp/optim {optim / 1e6:.1f} MB, 2 ranks")
        for i, root in enumerate(args.roots):
            counts = work / f"counts{i}"
            torchrun([*train, "--model_name", "m", "--resume"], work, counted_env(work / "hook", counts, root))
            for rank, r in enumerate(per_rank(counts, dcp)):
                total = r["file"] + r["model"] + r["optim"]
                print(f"{root}: rank {rank}: hashed {len(r['hashed'])} files, {r['file'] / 1e6:.1f} MB through open, "
                      f"weights {r['model'] / 1e6:.1f} MB, optimizer {r['optim'] / 1e6:.1f} MB: "
                      f"{total / 1e6:.1f} MB ({total / weights:.2f} W)")
    finally:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
