"""Exports that transformers 4 and 5 both load: the gpt2 tokenizer's ids equal tiktoken's, and
an export written under the venv's transformers 5 gives mypt's ids and logits under
transformers 4.57 (installed by scripts/test.sh into .cache/transformers4)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_hf import MULTILINGUAL, bos_tokenizer, bpe_tokenizer, export, trained_checkpoint
from test_hf_llama import SCALED, llama_checkpoint

from mypt.hf_export import gpt2_hf_tokenizer
from mypt.tokenizers.char import CharTokenizer
from mypt.tokenizers.gpt2 import GPT2Tokenizer

transformers = pytest.importorskip("transformers")

TRANSFORMERS4 = Path(__file__).resolve().parent.parent / ".cache" / "transformers4"

# Pieces that stress r50k's pattern: contractions, digit runs, runs of spaces before words and
# at the end, newlines, punctuation runs, and letters of several scripts and emoji.
PIECES = ["'s", "'ll", "'VE", "  ", "   ", "\n", "\n\n", "\r\n", "\t", " 12345", "007", "!!", "?!.", "--",
          " ...", "wörld", " Ελληνικά", " русский", "日本語", "😀", "🚀🚀", "\u3000", "\u00a0", "x", " the", "The",
          "<|endoftext|>", "don't", " I'M", "http://a.b/c?d=e", "\u200b", "ﬁ"]


def varied_texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(PIECES) for _ in range(rng.randint(1, 12))) for _ in range(n)]


def test_gpt2_export_tokenizer_gives_tiktokens_ids():
    """The converter's BPE merges as tiktoken's ranks do and splits text as r50k's pattern does;
    a literal <|endoftext|> stays text (encode_ordinary) when special tokens are off."""
    tok = GPT2Tokenizer()
    hf = gpt2_hf_tokenizer(tok)
    hf.encode_special_tokens = True  # literal special tokens are text, as mypt's encode makes them
    texts = varied_texts(400) + [MULTILINGUAL, Path(__file__).read_text(encoding="utf-8")]
    wrong = [t for t in texts if hf.encode(t, add_special_tokens=False).ids != tok.encode(t)]
    assert not wrong, wrong[:3]
    assert hf.token_to_id("<|endoftext|>") == tok.eot_id == 50256


# Run under transformers 4: loads each export with the Auto classes, then each script's body.
EACH_EXPORT_IN_4 = """
import json, sys, torch, transformers
assert transformers.__version__.startswith("4."), transformers.__version__
text = sys.argv[1]
for out in sys.argv[2:]:
    tok = transformers.AutoTokenizer.from_pretrained(out)
    model = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
"""
# Its ids and logits of the ids.
LOAD_IN_4 = EACH_EXPORT_IN_4 + """
    ids = tok(text)["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([ids[:16]])).logits[0]
    print(json.dumps({"class": type(model).__name__, "rope_theta": getattr(model.config, "rope_theta", None),
                      "ids": ids, "eos": tok.eos_token_id, "decoded": tok.decode(ids), "logits": logits.tolist()}))
"""
# The usual call, model(**tok(text)), and generate from it.
CALL_IN_4 = EACH_EXPORT_IN_4 + """
    inputs = tok(text, return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits[0]
        model.generate(**inputs, max_new_tokens=2, do_sample=False)
    print(json.dumps({"inputs": sorted(inputs), "ids": inputs["input_ids"][0].tolist(), "logits": logits.tolist()}))
"""


def load_in_transformers4(text: str, exports: list[Path], script: str = LOAD_IN_4) -> list[dict]:
    if not (TRANSFORMERS4 / "transformers").is_dir():
        pytest.skip(f"no transformers 4 in {TRANSFORMERS4}: run `bash scripts/test.sh` (it installs it there)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TRANSFORMERS4), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", script, text, *map(str, exports)], env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


@pytest.mark.slow
def test_exports_load_in_transformers_4_with_mypts_ids_and_logits(tmp_path):
    """gpt2, char and hf tokenizers on GPT-2 models (an hf one whose post-processor adds a BOS
    mypt never used: transformers 4 adds none either), and the Llama and Qwen3 exports (a RoPE
    base other than the default: transformers 4 reads it from rope_theta, 5 from rope_parameters;
    Llama 3's RoPE scaling from rope_scaling; qkv_bias as attention_bias)."""
    char, hf = CharTokenizer(chars=sorted(set(MULTILINGUAL))), bpe_tokenizer(tmp_path)
    bos = bos_tokenizer(tmp_path)
    cases = {"gpt2": (GPT2Tokenizer(), {}), "char": (char, {"bias": True}), "hf": (hf, {}), "hf_bos": (bos, {}),
             "llama_bos": (bos, {"qk_norm": False}),
             "llama": (char, {"qk_norm": False}), "qwen3": (char, {"qk_norm": True}),
             "llama3": (char, {"qk_norm": False, "rope_scaling": SCALED}),
             "qkv_bias": (char, {"qk_norm": False, "qkv_bias": True, "norm_eps": 1e-6}),
             "relu2_qk": (char, {"qk_norm": True, "mlp": "relu2"})}
    models, exports = {}, []
    for name, (tokenizer, settings) in cases.items():
        if "qk_norm" in settings:  # the Llama recipe
            models[name] = llama_checkpoint(tmp_path / name, tokenizer, **settings)
        else:
            models[name] = trained_checkpoint(tmp_path / name, tokenizer, **{"bias": False, **settings}).eval()
        exports.append(export(tmp_path, name))
        config = json.loads((exports[-1] / "tokenizer_config.json").read_text(encoding="utf-8"))
        assert config["tokenizer_class"] == "PreTrainedTokenizerFast"
    classes = {"llama": "LlamaForCausalLM", "llama_bos": "LlamaForCausalLM", "qwen3": "Qwen3ForCausalLM",
               "llama3": "LlamaForCausalLM", "qkv_bias": "LlamaForCausalLM", "relu2_qk": "Qwen3ForCausalLM"}
    for (name, (tokenizer, _)), got in zip(cases.items(), load_in_transformers4(MULTILINGUAL, exports), strict=True):
        ids = tokenizer.encode(MULTILINGUAL)
        assert got["class"] == classes.get(name, "GPT2LMHeadModel")
        assert got["rope_theta"] == (models[name].config.rope_theta if name in classes else None), name
        assert got["ids"] == ids and got["decoded"] == MULTILINGUAL and got["eos"] == tokenizer.eot_id, name
        x = torch.tensor([ids[:16]])
        with torch.no_grad():
            ours = models[name](x, x)[0][0]
        assert torch.allclose(ours, torch.tensor(got["logits"]), atol=1e-4), name


@pytest.mark.slow
def test_model_of_tokenizer_output_gives_mypts_logits_under_transformers_4(tmp_path):
    """`model(**tok(text, return_tensors="pt"))`, the call every transformers example makes: the
    export's tokenizer returns only input_ids and attention_mask (tokenizer_config.json's
    model_input_names). Without them transformers 4 adds token_type_ids, which GPT-2 adds to its
    input as token-type embeddings and Llama's generate refuses."""
    char = CharTokenizer(chars=sorted(set(MULTILINGUAL)))
    models = {"gpt2": trained_checkpoint(tmp_path / "gpt2", char, bias=True).eval(),
              "llama": llama_checkpoint(tmp_path / "llama", char)}
    exports = [export(tmp_path, name) for name in models]
    for out in exports:
        config = json.loads((out / "tokenizer_config.json").read_text(encoding="utf-8"))
        assert config["model_input_names"] == ["input_ids", "attention_mask"]
    text = MULTILINGUAL[:12]  # room for 2 new tokens in the block of 16
    for (name, model), got in zip(models.items(), load_in_transformers4(text, exports, CALL_IN_4), strict=True):
        assert got["inputs"] == ["attention_mask", "input_ids"] and got["ids"] == char.encode(text), name
        x = torch.tensor([got["ids"]])
        with torch.no_grad():
            ours = model(x, x)[0][0][:, :char.vocab_size]
        assert torch.allclose(ours, torch.tensor(got["logits"]), atol=1e-4), name
