"""Multi-objective search on NAS-Bench-BERT: GLUE against total parameters (or another cost), and best GLUE under a size cap.

    python benchmarks/multi_objective.py                          # 4 strategies x 10 seeds (~25 min on 2 cores)
    python benchmarks/multi_objective.py --seeds 1 2 --strategies boshnas random
    python benchmarks/multi_objective.py --cost time_to_train     # a cost that only training tells

Part 1 (the front): every strategy searches ``--objectives glue params`` (``--cost``: flops, or a column
of the benchmark file) with the inline executor and
scores looked up in the benchmark; each run is measured by the hypervolume of its evaluated models
as a share of the true front's (all 491 architectures are known), with the reference point at the
benchmark's median GLUE and 1.05 x its largest cost. A line after the table says how much of each
strategy's share rides on finding the benchmark's single best-scoring model. Optuna's samplers (multi-objective
TPE, NSGA-II) use their defaults on the model dict's choices. Random search's expected share is
computed exactly (``random_expected_hypervolume_share``), so "above random" is judged against no noise
of its own.
A reference row (for a cost known without training) gives the same expected-gain picks with predictions
that have seen 90% of the benchmark (``informed_reference``): what much better predictions would buy.

Part 2 (a cap): every strategy searches GLUE alone with ``--max_encoder_params`` at BERT-Mini's
encoder size; the table gives how far the best model found within 20 evaluations is from the best
model under the cap. Writes <output_dir>/multi_objective.md and .png, and lists the benchmark's
models that are smaller than BERT-Mini and score higher.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.ensemble import HistGradientBoostingRegressor  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from search_efficiency import NASBENCH, REPO, held_out_predictions, nasbench_files  # noqa: E402

from embeddings.library import Library  # noqa: E402
from flexibert.models.costs import parameter_count  # noqa: E402
from flexibert.search.comparison import (  # noqa: E402
    hypervolume_fraction_curve,
    hypervolume_reference,
    known_values,
    mean_and_spread,
    random_expected_hypervolume_share,
)
from flexibert.search.controller import run_search  # noqa: E402
from flexibert.search.objectives import ObjectiveSet, ParameterCount, Score, parse_objective, value_matrix  # noqa: E402
from flexibert.search.pareto import as_minimisation, expected_hypervolume_improvements, pareto_mask  # noqa: E402
from flexibert.search.report import count_axis, quantity_axis  # noqa: E402
from flexibert.search.settings import parse_args as search_args  # noqa: E402
from flexibert.search.strategies.encoding import ChoiceEncoding  # noqa: E402

BUDGETS = (10, 20, 30, 50)
REFERENCE = "reference: BOSHNAS's picks with a ridge that has seen 90% of the benchmark"
REFERENCE_NOTE = ("\nThe reference row is not a strategy: its predictions come from the benchmark itself (see "
                  "`informed_reference`, each seed averaged over five ways of cutting the tenths). It shows what much better predictions "
                  "than a few scores allow would buy.\n")
COST_LABELS = {"params": "total parameters", "encoder_params": "encoder parameters", "flops": "FLOPs per token"}
BERT_MINI = {"l": 4, "o": ["sa"] * 4, "p": ["sdp"] * 4, "h": [256] * 4, "n": [4] * 4, "f": [[1024]] * 4}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nasbench_file", type=Path, default=NASBENCH, help="NAS-Bench-BERT's GLUE scores")
    parser.add_argument("--strategies", nargs="+", default=["boshnas", "tpe", "nsga2", "random"])
    parser.add_argument("--seeds", nargs="+", type=int, default=list(range(1, 11)))
    parser.add_argument("--budget", type=int, default=50)
    parser.add_argument("--cap_budget", type=int, default=20, help="evaluations of the capped single-objective search")
    parser.add_argument("--num_init", type=int, default=5)
    parser.add_argument("--cost", default="params",
                        help="the front's second objective, minimised: params, flops, or a numeric column of the benchmark "
                             "file such as time_to_train (the reference row needs a cost known without training)")
    parser.add_argument("--output_dir", type=Path, default=REPO / "runs" / "multi_objective")
    return parser.parse_args(argv)


def search(library: Path, bench: Path, run_dir: Path, flags: list[str]) -> np.ndarray:
    """One inline search (resumed if its folder exists); (finished models, objectives) in completion order."""
    argv = ["--dataset_file", str(library), "--benchmark_file", str(bench), "--executor", "inline", "--run_dir", str(run_dir), *flags]
    args = search_args(argv)
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "controller.log", "a") as log, contextlib.redirect_stdout(log):
        state = run_search(args)
    return value_matrix(state, ObjectiveSet.from_args(args).names)


def front_table(curves: dict[str, np.ndarray], budget: int, every: np.ndarray | None = None) -> str:
    """Mean ± std of each strategy's share at the budgets, and with ``every`` (the benchmark's values) random search's
    exact expectation last: ten sampled random runs stray from it by a few hundredths."""
    budgets = [b for b in BUDGETS if b <= budget]
    lines = ["| strategy | " + " | ".join(f"hypervolume share @{b}" for b in budgets) + " |", "|---|" + "---|" * len(budgets)]
    for strategy, runs in curves.items():
        lines.append(f"| {strategy} ({len(runs)} seeds) | " + " | ".join(mean_and_spread(runs[:, b - 1], 3) for b in budgets) + " |")
    if every is not None:
        lines.append("| random search, exact expectation | "
                     + " | ".join(f"{random_expected_hypervolume_share(every, [True, False], b):.3f}" for b in budgets) + " |")
    return "\n".join(lines) + "\n" + noise_line(curves, budgets)


def informed_reference(library: Library, every: np.ndarray, seeds: list[int], num_init: int, budget: int,
                       shuffles: int = 5) -> np.ndarray:
    """Hypervolume-share curves (seeds, budget) of a front search whose surrogate had seen 90% of the benchmark from
    the start: what much better predictions would buy, a reference and not a ceiling (its picks are greedy).

    A ridge regression on the one-hot choices and the log parameter count predicts each model from the
    nine tenths of the models it is not in; after ``num_init`` random models, each pick is the untried
    model of the largest expected hypervolume gain under those predictions (their residual std as the
    spread), as BOSHNAS picks with its surrogate's. Each seed's curve is the mean over ``shuffles`` ways of
    cutting the tenths: which tenth a lucky model falls in decides whether it is predicted high, and on
    seeds 11-40 one cut's share after 30 evaluations ranged from 0.78 to 0.89 over five cuts.
    """
    values, inputs = reference_inputs(library, every)
    cuts = [held_out_predictions(inputs, values[:, 0], shuffle) for shuffle in range(shuffles)]
    return np.mean([np.stack([_predicted_picks(values, predicted, seed, num_init, budget) for seed in seeds])
                    for predicted in cuts], axis=0)


def reference_inputs(library: Library, every: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The benchmark's scored models (score, cost) and what the reference row predicts from: choices one-hot, log cost."""
    known = ~np.isnan(every[:, 0])
    values = every[known]
    return values, np.hstack([ChoiceEncoding.of(library, tied=False).one_hot()[known], np.log(values[:, 1:2])])


def additivity_line(library: Library, every: np.ndarray, cuts: int = 5) -> str:
    """How good the reference row's predictions are next to a predictor that can learn interactions between choices.

    Held out, the additive ridge is set against gradient-boosted trees on the same inputs. If the trees
    do no better, then beyond the choices' additive effects a model's score is its own draw, and the
    reference row's predictions are about as good as any this benchmark's architectures allow.
    """
    values, inputs = reference_inputs(library, every)
    scores = values[:, 0]

    def error(predict) -> float:
        return float(np.mean([np.sqrt(np.mean((predict(cut) - scores) ** 2)) for cut in range(cuts)]))

    ridge = error(lambda cut: held_out_predictions(inputs, scores, cut))
    trees = error(lambda cut: held_out_predictions(inputs, scores, cut, HistGradientBoostingRegressor(random_state=0)))
    return (f"\nHeld out (10-fold, {cuts} cuts), the reference row's additive ridge predicts GLUE with RMSE {ridge:.2f}, and "
            f"gradient-boosted trees on the same inputs, which can learn interactions between choices, {trees:.2f}.\n")


def _predicted_picks(values: np.ndarray, predicted: np.ndarray, seed: int, num_init: int, budget: int) -> np.ndarray:
    """One seed's share curve when every pick after ``num_init`` random models follows the ``predicted`` scores."""
    spread = np.full(len(values), np.std(predicted - values[:, 0]))
    reference = hypervolume_reference(values, [True, False])
    chosen = [int(i) for i in np.random.default_rng(seed).choice(len(values), num_init, replace=False)]
    while len(chosen) < min(budget, len(values)):
        rest = np.setdiff1d(np.arange(len(values)), chosen)
        gains = expected_hypervolume_improvements(as_minimisation(values[chosen], [True, False]), values[rest, 1],
                                                  -predicted[rest], spread[rest], reference, known_column=1)
        chosen.append(int(rest[np.argmax(gains)]))
    return hypervolume_fraction_curve(values[chosen], values, [True, False], budget)


def noise_line(curves: dict[str, np.ndarray], budgets: list[int]) -> str:
    """How far apart two means must be to mean something: one run's share varies by several hundredths from seed to
    seed, so with 10 seeds a difference of 0.01-0.02 between strategies is noise."""
    errors = [np.nanstd(runs[:, b - 1], ddof=1) / np.sqrt(np.sum(~np.isnan(runs[:, b - 1])))
              for runs in curves.values() for b in budgets if np.sum(~np.isnan(runs[:, b - 1])) > 1]
    if not errors:
        return ""
    return (f"\n± is the sample std over seeds. The standard error of a mean (std / √seeds) is up to {max(errors):.3f} here, so "
            "differences smaller than about twice that are noise; `--seeds` takes more seeds.\n")


def cap_table(gaps: dict[str, list[float]], under_cap: np.ndarray, cap: int, budget: int) -> str:
    """Per strategy, the best GLUE found under the cap against the best there is (``under_cap``: every allowed model's GLUE).

    It says how many allowed models are within 0.3 of the best: with one, "within 0.3" means finding that model.
    """
    best_under_cap = float(np.nanmax(under_cap))
    near = int(np.sum(under_cap >= best_under_cap - 0.3))
    lines = [f"Best GLUE under the cap (encoder parameters <= {cap:,}, BERT-Mini's encoder): {best_under_cap:.2f}; "
             f"{near} of the {int(np.sum(~np.isnan(under_cap)))} models under it {'is' if near == 1 else 'are'} within 0.3 of that", "",
             f"| strategy | best found within {budget} (mean ± std) | gap to the best under the cap | seeds within 0.3 |",
             "|---|---|---|---|"]
    for strategy, found in gaps.items():
        values = np.array(found)
        lines.append(f"| {strategy} | {mean_and_spread(values)} | {best_under_cap - values.mean():.2f} | "
                     f"{int(np.sum(best_under_cap - values <= 0.3))}/{len(values)} |")
    return "\n".join(lines) + "\n"


def homogeneous(model_dict: dict) -> bool:
    """Every layer the same (the BERT-like models of the space)."""
    return all(len({json.dumps(v) for v in model_dict[key]}) == 1 for key in ("o", "p", "h", "n", "f"))


def smaller_and_better(library: Library, every: np.ndarray) -> str:
    """The benchmark's models with fewer parameters than BERT-Mini and a higher GLUE; without BERT-Mini in the benchmark,
    than its best homogeneous model (every layer the same)."""
    glue, params = every[:, 0], every[:, 1]
    if BERT_MINI in library.model_dicts:
        reference, name = library.model_dicts.index(BERT_MINI), "BERT-Mini"
    else:
        same = [i for i, d in enumerate(library.model_dicts) if homogeneous(d)]
        reference = max(same, key=lambda i: glue[i])
        name = (f"BERT-Mini ({parameter_count(BERT_MINI):,} parameters) is not among the benchmark's architectures; its best "
                f"homogeneous model (of {len(same)}) is `{library.model_dicts[reference]}`")
    better = np.flatnonzero((params < params[reference]) & (glue > glue[reference]))
    lines = [f"{name}: GLUE {glue[reference]:.2f}, {params[reference]:,.0f} parameters. {len(better)} models are smaller and "
             "score higher; the best five:"]
    lines += [f"- GLUE {glue[i]:.2f}, {params[i]:,.0f} parameters ({params[reference] / params[i]:.2f}x smaller): "
              f"`{library.model_dicts[i]}`" for i in better[np.argsort(-glue[better])][:5]]
    if len(better):
        smallest = better[np.argmin(params[better])]
        lines.append(f"- the smallest that scores higher: GLUE {glue[smallest]:.2f} at {params[smallest]:,.0f} parameters "
                     f"({params[reference] / params[smallest]:.2f}x smaller): `{library.model_dicts[smallest]}`")
    return "\n".join(lines) + "\n"


def plot(path: Path, curves: dict[str, np.ndarray], every: np.ndarray, example: np.ndarray, budget: int, cost: str,
         example_run: str) -> None:
    """Write :func:`figure` as a PNG."""
    fig = figure(curves, every, example, budget, cost, example_run)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def figure(curves: dict[str, np.ndarray], every: np.ndarray, example: np.ndarray, budget: int, cost: str = "params",
           example_run: str = "boshnas, seed 1") -> plt.Figure:
    """Left: each strategy's mean hypervolume share per evaluation (whole-number ticks); right: the true front and one run
    (``example``, the models that ``example_run`` evaluated)."""
    cost_label = COST_LABELS.get(cost, cost)
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.5))
    steps = np.arange(1, budget + 1)
    for strategy, runs in curves.items():
        left.plot(steps, np.nanmean(runs, axis=0), label=f"{strategy} ({len(runs)} seeds)")
    left.plot(steps, [random_expected_hypervolume_share(every, [True, False], k) for k in steps], "k--",
              label="random, exact expectation")
    left.set(xlabel="evaluated models", ylabel="hypervolume / true front's (mean)",
             title=f"NAS-Bench-BERT: GLUE score (mean of 8 dev tasks) x {cost_label}")
    count_axis(left.xaxis)
    left.legend(fontsize=8)
    front = pareto_mask(as_minimisation(every, [True, False]))
    right.scatter(every[:, 1], every[:, 0], s=4, c="lightgrey", label=f"all {len(every)} architectures")
    order = np.argsort(every[front, 1])
    right.step(every[front, 1][order], every[front, 0][order], where="post", color="k", label="true front")
    right.scatter(example[:, 1], example[:, 0], s=16, c="C0", label=f"{example_run}: {len(example)} evaluated")
    right.set(xlabel=cost_label, ylabel="GLUE score (NAS-Bench-BERT)", title="the front, and what one search evaluated")
    (count_axis if cost in COST_LABELS else quantity_axis)(right.xaxis)
    right.legend(fontsize=8)
    return fig


def front_runs(args: argparse.Namespace, library_path: Path, bench: Path,
               every: np.ndarray) -> tuple[dict[str, list[np.ndarray]], dict[str, np.ndarray]]:
    """Each strategy's front searches of GLUE x ``--cost``: per seed, the evaluated models' (GLUE, cost) in order, and
    their hypervolume-share curves (seeds, budget)."""
    common = ["--budget", str(args.budget), "--num_init", str(args.num_init), "--objectives", "glue", args.cost]
    prefix = "front" if args.cost == "params" else f"front_{args.cost}"  # folders of other costs never resume these
    found, curves = {}, {}
    for strategy in args.strategies:
        found[strategy] = [search(library_path, bench, args.output_dir / f"{prefix}_{strategy}_seed{seed}",
                                  [*common, "--strategy", strategy, "--seed", str(seed)]) for seed in args.seeds]
        curves[strategy] = np.stack([hypervolume_fraction_curve(v, every, [True, False], args.budget) for v in found[strategy]])
        print(f"{strategy}: hypervolume share after {args.budget}: {np.nanmean(curves[strategy][:, -1]):.3f}", flush=True)
    return found, curves


def one_model_line(found: dict[str, list[np.ndarray]], every: np.ndarray, budget: int) -> str:
    """How much of each strategy's share after ``budget`` evaluations rides on the benchmark's best-scoring model alone.

    That model alone sets the front beyond its own cost, so missing it costs a share no other find
    makes up; and on a benchmark whose best scores differ by less than one training's noise, which
    model is best is partly which training was lucky. Each strategy's mean share is given as it is and
    as it would be with that model among its evaluations.
    """
    best = every[np.nanargmax(every[:, 0])]
    parts = []
    for strategy, runs in found.items():
        first = [v[:budget] for v in runs]
        share = np.mean([hypervolume_fraction_curve(v, every, [True, False], budget)[-1] for v in first])
        added = np.mean([hypervolume_fraction_curve(np.vstack([v, best]), every, [True, False], len(v) + 1)[-1] for v in first])
        hits = sum(bool(np.any(np.all(np.isclose(v, best), axis=1))) for v in first)
        parts.append(f"{strategy} {share:.3f} -> {added:.3f} (it found the model in {hits} of {len(first)} runs)")
    return (f"\nOne model's part: the benchmark's best-scoring model (GLUE {best[0]:.2f}) alone sets the front beyond its "
            f"cost. Mean share after {budget} evaluations as found -> had that model been among them: " + "; ".join(parts) + ".\n")


def cap_gaps(args: argparse.Namespace, library_path: Path, bench: Path) -> dict[str, list[float]]:
    """Each strategy's best GLUE within ``--cap_budget`` evaluations under BERT-Mini's encoder size, per seed."""
    cap = parameter_count(BERT_MINI, "encoder")
    return {strategy: [search(library_path, bench, args.output_dir / f"cap_{strategy}_seed{seed}", [
        "--budget", str(args.cap_budget), "--num_init", str(args.num_init), "--max_encoder_params", str(cap),
        "--strategy", strategy, "--seed", str(seed)])[:, 0].max() for seed in args.seeds] for strategy in args.strategies}


def main(argv: list[str] | None = None) -> str:
    args = parse_args(argv)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    library_path, bench = nasbench_files(args)
    library = Library.load(library_path)
    cost = parse_objective(args.cost)
    every = known_values(ObjectiveSet([Score("glue", True), cost]), library, str(bench), "glue")
    found, curves = front_runs(args, library_path, bench, every)
    reference = {REFERENCE: informed_reference(library, every, args.seeds, args.num_init, args.budget)} if cost.cheap else {}

    sizes = known_values(ObjectiveSet([Score("glue", True), ParameterCount("params", False, "total")]), library, str(bench), "glue")
    encoder = ParameterCount("encoder_params", False, "encoder")
    cap = parameter_count(BERT_MINI, "encoder")
    allowed = ObjectiveSet([encoder]).column(library, encoder) <= cap
    gaps = cap_gaps(args, library_path, bench)

    text = (f"## GLUE x {COST_LABELS.get(args.cost, args.cost)}: hypervolume share of the true front ({len(args.seeds)} seeds, "
            f"--num_init {args.num_init})\n\n" + front_table(curves | reference, args.budget, every)
            + (REFERENCE_NOTE + additivity_line(library, every) if reference else "") + one_model_line(found, every, min(30, args.budget))
            + f"\n## Best GLUE under a size cap ({args.cap_budget} evaluations)\n\n"
            + cap_table(gaps, every[allowed, 0], cap, args.cap_budget) + "\n## Smaller and better than BERT-Mini\n\n"
            + smaller_and_better(library, sizes))
    (args.output_dir / "multi_objective.md").write_text(text)
    shown = "boshnas" if "boshnas" in found else next(iter(found))  # the legend names the run the right panel shows
    plot(args.output_dir / "multi_objective.png", curves, every, found[shown][0], args.budget, args.cost,
         f"{shown}, seed {args.seeds[0]}")
    print(text + f"\nplot: {args.output_dir / 'multi_objective.png'}")
    return text


if __name__ == "__main__":
    main()
