"""Design spaces: YAML schema and validation, the op vocabulary, counting and enumeration (original order)."""

from __future__ import annotations

import itertools
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
        self.check_layers_per_stack(layers_per_stack)
        per_stack = self._stack_choices(heterogeneous_ff)
        return sum(per_stack ** (depth // layers_per_stack) for depth in self.encoder_layers)

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

