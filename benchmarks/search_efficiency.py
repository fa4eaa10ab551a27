"""How many trainings each search strategy needs to find a top model, on NAS-Bench-BERT and on the synthetic benchmark.

    python benchmarks/search_efficiency.py                       # every strategy x 10 seeds, both benchmarks (~30 min on 2 cores)
    python benchmarks/search_efficiency.py --seeds 1 2 3 --benchmarks nasbench --strategies boshnas tpe

Every (benchmark, strategy, seed) is an ordinary search with the inline executor and scores looked up
in the benchmark file, kept in --output_dir (an interrupted benchmark resumes). The table gives the
best score after 10/20/30/50 evaluations (mean ± sample std over seeds), the mean number of
evaluations to reach the benchmark's top 1% (over the seeds that reached it) and the share of seeds
that reached it within 30 and within 50, and how many of the benchmark's best tenth each search
evaluated among its first 30, beside random search's exact expectation (computed from the
benchmark's scores, not sampled). A line under the table says how the "within 30" counts move when
the top 1% ends one model sooner or later: on NAS-Bench-BERT the best tenth spread less than one
training's noise, so which search reaches "the top 1%" first can turn on one model. It also times
one BOSHNAS proposal round with 100 scored models on the 9,312-model test library.
Writes <output_dir>/search_efficiency.md and .png.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import shlex
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy.special import comb  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402
from sklearn.linear_model import RidgeCV  # noqa: E402
from sklearn.model_selection import KFold, cross_val_predict  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's code, even where another checkout is installed in editable mode

from embeddings.design_space import load_design_space  # noqa: E402
from embeddings.library import Library  # noqa: E402
from flexibert.search.benchmarks import benchmark_index, synthetic_scores  # noqa: E402
from flexibert.search.comparison import (  # noqa: E402
    best_curve,
    evaluations_to,
    mean_and_spread,
    random_expected_best,
    random_expected_evaluations,
    random_hit_chance,
)
from flexibert.search.controller import run_search  # noqa: E402
from flexibert.search.report import count_axis  # noqa: E402
from flexibert.search.settings import parse_args as search_args  # noqa: E402
from flexibert.search.strategies import STRATEGIES, Boshnas, BoshnasSettings, SearchContext  # noqa: E402
from flexibert.search.strategies.encoding import ChoiceEncoding  # noqa: E402
from flexibert.utils.files import write_json_atomic  # noqa: E402

NASBENCH = REPO.parent / "shared" / "data" / "nasbench_bert" / "nasbench_bert_glue.json"
BUDGETS = (10, 20, 30, 50)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--benchmarks", nargs="+", choices=("nasbench", "synthetic"), default=["nasbench", "synthetic"])
    parser.add_argument("--nasbench_file", type=Path, default=NASBENCH, help="NAS-Bench-BERT's GLUE scores")
    parser.add_argument("--strategies", nargs="+", default=[s for s in ("boshnas", "gp", "tpe", "evolution", "random") if s in STRATEGIES])
    parser.add_argument("--seeds", nargs="+", type=int, default=list(range(1, 11)))
    parser.add_argument("--budget", type=int, default=50)
    parser.add_argument("--num_init", type=int, default=5)
    parser.add_argument("--output_dir", type=Path, default=REPO / "runs" / "search_efficiency")
    parser.add_argument("--skip_timing", action="store_true", help="do not time BOSHNAS's proposal round")
    parser.add_argument("--score_noise", type=float, default=0.0,
                        help="std of Gaussian noise added to each NAS-Bench-BERT entry's score: a noisier GLUE-like score (as "
                             "one small task's), to see that a setting does not rest on this file's noise level")
    parser.add_argument("--noise_seed", type=int, default=0, help="seed of the --score_noise draws")
    parser.add_argument("--search_flags", default="", help="more run_boshnas.py flags for every search, in one string "
                        "(e.g. --search_flags='--prob_random 0'), to measure a setting against the defaults")
    return parser.parse_args(argv)


def nasbench_files(args: argparse.Namespace) -> tuple[Path, Path]:
    """The library of NAS-Bench-BERT's 491 architectures (built once) and the benchmark file itself."""
    if not args.nasbench_file.is_file():
        sys.exit(f"error: {args.nasbench_file} not found; NAS-Bench-BERT lives in ../shared/data (see its README)")
    library_path = args.output_dir / "nasbench_library.json"
    if not library_path.is_file():
        entries = json.loads(args.nasbench_file.read_text())["entries"]
        with contextlib.redirect_stdout(io.StringIO()):
            library = Library.from_model_dicts([e["model_dict"] for e in entries])
            library.build_embeddings(num_neighbors=30, seed=0)
        library.save(library_path)
    return library_path, args.nasbench_file


def noisy_nasbench_files(args: argparse.Namespace) -> tuple[Path, Path]:
    """NAS-Bench-BERT's library and, with ``--score_noise``, a copy of its file with seeded Gaussian noise added to
    each entry's scores (repeated architectures get independent draws, so they stay repeated measurements)."""
    library_path, bench = nasbench_files(args)
    if not args.score_noise:
        return library_path, bench
    data = json.loads(bench.read_text())
    draws = np.random.default_rng(args.noise_seed).normal(0.0, args.score_noise, len(data["entries"]))
    for entry, draw in zip(data["entries"], draws, strict=True):
        entry["scores"] = {name: value + float(draw) for name, value in entry["scores"].items()}
    return library_path, write_json_atomic(args.output_dir / f"{runs_folder(args, 'nasbench')}.json", data)


def runs_folder(args: argparse.Namespace, key: str) -> str:
    """Where a benchmark's runs are kept: apart for every noise level, so that a resumed benchmark never mixes them."""
    return f"{key}_noise{args.score_noise:g}_seed{args.noise_seed}" if key == "nasbench" and args.score_noise else key


def test_library(args: argparse.Namespace) -> Library:
    """The 9,312-model test library (2 layers per stack), built once."""
    path = args.output_dir / "test_library.json"
    if not path.is_file():
        library = Library.from_design_space(load_design_space(REPO / "design_space" / "design_space_test.yaml"), layers_per_stack=2)
        library.build_embeddings(num_neighbors=30, seed=0)
        library.save(path)
    return Library.load(path)


def synthetic_files(args: argparse.Namespace) -> tuple[Path, Path]:
    library_path, bench = args.output_dir / "test_library.json", args.output_dir / "synthetic_benchmark.json"
    library = test_library(args)
    if not bench.is_file():
        bench.write_text(json.dumps({"entries": synthetic_scores(library, seed=0)}))
    return library_path, bench


def run_one(library: Path, bench: Path, strategy: str, seed: int, args: argparse.Namespace, run_dir: Path) -> list[float]:
    """The scores of one search in evaluation order (resumed if it exists)."""
    argv = ["--dataset_file", str(library), "--benchmark_file", str(bench), "--executor", "inline", "--strategy", strategy,
            "--seed", str(seed), "--budget", str(args.budget), "--num_init", str(args.num_init), "--run_dir", str(run_dir),
            *shlex.split(args.search_flags)]
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "controller.log", "a") as log, contextlib.redirect_stdout(log):
        state = run_search(search_args(argv))
    return [state.candidates[h].score for h in state.finished]


def table(name: str, runs: dict[str, list[list[float]]], scores: np.ndarray, args: argparse.Namespace) -> str:
    """The markdown table of one benchmark, random search's exact expectation last."""
    distinct = np.sort(scores)[::-1]
    hits, threshold = top_one_percent(scores)
    budgets = [b for b in BUDGETS if b <= args.budget]
    early, tenth = min(30, args.budget), best_tenth(scores)
    good = scores[tenth].min()
    lines = [f"### {name}: {len(distinct)} architectures, best {distinct[0]:.2f}, top 1% = {hits} at >= {threshold:.2f}", "",
             "| strategy | " + " | ".join(f"best@{b}" for b in budgets) + " | evaluations to a top-1% model | within 30 | within 50 "
             f"| best-tenth models in the first {early} |",
             "|---|" + "---|" * (len(budgets) + 4)]
    for strategy, found in runs.items():
        curves = np.stack([best_curve(scores_, args.budget) for scores_ in found])
        needed = [evaluations_to(scores_, threshold) for scores_ in found]
        reached = [n for n in needed if n is not None]
        mean_needed = f"{np.mean(reached):.1f} ({len(reached)}/{len(found)} seeds)" if reached else f"- (0/{len(found)} seeds)"
        within = [sum(n is not None and n <= limit for n in needed) for limit in (30, 50)]
        lines.append(f"| {strategy} | " + " | ".join(mean_and_spread(curves[:, b - 1]) for b in budgets)
                     + f" | {mean_needed} | {within[0]}/{len(found)} | {within[1]}/{len(found)} | "
                     + mean_and_spread(np.array([good_models_found(s, good, early) for s in found]), 1) + " |")
    lines.append("| random search, exact expectation | " + " | ".join(f"{random_expected_best(scores, b):.2f}" for b in budgets)
                 + f" | {random_expected_evaluations(len(scores), hits):.1f} on average | "
                 + f"{random_hit_chance(len(scores), hits, 30):.0%} | {random_hit_chance(len(scores), hits, 50):.0%} | "
                 + f"{early * tenth.sum() / len(scores):.1f} |")
    return "\n".join(lines) + "\n\n" + where_the_top_ends(runs, distinct, hits, early) + "\n"


def good_models_found(found: list[float], good: float, evaluations: int) -> int:
    """How many of the first ``evaluations`` scores are at least ``good`` (the best tenth's lowest score).

    Which of the best tenth is in the top 1% is mostly which training was lucky (see
    what_the_data_allows), so the first top-1% model is a draw among the good models a search finds;
    how many good models it finds is the part a search's model of the space decides.
    """
    return int(np.sum(np.asarray(found[:evaluations]) >= good))


def where_the_top_ends(runs: dict[str, list[list[float]]], distinct: np.ndarray, hits: int, evaluations: int) -> str:
    """Per strategy, the seeds that reached one of the best k models within ``evaluations``, for k around the top 1%'s
    ``hits``: a strategy that keeps finding one model at the top 1%'s edge leads at k = hits and not at k = hits - 1."""
    ks = sorted({max(1, hits - 1), hits, hits + 1, 2 * hits})
    cells = []
    for strategy, found in runs.items():
        reached = [sum(evaluations_to(s[:evaluations], distinct[k - 1]) is not None for s in found) for k in ks]
        cells.append(f"{strategy} {' / '.join(map(str, reached))} of {len(found)}")
    return (f"Seeds that reached one of the best {' / '.join(map(str, ks))} models within {evaluations} evaluations: "
            + "; ".join(cells) + ".")


def plot(ax: plt.Axes, name: str, runs: dict[str, list[list[float]]], scores: np.ndarray, budget: int) -> None:
    steps = np.arange(1, budget + 1)
    for strategy, found in runs.items():
        ax.plot(steps, np.nanmean(np.stack([best_curve(s, budget) for s in found]), axis=0), label=f"{strategy} ({len(found)} seeds)")
    ax.plot(steps, [random_expected_best(scores, k) for k in steps], "k--", label="random, exact expectation")
    ax.set(xlabel="evaluated models", ylabel="best score so far (mean over seeds)", title=name)
    count_axis(ax.xaxis)
    ax.legend(fontsize=8)


def boshnas_round_seconds(args: argparse.Namespace, scored: int = 100, rounds: int = 3) -> float:
    """Median seconds of one BOSHNAS proposal round with ``scored`` models known, on the 9,312-model test library."""
    library = test_library(args)
    truth = {e["model_hash"]: e["scores"]["glue"] for e in synthetic_scores(library, seed=0)}
    order = np.random.default_rng(0).permutation(len(library))
    strategy, seconds = Boshnas(BoshnasSettings(prob_uncertainty=0.0, prob_random=0.0)), []
    torch.set_num_threads(1)
    for round_index in range(rounds + 1):
        known = {library.hashes[i]: truth[library.hashes[i]] for i in order[: scored - rounds + round_index]}
        start = time.perf_counter()
        strategy.propose(SearchContext(library, known, set(known)), 1, np.random.default_rng(round_index), round_index)
        if round_index:  # the first round fits the surrogate from scratch; later ones are warm-started, as in a search
            seconds.append(time.perf_counter() - start)
    return float(np.median(seconds))


def held_out_predictions(inputs: np.ndarray, scores: np.ndarray, shuffle: int = 0, model=None) -> np.ndarray:
    """Each model's score as a ridge regression (or ``model``) fitted on the nine tenths of the models it is not in
    predicts it (``shuffle`` seeds which models share a tenth, the same tenths whatever the model)."""
    folds = KFold(10, shuffle=True, random_state=shuffle)
    return cross_val_predict(model or RidgeCV(alphas=np.logspace(-2, 3, 20)), inputs, scores, cv=folds)


def greedy_by_prediction(predicted: np.ndarray, scores: np.ndarray, budget: int = 30) -> tuple[int, float]:
    """Evaluating models best predicted first: (how many until the first top-1% model, the best score within ``budget``)."""
    order = np.argsort(-predicted, kind="stable")
    top = scores >= top_one_percent(scores)[1]
    return int(np.flatnonzero(top[order])[0]) + 1, float(scores[order[:budget]].max())


def top_one_percent(scores: np.ndarray) -> tuple[int, float]:
    """(how many models the top 1% holds, the lowest score among them): the "top-1% model" of every figure here."""
    hits = math.ceil(0.01 * len(scores))
    return hits, float(np.sort(scores)[::-1][hits - 1])


def best_tenth(scores: np.ndarray) -> np.ndarray:
    """Which models are the best tenth by score (a mask): the models among which the top 1% must be told apart."""
    return scores >= np.quantile(scores, 0.9)


def top_tenth_agreement(predicted: np.ndarray, scores: np.ndarray) -> float:
    """Spearman of ``predicted`` against ``scores`` among the best tenth of the models (by score): how well a ranking
    tells the top models apart, which is what reaching the top 1% needs (over all models it mostly tells good from bad)."""
    best = best_tenth(scores)
    return float(spearmanr(predicted[best], scores[best])[0])


def training_noise(bench: Path) -> tuple[float, int] | None:
    """(one training's standard deviation, how many architectures it rests on) from the architectures the benchmark
    trained twice, or None without any: a difference of two trainings has twice one's variance."""
    differences = np.array([s[0]["glue"] - s[1]["glue"] for s in _measurements(bench).values() if len(s) == 2])
    return (float(np.sqrt(np.mean(differences**2) / 2)), len(differences)) if len(differences) else None


def what_the_data_allows(library_path: Path, bench: Path, shuffles: int = 5) -> str:
    """How soon a surrogate that had seen 90% of the benchmark would reach its top 1%, greedily: a reference for any search.

    A ridge regression on the model dicts' one-hot choices is fitted on nine tenths of the models and
    ranks the tenth it did not see (10-fold cross-validation); ranking all models by those
    predictions, the position of the first top-1% model is how many evaluations a search with such a
    surrogate from the start would need. Which models share a fold moves that position by a few
    places, so it is given over ``shuffles`` shuffles of the folds. How well it ranks the best tenth
    among themselves, and how their spread compares with one training's noise (from the repeated
    architectures), say how much of "which model is top 1%" any search can predict.
    """
    library = Library.load(library_path)
    index, _ = benchmark_index(bench)
    scores = np.array([index[h]["glue"] for h in library.hashes])
    onehot = ChoiceEncoding.of(library, tied=False).one_hot()
    predictions = [held_out_predictions(onehot, scores, shuffle) for shuffle in range(shuffles)]
    firsts, bests = zip(*(greedy_by_prediction(p, scores) for p in predictions), strict=True)
    tenth = [top_tenth_agreement(p, scores) for p in predictions]
    spread = scores[best_tenth(scores)].std(ddof=1)
    noise = training_noise(bench)
    noise_text = (f", where one training's noise has std {noise[0]:.2f} ({noise[1]} architectures trained twice)"
                  if noise else "")
    return (f"What the data allows: a ridge regression on the choices, fitted on 90% of the models (10-fold), ranks "
            f"unseen models with Spearman {spearmanr(predictions[0], scores)[0]:.2f}; ranked by it, the first top-1% model "
            f"is number {firsts[0]} ({min(firsts)}-{max(firsts)} over {shuffles} shuffles of the folds), and the best of "
            f"its first 30 scores {np.mean(bests):.2f} on average over them (the benchmark's best, {scores.max():.2f}, "
            f"in {sum(b == scores.max() for b in bests)} of {shuffles}). Among the best tenth of the models it ranks with "
            f"Spearman {min(tenth):.2f}-{max(tenth):.2f}, and their scores spread by std {spread:.2f}{noise_text}.\n")


def knowing_the_best_tenth(scores: np.ndarray, num_init: int, budget: int = 30) -> tuple[float, float, float]:
    """What a search would reach that knew, from its first pick on, which models are the best tenth and nothing more:
    (mean evaluations to a top-1% model, the chance it gets there within ``budget``, its expected best after ``budget``).

    It takes ``num_init`` random models as every search does, then the best tenth's untried models in random
    order: it cannot tell them apart, as no ranking from the benchmark can (see what_the_data_allows). This is
    the ceiling of any search whose model of the space ranks the best tenth no better than chance; computed
    exactly, not sampled. The top 1% lies inside the best tenth, so the first top-1% model always comes.
    """
    n, m, follow = len(scores), num_init, max(0, budget - num_init)
    ordered = np.sort(scores)[::-1]
    g, t = int(best_tenth(scores).sum()), int(np.sum(scores >= top_one_percent(scores)[1]))
    in_init = [math.prod((n - t - i) / (n - i) for i in range(k)) * t / (n - k) for k in range(m)]  # first top-1% at k+1
    missed = {j: _init_share(n, g, t, m, j) for j in range(m + 1)}  # no top-1% model among the first m, j others of the tenth
    evaluations = sum((k + 1) * p for k, p in enumerate(in_init)) + sum(p * (m + (g - j + 1) / (t + 1)) for j, p in missed.items())
    within = sum(in_init[:budget]) + sum(p * (1 - _none_drawn(g - j, t, follow)) for j, p in missed.items())
    untouched = [_untouched(n, g, k, m, follow) for k in range(1, n)]  # none of the k best among the first `budget`
    best = ordered[-1] + sum((ordered[k - 1] - ordered[k]) * (1 - untouched[k - 1]) for k in range(1, n))
    return float(evaluations), float(within), float(best)


def knowing_the_best_tenth_line(scores: np.ndarray, num_init: int) -> str:
    """knowing_the_best_tenth as the line under the table."""
    evaluations, within, best = knowing_the_best_tenth(scores, num_init)
    return (f"Knowing the best tenth: a search that began with {num_init} random models, as these do, and then knew which "
            f"models are the best tenth (>= {scores[best_tenth(scores)].min():.2f}) but not their order among themselves "
            f"would reach a top-1% model after {evaluations:.1f} evaluations on average, within 30 with chance "
            f"{within:.0%}, and best@30 {best:.2f} (exact expectations): as much as a search can expect whose model of the "
            f"space ranks the best tenth no better than chance.\n")


def _untouched(n: int, g: int, k: int, m: int, follow: int) -> float:
    """The chance that none of the k best models is among the m random ones and the ``follow`` picks from the tenth after
    them. With k beyond the tenth, any pick from it is one of them."""
    if k <= g:
        return sum(_init_share(n, g, k, m, j) * _none_drawn(g - j, k, follow) for j in range(m + 1))
    return 0.0 if follow else float(comb(n - k, m) / comb(n, m))


def _init_share(n: int, g: int, k: int, m: int, j: int) -> float:
    """The chance that m random models of n hold none of the k best and exactly j of the best tenth's other g - k."""
    return float(comb(g - k, j) * comb(n - g, m - j) / comb(n, m))


def _none_drawn(size: int, marked: int, draws: int) -> float:
    """The chance that ``draws`` models drawn without replacement from ``size``, ``marked`` of them marked, hold no marked one."""
    if marked == 0:
        return 1.0
    return 0.0 if draws >= size else float(comb(size - marked, draws) / comb(size, draws))


def _measurements(bench: Path) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {}
    for entry in json.loads(Path(bench).read_text())["entries"]:
        found.setdefault(json.dumps(entry["model_dict"], sort_keys=True), []).append(entry["scores"])
    return found


def main(argv: list[str] | None = None) -> str:
    args = parse_args(argv)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    noise = f", + N(0, {args.score_noise:g}²) noise" if args.score_noise else ""
    sources = {"nasbench": (f"NAS-Bench-BERT (GLUE{noise})", noisy_nasbench_files),
               "synthetic": ("synthetic benchmark, test library", synthetic_files)}
    report, panels = [], []
    for key in args.benchmarks:
        name, files = sources[key]
        library, bench = files(args)
        scores = np.array([s["glue"] for s in benchmark_index(bench)[0].values()])
        runs: dict[str, list[list[float]]] = {}
        for strategy in args.strategies:
            runs[strategy] = []
            for seed in args.seeds:
                started = time.perf_counter()
                run_dir = args.output_dir / runs_folder(args, key) / f"{strategy}_seed{seed}"
                runs[strategy].append(run_one(library, bench, strategy, seed, args, run_dir))
                print(f"{key} {strategy} seed {seed}: best {max(runs[strategy][-1]):.2f} ({time.perf_counter() - started:.0f}s)",
                      file=sys.stderr, flush=True)
        report.append(table(name, runs, scores, args) + "\n" + what_the_data_allows(library, bench) + "\n"
                      + knowing_the_best_tenth_line(scores, args.num_init))
        panels.append((name, runs, scores))
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 4.5), squeeze=False)
    for ax, (name, runs, scores) in zip(axes[0], panels, strict=True):
        plot(ax, name, runs, scores, args.budget)
    fig.savefig(args.output_dir / "search_efficiency.png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    if not args.skip_timing:
        report.append(f"BOSHNAS proposal round with 100 scored models on the 9,312-model test library: "
                      f"{boshnas_round_seconds(args):.2f} s (median of 3 warm rounds, 1 thread)\n")
    text = "\n".join(report)
    (args.output_dir / "search_efficiency.md").write_text(text)
    print(text)
    print(f"plot: {args.output_dir / 'search_efficiency.png'}")
    return text


if __name__ == "__main__":
    main()
