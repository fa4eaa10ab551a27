"""Candidates between two parent architectures: the models of the next, finer level of the hierarchy.

The parents are aligned layer by layer over the shallower depth, in stacks of ``old_lps`` layers.
Each old stack is split into ``old_lps // new_lps`` new stacks; every new stack picks, independently
of the others, one value per attribute among the two parents' values in that old stack: heads ``n``,
hidden size ``h``, operation ``o`` with its parameter ``p``, and the feed-forward stack (its number of
sub-layers and widths). If the depths differ, the deeper parent's extra layers are appended unchanged.

This is the original's ``interpolate_neighbors`` with its bugs fixed: a parameter both parents share is one option, not
two; heterogeneous feed-forward widths are kept per sub-layer; the tail is copied layer by layer and the shallower, truncated
candidates are not emitted; candidates are deduplicated by graph hash.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterable, Sequence

from embeddings.graph import model_hash
from embeddings.model_dict import parse_model_dict

# One layer of a standard model dict: (n, h, o, p, FF widths).
Layer = tuple[int, int, str, object, tuple[int, ...]]


def check_layers_per_stack(old_lps: int, new_lps: int) -> int:
    """Number of new stacks per old stack; a new stack must tile an old one exactly."""
    if old_lps < 1 or new_lps < 1 or new_lps > old_lps or old_lps % new_lps:
        raise ValueError(f"new layers per stack ({new_lps}) must be at most the old layers per stack ({old_lps}) and divide it exactly")
    return old_lps // new_lps


def _layers(model_dict: dict) -> list[Layer]:
    if "p" not in model_dict:
        raise ValueError("interpolation needs standard model dicts (keys l, h, n, o, f, p), got one in the hetero format")
    parse_model_dict(model_dict)
    keys = ("n", "h", "o", "p", "f")
    return [(n, h, o, p, tuple(f)) for n, h, o, p, f in zip(*(model_dict[k] for k in keys), strict=True)]


def _unique(values: Iterable) -> list:
    """Values in first-seen order, each once (so a value both parents share is one option)."""
    return list(dict.fromkeys(values))


def _ff_options(stacks: Sequence[tuple[int, ...]], heterogeneous_ff: bool) -> list[tuple[int, ...]]:
    """FF stacks a new layer may take: every parent depth, with widths from the parents.

    Homogeneous: all sub-layers share one of the parents' widths. Heterogeneous: sub-layer j picks
    among the widths the parents have at sub-layer j, so each parent's own FF stack is an option.
    """
    depths = _unique(len(ff) for ff in stacks)
    if heterogeneous_ff:
        per_position = [_unique(ff[j] for ff in stacks if len(ff) > j) for j in range(max(depths))]
        return [ff for k in depths for ff in itertools.product(*per_position[:k])]
    widths = _unique(w for ff in stacks for w in ff)
    return [(w,) * k for k in depths for w in widths]


def _valid(layer: Layer) -> bool:
    """Mixing values can give an invalid layer (h not divisible by n, odd n for 'c'); drop those."""
    n, h, o, p, ff = layer
    try:
        parse_model_dict({"l": 1, "h": [h], "n": [n], "o": [o], "f": [list(ff)], "p": [p]})
    except ValueError:
        return False
    return True


def stack_options(layers: Sequence[Layer], heterogeneous_ff: bool = False) -> list[Layer]:
    """Every valid layer a new stack can take, given both parents' layers of one old stack."""
    heads = _unique(layer[0] for layer in layers)
    hidden = _unique(layer[1] for layer in layers)
    ops = _unique((layer[2], layer[3]) for layer in layers)
    ffs = _ff_options([layer[4] for layer in layers], heterogeneous_ff)
    options = [(n, h, o, p, ff) for n in heads for h in hidden for o, p in ops for ff in ffs]
    return [layer for layer in options if _valid(layer)]


def _plan(parent1: dict, parent2: dict, old_lps: int, new_lps: int, heterogeneous_ff: bool) -> tuple[list[list[Layer]], list[Layer]]:
    """Options of every new stack over the shared depth, and the deeper parent's tail."""
    per_old_stack = check_layers_per_stack(old_lps, new_lps)
    first, second = _layers(parent1), _layers(parent2)
    shared = min(len(first), len(second))
    if shared % old_lps:
        raise ValueError(f"the shallower parent has {shared} layers, not a multiple of the old layers per stack ({old_lps})")
    stacks = []
    for start in range(0, shared, old_lps):
        stacks += [stack_options(first[start : start + old_lps] + second[start : start + old_lps], heterogeneous_ff)] * per_old_stack
    tail = (first if len(first) > len(second) else second)[shared:]
    return stacks, tail


def count_candidates(parent1: dict, parent2: dict, old_lps: int, new_lps: int, heterogeneous_ff: bool = False) -> int:
    """Number of combinations ``interpolate`` would enumerate, without building them (to decide on sampling)."""
    stacks, _ = _plan(parent1, parent2, old_lps, new_lps, heterogeneous_ff)
    return math.prod(len(options) for options in stacks)


def _decode(index: int, stacks: Sequence[Sequence[Layer]]) -> list[Layer]:
    """The index-th combination in ``itertools.product`` order (last stack varies fastest)."""
    choice = []
    for options in reversed(stacks):
        index, position = divmod(index, len(options))
        choice.append(options[position])
    return choice[::-1]


def _model_dict(layers: Sequence[Layer]) -> dict:
    return {
        "l": len(layers),
        "h": [layer[1] for layer in layers],
        "n": [layer[0] for layer in layers],
        "o": [layer[2] for layer in layers],
        "f": [list(layer[4]) for layer in layers],
        "p": [layer[3] for layer in layers],
    }


def interpolate(
    parent1: dict,
    parent2: dict,
    old_lps: int,
    new_lps: int,
    heterogeneous_ff: bool = False,
    max_candidates: int | None = None,
    rng: random.Random | None = None,
) -> dict[str, dict]:
    """Candidate model dicts between two parents, keyed by graph hash (first occurrence wins).

    When there are more than ``max_candidates`` combinations, a uniform sample of that many is drawn
    with ``rng`` (default: seeded with 0), so a pair that differs everywhere cannot explode.
    """
    stacks, tail = _plan(parent1, parent2, old_lps, new_lps, heterogeneous_ff)
    total = math.prod(len(options) for options in stacks)
    if max_candidates is not None and total > max_candidates:
        picks = sorted((rng or random.Random(0)).sample(range(total), max_candidates))
        choices: Iterable[Sequence[Layer]] = (_decode(index, stacks) for index in picks)
    else:
        choices = itertools.product(*stacks)
    candidates: dict[str, dict] = {}
    for choice in choices:
        model_dict = _model_dict([layer for option in choice for layer in [option] * new_lps] + tail)
        candidates.setdefault(model_hash(model_dict), model_dict)
    return candidates
