"""Pieces shared by the training scripts (MLM pretraining, GLUE fine-tuning).

They turn command-line flags into a FlexiBERT model and Hugging Face ``TrainingArguments`` the same
way in every script, and write result files atomically: a job killed mid-write (SLURM time limit,
pre-emption) must never leave a half-written ``*_results.json`` that the search would then read.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase, TrainerCallback, TrainingArguments, set_seed
from transformers.trainer_utils import get_last_checkpoint

import flexibert
from embeddings.graph import model_hash as compute_model_hash
from embeddings.library import Library, LibraryFileError
from flexibert.models.modeling_flexibert import FlexiBERTConfig, FlexiBERTForMaskedLM, FlexiBERTPreTrainedModel, parse_model_dict
from flexibert.models.weight_transfer import TransferReport
from flexibert.utils.files import write_json_atomic

__all__ = [  # write_json_atomic lives in io_utils (shared with the GLUE scripts) and is re-exported here
    "BuiltModel", "CheckpointOnSignal", "ConfigurationError", "add_training_arguments", "build_model_from_args", "check_precision",
    "checkpoints_in", "close_distributed", "cpu_torchrun", "is_main_process",
    "count_parameters", "finite_or_none", "is_flexibert_training_output", "load_flexibert_model", "perplexity", "read_model_dict",
    "resolve_model_dict", "resumable_checkpoint", "training_arguments", "write_json_atomic",
]


class ConfigurationError(ValueError):
    """A wrong flag or input file; the message says what is wrong and how to fix it."""


def count_parameters(model: torch.nn.Module) -> int:
    """Number of trainable scalars (what the paper's tables report)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def finite_or_none(value: float | None) -> float | None:
    """A float for a JSON file: NaN and infinity (a diverged run) become null, as JSON has no such numbers."""
    return value if value is not None and math.isfinite(value) else None


def perplexity(loss: float) -> float | None:
    """exp(loss), or None when it overflows or the loss is not finite."""
    try:
        return finite_or_none(math.exp(loss))
    except OverflowError:
        return None


# ---------------------------------------------------------------------------------------------
# Which model: a library hash, an explicit dict, a saved model
# ---------------------------------------------------------------------------------------------


def read_model_dict(text_or_path: str) -> dict:
    """A model dict given on the command line as JSON text (starting with ``{``) or as the path of a JSON file."""
    if text_or_path.lstrip().startswith("{"):
        source, text = "--model_dict", text_or_path
    elif Path(text_or_path).is_file():
        source, text = f"file {text_or_path}", Path(text_or_path).read_text()
    else:
        raise ConfigurationError(f"--model_dict {text_or_path!r} is neither a JSON object nor an existing file")
    try:
        model_dict = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigurationError(
            f"{source} is not valid JSON: {err}; give a JSON object such as "
            '\'{"l": 2, "o": ["sa", "sa"], "h": [128, 128], "n": [2, 2], "f": [[512], [512]], "p": ["sdp", "sdp"]}\''
        ) from None
    if not isinstance(model_dict, dict):
        raise ConfigurationError(f"{source} must hold a JSON object (a model dict), not a {type(model_dict).__name__}")
    try:
        parse_model_dict(model_dict)
    except ValueError as err:
        raise ConfigurationError(f"{source}: {err}") from None
    return model_dict


def resolve_model_dict(model_hash: str | None, dataset_file: str | None, model_dict: str | None) -> tuple[dict, str]:
    """The model dict and its hash, from ``--model_hash`` + ``--dataset_file`` (a graph library) or ``--model_dict``."""
    if (model_hash is None) == (model_dict is None):
        raise ConfigurationError("give exactly one of --model_hash (with --dataset_file) and --model_dict")
    if model_dict is not None:
        parsed = read_model_dict(model_dict)
        return parsed, compute_model_hash(parsed)
    if dataset_file is None:
        raise ConfigurationError("--model_hash needs --dataset_file, the graph library JSON that lists the model "
                                 "(built with embeddings/generate_library.py)")
    try:
        library = Library.load(dataset_file)
    except LibraryFileError as err:
        raise ConfigurationError(str(err)) from None
    if model_hash not in library:
        raise ConfigurationError(f"model {model_hash} is not in {dataset_file} ({len(library)} models); "
                                 "check the hash, or pass the architecture itself with --model_dict")
    return library.model_dict(model_hash), model_hash


def load_flexibert_model(path: str | Path) -> FlexiBERTPreTrainedModel:
    """A saved FlexiBERT model with the class it was saved as (MLM, classification or base), so no head is made up at random."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise ConfigurationError(f"{path} holds no saved model (no config.json); give the --output_dir of a finished "
                                 "pretraining or fine-tuning run")
    model_type = json.loads((path / "config.json").read_text()).get("model_type")
    if model_type != "flexibert":
        raise ConfigurationError(f"{path} holds a {model_type!r} model, not a FlexiBERT one; convert BERT checkpoints "
                                 "with `python flexibert/save_pretrained_models.py --model DIR --output_dir OUT`")
    config = FlexiBERTConfig.from_pretrained(path)
    names = config.architectures or ["FlexiBERTModel"]
    model_class = getattr(flexibert, names[0], None)
    if model_class is None or not issubclass(model_class, FlexiBERTPreTrainedModel):
        raise ConfigurationError(f"{path}/config.json names an unknown architecture {names[0]!r}")
    return model_class.from_pretrained(path)


@dataclass
class BuiltModel:
    """A freshly built model with what the results file records about where it came from."""

    model: FlexiBERTPreTrainedModel
    model_dict: dict
    model_hash: str
    transfer: TransferReport | None = None


def build_model_from_args(
    args: argparse.Namespace,
    tokenizer: PreTrainedTokenizerBase,
    model_class: type[FlexiBERTPreTrainedModel] = FlexiBERTForMaskedLM,
    **config_kwargs: Any,
) -> BuiltModel:
    """Build ``model_class`` for ``args.model_hash``/``args.dataset_file`` or ``args.model_dict`` with the tokenizer's vocabulary.

    The seed is set first, so the same command builds the same initial weights (a resumed or re-run
    job rebuilds exactly the model it started from). With ``args.init_from`` the weights are then
    transferred from that saved FlexiBERT model (``args.transfer_mode``: OD or RP). ``config_kwargs``
    go to ``FlexiBERTConfig`` (e.g. ``num_labels`` for classification).
    """
    model_dict, model_hash = resolve_model_dict(getattr(args, "model_hash", None), getattr(args, "dataset_file", None),
                                                getattr(args, "model_dict", None))
    config = FlexiBERTConfig.from_model_dict(
        model_dict,
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        max_position_embeddings=getattr(args, "max_position_embeddings", FlexiBERTConfig.max_position_embeddings),
        **config_kwargs,
    )
    set_seed(args.seed)
    transfer_mode = getattr(args, "transfer_mode", "RP")
    model = model_class(config, transfer_mode=transfer_mode)
    init_from = getattr(args, "init_from", None)
    if init_from is None:
        return BuiltModel(model, model_dict, model_hash)
    source = load_flexibert_model(init_from)
    if source.config.vocab_size != config.vocab_size:
        raise ConfigurationError(
            f"--init_from {init_from} was trained with a vocabulary of {source.config.vocab_size} tokens but the tokenizer "
            f"has {config.vocab_size}; use the tokenizer it was trained with (it is saved in {init_from})"
        )
    report = model.load_model_from_source(source, seed=args.seed)
    return BuiltModel(model, model_dict, model_hash, report)


# ---------------------------------------------------------------------------------------------
# Flags -> TrainingArguments
# ---------------------------------------------------------------------------------------------


def add_training_arguments(parser: argparse.ArgumentParser, **defaults: Any) -> argparse._ArgumentGroup:
    """Add the optimisation/checkpoint flags every training script has; ``defaults`` override the values given here.

    Returns the argument group, to which a script adds its length flag (``--max_steps`` or
    ``--num_train_epochs``); the script sets the defaults of its recipe, e.g.
    ``add_training_arguments(parser, learning_rate=2e-5, warmup_steps=0)``.
    """
    group = parser.add_argument_group("training (Hugging Face Trainer)")

    def add(flag: str, default: Any, help_text: str, **kwargs: Any) -> None:
        name = flag.lstrip("-")
        group.add_argument(flag, default=defaults.pop(name, default), help=help_text, **kwargs)

    add("--per_device_train_batch_size", 16, "sequences per device and step; global batch = this x "
        "--gradient_accumulation_steps x number of GPUs (processes under torchrun)", type=int)
    add("--gradient_accumulation_steps", 4, "micro-batches accumulated into each optimizer update", type=int)
    add("--per_device_eval_batch_size", 32, "sequences per device when evaluating", type=int)
    add("--learning_rate", 1e-4, "peak learning rate of AdamW", type=float)
    add("--warmup_steps", 10000, "linear warm-up steps, then linear decay to 0", type=int)
    add("--adam_beta1", 0.9, "AdamW beta1", type=float)
    add("--adam_beta2", 0.98, "AdamW beta2", type=float)
    add("--adam_epsilon", 1e-6, "AdamW epsilon", type=float)
    add("--weight_decay", 0.01, "AdamW weight decay", type=float)
    add("--max_grad_norm", 1.0, "gradient clipping norm", type=float)
    add("--save_steps", 500, "save a checkpoint (for resuming) every this many steps", type=int)
    add("--save_total_limit", 2, "checkpoints kept in --output_dir (older ones are deleted)", type=int)
    add("--logging_steps", 500, "log the training loss every this many steps", type=int)
    add("--eval_steps", 0, "evaluate every this many steps; 0: only at the end", type=int)
    add("--seed", 1, "seed of model initialisation, data order and masking", type=int)
    add("--dataloader_num_workers", 0, "data-loading worker processes per device", type=int)
    add("--report_to", "none", "experiment trackers for the Trainer's logs (e.g. tensorboard, wandb) or 'none'")
    add("--bf16", False, "bfloat16 mixed precision (GPU only; Ampere or newer)", action="store_true")
    add("--fp16", False, "float16 mixed precision (GPU only)", action="store_true")
    if defaults:
        raise TypeError(f"add_training_arguments: unknown defaults {sorted(defaults)}")
    return group


def check_precision(bf16: bool, fp16: bool) -> None:
    """Mixed precision only where it helps and works: on a CUDA GPU (bf16 on Ampere or newer)."""
    if bf16 and fp16:
        raise ConfigurationError("choose one of --bf16 and --fp16")
    if (bf16 or fp16) and not torch.cuda.is_available():
        raise ConfigurationError(f"--{'bf16' if bf16 else 'fp16'} needs a CUDA GPU and none is visible; drop the flag to train in fp32")
    if bf16 and not torch.cuda.is_bf16_supported():
        raise ConfigurationError("--bf16 needs an Ampere or newer GPU; use --fp16 on this one")


def is_main_process() -> bool:
    """Whether this process writes files: always without a launcher, rank 0 under torchrun (DDP)."""
    return os.environ.get("RANK", "0") == "0"


def cpu_torchrun() -> bool:
    """torchrun on a machine without GPUs: DDP over CPU processes (gloo), which accelerate only sets up for ``use_cpu``.

    Without it every process trains the whole data set on its own.
    """
    return not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1


def close_distributed() -> None:
    """At the end of a torchrun process: wait for every rank, then tear the process group down.

    Left to interpreter exit, a rank that finishes first can abort in the process group's destructor
    ("terminate called without an active exception"), and torchrun then reports the whole run as failed.
    Call it only where the process ends: accelerate keeps its state, so no training may follow in the process.
    """
    distributed = torch.distributed
    if distributed.is_available() and distributed.is_initialized():
        distributed.barrier()
        distributed.destroy_process_group()


def training_arguments(args: argparse.Namespace, **overrides: Any) -> TrainingArguments:
    """``TrainingArguments`` from the flags of :func:`add_training_arguments` (plus ``output_dir`` and the length flag).

    ``overrides`` set anything else (e.g. ``num_train_epochs`` or ``metric_for_best_model``).
    """
    check_precision(args.bf16, args.fp16)
    names = ["output_dir", "max_steps", "num_train_epochs", "per_device_train_batch_size", "gradient_accumulation_steps",
             "per_device_eval_batch_size", "learning_rate", "warmup_steps", "adam_beta1", "adam_beta2", "adam_epsilon",
             "weight_decay", "max_grad_norm", "save_steps", "save_total_limit", "logging_steps", "seed",
             "dataloader_num_workers", "report_to", "bf16", "fp16"]
    kwargs: dict[str, Any] = {name: getattr(args, name) for name in names if hasattr(args, name)}
    kwargs["output_dir"] = str(kwargs["output_dir"])
    kwargs.update(
        lr_scheduler_type="linear",
        save_strategy="steps",
        logging_strategy="steps",
        eval_strategy="steps" if getattr(args, "eval_steps", 0) else "no",
        eval_steps=getattr(args, "eval_steps", 0) or None,
        dataloader_pin_memory=torch.cuda.is_available(),
        use_cpu=cpu_torchrun(),
        ddp_find_unused_parameters=False,  # FlexiBERT creates no unused parameters (tests/test_model.py checks every op)
    )
    kwargs.update(overrides)
    return TrainingArguments(**kwargs)


_CHECKPOINT = re.compile(r"^checkpoint-\d+$")


def checkpoints_in(output_dir: str | Path) -> list[Path]:
    """The Trainer's ``checkpoint-N`` folders in ``output_dir``."""
    output_dir = Path(output_dir)
    return sorted(p for p in output_dir.iterdir() if p.is_dir() and _CHECKPOINT.match(p.name)) if output_dir.is_dir() else []


def resumable_checkpoint(output_dir: str | Path, model_dict: dict) -> str | None:
    """The last checkpoint in ``output_dir`` to resume from, after checking that it belongs to the same model."""
    if not checkpoints_in(output_dir):
        return None
    checkpoint = get_last_checkpoint(str(output_dir))
    saved = json.loads((Path(checkpoint) / "config.json").read_text()).get("model_dict")
    if saved != FlexiBERTConfig.from_model_dict(model_dict).model_dict:
        raise ConfigurationError(f"{checkpoint} is a checkpoint of a different model ({saved}); use another --output_dir "
                                 "or pass --overwrite_output_dir to start this model from scratch there")
    return checkpoint


def is_flexibert_training_output(path: str | Path) -> bool:
    """Whether a folder looks like the output of one of our training runs (so a re-run may resume or replace it)."""
    path = Path(path)
    return bool(checkpoints_in(path)) or any(path.glob("*_results.json"))


class CheckpointOnSignal(TrainerCallback):
    """On SIGTERM, save a checkpoint after the current optimizer step and stop, so that a resumed run loses (almost) nothing.

    SIGTERM is what SLURM sends every process of a job at a time limit, pre-emption, scancel or requeue,
    what torchrun forwards to its workers, and what the local executor sends on Ctrl-C.
    Use it as a context manager around ``trainer.train()`` and call :meth:`exit_if_stopped` afterwards: a
    stopped run must not go on to evaluate and write results as if it had finished. An earlier handler is
    still called, so the controller of an inline search also learns of the signal. Under torchrun the ranks
    agree after every step (one all-reduce of a flag): the signal reaches them at different steps, and a rank
    that saved alone would hang in the others' next collective.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self.stopped = False
        self._previous = None
        self._active = threading.current_thread() is threading.main_thread()

    def __enter__(self) -> CheckpointOnSignal:
        if self._active:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._active:
            signal.signal(signal.SIGTERM, self._previous)

    def _handle(self, signum: int, frame) -> None:
        self.received = signum
        if callable(self._previous):
            self._previous(signum, frame)

    def _any_rank_received(self, device: torch.device) -> bool:
        received = self.received is not None
        distributed = torch.distributed
        if not (distributed.is_available() and distributed.is_initialized()) or distributed.get_world_size() == 1:
            return received
        flag = torch.tensor([int(received)], device=device)
        distributed.all_reduce(flag, op=distributed.ReduceOp.MAX)
        return bool(flag.item())

    def on_step_end(self, args, state, control, **kwargs):
        if self._any_rank_received(args.device):
            self.stopped = True
            control.should_save = True
            control.should_training_stop = True
        return control

    def exit_if_stopped(self, step: int, output_dir: str | Path) -> None:
        if self.stopped:
            cause = signal.Signals(self.received).name if self.received is not None else "SIGTERM to another process of the run"
            raise SystemExit(f"stopped by {cause}: checkpoint saved at step {step:,} in {output_dir}; "
                             "re-run the same command to resume from it")
