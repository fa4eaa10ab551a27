"""The pretraining pipeline on real WikiText-2: offline tokenizer, packed dataset, MLM training, resume, warm start, DDP.

The scripts' ``main(argv)`` run in-process; a few checks start them as a user would (``python
flexibert/X.py``, ``python -m flexibert.X``, ``torchrun``). Torch runs single-threaded here: on
small shared CI machines, OpenMP threads of these tiny models oversubscribe the cores and slow
training 10-40x, while one thread does a 2-layer step in milliseconds.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest
import torch
from datasets import load_from_disk
from transformers import AutoModelForMaskedLM, AutoTokenizer, DataCollatorForLanguageModeling

from embeddings.graph import model_hash
from embeddings.library import Library
from flexibert import FlexiBERTConfig, FlexiBERTForMaskedLM, prepare_pretrain_dataset, pretrain_flexibert
from flexibert.data.tokenization import load_tokenizer
from flexibert.training.checkpoints import checkpoints_in
from flexibert.training.model_source import build_model

ROOT = Path(__file__).resolve().parents[1]
WIKITEXT = Path(__file__).resolve().parents[2] / "shared" / "data" / "wikitext-2"
pytestmark = [pytest.mark.skipif(not (WIKITEXT / "wiki.train.tokens").is_file(),
                                 reason=f"real WikiText-2 not found at {WIKITEXT} (the shared data folder beside the checkout)"),
              pytest.mark.usefixtures("one_torch_thread")]

SEQ = 64
PRETRAINING_INPUTS = (4000, 2000, SEQ)  # lines of WikiText-2 train, tokenizer vocabulary, sequence length (conftest fixtures)
TINY = {"l": 2, "o": ["sa", "sa"], "h": [64, 64], "n": [2, 2], "f": [[128], [128]], "p": ["sdp", "sdp"]}
# A neighbour of TINY: a wider first feed-forward layer and a third layer.
NEIGHBOUR = {"l": 3, "o": ["sa", "sa", "sa"], "h": [64, 64, 64], "n": [2, 2, 2], "f": [[256], [128], [128]], "p": ["sdp", "sdp", "sdp"]}
STEPS = 300


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("pretraining")


def pretrain_argv(tokenizer_dir: Path, dataset_dir: Path, output: Path, *extra: str) -> list[str]:
    """CPU try-out settings: 16 x 64-token sequences per step, a high learning rate with a short warm-up."""
    return ["--model_dict", json.dumps(TINY), "--tokenizer", str(tokenizer_dir), "--dataset_dir", str(dataset_dir),
            "--max_seq_length", str(SEQ), "--max_steps", str(STEPS), "--warmup_steps", "30", "--learning_rate", "1e-3",
            "--per_device_train_batch_size", "16", "--gradient_accumulation_steps", "1", "--save_steps", "100",
            "--logging_steps", "100", "--output_dir", str(output), *extra]


@pytest.fixture(scope="module")
def pretrained(work, tokenizer_dir, dataset_dir) -> tuple[Path, dict, list[str]]:
    argv = pretrain_argv(tokenizer_dir, dataset_dir, work / "tiny", "--eval_before_training", "--keep_checkpoints")
    return work / "tiny", pretrain_flexibert.main(argv), argv


def test_a_finished_run_keeps_its_model_and_results_but_no_checkpoints(work, tokenizer_dir, dataset_dir):
    """Checkpoints (optimizer state: 3x the weights) exist to resume; a finished run of a search keeps only what is used."""
    output = work / "no-checkpoints"
    results = pretrain_flexibert.main(pretrain_argv(tokenizer_dir, dataset_dir, output, "--max_steps", "4", "--save_steps", "2"))
    assert results["global_step"] == 4 and not checkpoints_in(output)
    assert {"model.safetensors", "config.json", "pretrain_results.json", "tokenizer.json"} <= {p.name for p in output.iterdir()}
    assert not [p for p in output.iterdir() if p.is_dir() and p.name.startswith(("checkpoint", "incomplete"))]


def run_script(*args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    environment = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=environment)


def mlm_loss(model: torch.nn.Module, rows: list[list[int]], tokenizer, seed: int = 0) -> float:
    """Mean MLM loss over ``rows`` with the masks drawn from ``seed`` (the same masks for every model)."""
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15, seed=seed)
    model.eval()
    losses = []
    with torch.no_grad():
        for start in range(0, len(rows), 32):
            batch = collator([{"input_ids": row} for row in rows[start:start + 32]])
            losses.append(model(input_ids=batch["input_ids"], labels=batch["labels"]).loss.item())
    return float(np.mean(losses))


# ---------------------------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------------------------


def test_offline_tokenizer_round_trips_wikitext(tokenizer_dir):
    tokenizer = load_tokenizer(tokenizer_dir)
    assert len(tokenizer) == 2000
    assert (tokenizer.bos_token_id, tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.mask_token_id) == (0, 1, 2, 4)
    lines = [line.strip() for line in (WIKITEXT / "wiki.valid.tokens").read_text(encoding="utf-8").splitlines()]
    lines = [line for line in lines if line and "<unk>" not in line][:200]  # unseen text (the validation file)
    for line in lines:
        ids = tokenizer(line)["input_ids"]
        assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
        assert tokenizer.decode(ids, skip_special_tokens=True) == line
    characters = sum(len(line) for line in lines)
    tokens = sum(len(tokenizer(line, add_special_tokens=False)["input_ids"]) for line in lines)
    assert tokens < characters / 2.5, "the BPE learned merges (a byte-level tokenizer without them gives one token per byte)"


def test_hub_tokenizer_unavailable_says_how_to_train_offline(tmp_path):
    result = run_script("flexibert/save_roberta_tokenizer.py", "--output_dir", str(tmp_path / "tok"),
                        env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "empty_hf_home")})
    assert result.returncode != 0
    assert "cannot download the 'roberta-base' tokenizer" in result.stderr and "--train_files" in result.stderr
    assert not (tmp_path / "tok").exists()


def test_scripts_run_as_files_and_as_modules():
    as_file = run_script("flexibert/pretrain_flexibert.py", "--help")
    as_module = run_script("-m", "flexibert.prepare_pretrain_dataset", "--help")
    assert as_file.returncode == 0 and as_module.returncode == 0
    file_help, module_help = (" ".join(result.stdout.split()) for result in (as_file, as_module))  # unwrap the help text
    assert "--init_from" in file_help and "total (default: 100000)" in file_help
    assert "--validation_fraction" in module_help and "wikimedia/wikipedia" in module_help


# ---------------------------------------------------------------------------------------------
# Dataset preparation
# ---------------------------------------------------------------------------------------------


def test_prepared_dataset_follows_the_contract(dataset_dir, tokenizer_dir, corpus):
    data = load_from_disk(str(dataset_dir))
    tokenizer = load_tokenizer(tokenizer_dir)
    assert set(data) == {"train", "validation"}
    special = np.array(tokenizer.all_special_ids)
    for split in data.values():
        assert split.column_names == ["input_ids", "special_tokens_mask"]
        table = split.data.table
        for column in ("input_ids", "special_tokens_mask"):
            assert set(pc.list_value_length(table[column]).to_pylist()) == {SEQ}
        ids = np.array(split["input_ids"])
        mask = np.array(split["special_tokens_mask"])
        np.testing.assert_array_equal(mask, np.isin(ids, special).astype(mask.dtype))
        flat = ids.ravel()
        assert not np.any((flat[:-1] == tokenizer.bos_token_id) & (flat[1:] == tokenizer.eos_token_id)), "blank lines are dropped"
    assert 0.03 < len(data["validation"]) / (len(data["train"]) + len(data["validation"])) < 0.07

    # Every token of the non-blank lines is kept, except the final partial chunk of each 1,000-row map batch.
    lines = [line.strip() for line in corpus.read_text(encoding="utf-8").splitlines()]
    total = sum(len(ids) for ids in tokenizer([line for line in lines if line])["input_ids"])
    kept = (len(data["train"]) + len(data["validation"])) * SEQ
    batches = math.ceil(0.95 * len(lines) / 1000) + math.ceil(0.05 * len(lines) / 1000)
    assert total - batches * (SEQ - 1) <= kept <= total

    text = tokenizer.decode(data["train"][0]["input_ids"] + data["train"][1]["input_ids"])
    assert text.startswith("<s>") and "</s><s>" in text
    assert any(" = = " in tokenizer.decode(row) for row in data["train"][:300]["input_ids"]), "WikiText headings are kept as text"
    info = json.loads((dataset_dir / "preparation.json").read_text())
    assert info["vocab_size"] == 2000 and info["max_seq_length"] == SEQ and info["sequences"]["train"] == len(data["train"])


def test_prepare_mixes_a_hub_style_dataset_with_text_files(work, corpus, tokenizer_dir):
    """A dataset folder in hub layout (one article per row, extra columns) goes through the --hub_datasets path, streamed."""
    articles: list[dict] = []
    for line in (WIKITEXT / "wiki.valid.tokens").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line.startswith("= ") and not line.startswith("= ="):
            articles.append({"title": line.strip("= "), "text": ""})
        elif line and articles:
            articles[-1]["text"] += line + "\n"
    folder = work / "hub_style_wiki"
    folder.mkdir()
    (folder / "train.jsonl").write_text("".join(json.dumps(article) + "\n" for article in articles), encoding="utf-8")

    packed = prepare_pretrain_dataset.main([
        "--hub_datasets", str(folder), "--text_files", str(corpus), "--max_samples", "20", "--tokenizer", str(tokenizer_dir),
        "--max_seq_length", str(SEQ), "--validation_fraction", "0.25", "--cache_dir", str(work / "hf_cache"),
        "--output_dir", str(work / "mixed")])
    info = json.loads((work / "mixed" / "preparation.json").read_text())
    assert info["rows"] == 40 and info["sources"] == [str(folder), str(corpus)]
    assert set(packed) == {"train", "validation"} and packed["train"].column_names == ["input_ids", "special_tokens_mask"]
    tokenizer = load_tokenizer(tokenizer_dir)
    text = "".join(tokenizer.decode(row) for split in packed.values() for row in split["input_ids"])
    assert sum(article["text"].split("\n")[0][:100] in text for article in articles[:20]) >= 18, "the articles are in the dataset"


def test_prepare_refuses_to_overwrite_and_explains(dataset_dir, tokenizer_dir, corpus, tmp_path):
    argv = ["--text_files", str(corpus), "--tokenizer", str(tokenizer_dir), "--output_dir", str(dataset_dir)]
    with pytest.raises(SystemExit, match="pass --overwrite"):
        prepare_pretrain_dataset.main(argv)
    with pytest.raises(SystemExit, match="--text_files not found"):
        prepare_pretrain_dataset.main(["--text_files", str(tmp_path / "missing.txt"), "--output_dir", str(tmp_path / "out")])
    with pytest.raises(SystemExit, match="no complete 64-token sequence"):
        prepare_pretrain_dataset.main(["--text_files", str(corpus), "--max_samples", "20", "--tokenizer", str(tokenizer_dir),
                                       "--max_seq_length", str(SEQ), "--cache_dir", str(tmp_path / "cache"),
                                       "--output_dir", str(tmp_path / "x")])


# ---------------------------------------------------------------------------------------------
# Pretraining
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_pretraining_lowers_validation_mlm_loss(pretrained, tokenizer_dir, dataset_dir):
    output, results, _ = pretrained
    assert results["global_step"] == STEPS and results["resumed_from_step"] is None
    assert results["eval_loss"] < results["initial_eval_loss"] - 0.8, results
    assert results["perplexity"] == pytest.approx(math.exp(results["eval_loss"]))
    assert results["model_hash"] == model_hash(TINY) and results["model_dict"] == TINY
    assert results["tokens_per_second"] > 0 and results["global_batch_size"] == 16

    # The folder is what fine-tuning loads: model and tokenizer together; the results file matches it.
    assert json.loads((output / "pretrain_results.json").read_text()) == results
    model = AutoModelForMaskedLM.from_pretrained(output)
    tokenizer = AutoTokenizer.from_pretrained(output)
    assert isinstance(model, FlexiBERTForMaskedLM) and (output / "model.safetensors").is_file()
    assert len(tokenizer) == model.config.vocab_size == 2000 and model.config.pad_token_id == tokenizer.pad_token_id
    assert results["num_parameters"] == sum(p.numel() for p in model.parameters())

    # Independently of the script's own evaluation: the same masks, trained vs untrained weights.
    rows = load_from_disk(str(dataset_dir))["validation"]["input_ids"]
    torch.manual_seed(0)
    untrained = FlexiBERTForMaskedLM(FlexiBERTConfig.from_model_dict(TINY, vocab_size=2000, pad_token_id=1))
    assert mlm_loss(model, rows, tokenizer) < mlm_loss(untrained, rows, tokenizer) - 0.8


@pytest.mark.slow
def test_rerun_resumes_from_the_last_checkpoint(pretrained, tmp_path, capsys):
    output, first, argv = pretrained
    # A job killed between checkpoint-200 and the end: the last checkpoint and the final outputs are missing.
    interrupted = tmp_path / "interrupted"
    shutil.copytree(output, interrupted)
    shutil.rmtree(interrupted / f"checkpoint-{STEPS}")
    for name in ("model.safetensors", "pretrain_results.json", "trainer_state.json"):
        (interrupted / name).unlink()
    rerun = [*argv[:argv.index("--output_dir")], "--output_dir", str(interrupted), "--eval_before_training"]
    resumed = pretrain_flexibert.main(rerun)
    assert "resuming from" in capsys.readouterr().out
    assert resumed["resumed_from_step"] == 200 and resumed["global_step"] == STEPS
    assert resumed["initial_eval_loss"] == pytest.approx(first["initial_eval_loss"], abs=1e-6), "same initial model rebuilt"
    history = json.loads((interrupted / "trainer_state.json").read_text())["log_history"]
    original = json.loads((output / "trainer_state.json").read_text())["log_history"]
    def losses(log: list[dict]) -> dict[int, float]:
        return {entry["step"]: entry["loss"] for entry in log if "loss" in entry}

    assert losses(history)[100] == losses(original)[100] and losses(history)[200] == losses(original)[200], "steps 1-200 not redone"
    assert resumed["train_runtime_s"] < first["train_runtime_s"]
    assert resumed["eval_loss"] == pytest.approx(first["eval_loss"], abs=0.1)

    # Once finished, the same command does nothing.
    again = pretrain_flexibert.main(rerun)
    assert again == resumed and "nothing to do" in capsys.readouterr().out


@pytest.mark.slow
def test_init_from_transfers_trained_weights(pretrained, tokenizer_dir, dataset_dir, tmp_path):
    source, first, _ = pretrained
    library = Library.from_model_dicts([NEIGHBOUR, TINY])
    library.save(tmp_path / "library.json")
    target = model_hash(NEIGHBOUR)
    common = ["--model_hash", target, "--dataset_file", str(tmp_path / "library.json"), "--tokenizer", str(tokenizer_dir),
              "--dataset_dir", str(dataset_dir), "--max_seq_length", str(SEQ)]

    # The built models: transferred weights differ from the random ones the same seed gives.
    tokenizer = load_tokenizer(tokenizer_dir)
    args = pretrain_flexibert.parse_args([*common, "--init_from", str(source)])
    warm = build_model(args, tokenizer, args.seed)
    cold = build_model(pretrain_flexibert.parse_args(common), tokenizer, args.seed)
    assert warm.transfer is not None and 0.5 < warm.transfer.scalar_fraction < 1 and cold.transfer is None
    ids = torch.tensor([load_from_disk(str(dataset_dir))["validation"][0]["input_ids"]])
    warm.model.eval()
    cold.model.eval()
    assert not torch.allclose(warm.model(input_ids=ids).logits, cold.model(input_ids=ids).logits, atol=1e-3)

    # The command line: a short warm-started run records the transfer and starts far below a random model's loss.
    results = pretrain_flexibert.main([*common, "--init_from", str(source), "--max_steps", "5", "--warmup_steps", "1",
                                       "--gradient_accumulation_steps", "1", "--eval_before_training",
                                       "--output_dir", str(tmp_path / "warm")])
    assert results["model_hash"] == target and results["init_from"] == str(source) and results["transfer_mode"] == "RP"
    assert results["transferred_fraction"] == pytest.approx(warm.transfer.scalar_fraction)
    assert results["initial_eval_loss"] < first["initial_eval_loss"] - 0.5, (results["initial_eval_loss"], first["initial_eval_loss"])

    with pytest.raises(SystemExit, match="must differ from --init_from"):
        pretrain_flexibert.main([*common, "--init_from", str(source), "--output_dir", str(source)])
    with pytest.raises(SystemExit, match="holds no saved model"):
        pretrain_flexibert.main([*common, "--init_from", str(tmp_path), "--output_dir", str(tmp_path / "x")])


def test_pretraining_flag_errors_say_how_to_fix(tokenizer_dir, dataset_dir, tmp_path):
    base = ["--tokenizer", str(tokenizer_dir), "--dataset_dir", str(dataset_dir), "--output_dir", str(tmp_path / "out")]
    cases = [
        ([*base, "--max_seq_length", str(SEQ)], "exactly one of --model_hash"),
        ([*base, "--model_dict", json.dumps(TINY)], "holds sequences of 64 tokens but --max_seq_length is 512"),
        ([*base, "--model_dict", "{'l': 2}", "--max_seq_length", str(SEQ)], "not valid JSON"),
        ([*base, "--model_dict", json.dumps({**TINY, "n": [3, 2]}), "--max_seq_length", str(SEQ)], "key 'n', layer 0"),
        ([*base, "--model_hash", "abc", "--max_seq_length", str(SEQ)], "needs --dataset_file"),
        ([*base, "--model_dict", json.dumps(TINY), "--max_seq_length", str(SEQ), "--bf16"], "needs a CUDA GPU"),
        (["--model_dict", json.dumps(TINY), "--tokenizer", str(tokenizer_dir), "--dataset_dir", str(tmp_path)],
         "prepare_pretrain_dataset.py"),
    ]
    for argv, message in cases:
        if "--bf16" in argv and torch.cuda.is_available():
            continue
        with pytest.raises(SystemExit, match=message):
            pretrain_flexibert.main(argv)


@pytest.mark.slow
def test_torchrun_data_parallel_matches_gradient_accumulation(tokenizer_dir, dataset_dir, tmp_path):
    """Two CPU processes of 8 sequences (DDP, gloo) train like one process accumulating two batches of 8."""
    def argv(output: Path, accumulation: int) -> list[str]:  # later flags override pretrain_argv's
        return pretrain_argv(tokenizer_dir, dataset_dir, output, "--max_steps", "20", "--warmup_steps", "2",
                             "--per_device_train_batch_size", "8", "--gradient_accumulation_steps", str(accumulation))

    ddp = run_script("-m", "torch.distributed.run", "--nproc_per_node", "2", "flexibert/pretrain_flexibert.py", *argv(tmp_path / "ddp", 1))
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert ddp.stdout.count("pretrained ") == 1, "only the main process reports and writes"
    distributed = json.loads((tmp_path / "ddp" / "pretrain_results.json").read_text())
    single = pretrain_flexibert.main(argv(tmp_path / "single", 2))
    assert distributed["world_size"] == 2 and distributed["global_batch_size"] == single["global_batch_size"] == 16
    assert distributed["eval_loss"] == pytest.approx(single["eval_loss"], abs=0.02)
    assert distributed["train_loss"] == pytest.approx(single["train_loss"], abs=0.05)


def start_training(args: list[str], log: Path) -> subprocess.Popen:
    """``python ARGS`` with its output in ``log``, returned once it trains (run with --logging_steps 1: a loss per step)."""
    with open(log, "w") as handle:
        process = subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT,
                                   env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 240
    while "'loss'" not in log.read_text():
        assert process.poll() is None and time.time() < deadline, log.read_text()[-3000:]
        time.sleep(0.2)
    return process


def saved_steps(output: Path) -> list[int]:
    return [int(path.name.split("-")[1]) for path in checkpoints_in(output)]


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_at_once_and_a_rerun_resumes_from_it(tokenizer_dir, dataset_dir, tmp_path):
    """What SLURM sends at a time limit, pre-emption or requeue, and the local executor on Ctrl-C of a search."""
    output = tmp_path / "terminated"
    argv = pretrain_argv(tokenizer_dir, dataset_dir, output, "--save_steps", "1000", "--logging_steps", "1")
    log = tmp_path / "log.txt"
    process = start_training(["-m", "flexibert.pretrain_flexibert", *argv], log)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) != 0  # stopped, not finished
    assert "stopped by SIGTERM: checkpoint saved at step" in log.read_text()
    saved = saved_steps(output)
    assert len(saved) == 1 and 0 < saved[0] < STEPS  # saved at the signal, long before --save_steps 1000
    assert not (output / "pretrain_results.json").exists()

    resumed = pretrain_flexibert.main(argv)
    assert resumed["resumed_from_step"] == saved[0] and resumed["global_step"] == STEPS


@pytest.mark.slow
def test_a_warm_start_stopped_by_sigterm_resumes_to_the_steps_the_closeness_rule_gave_it(pretrained, tokenizer_dir, dataset_dir,
                                                                                         tmp_path):
    """A search's warm start (search/job.py) killed mid-way: the rerun job asks the rule again, gets the same steps, and the
    run resumes from its checkpoint to them; the transfer it started from is still what results.json records."""
    from flexibert.models.weight_transfer import model_overlap
    from flexibert.search.job import pretrain_steps

    source, _, _ = pretrained
    Library.from_model_dicts([NEIGHBOUR, TINY]).save(tmp_path / "library.json")
    budget = 80  # the search's --pretrain_steps: any budget shows the rule, and a small one keeps the test short
    config = {"library": str(tmp_path / "library.json"), "pretrain_steps": budget, "transfer_pretrain_steps": None}
    target, parent = model_hash(NEIGHBOUR), model_hash(TINY)
    steps = pretrain_steps(config, target, parent)
    assert 0 < steps < budget  # a warm start trains less than the full budget
    output = tmp_path / "warm"
    argv = ["--model_hash", target, "--dataset_file", config["library"], "--tokenizer", str(tokenizer_dir), "--dataset_dir",
            str(dataset_dir), "--max_seq_length", str(SEQ), "--init_from", str(source), "--max_steps", str(steps),
            "--warmup_steps", "10", "--learning_rate", "1e-3", "--per_device_train_batch_size", "16", "--save_steps", "1000",
            "--logging_steps", "1", "--output_dir", str(output)]
    process = start_training(["-m", "flexibert.pretrain_flexibert", *argv], tmp_path / "log.txt")
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) != 0
    saved = saved_steps(output)
    assert len(saved) == 1 and 0 < saved[0] < steps

    assert pretrain_steps(config, target, parent) == steps  # the rule depends on the two models only: nothing to remember
    resumed = pretrain_flexibert.main(argv)
    assert resumed["resumed_from_step"] == saved[0] and resumed["global_step"] == steps
    assert resumed["init_from"] == str(source) and resumed["closeness"] == pytest.approx(model_overlap(NEIGHBOUR, TINY))


@pytest.mark.slow
def test_sigterm_to_one_torchrun_worker_stops_every_rank_at_one_checkpoint(tokenizer_dir, dataset_dir, tmp_path):
    """Ranks that stopped at different steps would hang in each other's collectives: they must agree on the step."""
    output, steps = tmp_path / "terminated", 80  # the stop comes at the first steps: a short run shows it as well
    argv = ["-m", "torch.distributed.run", "--nproc_per_node", "2", "flexibert/pretrain_flexibert.py",
            *pretrain_argv(tokenizer_dir, dataset_dir, output, "--per_device_train_batch_size", "8", "--save_steps", "1000",
                           "--logging_steps", "1", "--max_steps", str(steps))]
    log = tmp_path / "log.txt"
    agent = start_training(argv, log)
    workers = Path(f"/proc/{agent.pid}/task/{agent.pid}/children").read_text().split()
    assert len(workers) == 2
    os.kill(int(workers[-1]), signal.SIGTERM)  # one rank only; the other never sees a signal
    assert agent.wait(timeout=120) != 0
    text = log.read_text()
    assert "stopped by SIGTERM: checkpoint saved at step" in text
    assert "stopped by SIGTERM to another process of the run: checkpoint saved at step" in text
    saved = saved_steps(output)
    assert len(saved) == 1 and 0 < saved[0] < steps
    assert text.count(f"checkpoint saved at step {saved[0]:,}") == 2  # both ranks, same step

    resumed = run_script(*argv)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    results = json.loads((output / "pretrain_results.json").read_text())
    assert results["resumed_from_step"] == saved[0] and results["global_step"] == steps and results["world_size"] == 2
