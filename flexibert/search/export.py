"""Export a search's best models as folders that load anywhere: weights, tokenizer, config and a model card.

A candidate's ``pretrained/`` folder also holds training checkpoints and result files; an exported
model is the loadable part of it plus a ``README.md`` card (flexibert/models/model_card.py) with the
scores the journal recorded. ``flexibert/export_models.py`` is the stage script.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from flexibert.models.model_card import model_card, write_model_card
from flexibert.search.journal import SearchState
from flexibert.search.layout import RunLayout
from flexibert.search.objectives import front_members, ranked
from flexibert.utils.files import replaced_folder

# What a loadable model folder needs (.py: the code saved with the model, to load it without the package);
# checkpoints, logs and training results stay behind.
KEPT_SUFFIXES = (".json", ".safetensors", ".bin", ".txt", ".model", ".py")
LEFT_BEHIND = ("pretrain_results.json", "trainer_state.json", "training_args.bin", "all_results.json", "train_results.json",
               "eval_results.json")


class ExportError(ValueError):
    """A model cannot be exported (not finished, or scored from a benchmark: no weights)."""


def chosen_models(state: SearchState, top: int = 1, front: bool = False, hashes: list[str] | None = None) -> list[str]:
    """The models to export: the named ones, else the best ``top`` in the leaderboard's order (the run's headline
    objective; of the Pareto front with ``front``)."""
    if hashes:
        unknown = [h for h in hashes if not any(s.startswith(h) for s in state.finished)]
        if unknown:
            raise ExportError(f"no finished model of this run starts with {', '.join(unknown)}; see its leaderboard.md")
        return [next(s for s in state.finished if s.startswith(h)) for h in hashes]
    pool = front_members(state) if front else set(state.finished)
    return [h for h in ranked(state) if h in pool][:top]


def _loadable_files(folder: Path) -> list[Path]:
    return [p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix in KEPT_SUFFIXES and p.name not in LEFT_BEHIND]


def _training_sentence(results: dict, job: dict) -> str:
    pretrain = results.get("pretrain") or {}
    start = f"warm-started from {Path(pretrain['init_from']).parent.name[:12]}, " if pretrain.get("init_from") else ""
    loss = f", final MLM loss {pretrain['eval_loss']:.3f}" if isinstance(pretrain.get("eval_loss"), (int, float)) else ""
    args = job.get("pretrain_args") or []
    tokenizer = Path(args[args.index("--tokenizer") + 1]).name if "--tokenizer" in args[:-1] else "?"
    return (f"Masked-language-model pretraining ({start}{pretrain.get('global_step', '?')} steps{loss}; tokenizer "
            f"{tokenizer}), then fine-tuning on each GLUE task "
            f"({', '.join(results.get('tasks') or [])}) for its dev score, by a FlexiBERT search.")


def export_model(run: RunLayout, state: SearchState, model_hash: str, output: Path) -> Path:
    """Copy one finished model's loadable files to ``output`` (replacing it whole) and write its card."""
    model = run.model(model_hash)
    if not (model.pretrained / "config.json").is_file():
        raise ExportError(f"{model_hash[:12]} has no trained weights in {model.pretrained} (a model scored from a benchmark "
                          "file was never trained)")
    results = json.loads(model.results.read_text()) if model.results.is_file() else {}
    job = json.loads(run.job_config.read_text()) if run.job_config.is_file() else {}
    candidate = state.candidates[model_hash]
    config = json.loads((model.pretrained / "config.json").read_text())
    card = model_card(config.get("model_dict", results.get("model_dict", {})), candidate.parameters or 0,
                      name=f"flexibert-{model_hash[:12]}", scores=results.get("scores"), glue=candidate.score,
                      trained=_training_sentence(results, job),
                      source=f"Dev-set scores recorded by the search in `{run.root}` (model {model_hash}).")
    with replaced_folder(output) as staging:
        for path in _loadable_files(model.pretrained):
            shutil.copy2(path, staging / path.name)
        write_model_card(staging, card)
    return output
