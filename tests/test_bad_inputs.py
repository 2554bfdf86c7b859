"""Every user or environment error is one line, no traceback.

A table of bad inputs to `mypt prepare-dataset`, `mypt train`, `mypt generate` and the stage
scripts. Each case must: exit 1 (a mypt error) or 2 (a click usage error), print no
`Traceback`, name the offending path, flag or value, and change nothing outside its output
(no `.partial`, `.tmp`, `.work` or `.old` left anywhere; with a fault injected — disk full,
read-only, busy — not even the output: the previous dataset or checkpoint stays intact).

The `mypt` cases run in-process with CliRunner (fast); the stage scripts run as the
subprocesses DVC runs (slow).
"""

from __future__ import annotations

import errno
import os
import shutil
import sys
from pathlib import Path
from typing import Callable

import pytest
import torch
from bad_inputs import (Case, check_refusal, disk_full_mid_write, edit_json, fail_renames, fail_writes,
                        file_size_limit, gen, prep, remove_train_shards, resealed, run_case, train, write)
from conftest import REPO, run, tree_bytes


def disk_full_in_safetensors(monkeypatch: pytest.MonkeyPatch, w: Path) -> None:
    from safetensors import SafetensorError

    def fake(*args, **kwargs):
        raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, '
                              'message: "No space left on device" })')
    monkeypatch.setattr("mypt.checkpoint.save_file", fake)


def disk_full_in_safetensors_os_error(monkeypatch: pytest.MonkeyPatch, w: Path) -> None:
    """The other form of safetensors' I/O error (seen on a full tmpfs by bench/faults.py)."""
    from safetensors import SafetensorError

    def fake(*args, **kwargs):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
    monkeypatch.setattr("mypt.checkpoint.save_file", fake)


def short_lines(*names: str, lines: int) -> Callable[[Path], None]:
    """Inputs of short distinct lines (`a0`, `a1`, ...): their dedup records (24 bytes a line, with
    --dedup_min_chars 0) outweigh their text (3 to 5 bytes a line) and its tokens."""
    def setup(w: Path) -> None:
        for name in names:
            (w / name).write_text("".join(f"{name[0]}{i}\n" for i in range(lines)))
    return setup


NO_GPU = None if not torch.cuda.is_available() else "a GPU is present"
FEW_GPUS = None if torch.cuda.device_count() < 8 else "cuda:7 exists here"

CASES = [
    # -- prepare-dataset: inputs ------------------------------------------------------------
    Case("gz_corrupt", prep("corrupt.txt.gz"), ["corrupt.txt.gz", "damaged"], out="new_ds"),
    Case("gz_truncated", prep("truncated.txt.gz"), ["truncated.txt.gz", "truncated"], out="new_ds"),
    Case("gz_not_gzip", prep("fake.txt.gz"), ["fake.txt.gz", "damaged"], out="new_ds"),
    Case("input_missing", prep("nothere.txt"), ["--input_files", "nothere.txt"], out="new_ds"),
    Case("input_glob_empty", prep("*.nothing"), ["--input_files", "*.nothing"], out="new_ds"),
    Case("input_binary_only", prep("binary.txt"), ["binary.txt", "binary"], out="new_ds"),
    Case("input_empty", prep("empty.txt"), ["--input_files"], out="new_ds"),
    Case("out_dir_is_file", prep("corpus.txt", "other.txt"), ["--out_dir", "'other.txt' is a file"], code=2),
    Case("out_dir_foreign", prep("corpus.txt", "nometa"), ["--out_dir nometa", "not a mypt dataset"]),
    Case("val_fraction_2", prep("corpus.txt", "new_ds", "--val_fraction", "2"), ["--val_fraction"], code=2),
    Case("switch_given_a_yaml_boolean", prep("corpus.txt", "new_ds", "--no_dedup", "yes"),
         ["--no_dedup yes: --no_dedup is a switch and takes no value", "true or false"], code=2),
    Case("value_given_a_yaml_list", prep("corpus.txt", "new_ds", "--tokens_per_shard", "100", "200"),
         ["--tokens_per_shard 100 200: --tokens_per_shard takes one value (quote a value with spaces; in "
          "params.yaml, a list passes each item on)"], code=2),
    Case("tokenization_bogus", ["prepare-dataset", "--input_files", "corpus.txt", "--out_dir", "x",
                                "--tokenization", "bpe"], ["--tokenization", "bpe"], code=2),
    Case("tokens_per_shard_0", prep("corpus.txt", "new_ds", "--tokens_per_shard", "0"), ["--tokens_per_shard"],
         code=2),
    Case("tokenizer_from_other_kind", ["prepare-dataset", "--input_files", "corpus.txt", "--out_dir", "new_ds",
                                       "--tokenization", "gpt2", "--tokenizer_from", "ds"],
         ["--tokenizer_from ds", "char", "gpt2"], out="new_ds"),
    # -- prepare-dataset: the environment fails while writing -------------------------------
    Case("prepare_disk_full", prep("corpus.txt"), ["cannot write", "new_ds", "No space left on device"],
         fault=fail_writes(errno.ENOSPC, "new_ds")),
    Case("prepare_read_only", prep("corpus.txt"), ["cannot write", "new_ds", "Read-only file system"],
         fault=fail_renames(errno.EROFS, "new_ds")),
    Case("prepare_overwrite_busy", prep("other.txt", "ds", "--overwrite"), ["ds", "Device or resource busy"],
         fault=fail_renames(errno.EBUSY, ".ds.partial")),
    Case("prepare_overwrite_denied", prep("other.txt", "ds", "--overwrite"), ["ds", "Permission denied"],
         fault=fail_writes(errno.EACCES, ".ds.")),
    # A write, flush or close of a file already open names no file (the open did): each write of
    # the steps says which file the disk stopped (a path under the output, or under its work
    # folder), as `cannot write a file` did not.
    Case("prepare_disk_full_in_clean", prep("corpus.txt"),
         ["cannot write /", "/w/.new_ds.work/clean/.part_000000: No space left on device"],
         fault=disk_full_mid_write(".part_")),
    Case("prepare_disk_full_in_a_shard", prep("corpus.txt"),
         ["cannot write new_ds/train/shard_00000.bin: No space left on device"], fault=disk_full_mid_write(".shard_")),
    # A file size limit (`ulimit -f`: EFBIG, or numpy's tofile cut short) at each step's own files.
    Case("prepare_too_large_dedup_records", prep("a.txt", "new_ds", "--dedup_min_chars", "0"),
         ["cannot write /", "/w/.new_ds.work/hashed/000000.rec: a write cut short"],
         setup=short_lines("a.txt", lines=2000), fault=file_size_limit(32 << 10)),
    Case("prepare_too_large_dedup_spill", prep("a.txt", "new_ds", "--dedup_min_chars", "0", "--input_files", "b.txt"),
         ["cannot write /", "/w/.new_ds.work/dedup/.work/run_0000.rec: a write cut short"],
         setup=short_lines("a.txt", "b.txt", lines=1000), fault=file_size_limit(32 << 10)),
    Case("prepare_too_large_tokens", prep("corpus.txt"),
         ["cannot write /", "/w/.new_ds.work/tokens/.t_000000: a write cut short"], fault=file_size_limit(40 << 10)),
    # In a worker process (two inputs, two tasks): the error reaches the parent pickled, its file named (an
    # OSError pickles a name only beside an errno, which numpy's short write has none of).
    Case("prepare_too_large_in_a_worker", prep("corpus.txt", "new_ds", "--input_files", "other.txt", "--workers", "2"),
         ["cannot write /", "/w/.new_ds.work/tokens/.t_00000", "a write cut short"], fault=file_size_limit(40 << 10)),
    # -- train: config files ----------------------------------------------------------------
    *[Case(f"config_{name}", train("--dataset_dir", "ds", "--config_file", f"{name}.json"),
           [f"{name}.json", *words], out="ck")
      for name, words in {"dropout_str": ["dropout", "'0.1'"], "bias_str": ["bias", "'no'"],
                          "batch_bool": ["batch_size", "True"], "beta1_one": ["beta1", "1.0"],
                          "beta2_neg": ["beta2", "-0.1"], "min_lr_neg": ["min_lr", "-0.0001"],
                          "wd_neg": ["weight_decay", "-0.1"], "clip_neg": ["grad_clip", "-1"],
                          "unknown_key": ["learning_rat"], "unknown_section": ["optim"],
                          "list": ["JSON object", "list"], "model_list": ["'model'", "[1]"],
                          "notjson": ["not valid JSON"], "deep": ["nested too deep"]}.items()],
    Case("config_missing", train("--dataset_dir", "ds", "--config_file", "nothere.json"),
         ["--config_file", "nothere.json"], out="ck"),
    Case("flag_beta1_1", train("--dataset_dir", "ds", "--beta1", "1"), ["--beta1"], code=2),
    Case("flag_min_lr_neg", train("--dataset_dir", "ds", "--min_lr", "-1"), ["--min_lr"], code=2),
    Case("flag_lr_decay_below_warmup", train("--dataset_dir", "ds", "--warmup_iters", "8", "--lr_decay_iters", "4"),
         ["lr_decay_iters (4) is below warmup_iters (8)", "--lr_decay_iters", "--warmup_iters"], out="ck"),
    Case("flag_max_iters_str", train("--dataset_dir", "ds", "--max_iters", "many"), ["--max_iters", "many"], code=2),
    Case("metrics_dir_holds_params", train("--dataset_dir", "ds", "--metrics_dir", "nometa"),
         ["--metrics_dir nometa", "params.yaml"], setup=write("nometa/params.yaml", "train: {}\n")),
    Case("metrics_dir_cwd", train("--dataset_dir", "ds", "--metrics_dir", "."), ["--metrics_dir .", "current"]),
    Case("metrics_dir_holds_users_metrics", train("--dataset_dir", "ds", "--metrics_dir", "nometa"),
         ["--metrics_dir nometa", "metrics.json that no training run wrote"],
         setup=write("nometa/metrics.json", '{"accuracy": 0.9}\n')),
    # -- train: devices ---------------------------------------------------------------------
    Case("train_device_tpu", train("--dataset_dir", "ds", "--device", "tpu"), ["--device", "tpu"], out="ck"),
    Case("train_device_cuda", train("--dataset_dir", "ds", "--device", "cuda"), ["--device cuda", "cpu"],
         out="ck", skip=NO_GPU),
    Case("train_device_cuda7", train("--dataset_dir", "ds", "--device", "cuda:7"), ["--device cuda:7"], out="ck",
         skip=FEW_GPUS),
    # -- train: data ------------------------------------------------------------------------
    Case("input_file_binary", train("--input_file", "binary.txt", "--tokenization", "char"),
         ["--input_file binary.txt", "binary"], out="ck"),
    Case("input_file_binary_gpt2", train("--input_file", "binary.txt"), ["--input_file binary.txt", "binary"],
         out="ck"),
    Case("input_file_empty", train("--input_file", "empty.txt", "--tokenization", "char"),
         ["--input_file empty.txt", "no text"], out="ck"),
    Case("input_file_blank", train("--input_file", "blank.txt", "--tokenization", "char"),
         ["--input_file blank.txt", "no text"], out="ck"),
    Case("input_file_bom_and_blank", train("--input_file", "bom.txt", "--tokenization", "char"),
         ["--input_file bom.txt", "no text"], out="ck",
         setup=lambda w: (w / "bom.txt").write_bytes(b"\xef\xbb\xbf\n  \n")),  # a byte-order mark is no text
    Case("input_file_missing", train("--input_file", "nothere.txt"), ["--input_file", "nothere.txt"], code=2),
    # A directory of the user's (an export, a corpus): the hint never names it as the --out_dir.
    Case("eval_dataset_of_user_files", ["eval", "--model_name", "m", "--checkpoints_dir", "ck", "--dataset", "nometa",
                                        "--device", "cpu"],
         ["nometa", "not a mypt dataset", "--out_dir NEW_DIR"]),
    Case("eval_dataset_is_a_file", ["eval", "--model_name", "m", "--checkpoints_dir", "ck", "--dataset", "corpus.txt",
                                    "--device", "cpu"],
         ["corpus.txt is a file, not a mypt dataset or checkpoint directory"]),
    Case("tokenizer_from_a_hf_directory", prep("corpus.txt", "new_ds", "--tokenizer_from", "nometa"),
         ["no tokenizer_state.json in nometa: not a mypt dataset or checkpoint",
          "--tokenization hf:nometa/tokenizer.json"], setup=write("nometa/tokenizer.json", "{}")),
    Case("dataset_dir_no_metadata", train("--dataset_dir", "nometa"), ["--dataset_dir nometa", "dataset_metadata.json",
                                                                       "--out_dir NEW_DIR"], out="ck"),
    Case("dataset_dir_no_train_shards", train("--dataset_dir", "ds"), ["ds", "train", "No training shards"],
         out="ck", setup=remove_train_shards),
    Case("dataset_dir_missing", train("--dataset_dir", "nothere"), ["--dataset_dir nothere", "no directory"],
         out="ck"),
    Case("mixture_other_vocab", train("--dataset_dir", "a=ds:0.5", "--dataset_dir", "b=other:0.5"),
         ["--dataset_dir b=other:0.5", "--dataset_dir a=ds:0.5", "vocabulary"], out="ck"),
    Case("mixture_weight_zero", train("--dataset_dir", "a=ds:0", "--dataset_dir", "b=other:1"),
         ["--dataset_dir a=ds:0", "positive"], out="ck"),
    Case("mixture_same_name", train("--dataset_dir", "ds", "--dataset_dir", "./ds"), ["two datasets named ds"],
         out="ck"),
    Case("dataset_and_input_file", train("--dataset_dir", "ds", "--input_file", "corpus.txt"),
         ["--dataset_dir", "--input_file"], out="ck"),
    Case("neither_dataset_nor_input", train(), ["--dataset_dir", "--input_file"], out="ck"),
    Case("tokenization_mismatch", train("--dataset_dir", "ds", "--tokenization", "gpt2"),
         ["--tokenization gpt2", "char"], out="ck"),
    Case("eval_dataset_other_vocab", train("--dataset_dir", "ds", "--eval_dataset_dir", "other"),
         ["--eval_dataset_dir other", "vocabulary"], out="ck"),
    Case("eval_dataset_not_a_dataset", train("--dataset_dir", "ds", "--eval_dataset_dir", "nometa"),
         ["nometa", "tokenizer_state.json"], out="ck"),
    Case("init_from_missing", train("--dataset_dir", "ds", "--init_from_model", "ghost"), ["ghost"], out="ck"),
    Case("resume_state_not_json", train("--dataset_dir", "ds", "--resume", "--max_iters", "4", model="m"),
         ["training_state.json", "not valid JSON"], out="ck", setup=resealed(write("ck/m/training_state.json", "{step"))),
    Case("resume_state_wrong_types", train("--dataset_dir", "ds", "--resume", "--max_iters", "4", model="m"),
         ["training_state.json", "step"], out="ck",
         setup=resealed(edit_json("ck/m/training_state.json", lambda s: s.update(step="two")))),
    # -- train: the environment fails while saving the checkpoint ---------------------------
    Case("checkpoint_disk_full", train("--dataset_dir", "ds", "--resume", "--max_iters", "4", model="m"),
         ["cannot write", "model.safetensors", "No space left on device", "the checkpoint of step 4 not saved; the "
          "last checkpoint (step 2) is in", "continue from it with --resume"], fault=disk_full_in_safetensors),
    # The first save of a new run: nothing to --resume from (the message sent the user there).
    Case("checkpoint_disk_full_first_save", train("--dataset_dir", "ds", "--max_iters", "4", model="n"),
         ["No space left on device", "the checkpoint of step 2 not saved; no checkpoint was written; once it is "
          "fixed, start the run again"], out="ck", fault=disk_full_in_safetensors),
    Case("checkpoint_disk_full_os_error", train("--dataset_dir", "ds", "--resume", "--max_iters", "4", model="m"),
         ["cannot write", "model.safetensors", "No space left on device"], fault=disk_full_in_safetensors_os_error),
    Case("checkpoint_json_disk_full", train("--dataset_dir", "ds", "--resume", "--max_iters", "4", model="m"),
         ["cannot write", "config.json", "No space left on device"], fault=fail_writes(errno.ENOSPC, "config.json")),
    Case("checkpoint_busy", train("--dataset_dir", "ds", "--resume", "--max_iters", "4", model="m"),
         ["ck/m/", "Device or resource busy"], fault=fail_renames(errno.EBUSY, ".m.partial")),
    # -- generate ---------------------------------------------------------------------------
    Case("prompt_outside_vocab", gen("--prompt", "Zé€"), ["--prompt", "'Z'", "'é'", "'€'", "vocabulary"]),
    # (NaN passes every comparison of a range check: a usage error as any value out of range)
    Case("temperature_nan", gen("--temperature", "nan"),
         ["'--temperature': nan is not a finite number in the range x>=0.0"], code=2),
    Case("top_p_nan", gen("--top_p", "nan"), ["'--top_p'", "nan is not a finite number in the range 0.0<x<=1.0"],
         code=2),
    Case("temperature_negative", gen("--temperature", "-1"), ["--temperature", "-1"], code=2),
    Case("top_k_negative", gen("--top_k", "-1"), ["--top_k", "-1"], code=2),
    Case("top_p_zero", gen("--top_p", "0"), ["--top_p", "0"], code=2),
    Case("generate_device_tpu", gen("--device", "tpu"), ["--device", "tpu"]),
    # -- verify-dataset -----------------------------------------------------------------------
    Case("verify_missing_dir", ["verify-dataset", "nothere"], ["no directory nothere"]),
    # (a damaged dataset: tests/test_verify.py; verify reports one line per problem, then a summary)
    Case("generate_device_cuda", gen("--device", "cuda"), ["--device cuda"], skip=NO_GPU),
    Case("generate_device_cuda7", gen("--device", "cuda:7"), ["--device cuda:7"], skip=FEW_GPUS),
    Case("generate_no_model", gen(model="ghost"), ["ghost"]),
    Case("generate_not_a_checkpoint", gen(model="nometa"), ["nometa", "config.json"],
         setup=lambda w: shutil.copy(w / "ck/m/model.safetensors", w / "nometa")),
    Case("ckpt_config_not_json", gen(), ["ck/m/config.json", "not valid JSON"], setup=write("ck/m/config.json", "{")),
    Case("ckpt_config_wrong_type", gen(), ["ck/m/config.json", "dropout", "'high'"],
         setup=edit_json("ck/m/config.json", lambda c: c["model"].update(dropout="high"))),
    Case("ckpt_config_model_not_object", gen(), ["ck/m/config.json", "'model'"],
         setup=edit_json("ck/m/config.json", lambda c: c.update(model=[1]))),
    Case("ckpt_vocab_size_edited", gen(), ["ck/m/config.json", "vocab_size"],
         setup=edit_json("ck/m/config.json", lambda c: c["model"].update(vocab_size=c["model"]["vocab_size"] + 1))),
    Case("ckpt_shapes_differ", gen(), ["ck/m/config.json", "model.safetensors"],
         setup=edit_json("ck/m/config.json", lambda c: c["model"].update(n_embd=64))),
    # The same shapes, another model: only the settings' recorded sum shows the edit.
    Case("ckpt_heads_edited", gen(), ["ck/m/config.json: its model settings were edited after the save"],
         setup=edit_json("ck/m/config.json", lambda c: c["model"].update(n_head=c["model"]["n_head"] * 2))),
    Case("ckpt_tokenizer_not_json", gen(), ["tokenizer_state.json", "not valid JSON"],
         setup=resealed(write("ck/m/tokenizer_state.json", "["))),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line(case: Case, world, tmp_path, monkeypatch):
    run_case(case, world, tmp_path, monkeypatch)


@pytest.mark.parametrize("raised, said", [
    (OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), "cannot write d/f: No space left on device; free some space"),
    (OSError(errno.EFBIG, os.strerror(errno.EFBIG)), "cannot write d/f: File too large"),
    (OSError("7 requested and 3 written"), "cannot write d/f: a write cut short (7 requested and 3 written): the disk"),
    (OSError("Not enough free space to write 8 bytes after offset 0"),
     "cannot write d/f: No space left on device (Not enough free space to write 8 bytes after offset 0); free some"),
])
def test_a_write_error_named_by_its_file_keeps_the_name_through_a_pickle(raised, said):
    """errors.naming names the file a write error (no filename: a write of a file already open,
    numpy's tofile) stopped; the name survives the pickle that brings a worker's error to the
    parent (an OSError pickles its filename only beside an errno and a strerror)."""
    import pickle

    from mypt.errors import naming, os_error_message

    with pytest.raises(OSError) as failed:
        with naming(Path("d/f")):
            raise raised
    for error in (failed.value, pickle.loads(pickle.dumps(failed.value))):
        assert (error.errno, error.filename) == (raised.errno, "d/f")
        assert os_error_message(error).startswith(said), os_error_message(error)
    with pytest.raises(OSError) as failed:  # a name already given is kept
        with naming(Path("d/f")):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "d/g")
    assert failed.value.filename == "d/g"


def test_table_is_large_enough():
    assert len(CASES) >= 40


# -- stage scripts, as DVC runs them ----------------------------------------------------------

def stage(name: str, *args: str) -> list[str]:
    return [sys.executable, str(REPO / "stages" / f"{name}.py"), *args]


STAGE_CASES = [
    Case("clean_input_missing", stage("clean", "--input_files", "nothere.txt", "--out_dir", "c", "--stats", "s.json"),
         ["--input_files", "nothere.txt"], out="c"),
    Case("clean_gz_corrupt", stage("clean", "--input_files", "corrupt.txt.gz", "--out_dir", "c", "--stats", "s.json",
                                   "--workers", "1"), ["corrupt.txt.gz", "damaged"], out="c"),
    Case("dedup_in_dir_missing", stage("dedup", "--in_dir", "nothere", "--out_dir", "d", "--stats", "s.json"),
         ["--in_dir", "nothere"], code=2),
    Case("vocab_in_dir_not_a_step", stage("vocab", "--in_dir", "ds", "--out_dir", "v", "--tokenization", "char"),
         ["ds", "manifest.json"], out="v"),
    Case("shard_in_dir_wrong_step", stage("shard", "--in_dir", "cleaned", "--out_dir", "sh"),
         ["cleaned", "'clean' step", "tokenize"], out="sh"),
    Case("split_val_fraction_2", stage("split", "--in_dir", "ds", "--out_dir", "x", "--stats", "s.json",
                                       "--val_fraction", "2"), ["--val_fraction"], code=2),
    Case("eval_other_vocab", stage("eval", "--model_name", "ck/m", "--dataset", "o=other", "--metrics", "e.json",
                                   "--device", "cpu"), ["--dataset o=other", "vocabulary"], out="e.json"),
    Case("eval_device_tpu", stage("eval", "--model_name", "ck/m", "--dataset", "g=ds", "--metrics", "e.json",
                                  "--device", "tpu"), ["--device", "tpu"], out="e.json"),
    # -- a report file (--stats, --metrics) where it would overwrite what the stage reads -------
    Case("clean_stats_is_an_input", stage("clean", "--input_files", "corpus.txt", "--out_dir", "c", "--stats",
                                          "corpus.txt"), ["--stats corpus.txt lies in --input_files corpus.txt:"]),
    Case("dedup_stats_in_its_input", stage("dedup", "--in_dir", "cleaned", "--out_dir", "d", "--stats",
                                           "cleaned/manifest.json"),
         ["--stats cleaned/manifest.json lies in --in_dir cleaned:", "stats/"]),
    Case("eval_metrics_in_the_checkpoint", stage("eval", "--model_name", "ck/m", "--dataset", "g=ds", "--metrics",
                                                 "ck/m/config.json", "--device", "cpu"),
         ["--metrics ck/m/config.json lies in --model_name ck/m:"]),
    Case("eval_stats_in_a_dataset", stage("eval", "--model_name", "ck/m", "--dataset", "g=ds", "--metrics", "e.json",
                                          "--stats", "ds/stats.json", "--device", "cpu"),
         ["--stats ds/stats.json lies in --dataset ds:"]),
    Case("eval_metrics_and_stats_one_file", stage("eval", "--model_name", "ck/m", "--dataset", "g=ds", "--metrics",
                                                  "e.json", "--stats", "ck/../e.json", "--device", "cpu"),
         ["--stats ck/../e.json is the file --metrics names too"]),
    Case("train_metrics_in_the_checkpoint", stage("train", "--dataset_dir", "ds", "--model_name", "n",
                                                  "--checkpoints_dir", "ck", "--config_file", "tiny", "--metrics",
                                                  "ck/n/metrics.json"),
         ["--metrics ck/n/metrics.json lies in --model_name ck/n:"]),
    Case("train_metrics_in_the_base", stage("train", "--dataset_dir", "ds", "--model_name", "n", "--checkpoints_dir",
                                            "ck", "--init_from_model", "m", "--metrics", "ck/m/config.json"),
         ["--metrics ck/m/config.json lies in --init_from_model ck/m:"]),
    Case("stage_switch_from_params_yes", stage("clean", "--input_files", "corpus.txt", "--out_dir", "c", "--stats",
                                               "s.json", "--strict", "yes"),
         ["--strict yes: --strict is a switch", "in params.yaml write true or false"], code=2),
    Case("clean_stats_matched_by_an_input_glob", stage("clean", "--input_files", "*.txt", "--out_dir", "c", "--stats",
                                                       "corpus.txt"), ["--stats corpus.txt lies in --input_files corpus.txt:"]),
    Case("split_stats_in_its_input", stage("split", "--in_dir", "cleaned", "--out_dir", "x", "--stats",
                                           "cleaned/manifest.json"), ["--stats cleaned/manifest.json lies in --in_dir cleaned:"]),
    Case("tokenize_stats_in_the_tokenizer_dir", stage("tokenize_corpus", "--in_dir", "cleaned", "--tokenizer_dir", "ds",
                                                      "--out_dir", "t", "--stats", "ds/dataset_metadata.json"),
         ["--stats ds/dataset_metadata.json lies in --tokenizer_dir ds:"]),
    Case("train_metrics_is_the_config_file", stage("train", "--dataset_dir", "ds", "--model_name", "n",
                                                   "--checkpoints_dir", "ck", "--config_file", "seed.json", "--metrics",
                                                   "seed.json"), ["--metrics seed.json lies in --config_file seed.json:"],
         setup=lambda w: (w / "seed.json").write_text('{"training": {"max_iters": 2}}')),
    Case("train_stage_bad_config", stage("train", "--dataset_dir", "ds", "--model_name", "n", "--checkpoints_dir",
                                         "ck", "--config_file", "dropout_str.json", "--metrics_dir", "p"),
         ["dropout_str.json", "dropout"], out="ck"),
]


@pytest.mark.slow
@pytest.mark.parametrize("case", STAGE_CASES, ids=[c.id for c in STAGE_CASES])
def test_stage_bad_input_is_one_line(case: Case, world, tmp_path):
    w = tmp_path / "w"
    shutil.copytree(world, w)
    if case.setup:
        case.setup(w)
    before = tree_bytes(w)
    done = run(case.args, cwd=w, check=False)
    check_refusal(w, before, case.out, done.stdout + done.stderr, case.code, done.returncode, case.expect)


# -- property: with every cleaning step off, a .txt document passes unchanged -----------------

def test_txt_document_round_trips_exactly_with_cleaning_off(monkeypatch):
    """Any text with some non-whitespace (no NUL: it marks a binary file) through clean with normalize, filter and
    dedup off and gpt2 tokenization is tiktoken's encode_ordinary of the text followed by
    end-of-text, whatever the block size."""
    import tempfile

    import tiktoken
    from hypothesis import HealthCheck, assume, given, settings
    from hypothesis import strategies as st
    from conftest import read_tokens

    import mypt.text
    from mypt.prepare import PrepareSettings, prepare_dataset

    enc = tiktoken.get_encoding("r50k_base")
    alphabet = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
    texts = st.text(alphabet=st.one_of(alphabet, st.sampled_from("\n\r\t  ab.")), min_size=1, max_size=200)
    flags = {"normalize": False, "filter": False, "dedup": False, "val_fraction": 0.0, "workers": 1,
             "tokenization": "gpt2"}

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(text=texts, block=st.integers(1, 64))
    def check(text: str, block: int) -> None:
        assume(text.strip())  # a corpus of whitespace alone has no text: refused (tests/test_bad_inputs_inputs.py)
        monkeypatch.setattr(mypt.text, "BLOCK_BYTES", block)
        with tempfile.TemporaryDirectory() as d:
            src = Path(d) / "doc.txt"
            src.write_bytes(text.encode("utf-8"))
            prepare_dataset([str(src)], Path(d) / "ds", PrepareSettings.from_flags(flags))
            got = read_tokens(Path(d) / "ds" / "train").tolist()
        assert got == enc.encode_ordinary(text) + [enc.eot_token]

    check()
