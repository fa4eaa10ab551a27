"""Model dicts as the choices a user would name: depth, then per layer or stack the operation, heads, width and FF stack.

Strategies that think in those terms (Optuna's TPE, evolution's one-choice mutations) build a model
from choices that may not all exist together in the library; ``nearest`` maps such a model to the
untried library model that differs from it in the fewest choices.

    {"l": 2, "o": ["sa", "l"], "p": ["sdp", "dct"], "h": [256, 256], "n": [4, 2], "f": [[1024], [512]]}
    -> {"l": 2, "o0": "sa_sdp", "n0": 4, "h0": 256, "f0": "1024", "o1": "l_dct", "n1": 2, "h1": 256, "f1": "512"}

A library ties choices together: layers built in stacks share their choices, and some spaces have one
hidden size per model. A choice that changes one layer of a tied group leads nowhere (no library model
has it), so layers whose values agree in every library model that has them form one choice, named by
its first layer ("h0" for the whole model's hidden size); ``tied=False`` keeps one choice per layer.
A heterogeneous dict (one operation per head) names each layer's operation by its heads in order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sklearn.preprocessing import OneHotEncoder

from embeddings.library import Library

LAYER_CHOICES = ("o", "n", "h", "f")  # per layer: operation (with its parameter), heads, hidden size, FF stack
_ENCODINGS: dict[tuple[int, bool], tuple[Library, ChoiceEncoding]] = {}  # (id(library), tied) -> (the library, kept alive; encoding)


def _operation(model_dict: dict, layer: int) -> str:
    if "p" in model_dict:
        return f"{model_dict['o'][layer]}_{model_dict['p'][layer]}"
    return "|".join(model_dict["o"][layer])  # hetero: the heads' operations


def _heads(model_dict: dict, layer: int) -> int:
    return model_dict["n"][layer] if "n" in model_dict else len(model_dict["o"][layer])


def layer_choices(model_dict: dict) -> dict[str, object]:
    """The named choices of one model dict, one per layer (before the library's ties are taken into account)."""
    found: dict[str, object] = {"l": model_dict["l"]}
    for layer in range(model_dict["l"]):
        found[f"o{layer}"] = _operation(model_dict, layer)
        found[f"n{layer}"] = _heads(model_dict, layer)
        found[f"h{layer}"] = model_dict["h"][layer]
        found[f"f{layer}"] = ",".join(str(width) for width in model_dict["f"][layer])
    return found


def _tied_groups(named: list[dict], kind: str, depth: int) -> list[list[int]]:
    """Runs of layers whose ``kind`` choice is equal in every model that has them (each run becomes one choice)."""
    groups: list[list[int]] = []
    for layer in range(depth):
        if groups:
            first = groups[-1][0]
            pairs = [(c[f"{kind}{first}"], c[f"{kind}{layer}"]) for c in named if f"{kind}{layer}" in c]
            if all(a == b for a, b in pairs):
                groups[-1].append(layer)
                continue
        groups.append([layer])
    return groups


@dataclass
class ChoiceEncoding:
    """Every library model as integer codes of its choices (-1 where a shallower model has no such layer)."""

    names: list[str]  # "l", then one name per choice: kind + the first layer of its group of tied layers
    groups: dict[str, list[int]]  # choice name -> the layers it sets
    options: dict[str, list]  # the values each choice takes somewhere in the library
    codes: np.ndarray  # (models, choices) int16
    _one_hot: np.ndarray | None = field(default=None, repr=False, compare=False)

    @classmethod
    def of(cls, library: Library, tied: bool = True) -> ChoiceEncoding:
        """The encoding of ``library``, built once per library object (strategies ask every round)."""
        cached = _ENCODINGS.get((id(library), tied))
        if cached is None or cached[0] is not library:
            cached = _ENCODINGS[(id(library), tied)] = (library, cls._build(library, tied))
        return cached[1]

    @classmethod
    def _build(cls, library: Library, tied: bool) -> ChoiceEncoding:
        named = [layer_choices(d) for d in library.model_dicts]
        depth = max(c["l"] for c in named)
        groups = {f"{kind}{group[0]}": group for kind in LAYER_CHOICES
                  for group in (_tied_groups(named, kind, depth) if tied else [[layer] for layer in range(depth)])}
        names = ["l", *sorted(groups, key=lambda name: (groups[name][0], LAYER_CHOICES.index(name[0])))]
        rows = [{name: c[name] for name in names if name in c} for c in named]
        options = {name: sorted({r[name] for r in rows if name in r}, key=str) for name in names}
        index = {name: {value: i for i, value in enumerate(values)} for name, values in options.items()}
        codes = np.full((len(rows), len(names)), -1, dtype=np.int16)
        for row, choices in enumerate(rows):
            for column, name in enumerate(names):
                if name in choices:
                    codes[row, column] = index[name][choices[name]]
        return cls(names, groups, options, codes)

    def one_hot(self) -> np.ndarray:
        """(models, one column per value of each choice, a missing layer being a value too), float32: the choices as inputs
        of a learned model, computed once per encoding."""
        if self._one_hot is None:
            self._one_hot = OneHotEncoder(sparse_output=False, dtype=np.float32).fit_transform(self.codes)
        return self._one_hot

    def choices(self, model_dict: dict) -> dict[str, object]:
        """The model dict's value of each choice (for a tied group, its first layer's)."""
        found = layer_choices(model_dict)
        return {name: found[name] for name in self.names if name in found}

    def name_of(self, kind: str, layer: int) -> str:
        """The choice that sets ``kind`` at ``layer``."""
        return next(name for name, layers in self.groups.items() if name[0] == kind and layer in layers)

    def present(self, name: str, depth: int) -> bool:
        """Whether a model of ``depth`` layers has choice ``name``."""
        return name == "l" or self.groups[name][0] < depth

    def encode(self, choices: dict[str, object]) -> np.ndarray:
        """Codes of a (possibly new) combination of choices; a value the library never uses gets a code no model has."""
        row = np.full(len(self.names), -1, dtype=np.int16)
        for column, name in enumerate(self.names):
            if name in choices:
                values = self.options[name]
                row[column] = values.index(choices[name]) if choices[name] in values else len(values)
        return row

    def nearest(self, choices: dict[str, object], allowed: np.ndarray, rng: np.random.Generator) -> int | None:
        """The allowed library model that differs from ``choices`` in the fewest layer choices (ties: at random); None if none is."""
        candidates = np.flatnonzero(allowed)
        if not len(candidates):
            return None
        distance = (self.codes[candidates] != self.encode(choices)).sum(axis=1)
        closest = candidates[distance == distance.min()]
        return int(closest[0] if len(closest) == 1 else rng.choice(closest))
