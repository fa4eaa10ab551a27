"""Comparing search strategies fairly: best-so-far curves at equal numbers of evaluations, and random search's exact curve.

A run that stopped before the budget has no best score after its last evaluation (NaN), so it is
never compared as if it had gone on; tables count how many runs reached each budget. Spreads are
sample standard deviations. Random search needs no sampling: for a library whose scores are all
known, its expected best after k evaluations and its chance of reaching a threshold follow from
order statistics of drawing without replacement.

With several objectives a run is measured by the hypervolume its evaluated models dominate, as a
share of what the benchmark's true front dominates (every model's values are known on a benchmark).
For two objectives random search's expected share is exact too: a point of the box is dominated by a
random draw unless the draw misses every model that dominates it.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import gammaln

from embeddings.library import Library
from flexibert.search.benchmarks import benchmark_index
from flexibert.search.objectives import ObjectiveSet, Score
from flexibert.search.pareto import as_minimisation, hypervolume, hypervolume_curve, reference_point


def best_curve(scores: list[float], budget: int) -> np.ndarray:
    """Best score after each of ``budget`` evaluations; NaN after a run's last one (it stopped early)."""
    curve = np.full(budget, np.nan)
    found = np.maximum.accumulate(np.asarray(scores[:budget], dtype=float)) if scores else np.array([])
    curve[: len(found)] = found
    return curve


def evaluations_to(scores: list[float], threshold: float) -> int | None:
    """How many evaluations a run needed to first score at least ``threshold`` (None: it never did)."""
    hits = np.flatnonzero(np.asarray(scores, dtype=float) >= threshold)
    return int(hits[0]) + 1 if len(hits) else None


def mean_and_spread(values: np.ndarray, digits: int = 2) -> str:
    """``mean ± sample std`` of the finite values, with how many runs they are when some runs did not get there.
    One value has no sample std: it is given alone, since "± 0.00" would claim a spread of none."""
    finite = values[np.isfinite(values)]
    if not len(finite):
        return "-"
    text = f"{finite.mean():.{digits}f}" + (f" ± {finite.std(ddof=1):.{digits}f}" if len(finite) > 1 else "")
    return text if len(finite) == len(values) else f"{text} ({len(finite)} of {len(values)} runs)"


def _log_choose(n: float, k: float) -> float:
    return gammaln(n + 1) - gammaln(k + 1) - gammaln(n - k + 1)


def random_expected_best(scores: np.ndarray, evaluations: int) -> float:
    """Expected best of ``evaluations`` models drawn uniformly without replacement from a library with these scores.

    With the scores sorted ascending, the i-th smallest (1-based) is the best of the draw with
    probability C(i-1, k-1) / C(N, k).
    """
    ordered, total = np.sort(np.asarray(scores, dtype=float)), len(scores)
    ranks = np.arange(1, total + 1)
    usable = ranks >= evaluations
    weights = np.zeros(total)
    weights[usable] = np.exp(_log_choose(ranks[usable] - 1, evaluations - 1) - _log_choose(total, evaluations))
    return float(weights @ ordered)


def random_hit_chance(total: int, hits: int, evaluations: int) -> float:
    """Chance that random search draws one of ``hits`` good models among ``total`` within ``evaluations`` draws."""
    if evaluations > total - hits:
        return 1.0
    return float(1.0 - math.exp(_log_choose(total - hits, evaluations) - _log_choose(total, evaluations)))


def random_expected_evaluations(total: int, hits: int) -> float:
    """Expected number of random draws (without replacement) until the first of ``hits`` good models: (N + 1) / (hits + 1)."""
    return (total + 1) / (hits + 1)


# -- several objectives: hypervolume as a share of the true front's ---------------------------------------------


def known_values(objectives: ObjectiveSet, library: Library, benchmark_file: str, metric: str) -> np.ndarray:
    """(models, objectives) for every library model on a benchmark: cheap objectives computed, the others looked up."""
    index = benchmark_index(benchmark_file)[0]
    columns = []
    for objective in objectives.objectives:
        if objective.cheap:
            columns.append(objectives.column(library, objective))
        else:
            name = metric if isinstance(objective, Score) else objective.name
            columns.append(np.array([index.get(h, {}).get(name, np.nan) for h in library.hashes], dtype=float))
    return np.stack(columns, axis=1)


def hypervolume_reference(values: np.ndarray, maximize: list[bool]) -> np.ndarray:
    """The reference point (minimisation form) of a benchmark whose every value is known (pareto.reference_point)."""
    return reference_point(list(values.T), maximize)


def hypervolume_fraction_curve(found: np.ndarray, every: np.ndarray, maximize: list[bool], budget: int) -> np.ndarray:
    """Hypervolume of the first k evaluated models over the true front's, for k = 1..budget (NaN after a run's last)."""
    reference = hypervolume_reference(every, maximize)
    total = hypervolume(as_minimisation(every, maximize), reference)
    curve = np.full(budget, np.nan)
    if len(found):
        curve[: min(len(found), budget)] = hypervolume_curve(as_minimisation(found[:budget], maximize), reference) / total
    return curve


def random_expected_hypervolume_share(every: np.ndarray, maximize: list[bool], evaluations: int) -> float:
    """Expected hypervolume share (as ``hypervolume_fraction_curve`` measures it) of ``evaluations`` models drawn
    uniformly without replacement from a benchmark of two objectives whose every value is known.

    The models' coordinates cut the reference box into cells; every point of a cell is dominated by
    the same m models (those at or below its lower corner), so the draw misses all of them with
    chance C(N - m, k) / C(N, k), and the expected dominated area is the sum over cells of area x
    (1 - that chance). Exact, no sampling: a benchmark of 500 models has 250,000 cells.
    """
    if every.shape[1] != 2:
        raise ValueError("random search's exact expected hypervolume is computed for two objectives")
    if np.isnan(every).any():
        raise ValueError("random search's expected hypervolume needs every model's values: a random draw may take any "
                         "model, and the benchmark lacks some (NaN)")
    reference = hypervolume_reference(every, maximize)
    points = as_minimisation(every, maximize)
    points = points[(points < reference).all(axis=1)]
    total, k = len(every), evaluations
    xs, ys = (np.append(np.unique(points[:, j]), reference[j]) for j in (0, 1))
    # dominating[i, j]: models with x <= xs[i] and y <= ys[j] (a 2-d cumulative count over the grid of corners)
    counts = np.zeros((len(xs), len(ys)))
    np.add.at(counts, (np.searchsorted(xs, points[:, 0]), np.searchsorted(ys, points[:, 1])), 1)
    dominating = counts.cumsum(axis=0).cumsum(axis=1)[:-1, :-1]
    area = np.outer(np.diff(xs), np.diff(ys))
    covered = np.ones_like(area)  # a draw of k cannot miss more than N - k models
    missable = total - dominating >= k
    covered[missable] = 1.0 - np.exp(_log_choose(total - dominating[missable], k) - _log_choose(total, k))
    return float((area * covered).sum() / hypervolume(points, reference))
