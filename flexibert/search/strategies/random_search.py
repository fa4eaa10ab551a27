"""Random search: the baseline every other strategy must beat, and the smallest example of a strategy."""

from __future__ import annotations

import numpy as np

from flexibert.search.strategies.base import SearchContext, Strategy, random_available


class RandomSearch(Strategy):
    """Uniformly random untried models (that respect the caps): blind to the objectives, so any number of them."""

    name = "random"
    multi_objective = True

    def propose(self, context: SearchContext, count: int, rng: np.random.Generator, round_index: int) -> list[tuple[int, str]]:
        return [(i, "random") for i in random_available(context, count, rng)]
