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


def test_a_resume_reads_the_training_state_once(tmp_path, count_opens):
    """training_state.json's sha256 and its JSON come from one reading of it."""
    (tmp_path / "t.txt").write_text("some text to learn from\n" * 40)
    flags = ["train", "--input_file", str(tmp_path / "t.txt"), "--tokenization", "char", "--config_file", "tiny",
             "--checkpoints_dir", str(tmp_path / "ck"), "--model_name", "m", "--device", "cpu", "--eval_iters", "1",
             "--eval_interval", "100", "--batch_size", "2"]
    result = CliRunner().invoke(main, [*flags, "--max_iters", "1"])
    assert result.exit_code == 0, result.output
    state = tmp_path / "ck" / "m" / "training_state.json"
    opens = count_opens(lambda path, mode: "read" if path == state and "r" in mode else None)
    result = CliRunner().invoke(main, [*flags, "--max_iters", "2", "--resume"])
    assert result.exit_code == 0 and "resum" in result.output.lower(), result.output
    assert opens == {"read": 1}
