"""MLM pretraining of a FlexiBERT model on a prepared corpus: the settings (and their flags) and ``pretrain``.

``pretrain`` builds the model (warm-started by weight transfer with ``init_from``), resumes from the
last checkpoint of the same model, trains with the Trainer, evaluates with masks drawn from a fixed
seed (so losses compare across models) and writes ``pretrain_results.json`` atomically, last. The
stage script ``flexibert/pretrain_flexibert.py`` documents the recipe; the search's jobs call
``pretrain`` directly with the settings parsed from their flags.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets import DatasetDict, load_from_disk
from transformers import DataCollatorForLanguageModeling, PreTrainedTokenizerBase, Trainer, set_seed

from flexibert.data.pretraining_corpus import read_preparation
from flexibert.training.checkpoints import (
    CheckpointOnSignal,
    checkpoints_in,
    clear_checkpoints,
    is_flexibert_training_output,
    resumable_checkpoint,
)
from flexibert.training.model_source import BuiltModel, ModelSource, build_model, open_tokenizer
from flexibert.training.progress import ProgressFile
from flexibert.training.results import count_parameters, finite_or_none, perplexity
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

RESULTS_FILE = "pretrain_results.json"
COLUMNS = ("input_ids", "special_tokens_mask")
# The settings pretrain_results.json records under "hyperparameters".
HYPERPARAMETERS = ("learning_rate", "warmup_steps", "adam_beta1", "adam_beta2", "adam_epsilon", "weight_decay", "max_grad_norm",
                   "per_device_train_batch_size", "gradient_accumulation_steps", "mlm_probability", "seed", "bf16", "fp16")


@dataclass(kw_only=True)
class PretrainData:
    """The prepared corpus, its tokenizer and how it is masked."""

    tokenizer: str = setting("roberta_tokenizer", "tokenizer folder (save_roberta_tokenizer.py) or hub name")
    dataset_dir: str = setting("tokenized_pretraining_dataset", "output of prepare_pretrain_dataset.py")
    max_seq_length: int = setting(512, "tokens per sequence; must match the prepared dataset")
    mlm_probability: float = setting(0.15, "fraction of tokens masked (dynamically, per batch)")
    max_eval_samples: int | None = setting(None, "evaluate on only the first N validation sequences")


@dataclass(kw_only=True)
class PretrainOutput:
    """Where the run goes, and whether an earlier run there is resumed or replaced."""

    output_dir: str | None = setting(None, "where the model, checkpoints and results go (default: models/pretrained/<hash>)")
    overwrite_output_dir: bool = setting(False, "start from scratch, deleting the checkpoints and results of an earlier run in "
                                                "--output_dir")
    eval_before_training: bool = setting(False, "also evaluate the initial model (random or transferred weights): initial_eval_loss "
                                                "in the results")
    keep_checkpoints: bool = setting(False, "keep the training checkpoints (optimizer state included) once the run has finished; "
                                            "by default a finished run keeps its final model, tokenizer and results only")


@dataclass(kw_only=True)
class PretrainTraining(TrainerSettings):
    """The Trainer's knobs for MLM pretraining: the shared ones (the paper's GPU recipe) and the optimiser's details."""

    warmup_steps: int = setting(10000, "linear warm-up steps, then linear decay to 0")
    adam_beta1: float = setting(0.9, "AdamW beta1")
    adam_beta2: float = setting(0.98, "AdamW beta2")
    adam_epsilon: float = setting(1e-6, "AdamW epsilon")
    max_grad_norm: float = setting(1.0, "gradient clipping norm; 0: no clipping")
    eval_steps: int = setting(0, "evaluate every this many steps; 0: only at the end")
    report_to: str = setting("none", "experiment trackers for the Trainer's logs (e.g. tensorboard, wandb) or 'none'")

    def trainer_kwargs(self) -> dict[str, Any]:
        return {**super().trainer_kwargs(), "warmup_steps": self.warmup_steps, "adam_beta1": self.adam_beta1,
                "adam_beta2": self.adam_beta2, "adam_epsilon": self.adam_epsilon, "max_grad_norm": self.max_grad_norm,
                "report_to": self.report_to, "eval_strategy": "steps" if self.eval_steps else "no", "eval_steps": self.eval_steps or None}

    def check(self) -> None:
        super().check()
        check_at_least_one(self, "max_steps")  # pretraining is counted in steps only (fine-tuning may give epochs instead)
        check_not_negative(self, "warmup_steps", "adam_epsilon", "max_grad_norm", "eval_steps")
        check_range(self, "adam_beta1", "adam_beta2", low=0, high=1, high_open=True)


@dataclass(kw_only=True)
class PretrainSettings(PretrainTraining, PretrainOutput, PretrainData, ModelSource):
    """Everything a pretraining run needs: the flags of pretrain_flexibert.py."""

    def check(self) -> None:
        """The Trainer's settings, then the data's and the model's numbers (before anything is loaded or created)."""
        super().check()
        check_range(self, "mlm_probability", low=0, high=1, low_open=True, high_open=True)
        check_at_least_one(self, "max_seq_length", "max_eval_samples", "max_position_embeddings")
        if self.max_seq_length > self.max_position_embeddings:
            raise ConfigurationError(f"--max_seq_length {self.max_seq_length} exceeds --max_position_embeddings "
                                     f"{self.max_position_embeddings}; lower --max_seq_length or raise --max_position_embeddings")


FLAG_GROUPS = (("model (one of --model_hash and --model_dict)", ModelSource), ("data", PretrainData), ("output", PretrainOutput),
               ("training (Hugging Face Trainer)", PretrainTraining))


def parse_args(argv: list[str] | None = None, description: str | None = None) -> PretrainSettings:
    """pretrain_flexibert.py's flags as settings; a malformed flag exits with argparse's usage message."""
    parser = argparse.ArgumentParser(description=description, formatter_class=HelpFormatter)
    for title, part in FLAG_GROUPS:
        add_flags(parser.add_argument_group(title), part)
    return from_flags(PretrainSettings, parser.parse_args(argv))


def load_pretraining_data(settings: PretrainSettings, tokenizer: PreTrainedTokenizerBase) -> DatasetDict:
    """The prepared dataset, checked against the settings and the tokenizer (a mismatch would train on wrong ids)."""
    path = Path(settings.dataset_dir)
    fix = (f"prepare it with `python flexibert/prepare_pretrain_dataset.py --tokenizer {settings.tokenizer} "
           f"--max_seq_length {settings.max_seq_length} --output_dir {path}`")
    if not (path / "dataset_dict.json").is_file():
        raise ConfigurationError(f"{path} is not a prepared pretraining dataset; {fix}")
    data = load_from_disk(str(path))
    if {"train", "validation"} - set(data) or set(COLUMNS) - set(data["train"].column_names) or not len(data["train"]):
        raise ConfigurationError(f"{path} needs non-empty splits train/validation with columns {', '.join(COLUMNS)}; {fix}")
    length = len(data["train"][0]["input_ids"])
    if length != settings.max_seq_length:
        raise ConfigurationError(f"{path} holds sequences of {length} tokens but --max_seq_length is {settings.max_seq_length}; "
                                 f"pass --max_seq_length {length} or {fix}")
    vocab = read_preparation(path).get("vocab_size")
    if vocab is not None and vocab != len(tokenizer):
        raise ConfigurationError(f"{path} was tokenised with a vocabulary of {vocab} tokens but --tokenizer {settings.tokenizer} has "
                                 f"{len(tokenizer)}; use the tokenizer it was prepared with, or {fix}")
    if settings.max_eval_samples is not None:
        data["validation"] = data["validation"].select(range(min(settings.max_eval_samples, len(data["validation"]))))
    return data


def check_output_dir(output: Path, settings: PretrainSettings) -> None:
    """Refuse to write into a folder that holds something other than an earlier run of this script; clear it on request."""
    if settings.init_from is not None and output.resolve() == Path(settings.init_from).resolve():
        raise ConfigurationError("--output_dir must differ from --init_from (the source model would be overwritten)")
    if settings.overwrite_output_dir:
        clear_checkpoints(output, RESULTS_FILE, "trainer_state.json")
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


def pretrain(settings: PretrainSettings) -> dict:
    """Build, (resume,) train, evaluate and save; returns what pretrain_results.json holds."""
    start = time.perf_counter()
    settings.check()
    tokenizer = open_tokenizer(settings.tokenizer)
    data = load_pretraining_data(settings, tokenizer)
    built: BuiltModel = build_model(settings, tokenizer, settings.seed)
    output = Path(settings.output_dir or Path("models") / "pretrained" / built.model_hash)
    check_output_dir(output, settings)
    if not settings.overwrite_output_dir and (done := finished_results(output, settings.max_steps)) is not None:
        more = "pass a larger --max_steps to continue or " if checkpoints_in(output) else ""  # only a hint: move nothing aside
        print(f"{output} already holds this model pretrained for {done['global_step']:,} steps (eval loss {done['eval_loss']:.4f}); "
              f"nothing to do ({more}pass --overwrite_output_dir to start again)")
        return done
    checkpoint = None if settings.overwrite_output_dir else resumable_checkpoint(output, built.model_dict)
    start_step = int(Path(checkpoint).name.split("-")[1]) if checkpoint else 0

    training_args = training_arguments(settings, output, remove_unused_columns=False)  # keep special_tokens_mask
    global_batch = settings.per_device_train_batch_size * settings.gradient_accumulation_steps * training_args.world_size
    trainer = Trainer(
        model=built.model,
        args=training_args,
        train_dataset=data["train"],
        eval_dataset=data["validation"],
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=True, mlm_probability=settings.mlm_probability),
        processing_class=tokenizer,  # saved with the model and every checkpoint
    )
    parameters = count_parameters(built.model)
    if trainer.is_world_process_zero():
        notes = [f"resuming from {checkpoint}"] if checkpoint else []
        if built.transfer is not None:
            notes.append(f"weights from {settings.init_from} ({settings.transfer_mode}; closeness {built.transfer.closeness:.2f}, "
                         f"{built.transfer.encoder_fraction:.1%} of the encoder and {built.transfer.embedding_fraction:.1%} of the "
                         "embeddings transferred)")
        print(f"pretraining {built.model_hash[:12]} ({parameters:,} parameters) on {len(data['train']):,} sequences of "
              f"{settings.max_seq_length} tokens for {settings.max_steps:,} steps, global batch {global_batch} = "
              f"{settings.per_device_train_batch_size} x {settings.gradient_accumulation_steps} accumulation x {training_args.world_size} "
              f"process(es){''.join('; ' + note for note in notes)}", flush=True)

    initial_loss = evaluate(trainer, settings.seed) if settings.eval_before_training else None
    with CheckpointOnSignal() as stopper:
        trainer.add_callback(stopper)
        trainer.add_callback(ProgressFile(output, "pretraining"))  # progress.json: what the search's console shows
        train_output = trainer.train(resume_from_checkpoint=checkpoint)
    stopper.exit_if_stopped(trainer.state.global_step, output)
    eval_loss = evaluate(trainer, settings.seed)
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
        "max_steps": settings.max_steps,
        "resumed_from_step": start_step if checkpoint else None,
        "train_loss": finite_or_none(train_output.training_loss),
        "train_runtime_s": round(runtime, 3),
        "wall_time_s": round(time.perf_counter() - start, 3),
        "tokens_per_second": round(steps_run * global_batch * settings.max_seq_length / runtime, 1) if runtime > 0 else None,
        "train_tokens": trainer.state.global_step * global_batch * settings.max_seq_length,
        "global_batch_size": global_batch,
        "max_seq_length": settings.max_seq_length,
        "world_size": training_args.world_size,
        "tokenizer": str(settings.tokenizer),
        "vocab_size": len(tokenizer),
        "dataset_dir": str(settings.dataset_dir),
        "init_from": settings.init_from,
        "transfer_mode": settings.transfer_mode if settings.init_from else None,
        "transferred_fraction": built.transfer.scalar_fraction if built.transfer else None,
        "transferred_tensor_fraction": built.transfer.tensor_fraction if built.transfer else None,
        "transferred_encoder_fraction": built.transfer.encoder_fraction if built.transfer else None,
        "transferred_embedding_fraction": built.transfer.embedding_fraction if built.transfer else None,
        "closeness": built.transfer.closeness if built.transfer else None,
        "hyperparameters": {name: getattr(settings, name) for name in HYPERPARAMETERS},
    }
    if trainer.is_world_process_zero():
        write_json_atomic(output / RESULTS_FILE, results)
        if not settings.keep_checkpoints:  # checkpoints exist to resume an interrupted run; a finished one needs none
            clear_checkpoints(output)
        ppl = f"perplexity {results['perplexity']:.1f}" if results["perplexity"] is not None else "diverged"
        print(f"pretrained {built.model_hash[:12]} to step {results['global_step']:,}: eval loss {eval_loss:.4f} ({ppl}), "
              f"{results['tokens_per_second'] or 0:,.0f} tokens/s, {results['wall_time_s']:.0f}s; saved to {output}")
    return results
