"""What a search leaves for people to read: history, leaderboard, plots, and the library with its scores.

All files are rebuilt from the journal (and the models' results.json files) so that they are always
consistent with it; writing them again after a resume is harmless.
"""

from __future__ import annotations

import copy
import csv
import io
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402

from embeddings.library import Library  # noqa: E402
from flexibert.search.journal import SearchState  # noqa: E402
from flexibert.search.layout import RunLayout  # noqa: E402
from flexibert.utils.files import atomic_write  # noqa: E402

HISTORY_COLUMNS = ("index", "model_hash", "score", "method", "round", "neighbor", "wall_s", "attempts")
LEADERBOARD_COLUMNS = ("rank", "model_hash", "score", "parameters", "method", "neighbor", "model_dict")


def _write_text(path: Path, text: str) -> None:
    with atomic_write(path) as handle:
        handle.write(text)


def _csv(rows: list[dict], columns: tuple[str, ...]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def history_rows(state: SearchState) -> list[dict]:
    """One row per finished evaluation, in completion order."""
    rows = []
    for index, model_hash in enumerate(state.finished, 1):
        c = state.candidates[model_hash]
        rows.append({"index": index, "model_hash": model_hash, "score": c.score, "method": c.method, "round": c.round,
                     "neighbor": c.neighbor or "", "wall_s": c.wall_s if c.wall_s is not None else "", "attempts": len(c.attempts)})
    return rows


def leaderboard_rows(state: SearchState, library: Library) -> list[dict]:
    """Finished models, best first (ties: earlier finished first)."""
    ranked = sorted(state.finished, key=lambda h: -state.candidates[h].score)
    return [{"rank": rank, "model_hash": h, "score": state.candidates[h].score, "parameters": state.candidates[h].parameters,
             "method": state.candidates[h].method, "neighbor": state.candidates[h].neighbor or "",
             "model_dict": json.dumps(library.model_dict(h), separators=(",", ":"))} for rank, h in enumerate(ranked, 1)]


def _markdown(rows: list[dict], failed: int) -> str:
    lines = ["| rank | model | score | parameters | found by | model dict |", "|---:|---|---:|---:|---|---|"]
    for row in rows:
        params = f"{row['parameters']:,}" if row["parameters"] else "?"
        lines.append(f"| {row['rank']} | `{row['model_hash'][:12]}` | {row['score']:.2f} | {params} | {row['method']} | "
                     f"`{row['model_dict']}` |")
    if failed:
        lines.append(f"\n{failed} model(s) failed after all retries (see journal.jsonl and models/<hash>/job-*.log).")
    return "\n".join(lines) + "\n"


def write_tables(run: RunLayout, state: SearchState, library: Library) -> None:
    """history.csv, leaderboard.csv and leaderboard.md (cheap: after every result)."""
    _write_text(run.history, _csv(history_rows(state), HISTORY_COLUMNS))
    rows = leaderboard_rows(state, library)
    _write_text(run.leaderboard_csv, _csv(rows, LEADERBOARD_COLUMNS))
    _write_text(run.leaderboard_md, _markdown(rows, len(state.failed())))


def pareto_front(parameters: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Indices of the models no other model beats with fewer or equal parameters, by parameters ascending."""
    order = np.lexsort((-scores, parameters))
    front, best = [], -np.inf
    for i in order:
        if scores[i] > best:
            front.append(i)
            best = scores[i]
    return np.array(front, dtype=int)


def write_plots(run: RunLayout, state: SearchState, library: Library) -> list[Path]:
    """report/best_score.png, report/score_vs_parameters.png, report/library_map.png."""
    report = run.report
    report.mkdir(exist_ok=True)
    rows = leaderboard_rows(state, library)
    scores = np.array([state.candidates[h].score for h in state.finished])
    paths = []

    fig, ax = plt.subplots(figsize=(6, 4))
    if len(scores):
        ax.step(np.arange(1, len(scores) + 1), np.maximum.accumulate(scores), where="post", label="best so far")
        ax.scatter(np.arange(1, len(scores) + 1), scores, s=12, alpha=0.6, label="each model")
    ax.set(xlabel="evaluated models", ylabel="score", title=f"{state.config.get('strategy', '')} search")
    ax.legend()
    paths.append(report / "best_score.png")
    fig.savefig(paths[-1], dpi=120, bbox_inches="tight")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    known = [r for r in rows if r["parameters"]]
    if known:
        params = np.array([r["parameters"] for r in known], dtype=float)
        values = np.array([r["score"] for r in known])
        front = pareto_front(params, values)
        ax.scatter(params, values, s=14, alpha=0.6, label="evaluated models")
        ax.step(params[front], values[front], where="post", color="C3", label="Pareto frontier")
        ax.legend()
    ax.set(xlabel="parameters", ylabel="score", title="score vs size")
    paths.append(report / "score_vs_parameters.png")
    fig.savefig(paths[-1], dpi=120, bbox_inches="tight")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 5))
    embeddings = np.asarray(library.embeddings, dtype=np.float32)
    pca = PCA(n_components=2, random_state=0).fit(embeddings[:: max(1, len(embeddings) // 20000)])
    points = pca.transform(embeddings)
    ax.scatter(points[:, 0], points[:, 1], s=2, c="lightgrey", label=f"library ({len(library):,})", rasterized=True)
    if len(scores):
        evaluated = points[[library.index(h) for h in state.finished]]
        marks = ax.scatter(evaluated[:, 0], evaluated[:, 1], s=30, c=scores, cmap="viridis", edgecolors="black", label="evaluated")
        fig.colorbar(marks, ax=ax, label="score")
    ax.set(xlabel="PC 1 of the embeddings", ylabel="PC 2", title="library map")
    ax.legend(loc="best", fontsize=8)
    paths.append(report / "library_map.png")
    fig.savefig(paths[-1], dpi=120, bbox_inches="tight")
    plt.close(fig)
    return paths


def write_scored_library(run: RunLayout, state: SearchState, library: Library) -> Path:
    """A copy of the library with 'performances' filled in from this run (the input file is never touched)."""
    scored = copy.copy(library)
    scored.performances = list(library.performances)
    for model_hash, score in state.scores().items():
        scored.performances[library.index(model_hash)] = score
    scored.save(run.scored_library)
    return run.scored_library
