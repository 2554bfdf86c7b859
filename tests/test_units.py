"""Fast unit tests of the sampler (one dataset and mixtures) and the split arithmetic."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mypt.data import GPTDataLoader, LoaderConfig, MixtureLoader, parse_dataset_specs
from mypt.errors import ConfigError, DataError
from mypt.shards import ShardWriter
from mypt.steps.split import _units, _val_mask
from mypt.tokenizers.char import CharTokenizer

TOK = CharTokenizer(chars=[chr(c) for c in range(32, 32 + 100)])  # ids 0..99


def make_dataset(root, sizes, val=(), start=0, tokenizer=None):
    """train/ shards holding consecutive ids; shard i starts at id start + 50 * i (mod 100);
    val/ shards of the sizes in `val`; tokenizer_state.json of `tokenizer` when given."""
    for split, split_sizes in (("train", sizes), ("val", val)):
        for i, n in enumerate(split_sizes):
            w = ShardWriter(root / split, n, first_index=i)
            w.write((np.arange(n) + start + 50 * i) % 100)
            w.close()
    if tokenizer is not None:
        tokenizer.save(root)
    return root


def test_windows_are_contiguous_slices_drawn_in_proportion_to_the_windows_of_each_shard(tmp_path):
    block = 8
    make_dataset(tmp_path, [block + 11, block + 31])  # ids 0..18 and 50..88
    loader = GPTDataLoader(LoaderConfig(batch_size=4, block_size=block), TOK, dataset_dir=tmp_path)
    windows = loader._windows("train", np.random.default_rng(0), 4000)
    assert windows.shape == (4000, block + 1)
    assert (np.diff(windows, axis=1) % 100 == 1).all()  # contiguous within one shard
    share = (windows[:, 0] < 50).mean()  # drawn from shard 0
    assert abs(share - 11 / (11 + 31)) < 0.03  # each shard weighs its windows: size - block_size
    assert windows[:, -1].max() in (18, 88)  # the last token of a shard is reachable


def test_sampler_state_round_trips_to_the_same_batches(tmp_path):
    make_dataset(tmp_path, [100, 200])
    loader = GPTDataLoader(LoaderConfig(batch_size=3, block_size=16, seed=7), TOK, dataset_dir=tmp_path)
    loader.get_batch("train")
    state = loader.state_dict()
    expected = [loader.get_batch("train")[0] for _ in range(3)]
    loader.load_state_dict(state)
    assert all((loader.get_batch("train")[0] == e).all() for e in expected)
    other_rank = GPTDataLoader(LoaderConfig(batch_size=3, block_size=16, seed=7, rank=1), TOK, dataset_dir=tmp_path)
    assert not (other_rank.get_batch("train")[0] == expected[0]).all()


def test_units_cut_long_documents_into_chunks():
    starts, ends = np.array([0, 10, 13]), np.array([10, 13, 40])
    u_start, u_end = _units(starts, ends, 8)
    assert u_start.tolist() == [0, 8, 10, 13, 21, 29, 37]
    assert u_end.tolist() == [8, 10, 13, 21, 29, 37, 40]


@pytest.mark.parametrize("n, fraction, expected", [(10, 0.1, 1), (10, 0.26, 3), (100, 0.1, 10), (3, 0.9, 2),
                                                   (2, 0.01, 1), (1, 0.5, 0), (50, 0.0, 0)])
def test_val_draw_takes_round_fraction_of_units_and_leaves_train_non_empty(n, fraction, expected):
    mask = _val_mask(n, fraction, np.random.default_rng(0))
    assert mask.sum() == expected and (n == 0 or (~mask).sum() >= 1)


# -- mixtures ------------------------------------------------------------------------------
def two_datasets(tmp_path, tokenizer_b=TOK):
    """Dataset a holds ids 0..39, dataset b ids 60..99 (train and val): a window's first id
    says where it came from."""
    a = make_dataset(tmp_path / "a", [40], val=[40], start=0, tokenizer=TOK)
    b = make_dataset(tmp_path / "b", [40], val=[40], start=60, tokenizer=tokenizer_b)
    return a, b


def test_mixture_draws_each_dataset_at_its_weight(tmp_path):
    a, b = two_datasets(tmp_path)
    loader = MixtureLoader(LoaderConfig(batch_size=50, block_size=8), TOK, [f"web={a}:0.7", f"books={b}:0.3"])
    firsts = np.concatenate([loader.get_batch("train")[0][:, 0].numpy() for _ in range(100)])  # 5,000 sequences
    assert abs((firsts < 50).mean() - 0.7) < 0.03
    x, y = loader.get_batch("train")
    assert x.shape == y.shape == (50, 8)
    rows = np.concatenate([x.numpy(), y[:, -1:].numpy()], axis=1)
    assert (np.diff(rows, axis=1) == 1).all()  # each row one window of one dataset, never spliced
    assert [(key, w) for key, w, _ in loader.val_parts()] == [("val_web", 0.7), ("val_books", 0.3)]


def test_mixture_sampler_state_round_trips_to_the_same_batches(tmp_path):
    a, b = two_datasets(tmp_path)
    cfg = LoaderConfig(batch_size=6, block_size=8, seed=3)
    loader = MixtureLoader(cfg, TOK, [f"{a}:2", f"{b}:1"])  # names from the directories, weights 2/3 and 1/3
    loader.get_batch("train")
    state = loader.state_dict()
    expected = [loader.get_batch("train")[0] for _ in range(5)]
    fresh = MixtureLoader(cfg, TOK, [f"{a}:2", f"{b}:1"])  # a resumed run: a new loader, the saved state
    fresh.load_state_dict(json.loads(json.dumps(state)))  # the state is JSON in training_state.json
    assert all((fresh.get_batch("train")[0] == e).all() for e in expected)
    with pytest.raises(DataError, match="same --dataset_dir flags"):
        GPTDataLoader(cfg, TOK, dataset_dir=a).load_state_dict(state)
    with pytest.raises(DataError, match="same --dataset_dir flags"):
        fresh.load_state_dict(GPTDataLoader(cfg, TOK, dataset_dir=a).state_dict())


@pytest.mark.parametrize("mixture", [False, True])
def test_a_rank_that_joins_a_resumed_run_draws_a_stream_none_drew_before(tmp_path, mixture):
    """reseed(step): a rank the saving run did not have must not replay its seed's stream from
    step 0, which a run before that one (on that many processes) may have drawn."""
    a, b = two_datasets(tmp_path)
    cfg = LoaderConfig(batch_size=4, block_size=8, seed=3, rank=1)
    make = (lambda: MixtureLoader(cfg, TOK, [f"{a}:2", f"{b}:1"])) if mixture else \
        (lambda: GPTDataLoader(cfg, TOK, dataset_dir=a))  # noqa: E731
    drawn = [make().state_dict()]  # the stream of rank 1 from step 0, and its states later
    first = make()
    for _ in range(20):
        first.get_batch("train")
        drawn.append(first.state_dict())
    joined, again, later = make(), make(), make()
    joined.reseed(20), again.reseed(20), later.reseed(30)
    assert joined.state_dict() not in drawn and joined.state_dict() == again.state_dict() != later.state_dict()
    assert not all((joined.get_batch("train")[0] == make().get_batch("train")[0]).all() for _ in range(3))


def test_mixture_refuses_datasets_with_different_tokenizers(tmp_path):
    other = CharTokenizer(chars=[chr(c) for c in range(40, 40 + 100)])
    a, b = two_datasets(tmp_path, tokenizer_b=other)
    with pytest.raises(DataError) as e:
        MixtureLoader(LoaderConfig(batch_size=2, block_size=8), TOK, [f"web={a}", f"books={b}"])
    assert f"--dataset_dir books={b}" in str(e.value) and f"--dataset_dir web={a}" in str(e.value)
    assert "another char tokenizer than" in str(e.value)  # (of one size)


def test_a_loader_of_no_sequences_per_batch_is_refused(tmp_path):
    a, _ = two_datasets(tmp_path)
    with pytest.raises(ConfigError, match="GPTDataLoader: batch_size must be at least 1 .*got 0"):
        GPTDataLoader(LoaderConfig(batch_size=0, block_size=8), TOK, a)


def test_mixture_given_one_string_says_to_pass_a_list(tmp_path):
    a, b = two_datasets(tmp_path)
    with pytest.raises(ConfigError, match=r"MixtureLoader's datasets is one str \('web=.*'\): pass a list"):
        MixtureLoader(LoaderConfig(batch_size=2, block_size=8), TOK, f"web={a}:0.7,books={b}:0.3")


@pytest.mark.parametrize("specs, expected", [
    (["data/x"], [("x", "data/x", 1.0)]),
    (["web=data/web:0.7", "books=data/books:0.3"], [("web", "data/web", 0.7), ("books", "data/books", 0.3)]),
    (["data/web:3", "data/books:1"], [("web", "data/web", 0.75), ("books", "data/books", 0.25)]),
    (["a=data/web", "b=data/books"], [("a", "data/web", 0.5), ("b", "data/books", 0.5)]),
    (["/mnt/x:y/web"], [("web", "/mnt/x:y/web", 1.0)]),  # a ':' that is no weight belongs to the path
    (["a=data/web:5e307", "b=data/books:1.5e308"], [("a", "data/web", 0.25), ("b", "data/books", 0.75)]),  # (sum: inf)
])
def test_dataset_specs(specs, expected):
    got = [(s.name, str(s.path), pytest.approx(s.weight)) for s in parse_dataset_specs(specs)]
    assert got == expected


@pytest.mark.parametrize("specs, message", [
    (["web=data/web:0"], "weight 0 must be a finite positive number"),
    (["web=data/web:-1"], "must be a finite positive number"),
    (["web=data/web:1e400", "data/books:1"], "weight 1e400 must be a finite positive number"),
    (["web=data/web:0.7", "data/books"], "give every dataset of a mixture a weight"),
    (["data/web", "other/web"], "two datasets named web"),
    (["web=data/web:1e-320", "data/books:1"], r"web=data/web:1e-320: its weight is a share of 1e-320 .*never drawn"),
    (["web=data/web:9.99999e-10", "data/books:1"], r"a share of 9\.9999\d*e-10 of the mixture, under 1e-09"),
])
def test_bad_dataset_specs_name_the_flag(specs, message):
    with pytest.raises(ConfigError, match=message) as e:
        parse_dataset_specs(specs)
    assert "--dataset_dir" in str(e.value)
    with pytest.raises(ConfigError, match=message) as e:  # each names the flag it is given
        parse_dataset_specs(specs, "--other")
    assert "--other" in str(e.value) and "--dataset_dir" not in str(e.value)


# -- eval_only, block_size -----------------------------------------------------------------
def test_a_weight_that_is_also_part_of_a_folder_name_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d").mkdir()
    assert parse_dataset_specs(["x=d:1"])[0].path == Path("d")  # alone, d is the dataset, 1 its weight
    (tmp_path / "d:1").mkdir()
    with pytest.raises(ConfigError, match=r"--dataset_dir x=d:1: both d \(weight 1\) and d:1 are directories; "
                                          r"say which: x=d:1:1 for the folder d:1, x=d/:1 for d"):
        parse_dataset_specs(["x=d:1"])
    assert parse_dataset_specs(["x=d:1:1"])[0].path == Path("d:1")
    assert parse_dataset_specs(["x=d/:1"])[0].path == Path("d")  # (the other way, as the message says)
    assert parse_dataset_specs(["d:1"])[0].path == Path("d:1")  # a whole path that exists is that path


def test_eval_only_needs_only_val_and_a_missing_val_is_named(tmp_path):
    only_val = make_dataset(tmp_path / "v", [], val=[40])
    loader = GPTDataLoader(LoaderConfig(batch_size=2, block_size=8), TOK, dataset_dir=only_val, eval_only=True)
    assert list(loader.splits) == ["val"] and loader.tokens_in("val") == 40
    only_train = make_dataset(tmp_path / "t", [40])
    with pytest.raises(DataError, match=r"No val shards found in .*t/val.*--val_fraction"):
        GPTDataLoader(LoaderConfig(batch_size=2, block_size=8), TOK, dataset_dir=only_train, eval_only=True)
    with pytest.raises(DataError, match="No training shards found"):
        GPTDataLoader(LoaderConfig(batch_size=2, block_size=8), TOK, dataset_dir=only_val)


def test_block_size_comes_from_the_keyword_or_the_config(tmp_path):
    from types import SimpleNamespace

    ds = make_dataset(tmp_path, [40])
    assert GPTDataLoader(SimpleNamespace(batch_size=2), TOK, dataset_dir=ds, block_size=8).block_size == 8
    assert GPTDataLoader(LoaderConfig(2, 16), TOK, dataset_dir=ds, block_size=8).block_size == 8
    with pytest.raises(ConfigError, match="block_size=N"):
        GPTDataLoader(SimpleNamespace(batch_size=2), TOK, dataset_dir=ds)


def test_one_input_files_option_takes_several_values():
    import click
    from click.testing import CliRunner

    from mypt.options import GreedyCommand, input_files_option

    @click.command(cls=GreedyCommand)
    @input_files_option(".txt, .jsonl")
    def cmd(input_files):
        click.echo(" ".join(input_files))

    assert CliRunner().invoke(cmd, ["--input-files", "a", "b"]).output == "a b\n"
    assert "Text files (.txt, .jsonl), directories" in CliRunner().invoke(cmd, ["--help"]).output


def test_mfu_is_over_every_gpu_of_the_run():
    """tokens/s counts every rank's tokens: the share of the peak is over that many GPUs."""
    from mypt.train import PEAK_FLOPS, mfu

    one = mfu(6e9, 0.5 * PEAK_FLOPS / 6e9)
    assert one == pytest.approx(0.5)
    assert mfu(6e9, 8 * 0.5 * PEAK_FLOPS / 6e9, processes=8) == pytest.approx(0.5)


def test_evaluate_dataset_scores_at_most_max_tokens(tmp_path):
    """Whole windows within the budget (it scored a window past it: 16 tokens for 10)."""
    import torch

    from mypt.evaluate import evaluate_dataset
    from mypt.model import GPT, GPTConfig

    ds = make_dataset(tmp_path / "ds", [40], val=[100], tokenizer=TOK)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=TOK.vocab_size, block_size=8, n_layer=1, n_head=1, n_embd=8))
    assert [evaluate_dataset(model, ds, batch_size=2, max_tokens=n)["tokens"] for n in (10, 16, 17, None)] == \
        [8, 16, 16, 96]
    # Less than one window: the argument is at fault, not the dataset (it said "no window of 9 tokens").
    from mypt.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^max_tokens=5: eval scores whole windows of the model's block_size \(8\) "
                                          r"tokens, so at most 5 tokens is none; give max_tokens=8 or more, or leave "
                                          r"it out for the whole split$"):
        evaluate_dataset(model, ds, max_tokens=5)


def test_max_tokens_windows_are_spread_over_the_whole_split(tmp_path):
    """A val split keeps its sources in order: --max_tokens scored its first windows, the first
    sources alone, and reported their loss as the split's. Now the windows are spread evenly over
    all of it, in order; without max_tokens, every window as before."""
    make_dataset(tmp_path, [40], val=[33, 33])  # val windows of 8: ids 0, 8, 16, 24 and 50, 58, 66, 74
    loader = GPTDataLoader(LoaderConfig(batch_size=2, block_size=8), TOK, dataset_dir=tmp_path)

    def firsts(max_tokens):
        return [int(i) for x, _ in loader.sequential_batches("val", max_tokens) for i in x[:, 0]]

    assert firsts(None) == firsts(10 ** 6) == [0, 8, 16, 24, 50, 58, 66, 74]
    assert firsts(16) == [16, 66]  # each window centred in its half, its third of the split
    assert firsts(24) == [8, 50, 66]
    assert firsts(7) == []


def test_a_save_too_slow_for_torchruns_stop_is_said_once(monkeypatch):
    from mypt.train import slow_save_warning

    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    assert slow_save_warning(100, 0, False) is None  # not under torchrun: no agent kills the ranks
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "x")
    assert slow_save_warning(10, 1, False) is None and slow_save_warning(40, 1, True) is None
    # The step in flight comes before the save (an evaluation due is skipped or cut short).
    warning = slow_save_warning(9, 8, False)
    assert "a step and its checkpoint take 17 s (the step 8 s, the save 9 s); torchrun kills the ranks 30 s after" \
        in warning
    assert warning.endswith("TORCH_ELASTIC_SHUTDOWN_TIMEOUT=60 torchrun ...")
    monkeypatch.setenv("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", "600")
    assert slow_save_warning(200, 50, False) is None
    assert slow_save_warning(400, 0, False).endswith("TORCH_ELASTIC_SHUTDOWN_TIMEOUT=1200 torchrun ...")


def test_the_umask_is_read_without_being_changed_and_a_mount_without_modes_is_no_error(tmp_path, monkeypatch):
    """umask_mode reads the umask from /proc (setting it to read it left a moment in which a
    file another thread made got 0666), and a chmod that a CIFS or FUSE mount refuses leaves
    the file as written instead of failing the save."""
    import errno
    import os
    import stat

    from mypt import io

    before = os.umask(0o027)
    try:
        assert io.current_umask() == 0o027
        calls = []
        monkeypatch.setattr(os, "umask", lambda mask: calls.append(mask) or 0o027)
        assert io.current_umask() == 0o027 and calls == []  # /proc here: os.umask never called
        monkeypatch.undo()
        f = tmp_path / "w.safetensors"
        f.write_bytes(b"x")
        f.chmod(0o600)
        io.umask_mode(f)
        assert stat.S_IMODE(f.stat().st_mode) == 0o640

        def refused(path, mode):
            raise PermissionError(errno.EPERM, "Operation not permitted", str(path))

        monkeypatch.setattr(os, "chmod", refused)
        io.umask_mode(f)  # no error
        monkeypatch.setattr(os, "chmod", lambda path, mode: (_ for _ in ()).throw(OSError(errno.EIO, "I/O error")))
        with pytest.raises(OSError, match="I/O error"):
            io.umask_mode(f)  # a real failure still is one
    finally:
        os.umask(before)
