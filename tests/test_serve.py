"""Serving through an existing engine (issue 21): the export-hf directory, served on the CPU by
`transformers serve` (OpenAI-compatible, `pip install 'transformers[serving]'`), completes a
prompt greedily with the very text `mypt generate --temperature 0` gives. mypt writes no server.

The server runs as a subprocess on 127.0.0.1 with the Hub off and HOME/HF_HOME under tmp_path,
and is stopped whatever the outcome."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import free_port

from mypt import checkpoint
from mypt.cli import main
from mypt.config import GPTConfig, TrainConfig
from mypt.data import GPTDataLoader, LoaderConfig
from mypt.model import GPT
from mypt.tokenizers.char import CharTokenizer

transformers = pytest.importorskip("transformers")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

TEXT = "the king and the queen walk in the garden of the castle at night.\n" * 40
PROMPT, NEW_TOKENS = "the queen ", 40


def trained_char_model(path: Path) -> None:
    """A tiny char model trained until its greedy continuation is text, not a tie between
    near-equal logits (which float noise between two implementations could break)."""
    tokenizer = CharTokenizer.from_corpus([TEXT])
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=64, n_layer=2, n_head=2, n_embd=32))
    tokens = np.asarray(tokenizer.encode(TEXT), dtype=np.uint32)
    loader = GPTDataLoader(LoaderConfig(batch_size=8, block_size=64), tokenizer, tokens=tokens)
    model.fit(loader, config=TrainConfig(max_iters=60, eval_interval=60, eval_iters=1, warmup_iters=0,
                                         learning_rate=1e-2, dtype="float32"), log=lambda line: None)
    checkpoint.save(path, model, tokenizer, {})


def post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


def wait_healthy(proc: subprocess.Popen, url: str, log: Path, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"transformers serve exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=5):
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
    pytest.fail(f"transformers serve did not answer /health in {seconds:.0f} s:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen) -> None:
    """The server and what it started: SIGTERM to its process group, SIGKILL if it lingers."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(15)


@pytest.mark.slow
def test_transformers_serve_completes_the_export_as_mypt_generate_does(tmp_path):
    if int(transformers.__version__.split(".")[0]) < 5:
        pytest.skip(f"transformers {transformers.__version__}: `transformers serve MODEL` is transformers 5's")
    server = shutil.which("transformers", path=str(Path(sys.executable).parent)) or shutil.which("transformers")
    if server is None:
        pytest.skip("no `transformers` command (pip install 'transformers[serving]')")
    trained_char_model(tmp_path / "m")
    result = CliRunner().invoke(main, ["generate", "--model_name", str(tmp_path / "m"), "--prompt", PROMPT,
                                       "--temperature", "0", "--max_new_tokens", str(NEW_TOKENS), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    ours = result.output.removeprefix(f"--- sample 1 ---\n{PROMPT}").removesuffix("\n")
    assert len(ours) == NEW_TOKENS and ours.strip()  # char: a token a character, no end-of-text
    result = CliRunner().invoke(main, ["export-hf", "--model_name", str(tmp_path / "m"), "--out_dir",
                                       str(tmp_path / "hf")])
    assert result.exit_code == 0, result.output

    port, log = free_port(), tmp_path / "serve.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HOME": str(tmp_path / "home"),
           "HF_HOME": str(tmp_path / "hf_home"), "NO_PROXY": "127.0.0.1"}
    with open(log, "wb") as out:
        proc = subprocess.Popen([server, "serve", str(tmp_path / "hf"), "--host", "127.0.0.1", "--port", str(port),
                                 "--device", "cpu", "--dtype", "float32"], env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(proc, url, log)
        answer = post(url + "/v1/completions", {"model": str(tmp_path / "hf"), "prompt": PROMPT,
                                                "max_tokens": NEW_TOKENS, "temperature": 0})
    finally:
        stop(proc)
    assert answer["choices"][0]["text"] == ours, log.read_text()[-3000:]
