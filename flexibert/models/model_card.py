"""The model card (``README.md``) saved beside a FlexiBERT model: what it is, what it scored on what, how to load it.

The card uses the Hub's format (YAML metadata with a ``model-index`` of evaluation results, then
Markdown), built with ``huggingface_hub`` so that the Hub and its tools read the scores. Everything
in it comes from files we already write: the model dict (config.json), the parameter count, the
search job's results.json (scores, tasks, pretraining) or the converted checkpoint's name.
"""

from __future__ import annotations

import json
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

CARD_FILE = "README.md"


def _eval_results(name: str, scores: dict[str, float], glue: float | None) -> list[EvalResult]:
    """One result per GLUE task's dev score, and the GLUE score itself (the mean over the tasks)."""
    results = [EvalResult(task_type="text-classification", dataset_type="glue", dataset_name="GLUE", dataset_config=task,
                          dataset_split="validation", metric_type="score", metric_value=round(float(value), 4),
                          metric_name=f"{task} dev score (0-100)") for task, value in sorted(scores.items())]
    if glue is not None:
        results.append(EvalResult(task_type="text-classification", dataset_type="glue", dataset_name="GLUE",
                                  dataset_split="validation", metric_type="glue_score", metric_value=round(float(glue), 4),
                                  metric_name=f"GLUE score: mean of {len(scores) or 'the'} tasks' dev scores"))
    return results


def _load_snippet(folder_name: str, classes: str) -> str:
    return ("```python\nimport flexibert  # registers FlexiBERT with transformers' Auto classes\n"
            "from transformers import AutoModel, AutoTokenizer\n\n"
            f"model = AutoModel.from_pretrained(\"{folder_name}\")  # or {classes}\n"
            f"tokenizer = AutoTokenizer.from_pretrained(\"{folder_name}\")\n"
            f"# without the flexibert package: AutoModel.from_pretrained(\"{folder_name}\", trust_remote_code=True)\n```\n")


def model_card(model_dict: dict, parameters: int, name: str, scores: dict[str, float] | None = None,
               glue: float | None = None, trained: str = "", source: str = "") -> ModelCard:
    """The card of one model; ``trained`` and ``source`` are sentences saying how it was trained and where its scores come from."""
    scores = scores or {}
    data = ModelCardData(library_name="transformers", tags=["flexibert", "neural-architecture-search", "heterogeneous-transformer"],
                         model_name=name, eval_results=_eval_results(name, scores, glue) or None,
                         datasets=["glue"] if scores or glue is not None else None)
    table = "".join(f"| {task} | {value:.2f} |\n" for task, value in sorted(scores.items()))
    body = [f"# {name}", "",
            f"A FlexiBERT model: a Transformer whose layers may differ in operation, heads, width and feed-forward stack. "
            f"{parameters:,} trainable parameters.", "",
            "## Architecture (model dict)", "", "```json", json.dumps(model_dict), "```", ""]
    if scores or glue is not None:
        body += ["## Scores", "", source, "", "| task | dev score |", "|---|---|", table.rstrip("\n")]
        body += [f"| **GLUE score** | **{glue:.2f}** |" if glue is not None else "", ""]
    if trained:
        body += ["## Training", "", trained, ""]
    body += ["## How to load", "", _load_snippet(name, "FlexiBERTModel / FlexiBERTForMaskedLM / FlexiBERTForSequenceClassification")]
    return ModelCard("---\n" + data.to_yaml() + "\n---\n\n" + "\n".join(body))


def write_model_card(folder: str | Path, card: ModelCard) -> Path:
    """Save the card as the folder's README.md."""
    path = Path(folder) / CARD_FILE
    card.save(path)
    return path
