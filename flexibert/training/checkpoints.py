"""A run's checkpoints: finding them, resuming from the right one, clearing them, and saving one when the job is told to stop.

Every recipe resumes the same way: a re-run of the same command continues from the last checkpoint
in its output folder, but only if that checkpoint is of the same model (its ``config.json`` holds
the same model dict); a folder of another model is a settings error, not something to train on.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import threading
from pathlib import Path

import torch
from transformers import TrainerCallback
from transformers.trainer_utils import get_last_checkpoint

from flexibert.models.configuration_flexibert import FlexiBERTConfig
from flexibert.training.settings import ConfigurationError

_CHECKPOINT = re.compile(r"^checkpoint-\d+$")


def checkpoints_in(output_dir: str | Path) -> list[Path]:
    """The Trainer's ``checkpoint-N`` folders in ``output_dir``."""
    output_dir = Path(output_dir)
    return sorted(p for p in output_dir.iterdir() if p.is_dir() and _CHECKPOINT.match(p.name)) if output_dir.is_dir() else []


def resumable_checkpoint(output_dir: str | Path, model_dict: dict) -> str | None:
    """The last checkpoint in ``output_dir`` to resume from, after checking that it belongs to the model of ``model_dict``."""
    if not checkpoints_in(output_dir):
        return None
    checkpoint = get_last_checkpoint(str(output_dir))
    saved = json.loads((Path(checkpoint) / "config.json").read_text()).get("model_dict")
    if saved != FlexiBERTConfig.from_model_dict(model_dict).model_dict:
        raise ConfigurationError(f"{checkpoint} is a checkpoint of a different model ({saved}); use another --output_dir "
                                 "or pass --overwrite_output_dir to start this model from scratch there")
    return checkpoint


def clear_checkpoints(output_dir: str | Path, *files: str) -> None:
    """Delete the checkpoints (and ``files``) in ``output_dir``: a run that starts over, or a finished one that keeps none.

    Missing files are fine: under torchrun every process clears the same folder.
    """
    for checkpoint in checkpoints_in(output_dir):
        shutil.rmtree(checkpoint, ignore_errors=True)
    for name in files:
        (Path(output_dir) / name).unlink(missing_ok=True)


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
