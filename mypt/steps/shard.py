"""Step shard: a corpus' token streams, in corpus order, cut into fixed-size uint32 shards."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mypt.io import atomic_file, staged_dir, write_json
from mypt.names import STATE_FILE
from mypt.settings import Settings, setting
from mypt.shards import ShardWriter, TokenStream, shard_names
from mypt.steps import MANIFEST, Step, part_file, read_input, step_files

STEP = Step("shard", reads=("tokenize",))


def _shard_files(manifest: dict) -> list[str]:
    """Full shards of tokens_per_shard tokens, then the rest: ceil(tokens / tokens_per_shard)."""
    tokens = sum(int(s["tokens"]) for s in manifest["sources"])
    return ["documents.bin", STATE_FILE, *shard_names(tokens, manifest["settings"]["tokens_per_shard"])]


WRITTEN = step_files(STEP, _shard_files)


@dataclass(frozen=True)
class ShardSettings(Settings):
    LABEL = "shard setting"

    tokens_per_shard: int = setting(10_000_000, "Tokens in each shard file (the last shard of each split may be "
                                                "shorter).", min=1)


def sharded_view(in_dir: Path, settings: ShardSettings = ShardSettings()) -> tuple[dict, TokenStream, np.ndarray]:
    """What shard() writes, read in place: the shard step's manifest, the corpus' tokens in
    corpus order (the tokenize step's files) and where each document ends. prepare-dataset
    hands these to split, which would only read back a copy of them."""
    manifest = read_input(STEP, in_dir)
    paths = [Path(in_dir) / part_file(i, "tokens") for i in range(len(manifest["sources"]))]
    stream, ends = TokenStream(paths), []
    for i, start in enumerate(stream.starts[:-1]):
        ends.append(np.fromfile(Path(in_dir) / part_file(i, "docs"), dtype=np.uint64) + np.uint64(start))
    manifest = {**manifest, "step": STEP.name, "settings": {**manifest["settings"], **settings.recorded()}}
    return manifest, stream, np.concatenate(ends)


def shard(in_dir: Path, out_dir: Path, settings: ShardSettings = ShardSettings()) -> dict:
    """Write `out_dir`/shard_NNNNN.bin, documents.bin (where each document ends) and manifest.json."""
    manifest, stream, ends = sharded_view(in_dir, settings)
    with staged_dir(out_dir, [in_dir], marker=MANIFEST, owned=("shard_*.bin", "documents.bin", STATE_FILE),
                    written=WRITTEN, kind="shard step's output") as stage:
        writer = ShardWriter(stage, settings.tokens_per_shard)
        for tokens in stream.pieces(0, len(stream)):
            writer.write(tokens)
        writer.close()
        with atomic_file(stage / "documents.bin") as f:
            f.write(ends.tobytes())
        shutil.copyfile(Path(in_dir) / STATE_FILE, stage / STATE_FILE)
        write_json(stage / MANIFEST, manifest)
    return manifest
