"""What every search strategy is: the base class, the registry, and what a strategy may look at.

A strategy proposes library entries to evaluate next from what has been scored so far. Proposals
must be a deterministic function of the seed, the round and the scores in completion order (all of
which the journal holds), so that a resumed search proposes exactly what the killed one would have:
randomness comes only from the ``rng`` the controller passes in, and state that cannot be recomputed
(BOSHNAS's warm-started surrogate, its patience counter) is returned by ``state_dict`` for the
journal and saved per round.

A new strategy is one subclass in one module of this package: a ``name`` (which registers it, so
``--strategy NAME`` and ``compare_strategies.py`` find it), ``propose``, and, if it has settings, a
``Settings`` dataclass whose fields become its flags (see flexibert/utils/cli.py), and ``initial`` if
its first ``--num_init`` models should not be uniform draws. ``random_search.py`` is the reference
implementation.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from embeddings.library import Library
from flexibert.search.layout import RunLayout
from flexibert.search.objectives import ObjectiveSet, Score
from flexibert.utils.cli import add_flags, from_flags

STRATEGIES: dict[str, type[Strategy]] = {}  # name -> class, in registration order (the order of --help)


@dataclass
class SearchContext:
    """What a strategy may look at: the library, the scores so far (completion order), and what it may not propose again."""

    library: Library
    scores: dict[str, float]  # the run's score: what a single-objective strategy maximises
    unavailable: set[str]
    objectives: ObjectiveSet = field(default_factory=lambda: ObjectiveSet([Score("glue", True)]))
    values: dict[str, list[float]] | None = None  # every objective's value per finished model (default: the score alone)
    features: np.ndarray = field(init=False)
    allowed: np.ndarray = field(init=False)  # boolean mask of the library entries that respect the caps (tried or not)
    available: np.ndarray = field(init=False)  # boolean mask of the library entries that may still be proposed (and respect the caps)

    def __post_init__(self) -> None:
        if self.library.embeddings is None:
            raise ValueError("the library has no embeddings; build it with embeddings/generate_library.py")
        embeddings = np.asarray(self.library.embeddings, dtype=np.float32)
        # Model inputs: the embeddings standardised per dimension. MDS coordinates span hundreds of units in
        # their first dimensions, which saturates the surrogate's units and misleads GP length scales; on the
        # synthetic benchmark this raised the surrogate's rank correlation on unseen models (20-40 points)
        # from -0.3..0.6 to 0.35..0.6.
        spread = np.maximum(embeddings.std(axis=0), 1e-12)
        self.features = ((embeddings - embeddings.mean(axis=0)) / spread).astype(np.float32)
        self.allowed = self.objectives.feasible(self.library) if self.objectives.constraints else np.ones(len(self.library), dtype=bool)
        self.available = self.allowed.copy()
        self.available[[self.library.index(h) for h in self.unavailable if h in self.library]] = False
        if self.values is None:
            self.values = {h: [score] for h, score in self.scores.items()}

    def available_besides(self, chosen: list[int]) -> np.ndarray:
        """Library indices (ascending) that may still be proposed, other than ``chosen``: a round's picks so far."""
        return np.flatnonzero(self.available & ~np.isin(np.arange(len(self.available)), chosen))

    def scored(self) -> tuple[np.ndarray, np.ndarray]:
        """Library indices and scores of the finished models."""
        indices = np.array([self.library.index(h) for h in self.scores], dtype=int)
        return indices, np.array(list(self.scores.values()), dtype=np.float64)

    def scored_values(self) -> tuple[np.ndarray, np.ndarray]:
        """Library indices of the finished models and their objectives' values, (models, objectives)."""
        indices = np.array([self.library.index(h) for h in self.values], dtype=int)
        return indices, np.array(list(self.values.values()), dtype=np.float64).reshape(len(indices), len(self.objectives))


def random_available(context: SearchContext, count: int, rng: np.random.Generator) -> list[int]:
    """Up to ``count`` distinct library indices that may still be proposed, uniformly at random."""
    candidates = np.flatnonzero(context.available)
    return [int(i) for i in rng.choice(candidates, size=min(count, len(candidates)), replace=False)]


def stratified_available(context: SearchContext, values: np.ndarray, count: int, strata: int,
                         rng: np.random.Generator) -> list[int]:
    """Up to ``count`` models that may still be proposed, spread over ``values`` (one per library model).

    The allowed library is cut into ``strata`` bins of equal size by ``values``. Each pick comes from a
    bin that holds no proposed model yet while there is one (a random such bin, a random model in it),
    then from any bin, and beyond one pick per bin uniformly. A design drawn so covers the whole range
    of ``values``, where uniform draws clump in its commonest part; the bins are fixed by the library,
    so picks made one round at a time fill them as one draw would.
    """
    allowed = np.flatnonzero(context.allowed)
    bins = np.array_split(allowed[np.argsort(values[allowed], kind="stable")], max(1, min(strata, len(allowed))))
    empty = [b for b in bins if context.available[b].all()]
    chosen: list[int] = []
    for members in [*(empty[i] for i in rng.permutation(len(empty))), *(bins[i] for i in rng.permutation(len(bins)))]:
        free = members[context.available[members] & ~np.isin(members, chosen)]
        if len(chosen) < count and len(free):
            chosen.append(int(free[rng.integers(len(free))]))
    if len(chosen) < count:  # more picks than strata: the rest uniformly
        rest = context.available_besides(chosen)
        chosen += [int(i) for i in rng.choice(rest, size=min(count - len(chosen), len(rest)), replace=False)]
    return chosen


class Strategy:
    """A search strategy: proposes which library models to evaluate next.

    Subclasses set ``name`` (registering the class) and implement :meth:`propose`. One with settings
    sets ``Settings`` (a dataclass of :func:`flexibert.utils.cli.setting` fields) and ``flags_title``
    and takes the settings as its first constructor argument. One that keeps state the journal cannot
    rebuild from the scores overrides :meth:`state_dict` and :meth:`load_state_dict`; one that can
    decide the search is over sets ``converged``.
    """

    name: ClassVar[str]
    Settings: ClassVar[type | None] = None
    flags_title: ClassVar[str] = ""
    multi_objective: ClassVar[bool] = False  # True: proposes from every objective in context.values, not the score alone
    converged: bool = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            STRATEGIES[cls.name] = cls

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """This strategy's flags, in a group of their own."""
        if cls.Settings is not None:
            add_flags(parser.add_argument_group(cls.flags_title or f"{cls.name} (--strategy {cls.name})"), cls.Settings)

    @classmethod
    def from_args(cls, args: argparse.Namespace, run: RunLayout) -> Strategy:
        """The strategy as the parsed flags set it up; ``run`` is the run folder, for strategies that checkpoint."""
        return cls(from_flags(cls.Settings, args)) if cls.Settings is not None else cls()

    def recorded_settings(self) -> Any:
        """What the journal records of the settings, so that a resume with other settings is refused (None: nothing)."""
        settings = getattr(self, "settings", None)
        return dataclasses.asdict(settings) if dataclasses.is_dataclass(settings) else None

    def propose(self, context: SearchContext, count: int, rng: np.random.Generator, round_index: int) -> list[tuple[int, str]]:
        """Up to ``count`` (library index, method) pairs of available models; the method names why each was chosen."""
        raise NotImplementedError

    def initial(self, context: SearchContext, count: int, num_init: int, rng: np.random.Generator) -> list[int]:
        """``count`` models of the initial design (``--num_init`` models evaluated before the first :meth:`propose`):
        uniformly at random unless a strategy knows better."""
        return random_available(context, count, rng)

    def state_dict(self) -> dict:
        """State the scores alone cannot rebuild, journaled with every round."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`'s last journaled value on a resume."""
