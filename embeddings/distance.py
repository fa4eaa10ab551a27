"""Graph edit distance between architecture graphs: the cost of a layer-aligned edit path, vectorised over pairs.

Cost model of the original (spec §3.2): substituting a node costs the difference of the two labels'
ranks, inserting or deleting one costs its rank, each inserted or deleted edge 0.1. The value is the
cost of one concrete edit path, so it is never below the exact GED. That path maps layers onto layers
in order, inserting or deleting whole layers, and is optimised by dynamic programming over layers
(``pair_distances``). In a matched pair of layers the add_norms map onto add_norms, the highest-ranked
heads onto each other, and the FF chains by their best partial injection (crossings allowed). Surplus
heads and unmatched FF nodes are substituted with each other by sorted 1-D matching. The cost of every
pair of layer types is tabulated once, so a pair of models costs O(L1*L2) table look-ups, done for
millions of pairs at once with numpy (about 2.5 M pairs/s on one core for the test library).

When it equals the exact GED (checked against an exact binary-LP GED with scipy's HiGHS; networkx's
``graph_edit_distance`` agrees wherever it is optimal itself):

* any two single-layer models: always (600 random pairs with 2 or 4 heads, different head counts
  included, and 1-3 FF nodes of mixed widths);
* two models of the same depth whose layers are all of one type (homogeneous, as every 2-layer model
  of a library at lps=2): always (400 pairs of depth 2-3).

When it differs, and by how much (excess = ours - exact):

* 1 vs 2 layers (2 heads, 1-2 FF): exact on 65% of 200 pairs; mean excess 2.2 (6.5%), max 12.0;
* two heterogeneous 2-layer models: exact on 50%; mean excess 4.9, max 42.6;
* homogeneous models of different depth (1 vs 2-3 layers): exact on 34%; mean excess 13.1, max 68;
* random pairs of the test library (lps=2, 2/4 layers): exact on 33% of 200 pairs; mean excess 25.0
  (mean GED 91.4, mean relative excess 39%), median 14.4, max 144. The ranks of these distances correlate only
  0.60 (Spearman) with the exact GED's ranks. The original's value (networkx's first edit path) is
  4% above the exact GED and correlates at 0.999.

The excess comes in whole rank units, not edges, because rank costs make cross-role and cross-layer
substitutions cheap and a layer-aligned path cannot use them. The exact path maps layers out of order
(for example, heads [4, 4, 2, 2] against [2, 2, 4, 4]), or it substitutes the nodes of a deleted layer
or surplus heads for nodes of another layer (a head for an FF node costs only the rank difference).
networkx's exhaustive search is itself not always optimal under these tied costs (networkx issue
#8099): on 1-vs-2-layer pairs it was above the exact GED on 13 of 200 pairs (by at most 0.6), and
there this distance can be below networkx's value.
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Iterable, Sequence

import numpy as np

from embeddings.graph import head_labels
from flexibert.modeling_flexibert import OP_PARAMS

EDGE_COST = 0.1
DECIMALS = 9
MAX_EXACT_CHAIN = 4  # FF chains up to this length are matched over all partial injections
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


def _pool_cost(a: Sequence[int], b: Sequence[int]) -> int:
    """Cheapest node cost of turning nodes ``a`` into nodes ``b`` when their edges are lost anyway.

    Sorted 1-D matching, the shorter list padded with rank 0: a node matched to the padding is
    deleted or inserted at its rank, any other pair is substituted at the rank difference.
    """
    size = max(len(a), len(b))
    pad_a = [0] * (size - len(a)) + sorted(a)
    pad_b = [0] * (size - len(b)) + sorted(b)
    return sum(abs(x - y) for x, y in zip(pad_a, pad_b, strict=True))


def _ordered_chain_cost(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    """Node cost minus 0.2 per kept edge for aligning two FF chains in order between fixed anchors (add_norms)."""
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


@functools.cache
def _chain_options(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[tuple[float, tuple[int, ...], tuple[int, ...]], ...]:
    """Ways of mapping FF chain ``a`` onto chain ``b`` between matched add_norms.

    Each option is (node cost of the matched FF nodes minus 0.2 per kept chain edge, ranks of a's
    unmatched FF nodes, ranks of b's), the cheapest per pair of leftovers. Chains of up to
    ``MAX_EXACT_CHAIN`` nodes try every partial injection (crossings included); longer ones are
    aligned in order, their unmatched nodes deleted or inserted (no leftovers).
    """
    if max(len(a), len(b)) > MAX_EXACT_CHAIN:
        return ((_ordered_chain_cost(a, b), (), ()),)
    best: dict[tuple, float] = {}
    for size in range(min(len(a), len(b)) + 1):
        for picked_a in itertools.combinations(range(len(a)), size):
            for picked_b in itertools.permutations(range(len(b)), size):
                image = dict(zip(picked_a, picked_b, strict=True)) | {-1: -1, len(a): len(b)}  # the add_norm anchors
                kept = sum(1 for x in range(-1, len(a)) if x in image and x + 1 in image and image[x + 1] == image[x] + 1)
                cost = sum(abs(a[i] - b[j]) for i, j in zip(picked_a, picked_b, strict=True)) - 2 * EDGE_COST * kept
                key = (tuple(a[i] for i in range(len(a)) if i not in picked_a), tuple(b[j] for j in range(len(b)) if j not in picked_b))
                best[key] = min(best.get(key, float("inf")), cost)
    return tuple((cost, left_a, left_b) for (left_a, left_b), cost in best.items())


@functools.cache
def _chain_and_pool(ff_a: tuple[int, ...], ff_b: tuple[int, ...], extra_a: tuple[int, ...], extra_b: tuple[int, ...]) -> float:
    """Best chain option, its unmatched FF nodes substituted with each other and with the surplus heads."""
    return min(cost + _pool_cost(left_a + extra_a, left_b + extra_b) for cost, left_a, left_b in _chain_options(ff_a, ff_b))


def _layer_match_cost(heads_a: tuple[int, ...], ff_a: tuple[int, ...], heads_b: tuple[int, ...], ff_b: tuple[int, ...]) -> float:
    """Node cost minus 0.2 per kept edge of mapping one layer onto another (add_norms onto add_norms).

    Heads: the highest-ranked heads are paired in sorted order (each pair keeps head -> add_norm);
    the surplus heads of the larger layer and the unmatched FF nodes of both layers are then
    substituted with each other by sorted matching (cheap under rank costs; their edges are counted
    as lost) or deleted/inserted. The add_norm residual is always kept.
    """
    top_a, top_b = sorted(heads_a, reverse=True), sorted(heads_b, reverse=True)
    kept = min(len(top_a), len(top_b))
    heads = sum(abs(x - y) for x, y in zip(top_a[:kept], top_b[:kept], strict=True))
    chain = _chain_and_pool(ff_a, ff_b, tuple(top_a[kept:]), tuple(top_b[kept:]))
    return heads + chain - 2 * EDGE_COST * (kept + 1)


class LayerCosts:
    """Layer types of a library and the cost tables between them.

    A layer type is (sorted head ranks, FF ranks). ``match[s, t]`` is the cost of mapping a layer of
    type s onto one of type t (nodes, minus 0.2 per edge kept inside the layer, ``_layer_match_cost``),
    ``feed[s, t]`` the extra saving when the two layers' feed nodes are mapped onto each other (their
    edges to the matched heads and to the first add_norm are kept), ``delete[s]`` the node cost of
    removing a layer; ``after_tie``/``after_gap`` are the match costs used by ``pair_distances``.
    """

    def __init__(self, ranks: dict[str, int]):
        self.ranks = ranks
        self.types: dict[tuple, int] = {}
        self._signatures: list[tuple] = []
        self.match = np.zeros((0, 0))
        self.feed = np.zeros((0, 0))
        self.delete = np.zeros(0)
        self.after_tie = np.zeros((0, 0))
        self.after_gap = np.zeros((0, 0))

    def encode(self, model_dict: dict) -> list[int]:
        """Layer-type ids of a model (new types are added to the tables)."""
        return self.encode_many([model_dict])[0]

    def encode_many(self, model_dicts: Iterable[dict]) -> list[list[int]]:
        """Layer-type ids of several models; the tables grow once for all new types."""
        encoded = [self._register(d) for d in model_dicts]
        self._grow()
        return encoded

    def _register(self, model_dict: dict) -> list[int]:
        ids = []
        for heads, widths in zip(head_labels(model_dict), model_dict["f"], strict=True):
            signature = (tuple(sorted(self.ranks[h] for h in heads)), tuple(self.ranks[f"f{w}"] for w in widths))
            if signature not in self.types:
                self.types[signature] = len(self._signatures)
                self._signatures.append(signature)
            ids.append(self.types[signature])
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
            for t in range(old if s < old else 0, new):  # only pairs with a new type
                (heads_s, ff_s), (heads_t, ff_t) = self._signatures[s], self._signatures[t]
                match[s, t] = _layer_match_cost(heads_s, ff_s, heads_t, ff_t)
                feed[s, t] = 2 * EDGE_COST * (min(len(heads_s), len(heads_t)) + 1)
        self.match, self.feed, self.delete = match, feed, delete
        self.after_tie = match - feed  # matched after a matched pair: feed edges kept
        self.after_gap = match - np.maximum(feed - 4 * EDGE_COST, 0)  # after one-sided deletions (see pair_distances)

    def edges(self, ids: Sequence[int]) -> int:
        """Edge count of a model: per layer 2n + nff + 3, plus the edge into output."""
        return sum(2 * len(self._signatures[s][0]) + len(self._signatures[s][1]) + 3 for s in ids) + 1


def _lower(x: np.ndarray | None, y: np.ndarray | None) -> np.ndarray | None:
    """Element-wise minimum where None stands for an unreachable state (all infinite)."""
    if x is None or y is None:
        return y if x is None else x
    return np.minimum(x, y)


def _lower_into(grid: list[list], i: int, j: int, values: np.ndarray) -> None:
    """grid[i][j] = min(grid[i][j], values); ``values`` must be a fresh array (it may be kept)."""
    if grid[i][j] is None:
        grid[i][j] = values
    else:
        np.minimum(grid[i][j], values, out=grid[i][j])


def pair_distances(costs: LayerCosts, a: np.ndarray, b: np.ndarray, edges_a: np.ndarray, edges_b: np.ndarray) -> np.ndarray:
    """Edit distances of P pairs of equal-depth groups: ``a`` (P, L1) and ``b`` (P, L2) layer-type ids.

    DP over (layers of a done, layers of b done) with three states per cell: ``tied`` (the last step
    matched two layers, whose second add_norms are mapped onto each other, so the next matched pair
    keeps its feed edges) and ``trail_a``/``trail_b`` (a tie followed only by deletions of a's / of b's
    layers). Two node re-assignments of equal node cost keep edges a plain layer alignment loses:

    * gap: after a tie (a_i, b_j), deleted layers a_{i+1..k}, then a match (a_{k+1}, b_{j+1}): map
      a_k's second add_norm (not a_i's) onto b_j's. The two edges into a_i's add_norm are lost, the
      feed edges of the new match are kept: saving ``feed - 0.4`` (``LayerCosts.after_gap``). Leading
      deletions (no layer matched yet) stay ``tied``: the last deleted add_norm takes the place of the
      deleted input (rank 0, free), so the full feed is kept.
    * trailing deletions after the last tie: the other model's ``output`` is mapped onto the first
      deleted layer's first add_norm (|2 - 1| + 1 for the unmatched output = the add_norm's rank), which
      keeps the edge into output: saving 0.2, as for a tie at the end.

    Gaps deleting layers of both models are left out: matching the last layer of each instead is
    never more expensive (``match <= delete + delete``) and ends in a tie.
    """
    count, depth_a = a.shape
    depth_b = b.shape[1]
    # states per cell, None = unreachable; rows are dropped once done
    tied: list[list] = [[None] * (depth_b + 1) for _ in range(depth_a + 1)]
    trail_a: list[list] = [[None] * (depth_b + 1) for _ in range(depth_a + 1)]
    trail_b: list[list] = [[None] * (depth_b + 1) for _ in range(depth_a + 1)]
    tied[0][0] = np.zeros(count)  # the inputs are matched, so the first matched layers' feeds are too
    after_tie, after_gap = costs.after_tie.ravel(), costs.after_gap.ravel()
    types = len(costs.delete)
    for i in range(depth_a + 1):
        if i < depth_a:
            delete_a, row_a = costs.delete[a[:, i]], a[:, i] * types
        for j in range(depth_b + 1):
            here, gap_a, gap_b = tied[i][j], trail_a[i][j], trail_b[i][j]
            if i < depth_a and (after := _lower(here, gap_a)) is not None:
                _lower_into(tied if j == 0 else trail_a, i + 1, j, after + delete_a)
            if j < depth_b and (after := _lower(here, gap_b)) is not None:
                _lower_into(tied if i == 0 else trail_b, i, j + 1, after + costs.delete[b[:, j]])
            if i < depth_a and j < depth_b:
                pair = row_a + b[:, j]
                if here is not None:
                    _lower_into(tied, i + 1, j + 1, here + after_tie[pair])
                if (gap := _lower(gap_a, gap_b)) is not None:
                    _lower_into(tied, i + 1, j + 1, gap + after_gap[pair])
        if i < depth_a:
            tied[i], trail_a[i], trail_b[i] = [], [], []
    end = _lower(_lower(tied[depth_a][depth_b], trail_a[depth_a][depth_b]), trail_b[depth_a][depth_b])
    end = end - 2 * EDGE_COST  # the edge into output is kept
    # costs are integers plus multiples of EDGE_COST: rounding removes float noise (d(a, a) == 0, exact symmetry)
    return np.round(end + EDGE_COST * (edges_a + edges_b), DECIMALS)


class Dissimilarity:
    """Edit distances between the models of a library, for arbitrary batches of index pairs."""

    def __init__(self, model_dicts: Sequence[dict], ranks: dict[str, int]):
        self.costs = LayerCosts(ranks)
        encoded = self.costs.encode_many(model_dicts)
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
