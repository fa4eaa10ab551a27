"""Per-model progress of a search's running jobs on the controller's console: stage, step/total and ETA.

Each job's training stages keep a ``progress.json`` in their output folders (flexibert/training/progress.py):
``models/<hash>/pretrained/`` while pretraining, ``models/<hash>/glue/<task>/`` while fine-tuning. The run
folder is shared with the jobs (local subprocesses, or SLURM nodes on a shared filesystem), so the
controller needs nothing from the executor: it calls :meth:`ProgressBoard.show` with the models in
flight while it waits between polls, and :meth:`ProgressBoard.hide` before it prints again.

On a terminal each running model gets a tqdm bar; otherwise (a log file, a pipe) a line per model at
most every ten seconds (``LineConsole.interval``), and at once when its stage changes.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TextIO

from tqdm.auto import tqdm

from flexibert.search.layout import ModelLayout, RunLayout
from flexibert.training.progress import PROGRESS_FILE, read_progress

STALE_S = 120  # a job that has not written its progress for this long is shown with the age of what it wrote


def duration(seconds: float) -> str:
    """``37s``, ``4m05s``, ``2h03m``: short enough for a console line."""
    seconds = max(int(round(seconds)), 0)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


@dataclass(frozen=True)
class JobProgress:
    """What one running model's job last reported: its stage (with the task's place among the tasks) and how far it got."""

    model_hash: str
    stage: str
    step: int
    total: int
    eta: float | None  # seconds left, as of now
    age: float  # seconds since the job wrote it
    done: bool

    def outlook(self) -> str:
        """``ETA 37s``, ``done, evaluating``, with the age of the report when the job has been quiet for long."""
        when = "done, evaluating" if self.done else f"ETA {duration(self.eta)}" if self.eta is not None else "ETA unknown"
        return when + (f"; no update for {duration(self.age)}" if self.age > STALE_S else "")

    def describe(self) -> str:
        """One console line: ``3f2a1b9c0d12 pretraining: step 80/150 (53%), ETA 37s``."""
        share = f" ({100 * self.step / self.total:.0f}%)" if self.total else ""
        return f"{self.model_hash[:12]} {self.stage}: step {self.step}/{self.total}{share}, {self.outlook()}"


def model_progress(model: ModelLayout, tasks: list[str] | None = None, now: float | None = None) -> JobProgress | None:
    """The newest progress a model's job wrote (pretraining or a fine-tuning task), None before its training started.

    With the run's ``tasks``, a fine-tuning stage says which task of how many it is (finished tasks have results.json).
    """
    now = time.time() if now is None else now
    found = [(path, record) for path in (model.pretrained / PROGRESS_FILE, *sorted(model.glue.glob(f"*/{PROGRESS_FILE}")))
             if (record := read_progress(path)) is not None]
    if not found:
        return None
    path, record = max(found, key=lambda item: float(item[1].get("updated") or 0))
    stage = record["stage"]
    if tasks and path.parent.parent == model.glue:
        finished = sum(1 for done in model.glue.glob("*/results.json") if done.parent != path.parent)
        stage += f" (task {min(finished + 1, len(tasks))} of {len(tasks)})"
    age = max(now - float(record.get("updated") or now), 0.0)
    eta = record.get("eta")
    eta = max(float(eta) - age, 0.0) if isinstance(eta, (int, float)) else None
    return JobProgress(model.root.name, stage, record["step"], record["total"], eta, age, bool(record.get("done")))


class LineConsole:
    """Progress as plain lines (a log file, a pipe): per model at most one line every ``interval`` seconds, and at once when
    its stage changes; nothing when nothing moved."""

    def __init__(self, stream: TextIO | None = None, interval: float = 10.0) -> None:
        self.stream, self.interval = stream, interval
        self._shown: dict[str, tuple[float, str, int]] = {}  # model -> (when printed, stage, step)

    def update(self, progress: JobProgress) -> None:
        when, stage, step = self._shown.get(progress.model_hash, (float("-inf"), None, None))
        now = time.monotonic()
        if stage == progress.stage and (step == progress.step or now - when < self.interval):
            return
        self._shown[progress.model_hash] = (now, progress.stage, progress.step)
        print(f"  {progress.describe()}", file=self.stream or sys.stdout, flush=True)

    def drop(self, model_hash: str) -> None:
        self._shown.pop(model_hash, None)

    def hide(self) -> None:
        """Lines stay where they are printed."""


class BarConsole:
    """Progress as one tqdm bar per running model on a terminal; the bars are cleared while the controller prints."""

    FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n}/{total}{postfix}"  # the job's own ETA, not tqdm's rate of our polls

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream
        self._bars: dict[str, tuple[tqdm, int]] = {}  # model -> (its bar, the bar's line below the cursor)

    def update(self, progress: JobProgress) -> None:
        if progress.model_hash not in self._bars:
            taken = {line for _, line in self._bars.values()}
            line = min(set(range(len(taken) + 1)) - taken)  # the first free line: bars of ended jobs free theirs
            self._bars[progress.model_hash] = (tqdm(total=progress.total, initial=progress.step, desc=self.title(progress),
                                                    position=line, leave=False, dynamic_ncols=True, bar_format=self.FORMAT,
                                                    file=self.stream or sys.stderr), line)
        bar = self._bars[progress.model_hash][0]
        bar.total, bar.n = progress.total, progress.step
        bar.set_description_str(self.title(progress), refresh=False)
        bar.set_postfix_str(progress.outlook(), refresh=False)
        bar.refresh()

    @staticmethod
    def title(progress: JobProgress) -> str:
        return f"{progress.model_hash[:12]} {progress.stage}"

    def drop(self, model_hash: str) -> None:
        if model_hash in self._bars:
            self._bars.pop(model_hash)[0].close()

    def hide(self) -> None:
        for bar, _ in self._bars.values():
            bar.clear()


class ProgressBoard:
    """The progress of the models being trained, on the controller's console (a bar on a terminal, else lines).

    The controller shows it while it waits for its jobs (``show`` with the models in flight, ``hide`` before it
    prints again). It reads the progress.json files the jobs write into the run folder, which is shared with
    every executor's jobs (local processes or SLURM nodes). Progress is only shown: a file that cannot be read is
    skipped, never an error that would stop the search.
    """

    def __init__(self, run_dir: str, console: LineConsole | BarConsole | None = None) -> None:
        self.run = RunLayout(run_dir)
        self.console = console  # chosen at the first show, when the controller's output is where it will stay
        self._showing: set[str] = set()
        self._tasks: list[str] | None = None

    def show(self, model_hashes: Iterable[str]) -> None:
        """Show the progress of ``model_hashes`` (the models in flight); forget models no longer in flight."""
        if self.console is None:  # bars only when both streams are a terminal (a quiet run sends stdout to a log)
            self.console = BarConsole() if sys.stdout.isatty() and sys.stderr.isatty() else LineConsole()
        models = list(model_hashes)
        for gone in self._showing - set(models):
            self.console.drop(gone)
        self._showing = set(models)
        tasks = self._run_tasks()
        for model_hash in models:
            progress = model_progress(self.run.model(model_hash), tasks)
            if progress is not None:
                self.console.update(progress)

    def hide(self) -> None:
        if self.console is not None:
            self.console.hide()

    def _run_tasks(self) -> list[str] | None:
        """The run's fine-tuning tasks (job_config.json), read once."""
        if self._tasks is None:
            try:
                self._tasks = list(json.loads(self.run.job_config.read_text())["tasks"])
            except (OSError, ValueError, KeyError, TypeError):
                return None
        return self._tasks
