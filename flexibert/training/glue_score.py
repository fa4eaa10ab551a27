"""The GLUE score of a saved model: every chosen task fine-tuned with one recipe, then the tasks' scores averaged.

Finished tasks are kept, so a re-run (or a requeued job) only trains what is left. The stage script
``flexibert/glue_score.py`` documents the per-task scores and the average.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from flexibert.data.glue import get_task
from flexibert.data.glue_metrics import DEFAULT_TASKS, glue_score
from flexibert.training.distributed import is_main_process
from flexibert.training.finetune import RESULTS_FILE, FinetuneRecipe, finetune, parse_recipe_args
from flexibert.utils.cli import setting
from flexibert.utils.files import write_json_atomic


@dataclass(kw_only=True)
class GlueTasks:
    """Which tasks are averaged, and where their runs go."""

    tasks: list[str] = setting(list(DEFAULT_TASKS), "GLUE tasks to fine-tune and average (any of cola sst2 mrpc stsb qqp mnli qnli "
                                                    "rte wnli)")
    output_dir: str = setting(None, "folder for results.json and one sub-folder per task", required=True)


@dataclass(kw_only=True)
class GlueScoreSettings(FinetuneRecipe, GlueTasks):
    """Everything a GLUE score needs: the flags of glue_score.py (one fine-tuning recipe for every task)."""


def parse_args(argv: list[str] | None = None, description: str | None = None) -> GlueScoreSettings:
    """glue_score.py's flags as settings."""
    return parse_recipe_args(GlueScoreSettings, GlueTasks, argv, description)


def score_model(settings: GlueScoreSettings) -> dict:
    """Fine-tune (or reuse) every task, then write and return the combined results."""
    start = time.perf_counter()
    tasks = list(dict.fromkeys(get_task(name).name for name in settings.tasks))
    settings.check()  # before the first task starts: every task would fail on the same setting
    output = Path(settings.output_dir)
    per_task = {}
    main_process = is_main_process()
    for name in tqdm(tasks, desc="GLUE tasks", unit="task", disable=not main_process):
        if main_process:
            tqdm.write(f"=== {name} ===")
        per_task[name] = finetune(settings.for_task(name, output / name))
    scores = {name: result["score"] for name, result in per_task.items()}
    results = {
        "model_name_or_path": str(settings.model_name_or_path),
        "tasks": tasks,
        "glue_score": glue_score(scores, tasks),
        "scores": scores,
        "metrics": {name: result["metrics"] for name, result in per_task.items()},
        "wall_time_s": round(sum(result["wall_time_s"] for result in per_task.values()), 2),
        "encoder_parameters": per_task[tasks[0]]["encoder_parameters"],
        "hyperparameters": settings.hyperparameters(),
    }
    if main_process:
        path = write_json_atomic(output / RESULTS_FILE, results)
        shown = ", ".join(f"{name} {score:.1f}" for name, score in scores.items())
        print(f"GLUE score {results['glue_score']:.2f} over {len(tasks)} task(s) ({shown}); "
              f"{time.perf_counter() - start:.0f}s this run; results in {path}")
    return results
