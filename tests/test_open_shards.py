"""A running loader keeps the shards it opened (issue 18): an --append_to that renames the
val shards under it changes nothing it samples; where the process may not keep every shard
open (RLIMIT_NOFILE), a shard renamed away is an error naming it, never other tokens. And a
mixture member without a val split is named, not silently left out of val."""

from __future__ import annotations

import resource
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import mypt.shards
from mypt.cli import main
from mypt.data import GPTDataLoader, LoaderConfig, MixtureLoader
from mypt.errors import ShardError
from mypt.tokenizers import Tokenizer

SETTINGS = ["--tokenization", "char", "--tokens_per_shard", "400", "--val_fraction", "0.3", "--workers", "1"]


def cli(*args: str) -> str:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def corpus(path: Path, first: int, lines: int = 120) -> Path:
    path.write_text("".join(f"Line {i} of the king's speech, and the queen's reply {i * 7}.\n"
                            for i in range(first, first + lines)))
    return path


@pytest.fixture
def dataset(tmp_path) -> Path:
    cli("prepare-dataset", "--input_files", corpus(tmp_path / "a.txt", 0), "--out_dir", tmp_path / "ds", *SETTINGS)
    return tmp_path / "ds"


def loader_of(ds: Path) -> GPTDataLoader:
    return GPTDataLoader(LoaderConfig(batch_size=8, block_size=16), Tokenizer.load(ds), dataset_dir=ds)


def draws(loader: GPTDataLoader) -> list[np.ndarray]:
    """Fixed eval batches of val and train, and the whole val split in order."""
    out = [x.numpy() for split in ("val", "train") for x, _ in loader.eval_batches(split, 4)]
    return out + [x.numpy() for x, _ in loader.sequential_batches("val")]


def val_bytes(ds: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((ds / "val").glob("shard_*.bin"))}


def test_append_under_an_open_loader_changes_nothing_it_samples(dataset, tmp_path):
    shutil.copytree(dataset, tmp_path / "copy")
    expected = draws(loader_of(tmp_path / "copy"))  # what the dataset as it was gives
    loader = loader_of(dataset)  # opened before the append, read from only after it
    state = loader.state_dict()
    old_val = val_bytes(dataset)
    cli("prepare-dataset", "--input_files", corpus(tmp_path / "b.txt", 500), "--append_to", dataset)
    # The val shards were renamed under the loader: no old name still holds its old bytes.
    assert all(val_bytes(dataset).get(name) != data for name, data in old_val.items())
    assert all(np.array_equal(a, b) for a, b in zip(draws(loader), expected, strict=True))
    train_batch = loader.get_batch("train")[0].numpy()
    loader.load_state_dict(state)
    assert np.array_equal(loader.get_batch("train")[0].numpy(), train_batch)
    assert loader_of(dataset).tokens_in("val") > loader.tokens_in("val")  # a new loader sees the grown dataset


def test_without_a_file_per_shard_a_renamed_shard_is_named_never_read_as_another(dataset, tmp_path, monkeypatch):
    monkeypatch.setattr(mypt.shards, "fd_budget", lambda wanted: 0)  # RLIMIT_NOFILE left no room
    monkeypatch.setattr(mypt.shards, "POOL_SIZE", 1)  # and shards are opened by path, one at a time
    loader = loader_of(dataset)
    assert loader._files.held == 0
    before = draws(loader)  # every shard through the pool, by path
    assert all(np.array_equal(a, b) for a, b in zip(draws(loader), before, strict=True))
    cli("prepare-dataset", "--input_files", corpus(tmp_path / "b.txt", 500), "--append_to", dataset)
    with pytest.raises(ShardError, match=r"val/shard_\d+\.bin is no longer the shard this process opened"):
        draws(loader)


@pytest.mark.slow
def test_the_soft_file_limit_is_raised_for_thousands_of_shards(tmp_path):
    """In a process whose soft RLIMIT_NOFILE (512) is below the shard count: raised toward the
    hard limit, every shard held; with the hard limit below the count too, the val shards and
    what the limit leaves are held, the rest read through the pool."""
    if not 4096 <= resource.getrlimit(resource.RLIMIT_NOFILE)[1]:
        pytest.skip(f"the hard file limit here is {resource.getrlimit(resource.RLIMIT_NOFILE)[1]}")
    ds = tmp_path / "ds"
    for split, count in (("train", 1200), ("val", 30)):
        (ds / split).mkdir(parents=True)
        for i in range(count):
            (ds / split / mypt.shards.shard_name(i)).write_bytes(np.arange(40, dtype="<u4").tobytes())
    script = textwrap.dedent(f"""
        import resource, sys
        from pathlib import Path
        from mypt.data import GPTDataLoader, LoaderConfig
        from mypt.tokenizers.char import CharTokenizer
        resource.setrlimit(resource.RLIMIT_NOFILE, (512, int(sys.argv[1])))
        tok = CharTokenizer(chars=[chr(c) for c in range(32, 132)])
        loader = GPTDataLoader(LoaderConfig(batch_size=64, block_size=8), tok, dataset_dir=Path({str(ds)!r}))
        for _ in range(20):
            loader.get_batch("train"), loader.get_batch("val")
        print(loader._files.held, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    """)

    def run(hard: int) -> tuple[int, int]:
        held, soft = subprocess.check_output([sys.executable, "-c", script, str(hard)], text=True).split()
        return int(held), int(soft)

    held, soft = run(4096)
    assert held == 1230 and 1230 < soft < 4096  # raised as far as needed, not to the hard limit
    held, soft = run(700)
    assert soft == 700 and 30 < held < 700 - 256


def test_a_mixture_reads_each_datasets_metadata_and_tokenizer_once(tmp_path, monkeypatch, count_opens):
    """Opening a mixture checks each dataset's tokenizer once (the first against the one given,
    the others against the first's): each dataset_metadata.json and tokenizer_state.json is read
    once, and no tokenizer is built (each state is the one given)."""
    cli("prepare-dataset", "--input_files", corpus(tmp_path / "a.txt", 0), "--out_dir", tmp_path / "a", *SETTINGS)
    cli("prepare-dataset", "--input_files", corpus(tmp_path / "b.txt", 500), "--out_dir", tmp_path / "b",
        "--tokenizer_from", tmp_path / "a", *SETTINGS)
    tok = Tokenizer.load(tmp_path / "a")
    reads = count_opens(lambda path, mode: f"{path.parent.name}/{path.name}"
                        if path.name in ("dataset_metadata.json", "tokenizer_state.json") else None)
    monkeypatch.setattr(Tokenizer, "load", classmethod(lambda cls, d: pytest.fail(f"built the tokenizer of {d}")))
    MixtureLoader(LoaderConfig(batch_size=4, block_size=16), tok, [f"a={tmp_path / 'a'}", f"b={tmp_path / 'b'}"])
    assert reads == {f"{ds}/{name}": 1 for ds in "ab" for name in ("dataset_metadata.json", "tokenizer_state.json")}


def test_a_mixture_member_without_val_is_named(tmp_path):
    cli("prepare-dataset", "--input_files", corpus(tmp_path / "a.txt", 0), "--out_dir", tmp_path / "a", *SETTINGS)
    cli("prepare-dataset", "--input_files", corpus(tmp_path / "b.txt", 500), "--out_dir", tmp_path / "b",
        "--tokenizer_from", tmp_path / "a", *SETTINGS[:4], "--val_fraction", "0", "--workers", "1")
    config, tok = LoaderConfig(batch_size=4, block_size=16), Tokenizer.load(tmp_path / "a")
    lines: list[str] = []
    mix = MixtureLoader(config, tok, [f"a={tmp_path / 'a'}", f"b={tmp_path / 'b'}"], log=lines.append)
    assert lines == [f"warning: --dataset_dir b={tmp_path / 'b'} has no val split (prepared with --val_fraction "
                     "0?): val is the weighted mean of val_a only"]
    assert [name for name, _, _ in mix.val_parts()] == ["val_a"]
    lines.clear()
    MixtureLoader(config, tok, [f"b={tmp_path / 'b'}", f"c={tmp_path / 'b'}"], log=lines.append)
    assert lines == ["warning: no --dataset_dir of the mixture has a val split: training reports no val loss "
                     "(prepare them with --val_fraction > 0, or add --eval_dataset_dir)"]


@pytest.mark.slow
def test_train_on_a_mixture_says_which_member_has_no_val(tmp_path):
    """Through `mypt train`: the warning line is printed, and the eval line has no val_b."""
    cli("prepare-dataset", "--input_files", corpus(tmp_path / "a.txt", 0), "--out_dir", tmp_path / "a", *SETTINGS)
    cli("prepare-dataset", "--input_files", corpus(tmp_path / "b.txt", 500), "--out_dir", tmp_path / "b",
        "--tokenizer_from", tmp_path / "a", *SETTINGS[:4], "--val_fraction", "0", "--workers", "1")
    out = cli("train", "--dataset_dir", f"a={tmp_path / 'a'}", "--dataset_dir", f"b={tmp_path / 'b'}",
              "--model_name", "m", "--checkpoints_dir", tmp_path / "ck", "--config_file", "tiny", "--device", "cpu",
              "--max_iters", "2", "--eval_interval", "2", "--eval_iters", "1")
    assert f"warning: --dataset_dir b={tmp_path / 'b'} has no val split" in out
    assert "val_a" in out and "val_b" not in out
