"""BOSHNAS on several objectives: which untried models are expected to add the most hypervolume to the front.

The strategy (boshnas.py) fits one surrogate per objective that only training tells; cheap objectives
(parameters, FLOPs) are known exactly for every model. Here their predictions become proposals: every
untried library model is scored (a cheap objective has no gradient in the embedding space, so GOBI has
nothing to follow), with the reference point of flexibert/search/pareto.py (the scores' median, 1.05 x
the largest cost). For a score against one cheap cost the expected gain over the surrogate's Gaussian
is exact; otherwise each model counts at its confidence bounds. When no model would add any, a random
augmented Chebyshev scalarisation (ParEGO's) picks one.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from flexibert.search.boshnas.surrogate import Surrogate
from flexibert.search.pareto import as_minimisation, expected_hypervolume_improvements, hypervolume_improvements, reference_point
from flexibert.search.strategies.base import SearchContext

CHEBYSHEV_RHO = 0.05  # the augmented scalarisation's linear part: it breaks ties between weakly dominated models


def cost_column(context: SearchContext) -> int | None:
    """Where the objectives are a score against one cost known for every model (parameters, FLOPs): the cost's column."""
    cheap = [o.cheap for o in context.objectives.objectives]
    return cheap.index(True) if len(cheap) == 2 and sum(cheap) == 1 else None


def front_picks(context: SearchContext, surrogates: Mapping[int, Surrogate], inputs: np.ndarray, count: int,
                rng: np.random.Generator, use_aleatoric: bool, k1: float, k2: float) -> list[int]:
    """Library indices of the untried models expected to add the most hypervolume to the front so far, one at a time,
    each pick joining the front at its predicted values before the next; a random scalarisation when none would add any.

    ``surrogates`` maps an objective's position to its surrogate, fitted on ``inputs`` (every library model's).
    """
    candidates = np.flatnonzero(context.available)
    maximize = context.objectives.maximize
    _, observed = context.scored_values()
    predicted = [_predicted(context, j, surrogates.get(j), inputs, candidates, observed[:, j], use_aleatoric)
                 for j in range(len(maximize))]
    means, epistemic, aleatoric = (np.stack(parts, axis=1) for parts in zip(*predicted, strict=True))
    reference = reference_point([_known(context, j, observed[:, j]) for j in range(len(maximize))], maximize)
    front = as_minimisation(observed, maximize)
    known = cost_column(context)
    chosen: list[int] = []
    for _ in range(min(count, len(candidates))):
        gains = _gains(known, front, means, epistemic, aleatoric, reference, k1, k2)
        gains[chosen] = -np.inf
        pick = int(np.argmax(gains)) if gains.max() > 0 else _scalarised_pick(means, front, reference, chosen, rng)
        chosen.append(pick)
        front = np.vstack([front, means[pick][None]])  # the prediction stands in until the real value is known
    return [int(candidates[i]) for i in chosen]


def _gains(known: int | None, front: np.ndarray, means: np.ndarray, epistemic: np.ndarray, aleatoric: np.ndarray,
           reference: np.ndarray, k1: float, k2: float) -> np.ndarray:
    """Each candidate's hypervolume gain: expected (exact) when one of two objectives is a cost known for every model
    (its column ``known``, see :func:`cost_column`), else optimistic.

    A score against a cost known for every model (parameters, FLOPs) is the common front search,
    and there the expectation over the surrogate's Gaussian (both standard deviations) is exact and
    cheap (pareto.expected_hypervolume_improvements); it weighs a small chance of a large gain
    against a likely small one, which an optimistic bound cannot. With other objectives each
    candidate counts at its confidence bounds (k1 epistemic standard deviations, k2 aleatoric).
    """
    if known is not None:
        unknown = 1 - known
        return expected_hypervolume_improvements(front, means[:, known], means[:, unknown],
                                                 np.hypot(epistemic[:, unknown], aleatoric[:, unknown]), reference,
                                                 known_column=known)
    return hypervolume_improvements(front, means - k1 * epistemic - k2 * aleatoric, reference)


def _predicted(context: SearchContext, j: int, surrogate: Surrogate | None, inputs: np.ndarray, candidates: np.ndarray,
               observed: np.ndarray, use_aleatoric: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Objective ``j`` of the candidates in minimisation form and its units: (value, epistemic std, aleatoric std).
    Exact (both stds 0) when cheap; else the surrogate's, the aleatoric std only in the patience phase."""
    objective = context.objectives.objectives[j]
    if objective.cheap:
        values = context.objectives.column(context.library, objective)[candidates]
        return (-values if objective.maximize else values), np.zeros(len(candidates)), np.zeros(len(candidates))
    goodness = observed if objective.maximize else -observed
    scale = (goodness.max() - goodness.min()) / 0.8  # normalised_losses inverted: a loss unit in objective units
    loss, epistemic, aleatoric = surrogate.predict(inputs[candidates])
    value = goodness.min() + (0.9 - loss) * scale
    return -value, epistemic * scale, (aleatoric * scale if use_aleatoric else np.zeros(len(candidates)))


def _known(context: SearchContext, j: int, observed: np.ndarray) -> np.ndarray:
    """What is known of objective ``j``: every library model's value when cheap, else the evaluated models'."""
    objective = context.objectives.objectives[j]
    return context.objectives.column(context.library, objective) if objective.cheap else observed


def _scalarised_pick(points: np.ndarray, front: np.ndarray, reference: np.ndarray, chosen: list[int],
                     rng: np.random.Generator) -> int:
    """Random weights, augmented Chebyshev on a scale from the best known value (0) to the reference (1)."""
    ideal = np.minimum(points.min(axis=0), front.min(axis=0))
    weighted = (points - ideal) / np.maximum(reference - ideal, 1e-12) * rng.dirichlet(np.ones(points.shape[1]))
    scalarised = weighted.max(axis=1) + CHEBYSHEV_RHO * weighted.sum(axis=1)
    scalarised[chosen] = np.inf
    return int(np.argmin(scalarised))
