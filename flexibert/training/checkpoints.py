"""A run's checkpoints: finding them, resuming from the right one, clearing them, and saving one when the job is told to stop.

Every recipe resumes the same way: a re-run of the same command continues from the last *complete*
checkpoint in its output folder, but only if that checkpoint is of the same model (its ``config.json``
holds the same model dict); a folder of another model is a settings error, not something to train on.

The Trainer writes a checkpoint in place, file by file, so a job killed while saving (SLURM's grace time
after SIGTERM running out, the OOM killer, a node going down) leaves a ``checkpoint-N`` folder that lacks
files, holds empty or cut-short ones, or is empty. Resuming from it fails on every re-run; an earlier
checkpoint is still good. Such a folder is moved aside and the run resumes from the newest complete one.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import struct
import threading
import zipfile
from datetime import datetime
from pathlib import Path

import torch
from transformers import TrainerCallback

from flexibert.models.configuration_flexibert import FlexiBERTConfig
from flexibert.training.settings import ConfigurationError

_CHECKPOINT = re.compile(r"^checkpoint-\d+$")
# Where an incomplete checkpoint goes. The name must not start with "checkpoint-": besides our own pattern,
# the Trainer counts every "checkpoint-*" folder when it deletes old checkpoints (--save_total_limit) and
# would keep a set-aside folder as the newest one in place of a real checkpoint.
_SET_ASIDE = "incomplete-checkpoint-"
# The model weights the Trainer writes: one file, or shards listed in an index (large models).
_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
_WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
# Written only in some runs (mixed precision, the random-number state of each process) and loaded only when there.
_OPTIONAL = re.compile(r"^(scaler\.pt|rng_state(_\d+)?\.pth)$")


def checkpoints_in(output_dir: str | Path) -> list[Path]:
    """The Trainer's ``checkpoint-N`` folders in ``output_dir``."""
    output_dir = Path(output_dir)
    return sorted(p for p in output_dir.iterdir() if p.is_dir() and _CHECKPOINT.match(p.name)) if output_dir.is_dir() else []


def _step(checkpoint: Path) -> int:
    """The step a ``checkpoint-N`` folder was saved at: folder names sort checkpoint-1000 before checkpoint-200."""
    return int(checkpoint.name.split("-")[1])


def _file_problem(path: Path) -> str | None:
    """What is wrong with one file of a checkpoint, or None when it is whole.

    A save cut short leaves a file missing, empty, or ending early. Torch files are zip archives whose
    directory is written last, and a safetensors file declares its length in its header, so both can be
    checked for a cut-short end without loading them.
    """
    if not path.is_file():
        return f"no {path.name}"
    size = path.stat().st_size
    if size == 0:
        return f"{path.name} is empty"
    if path.suffix in (".pt", ".pth", ".bin") and not zipfile.is_zipfile(path):
        return f"{path.name} is cut short"
    if path.suffix == ".safetensors" and _safetensors_length(path) != size:
        return f"{path.name} is cut short"
    if path.suffix == ".json" and _read_json(path) is None:
        return f"{path.name} is cut short"
    return None


def _read_json(path: Path) -> dict | None:
    """A JSON file's object, or None when it is not one (a file cut short while written)."""
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None


def _safetensors_length(path: Path) -> int | None:
    """The length a safetensors file says it has (8-byte header size, JSON header, then the tensors), or None if unreadable."""
    with path.open("rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            return None
        (header_size,) = struct.unpack("<Q", prefix)
        try:
            header = json.loads(handle.read(header_size))
            ends = [entry["data_offsets"][1] for name, entry in header.items() if name != "__metadata__"]
        except (UnicodeDecodeError, json.JSONDecodeError, AttributeError, KeyError, TypeError, IndexError):
            return None  # not a safetensors header: a file cut short or overwritten
    return 8 + header_size + max(ends, default=0)


def _weights_problems(checkpoint: Path) -> list[str]:
    """What is wrong with the model weights: the single file, or the index and every shard it lists."""
    for name in _WEIGHTS:
        if (checkpoint / name).exists():
            problem = _file_problem(checkpoint / name)
            return [problem] if problem else []
    for name in _WEIGHT_INDEXES:
        if (checkpoint / name).exists():
            return _shards_problems(checkpoint / name)
    return [f"no {_WEIGHTS[0]} or {_WEIGHTS[1]}"]


def _shards_problems(index: Path) -> list[str]:
    """What is wrong with a sharded model's index or the shards it lists (the shards are written before the index)."""
    if problem := _file_problem(index):
        return [problem]
    shards = sorted(set(_read_json(index).get("weight_map", {}).values()))
    if not shards:
        return [f"{index.name} lists no shards"]
    return [problem for shard in shards if (problem := _file_problem(index.parent / shard))]


def checkpoint_problems(checkpoint: str | Path) -> list[str]:
    """Why ``trainer.train(resume_from_checkpoint=checkpoint)`` would fail or resume wrongly; empty when it is complete.

    Resuming reads the model's config and weights, the optimizer and learning-rate schedule states, and
    trainer_state.json (the step, the logs, the best checkpoint so far), which the Trainer writes last.
    The scaler and random-number states are loaded only when present, so they may be missing, but a
    present one must be whole: the Trainer would fail on it.
    """
    checkpoint = Path(checkpoint)
    if not checkpoint.is_dir() or not any(checkpoint.iterdir()):
        return ["empty folder"]
    required = [checkpoint / name for name in ("config.json", "trainer_state.json", "optimizer.pt", "scheduler.pt")]
    optional = sorted(path for path in checkpoint.iterdir() if _OPTIONAL.match(path.name))
    return [problem for path in [*required, *optional] if (problem := _file_problem(path))] + _weights_problems(checkpoint)


def resumable_checkpoint(output_dir: str | Path, model_dict: dict) -> str | None:
    """The newest complete checkpoint in ``output_dir``, checked to be of the model of ``model_dict``; None: train from scratch.

    Incomplete checkpoints newer than it are moved aside (see :func:`_set_aside`) and one line on stdout
    names them, what they lack and where the run goes on from, so that a job killed while saving resumes
    instead of failing on every re-run. Under torchrun every process calls this for the same folder; the
    one that moves a checkpoint aside is the one that reports it.
    """
    incomplete: dict[Path, list[str]] = {}
    complete = None
    for checkpoint in sorted(checkpoints_in(output_dir), key=_step, reverse=True):
        try:
            problems = checkpoint_problems(checkpoint)
        except FileNotFoundError:  # another process of the run moved it aside while we looked
            continue
        if not problems:
            complete = checkpoint
            break
        incomplete[checkpoint] = problems
    if complete is not None:
        _check_same_model(complete, model_dict)  # before moving anything: the folder may be another model's
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    moved = {checkpoint: (problems, target) for checkpoint, problems in incomplete.items()
             if (target := _set_aside(checkpoint, stamp)) is not None}
    if moved:
        print(_set_aside_line(output_dir, moved, complete), flush=True)
    return str(complete) if complete is not None else None


def _check_same_model(checkpoint: Path, model_dict: dict) -> None:
    """Refuse to resume another model's checkpoint: the output folder is wrong, training on it would mix two models."""
    saved = _read_json(checkpoint / "config.json").get("model_dict")
    if saved != FlexiBERTConfig.from_model_dict(model_dict).model_dict:
        raise ConfigurationError(f"{checkpoint} is a checkpoint of a different model ({saved}); use another --output_dir "
                                 "or pass --overwrite_output_dir to start this model from scratch there")


def _set_aside(checkpoint: Path, stamp: str) -> Path | None:
    """Rename an incomplete checkpoint to ``incomplete-checkpoint-N-<time>``; None when another process of the run already did.

    Renamed rather than deleted: a rename is atomic, so under torchrun exactly one process succeeds (the
    others find the folder gone) and reports it once, where processes deleting the same folder at once
    would trip over each other's half-deleted files. It also keeps what the cut-short save did write for
    a look. The name is outside what we and the Trainer take for a checkpoint, so it is never resumed and
    never clashes with the ``checkpoint-N`` the resumed run saves at the same step; :func:`clear_checkpoints`
    deletes it with the checkpoints when a run starts over or finishes.
    """
    target = checkpoint.with_name(f"{_SET_ASIDE}{_step(checkpoint)}-{stamp}")
    try:
        checkpoint.rename(target)
    except FileNotFoundError:
        return None
    return target


def _set_aside_line(output_dir: str | Path, moved: dict[Path, tuple[list[str], Path]], complete: Path | None) -> str:
    """The one line that says which checkpoints were incomplete, what they lacked, where they went, and where training goes on."""
    listed = ", ".join(f"{checkpoint.name} ({'; '.join(problems)}) -> {target.name}" for checkpoint, (problems, target) in moved.items())
    outcome = f"resuming from {complete.name}" if complete is not None else "no complete checkpoint left, training from scratch"
    plural = "s" if len(moved) > 1 else ""
    return f"incomplete checkpoint{plural} in {output_dir} (a save cut short) moved aside: {listed}; {outcome}"


def set_aside_in(output_dir: str | Path) -> list[Path]:
    """The incomplete checkpoints moved aside in ``output_dir``."""
    return sorted(p for p in Path(output_dir).glob(f"{_SET_ASIDE}*") if p.is_dir())


def clear_checkpoints(output_dir: str | Path, *files: str) -> None:
    """Delete the checkpoints, incomplete ones moved aside included (and ``files``), in ``output_dir``.

    For a run that starts over, or a finished one that keeps none. Missing files are fine: under torchrun
    every process clears the same folder.
    """
    for checkpoint in [*checkpoints_in(output_dir), *set_aside_in(output_dir)]:
        shutil.rmtree(checkpoint, ignore_errors=True)
    for name in files:
        (Path(output_dir) / name).unlink(missing_ok=True)


def is_flexibert_training_output(path: str | Path) -> bool:
    """Whether a folder looks like the output of one of our training runs (so a re-run may resume or replace it)."""
    path = Path(path)
    return bool(checkpoints_in(path)) or bool(set_aside_in(path)) or any(path.glob("*_results.json"))


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
