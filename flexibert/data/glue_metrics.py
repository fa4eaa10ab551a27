"""GLUE metrics and the GLUE score, as the leaderboard defines them (0-100 scale).

Per evaluation set: accuracy for every classification task, plus F1 (MRPC, QQP, positive class 1) and
the Matthews correlation (CoLA); STS-B has Pearson and Spearman correlations. A task's score is the
mean of its score metrics times 100 (CoLA: MCC; STS-B: Pearson and Spearman; MRPC and QQP: accuracy and
F1; the others: accuracy), and MNLI averages its matched and mismatched sets. The GLUE score is the mean
over the chosen tasks, by default the 8 without WNLI (as BERT and NAS-Bench-BERT report it). The
original took the maximum of two metrics and included WNLI; we take means, like the leaderboard.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from flexibert.data.glue import GLUE_TASKS, GlueError, GlueTask, get_task

DEFAULT_TASKS: tuple[str, ...] = tuple(t for t in GLUE_TASKS if t != "wnli")
SCORE_METRICS: dict[str, tuple[str, ...]] = {
    "cola": ("matthews_correlation",),
    "stsb": ("pearson", "spearman"),
    "mrpc": ("accuracy", "f1"),
    "qqp": ("accuracy", "f1"),
}


def score_metrics(task: str | GlueTask) -> tuple[str, ...]:
    """The metrics whose mean is the task's score."""
    return SCORE_METRICS.get(get_task(task).name, ("accuracy",))


def _correlation(result: float) -> float:
    # A constant prediction has no defined correlation; score it 0 (no correlation), as scikit-learn does for MCC.
    return 0.0 if np.isnan(result) else float(result)


def compute_metrics(task: str | GlueTask, predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Metrics of one evaluation set from model outputs (logits, or one score per example for STS-B)."""
    task = get_task(task)
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if task.is_regression:
        scores = predictions.reshape(-1).astype(np.float64)
        if np.ptp(scores) == 0:
            return {"pearson": 0.0, "spearman": 0.0}
        return {"pearson": _correlation(pearsonr(scores, labels)[0]), "spearman": _correlation(spearmanr(scores, labels)[0])}
    classes = predictions.argmax(axis=-1) if predictions.ndim == 2 else predictions
    metrics = {"accuracy": float(accuracy_score(labels, classes))}
    if task.name in ("mrpc", "qqp"):
        metrics["f1"] = float(f1_score(labels, classes, zero_division=0.0))
    if task.name == "cola":
        metrics["matthews_correlation"] = float(matthews_corrcoef(labels, classes))
    return metrics


def split_score(task: str | GlueTask, metrics: Mapping[str, float]) -> float:
    """Score (0-100) of one evaluation set: the mean of the task's score metrics times 100."""
    names = score_metrics(task)
    missing = [name for name in names if name not in metrics]
    if missing:
        raise GlueError(f"{get_task(task).name}: metrics {sorted(metrics)} lack {missing}, which its score needs")
    return 100.0 * sum(float(metrics[name]) for name in names) / len(names)


def task_score(task: str | GlueTask, metrics_by_split: Mapping[str, Mapping[str, float]]) -> float:
    """A task's GLUE score (0-100) from the metrics of each of its validation sets (MNLI: matched and mismatched)."""
    task = get_task(task)
    missing = [split for split in task.validation_splits if split not in metrics_by_split]
    if missing:
        raise GlueError(f"{task.name}: no metrics for {missing}; its score needs {list(task.validation_splits)}")
    return sum(split_score(task, metrics_by_split[split]) for split in task.validation_splits) / len(task.validation_splits)


def glue_score(task_scores: Mapping[str, float], tasks: Sequence[str] = DEFAULT_TASKS) -> float:
    """The GLUE score: the mean of the chosen tasks' scores (default: the 8 tasks without WNLI)."""
    names = [get_task(t).name for t in tasks]
    if not names:
        raise GlueError("the GLUE score needs at least one task")
    missing = [name for name in names if name not in task_scores]
    if missing:
        raise GlueError(f"no score for task(s) {missing}; fine-tune them first (have: {sorted(task_scores)})")
    return sum(float(task_scores[name]) for name in names) / len(names)
