"""Fine-tuning of a saved FlexiBERT model on one GLUE task: the recipe's settings (and flags) and ``finetune``.

The recipe (``FinetuneRecipe``) is shared with GLUE scoring, which fine-tunes every task with it;
a task's settings add the task and its output folder. ``finetune`` resumes from the last checkpoint of
the same model, evaluates the dev set(s) and writes ``results.json`` atomically, last. The stage
script ``flexibert/finetune_flexibert.py`` documents what is trained and how it is scored.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from datasets import DatasetDict
from transformers import DataCollatorWithPadding, EvalPrediction, PreTrainedTokenizerBase, Trainer, set_seed
from transformers.utils import logging as hf_logging

from flexibert.data.glue import GlueTask, get_task, load_glue, load_tokenized_glue, tokenize_glue
from flexibert.data.glue_metrics import compute_metrics, split_score, task_score
from flexibert.models.modeling_flexibert import FlexiBERTForSequenceClassification
from flexibert.training.checkpoints import CheckpointOnSignal, clear_checkpoints, resumable_checkpoint
from flexibert.training.distributed import is_main_process, log
from flexibert.training.model_source import open_tokenizer, saved_model_config
from flexibert.training.progress import ProgressFile
from flexibert.training.results import count_parameters, finite_or_none
from flexibert.training.settings import (
    ConfigurationError,
    TrainerSettings,
    check_at_least_one,
    check_not_negative,
    check_range,
    training_arguments,
)
from flexibert.utils.cli import HelpFormatter, add_flags, from_flags, setting
from flexibert.utils.files import write_json_atomic

T = TypeVar("T")
RESULTS_FILE = "results.json"
# The settings results.json records under "hyperparameters" (per task, and for the GLUE score).
HYPERPARAMETERS = ("learning_rate", "per_device_train_batch_size", "gradient_accumulation_steps", "num_train_epochs", "max_steps",
                   "max_seq_length", "weight_decay", "warmup_ratio", "seed", "max_train_samples", "max_eval_samples")


@dataclass(kw_only=True)
class FinetuneSource:
    """The pretrained model and its tokenizer."""

    model_name_or_path: str = setting(None, "saved FlexiBERT model folder (config.json and weights), e.g. a pretrained "
                                            "FlexiBERTForMaskedLM", required=True)
    tokenizer: str | None = setting(None, "tokenizer folder (default: the model folder)")
    cache_dir: str | None = setting(None, "datasets cache folder for hub downloads (default: the HF cache)")


@dataclass(kw_only=True)
class GlueData:
    """Where the GLUE examples come from (at most one; neither: the hub)."""

    glue_dir: str | None = setting(None, "folder of GLUE TSVs: <TASK>/train.tsv and dev.tsv (MNLI: dev_matched.tsv, "
                                         "dev_mismatched.tsv); default: download from the hub")
    dataset_dir: str | None = setting(None, "output folder of tokenize_glue_datasets.py (holds <task>/)")


@dataclass(kw_only=True)
class FinetuneTraining(TrainerSettings):
    """The Trainer's knobs for fine-tuning, with the paper's fine-tuning recipe as defaults."""

    # The shared knobs, with fine-tuning's defaults and help (weight decay is the same in both recipes).
    per_device_train_batch_size: int = setting(64, "training batch size per device")
    gradient_accumulation_steps: int = setting(1, "batches per optimizer step")
    per_device_eval_batch_size: int = setting(128, "evaluation batch size per device")
    learning_rate: float = setting(2e-5, "peak AdamW learning rate (linear decay)")
    max_steps: int = setting(-1, "optimizer steps; when given (> 0) it overrides --num_train_epochs; -1: not given")
    save_steps: int = setting(500, "checkpoint every N steps; a re-run resumes from the last one")
    save_total_limit: int = setting(2, "checkpoints kept while training")
    logging_steps: int = setting(50, "log the training loss every N steps")
    seed: int = setting(42, "seed of the classifier's initialisation and of data shuffling")
    dataloader_num_workers: int = setting(0, "data loading worker processes")
    bf16: bool = setting(False, "bfloat16 mixed precision (CUDA GPUs only)")
    fp16: bool = setting(False, "float16 mixed precision (CUDA GPUs only)")
    # Fine-tuning's own.
    num_train_epochs: float = setting(5.0, "training epochs")
    max_seq_length: int = setting(128, "truncate inputs to this many tokens")
    warmup_ratio: float = setting(0.0, "fraction of the steps with linear learning-rate warm-up")
    max_train_samples: int | None = setting(None, "train on the first N examples only (quick runs)")
    max_eval_samples: int | None = setting(None, "evaluate on the first N examples of each dev set")
    load_best_model_at_end: bool = setting(False, "evaluate on dev every epoch and score the best epoch's model (dev then selects "
                                                  "and scores: optimistic)")
    keep_checkpoints: bool = setting(False, "keep the checkpoints once the run has finished")
    save_model: bool = setting(False, "save the fine-tuned model and tokenizer in the output folder")
    overwrite_output_dir: bool = setting(False, "start over: delete the results and checkpoints of an earlier run in the output folder")

    def check(self) -> None:
        super().check()
        if self.max_steps != -1 and self.max_steps < 1:  # -1: not given, train for --num_train_epochs
            raise ConfigurationError(f"--max_steps {self.max_steps} must be at least 1 (it then overrides --num_train_epochs); "
                                     "leave the flag out (default -1) to train for --num_train_epochs")
        check_not_negative(self, "num_train_epochs")
        if self.max_steps == -1 and self.num_train_epochs == 0:
            raise ConfigurationError("nothing to train: --num_train_epochs is 0 and --max_steps is not given; "
                                     "give --num_train_epochs > 0 or --max_steps > 0")
        check_range(self, "warmup_ratio", low=0, high=1, high_open=True)
        check_at_least_one(self, "max_seq_length", "max_train_samples", "max_eval_samples")

    def trainer_kwargs(self) -> dict[str, Any]:
        best = self.load_best_model_at_end
        return {**super().trainer_kwargs(), "num_train_epochs": self.num_train_epochs,
                "warmup_steps": self.warmup_ratio,  # a float below 1 is a fraction of the training steps
                "save_strategy": "epoch" if best else "steps", "eval_strategy": "epoch" if best else "no",
                "load_best_model_at_end": best, "greater_is_better": True}


@dataclass(kw_only=True)
class FinetuneRecipe(FinetuneTraining, GlueData, FinetuneSource):
    """How a model is fine-tuned, whichever the task: the settings finetune_flexibert.py and glue_score.py share."""

    def hyperparameters(self) -> dict[str, Any]:
        """What a results file records of the recipe."""
        return {name: getattr(self, name) for name in HYPERPARAMETERS}

    def for_task(self, task_name: str, output_dir: str | Path) -> FinetuneSettings:
        """This recipe applied to one task, run in ``output_dir``."""
        shared = {field.name: getattr(self, field.name) for field in dataclasses.fields(FinetuneRecipe)}
        return FinetuneSettings(**shared, task_name=task_name, output_dir=str(output_dir))


def add_recipe_flags(parser: argparse.ArgumentParser) -> None:
    """The flags of :class:`FinetuneRecipe`, in the help's groups (--glue_dir and --dataset_dir exclude each other)."""
    source = parser.add_argument_group("model and data")
    add_flags(source, FinetuneSource)
    add_flags(source.add_mutually_exclusive_group(), GlueData)
    add_flags(parser.add_argument_group("training (defaults: the paper's values)"), FinetuneTraining)


@dataclass(kw_only=True)
class FinetuneTask:
    """Which task, and where its run goes."""

    task_name: str = setting(None, "GLUE task: cola sst2 mrpc stsb qqp mnli qnli rte wnli", required=True)
    output_dir: str = setting(None, "folder for checkpoints and results.json", required=True)


@dataclass(kw_only=True)
class FinetuneSettings(FinetuneRecipe, FinetuneTask):
    """Everything a fine-tuning run of one task needs: the flags of finetune_flexibert.py."""


def parse_recipe_args(settings_class: type[T], own: type, argv: list[str] | None, description: str | None) -> T:
    """``own``'s flags first, then the recipe's, parsed into ``settings_class``; a malformed flag exits with argparse's usage."""
    parser = argparse.ArgumentParser(description=description, formatter_class=HelpFormatter)
    add_flags(parser, own)
    add_recipe_flags(parser)
    return from_flags(settings_class, parser.parse_args(argv))


def parse_args(argv: list[str] | None = None, description: str | None = None) -> FinetuneSettings:
    """finetune_flexibert.py's flags as settings."""
    return parse_recipe_args(FinetuneSettings, FinetuneTask, argv, description)


def _load_model(path: str, task: GlueTask) -> FlexiBERTForSequenceClassification:
    """The saved encoder with a fresh pooler and classifier for the task (an MLM head, if any, is dropped)."""
    saved_model_config(path, "--model_name_or_path")
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
        raise ConfigurationError(f"{path} lacks encoder weights ({', '.join(untrained[:3])}, ...): fine-tuning would start from "
                                 "random weights; give a folder saved from a FlexiBERT model")
    new = sorted({key.split(".")[1] if key.startswith("bert.") else key.split(".")[0] for key in fresh})
    dropped = sorted({"the MLM head" if key.startswith("cls.") else key.split(".")[0] for key in info["unexpected_keys"]})
    log(f"{task.name}: loaded the encoder from {path}; new: {', '.join(new) or 'nothing'}"
        + (f"; dropped: {', '.join(dropped)}" if dropped else ""))
    return model


def _check_compatible(model: FlexiBERTForSequenceClassification, tokenizer: PreTrainedTokenizerBase, max_length: int) -> None:
    config = model.config
    if len(tokenizer) > config.vocab_size or tokenizer.pad_token_id != config.pad_token_id:
        raise ConfigurationError(f"the tokenizer (size {len(tokenizer)}, pad id {tokenizer.pad_token_id}) does not match the model "
                                 f"(vocab_size {config.vocab_size}, pad_token_id {config.pad_token_id}); use the tokenizer the model "
                                 "was pretrained with (--tokenizer)")
    if max_length > config.max_position_embeddings:
        raise ConfigurationError(f"sequences of up to {max_length} tokens exceed the model's max_position_embeddings "
                                 f"{config.max_position_embeddings}; lower --max_seq_length")


def _subset(data: DatasetDict, task: GlueTask, settings: FinetuneSettings) -> DatasetDict:
    """The first --max_train_samples / --max_eval_samples examples (deterministic, so a resumed run sees the same data)."""
    limits = {"train": settings.max_train_samples, **dict.fromkeys(task.validation_splits, settings.max_eval_samples)}
    return DatasetDict({split: data[split] if limit is None else data[split].select(range(min(limit, len(data[split]))))
                        for split, limit in limits.items()})


def _load_data(task: GlueTask, settings: FinetuneSettings, model: FlexiBERTForSequenceClassification,
               tokenizer: PreTrainedTokenizerBase) -> DatasetDict:
    """The task's examples, tokenised (here, or earlier by tokenize_glue_datasets.py) and checked against the model."""
    if settings.dataset_dir:
        data, max_length = load_tokenized_glue(settings.dataset_dir, task, tokenizer)
        if max_length != settings.max_seq_length:
            log(f"note: {Path(settings.dataset_dir) / task.name} was tokenised with max_seq_length {max_length}; "
                f"--max_seq_length {settings.max_seq_length} does not apply to it")
        _check_compatible(model, tokenizer, max_length)
        return _subset(data, task, settings)
    data = _subset(load_glue(task, settings.glue_dir, settings.cache_dir), task, settings)
    _check_compatible(model, tokenizer, settings.max_seq_length)
    return tokenize_glue(data, task, tokenizer, settings.max_seq_length)


def finetune(settings: FinetuneSettings) -> dict:
    """Fine-tune one task and evaluate it; returns the results written to results.json (a finished run's, if there is one)."""
    start = time.perf_counter()
    task = get_task(settings.task_name)
    settings.check()
    output = Path(settings.output_dir)
    results_path = output / RESULTS_FILE
    if settings.overwrite_output_dir:
        clear_checkpoints(output, RESULTS_FILE)
    elif results_path.is_file():
        log(f"{task.name}: already finished, keeping {results_path} (pass --overwrite_output_dir to redo it)")
        return json.loads(results_path.read_text())
    set_seed(settings.seed)
    model = _load_model(settings.model_name_or_path, task)
    tokenizer = open_tokenizer(settings.tokenizer or settings.model_name_or_path,
                               hint="\n--tokenizer defaults to the model folder; pass --tokenizer DIR when the tokenizer is elsewhere")
    data = _load_data(task, settings, model, tokenizer)
    checkpoint = None if settings.overwrite_output_dir else resumable_checkpoint(output, model.config.model_dict)

    best = settings.load_best_model_at_end
    training_args = training_arguments(settings, output, metric_for_best_model=f"eval_{task.validation_splits[0]}_score" if best else None)

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
    if checkpoint:
        log(f"{task.name}: resuming from {checkpoint}")
    with CheckpointOnSignal() as stopper:
        trainer.add_callback(stopper)
        trainer.add_callback(ProgressFile(output, f"fine-tuning {task.name}"))  # progress.json: what the search's console shows
        train_result = trainer.train(resume_from_checkpoint=checkpoint)
    stopper.exit_if_stopped(trainer.state.global_step, output)

    evaluated = "best epoch's model (by dev score)" if best else "final model"
    log(f"{task.name}: evaluating the {evaluated} after {trainer.state.global_step} steps on {', '.join(task.validation_splits)}")
    metrics = {}
    for split in task.validation_splits:
        raw = trainer.evaluate(eval_dataset=data[split], metric_key_prefix="eval")
        metrics[split] = {key.removeprefix("eval_"): finite_or_none(value) for key, value in raw.items()
                          if key not in ("epoch", "eval_runtime", "eval_samples_per_second", "eval_steps_per_second")}
        metrics[split]["samples"] = len(data[split])
    score = task_score(task, metrics)
    results = {
        "task": task.name,
        "model_name_or_path": str(settings.model_name_or_path),
        "score": score,
        "metrics": metrics,
        "evaluated_model": "best epoch" if best else "final",
        "global_step": trainer.state.global_step,
        "epochs": finite_or_none(trainer.state.epoch),
        "train_loss": finite_or_none(train_result.training_loss),
        "train_samples": len(data["train"]),
        "parameters": count_parameters(model),
        "encoder_parameters": count_parameters(model.bert),
        "wall_time_s": round(time.perf_counter() - start, 2),
        "hyperparameters": settings.hyperparameters(),
    }
    if settings.save_model:
        trainer.save_model(str(output))
    if is_main_process():
        write_json_atomic(results_path, results)
        if not settings.keep_checkpoints:
            clear_checkpoints(output)
        shown = ", ".join(f"{split} {name} {value:.4f}" for split, values in metrics.items() for name, value in values.items()
                          if name in ("accuracy", "f1", "matthews_correlation", "pearson", "spearman"))
        print(f"{task.name}: score {score:.2f} ({shown}) after {trainer.state.global_step} steps in {results['wall_time_s']:.0f}s; "
              f"results in {results_path}")
    return results
