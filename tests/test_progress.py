"""Per-model progress of a search on the controller's console: the jobs' progress.json (a Trainer callback) and the board
that the controller shows while it waits (flexibert/search/progress.py)."""

from __future__ import annotations

import io
import sys
import time
from pathlib import Path

import pytest
import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from flexibert.cluster.base import JobRequest
from flexibert.cluster.local import LocalExecutor
from flexibert.search.layout import RunLayout
from flexibert.search.progress import BarConsole, JobProgress, LineConsole, ProgressBoard, duration, model_progress
from flexibert.training.progress import PROGRESS_FILE, ProgressFile, read_progress
from flexibert.utils.files import write_json_atomic

pytestmark = pytest.mark.usefixtures("one_torch_thread")
HASH = "ab" * 32


class Regression(torch.nn.Module):
    """The smallest model the Trainer trains: y = w x, with a loss."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 1)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> dict:
        return {"loss": torch.nn.functional.mse_loss(self.linear(x).squeeze(-1), labels)}


class ReadBack(TrainerCallback):
    """Reads progress.json after every step, as a watching controller would."""

    def __init__(self, path: Path) -> None:
        self.path, self.seen = path, []

    def on_step_end(self, args, state, control, **kwargs) -> None:
        self.seen.append(read_progress(self.path))


def train(output: Path, steps: int, resume: str | None = None) -> tuple[Trainer, ReadBack]:
    data = [{"x": torch.randn(4), "labels": torch.tensor(float(i % 3))} for i in range(64)]
    args = TrainingArguments(output_dir=str(output), max_steps=steps, per_device_train_batch_size=4, save_strategy="steps",
                             save_steps=4, report_to="none", use_cpu=True, logging_steps=2, disable_tqdm=True)
    trainer = Trainer(model=Regression(), args=args, train_dataset=data)
    watcher = ReadBack(output / PROGRESS_FILE)
    trainer.add_callback(ProgressFile(output, "pretraining", min_interval=0))
    trainer.add_callback(watcher)  # after the writer: it reads what this step wrote
    trainer.train(resume_from_checkpoint=resume)
    return trainer, watcher


def test_a_training_run_keeps_its_progress_file_up_to_date(tmp_path):
    trainer, watcher = train(tmp_path / "run", 8)
    steps = [record["step"] for record in watcher.seen]
    assert steps == list(range(1, 9)) and all(r["total"] == 8 and r["stage"] == "pretraining" for r in watcher.seen)
    assert all(r["eta"] is not None and r["eta"] >= 0 and not r["done"] for r in watcher.seen)
    final = read_progress(tmp_path / "run" / PROGRESS_FILE)
    assert final["done"] and final["step"] == final["total"] == 8 and final["eta"] == 0
    time.sleep(0.01)
    trainer.evaluate(trainer.train_dataset)  # the evaluation after training logs too: the stage stays done
    assert read_progress(tmp_path / "run" / PROGRESS_FILE)["done"]
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.startswith(".progress")]  # atomic writes leave no temporaries


def test_a_resumed_run_counts_its_eta_from_where_it_resumed(tmp_path):
    train(tmp_path / "run", 4)
    _, watcher = train(tmp_path / "run", 8, resume=str(tmp_path / "run" / "checkpoint-4"))
    assert [r["step"] for r in watcher.seen] == [5, 6, 7, 8]
    assert read_progress(tmp_path / "run" / PROGRESS_FILE)["done"]


def test_writes_are_throttled(tmp_path):
    """At most one write per min_interval on steps; the end of training is always written."""
    from transformers import TrainerState

    state = TrainerState(max_steps=100)
    progress = ProgressFile(tmp_path, "fine-tuning rte", min_interval=60)
    progress.on_train_begin(None, state, None)
    for step in range(1, 50):
        state.global_step = step
        progress.on_step_end(None, state, None)
    assert read_progress(tmp_path / PROGRESS_FILE)["step"] == 0
    state.global_step = 100
    progress.on_train_end(None, state, None)
    assert read_progress(tmp_path / PROGRESS_FILE) | {"updated": 0, "elapsed": 0} == {
        "stage": "fine-tuning rte", "step": 100, "total": 100, "elapsed": 0, "eta": 0.0, "updated": 0, "done": True}


def write_progress(folder: Path, stage: str, step: int, total: int, eta: float | None, updated: float, done: bool = False) -> None:
    write_json_atomic(folder / PROGRESS_FILE, {"stage": stage, "step": step, "total": total, "elapsed": 1.0, "eta": eta,
                                               "updated": updated, "done": done})


def test_a_model_shows_its_newest_stage_with_the_task_it_is_on(tmp_path):
    run = RunLayout(tmp_path)
    model = run.model(HASH)
    now = 1_000_000.0
    assert model_progress(model, ["cola", "rte"], now) is None  # not started yet
    write_progress(model.pretrained, "pretraining", 150, 150, 0.0, now - 50, done=True)
    write_progress(model.glue / "cola", "fine-tuning cola", 96, 96, 0.0, now - 20, done=True)
    write_json_atomic(model.glue / "cola" / "results.json", {"score": 50})
    write_progress(model.glue / "rte", "fine-tuning rte", 40, 96, 30.0, now - 10)
    (model.glue / "sst2").mkdir()
    (model.glue / "sst2" / PROGRESS_FILE).write_text("not json")  # unreadable: skipped, never an error
    (model.glue / "qnli").mkdir()
    (model.glue / "qnli" / PROGRESS_FILE).write_text('{"stage": "x", "step": 1, "total": 2, "eta": null, "updated": "soon"}')

    progress = model_progress(model, ["cola", "rte"], now)
    assert progress == JobProgress(HASH, "fine-tuning rte (task 2 of 2)", 40, 96, 20.0, 10.0, False)
    assert progress.describe() == f"{HASH[:12]} fine-tuning rte (task 2 of 2): step 40/96 (42%), ETA 20s"
    assert "no update for 10m00s" in model_progress(model, ["cola", "rte"], now + 590).describe()
    assert model_progress(model, None, now).stage == "fine-tuning rte"


def test_durations_read_well():
    assert [duration(s) for s in (0, 37.4, 245, 7380)] == ["0s", "37s", "4m05s", "2h03m"]


def test_lines_are_printed_when_something_moved_at_most_every_interval():
    stream = io.StringIO()
    console = LineConsole(stream, interval=3600)
    for step in (10, 11, 12):
        console.update(JobProgress(HASH, "pretraining", step, 150, 60.0, 0.0, False))
    console.update(JobProgress(HASH, "fine-tuning cola (task 1 of 2)", 0, 96, None, 0.0, False))  # a new stage: at once
    lines = stream.getvalue().splitlines()
    assert lines == [f"  {HASH[:12]} pretraining: step 10/150 (7%), ETA 1m00s",
                     f"  {HASH[:12]} fine-tuning cola (task 1 of 2): step 0/96 (0%), ETA unknown"]
    every = LineConsole(stream := io.StringIO(), interval=0)
    for step in (10, 10, 11):
        every.update(JobProgress(HASH, "pretraining", step, 150, 60.0, 0.0, False))
    assert len(stream.getvalue().splitlines()) == 2  # nothing moved between the first two


def test_bars_show_each_running_model(tmp_path):
    stream = io.StringIO()
    console = BarConsole(stream)
    console.update(JobProgress(HASH, "pretraining", 75, 150, 30.0, 0.0, False))
    console.update(JobProgress("cd" * 32, "fine-tuning rte (task 2 of 2)", 10, 96, None, 0.0, False))
    console.hide()
    text = stream.getvalue()
    assert f"{HASH[:12]} pretraining:  50%" in text and "75/150, ETA 30s" in text and "10/96, ETA unknown" in text
    console.drop(HASH)
    console.update(JobProgress("ef" * 32, "pretraining", 1, 150, None, 0.0, False))
    assert [line for _, line in console._bars.values()] == [1, 0]  # the ended job's line is reused


STAND_IN_JOB = """
import sys, time
from pathlib import Path
from transformers import TrainerState
from flexibert.training.progress import ProgressFile

args = dict(zip(sys.argv[3::2], sys.argv[4::2]))  # -m flexibert.candidate_job --run_dir R --model_hash H --attempt N
folder = Path(args["--run_dir"]) / "models" / args["--model_hash"] / "pretrained"
state = TrainerState(max_steps=150)
progress = ProgressFile(folder, "pretraining", min_interval=0)
progress.on_train_begin(None, state, None)
for step in (1, 2, 3):
    time.sleep(0.05)
    state.global_step = step
    progress.on_step_end(None, state, None)
release = Path(args["--run_dir"]) / "release"
deadline = time.time() + 60
while not release.exists() and time.time() < deadline:
    time.sleep(0.1)
"""


def wait_for(condition, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.1)


def test_a_local_job_s_progress_is_shown_while_the_controller_waits(tmp_path):
    """A real local executor runs a stand-in job (a subprocess that reports progress as a training job does); the board
    shows it for the model in flight, and nothing once the model is no longer in flight."""
    run_dir = tmp_path / "run"
    (run_dir / "models" / HASH).mkdir(parents=True)
    python = tmp_path / "python"
    (tmp_path / "job.py").write_text(STAND_IN_JOB)
    python.write_text(f"#!/bin/sh\nexec {sys.executable} {tmp_path / 'job.py'} \"$@\"\n")
    python.chmod(0o755)
    write_json_atomic(run_dir / "job_config.json", {"tasks": ["cola", "rte"]})

    executor = LocalExecutor(poll_interval=0.05, python=str(python))
    board = ProgressBoard(str(run_dir), console=LineConsole(console := io.StringIO(), interval=0))
    request = JobRequest(run_dir, HASH, 1, None, run_dir / "models" / HASH / "job-1.log", "token-1")
    job_id = executor.submit(request)
    try:
        wait_for(lambda: (read_progress(run_dir / "models" / HASH / "pretrained" / PROGRESS_FILE) or {}).get("step") == 3)
        assert executor.poll([job_id])[job_id].active
        board.show([HASH])
        board.hide()
        assert f"  {HASH[:12]} pretraining: step 3/150 (2%), ETA " in console.getvalue()
    finally:
        (run_dir / "release").touch()
        wait_for(lambda: not executor.poll([job_id])[job_id].active)
    board.show([])  # the job ended: nothing more is shown
    assert console.getvalue().count("\n") == 1


def test_the_board_never_fails_the_search_on_a_bad_run_folder(tmp_path):
    board = ProgressBoard(str(tmp_path / "nowhere"), console=LineConsole(stream := io.StringIO()))
    (tmp_path / "nowhere").mkdir()
    (tmp_path / "nowhere" / "job_config.json").write_text("[")
    board.show([HASH])
    board.hide()
    assert stream.getvalue() == ""
