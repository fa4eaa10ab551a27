"""Wrong numbers and inputs end a stage script at once: a non-zero exit, one line that names the flag or file and the fix,
no traceback, and nothing written (no output folder, or the existing one untouched).

Real scripts on real data: the scripts' ``main(argv)`` in-process (a few as a user would run them, in a subprocess), a
byte-level BPE trained on the first lines of WikiText-2 (../shared/data, skipped when absent), a tiny FlexiBERT model
saved with it, and the real GLUE TSVs for fine-tuning. Every refusal happens before anything is loaded or trained; the
positive checks train a few steps of a tiny model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from flexibert import (
    FlexiBERTConfig,
    FlexiBERTForMaskedLM,
    finetune_flexibert,
    glue_score,
    pretrain_flexibert,
    save_roberta_tokenizer,
)
from flexibert.data.tokenization import load_tokenizer

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
WIKITEXT = SHARED / "wikitext-2" / "wiki.train.tokens"
GLUE_DIR = SHARED / "glue"
pytestmark = [pytest.mark.skipif(not WIKITEXT.is_file(), reason=f"real WikiText-2 not found at {WIKITEXT}"),
              pytest.mark.usefixtures("one_torch_thread")]
needs_glue = pytest.mark.skipif(not (GLUE_DIR / "RTE" / "train.tsv").is_file(), reason=f"real GLUE TSVs not found in {GLUE_DIR}")

SEQ = 32
PRETRAINING_INPUTS = (400, 400, SEQ)  # lines of WikiText-2 train, tokenizer vocabulary, sequence length (conftest fixtures)
TINY = {"l": 1, "o": ["sa"], "h": [32], "n": [2], "f": [[64]], "p": ["sdp"]}


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("bad_inputs")


@pytest.fixture(scope="module")
def model_dir(work, corpus) -> Path:
    """A saved tiny FlexiBERT MLM model with the tokenizer it fits (a trained model's folder, as fine-tuning gets it)."""
    folder = work / "model"
    tokenizer = save_roberta_tokenizer.main(["--train_files", str(corpus), "--vocab_size", "400", "--output_dir", str(folder)])
    config = FlexiBERTConfig.from_model_dict(TINY, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                                             max_position_embeddings=64)
    FlexiBERTForMaskedLM(config).save_pretrained(folder)
    return folder


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def refused(call, argv: list[str], capsys) -> str:
    """The one-line message a script exits with; checks that the exit is an error and that nothing else was printed."""
    with pytest.raises(SystemExit) as exit_info:
        call(argv)
    code = exit_info.value.code
    assert code not in (0, None), "the script must exit with an error status"
    message = str(code)
    assert message.startswith("error: ") and "\n" not in message, message
    printed = capsys.readouterr()
    assert printed.out == printed.err == "", f"partial output before the refusal: {printed!r}"
    return message


def says(error: str, message: str) -> bool:
    """Whether ``error`` is the line of ``message``: all of it, or its start up to the fix after a semicolon."""
    return error == f"error: {message}" or error.startswith(f"error: {message}; ")


def run_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


# ---------------------------------------------------------------------------------------------
# Numeric settings of pretraining
# ---------------------------------------------------------------------------------------------

PRETRAIN_CASES = [  # flag, value, what the message must say
    ("--learning_rate", "-1", "--learning_rate -1 must be greater than 0; pass a value greater than 0 or leave the flag out "
                              "(default 0.0001)"),
    ("--learning_rate", "nan", "--learning_rate nan must be greater than 0"),
    ("--per_device_train_batch_size", "0", "--per_device_train_batch_size 0 must be at least 1; pass a value of at least 1 or leave "
                                           "the flag out (default 16)"),
    ("--per_device_eval_batch_size", "-2", "--per_device_eval_batch_size -2 must be at least 1"),
    ("--mlm_probability", "1.5", "--mlm_probability 1.5 must be in (0, 1); pass a value in (0, 1) or leave the flag out (default 0.15)"),
    ("--mlm_probability", "0", "--mlm_probability 0 must be in (0, 1)"),
    ("--max_steps", "0", "--max_steps 0 must be at least 1"),
    ("--max_steps", "-5", "--max_steps -5 must be at least 1"),
    ("--warmup_steps", "-10", "--warmup_steps -10 must be at least 0; pass a value of at least 0 or leave the flag out (default 10000)"),
    ("--gradient_accumulation_steps", "0", "--gradient_accumulation_steps 0 must be at least 1"),
    ("--save_steps", "0", "--save_steps 0 must be at least 1"),
    ("--logging_steps", "-1", "--logging_steps -1 must be at least 1"),
    ("--save_total_limit", "0", "--save_total_limit 0 must be at least 1"),
    ("--weight_decay", "-0.1", "--weight_decay -0.1 must be at least 0"),
    ("--adam_beta1", "1", "--adam_beta1 1 must be in [0, 1)"),
    ("--adam_beta2", "-0.5", "--adam_beta2 -0.5 must be in [0, 1)"),
    ("--adam_epsilon", "-1e-8", "--adam_epsilon -1e-08 must be at least 0"),
    ("--max_grad_norm", "-1", "--max_grad_norm -1 must be at least 0"),
    ("--eval_steps", "-1", "--eval_steps -1 must be at least 0"),
    ("--seed", "-1", "--seed -1 must be in [0, 4294967295]"),
    ("--dataloader_num_workers", "-1", "--dataloader_num_workers -1 must be at least 0"),
    ("--max_eval_samples", "0", "--max_eval_samples 0 must be at least 1; pass a value of at least 1 or leave the flag out"),
    ("--max_seq_length", "0", "--max_seq_length 0 must be at least 1"),
]


@pytest.mark.parametrize("flag, value, message", PRETRAIN_CASES, ids=[f"{flag}={value}" for flag, value, _ in PRETRAIN_CASES])
def test_pretraining_refuses_nonsense_numbers_before_creating_anything(flag, value, message, tokenizer_dir, dataset_dir, tmp_path,
                                                                        capsys):
    output = tmp_path / "out"
    argv = ["--model_dict", json.dumps(TINY), "--tokenizer", str(tokenizer_dir), "--dataset_dir", str(dataset_dir),
            "--max_seq_length", str(SEQ), "--max_steps", "2", "--output_dir", str(output), f"{flag}={value}"]
    error = refused(pretrain_flexibert.main, argv, capsys)
    assert says(error, message)
    assert "; pass a value " in error and "or leave the flag out" in error  # the fix
    assert not output.exists()


def test_pretraining_refusal_as_a_user_sees_it(tokenizer_dir, dataset_dir, tmp_path):
    """Run as a file: exit status 1, the one line on stderr, no traceback, nothing on stdout, no folder."""
    output = tmp_path / "out"
    result = run_script("flexibert/pretrain_flexibert.py", "--model_dict", json.dumps(TINY), "--tokenizer", str(tokenizer_dir),
                        "--dataset_dir", str(dataset_dir), "--max_seq_length", str(SEQ), "--output_dir", str(output),
                        "--learning_rate", "-1")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == ["error: --learning_rate -1 must be greater than 0; pass a value greater than 0 or "
                                                  "leave the flag out (default 0.0001)"]
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert not output.exists()


def test_max_seq_length_beyond_the_position_table_is_refused_before_loading(tokenizer_dir, dataset_dir, tmp_path, capsys):
    output = tmp_path / "out"
    argv = ["--model_dict", json.dumps(TINY), "--tokenizer", str(tokenizer_dir), "--dataset_dir", str(dataset_dir),
            "--max_seq_length", "600", "--output_dir", str(output)]
    error = refused(pretrain_flexibert.main, argv, capsys)
    assert error == ("error: --max_seq_length 600 exceeds --max_position_embeddings 514; lower --max_seq_length or raise "
                     "--max_position_embeddings")
    assert not output.exists()


def test_valid_pretraining_still_trains(tokenizer_dir, dataset_dir, tmp_path):
    output = tmp_path / "out"
    results = pretrain_flexibert.main(["--model_dict", json.dumps(TINY), "--tokenizer", str(tokenizer_dir), "--dataset_dir",
                                       str(dataset_dir), "--max_seq_length", str(SEQ), "--max_steps", "2", "--warmup_steps", "0",
                                       "--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "1",
                                       "--mlm_probability", "0.15", "--learning_rate", "1e-3", "--max_eval_samples", "8",
                                       "--save_steps", "2", "--output_dir", str(output)])
    assert results["global_step"] == 2 and results["eval_loss"] is not None
    assert (output / "pretrain_results.json").is_file() and (output / "model.safetensors").is_file()


# ---------------------------------------------------------------------------------------------
# The same settings in fine-tuning and the GLUE score
# ---------------------------------------------------------------------------------------------

FINETUNE_CASES = [
    ("--learning_rate", "-1", "--learning_rate -1 must be greater than 0; pass a value greater than 0 or leave the flag out "
                              "(default 2e-05)"),
    ("--learning_rate", "0", "--learning_rate 0 must be greater than 0"),
    ("--per_device_train_batch_size", "0", "--per_device_train_batch_size 0 must be at least 1"),
    ("--gradient_accumulation_steps", "0", "--gradient_accumulation_steps 0 must be at least 1"),
    ("--warmup_ratio", "1.5", "--warmup_ratio 1.5 must be in [0, 1); pass a value in [0, 1) or leave the flag out (default 0)"),
    ("--warmup_ratio", "-0.1", "--warmup_ratio -0.1 must be in [0, 1)"),
    ("--max_steps", "0", "--max_steps 0 must be at least 1 (it then overrides --num_train_epochs); leave the flag out (default -1) to "
                         "train for --num_train_epochs"),
    ("--max_steps", "-7", "--max_steps -7 must be at least 1 (it then overrides --num_train_epochs); leave the flag out (default -1) to "
                          "train for --num_train_epochs"),
    ("--num_train_epochs", "-1", "--num_train_epochs -1 must be at least 0; pass a value of at least 0 or leave the flag out (default 5)"),
    ("--num_train_epochs", "0", "nothing to train: --num_train_epochs is 0 and --max_steps is not given; give --num_train_epochs > 0 "
                                "or --max_steps > 0"),
    ("--max_train_samples", "0", "--max_train_samples 0 must be at least 1"),
    ("--weight_decay", "-1", "--weight_decay -1 must be at least 0"),
]


@needs_glue
@pytest.mark.parametrize("flag, value, message", FINETUNE_CASES, ids=[f"{flag}={value}" for flag, value, _ in FINETUNE_CASES])
def test_finetuning_refuses_nonsense_numbers_before_creating_anything(flag, value, message, model_dir, tmp_path, capsys):
    output = tmp_path / "rte"
    argv = ["--model_name_or_path", str(model_dir), "--task_name", "rte", "--glue_dir", str(GLUE_DIR), "--max_seq_length", "64",
            "--output_dir", str(output), f"{flag}={value}"]
    assert says(refused(finetune_flexibert.main, argv, capsys), message)
    assert not output.exists()


@needs_glue
@pytest.mark.parametrize("flag, value, message", FINETUNE_CASES[:5], ids=[f"{flag}={value}" for flag, value, _ in FINETUNE_CASES[:5]])
def test_glue_score_refuses_before_the_first_task(flag, value, message, model_dir, tmp_path, capsys):
    output = tmp_path / "glue"
    argv = ["--model_name_or_path", str(model_dir), "--tasks", "rte", "mrpc", "--glue_dir", str(GLUE_DIR), "--max_seq_length", "64",
            "--output_dir", str(output), f"{flag}={value}"]
    assert says(refused(glue_score.main, argv, capsys), message)  # not even the tasks' progress bar is shown
    assert not output.exists()


@needs_glue
def test_valid_finetuning_still_trains(model_dir, tmp_path):
    output = tmp_path / "rte"
    results = finetune_flexibert.main(["--model_name_or_path", str(model_dir), "--task_name", "rte", "--glue_dir", str(GLUE_DIR),
                                       "--output_dir", str(output), "--max_steps", "2", "--num_train_epochs", "0",
                                       "--warmup_ratio", "0.5", "--per_device_train_batch_size", "4", "--max_train_samples", "8",
                                       "--max_eval_samples", "8", "--max_seq_length", "64", "--learning_rate", "1e-3"])
    assert results["global_step"] == 2 and (output / "results.json").is_file()


# ---------------------------------------------------------------------------------------------
# save_roberta_tokenizer.py: the output folder
# ---------------------------------------------------------------------------------------------


def test_tokenizer_refuses_a_trained_models_folder_and_leaves_it_untouched(model_dir, corpus, capsys):
    before = snapshot(model_dir)
    error = refused(save_roberta_tokenizer.main, ["--train_files", str(corpus), "--vocab_size", "300", "--output_dir", str(model_dir)],
                    capsys)
    assert error == (f"error: --output_dir {model_dir} already holds a model and its tokenizer (config.json, model.safetensors, "
                     "tokenizer.json, tokenizer_config.json): saving would replace the tokenizer the model was trained with; choose "
                     "another folder, or pass --overwrite to replace it")
    assert snapshot(model_dir) == before
    # The hub path is refused the same way, before any download is tried.
    error = refused(save_roberta_tokenizer.main, ["--output_dir", str(model_dir)], capsys)
    assert "already holds a model and its tokenizer" in error and "--overwrite" in error
    assert snapshot(model_dir) == before


def test_tokenizer_refuses_a_model_folder_without_a_tokenizer(model_dir, corpus, tmp_path, capsys):
    folder = tmp_path / "weights_only"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        (folder / name).write_bytes((model_dir / name).read_bytes())
    before = snapshot(folder)
    error = refused(save_roberta_tokenizer.main, ["--train_files", str(corpus), "--output_dir", str(folder)], capsys)
    assert error.startswith(f"error: --output_dir {folder} already holds a model (config.json, model.safetensors): ")
    assert error.endswith("choose another folder, or pass --overwrite to save it there anyway")
    assert snapshot(folder) == before


def test_tokenizer_refuses_to_replace_another_tokenizer(tokenizer_dir, corpus, capsys):
    before = snapshot(tokenizer_dir)
    error = refused(save_roberta_tokenizer.main, ["--train_files", str(corpus), "--vocab_size", "300", "--output_dir",
                                                  str(tokenizer_dir)], capsys)
    assert error == (f"error: --output_dir {tokenizer_dir} already holds a tokenizer (tokenizer.json, tokenizer_config.json); "
                     "choose another folder, or pass --overwrite to replace it")
    assert snapshot(tokenizer_dir) == before


def test_overwrite_replaces_the_tokenizer_and_keeps_the_model(model_dir, corpus, tmp_path, capsys):
    folder = tmp_path / "model"
    folder.mkdir()
    for path in model_dir.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "vocab.txt").write_text("[PAD]\n[UNK]\n")  # an older tokenizer's file must not linger beside the new one
    tokenizer = save_roberta_tokenizer.main(["--train_files", str(corpus), "--vocab_size", "300", "--output_dir", str(folder),
                                             "--overwrite"])
    assert "saved tokenizer trained on 1 file(s) (vocab 300" in capsys.readouterr().out
    assert len(tokenizer) == 300 and len(load_tokenizer(folder)) == 300
    assert not (folder / "vocab.txt").exists()
    for name in ("config.json", "model.safetensors"):
        assert (folder / name).read_bytes() == (model_dir / name).read_bytes()


@pytest.mark.parametrize("inside", [False, True], ids=["file", "below_a_file"])
def test_tokenizer_refuses_an_output_dir_that_is_a_file(inside, corpus, tmp_path, capsys):
    existing = tmp_path / "notes.txt"
    existing.write_text("keep me\n")
    output = existing / "tok" if inside else existing
    error = refused(save_roberta_tokenizer.main, ["--train_files", str(corpus), "--output_dir", str(output)], capsys)
    where = f"cannot be created: {existing} is a file" if inside else "is a file"
    assert error == (f"error: --output_dir {output} {where}, not a folder; give the path of a folder for the tokenizer files "
                     "(it is created if missing)")
    assert existing.read_text() == "keep me\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_tokenizer_refusal_as_a_user_sees_it(tmp_path):
    existing = tmp_path / "notes.txt"
    existing.write_text("keep me\n")
    result = run_script("flexibert/save_roberta_tokenizer.py", "--output_dir", str(existing))  # refused before any download
    assert result.returncode == 1 and result.stdout == "" and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [f"error: --output_dir {existing} is a file, not a folder; give the path of a folder "
                                                  "for the tokenizer files (it is created if missing)"]
    assert existing.read_text() == "keep me\n"


# ---------------------------------------------------------------------------------------------
# save_roberta_tokenizer.py: text files without text
# ---------------------------------------------------------------------------------------------

BAD_TEXT = {  # file content, what the message says about it
    "empty": (b"", "is empty"),
    "blank": (b"  \n\n\t \r\n   \n", "holds only whitespace"),
    "nul_bytes": (b"\x00" * 4096, "is binary, not text (a NUL byte at byte 0)"),
    "gzip": (bytes.fromhex("1f8b0800000000000003") + bytes(range(256)) * 8, "is binary, not text (a NUL byte at byte 3)"),
    "high_bytes": (bytes(range(128, 256)) * 8, "is binary or not UTF-8 text (an invalid byte at byte 0)"),
    "latin1": ("Café au lait, naïve text\n".encode("latin-1"), "is binary or not UTF-8 text (an invalid byte at byte 3)"),
}
FIX = "give plain-text files of your corpus in UTF-8 (convert other encodings first) and leave out empty ones"


@pytest.mark.parametrize("kind", list(BAD_TEXT))
def test_tokenizer_refuses_files_without_text(kind, tmp_path, capsys):
    content, problem = BAD_TEXT[kind]
    path = tmp_path / f"{kind}.txt"
    path.write_bytes(content)
    output = tmp_path / "tok"
    error = refused(save_roberta_tokenizer.main, ["--train_files", str(path), "--vocab_size", "300", "--output_dir", str(output)],
                    capsys)
    assert error == f"error: --train_files cannot train a tokenizer: {path} {problem}; {FIX}"
    assert not output.exists()


def test_tokenizer_names_every_file_without_text(corpus, tmp_path, capsys):
    empty, binary = tmp_path / "empty.txt", tmp_path / "image.png"
    empty.write_bytes(b"")
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    output = tmp_path / "tok"
    argv = ["--train_files", str(corpus), str(empty), str(binary), str(tmp_path / "missing.txt"), "--output_dir", str(output)]
    error = refused(save_roberta_tokenizer.main, argv, capsys)
    assert error == (f"error: --train_files cannot train a tokenizer: {empty} is empty; {binary} is binary, not text (a NUL byte at byte "
                     f"8); {tmp_path / 'missing.txt'} does not exist; {FIX}")
    assert str(corpus) not in error
    assert not output.exists()


def test_tokenizer_refuses_text_too_short_to_learn_a_merge(tmp_path, capsys):
    path = tmp_path / "one_word.txt"
    path.write_text("a\n")
    output = tmp_path / "tok"
    error = refused(save_roberta_tokenizer.main, ["--train_files", str(path), "--vocab_size", "300", "--output_dir", str(output)], capsys)
    assert error == ("error: --train_files hold too little text to learn any BPE merge seen at least --min_frequency 2 times "
                     "(vocab 261: bytes only); give more text or lower --min_frequency")
    assert not output.exists()


def test_valid_tokenizer_training_still_works(corpus, tmp_path, capsys):
    output = tmp_path / "new" / "tok"  # missing parents are created
    tokenizer = save_roberta_tokenizer.main(["--train_files", str(corpus), "--vocab_size", "300", "--output_dir", str(output)])
    assert f"(vocab 300, pad id 1, model_max_length 512) to {output}" in capsys.readouterr().out
    assert len(load_tokenizer(output)) == len(tokenizer) == 300
    ids = tokenizer("The game began development in 2010")["input_ids"]
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    assert torch.tensor(ids).max() < 300


TOKENIZER_NUMBERS = [
    ("--vocab_size", "100", "--vocab_size 100 must be at least 261 (256 byte symbols + 5 special tokens); pass a larger --vocab_size "
                            "(default 8000)"),
    ("--min_frequency", "0", "--min_frequency 0 must be at least 1 (the pair count a merge needs); pass 1 or more (default 2)"),
    ("--max_length", "0", "--max_length 0 must be at least 1 (the longest input, in tokens); pass e.g. 512, the default"),
]


@pytest.mark.parametrize("flag, value, message", TOKENIZER_NUMBERS, ids=[flag for flag, _, _ in TOKENIZER_NUMBERS])
def test_tokenizer_refuses_nonsense_numbers(flag, value, message, corpus, tmp_path, capsys):
    output = tmp_path / "tok"
    argv = ["--train_files", str(corpus), "--output_dir", str(output), flag, value]
    assert refused(save_roberta_tokenizer.main, argv, capsys) == f"error: {message}"
    assert not output.exists()
