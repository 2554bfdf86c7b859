"""Step shard: a corpus' token streams, in corpus order, cut into fixed-size uint32 shards."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mypt.io import atomic_file, staged_dir, write_json
from mypt.settings import Settings, setting
from mypt.shards import DTYPE, ShardWriter
from mypt.steps import MANIFEST, Step, read_input
from mypt.tokenizers import STATE_FILE

STEP = Step("shard", reads=("tokenize",))


@dataclass(frozen=True)
class ShardSettings(Settings):
    LABEL = "shard setting"

    tokens_per_shard: int = setting(10_000_000, "Tokens in each shard file (the last shard of each split may be "
                                                "shorter).", min=1)


def shard(in_dir: Path, out_dir: Path, settings: ShardSettings = ShardSettings()) -> dict:
    """Write `out_dir`/shard_NNNNN.bin, documents.bin (where each document ends) and manifest.json."""
    manifest = read_input(STEP, in_dir)
    with staged_dir(out_dir, [in_dir], marker=MANIFEST) as stage:
        writer, ends = ShardWriter(stage, settings.tokens_per_shard), []
        for i, _ in enumerate(manifest["sources"]):
            ends.append(np.fromfile(Path(in_dir) / f"{i:05d}.docs", dtype=np.uint64) + np.uint64(writer.tokens))
            tokens = np.memmap(Path(in_dir) / f"{i:05d}.tokens", dtype=DTYPE, mode="r") \
                if (Path(in_dir) / f"{i:05d}.tokens").stat().st_size else np.zeros(0, DTYPE)
            for pos in range(0, tokens.size, 1 << 24):
                writer.write(tokens[pos:pos + (1 << 24)])
            del tokens
        writer.close()
        with atomic_file(stage / "documents.bin") as f:
            f.write(np.concatenate(ends).tobytes())
        shutil.copyfile(Path(in_dir) / STATE_FILE, stage / STATE_FILE)
        manifest = {**manifest, "step": STEP.name, "settings": {**manifest["settings"], **settings.recorded()}}
        write_json(stage / MANIFEST, manifest)
    return manifest
