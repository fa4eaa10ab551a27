"""Compare search strategies on one benchmark file: several strategies x seeds, one plot, one table.

    python -m flexibert.compare_strategies --dataset_file LIB.json --benchmark_file BENCH.json \\
        --strategies boshnas random evolution gp --seeds 1 2 3 --budget 50 --output_dir runs/compare

Each (strategy, seed) is an ordinary run_boshnas.py search with the inline executor in
<output_dir>/<strategy>_seed<seed>/ (so an interrupted comparison resumes, and every run has its own
leaderboard and plots). The comparison writes <output_dir>/comparison.png (mean best score so far vs
evaluated models, with a band from the worst to the best seed) and comparison.md/.csv (mean ± sample
std of the best score at --report_budgets). Runs are compared at equal numbers of evaluations: a run
that stopped early (--stop_on_convergence, or an exhausted library) has no score after its last
evaluation, and the table says how many runs reached each budget.

With several objectives (``--objectives glue params`` passed on to the runs), each run is measured by
the hypervolume of its evaluated models as a share of the benchmark's true front's (reference point:
each maximised objective's median and 1.05 x each minimised objective's largest value).

Where the benchmark scores every library model and no cap is set, the table and plot add random
search's exact expectation (of the best score, or for two objectives of the hypervolume share):
the line a strategy must clear, without the noise of a few sampled random runs.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from tqdm import tqdm  # noqa: E402

from flexibert.cluster.base import ExecutorError  # noqa: E402
from flexibert.search.comparison import (  # noqa: E402
    best_curve,
    hypervolume_fraction_curve,
    known_values,
    mean_and_spread,
    random_expected_best,
    random_expected_hypervolume_share,
)
from flexibert.search.controller import open_library, run_search  # noqa: E402
from flexibert.search.journal import RunDirError, SearchState  # noqa: E402
from flexibert.search.layout import RunLayout  # noqa: E402
from flexibert.search.objectives import ObjectiveSet, Score, value_matrix  # noqa: E402
from flexibert.search.report import count_axis, measured, save_figure  # noqa: E402
from flexibert.search.settings import SearchError  # noqa: E402
from flexibert.search.settings import parse_args as search_args  # noqa: E402
from flexibert.search.strategies import STRATEGIES  # noqa: E402
from flexibert.utils.cli import HelpFormatter  # noqa: E402


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter,
                                     epilog="Any other flag is passed to every run_boshnas.py run (e.g. --num_init 10 --k1 1.0).")
    parser.add_argument("--dataset_file", required=True, help="graph library JSON")
    parser.add_argument("--benchmark_file", required=True, help="benchmark JSON with a score for every library model")
    parser.add_argument("--benchmark_metric", default="glue", help="which score of the benchmark file")
    parser.add_argument("--strategies", nargs="+", choices=list(STRATEGIES), default=list(STRATEGIES), help="strategies to compare")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3], help="one run per strategy and seed")
    parser.add_argument("--budget", type=int, default=50, help="models evaluated per run")
    parser.add_argument("--report_budgets", nargs="+", type=int, help="budgets of the table (default: a quarter, half and all of --budget)")
    parser.add_argument("--output_dir", default="runs/compare", help="one sub-folder per run, plus the comparison files")
    args, passed_on = parser.parse_known_args(argv)
    args.report_budgets = sorted(set(args.report_budgets or [max(1, args.budget // 4), max(1, args.budget // 2), args.budget]))
    if max(args.report_budgets) > args.budget:
        parser.error("--report_budgets cannot exceed --budget")
    return args, passed_on


class Measure:
    """What a run's curve shows: its best score so far, or with several --objectives its hypervolume share of the true front."""

    def __init__(self, args: argparse.Namespace, passed_on: list[str]):
        self.objectives = ObjectiveSet.from_args(search_args(["--dataset_file", args.dataset_file, *passed_on]))
        self.budget = args.budget
        # (models, objectives) of every library model, NaN where the benchmark has no value
        self.every = known_values(self.objectives, open_library(args.dataset_file), args.benchmark_file, args.benchmark_metric)
        self.label = "hypervolume / true front's" if self.objectives.multi else f"best {args.benchmark_metric} score so far"
        self.column, self.digits = ("hv", 3) if self.objectives.multi else ("best", 2)

    @property
    def has_random_expectation(self) -> bool:
        """Whether random search's exact expectation is defined here: not under a cap (random draws only from the
        models under it), not with a model the benchmark has no value for, not for three objectives, and for a single
        objective only when it is the run's score."""
        if self.objectives.constraints or np.isnan(self.every).any() or self.every.shape[1] > 2:
            return False
        return self.objectives.multi or isinstance(self.objectives.objectives[0], Score)

    def random_expectation(self, evaluations: int) -> float | None:
        """Random search's exact expected value of the measure after ``evaluations`` models (None where it is not
        defined, see :attr:`has_random_expectation`)."""
        if not self.has_random_expectation:
            return None
        evaluations = min(evaluations, len(self.every))  # a run ends when the library does
        if self.objectives.multi:
            return random_expected_hypervolume_share(self.every, self.objectives.maximize, evaluations)
        return random_expected_best(self.every[:, 0], evaluations)

    def curve(self, state: SearchState) -> np.ndarray:
        if not self.objectives.multi:
            return best_curve([state.candidates[h].score for h in state.finished], self.budget)
        found = value_matrix(state, self.objectives.names)
        return hypervolume_fraction_curve(found, self.every, self.objectives.maximize, self.budget)


def run_all(args: argparse.Namespace, passed_on: list[str], measure: Measure) -> dict[str, np.ndarray]:
    """Run (or resume) every search quietly; returns {strategy: (seeds, budget) array of curves (measure.curve)}."""
    output = Path(args.output_dir)
    curves: dict[str, list[np.ndarray]] = {s: [] for s in args.strategies}
    runs = [(strategy, seed) for strategy in args.strategies for seed in args.seeds]
    for strategy, seed in tqdm(runs, desc="searches", unit="run"):
        run_dir = output / f"{strategy}_seed{seed}"
        run_dir.mkdir(parents=True, exist_ok=True)
        argv = ["--dataset_file", args.dataset_file, "--benchmark_file", args.benchmark_file, "--benchmark_metric",
                args.benchmark_metric, "--executor", "inline", "--strategy", strategy, "--seed", str(seed), "--budget",
                str(args.budget), "--run_dir", str(run_dir), *passed_on]
        with open(RunLayout(run_dir).console_log, "a") as log, contextlib.redirect_stdout(log):
            try:
                state = run_search(search_args(argv))
            except (SearchError, RunDirError, ExecutorError) as err:
                raise SystemExit(f"error: {err}") from None
        if state.stopped is None:  # Ctrl-C or a kill signal reached the search: stop the whole comparison
            raise SystemExit(f"interrupted in {run_dir}; re-run the same command to resume the comparison")
        curves[strategy].append(measure.curve(state))
        done = len(state.finished)
        early = f"; stopped early ({state.stopped})" if done < args.budget else ""
        tqdm.write(f"{strategy} seed {seed}: {measure.column} {np.nanmax(curves[strategy][-1]):.{measure.digits}f} after {done} "
                   f"models{early} ({run_dir})")
    return {strategy: np.stack(found) for strategy, found in curves.items()}


def table_rows(curves: dict[str, np.ndarray], budgets: list[int], column: str = "best", digits: int = 2,
               measure: Measure | None = None) -> list[dict]:
    """One row per strategy: mean ± sample std of the curves at each budget, over the runs that got there; then random
    search's exact expectation where ``measure`` can give it."""
    rows = []
    for strategy, runs in curves.items():
        row = {"strategy": strategy, "runs": len(runs)}
        row.update({f"{column}@{budget}": mean_and_spread(runs[:, budget - 1], digits) for budget in budgets})
        rows.append(row)
    if measure is not None and measure.has_random_expectation:
        row = {"strategy": "random search, exact expectation", "runs": "-"}
        row.update({f"{column}@{budget}": f"{measure.random_expectation(budget):.{digits}f}" for budget in budgets})
        rows.append(row)
    return rows


def comparison_figure(curves: dict[str, np.ndarray], args: argparse.Namespace, measure: Measure) -> Figure:
    """Each strategy's mean curve over its seeds with a band from the worst to the best seed; the title says what was
    measured (the benchmark, its metric, the objectives) and the x axis counts evaluations in whole numbers."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    steps = np.arange(1, args.budget + 1)
    for strategy, runs in curves.items():
        ax.plot(steps, np.nanmean(runs, axis=0), label=f"{strategy} (mean of {len(runs)})")
        ax.fill_between(steps, np.nanmin(runs, axis=0), np.nanmax(runs, axis=0), alpha=0.2)
    if measure.has_random_expectation:
        ax.plot(steps, [measure.random_expectation(k) for k in steps], "k--", label="random search, exact expectation")
    ax.set(xlabel="evaluated models", ylabel=measure.label)
    count_axis(ax.xaxis)
    seeds = f"{len(args.seeds)} seed{'s' if len(args.seeds) > 1 else ''} per strategy, band: worst to best seed"
    goal = (f"hypervolume share of the true front of {', '.join(measure.objectives.record()['objectives'])}"
            if measure.objectives.multi else measure.label)
    ax.set_title(f"{goal} ({seeds})\n"
                 f"{measured({'benchmark_file': args.benchmark_file, 'benchmark_metric': args.benchmark_metric})}", fontsize=9)
    ax.legend(loc="best")
    return fig


def write_outputs(curves: dict[str, np.ndarray], args: argparse.Namespace, measure: Measure) -> str:
    output = Path(args.output_dir)
    save_figure(comparison_figure(curves, args, measure), output / "comparison.png")

    rows = table_rows(curves, args.report_budgets, measure.column, measure.digits, measure)
    columns = list(rows[0])
    with open(output / "comparison.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    text = io.StringIO()
    text.write("| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n")
    for row in rows:
        text.write("| " + " | ".join(str(row[c]) for c in columns) + " |\n")
    (output / "comparison.md").write_text(text.getvalue())
    return text.getvalue()


def main(argv: list[str] | None = None) -> dict[str, np.ndarray]:
    args, passed_on = parse_args(argv)
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    measure = Measure(args, passed_on)
    curves = run_all(args, passed_on, measure)
    print(write_outputs(curves, args, measure))
    print(f"plot: {Path(args.output_dir) / 'comparison.png'}; per-run results in {args.output_dir}/<strategy>_seed<seed>/")
    return curves


if __name__ == "__main__":
    main()
