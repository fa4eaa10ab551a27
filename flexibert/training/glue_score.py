"""Fine-tune a FlexiBERT model on each chosen GLUE task and report its GLUE score (0-100).

    python flexibert/glue_score.py --model_name_or_path models/pretrained/HASH --output_dir runs/glue/HASH
    python -m flexibert.glue_score --model_name_or_path models/pretrained/HASH --glue_dir ../shared/data/glue \\
        --tasks sst2 mrpc stsb rte --output_dir runs/glue/HASH

Each task is fine-tuned in this process with finetune_flexibert.py's recipe (every flag below applies
to every task) into <output_dir>/<task>/. Task score: CoLA MCC x 100; STS-B mean of Pearson and
Spearman; MRPC and QQP mean of accuracy and F1; MNLI mean of matched and mismatched accuracy; the
others accuracy (all x 100, on the dev sets). The GLUE score is the mean over --tasks (default: the 8
tasks without WNLI). <output_dir>/results.json gets the per-task metrics and scores, the GLUE score,
the summed wall time and the encoder's parameter count. Re-running resumes: finished tasks (those
with <output_dir>/<task>/results.json) are kept, an interrupted one continues from its last checkpoint.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from flexibert.data.glue import get_task
from flexibert.data.glue_metrics import DEFAULT_TASKS, glue_score
from flexibert.training.distributed import is_main_process
from flexibert.training.finetune import RESULTS_FILE, FinetuneRecipe, add_recipe_flags, finetune
from flexibert.utils.cli import HelpFormatter, add_flags, from_flags, setting
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


def parse_args(argv: list[str] | None = None) -> GlueScoreSettings:
    """glue_score.py's flags as settings; a malformed flag exits with argparse's usage message."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    add_flags(parser, GlueTasks)
    add_recipe_flags(parser)
    return from_flags(GlueScoreSettings, parser.parse_args(argv))


def score_model(settings: GlueScoreSettings) -> dict:
    """Fine-tune (or reuse) every task, then write and return the combined results."""
    start = time.perf_counter()
    tasks = list(dict.fromkeys(get_task(name).name for name in settings.tasks))
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
