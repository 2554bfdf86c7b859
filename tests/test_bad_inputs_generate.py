"""Bad inputs to what reads a model (issue 18): generate, eval, export-hf and --init_from_model
on a model whose weights hold NaN or overflow, prompts and stop strings that are not UTF-8
(each tokenizer kind failed its own way), eval's duplicate names and a --max_tokens below one
window, an hf tokenizer that marks no document end. Each one line, exit 1 or 2, nothing
changed outside the output."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest
import torch
from bad_inputs import Case, edit_json, gen, invoke, run_case, train, write

from mypt import checkpoint
from mypt.config import GPTConfig
from mypt.model import GPT, load_model
from mypt.tokenizers import Tokenizer
from mypt.tokenizers.gpt2 import GPT2Tokenizer

NOT_UTF8 = "Line \udcff"  # what Python makes of the argv bytes b"Line \xff" (surrogateescape)


def edit_weights(change: Callable[[GPT], None], model: str = "ck/m") -> Callable[[Path], None]:
    """Rewrite a checkpoint's weights through mypt's own writer (so its checksums agree: the
    damage is in the numbers, not in the file)."""
    def setup(w: Path) -> None:
        net, tokenizer, config = load_model(w / model)
        with torch.no_grad():
            change(net)
        keep = {k: v for k, v in config.items() if k not in ("format_version", "model", "sha256")}
        checkpoint.save(w / model, net, tokenizer, keep)
    return setup


def nan_weight(net: GPT) -> None:
    net.transformer.h[0].mlp.c_fc.weight[3, 5] = float("nan")  # a diverged run's


def overflowing(net: GPT) -> None:
    net.transformer.ln_f.weight.fill_(3e38)  # finite, but the head's output overflows to inf, then NaN


def model_of(tokenizer: Callable[[Path], Tokenizer], name: str) -> Callable[[Path], None]:
    """A tiny untrained model with another tokenizer kind, saved as ck/NAME."""
    def setup(w: Path) -> None:
        tok = tokenizer(w)
        torch.manual_seed(0)
        net = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=1, n_head=1, n_embd=8))
        checkpoint.save(w / "ck" / name, net, tok, {})
    return setup


def hf_bpe(w: Path) -> Tokenizer:
    from mypt.tokenizers.hf import HFTokenizer

    tokenizers = pytest.importorskip("tokenizers")
    hf = tokenizers.Tokenizer(tokenizers.models.BPE())
    hf.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"], show_progress=False,
                                             initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
    hf.train_from_iterator([(w / "corpus.txt").read_text()], trainer)
    return HFTokenizer(tokenizer_json=hf.to_str())


def words_only_tokenizer(w: Path) -> Tokenizer:
    """A tokenizer.json with no end-of-text token whose pre-tokenizer drops whitespace: a
    newline encodes as nothing, so documents would have no boundary. Saved as words.json."""
    from mypt.tokenizers.hf import HFTokenizer

    tokenizers = pytest.importorskip("tokenizers")
    words = sorted(set((w / "corpus.txt").read_text().split()))
    hf = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab={"[UNK]": 0, **{t: i + 1 for i, t in enumerate(words)}},
                                                          unk_token="[UNK]"))
    hf.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    hf.save(str(w / "words.json"))
    return HFTokenizer(tokenizer_json=hf.to_str())  # (built from its text: as a checkpoint made before the refusal)


def hf_export(change: Callable[[Path], None]) -> Callable[[Path], None]:
    """The world's model exported to `exp` (a transformers directory), then damaged."""
    def setup(w: Path) -> None:
        pytest.importorskip("transformers")
        result = invoke("export-hf", "--model_name", str(w / "ck/m"), "--out_dir", str(w / "exp"))
        assert result.exit_code == 0, result.output
        change(w / "exp")
    return setup


def edit_hf_config(change: Callable[[dict], object]) -> Callable[[Path], None]:
    return hf_export(lambda d: edit_json("config.json", change)(d))


def ev(*extra: str, model: str = "m") -> list[str]:
    return ["eval", "--model_name", model, "--checkpoints_dir", "ck", "--device", "cpu", "--dataset", "val=ds",
            *extra]


CASES = [
    # -- prompts and stop strings that are not UTF-8, for each tokenizer kind ----------------
    Case("prompt_not_utf8_char", gen("--prompt", NOT_UTF8), ["--prompt", r"b'Line \xff'", "not valid UTF-8"]),
    Case("prompt_not_utf8_gpt2", gen("--prompt", NOT_UTF8, model="g"), ["--prompt", r"b'Line \xff'", "not valid UTF-8"],
         setup=model_of(lambda w: GPT2Tokenizer(), "g")),
    Case("prompt_not_utf8_hf", gen("--prompt", NOT_UTF8, model="h"), ["--prompt", r"b'Line \xff'", "not valid UTF-8"],
         setup=model_of(hf_bpe, "h")),
    Case("stop_not_utf8", gen("--stop", "\udcfe"), ["--stop", r"b'\xfe'", "not valid UTF-8"]),
    # -- --prompt_file ----------------------------------------------------------------------------
    Case("prompt_and_prompt_file", gen("--prompt", "Line", "--prompt_file", "p.txt"),
         ["Error: --prompt and --prompt_file p.txt", "pass one"], setup=write("p.txt", "Line")),
    Case("prompt_file_missing", gen("--prompt_file", "nowhere.txt"), ["--prompt_file nowhere.txt", "does not exist"]),
    Case("prompt_file_a_directory", gen("--prompt_file", "ds"), ["--prompt_file ds", "not a regular file"]),
    Case("prompt_file_not_utf8", gen("--prompt_file", "p.txt"), ["--prompt_file p.txt", "not valid UTF-8",
                                                                 r"b'\xff' at offset 5", "save the file as UTF-8"],
         setup=lambda w: (w / "p.txt").write_bytes(b"Line \xff")),
    Case("prompt_file_outside_the_vocabulary", gen("--prompt_file", "p.txt"),
         ["--prompt_file p.txt: the characters ['\u2603']", "leave them out of --prompt_file p.txt"],
         setup=write("p.txt", "Line \u2603")),
    # -- a diverged model: NaN weights, named where they are --------------------------------
    Case("generate_nan_weights", gen(), ["ck/m/model.safetensors", "transformer.h.0.mlp.c_fc.weight", "NaN",
                                         "earlier checkpoint"], setup=edit_weights(nan_weight)),
    Case("eval_nan_weights", ev(), ["ck/m/model.safetensors", "NaN"], setup=edit_weights(nan_weight)),
    Case("eval_json_nan_weights", ev("--json"), ["ck/m/model.safetensors", "NaN"], setup=edit_weights(nan_weight)),
    Case("export_nan_weights", ["export-hf", "--model_name", "ck/m", "--out_dir", "exp"],
         ["ck/m/model.safetensors", "NaN"], out="exp", setup=edit_weights(nan_weight)),
    Case("init_from_nan_weights", train("--dataset_dir", "ds", "--init_from_model", "ck/m"),
         ["ck/m/model.safetensors", "NaN"], out="ck/n", setup=edit_weights(nan_weight)),
    # -- finite weights whose output overflows ----------------------------------------------
    Case("generate_output_overflows", gen(), ["not finite", "new token 1", "earlier checkpoint"],
         setup=edit_weights(overflowing)),
    Case("generate_greedy_output_overflows", gen("--temperature", "0"), ["not finite", "new token 1"],
         setup=edit_weights(overflowing)),
    Case("eval_json_loss_nan", ev("--json"), ["ck/m", "loss of nan", "--dataset val=ds", "earlier checkpoint"],
         setup=edit_weights(overflowing)),
    # -- --init_from_model hf:DIR of a damaged transformers directory ----------------------
    Case("hf_config_not_an_object", train("--dataset_dir", "ds", "--init_from_model", "hf:exp"),
         ["hf:exp", "config.json", "not a JSON object"], out="ck/n", setup=edit_hf_config(lambda c: [1, 2])),
    Case("hf_config_without_n_positions", train("--dataset_dir", "ds", "--init_from_model", "hf:exp"),
         ["hf:exp", "config.json has no n_positions"], out="ck/n", setup=edit_hf_config(lambda c: c.__delitem__("n_positions"))),
    Case("hf_config_n_embd_null", train("--dataset_dir", "ds", "--init_from_model", "hf:exp"),
         ["hf:exp", "n_embd None", "whole number"], out="ck/n",
         setup=edit_hf_config(lambda c: c.update(n_embd=None))),
    Case("hf_config_activation_a_list", train("--dataset_dir", "ds", "--init_from_model", "hf:exp"),
         ["hf:exp", "activation_function ['gelu']"], out="ck/n",
         setup=edit_hf_config(lambda c: c.update(activation_function=["gelu"]))),
    Case("hf_weights_not_safetensors", train("--dataset_dir", "ds", "--init_from_model", "hf:exp"),
         ["hf:exp", "model.safetensors", "not a readable safetensors file"], out="ck/n",
         setup=hf_export(lambda d: (d / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{bad}"))),
    # (the config's own number: mypt's table padded to a multiple of 64 was the number shown)
    Case("hf_vocab_size_edited", train("--dataset_dir", "ds", "--init_from_model", "hf:exp"),
         ["hf:exp", "wte.weight has shape (", "(its vocab_size ", "or set vocab_size to their "], out="ck/n",
         setup=edit_hf_config(lambda c: c.update(vocab_size=c["vocab_size"] + 1))),
    Case("hf_untied_without_a_head", train("--dataset_dir", "ds", "--init_from_model", "hf:exp"),
         ["hf:exp", "model.safetensors has no lm_head.weight: config.json says tie_word_embeddings false",
          '"tie_word_embeddings": true'], out="ck/n",
         setup=edit_hf_config(lambda c: c.update(tie_word_embeddings=False))),
    # -- a damaged tokenizer_state.json (a dataset's: no checksum guards it) ----------------
    Case("tokenizer_state_chars_a_list", ev(), ["ds/tokenizer_state.json", "chars", "[1, 2]"],
         setup=edit_json("ds/tokenizer_state.json", lambda t: t.update(chars=[1, 2]))),
    Case("tokenizer_state_hf_json_a_number", ev(), ["ds/tokenizer_state.json", "tokenizer_json", "5"],
         setup=edit_json("ds/tokenizer_state.json", lambda t: t.update(kind="hf", tokenizer_json=5))),
    Case("tokenizer_state_hf_json_not_a_tokenizer", ev(), ["ds/tokenizer_state.json", "tokenizer_json",
                                                           "not a tokenizers tokenizer.json"],
         setup=edit_json("ds/tokenizer_state.json", lambda t: t.update(kind="hf", tokenizer_json="[1]"))),
    # -- eval's flags -------------------------------------------------------------------------
    Case("eval_dataset_name_twice", ev("--dataset", "val=other"), ["--dataset 'val=other'", "'val'", "val=ds",
                                                                   "name of its own"]),
    Case("eval_max_tokens_below_a_window", ev("--max_tokens", "1"), ["--max_tokens 1", "block_size (32)",
                                                                     "--max_tokens 32"]),
    Case("eval_max_tokens_zero", ev("--max_tokens", "0"), ["--max_tokens", "0"], code=2),
    # -- an hf tokenizer that marks no document end ------------------------------------------
    Case("hf_tokenizer_without_document_end", ["prepare-dataset", "--input_files", "corpus.txt", "--out_dir", "new_ds",
                                               "--tokenization", "hf:words.json", "--workers", "1"],
         ["hf:words.json", "no end-of-text token", "cannot encode a newline", "<|endoftext|>"], out="new_ds",
         setup=words_only_tokenizer),
    Case("generate_no_start_of_document", gen("--prompt", " \n ", model="words"), ["--prompt", "no tokens"],
         setup=model_of(words_only_tokenizer, "words")),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line(case: Case, world, tmp_path, monkeypatch):
    run_case(case, world, tmp_path, monkeypatch)



# --- generate through the Python API: each argument checked as its flag is ---

API_CASES = [
    ("temperature_negative", dict(temperature=-1.0), r"generate's temperature: .*-1"),  # sampled the least likely
    ("temperature_nan", dict(temperature=float("nan")), r"generate's temperature: .*nan"),
    ("top_k_negative", dict(top_k=-5), r"generate's top_k: must be >= 0, got -5"),
    ("top_p_zero", dict(top_p=0.0), r"generate's top_p: must be > 0"),
    ("top_p_above_one", dict(top_p=2.0), r"generate's top_p: must be <= 1"),  # no effect, unsaid
    ("max_new_tokens_negative", dict(max_new_tokens=-1), r"generate's max_new_tokens: must be >= 1, got -1"),
    ("num_samples_zero", dict(num_samples=0), r"generate's num_samples: must be >= 1, got 0"),
    ("prompt_none", dict(prompt=None), r"generate's prompt is a NoneType: pass the text"),
    ("tokenizer_spec", dict(tokenizer="char"), r"generate's tokenizer is a str: pass the model's"),
    ("tokenizer_of_another_vocabulary", dict(tokenizer="gpt2"),
     r"generate's tokenizer \(gpt2, 50257 ids\) is not the model's \(vocab_size \d+\): pass the Tokenizer"),
]


@pytest.mark.parametrize("given, error", [c[1:] for c in API_CASES], ids=[c[0] for c in API_CASES])
def test_generates_arguments_are_checked_as_its_flags_are(world, given, error):
    from mypt.errors import ConfigError
    from mypt.generate import generate

    model, tok, _ = load_model(world / "ck" / "m")
    args = {"tokenizer": tok, "prompt": "Line", "max_new_tokens": 3, **given}
    if args["tokenizer"] == "gpt2":
        args["tokenizer"] = GPT2Tokenizer()
    with pytest.raises(ConfigError, match=error):
        generate(model, **args)


def test_generate_takes_one_str_as_one_stop_string(world):
    """stop="ab": each character was a stop string (a sample ended at the first a or b)."""
    from mypt.generate import generate

    model, tok, _ = load_model(world / "ck" / "m")
    [free] = generate(model, tok, "Line", max_new_tokens=40, temperature=1.0, seed=3)
    new = free[4:]
    # A pair of the continuation whose first character comes earlier alone.
    at = next(i for i in range(1, len(new) - 1) if new[i] in new[:i] and new[i:i + 2] not in new[:i + 1])
    stop = new[at:at + 2]
    assert generate(model, tok, "Line", max_new_tokens=40, temperature=1.0, seed=3, stop=stop) == \
        ["Line" + new[:at]]
