"""Bayesian optimisation with a Gaussian process on the library embeddings: the textbook baseline for BOSHNAS."""

from __future__ import annotations

import argparse
import warnings

import numpy as np
from scipy.stats import norm
from sklearn.exceptions import ConvergenceWarning
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

from flexibert.search.layout import RunLayout
from flexibert.search.strategies.base import SearchContext, Strategy


class GaussianProcessBO(Strategy):
    """GP regression (Matern 5/2 + noise) on the embeddings, refit every round; expected improvement over every untried entry."""

    name = "gp"

    @classmethod
    def from_args(cls, args: argparse.Namespace, run: RunLayout) -> GaussianProcessBO:
        return cls(seed=args.seed)

    def __init__(self, xi: float = 0.01, seed: int = 0):
        self.xi, self.seed = xi, seed

    def propose(self, context: SearchContext, count: int, rng: np.random.Generator, round_index: int) -> list[tuple[int, str]]:
        indices, scores = context.scored()
        dims = context.features.shape[1]
        kernel = ConstantKernel(1.0) * Matern(length_scale=np.ones(dims), nu=2.5) + WhiteKernel(1e-2)
        gp = GaussianProcessRegressor(kernel, normalize_y=True, n_restarts_optimizer=2, random_state=self.seed + round_index)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # length scales at their bounds on tiny data sets are expected
            gp.fit(context.features[indices], scores)
        candidates = np.flatnonzero(context.available)
        improvement = np.concatenate([self._expected_improvement(gp, context.features[chunk], scores.max())
                                      for chunk in np.array_split(candidates, max(1, len(candidates) // 8192))])
        order = np.argsort(-improvement, kind="stable")[:count]
        return [(int(candidates[i]), "gp-ei") for i in order]

    def _expected_improvement(self, gp: GaussianProcessRegressor, x: np.ndarray, best: float) -> np.ndarray:
        mean, std = gp.predict(x, return_std=True)
        std = np.maximum(std, 1e-9)
        z = (mean - best - self.xi) / std
        return (mean - best - self.xi) * norm.cdf(z) + std * norm.pdf(z)
