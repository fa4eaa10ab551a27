"""Nearest neighbours of every model of a library, without an N x N matrix.

``distance``: the k nearest models in embedding space. ``biased`` (the original's default): models
that share the longest prefix of node labels with the query come first (they share the most
leading layers, so weight transfer from them copies the most), ties broken by embedding distance.
For ``biased``, the models are sorted by their label sequences once; the models sharing a prefix of
length >= t with a query then form one contiguous run of that order, so each query looks only at
the smallest run that holds k other models.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from sklearn.neighbors import NearestNeighbors
from tqdm.auto import tqdm

NEIGHBOR_METHODS = ("biased", "distance")


def clip_neighbors(num_neighbors: int, count: int) -> int:
    """``num_neighbors`` clipped to N - 1 (with a warning), since a model is never its own neighbour."""
    if num_neighbors < 0:
        raise ValueError(f"num_neighbors must be >= 0, got {num_neighbors}")
    if num_neighbors > count - 1:
        warnings.warn(f"num_neighbors={num_neighbors} but the library has {count} models: using {count - 1}", stacklevel=2)
        return count - 1
    return num_neighbors


def distance_neighbors(embeddings: np.ndarray, num_neighbors: int) -> np.ndarray:
    """(N, k) indices of the k nearest other models by Euclidean embedding distance."""
    count = len(embeddings)
    if num_neighbors == 0:
        return np.zeros((count, 0), dtype=np.int64)
    index = NearestNeighbors(n_neighbors=num_neighbors + 1).fit(embeddings)
    _, found = index.kneighbors(embeddings)
    result = np.empty((count, num_neighbors), dtype=np.int64)
    for row in range(count):  # drop the query itself (not always first when embeddings coincide)
        others = found[row][found[row] != row]
        result[row] = others[:num_neighbors]
    return result


def encode_labels(label_lists: Sequence[Sequence[str]]) -> np.ndarray:
    """(N, V) integer codes of node labels, right-padded with -1."""
    vocabulary: dict[str, int] = {}
    width = max(len(labels) for labels in label_lists)
    codes = np.full((len(label_lists), width), -1, dtype=np.int32)
    for row, labels in enumerate(label_lists):
        codes[row, : len(labels)] = [vocabulary.setdefault(label, len(vocabulary)) for label in labels]
    return codes


def prefix_overlap(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common prefix of two label lists (the original's overlap)."""
    length = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        length += 1
    return length


def biased_neighbors(label_lists: Sequence[Sequence[str]], embeddings: np.ndarray, num_neighbors: int) -> np.ndarray:
    """(N, k) indices ordered by (longest common label prefix descending, embedding distance ascending)."""
    count = len(label_lists)
    result = np.zeros((count, num_neighbors), dtype=np.int64)
    if num_neighbors == 0:
        return result
    codes = encode_labels(label_lists)
    order = np.lexsort(codes.T[::-1])
    ranked = codes[order]
    mismatch = ranked[1:] != ranked[:-1]
    # adjacent[r] = common prefix length of sorted rows r-1 and r (identical rows share everything)
    adjacent = np.concatenate([[-1], np.where(mismatch.any(axis=1), mismatch.argmax(axis=1), codes.shape[1])])
    run_start, run_stop = _smallest_runs(adjacent, num_neighbors + 1)
    for rank in tqdm(range(count), desc="neighbours", unit="model", leave=False, mininterval=1.0):
        lo, hi = run_start[rank], run_stop[rank]
        overlap = np.empty(hi - lo, dtype=np.int64)
        overlap[rank - lo] = codes.shape[1] + 1
        if rank > lo:  # prefix shared with rows above: running minimum of adjacent overlaps, walking up
            overlap[: rank - lo] = np.minimum.accumulate(adjacent[lo + 1 : rank + 1][::-1])[::-1]
        if hi > rank + 1:
            overlap[rank - lo + 1 :] = np.minimum.accumulate(adjacent[rank + 1 : hi])
        members = order[lo:hi]
        query = order[rank]
        distance = np.linalg.norm(embeddings[members] - embeddings[query], axis=1)
        candidates = members[_first_by_overlap_then_distance(overlap, distance, num_neighbors + 1)]
        result[query] = candidates[candidates != query][:num_neighbors]
    return result


def _first_by_overlap_then_distance(overlap: np.ndarray, distance: np.ndarray, count: int) -> np.ndarray:
    """Positions of the first ``count`` entries in the order of ``np.lexsort((distance, -overlap))`` (a stable sort),
    without sorting a long run whole: the entries above the overlap level where ``count`` is reached, sorted, then the
    nearest ones at that level (ties in distance broken by position, as the stable sort does)."""
    if len(overlap) <= 2 * count:
        return np.lexsort((distance, -overlap))[:count]
    level = -np.partition(-overlap, count - 1)[count - 1]  # the overlap of the count-th entry
    above = np.flatnonzero(overlap > level)
    above = above[np.lexsort((distance[above], -overlap[above]))]
    at_level = np.flatnonzero(overlap == level)
    wanted = count - len(above)
    if wanted < len(at_level):
        cut = np.partition(distance[at_level], wanted - 1)[wanted - 1]
        at_level = at_level[distance[at_level] <= cut]
    at_level = at_level[np.argsort(distance[at_level], kind="stable")][:wanted]
    return np.concatenate([above, at_level])


def _smallest_runs(adjacent: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """For each sorted row, the bounds of the smallest run of rows sharing a prefix with it that holds ``size`` rows."""
    count = len(adjacent)
    start = np.zeros(count, dtype=np.int64)
    stop = np.full(count, count, dtype=np.int64)  # threshold 0: the whole library
    found = np.zeros(count, dtype=bool)
    for threshold in range(int(adjacent.max()), 0, -1):
        run_id = np.cumsum(adjacent < threshold) - 1  # a new run starts where the shared prefix drops below t
        sizes = np.bincount(run_id)
        firsts = np.searchsorted(run_id, np.arange(len(sizes)))
        fits = ~found & (sizes[run_id] >= size)
        start[fits] = firsts[run_id[fits]]
        stop[fits] = firsts[run_id[fits]] + sizes[run_id[fits]]
        found |= fits
        if found.all():
            break
    return start, stop


def find_neighbors(
    label_lists: Sequence[Sequence[str]], embeddings: np.ndarray, num_neighbors: int, method: str = "biased"
) -> np.ndarray:
    """(N, k) neighbour indices by ``method`` (``biased`` or ``distance``); k is clipped to N - 1."""
    if method not in NEIGHBOR_METHODS:
        raise ValueError(f"unknown neighbour method {method!r}; choose one of {list(NEIGHBOR_METHODS)}")
    num_neighbors = clip_neighbors(num_neighbors, len(embeddings))
    if method == "distance":
        return distance_neighbors(embeddings, num_neighbors)
    return biased_neighbors(label_lists, embeddings, num_neighbors)
