"""Regularised evolution (Real et al. 2019): tournament selection in an ageing population."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flexibert.search.strategies.base import SearchContext, Strategy, random_available
from flexibert.utils.cli import setting


@dataclass
class EvolutionSettings:
    population_size: int = setting(10, "the youngest models that form the population")
    tournament_size: int = setting(3, "models sampled per tournament")
    mutation_neighbors: int = setting(10, "a mutation picks among this many nearest library neighbours", flag=None)

    def __post_init__(self) -> None:
        for name in ("population_size", "tournament_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be at least 1")


class RegularizedEvolution(Strategy):
    """Real et al. (2019): tournament selection in an ageing population; a mutation is a random untried library neighbour.

    The population is the youngest finished models, which the journal holds.
    """

    name = "evolution"
    Settings = EvolutionSettings
    flags_title = "regularised evolution (--strategy evolution)"

    def __init__(self, settings: EvolutionSettings | None = None):
        self.settings = settings or EvolutionSettings()

    def recorded_settings(self) -> list[int]:
        """The journal's format for evolution since the first run folders: [population, tournament]."""
        return [self.settings.population_size, self.settings.tournament_size]

    def _mutate(self, context: SearchContext, parent: str, taken: set[int], rng: np.random.Generator) -> int | None:
        available = context.available
        neighbors = [context.library.index(h) for h in context.library.neighbors_of(parent) if h in context.library]
        for pool in (neighbors[: self.settings.mutation_neighbors], neighbors):
            options = [i for i in pool if available[i] and i not in taken]
            if options:
                return int(rng.choice(options))
        return None

    def propose(self, context: SearchContext, count: int, rng: np.random.Generator, round_index: int) -> list[tuple[int, str]]:
        population = list(context.scores)[-self.settings.population_size:]  # the youngest: older models "die"
        chosen: list[tuple[int, str]] = []
        taken: set[int] = set()
        for _ in range(count):
            sample = rng.choice(len(population), size=min(self.settings.tournament_size, len(population)), replace=False)
            parent = max((population[i] for i in sample), key=context.scores.__getitem__)
            child = self._mutate(context, parent, taken, rng)
            method = "mutation"
            if child is None:
                left = [i for i in random_available(context, count + len(taken), rng) if i not in taken]
                if not left:
                    break
                child, method = left[0], "random"
            chosen.append((child, method))
            taken.add(child)
        return chosen
