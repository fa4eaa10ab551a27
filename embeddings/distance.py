"""Graph edit distance between architecture graphs, exact for layer-aligned edits and vectorised over pairs.

Cost model of the original (spec §3.2): substituting a node costs the difference of the two labels'
ranks, inserting or deleting one costs its rank, each inserted or deleted edge 0.1. The graphs are
chains of layers, so an edit path that maps layers onto layers (keeping their order, inserting or
deleting whole layers) can be optimised exactly by dynamic programming: over layers for the model,
inside a layer over its feed-forward chain, and by sorted 1-D matching for its heads. Costs of every
pair of distinct layer types are tabulated once, so one pair of models costs O(L1*L2) table look-ups,
done for thousands of pairs at once with numpy.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numpy as np

from embeddings.graph import head_labels
from flexibert.modeling_flexibert import OP_PARAMS

EDGE_COST = 0.1
_HEAD_LABEL = re.compile(r"^(sa|l|c)_h(\d+)_p-([a-z]+|\d+)(?:_a(\d+))?$")
_GROUP_ORDER = ("l", "sa", "c")  # cheapest to most expensive head operations, as in the original


def _head_sort_key(label: str) -> tuple:
    match = _HEAD_LABEL.match(label)
    if match is None:
        raise ValueError(f"unknown node label {label!r}")
    kind, hidden, param, size = match.groups()
    order = int(param) if kind == "c" else OP_PARAMS[kind].index(param)
    return _GROUP_ORDER.index(kind), int(hidden), order, int(size or 0)


def label_ranks(labels: Iterable[str]) -> dict[str, int]:
    """Cost rank of every label: input 0, output 1, add_norm 2, then FF widths, then l, sa and c heads.

    Groups are separated by a gap of one rank; within a group labels are ordered by width, then by
    parameter (dft<dct, sdp<wma, kernel size). For a design space's ops list this reproduces the
    original's ranks, derived from the labels instead of hard-coded names.
    """
    labels = set(labels) - {"input", "output", "add_norm"}
    widths = sorted((lab for lab in labels if lab.startswith("f")), key=lambda lab: int(lab[1:]))
    heads = sorted((lab for lab in labels if not lab.startswith("f")), key=_head_sort_key)
    ranks = {"input": 0, "output": 1, "add_norm": 2}
    rank = 3
    groups = [widths] + [[h for h in heads if _head_sort_key(h)[0] == g] for g in range(len(_GROUP_ORDER))]
    for group in groups:
        rank += 1  # the gap between groups
        for label in group:
            ranks[label] = rank
            rank += 1
    return ranks


def _heads_cost(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    """Optimal head matching: sorted 1-D matching, the shorter list padded with rank 0 (= deletion)."""
    size = max(len(a), len(b))
    pad_a = np.sort(np.array(a + (0,) * (size - len(a))))
    pad_b = np.sort(np.array(b + (0,) * (size - len(b))))
    return float(np.abs(pad_a - pad_b).sum())


def _chain_cost(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    """Node cost minus 0.2 per kept edge for aligning two FF chains between fixed anchors (add_norms)."""
    inf = float("inf")
    # cost[i][j][k]: a[:i] and b[:j] aligned; k = 1 if a[i-1] and b[j-1] (or the anchors) are matched
    cost = [[[inf, inf] for _ in range(len(b) + 1)] for _ in range(len(a) + 1)]
    cost[0][0][1] = 0.0
    for i in range(len(a) + 1):
        for j in range(len(b) + 1):
            here = min(cost[i][j])
            if i < len(a):
                cost[i + 1][j][0] = min(cost[i + 1][j][0], here + a[i])
            if j < len(b):
                cost[i][j + 1][0] = min(cost[i][j + 1][0], here + b[j])
            if i < len(a) and j < len(b):
                sub = abs(a[i] - b[j])
                best = min(cost[i][j][0] + sub, cost[i][j][1] + sub - 2 * EDGE_COST)
                cost[i + 1][j + 1][1] = min(cost[i + 1][j + 1][1], best)
    end = cost[len(a)][len(b)]
    return min(end[0], end[1] - 2 * EDGE_COST)  # the edge into the closing add_norm


class LayerCosts:
    """Layer types of a library and the cost tables between them.

    A layer type is (sorted head ranks, FF ranks). ``match[s, t]`` is the cost of mapping a layer of
    type s onto one of type t (nodes, minus 0.2 per edge kept inside the layer), ``feed[s, t]`` the
    extra saving when the two layers' feed nodes are mapped onto each other (their edges to the
    matched heads and to the first add_norm are kept), ``delete[s]`` the node cost of removing a layer.
    """

    def __init__(self, ranks: dict[str, int]):
        self.ranks = ranks
        self.types: dict[tuple, int] = {}
        self._signatures: list[tuple] = []
        self.match = np.zeros((0, 0))
        self.feed = np.zeros((0, 0))
        self.delete = np.zeros(0)

    def encode(self, model_dict: dict) -> list[int]:
        """Layer-type ids of a model (new types are added to the tables)."""
        ids = []
        for heads, widths in zip(head_labels(model_dict), model_dict["f"], strict=True):
            signature = (tuple(sorted(self.ranks[h] for h in heads)), tuple(self.ranks[f"f{w}"] for w in widths))
            if signature not in self.types:
                self.types[signature] = len(self._signatures)
                self._signatures.append(signature)
            ids.append(self.types[signature])
        self._grow()
        return ids

    def _grow(self) -> None:
        old, new = len(self.delete), len(self._signatures)
        if old == new:
            return
        match, feed, delete = np.zeros((new, new)), np.zeros((new, new)), np.zeros(new)
        match[:old, :old], feed[:old, :old], delete[:old] = self.match, self.feed, self.delete
        add_norm = self.ranks["add_norm"]
        for s in range(old, new):
            heads, ffs = self._signatures[s]
            delete[s] = sum(heads) + sum(ffs) + 2 * add_norm
        for s in range(new):
            for t in range(new):
                if s < old and t < old:
                    continue
                (heads_s, ff_s), (heads_t, ff_t) = self._signatures[s], self._signatures[t]
                kept_heads = min(len(heads_s), len(heads_t))
                # kept inside: head -> add_norm for matched heads and the add_norm residual
                match[s, t] = _heads_cost(heads_s, heads_t) + _chain_cost(ff_s, ff_t) - 2 * EDGE_COST * (kept_heads + 1)
                feed[s, t] = 2 * EDGE_COST * (kept_heads + 1)
        self.match, self.feed, self.delete = match, feed, delete

    def edges(self, ids: Sequence[int]) -> int:
        """Edge count of a model: per layer 2n + nff + 3, plus the edge into output."""
        return sum(2 * len(self._signatures[s][0]) + len(self._signatures[s][1]) + 3 for s in ids) + 1


def pair_distances(costs: LayerCosts, a: np.ndarray, b: np.ndarray, edges_a: np.ndarray, edges_b: np.ndarray) -> np.ndarray:
    """Edit distances of P pairs of equal-depth groups: ``a`` (P, L1) and ``b`` (P, L2) layer-type ids."""
    count, depth_a = a.shape
    depth_b = b.shape[1]
    inf = np.full(count, np.inf)
    free = [[inf.copy() for _ in range(depth_b + 1)] for _ in range(depth_a + 1)]  # last step not a layer match
    tied = [[inf.copy() for _ in range(depth_b + 1)] for _ in range(depth_a + 1)]  # last step matched layers
    tied[0][0] = np.zeros(count)  # the inputs are matched, so the first layers' feeds are too
    for i in range(depth_a + 1):
        for j in range(depth_b + 1):
            here = np.minimum(free[i][j], tied[i][j])
            if i < depth_a:
                np.minimum(free[i + 1][j], here + costs.delete[a[:, i]], out=free[i + 1][j])
            if j < depth_b:
                np.minimum(free[i][j + 1], here + costs.delete[b[:, j]], out=free[i][j + 1])
            if i < depth_a and j < depth_b:
                match = costs.match[a[:, i], b[:, j]]
                best = np.minimum(free[i][j] + match, tied[i][j] + match - costs.feed[a[:, i], b[:, j]])
                np.minimum(tied[i + 1][j + 1], best, out=tied[i + 1][j + 1])
    end = np.minimum(free[depth_a][depth_b], tied[depth_a][depth_b] - 2 * EDGE_COST)  # edge into output kept
    return end + EDGE_COST * (edges_a + edges_b)


class Dissimilarity:
    """Edit distances between the models of a library, for arbitrary batches of index pairs."""

    def __init__(self, model_dicts: Sequence[dict], ranks: dict[str, int]):
        self.costs = LayerCosts(ranks)
        encoded = [self.costs.encode(d) for d in model_dicts]
        self.depth = np.array([len(ids) for ids in encoded])
        width = int(self.depth.max())
        self.layers = np.zeros((len(encoded), width), dtype=np.int64)
        for row, ids in enumerate(encoded):
            self.layers[row, : len(ids)] = ids
        self.edges = np.array([self.costs.edges(ids) for ids in encoded], dtype=float)

    def __len__(self) -> int:
        return len(self.depth)

    def pairs(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        """Distances d(left[k], right[k]) for index arrays of equal length."""
        left, right = np.asarray(left), np.asarray(right)
        out = np.empty(len(left))
        depths_l, depths_r = self.depth[left], self.depth[right]
        for dl in np.unique(depths_l):
            for dr in np.unique(depths_r):
                sel = np.flatnonzero((depths_l == dl) & (depths_r == dr))
                if len(sel):
                    i, j = left[sel], right[sel]
                    out[sel] = pair_distances(self.costs, self.layers[i, :dl], self.layers[j, :dr], self.edges[i], self.edges[j])
        return out

    def to_many(self, index: int, others: np.ndarray | None = None) -> np.ndarray:
        """Distances from one model to ``others`` (all models by default)."""
        others = np.arange(len(self)) if others is None else np.asarray(others)
        return self.pairs(np.full(len(others), index), others)
