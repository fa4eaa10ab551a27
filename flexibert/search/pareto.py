"""Pareto fronts and hypervolume for the multi-objective search.

Every function here works in minimisation form: smaller is better in every objective. A caller
that maximises some objectives (accuracy, say) negates those columns first with
:func:`as_minimisation`. Points are a float array of shape ``(n, k)``, one row per evaluated
architecture and one column per objective. Rows containing NaN (an evaluation that gave no score)
are never on the front, never dominate anything and add no volume.

The hypervolume is the volume between the points and a reference point that is worse than every
point worth counting; it grows as the search finds better or more varied trade-offs, so
``hypervolume_curve`` is the search's progress after each evaluation.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import special

# Largest number of array elements one vectorised comparison may build at once (about 32 MB of floats).
_CHUNK_ELEMENTS = 4_000_000


def as_minimisation(values: np.ndarray, maximize: Sequence[bool]) -> np.ndarray:
    """A copy of ``values`` with the maximised columns negated, so every objective is minimised."""
    out = np.array(values, dtype=float, copy=True)
    if out.ndim != 2:
        raise ValueError(f"values must be a 2-D array (n, k), got shape {out.shape}")
    mask = np.asarray(maximize, dtype=bool).reshape(-1)
    if len(mask) != out.shape[1]:
        raise ValueError(f"maximize has {len(mask)} entries but values have {out.shape[1]} objectives")
    out[:, mask] = -out[:, mask]
    return out


def pareto_mask(points: np.ndarray) -> np.ndarray:
    """True for the points no other point dominates; equal copies of a front point all stay on it."""
    pts = _as_points(points)
    mask = np.zeros(len(pts), dtype=bool)
    valid = ~np.isnan(pts).any(axis=1)
    if not valid.any():
        return mask
    finite = pts[valid]
    if finite.shape[1] == 1:
        mask[valid] = finite[:, 0] == finite[:, 0].min()
    elif finite.shape[1] == 2:
        mask[valid] = _front_2d(finite)
    else:
        mask[valid] = _front_any(finite)
    return mask


def hypervolume(points: np.ndarray, reference: np.ndarray) -> float:
    """Exact volume dominated by the points inside the reference box; only front points inside the box count."""
    pts = _as_points(points)
    ref = _as_reference(reference, pts.shape[1])
    front = _front_inside(pts, ref)
    return float(_volume(front, ref)) if len(front) else 0.0


def hypervolume_curve(points: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Hypervolume of the first i points for i = 1..n: the search's progress after each evaluation."""
    pts = _as_points(points)
    ref = _as_reference(reference, pts.shape[1])
    if not len(pts):
        return np.zeros(0)
    # A point that adds nothing (NaN, or not strictly inside the box) is moved onto the reference point.
    inert = np.isnan(pts).any(axis=1) | ~(pts < ref).all(axis=1)
    clean = np.where(inert[:, None], ref, pts)
    if pts.shape[1] == 1:
        return ref[0] - np.minimum.accumulate(clean[:, 0])
    if pts.shape[1] == 2:
        return _prefix_areas(clean, ref)
    return _curve_by_front(clean, inert, ref)


def reference_point(columns: Sequence[np.ndarray], maximize: Sequence[bool]) -> np.ndarray:
    """The reference point of FlexiBERT's hypervolumes (minimisation form), from each objective's known values.

    A maximised objective (a score) counts from its median: a model in the bottom half is of no use
    whatever its size. A minimised one (a cost, positive) counts from 1.05 x its largest value, so
    the largest models still count when they score well.
    """
    return np.array([-np.nanmedian(column) if up else 1.05 * np.nanmax(column) for column, up in zip(columns, maximize, strict=True)],
                    dtype=float)


def hypervolume_improvements(points: np.ndarray, candidates: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """How much each candidate point (one at a time) would add to the hypervolume of ``points``."""
    ref = _as_reference(reference, candidates.shape[1])
    base = _front_inside(_as_points(points), ref)
    before = _volume(base, ref) if len(base) else 0.0
    return np.array([hypervolume(np.vstack([base, candidate[None]]), ref) - before for candidate in candidates])


def expected_hypervolume_improvements(points: np.ndarray, known: np.ndarray, mean: np.ndarray, std: np.ndarray,
                                      reference: np.ndarray, known_column: int = 1) -> np.ndarray:
    """Two objectives, one known exactly and one Gaussian: each candidate's expected gain in the hypervolume of ``points``.

    A candidate's ``known_column`` value is ``known``; its other value is N(``mean``, ``std``). Its gain
    is the area of the staircase cells it would dominate: with the front sorted by the known
    objective, the cell from one front point to the next has the height of the best other value so
    far, and a candidate at value y gains width x max(0, height - y) in each cell to its right. The
    expectation of max(0, height - y) is Gaussian expected improvement, so the whole sum is exact
    (no sampling) and vectorised over candidates and cells.
    """
    ref = _as_reference(reference, 2)
    other = 1 - known_column
    front = _front_inside(_as_points(points), ref)
    front = front[np.argsort(front[:, known_column], kind="stable")] if len(front) else front.reshape(0, 2)
    edges = np.concatenate(([-np.inf], front[:, known_column], [ref[known_column]]))  # cell k spans edges k..k+1
    heights = np.concatenate(([ref[other]], front[:, other]))  # the best other value left of each cell's right edge
    heights = np.minimum.accumulate(heights)
    x = np.asarray(known, dtype=float)[:, None]
    widths = np.maximum(0.0, edges[None, 1:] - np.maximum(x, edges[None, :-1]))
    return (widths * _expected_shortfall(heights[None, :], np.asarray(mean, dtype=float)[:, None],
                                         np.asarray(std, dtype=float)[:, None])).sum(axis=1)


def _expected_shortfall(height: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """E[max(0, height - y)] for y ~ N(mean, std); exactly max(0, height - mean) where std is 0."""
    gap, spread = np.broadcast_arrays(height - mean, std)
    safe = np.where(spread > 0, spread, 1.0)  # a zero std would divide by zero; its value is the plain shortfall
    z = gap / safe
    value = gap * special.ndtr(z) + safe * np.exp(-0.5 * z * z) / np.sqrt(2 * np.pi)
    return np.where(spread > 0, value, np.maximum(gap, 0.0))


def _as_points(points: np.ndarray) -> np.ndarray:
    """The points as a float (n, k) array; an empty input of any shape is zero points."""
    pts = np.asarray(points, dtype=float)
    if pts.size == 0 and pts.ndim < 2:
        return pts.reshape(0, 1)
    if pts.ndim != 2 or pts.shape[1] < 1:
        raise ValueError(f"points must be a 2-D array (n, k) with k >= 1, got shape {pts.shape}")
    return pts


def _as_reference(reference: np.ndarray, k: int) -> np.ndarray:
    """The reference point as a finite float vector with one entry per objective."""
    ref = np.asarray(reference, dtype=float).reshape(-1)
    if len(ref) != k:
        raise ValueError(f"reference has {len(ref)} entries but points have {k} objectives")
    if not np.isfinite(ref).all():
        raise ValueError(f"reference must be finite, got {ref}")
    return ref


def _front_2d(pts: np.ndarray) -> np.ndarray:
    """Two objectives: sort by (first, second); a point is dominated if an earlier, different point is no worse in the second."""
    order = np.lexsort((pts[:, 1], pts[:, 0]))
    xs, ys = pts[order, 0], pts[order, 1]
    # Equal rows form one group; only rows before the group can dominate it.
    starts = np.ones(len(xs), dtype=bool)
    starts[1:] = (xs[1:] != xs[:-1]) | (ys[1:] != ys[:-1])
    group_start = np.maximum.accumulate(np.where(starts, np.arange(len(xs)), 0))
    best_before = np.concatenate(([np.inf], np.minimum.accumulate(ys)))[group_start]
    on_front = np.empty(len(xs), dtype=bool)
    on_front[order] = ~(best_before <= ys)
    return on_front


def _front_any(pts: np.ndarray) -> np.ndarray:
    """Any number of objectives: compare every point with every other, a block of rows at a time."""
    n, k = pts.shape
    rows = max(1, _CHUNK_ELEMENTS // max(1, n * k))
    dominated = np.zeros(n, dtype=bool)
    for lo in range(0, n, rows):
        block = pts[lo : lo + rows, None, :]
        no_worse = (pts[None, :, :] <= block).all(axis=2)
        better = (pts[None, :, :] < block).any(axis=2)
        dominated[lo : lo + rows] = (no_worse & better).any(axis=1)
    return ~dominated


def _front_inside(pts: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """The distinct front points that strictly beat the reference in every objective."""
    inside = pts[~np.isnan(pts).any(axis=1) & (pts < ref).all(axis=1)]
    if not len(inside):
        return inside
    return np.unique(inside[pareto_mask(inside)], axis=0)


def _volume(front: np.ndarray, ref: np.ndarray) -> float:
    """Hypervolume of points all strictly inside the reference box (dominated points are allowed)."""
    k = front.shape[1]
    if k == 1:
        return float(ref[0] - front[:, 0].min())
    if k == 2:
        return float(_prefix_areas(front, ref, last_only=True)[-1])
    if k == 3:
        return _volume_3d(front, ref)
    return _volume_by_slices(front, ref)


def _prefix_areas(pts: np.ndarray, ref: np.ndarray, last_only: bool = False) -> np.ndarray:
    """Area dominated by the first i points, for every i (or only for all of them); points must be inside the box or on it.

    Sweep along the first objective: between consecutive first-objective values the covered height
    is the reference minus the best second objective seen so far among the points counted.
    """
    n = len(pts)
    order = np.argsort(pts[:, 0], kind="stable")
    xs, ys = pts[order, 0], pts[order, 1]
    widths = np.diff(np.append(xs, ref[0]))
    if last_only:
        return np.array([np.dot(widths, ref[1] - np.minimum.accumulate(ys))])
    areas = np.empty(n)
    rows = max(1, _CHUNK_ELEMENTS // n)
    for lo in range(0, n, rows):
        counts = np.arange(lo + 1, min(n, lo + rows) + 1)
        # Row j holds the second objectives of the first counts[j] points, the rest set to the reference.
        heights = np.where(order[None, :] < counts[:, None], ys[None, :], ref[1])
        areas[lo : lo + len(counts)] = (ref[1] - np.minimum.accumulate(heights, axis=1)) @ widths
    return areas


def _volume_3d(pts: np.ndarray, ref: np.ndarray) -> float:
    """Three objectives: slice along the third; each slice's area is that of the points below it, all slices at once."""
    order = np.argsort(pts[:, 2], kind="stable")
    sorted_pts = pts[order]
    thickness = np.diff(np.append(sorted_pts[:, 2], ref[2]))
    return float(np.dot(thickness, _prefix_areas(sorted_pts[:, :2], ref[:2])))


def _volume_by_slices(pts: np.ndarray, ref: np.ndarray) -> float:
    """Four or more objectives: slice along the last one and add up each slice's volume in one objective fewer.

    Each slice holds the points below it, projected onto the other objectives; its front changes by at
    most one arriving point per slice, and its volume is recomputed only when the front has changed.
    """
    order = np.argsort(pts[:, -1], kind="stable")
    projected = pts[order, :-1]
    thickness = np.diff(np.append(pts[order, -1], ref[-1]))
    front = projected[:0]
    total, slice_volume, changed = 0.0, 0.0, False
    for point, height in zip(projected, thickness, strict=True):
        grown = _with_point(front, point)
        if grown is not None:
            front, changed = grown, True
        if height > 0:
            if changed:
                slice_volume, changed = _volume(front, ref[:-1]), False
            total += height * slice_volume
    return total


def _with_point(front: np.ndarray, point: np.ndarray) -> np.ndarray | None:
    """The front after ``point`` arrives, or None when a front point is no worse everywhere (nothing changes)."""
    if (front <= point).all(axis=1).any():
        return None
    return np.vstack([front[~(point <= front).all(axis=1)], point])


def _curve_by_front(clean: np.ndarray, inert: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Three or more objectives: keep the front as points arrive and recompute only when a point joins it."""
    curve = np.zeros(len(clean))
    front = clean[:0]
    volume = 0.0
    for i, point in enumerate(clean):
        grown = None if inert[i] else _with_point(front, point)
        if grown is not None:
            front = grown
            volume = _volume(front, ref)
        curve[i] = volume
    return curve
