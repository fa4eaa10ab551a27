"""Regularised evolution (Real et al. 2019): tournament selection in an ageing population, one-choice mutations."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flexibert.search.strategies.base import SearchContext, Strategy
from flexibert.search.strategies.encoding import ChoiceEncoding
from flexibert.utils.cli import setting


@dataclass
class EvolutionSettings:
    population_size: int = setting(10, "the youngest models that form the population")
    tournament_size: int = setting(3, "models sampled per tournament")

    def __post_init__(self) -> None:
        for name in ("population_size", "tournament_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be at least 1")


class RegularizedEvolution(Strategy):
    """Real et al. (2019): tournament selection in an ageing population; a mutation changes one choice of the parent.

    The population is the youngest finished models, which the journal holds. A child is the parent's
    model dict with one choice changed (an operation, a head count, a width, an FF stack, or the depth:
    the last layer repeated or dropped); it is that library model if it is untried, else the untried
    one that differs from it in the fewest choices.
    """

    name = "evolution"
    Settings = EvolutionSettings
    flags_title = "regularised evolution (--strategy evolution)"

    def __init__(self, settings: EvolutionSettings | None = None):
        self.settings = settings or EvolutionSettings()

    def recorded_settings(self) -> list[int]:
        """The journal's format for evolution since the first run folders: [population, tournament]."""
        return [self.settings.population_size, self.settings.tournament_size]

    @staticmethod
    def _changed(choices: dict[str, object], encoding: ChoiceEncoding, rng: np.random.Generator) -> dict[str, object]:
        """``choices`` with one of them set to another value the library uses (unchanged if no choice can change)."""
        mutable = [name for name in choices if len(encoding.options[name]) > 1]
        if not mutable:
            return choices
        name = mutable[int(rng.integers(len(mutable)))]
        others = [value for value in encoding.options[name] if value != choices[name]]
        child = {**choices, name: others[int(rng.integers(len(others)))]}
        return _with_depth(child, choices["l"], encoding) if name == "l" else child

    def propose(self, context: SearchContext, count: int, rng: np.random.Generator, round_index: int) -> list[tuple[int, str]]:
        encoding = ChoiceEncoding.of(context.library)
        population = list(context.scores)[-self.settings.population_size:]  # the youngest: older models "die"
        allowed = context.available.copy()
        chosen: list[tuple[int, str]] = []
        for _ in range(count):
            sample = rng.choice(len(population), size=min(self.settings.tournament_size, len(population)), replace=False)
            parent = max((population[i] for i in sample), key=context.scores.__getitem__)
            child = encoding.nearest(self._changed(encoding.choices(context.library.model_dict(parent)), encoding, rng), allowed, rng)
            if child is None:
                break
            allowed[child] = False
            chosen.append((child, "mutation"))
        return chosen


def _with_depth(child: dict[str, object], old_depth: int, encoding: ChoiceEncoding) -> dict[str, object]:
    """A depth change completed: new layers repeat the old last layer's choices; choices of dropped layers go."""
    depth = child["l"]
    kept = {name: value for name, value in child.items() if encoding.present(name, depth)}
    for name in encoding.names:
        if name not in kept and encoding.present(name, depth):
            kept[name] = child[encoding.name_of(name[0], old_depth - 1)]
    return kept
