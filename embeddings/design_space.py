"""Design spaces: YAML schema and validation, the op vocabulary, counting and enumeration (original order)."""

from __future__ import annotations

import bisect
import itertools
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from embeddings.model_dict import OP_PARAMS

GLUE_TASK_NAMES = ["CoLA", "SST-2", "MRPC", "STS-B", "QQP", "MNLI-mm", "QNLI", "RTE", "WNLI"]
LIST_KEYS = ("encoder_layers", "hidden_size", "num_heads", "operation_types", "number_of_feed-forward_stacks", "feed-forward_hidden")
ARCHITECTURE_KEYS = (*LIST_KEYS, "operation_parameters")


class DesignSpaceError(ValueError):
    """A design-space file that does not follow the schema."""


@dataclass(frozen=True)
class DesignSpace:
    """The ``architecture`` section of a design-space YAML; lists keep their order (it fixes the enumeration)."""

    encoder_layers: tuple[int, ...]
    hidden_size: tuple[int, ...]
    num_heads: tuple[int, ...]
    operation_types: tuple[str, ...]
    operation_parameters: dict[str, tuple]
    feed_forward_stacks: tuple[int, ...]
    feed_forward_hidden: tuple[int, ...]
    datasets: tuple[str, ...] = tuple(GLUE_TASK_NAMES)

    def architecture(self) -> dict:
        """The YAML ``architecture`` dict (stored verbatim in library files)."""
        return {
            "hidden_size": list(self.hidden_size),
            "num_heads": list(self.num_heads),
            "encoder_layers": list(self.encoder_layers),
            "operation_types": list(self.operation_types),
            "number_of_feed-forward_stacks": list(self.feed_forward_stacks),
            "feed-forward_hidden": list(self.feed_forward_hidden),
            "operation_parameters": {k: list(v) for k, v in self.operation_parameters.items()},
        }

    def ops_list(self) -> list[str]:
        """Node-label vocabulary in the original's order: input, head ops, FF widths, add_norm, output."""
        heads = [f"{o}_h{h}_p-{p}" for o in self.operation_types for h in self.hidden_size for p in self.operation_parameters[o]]
        return ["input", *dict.fromkeys(heads), *(f"f{w}" for w in self.feed_forward_hidden), "add_norm", "output"]

    def _stack_choices(self, heterogeneous_ff: bool) -> int:
        ops = sum(len(self.operation_parameters[o]) for o in self.operation_types)
        widths = len(self.feed_forward_hidden)
        ff = sum(widths**k for k in self.feed_forward_stacks) if heterogeneous_ff else len(self.feed_forward_stacks) * widths
        return len(self.num_heads) * len(self.hidden_size) * ops * ff

    def count(self, layers_per_stack: int, heterogeneous_ff: bool = False) -> int:
        """Number of models, without enumerating them (exact, arbitrary size)."""
        return sum(count for _, count in self.depth_counts(layers_per_stack, heterogeneous_ff))

    def check_layers_per_stack(self, layers_per_stack: int) -> None:
        bad = [d for d in self.encoder_layers if layers_per_stack < 1 or d % layers_per_stack]
        if bad:
            raise DesignSpaceError(
                f"layers_per_stack={layers_per_stack} must divide every encoder depth; {bad} in 'encoder_layers' do not"
            )

    def enumerate(self, layers_per_stack: int, heterogeneous_ff: bool = False) -> Iterator[dict]:
        """Model dicts in the original order: depth, then per-stack heads, hidden, op, FF depth, op parameter, FF widths."""
        self.check_layers_per_stack(layers_per_stack)
        for depth in self.encoder_layers:
            stacks = depth // layers_per_stack
            for n, h, o, nff in itertools.product(*(itertools.product(v, repeat=stacks) for v in (
                    self.num_heads, self.hidden_size, self.operation_types, self.feed_forward_stacks))):
                for p in itertools.product(*(self.operation_parameters[op] for op in o)):
                    if heterogeneous_ff:
                        ff_choices = itertools.product(*(itertools.product(self.feed_forward_hidden, repeat=k) for k in nff))
                    else:
                        ff_choices = (tuple((w,) * k for w, k in zip(ws, nff, strict=True))
                                      for ws in itertools.product(self.feed_forward_hidden, repeat=stacks))
                    for ff in ff_choices:
                        yield _expand(depth, layers_per_stack, n, h, o, ff, p)

    def stack_choices(self, heterogeneous_ff: bool = False) -> list[tuple]:
        """Every choice of one stack as ``(n, h, o, p, ff)``, ``ff`` a tuple of widths; a model is one choice per stack.

        The choices of different stacks are independent (``p`` depends on ``o`` and ``ff`` on the FF depth of the same
        stack only), so the models of depth d are exactly the tuples of d / layers_per_stack choices: what sampling needs.
        """
        if heterogeneous_ff:
            ffs = [ws for k in self.feed_forward_stacks for ws in itertools.product(self.feed_forward_hidden, repeat=k)]
        else:
            ffs = [(w,) * k for k in self.feed_forward_stacks for w in self.feed_forward_hidden]
        return [(n, h, o, p, ff) for n in self.num_heads for h in self.hidden_size for o in self.operation_types
                for p in self.operation_parameters[o] for ff in ffs]

    def depth_counts(self, layers_per_stack: int, heterogeneous_ff: bool = False) -> list[tuple[int, int]]:
        """``(depth, number of models of that depth)`` in the YAML's order; the counts are exact Python ints."""
        self.check_layers_per_stack(layers_per_stack)
        per_stack = self._stack_choices(heterogeneous_ff)
        return [(depth, per_stack ** (depth // layers_per_stack)) for depth in self.encoder_layers]

    def sample(self, count: int, layers_per_stack: int, heterogeneous_ff: bool = False, seed: int = 0) -> list[dict]:
        """``count`` distinct models drawn uniformly from the space without enumerating it; the same seed, the same list.

        Every model has a number in [0, size): depths in the YAML's order, then one base-C digit per stack (C choices
        per stack). Distinct numbers are drawn uniformly (a uniformly random subset) and decoded in ascending order, so
        the list is grouped by depth. A model is exactly a dict that ``enumerate`` yields.
        """
        size = self.count(layers_per_stack, heterogeneous_ff)
        if not 0 <= count <= size:
            raise ValueError(f"cannot sample {count:,} distinct models from a space of {size_text(size)}")
        counts = self.depth_counts(layers_per_stack, heterogeneous_ff)
        starts = list(itertools.accumulate((c for _, c in counts[:-1]), initial=0))
        depths, choices = [d for d, _ in counts], self.stack_choices(heterogeneous_ff)
        models = []
        for number in _distinct_numbers(size, count, seed):
            slot = bisect.bisect_right(starts, number) - 1
            models.append(_decode(number - starts[slot], depths[slot], layers_per_stack, choices))
        return models


def size_text(size: int) -> str:
    """A model count for messages: exact with thousands separators and its order of magnitude ('432,653,508 (4.3e+08)'),
    or only the magnitude for counts too long to read (or to print: Python refuses ints of over 4,300 digits)."""
    if size < 10**6:
        return f"{size:,}"
    exponent = int(math.log10(size))
    exponent += size // 10**exponent >= 10  # log10 can fall just short of a power of ten
    magnitude = f"{size / 10**exponent:.1f}e+{exponent:02d}"
    return f"{size:,} ({magnitude})" if exponent < 30 else f"about {magnitude}"


def _decode(local: int, depth: int, layers_per_stack: int, choices: list[tuple]) -> dict:
    """Model number ``local`` among those of ``depth``: one base-len(choices) digit per stack, the first stack first."""
    digits = []
    for _ in range(depth // layers_per_stack):
        local, digit = divmod(local, len(choices))
        digits.append(choices[digit])
    n, h, o, p, ff = zip(*reversed(digits), strict=True)
    return _expand(depth, layers_per_stack, n, h, o, ff, p)


def _distinct_numbers(size: int, count: int, seed: int) -> list[int]:
    """``count`` distinct numbers drawn uniformly from range(size) (exact for any Python int), in ascending order.

    Draws with rejection of repeats (a uniformly random subset); above half the space it draws the numbers left out
    instead, so the rejection never needs more than about twice ``count`` draws.
    """
    rng = random.Random(seed)
    keep = count if 2 * count <= size else size - count
    chosen: set[int] = set()
    while len(chosen) < keep:
        chosen.add(rng.randrange(size))
    if keep == count:
        return sorted(chosen)
    return [number for number in range(size) if number not in chosen]


def _expand(depth, lps, n, h, o, ff, p) -> dict:
    def rep(values):
        return [value for value in values for _ in range(lps)]

    return {"l": depth, "h": rep(h), "n": rep(n), "o": rep(o), "f": [list(w) for w in rep(ff)], "p": rep(p)}


def _fail(path, key: str, problem: str) -> None:
    raise DesignSpaceError(f"{path}: key '{key}': {problem}")


def _positive_ints(path, key: str, values) -> tuple[int, ...]:
    if not isinstance(values, list) or not values:
        _fail(path, key, f"expected a non-empty list of positive integers, got {values!r}")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values):
        _fail(path, key, f"expected positive integers, got {values!r}")
    if len(set(values)) != len(values):
        _fail(path, key, f"values must be unique, got {values!r}")
    return tuple(values)


def parse_design_space(data, path: str | Path = "<design space>") -> DesignSpace:
    """Validate the parsed YAML of a design space; errors name the file, the key and what is allowed."""
    if not isinstance(data, dict) or "architecture" not in data:
        raise DesignSpaceError(f"{path}: expected a mapping with keys 'architecture' (and optionally 'datasets')")
    unknown = sorted(set(data) - {"architecture", "datasets"}, key=str)
    if unknown:
        _fail(path, unknown[0], "unknown top-level key; allowed: 'architecture', 'datasets'")
    datasets = data.get("datasets", GLUE_TASK_NAMES)
    if not isinstance(datasets, list) or not all(d in GLUE_TASK_NAMES for d in datasets):
        _fail(path, "datasets", f"expected a list of GLUE task names from {GLUE_TASK_NAMES}, got {datasets!r}")
    arch = data["architecture"]
    if not isinstance(arch, dict):
        _fail(path, "architecture", f"expected a mapping, got {type(arch).__name__}")
    missing = [k for k in ARCHITECTURE_KEYS if k not in arch]
    if missing:
        _fail(path, f"architecture.{missing[0]}", f"missing; the architecture needs {list(ARCHITECTURE_KEYS)}")
    extra = sorted(set(arch) - set(ARCHITECTURE_KEYS), key=str)
    if extra:
        _fail(path, f"architecture.{extra[0]}", f"unknown key; allowed: {list(ARCHITECTURE_KEYS)}")
    ints = {k: _positive_ints(path, f"architecture.{k}", arch[k]) for k in LIST_KEYS if k != "operation_types"}
    ops = arch["operation_types"]
    if not isinstance(ops, list) or not ops or any(o not in ("sa", "l", "c") for o in ops) or len(set(ops)) != len(ops):
        _fail(path, "architecture.operation_types", f"expected a non-empty list of unique values from ['sa', 'l', 'c'], got {ops!r}")
    params = arch["operation_parameters"]
    if not isinstance(params, dict):
        _fail(path, "architecture.operation_parameters", f"expected a mapping from operation type to a list, got {params!r}")
    for op in params:
        if op not in ops:
            _fail(path, f"architecture.operation_parameters.{op}", f"parameters for an operation type not in operation_types {ops}")
    parsed_params = {}
    for op in ops:
        key = f"architecture.operation_parameters.{op}"
        values = params.get(op)
        if not isinstance(values, list) or not values or len(set(map(str, values))) != len(values):
            _fail(path, key, f"expected a non-empty list of unique parameters, got {values!r}")
        if op == "c":
            if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 and v % 2 for v in values):
                _fail(path, key, f"convolution kernel sizes must be odd positive integers such as 5, 9, 13, got {values!r}")
        elif any(v not in OP_PARAMS[op] for v in values):
            _fail(path, key, f"allowed values are {list(OP_PARAMS[op])}, got {values!r}")
        parsed_params[op] = tuple(values)
    for n in ints["num_heads"]:
        bad = [h for h in ints["hidden_size"] if h % n]
        if bad:
            _fail(path, "architecture.num_heads",
                  f"{n} heads cannot divide hidden sizes {bad}; every head count must divide every hidden size")
        if "c" in ops and n % 2:
            _fail(path, "architecture.num_heads", f"{n} is odd, but 'c' layers split their heads in two halves; use even head counts")
    return DesignSpace(
        encoder_layers=ints["encoder_layers"],
        hidden_size=ints["hidden_size"],
        num_heads=ints["num_heads"],
        operation_types=tuple(ops),
        operation_parameters=parsed_params,
        feed_forward_stacks=ints["number_of_feed-forward_stacks"],
        feed_forward_hidden=ints["feed-forward_hidden"],
        datasets=tuple(datasets),
    )


def load_design_space(path: str | Path) -> DesignSpace:
    """Read and validate a design-space YAML file."""
    path = Path(path)
    if not path.is_file():
        raise DesignSpaceError(f"{path}: no such design-space file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise DesignSpaceError(f"{path}: not valid YAML: {err}") from err
    return parse_design_space(data, path)

