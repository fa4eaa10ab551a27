"""BOSHNAS's settings in a module of their own: the strategy (boshnas.py) and its single-score picks
(gobi_picks.py) both read them, and neither needs the other's code to do so."""

from __future__ import annotations

from dataclasses import dataclass

from flexibert.utils.cli import setting


@dataclass
class BoshnasSettings:
    """BOSHNAS's constants; the journal records them all, so a resume with other values is refused."""

    k1: float = setting(0.5, "UCB weight of the epistemic standard deviation")
    k2: float = setting(0.5, "UCB weight of the aleatoric standard deviation (patience phase)")
    restarts: int = setting(10, "GOBI start points per optimisation round", flag="gobi_restarts")
    second_order: bool = setting(True, "GOBI with SGD instead of AdaHessian", flag="first_order")
    prob_uncertainty: float = setting(0.1, "chance a round samples the most uncertain model")
    prob_random: float = setting(0.1, "chance a round samples a random model")
    patience: int = setting(5, "optimisation rounds without progress before adding aleatoric uncertainty")
    aleatoric_rounds: int = setting(5, "more such rounds before the search stops (converged)")
    tolerance: float = setting(0.0, "score gain that counts as progress", flag="convergence_tol")
    surrogate_epochs: int = setting(200, "maximum epochs per surrogate fit")
    choice_inputs: bool = setting(True, "surrogate inputs: the graph embedding alone (and the cheap objectives of a front "
                                        "search), without the model dicts' choices", flag="embedding_only")
    linear_prior: bool = setting(True, "the surrogate without its prior mean, a Bayesian linear model on the model dicts' "
                                       "choices (as runs started before it existed)", flag="no_linear_prior")
    snap_metric: str = setting("l1", "distance that snaps GOBI's optimum to library models", flag=None)
    seed: int = setting(0, "seed of the surrogate and of GOBI's probes (the search's --seed)", flag=None)

    def __post_init__(self) -> None:
        for flag, value in (("gobi_restarts", self.restarts), ("surrogate_epochs", self.surrogate_epochs)):
            if value < 1:
                raise ValueError(f"--{flag} must be at least 1")
        if not 0 <= self.prob_uncertainty + self.prob_random <= 1 or min(self.prob_uncertainty, self.prob_random) < 0:
            raise ValueError("--prob_uncertainty and --prob_random must be probabilities that sum to at most 1")
