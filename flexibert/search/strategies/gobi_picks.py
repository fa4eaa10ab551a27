"""BOSHNAS on one score: GOBI's optima on the surrogate's bound, snapped to untried library models.

The strategy (boshnas.py) fits the surrogate; an optimisation round then asks here for its models.
GOBI starts from the best scored models (half the restarts: the optimum is likely near them) and from
random allowed ones (under a cap, a start among models it forbids leads GOBI astray), follows the
acquisition's gradient in the input space, and each optimum snaps to its nearest untried model. The
snapped models are ordered by their own acquisition; when restarts collapse onto fewer models than a
round needs, the best acquisition values among the other untried models fill the round.
"""

from __future__ import annotations

import numpy as np

from flexibert.search.boshnas.gobi import acquisition, gobi, snap_to_library
from flexibert.search.boshnas.surrogate import Surrogate
from flexibert.search.strategies.base import SearchContext
from flexibert.search.strategies.boshnas_settings import BoshnasSettings


def gobi_picks(context: SearchContext, surrogate: Surrogate, inputs: np.ndarray, count: int, rng: np.random.Generator,
               settings: BoshnasSettings, round_index: int, use_aleatoric: bool) -> list[int]:
    """Library indices of ``count`` untried models, best acquisition first.

    ``inputs`` are every library model's surrogate inputs (GOBI's space); GOBI's seed depends on the round, so a
    resumed search repeats its probes.
    """
    s = settings
    starts = inputs[_starts(context, s.restarts, rng)]
    points = gobi(surrogate, starts, inputs.min(axis=0), inputs.max(axis=0), k1=s.k1, k2=s.k2, use_aleatoric=use_aleatoric,
                  second_order=s.second_order, seed=s.seed * 100_003 + round_index)
    found = list(dict.fromkeys(int(i) for i in snap_to_library(points, inputs, context.available, metric=s.snap_metric)))
    found.sort(key=dict(zip(found, _bound(surrogate, inputs[found], s, use_aleatoric), strict=True)).__getitem__)
    if len(found) < count:
        rest = context.available_besides(found)
        values = _bound(surrogate, inputs[rest], s, use_aleatoric)
        found += [int(i) for i in rest[np.argsort(values, kind="stable")][: count - len(found)]]
    return found[:count]


def _starts(context: SearchContext, restarts: int, rng: np.random.Generator) -> np.ndarray:
    """GOBI's start points: the best scored models (half the restarts), then random models the caps allow."""
    indices, scores = context.scored()
    top = indices[np.argsort(-scores, kind="stable")][: restarts // 2]
    allowed = np.flatnonzero(context.allowed)
    return np.concatenate([top, allowed[rng.integers(0, len(allowed), size=restarts - len(top))]])


def _bound(surrogate: Surrogate, x: np.ndarray, settings: BoshnasSettings, use_aleatoric: bool) -> np.ndarray:
    """The acquisition of the models with inputs ``x``: a lower bound on the loss, so lower is better."""
    mean, epistemic, aleatoric = surrogate.predict(x)
    return acquisition(mean, epistemic, aleatoric, settings.k1, settings.k2, use_aleatoric)
