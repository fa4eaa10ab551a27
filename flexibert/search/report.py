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
import matplotlib.axis  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import EngFormatter, MaxNLocator  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402

from embeddings.library import Library  # noqa: E402
from flexibert.data import demo_corpus  # noqa: E402
from flexibert.data.glue import HUB_DATASET, GlueError, get_task  # noqa: E402
from flexibert.data.glue_metrics import score_metrics  # noqa: E402
from flexibert.search.journal import SearchState  # noqa: E402
from flexibert.search.layout import RunLayout  # noqa: E402
from flexibert.search.objectives import (  # noqa: E402
    ParameterCount,
    Score,
    front_members,
    headline_values,
    objectives_of,
    ranked,
    value_matrix,
)
from flexibert.search.pareto import as_minimisation, pareto_mask  # noqa: E402
from flexibert.utils.files import atomic_write  # noqa: E402

HISTORY_COLUMNS = ("index", "model_hash", "score", "method", "round", "neighbor", "wall_s", "attempts")
LEADERBOARD_COLUMNS = ("rank", "model_hash", "score", "parameters", "method", "neighbor", "pretrained", "weights", "model_dict")


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


SCREENED_LATENCY = "latency_ms_screened"  # the leaderboard column of a --max_latency_ms search (search/screening.py)


def _extra_objectives(state: SearchState) -> list[str]:
    """Objectives the leaderboard shows beside the score and the (total) parameter count, which it always shows, and
    with a latency cap the latency each model was screened at before it was proposed."""
    screened = [SCREENED_LATENCY] if state.screened else []
    return [name for name in objectives_of(state).names if name not in ("glue", "params")] + screened


def _extra_value(state: SearchState, model_hash: str, name: str) -> float | None:
    if name == SCREENED_LATENCY:
        return state.screened[model_hash]["latency"]["median_ms"] if model_hash in state.screened else None
    return state.candidates[model_hash].objectives.get(name)


def leaderboard_columns(state: SearchState) -> tuple[str, ...]:
    """The leaderboard's columns: one per objective besides the score and parameters, and whether a model is on the front."""
    extra = tuple(_extra_objectives(state))
    return (*LEADERBOARD_COLUMNS[:4], *extra, "pareto", *LEADERBOARD_COLUMNS[4:])


def _weights(run: RunLayout | None, model_hash: str) -> str:
    """The model's trained weights folder, relative to the run folder ("" when it has none, e.g. a benchmark score)."""
    if run is None or not (run.model(model_hash).pretrained / "config.json").is_file():
        return ""
    return str(run.model(model_hash).pretrained.relative_to(run.root))


def leaderboard_rows(state: SearchState, library: Library, run: RunLayout | None = None) -> list[dict]:
    """Finished models, best first by the run's headline objective (ties: earlier finished first); ``pareto`` marks the front."""
    front = front_members(state)
    extra = _extra_objectives(state)
    return [{"rank": rank, "model_hash": h, "score": state.candidates[h].score, "parameters": state.candidates[h].parameters,
             **{name: _extra_value(state, h, name) for name in extra}, "pareto": "yes" if h in front else "",
             "method": state.candidates[h].method, "neighbor": state.candidates[h].neighbor or "",
             "pretrained": pretraining_summary(state.candidates[h].training), "weights": _weights(run, h),
             "model_dict": json.dumps(library.model_dict(h), separators=(",", ":"))} for rank, h in enumerate(ranked(state), 1)]


def pretraining_summary(training: dict | None) -> str:
    """How a model was pretrained, in a few words: "scratch, 200 steps" or "warm (closeness 0.89), 90 of 200 steps".

    Empty for a model that was not trained (a benchmark score) or journaled before the record existed.
    """
    if not training:
        return ""
    if training.get("start") != "warm":
        return f"scratch, {training.get('steps') or 0:,} steps"
    closeness = training.get("closeness")
    close = f" (closeness {closeness:.2f})" if isinstance(closeness, (int, float)) else ""
    return f"warm{close}, {training.get('steps') or 0:,} of {training.get('budget_steps') or 0:,} steps"


def _number(value: object) -> str:
    return f"{value:,.4g}" if isinstance(value, float) and abs(value) < 1e4 else f"{value:,.0f}" if value is not None else "?"


def _markdown(rows: list[dict], failed: int, extra: list[str], objectives: str) -> str:
    extra_header = "".join(f"{name} | " for name in extra)
    lines = [f"| rank | model | score | parameters | {extra_header}Pareto | found by | pretrained | weights | model dict |",
             "|---:|---|---:|---:|" + "---:|" * len(extra) + "---|---|---|---|---|"]
    for row in rows:
        params = f"{row['parameters']:,}" if row["parameters"] else "?"
        values = "".join(f"{_number(row[name])} | " for name in extra)
        lines.append(f"| {row['rank']} | `{row['model_hash'][:12]}` | {row['score']:.2f} | {params} | {values}"
                     f"{'**yes**' if row['pareto'] else ''} | {row['method']} | {row['pretrained'] or '-'} | {row['weights'] or '-'} | "
                     f"`{row['model_dict']}` |")
    lines.append("\nPareto: no other evaluated model is at least as good in every objective"
                 f" ({objectives}) and better in one.")
    if failed:
        lines.append(f"\n{failed} model(s) failed after all retries (see journal.jsonl and models/<hash>/job-*.log).")
    return "\n".join(lines) + "\n"


def write_tables(run: RunLayout, state: SearchState, library: Library) -> None:
    """history.csv, leaderboard.csv and leaderboard.md (cheap: after every result)."""
    _write_text(run.history, _csv(history_rows(state), HISTORY_COLUMNS))
    rows = leaderboard_rows(state, library, run)
    columns = leaderboard_columns(state)
    _write_text(run.leaderboard_csv, _csv(rows, columns))
    names = objectives_of(state).names
    text = _markdown(rows, len(state.failed()), list(columns[4:columns.index("pareto")]),
                     ", ".join(names) if len(names) > 1 else "score and parameters")
    if state.screened:
        event = next(iter(state.screened.values()))
        text += (f"\n{SCREENED_LATENCY}: each model's latency measured before it was proposed (random weights, median of "
                 f"{event['latency']['repeats']} passes at batch {event['latency']['batch_size']} x {event['latency']['seq_length']} "
                 f"tokens on {event['latency']['device']}); {len(state.refused())} model(s) over --max_latency_ms "
                 f"{event['limit_ms']:g} were never proposed.\n")
    if any(row["weights"] for row in rows):
        text += (f"\nEach trained model's weights are in {run.root}/<weights>; export the best as loadable folders with "
                 f"model cards: `python -m flexibert.export_models --run_dir {run.root} --top 3`\n")
    _write_text(run.leaderboard_md, text)


def count_axis(axis: matplotlib.axis.Axis) -> None:
    """Ticks at whole numbers only, for an axis that counts things (evaluations, models, parameters): never 1.5 models.

    Otherwise as matplotlib's default locator (as many ticks as fit, at 1/2/2.5/5 steps), and written
    as :func:`quantity_axis` writes them, so that large counts stay legible.
    """
    axis.set_major_locator(MaxNLocator(nbins="auto", steps=[1, 2, 2.5, 5, 10], integer=True))
    quantity_axis(axis)


def quantity_axis(axis: matplotlib.axis.Axis) -> None:
    """Large quantities (parameters, FLOPs) as 12.5M or 1.2G at each tick, not as 1.25 under a separate "1e7"."""
    axis.set_major_formatter(EngFormatter(sep=""))


def _last_flag(argv: list[str], flag: str) -> str | None:
    """The value of the last ``flag VALUE`` or ``flag=VALUE`` in a job's argument list (argparse's rule: the last one wins)."""
    found = None
    for position, arg in enumerate(argv):
        if arg == flag and position + 1 < len(argv):
            found = argv[position + 1]
        elif arg.startswith(f"{flag}="):
            found = arg.split("=", 1)[1]
    return found


def _short(path: str | Path) -> str:
    """A path's last two parts, enough to recognise it in a plot title."""
    parts = Path(path).parts
    return str(Path(*parts[-2:])) if len(parts) > 2 else str(path)


def _is_demo_data(glue_dir: Path) -> bool:
    """Whether a GLUE folder is the offline demo's (prepare_demo_data.py: synthetic labels, NOT GLUE): its build manifest is beside it."""
    try:
        manifest = json.loads((glue_dir.parent / demo_corpus.MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (isinstance(manifest, dict) and isinstance(manifest.get("key"), dict) and "generator_version" in manifest["key"]
            and glue_dir.name == "glue")


def _glue_data(config: dict) -> str:
    """Where the fine-tuning tasks came from, as the run's job flags record it."""
    glue_dir = _last_flag((config.get("job") or {}).get("finetune_args") or [], "--glue_dir")
    if glue_dir is None:
        return f"GLUE dev sets from the hub ({HUB_DATASET})"
    if _is_demo_data(Path(glue_dir)):
        return f"synthetic demo tasks, NOT GLUE ({_short(glue_dir)})"
    return f"dev sets of the GLUE TSVs in {_short(glue_dir)}"


def _benchmark_data(path: str) -> str:
    """A benchmark file by name, said to be synthetic when its description says so (flexibert/synthetic_benchmark.py)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = None
    about = " ".join(str(data.get(key, "")) for key in ("description", "source", "note")) if isinstance(data, dict) else ""
    return f"{Path(path).name} ({'synthetic scores, NOT GLUE' if 'synthetic' in about.lower() else 'looked up, not trained'})"


def _task_metrics(tasks: list[str]) -> str:
    """``cola (MCC), rte (acc)``: each task with the metrics its score averages."""
    names = {"matthews_correlation": "MCC", "accuracy": "acc", "f1": "F1", "pearson": "Pearson", "spearman": "Spearman"}
    described = []
    for name in tasks:
        try:
            described.append(f"{get_task(name).name} ({'+'.join(names.get(m, m) for m in score_metrics(name))})")
        except GlueError:  # a task name this version does not know: named as recorded
            described.append(name)
    return ", ".join(described)


def measured(config: dict) -> str:
    """What a run's scores are, for plot subtitles: the metric and tasks, then (on a second line) the data, from its
    journaled settings (``search_config``); a benchmark run names the benchmark file instead."""
    if config.get("benchmark_file"):
        return f"score: {config.get('benchmark_metric', 'glue')} from the benchmark {_benchmark_data(config['benchmark_file'])}"
    tasks = list(config.get("tasks") or [])
    what = f"score: GLUE score, mean of {_task_metrics(tasks)}" if len(tasks) > 1 else f"score: {_task_metrics(tasks)}"
    return f"{what}\ndata: {_glue_data(config)}"


def _titled(ax: plt.Axes, title: str, state: SearchState) -> None:
    """The plot's title, and under it what was measured."""
    ax.set_title(f"{title}\n{measured(state.config)}", fontsize=9)


def best_score_figure(state: SearchState) -> Figure:
    """Each evaluated model's score in completion order, and the best so far; a run of one other objective shows
    that objective, as its leaderboard ranks by it."""
    objective = objectives_of(state).headline
    scores = np.array(headline_values(state))
    fig, ax = plt.subplots(figsize=(6.5, 4))
    if len(scores):
        best = np.maximum.accumulate(scores) if objective.maximize else np.minimum.accumulate(scores)
        ax.step(np.arange(1, len(scores) + 1), best, where="post", label="best so far")
        ax.scatter(np.arange(1, len(scores) + 1), scores, s=12, alpha=0.6, label="each model")
    ax.set(xlabel="evaluated models", ylabel="score" if isinstance(objective, Score) else objective.name)
    count_axis(ax.xaxis)
    _titled(ax, f"{state.config.get('strategy', '')} search: {len(scores)} models evaluated", state)
    ax.legend(loc="best")
    return fig


def size_figure(state: SearchState, library: Library) -> Figure:
    """Score against total parameters, with the Pareto frontier (higher score, fewer parameters)."""
    rows = leaderboard_rows(state, library)
    fig, ax = plt.subplots(figsize=(6.5, 4))
    known = [r for r in rows if r["parameters"]]
    if known:
        params = np.array([r["parameters"] for r in known], dtype=float)
        values = np.array([r["score"] for r in known])
        front = np.flatnonzero(pareto_mask(as_minimisation(np.stack([values, params], axis=1), [True, False])))
        front = front[np.argsort(params[front], kind="stable")]
        ax.scatter(params, values, s=14, alpha=0.6, label="evaluated models")
        ax.step(params[front], values[front], where="post", color="C3", marker="o", markersize=4, label="Pareto frontier")
        ax.legend(loc="best")
    ax.set(xlabel="parameters", ylabel="score")
    count_axis(ax.xaxis)
    _titled(ax, f"score vs size: {len(known)} models evaluated", state)
    return fig


def library_map_figure(state: SearchState, library: Library) -> Figure:
    """The library's embeddings in 2-D (PCA), the evaluated models coloured by score; the legend sits below the axes."""
    scores = np.array([state.candidates[h].score for h in state.finished])
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    embeddings = np.asarray(library.embeddings, dtype=np.float32)
    pca = PCA(n_components=2, random_state=0).fit(embeddings[:: max(1, len(embeddings) // 20000)])
    points = pca.transform(embeddings)
    ax.scatter(points[:, 0], points[:, 1], s=2, c="lightgrey", label=f"library ({len(library):,} models)", rasterized=True)
    if len(scores):
        evaluated = points[[library.index(h) for h in state.finished]]
        marks = ax.scatter(evaluated[:, 0], evaluated[:, 1], s=30, c=scores, cmap="viridis", edgecolors="black",
                           label=f"evaluated ({len(scores)}), colour: score")
        fig.colorbar(marks, ax=ax, label="score")
    ax.set(xlabel="PC 1 of the embeddings", ylabel="PC 2")
    _titled(ax, "library map: the models' embeddings (PCA)", state)
    # Below the axes, outside them: a legend inside would hide points wherever it sat.
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, fontsize=8, frameon=False)
    return fig


def front_figure(state: SearchState, library: Library) -> Figure:
    """The search's first two objectives: every evaluated model, the front highlighted and named, and the untried
    library shown faintly along an axis whose objective is cheap (known without training)."""
    objectives = objectives_of(state)
    (y_objective, x_objective), names = objectives.objectives[:2], objectives.names
    values = value_matrix(state, names)
    members = front_members(state)
    front = np.array([h in members for h in state.finished])
    fig, ax = plt.subplots(figsize=(7, 5))
    if x_objective.cheap and y_objective.cheap:
        ax.scatter(objectives.column(library, x_objective), objectives.column(library, y_objective), s=3, c="lightgrey",
                   label=f"library ({len(library):,})", rasterized=True)
    elif x_objective.cheap:
        ax.plot(objectives.column(library, x_objective), np.full(len(library), values[:, 0].min()), "|", color="lightgrey",
                markersize=8, label=f"library's {x_objective.name} ({len(library):,})")
    ax.scatter(values[~front, 1], values[~front, 0], s=16, alpha=0.6, label="evaluated")
    order = np.argsort(values[front, 1] * (-1 if x_objective.maximize else 1), kind="stable")
    on_front = values[front][order]
    # With more objectives the front's members need not form a staircase in these two: points only.
    ax.plot(on_front[:, 1], on_front[:, 0], color="C3", marker="o", label=f"Pareto front ({front.sum()})",
            linestyle="-" if len(names) == 2 else "none", drawstyle="steps-post")
    for row, model_hash in zip(on_front, np.array(state.finished)[front][order], strict=True):
        ax.annotate(model_hash[:8], (row[1], row[0]), textcoords="offset points", xytext=(4, 4), fontsize=7)
    arrow = {True: "higher is better", False: "lower is better"}
    ax.set(xlabel=f"{x_objective.name} ({arrow[x_objective.maximize]})", ylabel=f"{y_objective.name} ({arrow[y_objective.maximize]})")
    for objective, axis in ((x_objective, ax.xaxis), (y_objective, ax.yaxis)):
        if isinstance(objective, ParameterCount):
            count_axis(axis)
        elif objective.cheap:  # FLOPs
            quantity_axis(axis)
    _titled(ax, f"{state.config.get('strategy', '')} search: {len(state.finished)} evaluated"
                + (f" (plot: first 2 of {len(names)} objectives)" if len(names) > 2 else ""), state)
    ax.legend(loc="best", fontsize=8)
    return fig


def save_figure(fig: Figure, path: Path) -> Path:
    """Write a figure as PNG (whole: legends outside the axes included) and free it."""
    try:
        with atomic_write(path, "wb") as handle:
            fig.savefig(handle, format="png", dpi=120, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


def write_plots(run: RunLayout, state: SearchState, library: Library) -> list[Path]:
    """report/best_score.png, report/score_vs_parameters.png, report/library_map.png (and report/pareto.png with several
    objectives); each says what was measured (see :func:`measured`)."""
    run.report.mkdir(exist_ok=True)
    paths = [save_figure(best_score_figure(state), run.report / "best_score.png"),
             save_figure(size_figure(state, library), run.report / "score_vs_parameters.png"),
             save_figure(library_map_figure(state, library), run.report / "library_map.png")]
    if objectives_of(state).multi:
        paths.append(write_front_plot(run.report / "pareto.png", state, library))
    return paths


def write_front_plot(path: Path, state: SearchState, library: Library) -> Path:
    """report/pareto.png: :func:`front_figure` saved."""
    return save_figure(front_figure(state, library), path)


def write_scored_library(run: RunLayout, state: SearchState, library: Library) -> Path:
    """A copy of the library with 'performances' filled in from this run (the input file is never touched)."""
    scored = copy.copy(library)
    scored.performances = list(library.performances)
    for model_hash, score in state.scores().items():
        scored.performances[library.index(model_hash)] = score
    scored.save(run.scored_library)
    return run.scored_library
