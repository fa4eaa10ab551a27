"""Comparing search strategies fairly: best-so-far curves at equal numbers of evaluations, and random search's exact curve.

A run that stopped before the budget has no best score after its last evaluation (NaN), so it is
never compared as if it had gone on; tables count how many runs reached each budget. Spreads are
sample standard deviations. Random search needs no sampling: for a library whose scores are all
known, its expected best after k evaluations and its chance of reaching a threshold follow from
order statistics of drawing without replacement.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import gammaln


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


def mean_and_spread(values: np.ndarray) -> str:
    """``mean ± sample std`` of the finite values, with how many runs they are when some runs did not get there."""
    finite = values[np.isfinite(values)]
    if not len(finite):
        return "-"
    spread = finite.std(ddof=1) if len(finite) > 1 else 0.0
    text = f"{finite.mean():.2f} ± {spread:.2f}"
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
