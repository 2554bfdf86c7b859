"""What generate and eval print (issue 18): a sample that stops at once still shows its header
and prompt; eval's --max_tokens is at most; a prompt of bytes that are not UTF-8, as a shell
passes them, is one line; --prompt_file (issue 21) is the prompt its file holds."""

from __future__ import annotations

import json
import os
import shutil
import sys
import unicodedata
from pathlib import Path

import pytest
from bad_inputs import gen, invoke
from conftest import run


@pytest.fixture
def w(world, tmp_path, monkeypatch) -> Path:
    """A copy of the bad-input world (a char dataset `ds`, a tiny model `ck/m`), as cwd."""
    w = tmp_path / "w"
    shutil.copytree(world, w, symlinks=True)
    monkeypatch.chdir(w)
    return w


def test_a_sample_stopped_at_its_first_piece_still_prints_header_and_prompt(w):
    greedy = ["--prompt", "Line", "--temperature", "0", "--num_samples", "2"]
    result = invoke(*gen(*greedy))
    assert result.exit_code == 0, result.output
    first = result.output.split("--- sample 1 ---\nLine", 1)[1][0]  # the first character generated
    result = invoke(*gen(*greedy, "--stop", first))
    assert result.exit_code == 0, result.output
    assert result.output == "--- sample 1 ---\nLine\n--- sample 2 ---\nLine\n"


def test_prompt_file_is_the_prompt_as_written(w):
    """--prompt_file FILE: the file's text, its last newline and a byte-order mark's absence
    included, samples exactly as --prompt with that text does."""
    (w / "p.txt").write_bytes(b"\xef\xbb\xbfLine 3 of\n")
    greedy = ["--temperature", "0", "--max_new_tokens", "12"]
    from_file = invoke(*gen(*greedy, "--prompt_file", "p.txt"))
    assert from_file.exit_code == 0, from_file.output
    assert from_file.output == invoke(*gen(*greedy, "--prompt", "Line 3 of\n")).output
    assert from_file.output.startswith("--- sample 1 ---\nLine 3 of\n")


def _eval_tokens(*extra: str) -> int:
    result = invoke("eval", "--model_name", "m", "--checkpoints_dir", "ck", "--dataset", "val=ds", "--device", "cpu",
                    "--json", *extra)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)["val"]["tokens"]


def test_eval_max_tokens_is_at_most(w):
    whole = _eval_tokens()  # the world's model has block_size 32
    assert whole > 64
    assert _eval_tokens("--max_tokens", "32") == 32
    assert _eval_tokens("--max_tokens", "63") == 32  # whole windows only: rounded down, never up
    assert _eval_tokens("--max_tokens", "64") == 64
    assert _eval_tokens("--max_tokens", str(10 * whole)) == whole


def test_eval_loads_each_datasets_tokenizer_once(w, monkeypatch):
    """mypt eval builds a dataset's tokenizer once (its check against the model), and the
    evaluation's loader takes it: besides the model's own, one load per dataset."""
    from mypt.tokenizers import Tokenizer

    loaded, load = [], Tokenizer.load.__func__
    monkeypatch.setattr(Tokenizer, "load", classmethod(lambda cls, d: loaded.append(Path(d)) or load(cls, d)))
    assert _eval_tokens() > 0
    assert sorted(map(str, loaded)) == sorted([str(Path("ck") / "m"), "ds"])


def test_evaluate_dataset_closes_the_shards_when_its_pass_fails(w):
    """A pass that fails (a model error, a damaged shard, a Ctrl-C) leaves no shard open: the
    loader is closed on the way out, not when the traceback holding it is collected."""
    import torch

    from mypt.evaluate import evaluate_dataset
    from mypt.model import load_model

    class Failing(torch.nn.Module):
        def __init__(self, config):
            super().__init__()
            self.config, self.weight = config, torch.nn.Parameter(torch.zeros(1))

        def forward(self, x, y):
            raise RuntimeError("the model failed")

    failing = Failing(load_model(Path("ck/m"))[0].config)
    fds = sorted(os.listdir("/proc/self/fd"))
    with pytest.raises(RuntimeError, match="the model failed") as held:  # (the traceback kept alive)
        evaluate_dataset(failing, Path("ds"))
    assert held.traceback and sorted(os.listdir("/proc/self/fd")) == fds


@pytest.mark.slow
def test_a_prompt_of_bytes_that_are_not_utf8_is_one_line(w):
    """As a shell passes `--prompt $'Line \\xff'`: bytes, decoded by Python with surrogateescape."""
    done = run([sys.executable, "-m", "mypt.cli", *gen(), "--prompt", b"Line \xff"], cwd=w, check=False)
    errors = [line for line in done.stderr.splitlines() + done.stdout.splitlines() if line.startswith("Error")]
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert errors == ["Error: --prompt b'Line \\xff': not valid UTF-8 (byte b'\\xff' at character 5); give --prompt "
                      "as UTF-8 text (check the terminal's or the script's encoding)"]


def test_eval_names_the_model_it_loaded_and_takes_a_bare_dataset_dir(w):
    """A bare --dataset DIR is named by its last part; the first line says which checkpoint
    --model_name resolved to (a name and a same-named path could mean two)."""
    result = invoke("eval", "--model_name", "m", "--checkpoints_dir", "ck", "--dataset", "ds", "--device", "cpu")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"model: {Path('ck') / 'm'}" and lines[1].startswith("ds: loss ")
    as_json = invoke("eval", "--model_name", "m", "--checkpoints_dir", "ck", "--dataset", "ds", "--device", "cpu",
                     "--json")
    assert set(json.loads(as_json.output)) == {"ds"}
    # a directory whose path holds "=" (runs/lr=3e-4/ds) is a DIR, not NAME=DIR; so is "."
    Path("runs/lr=3e-4").mkdir(parents=True)
    os.symlink(Path("ds").resolve(), "runs/lr=3e-4/ds")
    as_json = invoke("eval", "--model_name", "m", "--checkpoints_dir", "ck", "--dataset", "runs/lr=3e-4/ds",
                     "--device", "cpu", "--json")
    assert as_json.exit_code == 0 and set(json.loads(as_json.output)) == {"ds"}, as_json.output


@pytest.mark.parametrize("spec, error", [
    ("val=ds:0.5", "Error: --dataset val=ds:0.5: --dataset takes no weight (:0.5): each dataset is evaluated apart; "
                   "give NAME=DIR"),
    ("a:b=ds", "Error: --dataset a:b=ds: no such directory a:b=ds; prepare it with `mypt prepare-dataset --out_dir`, "
               "or fix the path (NAME=DIR, each part optional)"),
    ("=ds", "Error: --dataset =ds: no such directory =ds"),
])
def test_eval_reads_dataset_flags_by_the_dataset_dir_rules_without_a_weight(w, spec, error):
    """--dataset NAME=DIR is parsed as --dataset_dir is (DatasetSpec): a name is a metrics key
    of letters, digits, '_', '-' or '.' (v1.2 too), and a weight, which means nothing to eval,
    is refused (a name given twice: test_an_eval_name_keys_its_line_once_and_is_refused_twice_in_eval_form)."""
    result = invoke("eval", "--model_name", "m", "--checkpoints_dir", "ck", "--dataset", spec, "--device", "cpu")
    assert result.exit_code == 1 and result.output.startswith(error), result.output


def test_an_eval_name_keys_its_line_once_and_is_refused_twice_in_eval_form(w):
    """--dataset takes no weight: its duplicate-name message shows NAME=DIR, and names --dataset.
    Once, the name (v1.2: letters, digits, '_', '-' or '.') keys the dataset's line."""
    one = invoke("eval", "--model_name", "m", "--checkpoints_dir", "ck", "--dataset", "v1.2=ds", "--device", "cpu",
                 "--json")
    assert one.exit_code == 0 and set(json.loads(one.output)) == {"v1.2"}, one.output
    twice = invoke("eval", "--model_name", "m", "--checkpoints_dir", "ck", "--dataset", "v1.2=ds", "--dataset",
                   "v1.2=ds", "--device", "cpu")
    assert twice.exit_code == 1, twice.output
    assert twice.output.startswith("Error: --dataset 'v1.2=ds': two datasets named v1.2: the name 'v1.2' is given "
                                   "to --dataset v1.2=ds already; give each dataset a name of its own, "
                                   "NAME1=DIR1 NAME2=DIR2"), twice.output


def test_a_model_not_found_names_every_place_looked_and_the_flag(w):
    result = invoke("generate", "--model_name", "m", "--checkpoints_dir", "nope", "--prompt", "Line")
    assert result.exit_code == 1, result.output
    assert f"no checkpoint 'm' (looked in {Path('nope', 'm')} (--checkpoints_dir nope) and m)" in result.output
    assert "--checkpoints_dir that holds it" in result.output
    result = invoke("generate", "--model_name", "m", "--checkpoints_dir", "ck", "--prompt", "Line")
    assert result.exit_code == 0, result.output


def test_eval_refuses_a_dataset_of_another_vocabulary_before_evaluating_any(w):
    result = invoke("eval", "--model_name", "ck/m", "--dataset", "g=ds", "--dataset", "o=other", "--device", "cpu")
    assert result.exit_code == 1 and "--dataset o=other" in result.output and "vocabulary" in result.output
    assert "g: loss" not in result.output, result.output  # nothing evaluated first, to be thrown away


@pytest.mark.slow
def test_generate_into_a_pipe_closed_early_ends_quietly(w):
    """`mypt generate ... | head`: the reader has what it wanted; no "Error: cannot use a file:
    Broken pipe", no traceback, and the status of a Unix tool that SIGPIPE ended (141, as
    `yes | head` leaves it), not 1, a failure's."""
    import signal
    import subprocess

    proc = subprocess.Popen([sys.executable, "-m", "mypt.cli", *gen("--prompt", "Line", "--num_samples", "200",
                                                                   "--max_new_tokens", "200")],
                            cwd=w, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert len(proc.stdout.read(30)) == 30
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 128 + signal.SIGPIPE and err == "", err


def test_eval_names_the_shard_of_a_token_id_past_the_vocabulary_deep_in_it(w):
    """Eval reads every val token: an id no tokenizer gives, past the first 4,096 the loader's
    start-up check reads, is one line naming the shard (it was torch's IndexError traceback), from
    the check of the split before it is scored (verify-dataset's), though the metadata records no
    sha256."""
    import numpy as np

    made = invoke("prepare-dataset", "--input_files", "corpus.txt", "--out_dir", "big", "--tokenizer_from", "ds",
                  "--val_fraction", "0.5", "--tokens_per_shard", "100000", "--workers", "1")
    assert made.exit_code == 0, made.output
    [shard] = (w / "big" / "val").glob("shard_*.bin")
    tokens = np.fromfile(shard, dtype="<u4")
    assert tokens.size > 4096 + 100
    tokens[4096 + 100] = 1000
    tokens.tofile(shard)
    meta = json.loads((w / "big" / "dataset_metadata.json").read_text())
    for entry in meta["val"]["shards"]:  # an older mypt's dataset (no checksums): eval's check reads every id still
        del entry["sha256"]
    (w / "big" / "dataset_metadata.json").write_text(json.dumps(meta))
    result = invoke("eval", "--model_name", "ck/m", "--dataset", "big", "--device", "cpu")
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert f"{Path('big') / 'val' / shard.name}: 1 token id(s) >= vocab_size 35 (first: id 1000 at token 4,196)" \
        in result.output, result.output


# --- What is streamed is the decoded text (issue: spaces lost with Metaspace and WordPiece) ---

@pytest.fixture(scope="module")
def kinds(world, tmp_path_factory) -> dict:
    """One tokenizer of each kind and decoder family, over the world's corpus: char, gpt2,
    hf byte-level BPE (`mypt train-tokenizer`), hf Unigram with a Metaspace decoder
    (sentencepiece-style: a token's space depends on where it sits), the same with Llama 2's
    byte-fallback decoder (characters split into <0x..> byte tokens), hf WordPiece ('##')."""
    from mypt.tokenizers import Tokenizer
    from mypt.tokenizers.gpt2 import GPT2Tokenizer
    from mypt.tokenizers.hf import HFTokenizer

    tk = pytest.importorskip("tokenizers")
    texts = (world / "corpus.txt").read_text().splitlines()
    bpe = tmp_path_factory.mktemp("bpe") / "bpe.json"
    made = invoke("train-tokenizer", "--input_files", world / "corpus.txt", "--vocab_size", "300", "--out", bpe)
    assert made.exit_code == 0, made.output
    uni = tk.Tokenizer(tk.models.Unigram())
    uni.pre_tokenizer, uni.decoder = tk.pre_tokenizers.Metaspace(), tk.decoders.Metaspace()
    uni.train_from_iterator(texts, tk.trainers.UnigramTrainer(vocab_size=120, special_tokens=["<unk>", "</s>"],
                                                              unk_token="<unk>", show_progress=False))
    llama = tk.Tokenizer.from_str(uni.to_str())
    llama.decoder = tk.decoders.Sequence([tk.decoders.Replace("▁", " "), tk.decoders.ByteFallback(),
                                          tk.decoders.Fuse(), tk.decoders.Strip(" ", 1, 0)])
    llama.add_tokens([f"<0x{b:02X}>" for b in range(256)])
    wp = tk.Tokenizer(tk.models.WordPiece(unk_token="[UNK]"))
    wp.pre_tokenizer, wp.decoder = tk.pre_tokenizers.BertPreTokenizer(), tk.decoders.WordPiece()
    wp.train_from_iterator(texts, tk.trainers.WordPieceTrainer(vocab_size=120, special_tokens=["[UNK]", "</s>"],
                                                               show_progress=False))
    return {"char": Tokenizer.load(world / "ds"), "gpt2": GPT2Tokenizer(),
            "bpe": HFTokenizer.from_file(bpe), "unigram": HFTokenizer(tokenizer_json=uni.to_str()),
            "llama2": HFTokenizer(tokenizer_json=llama.to_str()), "wordpiece": HFTokenizer(tokenizer_json=wp.to_str())}


def _random_model(tok):
    import torch

    from mypt.config import GPTConfig
    from mypt.model import GPT

    torch.manual_seed(0)  # untrained: near-uniform sampling, so every kind of token comes up
    return GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=1, n_head=1, n_embd=8))


def _streamed(model, tok, prompt: str, monkeypatch, **kw) -> tuple[str, list[str], str]:
    """generate's text, its streamed pieces, and what they should be: the text decoding the
    prompt's ids and the new ones together gives past the decoded prompt (with no prompt, the
    new ids alone: a document's start)."""
    import mypt.generate

    new, pieces, sample = [], [], mypt.generate.sample_tokens

    def recorded(*args, **kwargs):
        for t in sample(*args, **kwargs):
            new.append(int(t[0]))
            yield t

    monkeypatch.setattr(mypt.generate, "sample_tokens", recorded)
    decode, windows = tok.decode, []
    monkeypatch.setattr(tok, "decode", lambda ids: windows.append(len(ids)) or decode(ids))
    text = mypt.generate.generate(model, tok, prompt, temperature=1.0, top_k=None,
                                  on_text=lambda i, p: pieces.append(p), **kw)[0]
    monkeypatch.undo()
    new = new[:new.index(tok.eot_id)] if tok.eot_id in new else new
    ids = list(tok.encode(prompt)) if prompt else []
    whole, head = tok.decode(ids + new), tok.decode(ids)
    assert whole.startswith(head)
    # O(1) per token: each decode is of a few ids (2 * TextStream.PENDING + 1 at most), never of
    # the sample so far (200 new ids with char)
    assert max(windows) <= 40
    return text, pieces, whole[len(head):]


def test_streamed_text_is_the_decoded_continuation_for_every_tokenizer_kind(kinds, monkeypatch):
    """Each token decoded alone and the pieces joined lost the spaces of a Metaspace or WordPiece
    decoder ('thequickbrownfox'), also between the prompt and the first new token, and stop
    strings were looked for in that text. The stream is the decoded continuation, exactly, split
    characters and all; a stop string spanning tokens and a space ends it where the text has it."""
    for kind, tok in kinds.items():
        if kind == "llama2":  # (its byte tokens: test_a_character_split_into_byte_tokens_waits_for_its_last)
            continue
        model = _random_model(tok)
        n = 200 if kind == "char" else 30  # (past the decode's window; the other kinds' vocabularies are slower)
        for prompt in ("the king", " and the queen", ""):
            text, pieces, true = _streamed(model, tok, prompt, monkeypatch, max_new_tokens=n, seed=3)
            assert text == prompt + "".join(pieces), (kind, prompt)  # the prompt as written, then the stream
            assert "".join(pieces) == true, (kind, prompt, pieces)
            assert "\ufffd" not in "".join(pieces[:-1]) or "\ufffd" in true, (kind, prompt)
        # the last sample's (no prompt): a stop string across a space
        spaced = [i for i in range(1, len(true) - 2) if true[i] == " " and "\ufffd" not in true[i - 1:i + 2]]
        stop = true[spaced[0] - 1:spaced[0] + 2]  # a character, the space, a character
        text, pieces, _ = _streamed(model, tok, "", monkeypatch, max_new_tokens=n, seed=3, stop=[stop])
        assert text == "".join(pieces) == true[:true.index(stop)], (kind, stop)


def test_generate_streams_a_metaspace_models_spaces(w, kinds, monkeypatch):
    """`mypt generate` with a sentencepiece-style (Unigram, Metaspace) model: the words keep
    their spaces, the first new one's after the prompt included."""
    from mypt import checkpoint

    tok = kinds["unigram"]
    model = _random_model(tok)
    checkpoint.save(w / "ck" / "uni", model, tok, {})
    result = invoke(*gen("--prompt", "the king", "--max_new_tokens", "30", "--seed", "5", "--temperature", "1",
                         "--top_k", "0", model="uni"))
    assert result.exit_code == 0, result.output
    true = _streamed(model, tok, "the king", monkeypatch, max_new_tokens=30, seed=5)[2]
    assert true.count(" ") >= 3 and result.output == f"--- sample 1 ---\nthe king{true}\n"


def test_a_character_split_into_byte_tokens_waits_for_its_last(kinds):
    """Llama 2's decoder: a character the vocabulary lacks is its UTF-8 bytes as <0x..>
    tokens, which decode to U+FFFD until the last one comes. The stream shows it whole, once,
    and the words around it with their spaces."""
    import tokenizers

    from mypt.generate import TextStream

    tok = kinds["llama2"]
    hf = tokenizers.Tokenizer.from_str(tok.tokenizer_json)
    euro = [hf.token_to_id(f"<0x{b:02X}>") for b in "€".encode()]
    context = list(tok.encode("the king"))
    ids = euro + list(tok.encode(" and the")) + euro * 2 + list(tok.encode(" queen"))
    stream = TextStream(tok, context=context)
    pieces = [stream.push(i) for i in ids] + [stream.flush()]
    assert "".join(pieces) == tok.decode(context + ids)[len("the king"):] == "€ and the€€ queen"
    assert "\ufffd" not in "".join(pieces) and pieces[:3] == ["", "", "€"]


@pytest.mark.parametrize("kind", ["char", "gpt2", "wordpiece"])
def test_generate_encodes_the_prompt_once(kinds, kind, monkeypatch, capsys):
    """The prompt is encoded once (its ids and what the vocabulary lacks from one pass), whatever
    the tokenizer; an [UNK] piece is still warned of."""
    import mypt.generate

    tok = kinds[kind]
    prompt = "Line 3 of the dragon" if kind == "wordpiece" else "Line 3 of"
    passes = []
    for name in ("encode", "encode_array", "encode_lossy"):
        method = getattr(tok, name)
        monkeypatch.setattr(tok, name, lambda text, method=method, name=name: passes.append(name) or method(text))
    ids = mypt.generate._encode_prompt(tok, prompt, "--prompt")
    monkeypatch.undo()
    assert passes[0] == "encode_lossy" and passes.count("encode_lossy") == 1 and "encode" not in passes, passes
    assert ids == tok.encode_lossy(prompt)[0].tolist()
    assert ("not in the model's vocabulary" in capsys.readouterr().err) == (kind == "wordpiece")


def test_generate_never_samples_an_id_no_token_has():
    """An hf vocabulary with gaps (ids 3-8 stand for nothing): the model has rows for them, and
    sampling picked them, printing nothing. Here the model's head makes the gaps the likeliest
    ids; generate gives the likeliest id that is a token."""
    import torch

    tokenizers = pytest.importorskip("tokenizers")
    from mypt.generate import generate
    from mypt.model import GPT, GPTConfig
    from mypt.tokenizers.hf import HFTokenizer

    hf = tokenizers.Tokenizer(tokenizers.models.BPE(vocab={"<|endoftext|>": 0, "a": 1, "b": 2, "c": 9}, merges=[]))
    hf.add_special_tokens(["<|endoftext|>"])
    hf.decoder = tokenizers.decoders.Fuse()
    tok = HFTokenizer(tokenizer_json=hf.to_str())
    assert tok.vocab_size == 10 and tok.unused_ids() == [3, 4, 5, 6, 7, 8]
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=1, n_embd=8, bias=True))
    with torch.no_grad():  # every position's output is e0, so the logits are the head's column 0
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.copy_(torch.eye(8)[0])
        model.lm_head.weight.zero_()
        model.lm_head.weight[3:9, 0] = 5.0  # the gaps
        model.lm_head.weight[1, 0] = 1.0  # "a"
    [text] = generate(model, tok, "b", max_new_tokens=12, temperature=0, seed=1)
    assert text == "b" + "a" * 12


# --- top_p: the nucleus, and a tie at its cut ---

def _sampled_ids(probs: list[float], top_p: float, draws: int = 256) -> set[int]:
    """The ids sample_tokens draws from a model whose next-token probabilities are `probs` at
    every position (its head reads one constant feature: ln_f's bias)."""
    import math

    import torch

    from mypt.generate import sample_tokens
    from mypt.model import GPT, GPTConfig

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=len(probs), block_size=8, n_layer=1, n_head=1, n_embd=8, bias=True))
    with torch.no_grad():
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.copy_(torch.eye(8)[0])
        model.lm_head.weight.zero_()
        model.lm_head.weight[:len(probs), 0] = torch.tensor([math.log(p) for p in probs])
    generator = torch.Generator().manual_seed(3)
    rows = torch.zeros(draws // 8, 1, dtype=torch.long)  # 8 steps of draws/8 samples
    tokens = sample_tokens(model, rows, 8, temperature=1.0, top_p=top_p, generator=generator)
    return {int(i) for t in tokens for i in t}


def test_top_p_keeps_the_smallest_set_that_reaches_p_and_a_tie_at_its_cut_whole():
    """--top_p: the likeliest tokens until their probability reaches p; tokens exactly as likely
    as the last one needed are all kept, whatever their ids' order (the sort's order chose one
    of them, a different one for another numbering of the same vocabulary)."""
    assert _sampled_ids([0.45, 0.35, 0.2], 0.4) == {0}
    assert _sampled_ids([0.45, 0.35, 0.2], 0.5) == {0, 1}
    assert _sampled_ids([0.4, 0.3, 0.3], 0.5) == {0, 1, 2}  # 0.4 + either 0.3 reaches p: both kept
    assert _sampled_ids([0.3, 0.3, 0.4], 0.5) == {0, 1, 2}
    assert _sampled_ids([0.3, 0.4, 0.3], 0.5) == {0, 1, 2}
    assert _sampled_ids([0.2, 0.3, 0.2, 0.3], 0.3) == {1, 3}  # the tie is the first place: both, and no more
    assert _sampled_ids([0.4, 0.3, 0.3], 0.95) == {0, 1, 2}


def _prompt_ids(tok, prompt: str, monkeypatch) -> list[int]:
    """The ids generate feeds the model for `prompt`."""
    import mypt.generate

    fed, sample = [], mypt.generate.sample_tokens
    monkeypatch.setattr(mypt.generate, "sample_tokens", lambda model, idx, *a, **k: fed.append(idx[0].tolist())
                        or sample(model, idx, *a, **k))
    mypt.generate.generate(_random_model(tok), tok, prompt, max_new_tokens=1)
    monkeypatch.undo()
    return fed[0]


def test_a_prompts_carriage_returns_are_the_newlines_training_text_has(w, kinds, monkeypatch):
    """prepare-dataset's normalization (and train --input_file's reading) make \\r\\n and a lone \\r
    a \\n: a prompt's \\r (a Windows editor's --prompt_file) was a token the model never saw, and a
    char model's vocabulary refused it. A char vocabulary that holds \\r (--no_normalize) keeps it."""
    from mypt.tokenizers import Tokenizer

    (w / "p.txt").write_bytes(b"Line 3 of\r\nLine 4\r\n")
    greedy = ["--temperature", "0", "--max_new_tokens", "12"]
    crlf = invoke(*gen(*greedy, "--prompt_file", "p.txt"))
    assert crlf.exit_code == 0, crlf.output
    lf = invoke(*gen(*greedy, "--prompt", "Line 3 of\nLine 4\n"))
    assert crlf.output.replace("\r\n", "\n") == lf.output  # the prompt shown as given, the same continuation
    for kind in ("gpt2", "char"):  # (last: _prompt_ids undoes the monkeypatch, w's chdir too)
        assert _prompt_ids(kinds[kind], "Line 3\r\nof\rthe", monkeypatch) == \
            list(kinds[kind].encode("Line 3\nof\nthe")), kind
    raw = Tokenizer("char", chars="Lines 3\r\n")
    assert _prompt_ids(raw, "Line 3\r\n", monkeypatch) == list(raw.encode("Line 3\r\n"))


def _cli_prompt_ids(monkeypatch, *args: str) -> list[int]:
    """The ids `mypt generate ARGS` feeds the model for its prompt."""
    import mypt.generate

    fed, sample = [], mypt.generate.sample_tokens
    monkeypatch.setattr(mypt.generate, "sample_tokens", lambda model, idx, *a, **k: fed.append(idx[0].tolist())
                        or sample(model, idx, *a, **k))
    result = invoke(*args)
    monkeypatch.setattr(mypt.generate, "sample_tokens", sample)
    assert result.exit_code == 0, result.output
    return fed[0]


def test_a_prompt_is_read_in_the_unicode_form_the_training_text_has(w, monkeypatch):
    """prepare-dataset normalizes text to NFC by default: a decomposed prompt ('e' and a
    combining acute, as macOS writes file names) was refused by a char model whose vocabulary
    holds 'é' ("the characters ['\u0301'] are not in the model's char vocabulary"), and was fed to
    a gpt2 model as ids the corpus never held ([26725, 136, 223] for ' café''s [40304]). A char
    vocabulary of decomposed text (--no_normalize, train --input_file) keeps it as given; a gpt2
    checkpoint that does not record its text's form (text_nfc) too."""
    from mypt import checkpoint
    from mypt.tokenizers import Tokenizer
    from mypt.tokenizers.gpt2 import GPT2Tokenizer

    composed, decomposed = "the caf\u00e9 ", "the cafe\u0301 "
    for name, tok, extra in (("nfc", Tokenizer("char", chars=composed + "x\n"), {}),
                             ("g", GPT2Tokenizer(), {"text_nfc": True}), ("g0", GPT2Tokenizer(), {}),
                             ("nfd", Tokenizer("char", chars=decomposed + "x\n"), {})):
        checkpoint.save(w / "ck" / name, _random_model(tok), tok, extra)
    for name, read_as in (("nfc", composed), ("nfd", decomposed), ("g", composed), ("g0", decomposed)):
        tok = Tokenizer.load(w / "ck" / name)
        assert _cli_prompt_ids(monkeypatch, *gen("--prompt", decomposed, model=name)) == list(tok.encode(read_as))
    (w / "p.txt").write_text(decomposed, encoding="utf-8")
    assert _cli_prompt_ids(monkeypatch, *gen("--prompt_file", "p.txt", model="g")) == [1169, 40304, 220]
    greedy = ("--temperature", "0", "--max_new_tokens", "8")
    nfd = invoke(*gen(*greedy, "--prompt_file", "p.txt", model="nfc"))
    nfc = invoke(*gen(*greedy, "--prompt", composed, model="nfc"))
    assert nfd.exit_code == 0 and nfc.exit_code == 0, nfd.output + nfc.output
    assert nfd.output.startswith("--- sample 1 ---\n" + decomposed)  # shown as given, continued as 'café'
    assert nfd.output.replace(decomposed, composed, 1) == nfc.output


@pytest.mark.slow
def test_a_prompt_is_read_as_the_models_training_text_was_normalized(w, monkeypatch):
    """train records whether its text was Unicode NFC (config.json's text_nfc), and generate
    reads a gpt2 model's prompt by it: a model of --input_file (read as is) or of a
    --no_normalize dataset keeps a decomposed prompt as given, where NFC gave it ids of other
    text (U+F91D as U+6B04, the ohm sign as omega); a model of a normalized dataset NFCs it."""
    from mypt.tokenizers.gpt2 import GPT2Tokenizer

    prompt = "the cafe\u0301 \uf91d \u2126 "
    Path("nfd.txt").write_text(prompt * 200, encoding="utf-8")
    for out, flags in (("gn", []), ("graw", ["--no_normalize"])):
        r = invoke("prepare-dataset", "--input_files", "nfd.txt", "--out_dir", out, "--tokenization", "gpt2",
                   *flags)
        assert r.exit_code == 0, r.output
    for model, data, nfc in (("file", ["--input_file", "nfd.txt"], False), ("raw", ["--dataset_dir", "graw"], False),
                             ("norm", ["--dataset_dir", "gn"], True)):
        r = invoke("train", "--model_name", model, "--checkpoints_dir", "ck", "--config_file", "tiny", "--device",
                   "cpu", "--max_iters", "1", "--eval_interval", "1", "--eval_iters", "1", *data)
        assert r.exit_code == 0, r.output
        assert json.loads((w / "ck" / model / "config.json").read_text())["text_nfc"] is nfc
        read_as = unicodedata.normalize("NFC", prompt) if nfc else prompt
        assert _cli_prompt_ids(monkeypatch, *gen("--prompt", prompt, model=model)) == \
            list(GPT2Tokenizer().encode(read_as)), model


def test_eval_refuses_a_val_shard_whose_bytes_are_not_those_prepared(w):
    """A val shard edited in place (its size unchanged, so the loader's start-up check passes)
    scored a loss on other data; its sha256 is checked before any dataset is evaluated."""
    import numpy as np

    shutil.copytree(w / "ds", w / "edited")
    [shard] = (w / "edited" / "val").glob("shard_*.bin")
    tokens = np.fromfile(shard, dtype="<u4")
    assert tokens[2] != tokens[3]
    tokens[[2, 3]] = tokens[[3, 2]]  # the same ids, the same size
    tokens.tofile(shard)
    result = invoke("eval", "--model_name", "ck/m", "--dataset", "ds", "--dataset", "edited", "--device", "cpu")
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert f"{Path('edited') / 'val' / shard.name}: sha256 " in result.output and "(the bytes changed)" in \
        result.output and "mypt verify-dataset edited" in result.output, result.output
    assert "ds: loss" not in result.output, result.output  # nothing evaluated first, to be thrown away
    assert _eval_tokens() > 0  # the dataset as prepared: evaluated


def test_evaluate_dataset_refuses_what_would_give_a_loss_about_nothing(world):
    """evaluate_dataset (the Python API of eval): a dataset of another vocabulary gave a loss
    (over ids the model's tokenizer does not give), a split other than val was a KeyError, a
    model's path an AttributeError. The model's tokenizer, given, is checked as training checks it."""
    from mypt.errors import ConfigError, DataError
    from mypt.evaluate import evaluate_dataset
    from mypt.model import load_model

    model, tok, _ = load_model(world / "ck" / "m")
    with pytest.raises(ConfigError, match=r"evaluate_dataset: the dataset .*other's tokenizer \(char, \d+ ids\) is not "
                                          r"the model's \(vocab_size \d+\): a loss over another vocabulary's ids means "
                                          "nothing"):
        evaluate_dataset(model, world / "other")
    with pytest.raises(DataError, match=r"the dataset .*other is another char tokenizer"):
        evaluate_dataset(model, world / "other", tokenizer=tok)
    with pytest.raises(ConfigError, match=r"evaluate_dataset's tokenizer= \(a int\) is not the model's"):
        evaluate_dataset(model, world / "ds", tokenizer=5)  # (an AttributeError)
    with pytest.raises(ConfigError, match=r"evaluate_dataset's split 'test': a dataset's splits are train and val"):
        evaluate_dataset(model, world / "ds", split="test")
    with pytest.raises(ConfigError, match=r"evaluate_dataset's model is a str: pass a GPT"):
        evaluate_dataset(str(world / "ck" / "m"), world / "ds")
    train = evaluate_dataset(model, world / "ds", split="train", max_tokens=64, tokenizer=tok)
    assert train["tokens"] == 64 and train["loss"] > 0


def test_eval_refuses_a_val_shard_with_an_id_outside_the_vocabulary_before_scoring_any(w):
    """A val shard whose bytes match its sha256 but hold an id the tokenizer does not give (a
    dataset's metadata edited to match, or one from elsewhere) is refused by the check that reads
    the split before any dataset is scored, verify-dataset's id check on the same read; the pass
    found it only where it read it, after scoring the datasets before."""
    import hashlib

    import numpy as np

    shutil.copytree(w / "ds", w / "bad")
    [shard] = (w / "bad" / "val").glob("shard_*.bin")
    tokens = np.fromfile(shard, dtype="<u4")
    tokens[-1] = 10**6
    tokens.tofile(shard)
    meta_path = w / "bad" / "dataset_metadata.json"
    meta = json.loads(meta_path.read_text())
    [entry] = meta["val"]["shards"]
    entry["sha256"] = hashlib.sha256(shard.read_bytes()).hexdigest()
    meta_path.write_text(json.dumps(meta))
    result = invoke("eval", "--model_name", "ck/m", "--dataset", "ds", "--dataset", "bad", "--device", "cpu")
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert f"{Path('bad') / 'val' / shard.name}: 1 token id(s) >= vocab_size" in result.output and \
        "first: id 1000000" in result.output and "mypt verify-dataset bad" in result.output, result.output
    assert "ds: loss" not in result.output, result.output
