"""The settings every training recipe shares, and the one way they become Hugging Face ``TrainingArguments``.

Pretraining and fine-tuning are two recipes on one stack. Each declares its settings as dataclasses
(their fields are its flags, see flexibert/utils/cli.py) that extend :class:`TrainerSettings`; a
recipe redeclares a field to give it its own default and help text. A recipe checks its settings with
``check()`` before it loads anything, so a wrong flag costs no data loading or model building, and
hands them to :func:`training_arguments`, which adds what every run needs (linear decay, checkpoints
by steps, CPU processes under torchrun, DDP without the unused-parameter search) to the recipe's own
Trainer knobs (:meth:`TrainerSettings.trainer_kwargs`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import torch
from transformers import TrainingArguments

from flexibert.training.distributed import cpu_torchrun
from flexibert.utils.cli import setting


class ConfigurationError(ValueError):
    """A wrong flag or input file; the message says what is wrong and how to fix it."""


def check_precision(bf16: bool, fp16: bool) -> None:
    """Mixed precision only where it helps and works: on a CUDA GPU (bf16 on Ampere or newer)."""
    if bf16 and fp16:
        raise ConfigurationError("choose one of --bf16 and --fp16")
    if (bf16 or fp16) and not torch.cuda.is_available():
        raise ConfigurationError(f"--{'bf16' if bf16 else 'fp16'} needs a CUDA GPU and none is visible (--bf16/--fp16 need a CUDA GPU); "
                                 "drop the flag to train in float32")
    if bf16 and not torch.cuda.is_bf16_supported():
        raise ConfigurationError("--bf16 needs an Ampere or newer GPU; use --fp16 on this one")


def _shown(value: Any) -> str:
    """A number as a user would type it: 1e-4 as 0.0001, -1.0 as -1."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return str(int(value))
    return str(value)


def _flag_and_default(settings: object, name: str) -> tuple[str, Any]:
    """The flag of setting ``name`` (``--`` + its flag name) and its default in ``settings``' class."""
    field = next((f for f in dataclasses.fields(settings) if f.name == name), None)
    if field is None:
        return f"--{name}", None
    default = None if field.default is dataclasses.MISSING else field.default
    return f"--{field.metadata.get('flag') or name}", default


def refuse(settings: object, name: str, requirement: str) -> NoReturn:
    """Raise the one-line error of a setting outside its range: the flag, its value, what it must be, and how to fix it."""
    flag, default = _flag_and_default(settings, name)
    fix = f"pass a value {'of ' if requirement.startswith('at ') else ''}{requirement} or leave the flag out"
    if default is not None:
        fix += f" (default {_shown(default)})"
    raise ConfigurationError(f"{flag} {_shown(getattr(settings, name))} must be {requirement}; {fix}")


def check_range(settings: object, *names: str, low: float | None = None, high: float | None = None, low_open: bool = False,
                high_open: bool = False) -> None:
    """Numbers that must be finite and within [low, high] (an open end excludes the bound); None (not given) passes."""
    if low is not None and high is not None:
        requirement = f"in {'(' if low_open else '['}{_shown(low)}, {_shown(high)}{')' if high_open else ']'}"
    elif low is not None:
        requirement = f"greater than {_shown(low)}" if low_open else f"at least {_shown(low)}"
    else:
        requirement = f"less than {_shown(high)}" if high_open else f"at most {_shown(high)}"
    for name in names:
        value = getattr(settings, name)
        if value is None:
            continue
        inside = (math.isfinite(value)
                  and (low is None or (value > low if low_open else value >= low))
                  and (high is None or (value < high if high_open else value <= high)))
        if not inside:
            refuse(settings, name, requirement)


def check_at_least_one(settings: object, *names: str) -> None:
    """Counts that must be positive when given (a flag named like its field)."""
    check_range(settings, *names, low=1)


def check_not_negative(settings: object, *names: str) -> None:
    """Numbers that may be 0 but not below (and not NaN or infinite) when given."""
    check_range(settings, *names, low=0)


MAX_SEED = 2**32 - 1  # numpy's seeds (set_seed seeds Python, NumPy and torch)


@dataclass(kw_only=True)
class TrainerSettings:
    """The Trainer's knobs that every recipe has; the defaults are the paper's pretraining recipe (fine-tuning redeclares its own)."""

    per_device_train_batch_size: int = setting(16, "sequences per device and step; global batch = this x "
                                                   "--gradient_accumulation_steps x number of GPUs (processes under torchrun)")
    gradient_accumulation_steps: int = setting(4, "micro-batches accumulated into each optimizer update")
    per_device_eval_batch_size: int = setting(32, "sequences per device when evaluating")
    learning_rate: float = setting(1e-4, "peak learning rate of AdamW")
    weight_decay: float = setting(0.01, "AdamW weight decay")
    max_steps: int = setting(100_000, "optimizer steps to train for in total")
    save_steps: int = setting(500, "save a checkpoint (for resuming) every this many steps")
    save_total_limit: int = setting(2, "checkpoints kept in --output_dir (older ones are deleted)")
    logging_steps: int = setting(500, "log the training loss every this many steps")
    seed: int = setting(1, "seed of model initialisation, data order and masking")
    dataloader_num_workers: int = setting(0, "data-loading worker processes per device")
    bf16: bool = setting(False, "bfloat16 mixed precision (GPU only; Ampere or newer)")
    fp16: bool = setting(False, "float16 mixed precision (GPU only)")

    def check(self) -> None:
        """Refuse what the Trainer would fail on later, or train on nonsense (a negative learning rate, a batch of 0), or, for
        mixed precision, cannot do on this machine. Numbers only: nothing is read or created. A recipe extends it to its own settings."""
        check_precision(self.bf16, self.fp16)
        check_at_least_one(self, "per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps",
                           "save_steps", "save_total_limit", "logging_steps")
        check_range(self, "learning_rate", low=0, low_open=True)
        check_not_negative(self, "weight_decay", "dataloader_num_workers")
        check_range(self, "seed", low=0, high=MAX_SEED)

    def trainer_kwargs(self) -> dict[str, Any]:
        """These settings as ``TrainingArguments``; a recipe adds its own knobs (warm-up, epochs, evaluation)."""
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(TrainerSettings)}


def training_arguments(settings: TrainerSettings, output_dir: str | Path, **overrides: Any) -> TrainingArguments:
    """The ``TrainingArguments`` of a run: the settings' knobs on what every run needs; ``overrides`` set anything else.

    The settings are checked first (a recipe has done so before loading anything; this guards any other caller).
    """
    settings.check()
    return TrainingArguments(**{
        "output_dir": str(output_dir),
        "lr_scheduler_type": "linear",
        "save_strategy": "steps",
        "logging_strategy": "steps",
        "eval_strategy": "no",
        "report_to": "none",
        "dataloader_pin_memory": torch.cuda.is_available(),
        "use_cpu": cpu_torchrun(),
        "ddp_find_unused_parameters": False,  # FlexiBERT creates no unused parameters (tests/test_model.py checks every op)
        **settings.trainer_kwargs(),
        **overrides,
    })
