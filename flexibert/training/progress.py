"""How far a training stage has got, in a tiny file beside its checkpoints, for whoever watches the job from elsewhere.

A search's jobs run in other processes (or on other machines under SLURM) and log to files; the
controller's console would be silent for minutes per model. :class:`ProgressFile` is a Trainer
callback that keeps ``<output_dir>/progress.json`` up to date (at most about once a second, written
atomically so a reader never sees half a file):

    {"stage": "pretraining", "step": 80, "total": 150, "elapsed": 41.7, "eta": 36.5, "updated": 1716.., "done": false}

``elapsed`` and ``eta`` are seconds of this process's training (a resumed run counts from where it
resumed); ``eta`` is None until a step has been timed. flexibert/search/progress.py reads these files.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from flexibert.utils.files import write_json_atomic

PROGRESS_FILE = "progress.json"


def read_progress(path: str | Path) -> dict | None:
    """The progress a job last wrote at ``path``, or None when there is none (or it is not a progress record)."""
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    wanted = {"stage": str, "step": int, "total": int, "updated": (int, float), "eta": (int, float, type(None))}
    if not isinstance(record, dict) or any(not isinstance(record.get(key), kind) for key, kind in wanted.items()):
        return None
    return record


class ProgressFile(TrainerCallback):
    """Writes ``<output_dir>/progress.json`` as training goes: stage, step, total, elapsed, eta (see the module docstring).

    Only the main process writes (under torchrun every rank runs the callback). ``min_interval`` limits the writes:
    an fsync per optimizer step would slow tiny models, and nobody reads faster than every few seconds.
    """

    def __init__(self, output_dir: str | Path, stage: str, min_interval: float = 1.0) -> None:
        self.path = Path(output_dir) / PROGRESS_FILE
        self.stage, self.min_interval = stage, min_interval
        self._began = time.monotonic()
        self._start_step = 0
        self._last_write = float("-inf")
        self._done = False  # training ended: the evaluation after it logs too, and must not undo "done"

    def record(self, state: TrainerState) -> dict:
        """What progress.json holds now: the ETA extrapolates this process's steps per second to the steps left."""
        elapsed = time.monotonic() - self._began
        total = max(int(state.max_steps or 0), 0)
        steps_here = state.global_step - self._start_step
        eta = None
        if self._done:
            eta = 0.0
        elif steps_here > 0 and total:
            eta = round(max(total - state.global_step, 0) * elapsed / steps_here, 1)
        return {"stage": self.stage, "step": int(state.global_step), "total": total, "elapsed": round(elapsed, 1), "eta": eta,
                "updated": round(time.time(), 3), "done": self._done}

    def _write(self, state: TrainerState, force: bool = False) -> None:
        """Write the record if this is the main process and the last write is at least ``min_interval`` old (or ``force``)."""
        now = time.monotonic()
        if not state.is_world_process_zero or (not force and now - self._last_write < self.min_interval):
            return
        self._last_write = now
        try:
            write_json_atomic(self.path, self.record(state))
        except OSError:  # progress is only shown on a console: a full disk must not stop the training
            pass

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs) -> None:
        """The clock starts here; a resumed run's state already holds the checkpoint's step, so its ETA counts only new steps."""
        self._began, self._start_step, self._done = time.monotonic(), state.global_step, False
        self._write(state, force=True)

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs) -> None:
        self._write(state)

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs) -> None:
        self._write(state)

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs) -> None:
        """The last record says the stage is done (a stop on a signal ends training too, but short of its total)."""
        self._done = state.global_step >= state.max_steps
        self._write(state, force=True)
