"""Fast unit tests of the sampler and the split arithmetic."""

from __future__ import annotations

import numpy as np
import pytest

from mypt.data import GPTDataLoader, LoaderConfig
from mypt.shards import ShardWriter
from mypt.steps.split import _units, _val_mask
from mypt.tokenizers.char import CharTokenizer

TOK = CharTokenizer(chars=[chr(c) for c in range(32, 32 + 100)])  # ids 0..99


def make_dataset(root, sizes):
    """train/ shards holding consecutive ids; shard i starts at id 50 * i (mod 100)."""
    for i, n in enumerate(sizes):
        w = ShardWriter(root / "train", n, first_index=i)
        w.write((np.arange(n) + 50 * i) % 100)
        w.close()
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
