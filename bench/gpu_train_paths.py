"""GPU check of the training paths: float16 + GradScaler, bf16, dtype auto, --cuda_graphs with Muon, SIGTERM stop + exact resume
(in-process and through `mypt train` as a subprocess). One line per check; on a machine without a GPU it runs
on the CPU (a rehearsal). Results: bench/gpu_train_paths_results.txt."""
import json, os, re, signal, subprocess, sys, tempfile, time, traceback
from pathlib import Path
import torch
from mypt import checkpoint
from mypt.config import TrainConfig
from mypt.data import GPTDataLoader, LoaderConfig
from mypt.errors import TrainingStopped
from mypt.model import GPT, GPTConfig, load_model
from mypt.tokenizers import tokenizer_class
from mypt.precision import autocast_dtype
from mypt.train import configure_optimizer, fit

DEV = "cuda" if torch.cuda.is_available() else "cpu"
OUT = Path(os.environ.get("OUT", tempfile.mkdtemp()))
TMP = Path(tempfile.mkdtemp())
TEXT = " ".join(["the cat sat on the mat", "a dog ran to the log", "we see the sea"] * 300)
print("device", DEV, torch.__version__, torch.cuda.get_device_name() if DEV == "cuda" else "",
      torch.cuda.get_device_capability() if DEV == "cuda" else "", flush=True)
tok = tokenizer_class("char").from_corpus([TEXT])

def loader():
    return GPTDataLoader(LoaderConfig(16, 64, DEV, 1, 0), tok, tokens=tok.encode_array(TEXT))

def cfg(**kw):
    return TrainConfig(**{**dict(max_iters=40, eval_interval=20, eval_iters=2, log_interval=1, learning_rate=1e-2,
                                 warmup_iters=2, device=DEV), **kw})

def train(c, ckpt, stop_at=None):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=64, n_layer=2, n_head=2, n_embd=64)).to(DEV)
    lines = []
    def log(line):
        lines.append(line)
        if stop_at is not None and line.startswith(f"iter {stop_at}:"):
            signal.raise_signal(signal.SIGTERM)
    r = fit(model, loader(), config=c, checkpoint_dir=ckpt, tokenizer=tok, checkpoint_extra={"training": c.to_dict()}, log=log)
    return r, lines

def resume(c, ckpt):
    model, t, _ = load_model(ckpt, DEV)
    opt = configure_optimizer(model, c, torch.device(DEV))
    state = checkpoint.load_training_state(ckpt, opt)
    return fit(model, loader(), opt, config=c, checkpoint_dir=ckpt, tokenizer=t, resume_state=state,
               checkpoint_extra={"training": c.to_dict()}, log=lambda l: None)

def check(name, fn):
    t = time.time()
    try:
        print(f"OK   {name}: {fn()} ({time.time() - t:.1f}s)", flush=True)
    except Exception:
        print(f"FAIL {name}:\n{traceback.format_exc()}", flush=True)

print("auto ->", autocast_dtype(cfg(), torch.device(DEV)), flush=True)

def dtype_run(dtype, **extra):
    def go():
        d = TMP / (dtype + "".join(f"_{k}" for k in extra))
        r, lines = train(cfg(dtype=dtype, **extra), d / "straight")
        L = [h["train_loss"] for h in r["history"] if "train_loss" in h]
        assert sum(L[-5:]) / 5 < sum(L[:5]) / 5 - 0.5, L
        try:
            train(cfg(dtype=dtype, **extra), d / "stopped", stop_at=13)
            raise AssertionError("did not stop")
        except TrainingStopped as e:
            msg = str(e)
        resume(cfg(dtype=dtype, **extra), d / "stopped")
        same = {n: (d / "straight" / n).read_bytes() == (d / "stopped" / n).read_bytes()
                for n in ("model.safetensors", "training_state.json")}
        st = json.loads((d / "straight" / "training_state.json").read_text())
        return (f"{lines[0].split('|')[-1].strip()}; loss {L[0]:.3f}->{L[-1]:.3f}; stop: {msg[:40]!r}; "
                f"resume bytes equal {same}; scaler {st.get('scaler')}")
    return go

for dt in ("float16", "bfloat16", "auto"):
    check(f"dtype {dt}", dtype_run(dt))
# The steps replayed from CUDA graphs (the model's and Muon's), stopped and resumed: a resume
# records Muon's graph anew after three unrecorded steps, which must give the same bytes.
check("cuda_graphs, muon, bfloat16", dtype_run("bfloat16", cuda_graphs=True, optimizer="muon"))

def cli_sigterm():
    (TMP / "in.txt").write_text(TEXT)
    args = [sys.executable, "-u", "-m", "mypt.cli", "train", "--input_file", str(TMP / "in.txt"), "--tokenization", "char",
            "--config_file", "tiny", "--device", DEV, "--max_iters", "3000", "--eval_interval", "1000", "--log_interval", "1",
            "--dtype", "float16", "--model_name", "gpu"]
    p = subprocess.Popen(args, cwd=TMP, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    head = []
    for line in p.stdout:
        head.append(line)
        if line.startswith("iter 50:"):
            p.send_signal(signal.SIGTERM)
            break
    _, err = p.communicate(timeout=120)
    n = json.loads((TMP / "checkpoints/gpu/training_state.json").read_text())["step"]
    assert p.returncode == 1 and re.search(r"stopped at step \d+; continue with --resume", err), (p.returncode, err)
    return f"rc {p.returncode}; {err.strip()}; ckpt step {n}; {head[0].strip()[-50:]}"

check("mypt train SIGTERM on " + DEV, cli_sigterm)
