"""Model, configs, LR schedule, checkpoints and generation."""

from __future__ import annotations

import json
import pickle
import string

import pytest
import torch

from mypt import checkpoint
from mypt.generate import NOT_FINITE, generate, sample_tokens
from mypt.config import TrainConfig, list_presets, load_config_file
from mypt.errors import CheckpointError, ConfigError
from mypt.model import GPT, GPTConfig, load_model
from mypt.tokenizers.char import CharTokenizer
from mypt.train import get_lr

CHARS = sorted(set(string.ascii_letters + string.digits + " .,;!?'\n-"))  # 72 characters
TINY = dict(vocab_size=len(CHARS), block_size=16, n_layer=2, n_head=2, n_embd=16)


def test_config_validation_and_unknown_keys():
    with pytest.raises(ConfigError, match=r"n_embd \(30\) must be divisible by n_head \(4\)"):
        GPTConfig(n_embd=30, n_head=4)
    with pytest.raises(ConfigError, match=r"unknown model key\(s\) \['n_layers'\]"):
        GPTConfig.from_dict({"n_layers": 2})
    with pytest.raises(ConfigError, match=r"unknown training key\(s\) \['lr'\]"):
        TrainConfig.from_dict({"lr": 1e-3})
    assert GPTConfig(vocab_size=50257).padded_vocab_size == 50304


@pytest.mark.parametrize("preset", list_presets())
def test_every_preset_loads_and_sized_presets_hold_their_size(preset):
    model_d, train_d, _ = load_config_file(preset)
    TrainConfig.from_dict(train_d)
    cfg = GPTConfig.from_dict({**model_d, "vocab_size": 50257})
    with torch.device("meta"):
        n = GPT(cfg).num_params()
    size = {"150M": 150e6, "150M_1024": 150e6, "pretrain/750M_1024_domain_adapt": 750e6}.get(
        preset.removeprefix("modern/").replace("750M", "pretrain/750M", preset.startswith("modern/750M")))
    if size is not None:
        assert abs(n - size) / size < 0.10, f"{preset}: {n / 1e6:.1f}M parameters"


@pytest.mark.parametrize("preset", list_presets())
def test_every_presets_decay_follows_max_iters(preset):
    # A preset that pinned lr_decay_iters would, under --max_iters 3000, stop training part way
    # down its cosine (small_char did: 5000, so the demo ended at 0.36 of its peak lr).
    _, train_d, _ = load_config_file(preset)
    cfg = TrainConfig.from_dict({**train_d, "max_iters": 3000, "warmup_iters": 100})
    min_lr = cfg.min_lr if cfg.min_lr is not None else cfg.learning_rate / 10
    assert get_lr(2999, cfg) == pytest.approx(min_lr, rel=1e-3) and get_lr(3000, cfg) == pytest.approx(min_lr)


def test_training_forward_returns_detached_logits_and_trains_through_the_loss():
    """With targets the logits come back detached (a compiled step would otherwise build a zero
    gradient of their size every step); the loss is theirs and carries the gradient."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(**TINY, dropout=0.0))
    x = torch.randint(0, TINY["vocab_size"], (3, 16))
    y = torch.randint(0, TINY["vocab_size"], (3, 16))
    y[0, :4] = -1  # ignored positions
    logits, loss = model(x, y)
    assert not logits.requires_grad and loss.requires_grad
    expected = torch.nn.functional.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1), ignore_index=-1)
    assert torch.allclose(loss, expected)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    last, none = model(x)  # generation's forward: the last position, as before
    assert none is None and torch.allclose(last[:, 0], logits[:, -1], atol=1e-6)


def test_loss_and_logits_cover_the_real_vocabulary_only():
    """The embedding is padded to a multiple of 64 rows; those ids are in no tokenizer. An
    imported model's padded rows are zeros (logit 0): counted in the softmax, they took a share
    of every prediction (an export re-imported evaluated at 4.14 where its source was at 3.86)."""
    torch.manual_seed(0)
    vocab = TINY["vocab_size"]
    model = GPT(GPTConfig(**TINY, dropout=0.0))
    with torch.no_grad():
        model.lm_head.weight[vocab:] = 0.0  # what --init_from_model hf:DIR pads with
    padded = []
    model.lm_head.register_forward_hook(lambda m, i, out: padded.append(out.detach()))
    x, y = torch.randint(0, vocab, (2, 16)), torch.randint(0, vocab, (2, 16))
    logits, loss = model(x, y)
    full = padded[-1]  # the head's own output: padded_vocab_size columns
    assert full.size(-1) == model.config.padded_vocab_size > vocab == logits.size(-1)
    real = torch.nn.functional.cross_entropy(full[..., :vocab].reshape(-1, vocab), y.view(-1))
    counted = torch.nn.functional.cross_entropy(full.reshape(-1, full.size(-1)), y.view(-1))
    assert torch.allclose(loss, real) and not torch.allclose(loss, counted, atol=0.1)
    assert torch.equal(logits, full[..., :vocab])
    last, _ = model(x)
    assert last.shape == (2, 1, vocab)


def test_set_dropout_makes_the_model_a_new_one_with_that_rate_would_be():
    """Dropout holds no weights: set in place, the model trains exactly as one built with it."""
    cfg = GPTConfig(vocab_size=32, block_size=8, n_layer=2, n_head=2, n_embd=16)
    torch.manual_seed(0)
    model = GPT(cfg)
    built = GPT(GPTConfig(**{**cfg.to_dict(), "dropout": 0.3}))
    built.load_state_dict(model.state_dict())
    model.set_dropout(0.3)
    assert model.config == built.config
    x = torch.randint(0, 32, (2, 8))
    outputs = []
    for m in (model, built):
        torch.manual_seed(1)
        m.train()
        outputs.append(m(x, x)[1])
    assert outputs[0].item() == outputs[1].item() != model.eval()(x, x)[1].item()


def test_lr_schedule_exact_values():
    cfg = TrainConfig(learning_rate=1.0, min_lr=0.1, warmup_iters=10, lr_decay_iters=110, max_iters=200)
    assert get_lr(0, cfg) == pytest.approx(1 / 11)
    assert get_lr(9, cfg) == pytest.approx(10 / 11)
    assert get_lr(10, cfg) == pytest.approx(1.0)
    assert get_lr(60, cfg) == pytest.approx(0.55)  # half way down the cosine
    assert get_lr(110, cfg) == pytest.approx(0.1) and get_lr(150, cfg) == pytest.approx(0.1)
    # wsd: the peak held, then the last half of the 100 steps after the warmup linear to min_lr
    wsd = TrainConfig(learning_rate=1.0, min_lr=0.1, warmup_iters=10, lr_decay_iters=110, max_iters=200,
                      lr_schedule="wsd", decay_fraction=0.5)
    assert get_lr(9, wsd) == pytest.approx(10 / 11)
    assert get_lr(10, wsd) == get_lr(60, wsd) == pytest.approx(1.0)
    assert get_lr(85, wsd) == pytest.approx(0.55) and get_lr(109, wsd) == pytest.approx(0.1 + 0.9 / 50)
    assert get_lr(110, wsd) == pytest.approx(0.1) and get_lr(150, wsd) == pytest.approx(0.1)
    # left out, min_lr is 0 with wsd (a tenth of the peak with the cosine)
    assert TrainConfig(lr_schedule="wsd").final_lr == 0.0 and TrainConfig().final_lr == pytest.approx(6e-5)
    # A longer run (lr_decay_iters follows max_iters) keeps every rate of the stable part: a
    # wsd run resumed with more --max_iters before its decay goes on as it was.
    short, long = (TrainConfig(learning_rate=1.0, warmup_iters=10, max_iters=n, lr_schedule="wsd") for n in (110, 400))
    assert [get_lr(s, short) for s in range(71)] == [get_lr(s, long) for s in range(71)]
    assert get_lr(71, short) < 1.0 == get_lr(71, long)  # (the decay: its last 40 of 100 steps)
    # A decay shorter than two steps takes two, so the last trained step (lr_decay_iters - 1) is below the peak.
    tiny = TrainConfig(learning_rate=1.0, warmup_iters=0, max_iters=4, lr_schedule="wsd", decay_fraction=0.1)
    assert [get_lr(s, tiny) for s in range(5)] == [1.0, 1.0, 1.0, 0.5, 0.0]


def test_checkpoint_round_trip_gives_identical_logits(tmp_path):
    torch.manual_seed(0)
    model = GPT(GPTConfig(**TINY))
    tok = CharTokenizer(chars=CHARS)
    checkpoint.save(tmp_path / "m", model, tok, {"training": {}})
    loaded, loaded_tok, _ = load_model(tmp_path / "m")
    x = torch.randint(0, len(CHARS), (3, 16))
    assert torch.equal(model(x, x)[0], loaded(x, x)[0])
    assert loaded_tok.state() == tok.state()
    assert loaded.lm_head.weight is loaded.transformer.wte.weight  # still tied


def test_loading_builds_one_model_and_draws_no_weights_for_it(tmp_path, monkeypatch):
    """load_model builds the model once, on the meta device, and draws no initial weights there:
    the checkpoint's replace every one (a second build and the draws took 0.09 s of a 124M load)."""
    torch.manual_seed(0)
    checkpoint.save(tmp_path / "m", GPT(GPTConfig(**TINY)), CharTokenizer(chars=CHARS), {"training": {}})
    built, drawn, init = [], [], GPT.__init__
    monkeypatch.setattr(GPT, "__init__", lambda self, cfg: built.append(cfg) or init(self, cfg))
    monkeypatch.setattr(GPT, "_init_weights", staticmethod(drawn.append))
    rng = torch.get_rng_state()
    loaded, _, _ = load_model(tmp_path / "m")
    assert len(built) == 1 and not drawn and torch.equal(torch.get_rng_state(), rng)
    assert not any(t.is_meta for t in loaded.state_dict().values())


def test_gelu_setting_round_trips_and_older_checkpoints_keep_the_tanh_form(tmp_path):
    torch.manual_seed(0)
    exact = GPT(GPTConfig(**TINY, gelu="exact"))
    tanh = GPT(GPTConfig(**TINY))
    tanh.load_state_dict(exact.state_dict())
    x = torch.randint(0, len(CHARS), (2, 16))
    assert not torch.allclose(exact(x, x)[0], tanh(x, x)[0], atol=1e-7)  # the setting reaches the MLP
    tok = CharTokenizer(chars=CHARS)
    checkpoint.save(tmp_path / "exact", exact, tok, {"training": {}})
    loaded, _, _ = load_model(tmp_path / "exact")
    assert loaded.config.gelu == "exact" and torch.equal(loaded(x, x)[0], exact(x, x)[0])
    # A checkpoint written before the setting existed has no "gelu": it was the tanh form.
    checkpoint.save(tmp_path / "old", tanh, tok, {"training": {}})
    config = json.loads((tmp_path / "old" / "config.json").read_text())
    del config["model"]["gelu"]
    del config["sha256"][checkpoint.MODEL_SUM]  # (nor the settings' sum, newer still)
    (tmp_path / "old" / "config.json").write_text(json.dumps(config))
    old, _, _ = load_model(tmp_path / "old")
    assert old.config.gelu == "tanh" and torch.equal(old(x, x)[0], tanh(x, x)[0])


def test_pickled_checkpoints_are_refused_without_running_them(tmp_path):
    class Payload:
        def __reduce__(self):
            return (open, (str(tmp_path / "pwned"), "w"))

    torch.manual_seed(0)
    checkpoint.save(tmp_path / "m", GPT(GPTConfig(**TINY)), CharTokenizer(chars="abc"), {})
    (tmp_path / "m" / "model.safetensors").write_bytes(pickle.dumps(Payload()))
    with pytest.raises(CheckpointError, match="never unpickles|does not match the sha256"):
        load_model(tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").unlink()
    (tmp_path / "m" / "ckpt.pt").write_bytes(pickle.dumps(Payload()))
    with pytest.raises(CheckpointError, match="pickles are refused"):
        load_model(tmp_path / "m")
    assert not (tmp_path / "pwned").exists()


def _reference_tokens(model, idx, n):
    """Greedy tokens under the cache's context rule, computed without a cache: each token sees
    the tokens since the last re-prefill start (the window slides by half a block at a time)."""
    block, seq, start = model.config.block_size, idx[0].tolist(), max(0, idx.size(1) - model.config.block_size)
    out = []
    for _ in range(n):
        if len(seq) - start > block:
            start = len(seq) - max(1, block // 2)
        logits, _ = model(torch.tensor([seq[start:]]))
        out.append(int(logits[0, -1, :model.config.vocab_size].argmax()))
        seq.append(out[-1])
    return out


@pytest.mark.slow
def test_kv_cache_matches_full_recompute_and_seeded_generation_repeats():
    torch.manual_seed(0)
    model = GPT(GPTConfig(**TINY)).eval()
    idx = torch.randint(0, len(CHARS), (2, 5))
    for temperature in (0.0, 1.0):  # inside block_size (16): the cache changes nothing
        runs = []
        for use_cache in (True, False):
            g = torch.Generator().manual_seed(3)
            runs.append(torch.stack(list(sample_tokens(model, idx, 11, temperature, None, None, g, use_cache))))
        assert torch.equal(runs[0], runs[1])
    # Past block_size the cache re-prefills half a window at a time: same tokens as that rule
    # computed without a cache, for 5 windows' worth of tokens.
    greedy = [int(t[0]) for t in sample_tokens(model, idx[:1], 80, temperature=0.0)]
    assert greedy == _reference_tokens(model, idx[:1], 80)
    tok = CharTokenizer(chars=CHARS)
    a = generate(model, tok, "hello", 40, top_k=10, top_p=0.9, seed=7, num_samples=2)
    assert a == generate(model, tok, "hello", 40, top_k=10, top_p=0.9, seed=7, num_samples=2)
    assert a[0] != a[1] and all(t.startswith("hello") and len(t) == 45 for t in a)


def test_streamed_pieces_are_the_text_and_stop_strings_end_a_sample():
    from mypt.tokenizers.gpt2 import GPT2Tokenizer

    tok = GPT2Tokenizer()
    torch.manual_seed(0)
    model = GPT(GPTConfig(**{**TINY, "vocab_size": tok.vocab_size})).eval()
    pieces = []
    texts = generate(model, tok, "Zoë 😀", 60, temperature=1.0, top_k=None, seed=1,
                     on_text=lambda i, p: pieces.append(p))
    assert texts[0] == "Zoë 😀" + "".join(pieces) and "\ufffd" not in "".join(pieces[:-1])
    full = texts[0][len("Zoë 😀"):]
    stop = full[20:23]  # a string the unstopped sample contains
    pieces = []
    stopped = generate(model, tok, "Zoë 😀", 60, temperature=1.0, top_k=None, seed=1, stop=[stop],
                       on_text=lambda i, p: pieces.append(p))[0]
    assert stopped == "Zoë 😀" + full[:full.index(stop)] == "Zoë 😀" + "".join(pieces)
    later = full[30:33]  # listed first, found later: the earliest stop in the text wins
    first = generate(model, tok, "Zoë 😀", 60, temperature=1.0, top_k=None, seed=1, stop=[later, stop])[0]
    assert first == "Zoë 😀" + full[:min(full.index(stop), full.index(later))]


def test_padded_vocabulary_ids_are_never_sampled():
    torch.manual_seed(0)
    model = GPT(GPTConfig(**TINY)).eval()
    with torch.no_grad():
        model.lm_head.weight[len(CHARS):] = 10.0  # padded rows would win every argmax if they were allowed
    start = torch.zeros(4, 1, dtype=torch.long)
    for temperature in (0.0, 1.0):
        generator = torch.Generator().manual_seed(0)
        out = torch.stack(list(sample_tokens(model, start, 20, temperature, generator=generator)))
        assert model.config.padded_vocab_size > len(CHARS) and int(out.max()) < len(CHARS)


def test_logits_that_are_not_finite_yield_not_finite_and_sampling_goes_on():
    """sample_tokens never hands NaN to torch.multinomial (a traceback on the CPU, a device-side
    assert on CUDA) and never waits for the GPU to check: the row yields NOT_FINITE, which
    generate() turns into one error line (tests/test_bad_inputs_generate.py)."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(**TINY)).eval()
    with torch.no_grad():
        model.transformer.ln_f.weight.fill_(3e38)  # finite weights whose output overflows
    for temperature in (0.0, 1.0):
        out = torch.stack(list(sample_tokens(model, torch.zeros(2, 3, dtype=torch.long), 4, temperature)))
        assert out.shape == (4, 2) and bool((out == NOT_FINITE).all())
