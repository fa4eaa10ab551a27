"""What a search optimises: one or more objectives, and the caps a proposal must respect.

``run_boshnas.py --objectives glue params`` searches for the front of GLUE against total parameter
count. Each objective is one small class here:

- ``glue`` (or ``score``): the run's score (the GLUE average, one task's score with ``--task``, or the
  benchmark's ``--benchmark_metric``), maximised;
- a GLUE task (``rte``) or any numeric column of the benchmark file (``time_to_train``): read from the
  job's results.json; task scores are maximised, other columns minimised (``time_to_train:max``
  turns that round);
- ``params``, ``encoder_params``, ``flops`` (per token at ``--flops_seq_length``): cheap, computed
  from the model dict without training, so they are known for every library model before it is tried;
- ``latency``: milliseconds per forward pass, measured once by each model's job on the device it runs
  on (``--latency_batch_size``, ``--latency_seq_length``), minimised.

Every objective's value of an evaluated model is recorded in the journal's finish event, so reports
and resumed searches never recompute a trained model's numbers. Constraints (``--max_params``,
``--max_encoder_params``, ``--max_flops``) cap cheap objectives: a library model that breaks a cap is
never proposed, the initial random models included. ``--max_latency_ms`` caps latency, which no model
dict tells: each model is measured on the search's machine before it is proposed (search/screening.py).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from embeddings.library import Library
from flexibert.data.glue import GLUE_TASKS
from flexibert.search.benchmarks import is_number
from flexibert.search.journal import SearchState
from flexibert.search.layout import SCORE_FIELD
from flexibert.search.pareto import as_minimisation, pareto_mask

SCORE_NAMES = ("glue", "score")  # both name the run's score
DIRECTIONS = {"max": True, "min": False}


class ObjectiveError(ValueError):
    """An objective or constraint the search cannot evaluate (unknown name, missing benchmark column)."""


@dataclass(frozen=True)
class Objective:
    """One objective: a name (its column in reports), a direction, and where its value comes from.

    A cheap objective is a function of the model dict alone (``of_model``); the others are read from
    an evaluated model's results.json (``of_results``), which the job wrote.
    """

    name: str
    maximize: bool
    cheap: ClassVar[bool] = False

    def of_model(self, model_dict: dict) -> float:
        raise NotImplementedError(f"{self.name} is only known after training")

    def of_results(self, results: dict) -> float | None:
        """The value recorded in a job's results.json (None when it is missing or not a finite number)."""
        raise NotImplementedError


def _finite(value: object) -> float | None:
    return float(value) if is_number(value) and np.isfinite(value) else None


@dataclass(frozen=True)
class Score(Objective):
    """The run's score, the one every search has."""

    def of_results(self, results: dict) -> float | None:
        return _finite(results.get(SCORE_FIELD))


@dataclass(frozen=True)
class Measured(Objective):
    """A number the job measured or looked up: a GLUE task's dev score, or a column of the benchmark file."""

    def of_results(self, results: dict) -> float | None:
        for source in (results.get("scores") or {}, results.get("benchmark") or {}):
            if self.name in source:
                return _finite(source[self.name])
        return None


@dataclass(frozen=True)
class Cheap(Objective):
    """An objective computed from the model dict alone: known for every library model before it is trained."""

    cheap: ClassVar[bool] = True

    def of_results(self, results: dict) -> float | None:
        return self.of_model(results["model_dict"]) if "model_dict" in results else None


@dataclass(frozen=True)
class ParameterCount(Cheap):
    """Trainable parameters of the base model (``params``: all of them, embeddings, encoder and pooler, as jobs report;
    ``encoder_params``: the encoder's, which is what differs between models of one vocabulary)."""

    part: str = "total"

    def of_model(self, model_dict: dict) -> float:
        from flexibert.models.costs import parameter_count  # torch: only when a search counts parameters

        return float(parameter_count(model_dict, self.part))


@dataclass(frozen=True)
class Flops(Cheap):
    """Forward FLOPs per token at a fixed sequence length: the cost of running the model, independent of hardware."""

    seq_length: int = 128

    def of_model(self, model_dict: dict) -> float:
        from flexibert.models.costs import flops_per_token

        return float(flops_per_token(model_dict, self.seq_length))


@dataclass(frozen=True)
class Latency(Objective):
    """Milliseconds per forward pass, measured by each job on its own device (flexibert/models/latency.py)."""

    def of_results(self, results: dict) -> float | None:
        return _finite((results.get("latency") or {}).get("median_ms"))


def parse_objective(spec: str, flops_seq_length: int = 128) -> Objective:
    """``glue``, ``params``, ``encoder_params``, ``flops``, a GLUE task or a benchmark column; ``NAME:max``/``:min`` sets a direction."""
    name, _, direction = spec.partition(":")
    if direction and direction not in DIRECTIONS:
        raise ObjectiveError(f"objective {spec!r}: the direction after ':' must be 'max' or 'min'")
    if name in SCORE_NAMES:
        objective: Objective = Score("glue", True)
    elif name in ("params", "encoder_params"):
        objective = ParameterCount(name, False, "total" if name == "params" else "encoder")
    elif name == "flops":
        objective = Flops(name, False, flops_seq_length)
    elif name == "latency":
        objective = Latency(name, False)
    elif name:
        objective = Measured(name, name in GLUE_TASKS)
    else:
        raise ObjectiveError("an objective needs a name, e.g. --objectives glue params")
    if direction and type(objective) is Measured:
        return Measured(name, DIRECTIONS[direction])
    if direction and DIRECTIONS[direction] != objective.maximize:
        raise ObjectiveError(f"objective {spec!r}: {name} is always {'maximised' if objective.maximize else 'minimised'}")
    return objective


@dataclass(frozen=True)
class Constraint:
    """A cap: models above it are never proposed.

    A cap on a cheap objective is checked for every library model before anything is proposed; one on
    latency (``screened``) by measuring each model just before it would be proposed (search/screening.py).
    """

    objective: Objective
    limit: float

    @property
    def screened(self) -> bool:
        return not self.objective.cheap

    def allows(self, values: np.ndarray) -> np.ndarray:
        return values <= self.limit


CONSTRAINT_FLAGS = {"max_params": "params", "max_encoder_params": "encoder_params", "max_flops": "flops",
                    "max_latency_ms": "latency"}


class ObjectiveSet:
    """The search's objectives (the first is the one a single-objective strategy sees) and constraints."""

    def __init__(self, objectives: list[Objective], constraints: list[Constraint] | None = None):
        names = [o.name for o in objectives]
        if len(set(names)) != len(names):
            raise ObjectiveError(f"--objectives names one objective twice: {' '.join(names)}")
        self.objectives, self.constraints = objectives, list(constraints or [])
        self._library_cache: dict[tuple[int, str], tuple[Library, np.ndarray]] = {}

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ObjectiveSet:
        """From --objectives, --flops_seq_length and the --max_* flags (defaults: the score alone, no caps)."""
        seq = getattr(args, "flops_seq_length", 128)
        objectives = [parse_objective(spec, seq) for spec in (getattr(args, "objectives", None) or ["glue"])]
        constraints = [Constraint(parse_objective(name, seq), float(getattr(args, flag)))
                       for flag, name in CONSTRAINT_FLAGS.items() if getattr(args, flag, None) is not None]
        return cls(objectives, constraints)

    @classmethod
    def from_record(cls, record: dict | None) -> ObjectiveSet:
        """The objectives a journal's run settings recorded (None: the score alone, as in runs before objectives existed)."""
        if not record:
            return cls([Score("glue", True)])
        seq = record.get("flops_seq_length") or 128
        flags = {name: flag for flag, name in CONSTRAINT_FLAGS.items()}
        return cls.from_args(argparse.Namespace(objectives=record["objectives"], flops_seq_length=seq,
                                                **{flags[name]: limit for name, limit in record["constraints"].items()}))

    def __len__(self) -> int:
        return len(self.objectives)

    @property
    def names(self) -> list[str]:
        return [o.name for o in self.objectives]

    @property
    def maximize(self) -> list[bool]:
        return [o.maximize for o in self.objectives]

    @property
    def multi(self) -> bool:
        return len(self.objectives) > 1

    @property
    def headline(self) -> Objective:
        """The objective "best" means in a run's reports: a single-objective run's own (what its strategy optimised,
        e.g. ``--objectives sst2``), else the score (a front has no one best; its reports mark the front)."""
        return self.objectives[0] if not self.multi else Score("glue", True)

    def values_of(self, results: dict) -> dict[str, float | None]:
        """Every objective's value for one evaluated model, from its results.json (what the finish event records)."""
        return {o.name: o.of_results(results) for o in self.objectives}

    def column(self, library: Library, objective: Objective) -> np.ndarray:
        """A cheap objective's value for every library model (computed once per library and objective)."""
        key = (id(library), repr(objective))
        cached = self._library_cache.get(key)
        if cached is None or cached[0] is not library:
            values = np.array([objective.of_model(d) for d in library.model_dicts], dtype=np.float64)
            cached = self._library_cache[key] = (library, values)
        return cached[1]

    def library_values(self, library: Library) -> np.ndarray:
        """(models, objectives): cheap objectives for every library model, NaN where only training tells."""
        columns = [self.column(library, o) if o.cheap else np.full(len(library), np.nan) for o in self.objectives]
        return np.stack(columns, axis=1)

    @property
    def screened(self) -> list[Constraint]:
        """The caps that only a measurement checks (latency), model by model before proposing."""
        return [c for c in self.constraints if c.screened]

    @property
    def cheap_constraints(self) -> list[Constraint]:
        """The caps every library model is checked against before the search starts (parameters, FLOPs)."""
        return [c for c in self.constraints if not c.screened]

    def feasible(self, library: Library) -> np.ndarray:
        """Boolean mask of the library models that respect every cheap constraint (the screened ones are checked later)."""
        mask = np.ones(len(library), dtype=bool)
        for constraint in self.cheap_constraints:
            mask &= constraint.allows(self.column(library, constraint.objective))
        return mask

    def record(self) -> dict:
        """What the journal records (a resume with other objectives or caps is refused)."""
        return {"objectives": [f"{o.name}:{'max' if o.maximize else 'min'}" for o in self.objectives],
                "constraints": {c.objective.name: c.limit for c in self.constraints},
                "flops_seq_length": next((o.seq_length for o in self._all() if isinstance(o, Flops)), None)}

    def _all(self) -> list[Objective]:
        return [*self.objectives, *(c.objective for c in self.constraints)]


def objectives_of(state: SearchState) -> ObjectiveSet:
    """The objectives a run's journal recorded."""
    return ObjectiveSet.from_record((state.config or {}).get("objectives"))


def value_matrix(state: SearchState, names: list[str]) -> np.ndarray:
    """(finished models, objectives): the journaled values, rows in completion order."""
    return np.array(list(state.objective_values(names).values()), dtype=float).reshape(len(state.finished), len(names))


def _value(objective: Objective, state: SearchState, model_hash: str) -> float:
    """A finished model's value of ``objective``; the score is on every candidate, the others where the run has them."""
    candidate = state.candidates[model_hash]
    return candidate.score if isinstance(objective, Score) else candidate.objectives[objective.name]


def headline_values(state: SearchState) -> list[float]:
    """The finished models' values of the run's headline objective (``ObjectiveSet.headline``), in completion order."""
    objective = objectives_of(state).headline
    return [_value(objective, state, h) for h in state.finished]


def ranked(state: SearchState) -> list[str]:
    """The finished models, best first by the run's headline objective (ties: the earlier finished first)."""
    objective = objectives_of(state).headline
    sign = -1.0 if objective.maximize else 1.0
    return sorted(state.finished, key=lambda h: sign * _value(objective, state, h))


def best_text(state: SearchState, model_hash: str) -> str:
    """How the console names a model's headline value: the score bare ("71.20"), another objective by name
    ("time_to_train 1,798"), so that a run optimising something else never calls the best score its best."""
    objective = objectives_of(state).headline
    value = _value(objective, state, model_hash)
    return f"{value:.2f}" if isinstance(objective, Score) else f"{objective.name} {value:,.4g}"


def front_text(state: SearchState) -> str:
    """How the console counts a several-objective run's front ("6 on the front of glue and params"); empty for one
    objective, whose console speaks of the best model alone."""
    objectives = objectives_of(state)
    if not objectives.multi:
        return ""
    names = objectives.names
    return f"{len(front_members(state))} on the front of {', '.join(names[:-1])} and {names[-1]}"


def front_members(state: SearchState) -> set[str]:
    """The finished models on the Pareto front: of the search's objectives, or of score against parameters for one objective."""
    objectives = objectives_of(state)
    if objectives.multi:
        maximize, values = objectives.maximize, value_matrix(state, objectives.names)
    else:
        maximize = [True, False]
        values = np.array([[state.candidates[h].score, state.candidates[h].parameters or np.nan] for h in state.finished],
                          dtype=float).reshape(len(state.finished), 2)
    mask = pareto_mask(as_minimisation(values, maximize))
    return {h for h, on_front in zip(state.finished, mask, strict=True) if on_front}
