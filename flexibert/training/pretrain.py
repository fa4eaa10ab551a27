"""Pretrain a FlexiBERT model with masked language modelling (MLM) on a prepared corpus.

    python flexibert/pretrain_flexibert.py --model_hash HASH --dataset_file dataset/dataset_test.json
    python flexibert/pretrain_flexibert.py --model_dict '{"l": 2, "o": ["sa", "sa"], "h": [128, 128], "n": [2, 2],
        "f": [[512], [512]], "p": ["sdp", "sdp"]}' --output_dir models/pretrained/bert_tiny
    torchrun --nproc_per_node 2 flexibert/pretrain_flexibert.py --model_hash HASH --dataset_file LIB.json --bf16
    python flexibert/pretrain_flexibert.py --model_hash HASH --dataset_file LIB.json --init_from models/pretrained/NEIGHBOUR

The defaults are the paper's GPU recipe: 100,000 steps of 128 sequences x 512 tokens (global batch =
--per_device_train_batch_size 16 x --gradient_accumulation_steps 4 x 2 GPUs; on one GPU double one of
them), AdamW (lr 1e-4, betas 0.9/0.98, eps 1e-6, weight decay 0.01), 10,000 linear warm-up steps then
linear decay, 15% dynamic masking (80% <mask>, 10% random, 10% unchanged; special tokens never).
For a CPU try-out use e.g. --max_seq_length 128 (prepare the data with it) --max_steps 200
--warmup_steps 20 --learning_rate 1e-3 --per_device_train_batch_size 16 --gradient_accumulation_steps 1.

The vocabulary size and pad id come from --tokenizer (the one the dataset was prepared with). With
--init_from the new model starts from the weights of a trained FlexiBERT model (fine-grained weight
transfer, --transfer_mode RP or OD) instead of at random.

Re-running the same command resumes from the last checkpoint in --output_dir; on SIGTERM (a SLURM
time limit or requeue) a run first saves a checkpoint after its current step (under torchrun all ranks
stop at the same step); once finished it does nothing. --output_dir then holds the final
model (safetensors) with its tokenizer, trainer_state.json, the last --save_total_limit checkpoints
and pretrain_results.json (written atomically): eval_loss and perplexity on the validation split
(masked with a fixed seed, so comparable across models), steps, wall time, tokens/s, parameter
count, model dict and hash, and the transferred fraction with --init_from.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from datasets import DatasetDict, load_from_disk
from transformers import DataCollatorForLanguageModeling, PreTrainedTokenizerBase, Trainer, set_seed

from flexibert.data.pretraining_corpus import read_preparation
from flexibert.data.tokenization import load_tokenizer
from flexibert.training.common import (
    BuiltModel,
    CheckpointOnSignal,
    ConfigurationError,
    add_training_arguments,
    build_model_from_args,
    checkpoints_in,
    count_parameters,
    finite_or_none,
    is_flexibert_training_output,
    perplexity,
    resumable_checkpoint,
    training_arguments,
    write_json_atomic,
)
from flexibert.utils.cli import HelpFormatter

RESULTS_FILE = "pretrain_results.json"
COLUMNS = ("input_ids", "special_tokens_mask")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    model = parser.add_argument_group("model (one of --model_hash and --model_dict)")
    model.add_argument("--model_hash", default=None, help="hash of the model in the graph library --dataset_file")
    model.add_argument("--dataset_file", default=None, help="graph library JSON (from embeddings/generate_library.py) listing --model_hash")
    model.add_argument("--model_dict", default=None, help="the model dict as JSON text or the path of a JSON file")
    model.add_argument("--init_from", default=None, metavar="DIR", help="warm-start by weight transfer from this trained FlexiBERT model")
    model.add_argument("--transfer_mode", choices=["RP", "OD"], default="RP",
                       help="weight transfer for --init_from: RP random projection, OD ordered slicing")
    model.add_argument("--max_position_embeddings", type=int, default=514,
                       help="longest input the model accepts (keep it equal across models that share weights)")
    data = parser.add_argument_group("data")
    data.add_argument("--tokenizer", default="roberta_tokenizer", help="tokenizer folder (save_roberta_tokenizer.py) or hub name")
    data.add_argument("--dataset_dir", default="tokenized_pretraining_dataset", help="output of prepare_pretrain_dataset.py")
    data.add_argument("--max_seq_length", type=int, default=512, help="tokens per sequence; must match the prepared dataset")
    data.add_argument("--mlm_probability", type=float, default=0.15, help="fraction of tokens masked (dynamically, per batch)")
    data.add_argument("--max_eval_samples", type=int, default=None, help="evaluate on only the first N validation sequences")
    run = parser.add_argument_group("output")
    run.add_argument("--output_dir", default=None, help="where the model, checkpoints and results go (default: models/pretrained/<hash>)")
    run.add_argument("--overwrite_output_dir", action="store_true",
                     help="start from scratch, deleting the checkpoints and results of an earlier run in --output_dir")
    run.add_argument("--eval_before_training", action="store_true",
                     help="also evaluate the initial model (random or transferred weights): initial_eval_loss in the results")
    training = add_training_arguments(parser)  # the paper's GPU recipe is the default of every flag
    training.add_argument("--max_steps", type=int, default=100_000, help="optimizer steps to train for in total")
    return parser.parse_args(argv)


def load_pretraining_data(args: argparse.Namespace, tokenizer: PreTrainedTokenizerBase) -> DatasetDict:
    """The prepared dataset, checked against the flags and the tokenizer (a mismatch would train on wrong ids)."""
    path = Path(args.dataset_dir)
    fix = (f"prepare it with `python flexibert/prepare_pretrain_dataset.py --tokenizer {args.tokenizer} "
           f"--max_seq_length {args.max_seq_length} --output_dir {path}`")
    if not (path / "dataset_dict.json").is_file():
        raise ConfigurationError(f"{path} is not a prepared pretraining dataset; {fix}")
    data = load_from_disk(str(path))
    if {"train", "validation"} - set(data) or set(COLUMNS) - set(data["train"].column_names) or not len(data["train"]):
        raise ConfigurationError(f"{path} needs non-empty splits train/validation with columns {', '.join(COLUMNS)}; {fix}")
    length = len(data["train"][0]["input_ids"])
    if length != args.max_seq_length:
        raise ConfigurationError(f"{path} holds sequences of {length} tokens but --max_seq_length is {args.max_seq_length}; "
                                 f"pass --max_seq_length {length} or {fix}")
    if args.max_seq_length > args.max_position_embeddings:
        raise ConfigurationError(f"--max_seq_length {args.max_seq_length} exceeds --max_position_embeddings {args.max_position_embeddings}")
    vocab = read_preparation(path).get("vocab_size")
    if vocab is not None and vocab != len(tokenizer):
        raise ConfigurationError(f"{path} was tokenised with a vocabulary of {vocab} tokens but --tokenizer {args.tokenizer} has "
                                 f"{len(tokenizer)}; use the tokenizer it was prepared with, or {fix}")
    if args.max_eval_samples is not None:
        data["validation"] = data["validation"].select(range(min(args.max_eval_samples, len(data["validation"]))))
    return data


def check_output_dir(output: Path, args: argparse.Namespace) -> None:
    """Refuse to write into a folder that holds something other than an earlier run of this script; clear it on request."""
    if args.init_from is not None and output.resolve() == Path(args.init_from).resolve():
        raise ConfigurationError("--output_dir must differ from --init_from (the source model would be overwritten)")
    if args.overwrite_output_dir:
        # ignore_errors/missing_ok: under torchrun every process clears the same folder.
        for checkpoint in checkpoints_in(output):
            shutil.rmtree(checkpoint, ignore_errors=True)
        for name in (RESULTS_FILE, "trainer_state.json"):
            (output / name).unlink(missing_ok=True)
    elif (output / "config.json").is_file() and not is_flexibert_training_output(output):
        raise ConfigurationError(f"{output} already holds a model that is not from a run of this script; "
                                 "choose another --output_dir or pass --overwrite_output_dir to replace it")


def finished_results(output: Path, max_steps: int) -> dict | None:
    """The results of a finished run of at least ``max_steps`` steps in ``output``, else None."""
    path = output / RESULTS_FILE
    if not path.is_file() or not (output / "model.safetensors").is_file():
        return None
    results = json.loads(path.read_text())
    return results if results.get("global_step", 0) >= max_steps else None


def evaluate(trainer: Trainer, seed: int) -> float:
    """Validation MLM loss with the masking drawn from ``seed``: the same masks for every model and every call."""
    set_seed(seed)
    return trainer.evaluate()["eval_loss"]


def pretrain(args: argparse.Namespace) -> dict:
    """Build, (resume,) train, evaluate and save; returns what pretrain_results.json holds."""
    start = time.perf_counter()
    if args.max_steps < 1:
        raise ConfigurationError("--max_steps must be at least 1")
    try:
        tokenizer = load_tokenizer(args.tokenizer)
    except OSError as err:
        raise ConfigurationError(str(err)) from None
    data = load_pretraining_data(args, tokenizer)
    built: BuiltModel = build_model_from_args(args, tokenizer)
    output = Path(args.output_dir or Path("models") / "pretrained" / built.model_hash)
    check_output_dir(output, args)
    if not args.overwrite_output_dir and (done := finished_results(output, args.max_steps)) is not None:
        print(f"{output} already holds this model pretrained for {done['global_step']:,} steps (eval loss {done['eval_loss']:.4f}); "
              "nothing to do (pass a larger --max_steps to continue or --overwrite_output_dir to start again)")
        return done
    checkpoint = None if args.overwrite_output_dir else resumable_checkpoint(output, built.model_dict)
    start_step = int(Path(checkpoint).name.split("-")[1]) if checkpoint else 0

    training_args = training_arguments(args, output_dir=output, remove_unused_columns=False)  # keep special_tokens_mask
    global_batch = args.per_device_train_batch_size * args.gradient_accumulation_steps * training_args.world_size
    trainer = Trainer(
        model=built.model,
        args=training_args,
        train_dataset=data["train"],
        eval_dataset=data["validation"],
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=True, mlm_probability=args.mlm_probability),
        processing_class=tokenizer,  # saved with the model and every checkpoint
    )
    parameters = count_parameters(built.model)
    if trainer.is_world_process_zero():
        notes = [f"resuming from {checkpoint}"] if checkpoint else []
        if built.transfer is not None:
            notes.append(f"weights from {args.init_from} ({args.transfer_mode}, {built.transfer.scalar_fraction:.1%} transferred)")
        print(f"pretraining {built.model_hash[:12]} ({parameters:,} parameters) on {len(data['train']):,} sequences of "
              f"{args.max_seq_length} tokens for {args.max_steps:,} steps, global batch {global_batch} = "
              f"{args.per_device_train_batch_size} x {args.gradient_accumulation_steps} accumulation x {training_args.world_size} "
              f"process(es){''.join('; ' + note for note in notes)}", flush=True)

    initial_loss = evaluate(trainer, args.seed) if args.eval_before_training else None
    with CheckpointOnSignal() as stopper:
        trainer.add_callback(stopper)
        train_output = trainer.train(resume_from_checkpoint=checkpoint)
    stopper.exit_if_stopped(trainer.state.global_step, output)
    eval_loss = evaluate(trainer, args.seed)
    trainer.save_model()
    trainer.save_state()

    steps_run = trainer.state.global_step - start_step
    runtime = train_output.metrics["train_runtime"]
    results = {
        "model_hash": built.model_hash,
        "model_dict": built.model_dict,
        "num_parameters": parameters,
        "eval_loss": finite_or_none(eval_loss),
        "perplexity": perplexity(eval_loss),
        "initial_eval_loss": finite_or_none(initial_loss),
        "eval_sequences": len(data["validation"]),
        "global_step": trainer.state.global_step,
        "max_steps": args.max_steps,
        "resumed_from_step": start_step if checkpoint else None,
        "train_loss": finite_or_none(train_output.training_loss),
        "train_runtime_s": round(runtime, 3),
        "wall_time_s": round(time.perf_counter() - start, 3),
        "tokens_per_second": round(steps_run * global_batch * args.max_seq_length / runtime, 1) if runtime > 0 else None,
        "train_tokens": trainer.state.global_step * global_batch * args.max_seq_length,
        "global_batch_size": global_batch,
        "max_seq_length": args.max_seq_length,
        "world_size": training_args.world_size,
        "tokenizer": str(args.tokenizer),
        "vocab_size": len(tokenizer),
        "dataset_dir": str(args.dataset_dir),
        "init_from": args.init_from,
        "transfer_mode": args.transfer_mode if args.init_from else None,
        "transferred_fraction": built.transfer.scalar_fraction if built.transfer else None,
        "transferred_tensor_fraction": built.transfer.tensor_fraction if built.transfer else None,
        "hyperparameters": {name: getattr(args, name) for name in (
            "learning_rate", "warmup_steps", "adam_beta1", "adam_beta2", "adam_epsilon", "weight_decay", "max_grad_norm",
            "per_device_train_batch_size", "gradient_accumulation_steps", "mlm_probability", "seed", "bf16", "fp16")},
    }
    if trainer.is_world_process_zero():
        write_json_atomic(output / RESULTS_FILE, results)
        ppl = f"perplexity {results['perplexity']:.1f}" if results["perplexity"] is not None else "diverged"
        print(f"pretrained {built.model_hash[:12]} to step {results['global_step']:,}: eval loss {eval_loss:.4f} ({ppl}), "
              f"{results['tokens_per_second'] or 0:,.0f} tokens/s, {results['wall_time_s']:.0f}s; saved to {output}")
    return results


