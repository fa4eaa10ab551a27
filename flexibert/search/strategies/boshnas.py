"""BOSHNAS: a heteroscedastic surrogate, GOBI on its upper confidence bound, uncertainty and random sampling, patience.

Each round the surrogate (flexibert/search/boshnas/) is refitted, warm-started, on the scores so far,
its inputs a model's embedding beside its model dict's choices (one-hot; surrogate_inputs.py says why),
its prior mean a Bayesian linear model on the choices;
most rounds then optimise the acquisition with GOBI and snap the optimum to untried library models (gobi_picks.py),
some sample the most uncertain model or a random one. After ``patience`` optimisation rounds without
progress the aleatoric term joins the bound, and after ``aleatoric_rounds`` more the search has
converged.

With several objectives (``--objectives glue params``) each objective that only training tells gets
its own surrogate, and an optimisation round proposes the untried models expected to add the most
hypervolume to the front (front.py). Progress, for patience, means a model joined the front. The
initial models of a score-against-cost search are drawn one per cost stratum (``initial``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from flexibert.search.boshnas.surrogate import Surrogate
from flexibert.search.layout import RunLayout
from flexibert.search.pareto import as_minimisation, pareto_mask
from flexibert.search.strategies.base import SearchContext, Strategy, random_available, stratified_available
from flexibert.search.strategies.boshnas_settings import BoshnasSettings
from flexibert.search.strategies.front import cost_column, front_picks
from flexibert.search.strategies.gobi_picks import gobi_picks
from flexibert.search.strategies.surrogate_inputs import SurrogateInputs
from flexibert.utils.cli import from_flags


def normalised_losses(scores: np.ndarray) -> np.ndarray:
    """Scores (higher is better) to losses in [0.1, 0.9], re-scaled every round so the sigmoid outputs never saturate."""
    low, high = scores.min(), scores.max()
    if high - low < 1e-12:
        return np.full(len(scores), 0.5, dtype=np.float32)
    return (0.9 - 0.8 * (scores - low) / (high - low)).astype(np.float32)


class Boshnas(Strategy):
    """BOSHNAS: the surrogates are warm-started across rounds and checkpointed per round in the run folder,
    so that a resumed search continues from the same weights."""

    name = "boshnas"
    Settings = BoshnasSettings
    flags_title = "BOSHNAS (--strategy boshnas)"
    multi_objective = True

    def __init__(self, settings: BoshnasSettings, run: RunLayout | None = None):
        self.settings, self.run = settings, run
        self._surrogate_class = Surrogate
        self.surrogates: list[Surrogate] = []  # one per objective that only training tells, in objective order
        self._inputs_of: SurrogateInputs | None = None  # one library's: they depend on nothing else
        self._last_fit: tuple[tuple[int, int], list[Surrogate]] | None = None  # ((round, scores), the surrogates it fitted)
        self.state = {"rounds_without_progress": 0, "last_best": None, "last_method": None, "fitted_on": 0,
                      "surrogate_round": None, "surrogate_objectives": [0], "last_front": None}

    @classmethod
    def from_args(cls, args: argparse.Namespace, run: RunLayout) -> Boshnas:
        return cls(from_flags(BoshnasSettings, args), run)

    def recorded_settings(self) -> dict:
        """The settings as the journal records them, without ``choice_inputs`` or ``linear_prior`` where it is off (the
        prior is off without the choices), as run folders written before it existed hold them: such a run resumes
        with --embedding_only, or --no_linear_prior."""
        record = super().recorded_settings()
        if not (record["linear_prior"] and record["choice_inputs"]):
            del record["linear_prior"]
        if not record["choice_inputs"]:
            del record["choice_inputs"]
        return record

    @property
    def surrogate(self) -> Surrogate | None:
        """The first objective's surrogate (the only one of a single-objective search)."""
        return self.surrogates[0] if self.surrogates else None

    @property
    def converged(self) -> bool:
        return self.state["rounds_without_progress"] >= self.settings.patience + self.settings.aleatoric_rounds

    def _checkpoint(self, round_index: int, objective: int = 0) -> Path | None:
        return None if self.run is None else self.run.surrogate_checkpoint(round_index, objective)

    def state_dict(self) -> dict:
        return dict(self.state)

    def load_state_dict(self, state: dict) -> None:
        state = dict(state)
        if "same" in state:  # the counter's name in run folders written before it was renamed
            state["rounds_without_progress"] = state.pop("same")
        self.state.update(state)
        if self.run is not None:  # the surrogates of that state: none before the first fit, else its round's checkpoints
            round_index = self.state["surrogate_round"]
            self.surrogates = [] if round_index is None else [self._surrogate_class.load(self._checkpoint(round_index, j))
                                                              for j in self.state["surrogate_objectives"]]

    def _track_progress(self, context: SearchContext) -> None:
        """Count optimisation rounds without progress; a sampling round neither counts nor resets (it says nothing of GOBI)."""
        if context.objectives.multi:
            improved = self._front_grew(context)
        else:
            best, last = max(context.scores.values()), self.state["last_best"]
            improved = last is not None and best > last + self.settings.tolerance
            self.state["last_best"] = best if last is None else max(best, last)
        if improved:
            self.state["rounds_without_progress"] = 0
        elif self.state["last_method"] == "optimization":
            self.state["rounds_without_progress"] += 1

    def _front_grew(self, context: SearchContext) -> bool:
        """Whether a model joined the front of the scored models since the last round."""
        indices, values = context.scored_values()
        front = sorted(context.library.hashes[i] for i in indices[pareto_mask(as_minimisation(values, context.objectives.maximize))])
        last, self.state["last_front"] = self.state["last_front"], front
        return last is not None and bool(set(front) - set(last))

    def _surrogate_inputs(self, context: SearchContext) -> SurrogateInputs:
        """The surrogates' inputs for this library, built once per library: a round asks for them several times, and
        a large library's copy is large."""
        if self._inputs_of is None or self._inputs_of.library is not context.library:
            self._inputs_of = SurrogateInputs.of(context, self.settings.choice_inputs, self.settings.linear_prior)
        if self.surrogates:
            self._inputs_of.check_width(self.surrogates[0].input_dim)
        return self._inputs_of

    def _inputs(self, context: SearchContext) -> np.ndarray:
        """Every library model's surrogate inputs (rows in library order), GOBI's space too."""
        return self._surrogate_inputs(context).matrix

    @staticmethod
    def _targets(context: SearchContext) -> list[tuple[int, np.ndarray, np.ndarray]]:
        """(objective position, library indices, scores with higher = better) of each objective a surrogate learns."""
        if not context.objectives.multi:
            return [(0, *context.scored())]
        indices, values = context.scored_values()
        return [(j, indices, values[:, j] if objective.maximize else -values[:, j])
                for j, objective in enumerate(context.objectives.objectives) if not objective.cheap]

    def _fit(self, context: SearchContext, round_index: int) -> None:
        targets = self._targets(context)
        if not targets or len(targets[0][2]) == self.state["fitted_on"]:
            return
        key = (round_index, len(targets[0][2]))
        if self._last_fit is not None and self._last_fit[0] == key:
            # The controller asks a round again (a screened cap refused every pick) from the state before it: the same
            # scores from the same start fit the same surrogates, so the first attempt's fit stands in for the refit (GOBI
            # and predictions since then moved inputs, never weights).
            self.surrogates = self._last_fit[1]
        else:
            self._refit(context, targets, round_index)
            self._last_fit = (key, self.surrogates)
        self.state.update(fitted_on=len(targets[0][2]), surrogate_objectives=[j for j, _, _ in targets],
                          surrogate_round=round_index if self.run is not None else None)

    def _refit(self, context: SearchContext, targets: list[tuple[int, np.ndarray, np.ndarray]], round_index: int) -> None:
        """Fit each objective's surrogate, warm-started, on its scores so far, and checkpoint it for the round."""
        inputs = self._surrogate_inputs(context)
        if not self.surrogates:
            s = self.settings
            self.surrogates = [self._surrogate_class(inputs.matrix.shape[1], seed=s.seed + 1000 * j, max_epochs=s.surrogate_epochs,
                                                     prior_columns=inputs.prior_columns)
                               for j, _, _ in targets]
        for surrogate, (j, indices, scores) in zip(self.surrogates, targets, strict=True):
            surrogate.fit(inputs.matrix[indices], normalised_losses(scores))
            if (path := self._checkpoint(round_index, j)) is not None:
                surrogate.save(path)

    def _optimize(self, context: SearchContext, count: int, rng: np.random.Generator, round_index: int) -> list[int]:
        """The untried models GOBI finds on the surrogate's bound (see gobi_picks.py)."""
        use_aleatoric = self.state["rounds_without_progress"] >= self.settings.patience
        return gobi_picks(context, self.surrogate, self._inputs(context), count, rng, self.settings, round_index, use_aleatoric)

    def _optimize_front(self, context: SearchContext, count: int, rng: np.random.Generator) -> list[int]:
        """The untried models expected to add the most hypervolume to the front so far (see front.py)."""
        surrogates = dict(zip(self.state["surrogate_objectives"], self.surrogates, strict=True))
        use_aleatoric = self.state["rounds_without_progress"] >= self.settings.patience
        return front_picks(context, surrogates, self._inputs(context), count, rng, use_aleatoric, self.settings.k1, self.settings.k2)

    def initial(self, context: SearchContext, count: int, num_init: int, rng: np.random.Generator) -> list[int]:
        """For a score against one cheap cost, one initial model per cost stratum (see ``stratified_available``):
        a front spans the whole cost range, and uniform draws clump in the commonest sizes. Otherwise at random."""
        column = cost_column(context)
        if column is None:
            return super().initial(context, count, num_init, rng)
        cost = context.objectives.column(context.library, context.objectives.objectives[column])
        return stratified_available(context, cost, count, num_init, rng)

    def propose(self, context: SearchContext, count: int, rng: np.random.Generator, round_index: int) -> list[tuple[int, str]]:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # the surrogate's networks are tiny: more threads only add overhead (and contention)
        try:
            return self._propose(context, count, rng, round_index)
        finally:
            torch.set_num_threads(threads)

    def _propose(self, context: SearchContext, count: int, rng: np.random.Generator, round_index: int) -> list[tuple[int, str]]:
        s = self.settings
        self._track_progress(context)
        self._fit(context, round_index)
        draw = rng.random()
        if draw < 1 - s.prob_uncertainty - s.prob_random:
            method = "optimization"
            chosen = (self._optimize_front(context, count, rng) if context.objectives.multi
                      else self._optimize(context, count, rng, round_index))
        elif draw < 1 - s.prob_random and self.surrogates:
            candidates = np.flatnonzero(context.available)
            epistemic = self.surrogate.predict(self._inputs(context)[candidates])[1]
            method, chosen = "uncertainty", [int(i) for i in candidates[np.argsort(-epistemic, kind="stable")][:count]]
        else:
            method, chosen = "random", random_available(context, count, rng)
        self.state["last_method"] = method
        return [(i, method) for i in chosen]
