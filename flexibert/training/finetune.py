"""Fine-tune a saved FlexiBERT model on one GLUE task and score it on the dev set(s).

    python flexibert/finetune_flexibert.py --model_name_or_path models/pretrained/HASH --task_name rte \\
        --glue_dir ../shared/data/glue --output_dir runs/glue/HASH/rte
    python -m flexibert.finetune_flexibert --model_name_or_path models/pretrained/HASH --task_name sst2 \\
        --dataset_dir GLUE_data --output_dir runs/glue/HASH/sst2

The model folder is one written by save_pretrained, e.g. a pretrained FlexiBERTForMaskedLM with its
tokenizer saved beside it: the MLM head is discarded, and a fresh pooler and classifier are trained
(a regression head for STS-B). Data come from the hub, from GLUE TSVs (--glue_dir) or from the output
of tokenize_glue_datasets.py (--dataset_dir); batches are padded to their longest input. The defaults
are the paper's GPU recipe. The final model is evaluated on the dev set(s) (MNLI: matched and
mismatched); --load_best_model_at_end instead evaluates every epoch and keeps the best epoch, so that
dev both selects and scores the model (an optimistic score).

Writes <output_dir>/results.json (metrics, task score 0-100, steps, wall time, parameter count).
Re-running the command resumes from the last checkpoint; a finished run is not redone.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from pathlib import Path

import torch
from datasets import DatasetDict, load_from_disk
from transformers import (
    AutoConfig,
    DataCollatorWithPadding,
    EvalPrediction,
    PreTrainedTokenizerBase,
    Trainer,
    TrainingArguments,
    set_seed,
)
from transformers.trainer_utils import get_last_checkpoint
from transformers.utils import logging as hf_logging

from flexibert.data.glue import TOKENIZED_COLUMNS, GlueError, GlueTask, get_task, load_glue, tokenize_glue
from flexibert.data.glue_metrics import compute_metrics, split_score, task_score
from flexibert.data.tokenization import load_tokenizer
from flexibert.models.modeling_flexibert import FlexiBERTForSequenceClassification
from flexibert.training.common import CheckpointOnSignal, cpu_torchrun, is_main_process
from flexibert.utils.cli import HelpFormatter
from flexibert.utils.files import write_json_atomic

RESULTS_FILE = "results.json"
TOKENIZATION_FILE = "tokenization.json"  # written by tokenize_glue_datasets.py beside each tokenised task
HYPERPARAMETERS = ("learning_rate", "per_device_train_batch_size", "gradient_accumulation_steps", "num_train_epochs", "max_steps",
                   "max_seq_length", "weight_decay", "warmup_ratio", "seed", "max_train_samples", "max_eval_samples")


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """Model, data and training flags, shared with glue_score.py (which fine-tunes every task with them)."""
    source = parser.add_argument_group("model and data")
    source.add_argument("--model_name_or_path", required=True,
                        help="saved FlexiBERT model folder (config.json and weights), e.g. a pretrained FlexiBERTForMaskedLM")
    source.add_argument("--tokenizer", default=None, help="tokenizer folder (default: the model folder)")
    data = source.add_mutually_exclusive_group()
    data.add_argument("--glue_dir", default=None,
                      help="folder of GLUE TSVs: <TASK>/train.tsv and dev.tsv (MNLI: dev_matched.tsv, dev_mismatched.tsv); "
                           "default: download from the hub")
    data.add_argument("--dataset_dir", default=None, help="output folder of tokenize_glue_datasets.py (holds <task>/)")
    source.add_argument("--cache_dir", default=None, help="datasets cache folder for hub downloads (default: the HF cache)")
    train = parser.add_argument_group("training (defaults: the paper's values)")
    train.add_argument("--learning_rate", type=float, default=2e-5, help="peak AdamW learning rate (linear decay)")
    train.add_argument("--per_device_train_batch_size", type=int, default=64, help="training batch size per device")
    train.add_argument("--per_device_eval_batch_size", type=int, default=128, help="evaluation batch size per device")
    train.add_argument("--gradient_accumulation_steps", type=int, default=1, help="batches per optimizer step")
    train.add_argument("--num_train_epochs", type=float, default=5.0, help="training epochs")
    train.add_argument("--max_steps", type=int, default=-1, help="optimizer steps; when > 0 it overrides --num_train_epochs")
    train.add_argument("--max_seq_length", type=int, default=128, help="truncate inputs to this many tokens")
    train.add_argument("--weight_decay", type=float, default=0.01, help="AdamW weight decay")
    train.add_argument("--warmup_ratio", type=float, default=0.0, help="fraction of the steps with linear learning-rate warm-up")
    train.add_argument("--seed", type=int, default=42, help="seed of the classifier's initialisation and of data shuffling")
    train.add_argument("--max_train_samples", type=int, default=None, help="train on the first N examples only (quick runs)")
    train.add_argument("--max_eval_samples", type=int, default=None, help="evaluate on the first N examples of each dev set")
    train.add_argument("--load_best_model_at_end", action="store_true",
                       help="evaluate on dev every epoch and score the best epoch's model (dev then selects and scores: optimistic)")
    train.add_argument("--bf16", action="store_true", help="bfloat16 mixed precision (CUDA GPUs only)")
    train.add_argument("--fp16", action="store_true", help="float16 mixed precision (CUDA GPUs only)")
    train.add_argument("--logging_steps", type=int, default=50, help="log the training loss every N steps")
    train.add_argument("--save_steps", type=int, default=500, help="checkpoint every N steps; a re-run resumes from the last one")
    train.add_argument("--save_total_limit", type=int, default=2, help="checkpoints kept while training")
    train.add_argument("--keep_checkpoints", action="store_true", help="keep the checkpoints once the run has finished")
    train.add_argument("--save_model", action="store_true", help="save the fine-tuned model and tokenizer in the output folder")
    train.add_argument("--dataloader_num_workers", type=int, default=0, help="data loading worker processes")
    train.add_argument("--overwrite_output_dir", action="store_true",
                       help="start over: delete the results and checkpoints of an earlier run in the output folder")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--task_name", required=True, help="GLUE task: cola sst2 mrpc stsb qqp mnli qnli rte wnli")
    parser.add_argument("--output_dir", required=True, help="folder for checkpoints and results.json")
    add_common_args(parser)
    return parser.parse_args(argv)


def _check_args(args: argparse.Namespace) -> None:
    if (args.bf16 or args.fp16) and not torch.cuda.is_available():
        raise GlueError("--bf16/--fp16 need a CUDA GPU and none is visible; drop the flag to train in float32")
    if args.bf16 and args.fp16:
        raise GlueError("--bf16 and --fp16 exclude each other; pick one")
    if args.max_steps <= 0 and args.num_train_epochs <= 0:
        raise GlueError("nothing to train: give --num_train_epochs > 0 or --max_steps > 0")
    if not 0 <= args.warmup_ratio < 1:
        raise GlueError(f"--warmup_ratio {args.warmup_ratio} must be in [0, 1)")
    for flag in ("max_seq_length", "per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps",
                 "save_steps", "logging_steps", "max_train_samples", "max_eval_samples"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise GlueError(f"--{flag} {value} must be at least 1")


def _load_tokenizer(path: str) -> PreTrainedTokenizerBase:
    try:
        return load_tokenizer(path)
    except (OSError, ValueError) as err:
        raise GlueError(f"{err}\n--tokenizer defaults to the model folder; pass --tokenizer DIR when the tokenizer is elsewhere") from err


def _load_model(path: str, task: GlueTask) -> FlexiBERTForSequenceClassification:
    """The saved encoder with a fresh pooler and classifier for the task (an MLM head, if any, is dropped)."""
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise GlueError(f"--model_name_or_path {path}: cannot read a model config ({err}); give a folder written by "
                        "save_pretrained (config.json and model.safetensors), e.g. the output of pretrain_flexibert.py") from err
    if config.model_type != "flexibert":
        raise GlueError(f"--model_name_or_path {path} holds a {config.model_type!r} model, not FlexiBERT; "
                        "convert BERT checkpoints with flexibert/save_pretrained_models.py first")
    labels = {"num_labels": task.num_labels}
    if not task.is_regression:
        labels["id2label"] = dict(enumerate(task.label_names))
        labels["label2id"] = {name: i for i, name in enumerate(task.label_names)}
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # transformers' table of missing/unexpected keys; summarised below instead
    try:
        model, info = FlexiBERTForSequenceClassification.from_pretrained(path, ignore_mismatched_sizes=True, output_loading_info=True,
                                                                         **labels)
    finally:
        hf_logging.set_verbosity(verbosity)
    fresh = sorted(info["missing_keys"]) + sorted(key for key, *_ in info["mismatched_keys"])
    untrained = [key for key in fresh if not key.startswith(("classifier.", "bert.pooler."))]
    if untrained:
        raise GlueError(f"{path} lacks encoder weights ({', '.join(untrained[:3])}, ...): fine-tuning would start from random "
                        "weights; give a folder saved from a FlexiBERT model")
    new = sorted({key.split(".")[1] if key.startswith("bert.") else key.split(".")[0] for key in fresh})
    dropped = sorted({"the MLM head" if key.startswith("cls.") else key.split(".")[0] for key in info["unexpected_keys"]})
    log(f"{task.name}: loaded the encoder from {path}; new: {', '.join(new) or 'nothing'}"
        + (f"; dropped: {', '.join(dropped)}" if dropped else ""))
    return model


def _check_compatible(model: FlexiBERTForSequenceClassification, tokenizer: PreTrainedTokenizerBase, max_length: int) -> None:
    config = model.config
    if len(tokenizer) > config.vocab_size or tokenizer.pad_token_id != config.pad_token_id:
        raise GlueError(f"the tokenizer (size {len(tokenizer)}, pad id {tokenizer.pad_token_id}) does not match the model "
                        f"(vocab_size {config.vocab_size}, pad_token_id {config.pad_token_id}); use the tokenizer the model "
                        "was pretrained with (--tokenizer)")
    if max_length > config.max_position_embeddings:
        raise GlueError(f"sequences of up to {max_length} tokens exceed the model's max_position_embeddings "
                        f"{config.max_position_embeddings}; lower --max_seq_length")


def _subset(data: DatasetDict, task: GlueTask, args: argparse.Namespace) -> DatasetDict:
    """The first --max_train_samples / --max_eval_samples examples (deterministic, so a resumed run sees the same data)."""
    limits = {"train": args.max_train_samples, **dict.fromkeys(task.validation_splits, args.max_eval_samples)}
    return DatasetDict({split: data[split] if limit is None else data[split].select(range(min(limit, len(data[split]))))
                        for split, limit in limits.items()})


def _load_tokenized(dataset_dir: str, task: GlueTask, tokenizer: PreTrainedTokenizerBase, max_length: int) -> tuple[DatasetDict, int]:
    """A task saved by tokenize_glue_datasets.py in ``dataset_dir/<task>/``; returns it and the length it was truncated to."""
    folder = Path(dataset_dir) / task.name
    meta_path = folder / TOKENIZATION_FILE
    if not (folder / "dataset_dict.json").is_file() or not meta_path.is_file():
        raise GlueError(f"--dataset_dir {dataset_dir}: no tokenised {task.name} dataset in {folder}; make it with "
                        f"`python flexibert/tokenize_glue_datasets.py --tokenizer DIR --tasks {task.name} --output_dir {dataset_dir}`")
    meta = json.loads(meta_path.read_text())
    if meta["task"] != task.name:
        raise GlueError(f"{folder} holds task {meta['task']!r}, not {task.name!r}")
    if (meta["vocab_size"], meta["pad_token_id"]) != (len(tokenizer), tokenizer.pad_token_id):
        raise GlueError(f"{folder} was tokenised with another tokenizer ({meta['tokenizer']}: size {meta['vocab_size']}, pad id "
                        f"{meta['pad_token_id']}) than this one (size {len(tokenizer)}, pad id {tokenizer.pad_token_id}); "
                        "re-run tokenize_glue_datasets.py with the model's tokenizer")
    data = load_from_disk(str(folder))
    for split in ("train", *task.validation_splits):
        if split not in data or not set(TOKENIZED_COLUMNS) <= set(data[split].column_names):
            raise GlueError(f"{folder}: expected split {split!r} with columns {', '.join(TOKENIZED_COLUMNS)}; "
                            "re-run tokenize_glue_datasets.py")
    if meta["max_seq_length"] != max_length:
        log(f"note: {folder} was tokenised with max_seq_length {meta['max_seq_length']}; --max_seq_length {max_length} "
            "does not apply to it")
    return data, meta["max_seq_length"]


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def log(message: str) -> None:
    """Print once: on the process that writes files, not on every rank under torchrun."""
    if is_main_process():
        print(message)


def _clear_checkpoints(output: Path) -> None:
    for checkpoint in output.glob("checkpoint-*"):
        shutil.rmtree(checkpoint, ignore_errors=True)


def finetune(args: argparse.Namespace) -> dict:
    """Fine-tune one task and evaluate it; returns the results written to results.json (a finished run's, if there is one)."""
    start = time.perf_counter()
    task = get_task(args.task_name)
    _check_args(args)
    output = Path(args.output_dir)
    results_path = output / RESULTS_FILE
    if args.overwrite_output_dir:
        if is_main_process():
            results_path.unlink(missing_ok=True)
            _clear_checkpoints(output)
    elif results_path.is_file():
        log(f"{task.name}: already finished, keeping {results_path} (pass --overwrite_output_dir to redo it)")
        return json.loads(results_path.read_text())
    set_seed(args.seed)
    model = _load_model(args.model_name_or_path, task)
    tokenizer = _load_tokenizer(args.tokenizer or args.model_name_or_path)
    if args.dataset_dir:
        data, max_length = _load_tokenized(args.dataset_dir, task, tokenizer, args.max_seq_length)
        data = _subset(data, task, args)
    else:
        data, max_length = _subset(load_glue(task, args.glue_dir, args.cache_dir), task, args), args.max_seq_length
    _check_compatible(model, tokenizer, max_length)
    if not args.dataset_dir:
        data = tokenize_glue(data, task, tokenizer, max_length)

    best = args.load_best_model_at_end
    training_args = TrainingArguments(
        output_dir=str(output),
        learning_rate=args.learning_rate,
        per_device_train_batch_size=args.per_device_train_batch_size,
        per_device_eval_batch_size=args.per_device_eval_batch_size,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        num_train_epochs=args.num_train_epochs,
        max_steps=args.max_steps,
        weight_decay=args.weight_decay,
        warmup_steps=args.warmup_ratio,  # a float below 1 is a fraction of the training steps
        seed=args.seed,
        bf16=args.bf16,
        fp16=args.fp16,
        logging_steps=args.logging_steps,
        save_strategy="epoch" if best else "steps",
        save_steps=args.save_steps,
        save_total_limit=args.save_total_limit,
        eval_strategy="epoch" if best else "no",
        load_best_model_at_end=best,
        metric_for_best_model=f"eval_{task.validation_splits[0]}_score" if best else None,
        greater_is_better=True,
        dataloader_num_workers=args.dataloader_num_workers,
        dataloader_pin_memory=torch.cuda.is_available(),
        use_cpu=cpu_torchrun(),
        ddp_find_unused_parameters=False,  # the pooler and classifier are used; the MLM head is dropped
        report_to="none",
    )

    def metrics_of(prediction: EvalPrediction) -> dict[str, float]:
        logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        metrics = compute_metrics(task, logits, prediction.label_ids)
        return {**metrics, "score": split_score(task, metrics)}

    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=data["train"],
        eval_dataset={split: data[split] for split in task.validation_splits} if best else None,
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=metrics_of,
    )
    last = get_last_checkpoint(str(output)) if output.is_dir() else None
    if last:
        log(f"{task.name}: resuming from {last}")
    with CheckpointOnSignal() as stopper:
        trainer.add_callback(stopper)
        train_result = trainer.train(resume_from_checkpoint=last)
    stopper.exit_if_stopped(trainer.state.global_step, output)

    evaluated = "best epoch's model (by dev score)" if best else "final model"
    log(f"{task.name}: evaluating the {evaluated} after {trainer.state.global_step} steps on {', '.join(task.validation_splits)}")
    metrics = {}
    for split in task.validation_splits:
        raw = trainer.evaluate(eval_dataset=data[split], metric_key_prefix="eval")
        metrics[split] = {key.removeprefix("eval_"): _finite(value) for key, value in raw.items()
                          if key not in ("epoch", "eval_runtime", "eval_samples_per_second", "eval_steps_per_second")}
        metrics[split]["samples"] = len(data[split])
    score = task_score(task, metrics)
    results = {
        "task": task.name,
        "model_name_or_path": str(args.model_name_or_path),
        "score": score,
        "metrics": metrics,
        "evaluated_model": "best epoch" if best else "final",
        "global_step": trainer.state.global_step,
        "epochs": _finite(trainer.state.epoch),
        "train_loss": _finite(train_result.training_loss),
        "train_samples": len(data["train"]),
        "parameters": sum(p.numel() for p in model.parameters()),
        "encoder_parameters": sum(p.numel() for p in model.bert.parameters()),
        "wall_time_s": round(time.perf_counter() - start, 2),
        "hyperparameters": {name: getattr(args, name) for name in HYPERPARAMETERS},
    }
    if args.save_model:
        trainer.save_model(str(output))
    if is_main_process():
        write_json_atomic(results_path, results)
        if not args.keep_checkpoints:
            _clear_checkpoints(output)
        shown = ", ".join(f"{split} {name} {value:.4f}" for split, values in metrics.items() for name, value in values.items()
                          if name in ("accuracy", "f1", "matthews_correlation", "pearson", "spearman"))
        print(f"{task.name}: score {score:.2f} ({shown}) after {trainer.state.global_step} steps in {results['wall_time_s']:.0f}s; "
              f"results in {results_path}")
    return results


