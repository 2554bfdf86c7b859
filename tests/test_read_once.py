"""Files a command reads once and passes on: `mypt eval` reads a dataset's dataset_metadata.json
once for its tokenizer's record, the val split's check and the pass that scores it (one version of
the dataset); a checkpoint's training_state.json is read once, its sha256 and its JSON from the
same bytes."""

from __future__ import annotations

from click.testing import CliRunner

from mypt.cli import main
from mypt.names import METADATA_FILE


def test_eval_reads_the_dataset_metadata_once(world, count_opens):
    meta = world / "ds" / METADATA_FILE
    opens = count_opens(lambda path, mode: "meta" if path.absolute() == meta else None)
    result = CliRunner().invoke(main, ["eval", "--model_name", "m", "--checkpoints_dir", str(world / "ck"),
                                       "--dataset", f"g={world / 'ds'}", "--device", "cpu"])
    assert result.exit_code == 0 and "g: loss " in result.output, result.output
    assert opens == {"meta": 1}
