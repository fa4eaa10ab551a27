"""Optuna's samplers (TPE, NSGA-II) on the choices of a model dict: the baselines a user gets from a few lines of Optuna.

Each round the study is rebuilt from the journal's scores (every evaluated model told with its real
score, in completion order) and asked for new trials. A trial names depth, then per layer the
operation, heads, width and FF stack (conditional on depth); it is mapped to the untried library
model that differs from it in the fewest of these. Layers that the library ties together stay
separate choices here, as a user writing the study would name them (on NAS-Bench-BERT this per-layer
study also found top models more often than one over tied choices: 10 of 10 seeds within 50
evaluations against 5 of 10). The sampler keeps Optuna's defaults and is seeded
from the round's generator, so a resumed search asks exactly what the killed one would have.
"""

from __future__ import annotations

import numpy as np
import optuna

from flexibert.search.strategies.base import SearchContext, Strategy
from flexibert.search.strategies.encoding import ChoiceEncoding

optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per trial would drown the search's console


class OptunaChoices(Strategy):
    """An Optuna sampler over the model dict's choices; subclasses name the sampler (its defaults, seeded per round).

    With several objectives the study has one direction per objective and is told every evaluated
    model's values, so the sampler searches for their Pareto front.
    """

    multi_objective = True
    method: str

    def sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        raise NotImplementedError

    @staticmethod
    def _distributions(encoding: ChoiceEncoding, choices: dict[str, object]) -> dict:
        return {name: optuna.distributions.CategoricalDistribution(encoding.options[name]) for name in choices}

    def _study(self, context: SearchContext, encoding: ChoiceEncoding, seed: int) -> optuna.Study:
        directions = ["maximize" if up else "minimize" for up in context.objectives.maximize]
        study = optuna.create_study(directions=directions, sampler=self.sampler(seed))
        for model_hash, values in context.values.items():
            choices = encoding.choices(context.library.model_dict(model_hash))
            study.add_trial(optuna.trial.create_trial(params=choices, distributions=self._distributions(encoding, choices),
                                                      values=values))
        return study

    @staticmethod
    def _ask(trial: optuna.Trial, encoding: ChoiceEncoding) -> dict[str, object]:
        depth = trial.suggest_categorical("l", encoding.options["l"])
        return {name: trial.suggest_categorical(name, encoding.options[name]) for name in encoding.names if encoding.present(name, depth)}

    def propose(self, context: SearchContext, count: int, rng: np.random.Generator, round_index: int) -> list[tuple[int, str]]:
        encoding = ChoiceEncoding.of(context.library, tied=False)
        study = self._study(context, encoding, seed=int(rng.integers(2**31)))
        allowed = context.available.copy()
        chosen: list[tuple[int, str]] = []
        for _ in range(count):
            index = encoding.nearest(self._ask(study.ask(), encoding), allowed, rng)
            if index is None:
                break
            allowed[index] = False
            chosen.append((index, self.method))
        return chosen


class TreeParzenEstimator(OptunaChoices):
    """Optuna's TPESampler, its defaults (with several objectives: its multi-objective TPE)."""

    name = method = "tpe"

    def sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        return optuna.samplers.TPESampler(seed=seed)


class NSGAII(OptunaChoices):
    """Optuna's NSGAIISampler, its defaults: the evolutionary baseline for Pareto fronts (one objective works too)."""

    name = method = "nsga2"

    def sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        return optuna.samplers.NSGAIISampler(seed=seed)
