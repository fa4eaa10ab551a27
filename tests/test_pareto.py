"""Pareto fronts and hypervolume, checked against brute force on small integer point sets."""

import itertools
import math
import time

import numpy as np
import pytest
from scipy.stats import norm

from flexibert.search import pareto
from flexibert.search.pareto import as_minimisation, hypervolume, hypervolume_curve, pareto_mask


def brute_mask(points: np.ndarray) -> np.ndarray:
    """Double loop over plain tuples: NaN rows are off the front and dominate nothing."""
    rows = [tuple(row) for row in points.tolist()]
    valid = [not any(np.isnan(v) for v in row) for row in rows]
    mask = []
    for i, p in enumerate(rows):
        dominated = any(
            valid[j] and all(a <= b for a, b in zip(q, p, strict=True)) and any(a < b for a, b in zip(q, p, strict=True))
            for j, q in enumerate(rows)
        )
        mask.append(valid[i] and not dominated)
    return np.array(mask, dtype=bool)


def brute_volume(points: np.ndarray, reference: np.ndarray) -> float:
    """Count the unit cells of the integer grid below the reference whose lower corner some point is no worse than."""
    finite = points[~np.isnan(points).any(axis=1)]
    if not len(finite):
        return 0.0
    low = int(min(finite.min(), reference.min()))
    axes = [range(low, int(r)) for r in reference]
    cells = np.array(list(itertools.product(*axes)), dtype=float).reshape(-1, len(reference))
    covered = (finite[None, :, :] <= cells[:, None, :]).all(axis=2).any(axis=1)
    return float(covered.sum())


def random_points(rng: np.random.Generator, n: int, k: int, low: int, high: int, nan_rows: int = 0) -> np.ndarray:
    points = rng.integers(low, high + 1, size=(n, k)).astype(float)
    if nan_rows:
        rows = rng.choice(n, size=nan_rows, replace=False)
        cols = rng.integers(0, k, size=nan_rows)
        points[rows, cols] = np.nan
    return points


# ---- pareto_mask


@pytest.mark.parametrize("k", [1, 2, 3, 4])
@pytest.mark.parametrize("seed", range(6))
def test_pareto_mask_matches_brute_force(k, seed):
    rng = np.random.default_rng(seed)
    # Few distinct values, so ties and exact duplicates are common.
    points = random_points(rng, n=int(rng.integers(1, 60)), k=k, low=0, high=4)
    np.testing.assert_array_equal(pareto_mask(points), brute_mask(points))


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_pareto_mask_ignores_nan_rows(k):
    rng = np.random.default_rng(100 + k)
    points = random_points(rng, n=50, k=k, low=0, high=3, nan_rows=10)
    mask = pareto_mask(points)
    np.testing.assert_array_equal(mask, brute_mask(points))
    assert not mask[np.isnan(points).any(axis=1)].any()


def test_pareto_mask_hand_made_example():
    points = np.array(
        [
            [1.0, 5.0],  # front
            [2.0, 3.0],  # front
            [2.0, 3.0],  # duplicate of a front point: also front
            [2.0, 4.0],  # dominated by (2, 3): equal first, worse second
            [3.0, 3.0],  # dominated by (2, 3)
            [4.0, 1.0],  # front
            [0.0, np.nan],  # NaN: off the front and would otherwise dominate (1, 5)
            [5.0, 1.0],  # dominated by (4, 1)
        ]
    )
    expected = [True, True, True, False, False, True, False, False]
    np.testing.assert_array_equal(pareto_mask(points), expected)


def test_pareto_mask_nan_never_dominates():
    points = np.array([[0.0, np.nan, 0.0], [1.0, 1.0, 1.0], [np.nan, np.nan, np.nan]])
    np.testing.assert_array_equal(pareto_mask(points), [False, True, False])


def test_pareto_mask_empty_and_all_nan():
    assert pareto_mask(np.zeros((0, 3))).shape == (0,)
    assert pareto_mask(np.array([])).shape == (0,)
    np.testing.assert_array_equal(pareto_mask(np.full((3, 2), np.nan)), [False, False, False])


def test_pareto_mask_all_duplicates_are_front():
    np.testing.assert_array_equal(pareto_mask(np.ones((5, 3))), [True] * 5)
    np.testing.assert_array_equal(pareto_mask(np.ones((5, 2))), [True] * 5)


def test_pareto_mask_in_small_blocks_matches_brute_force(monkeypatch):
    # Force many comparison blocks, with a last block shorter than the rest.
    monkeypatch.setattr(pareto, "_CHUNK_ELEMENTS", 7 * 3 * 97)
    rng = np.random.default_rng(7)
    points = random_points(rng, n=97, k=3, low=0, high=5)
    np.testing.assert_array_equal(pareto_mask(points), brute_mask(points))


def test_pareto_mask_two_objectives_is_fast():
    rng = np.random.default_rng(0)
    points = rng.random((10_000, 2))
    start = time.perf_counter()
    mask = pareto_mask(points)
    assert time.perf_counter() - start < 1.0
    # Anti-correlated points give a large front; check it against the general comparison.
    anti = np.column_stack([points[:2000, 0], 1 - points[:2000, 0] + 0.05 * points[:2000, 1]])
    np.testing.assert_array_equal(pareto_mask(anti), pareto._front_any(anti))
    assert mask.any()


def test_pareto_mask_rejects_bad_shapes():
    with pytest.raises(ValueError):
        pareto_mask(np.ones(3))
    with pytest.raises(ValueError):
        pareto_mask(np.ones((2, 2, 2)))


# ---- hypervolume


@pytest.mark.parametrize("k", [2, 3, 4, 5])
@pytest.mark.parametrize("seed", range(8))
def test_hypervolume_matches_grid_count(k, seed):
    rng = np.random.default_rng(seed)
    reference = np.full(k, {2: 5.0, 3: 5.0, 4: 4.0, 5: 3.0}[k])  # keeps the grid small
    # Some points lie on or beyond the reference in some objective; they must add nothing.
    points = random_points(rng, n=int(rng.integers(1, 15)), k=k, low=-2, high=int(reference[0]) + 1, nan_rows=1)
    assert hypervolume(points, reference) == pytest.approx(brute_volume(points, reference))


def test_hypervolume_uneven_reference_matches_grid_count():
    rng = np.random.default_rng(3)
    reference = np.array([4.0, 7.0, 3.0])
    points = random_points(rng, n=12, k=3, low=-1, high=7)
    assert hypervolume(points, reference) == pytest.approx(brute_volume(points, reference))


def test_hypervolume_hand_computed_2d():
    # Staircase (1, 3), (2, 2), (3, 1) under (4, 4): columns of height 1, 2 and 3.
    points = np.array([[3.0, 1.0], [1.0, 3.0], [2.0, 2.0]])
    assert hypervolume(points, np.array([4.0, 4.0])) == pytest.approx(6.0)


def test_hypervolume_hand_computed_3d():
    assert hypervolume(np.zeros((1, 3)), np.array([1.0, 2.0, 3.0])) == pytest.approx(6.0)
    # Boxes of 4 and 2 overlapping in a unit cube.
    points = np.array([[0.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    assert hypervolume(points, np.full(3, 2.0)) == pytest.approx(5.0)


def test_hypervolume_one_objective():
    points = np.array([[3.0], [1.0], [5.0], [np.nan]])
    assert hypervolume(points, np.array([4.0])) == pytest.approx(3.0)
    assert hypervolume(points, np.array([0.5])) == 0.0


def test_hypervolume_empty_nan_and_outside_points_give_zero():
    reference = np.array([1.0, 1.0])
    assert hypervolume(np.zeros((0, 2)), reference) == 0.0
    assert hypervolume(np.full((2, 2), np.nan), reference) == 0.0
    # On the reference in one objective, or beyond it: no box.
    assert hypervolume(np.array([[0.0, 1.0], [2.0, 0.0], [1.0, -5.0]]), reference) == 0.0


def test_points_beyond_reference_add_nothing():
    rng = np.random.default_rng(11)
    points = rng.random((30, 3))
    reference = np.full(3, 1.0)
    beyond = np.array([[-1.0, -1.0, 1.5], [2.0, -3.0, -3.0], [-1.0, 1.0, -1.0]])
    assert hypervolume(np.vstack([points, beyond]), reference) == pytest.approx(hypervolume(points, reference))


@pytest.mark.parametrize("k", [2, 3, 4])
def test_dominated_point_does_not_change_volume(k):
    rng = np.random.default_rng(20 + k)
    points = rng.random((25, k))
    reference = np.full(k, 1.2)
    before = hypervolume(points, reference)
    worse = points[0] + 0.01  # dominated by point 0, still inside the box
    assert hypervolume(np.vstack([points, worse]), reference) == pytest.approx(before, rel=1e-12)
    assert hypervolume(np.vstack([points, points[:3]]), reference) == pytest.approx(before, rel=1e-12)


@pytest.mark.parametrize("k", [2, 3, 4])
def test_hypervolume_ignores_row_and_column_order(k):
    rng = np.random.default_rng(30 + k)
    points = rng.random((40, k))
    reference = np.linspace(1.1, 1.4, k)
    expected = hypervolume(points, reference)
    assert hypervolume(points[rng.permutation(40)], reference) == pytest.approx(expected, rel=1e-12)
    # Renaming the objectives must not change the volume (the slicing order changes).
    cols = rng.permutation(k)
    assert hypervolume(points[:, cols], reference[cols]) == pytest.approx(expected, rel=1e-12)


def test_hypervolume_scales_with_objectives():
    rng = np.random.default_rng(5)
    points = rng.random((50, 3))
    reference = np.full(3, 1.0)
    scale = np.array([2.0, 0.5, 3.0])
    assert hypervolume(points * scale, reference * scale) == pytest.approx(3.0 * hypervolume(points, reference), rel=1e-12)


@pytest.mark.parametrize(("k", "n"), [(3, 400), (4, 250)])
def test_hypervolume_of_large_front_is_fast(k, n):
    rng = np.random.default_rng(k)
    front = rng.dirichlet(np.ones(k), size=n)  # on a hyperplane: no point dominates another
    assert pareto_mask(front).all()
    start = time.perf_counter()
    volume = hypervolume(front, np.full(k, 1.0))
    assert time.perf_counter() - start < 1.0
    # The finite front covers less than the whole region above the hyperplane (box minus the corner simplex).
    assert 0.5 < volume < 1.0 - 1.0 / math.factorial(k)


def test_hypervolume_rejects_bad_reference():
    points = np.zeros((2, 3))
    with pytest.raises(ValueError, match="2 entries but points have 3"):
        hypervolume(points, np.ones(2))
    with pytest.raises(ValueError):
        hypervolume(points, np.array([1.0, np.nan, 1.0]))


# ---- hypervolume_curve


@pytest.mark.parametrize("k", [1, 2, 3, 4])
@pytest.mark.parametrize("seed", range(3))
def test_hypervolume_curve_is_each_prefix_volume(k, seed):
    rng = np.random.default_rng(40 + seed)
    reference = np.full(k, 4.0)
    points = random_points(rng, n=25, k=k, low=-1, high=5, nan_rows=3)
    curve = hypervolume_curve(points, reference)
    assert curve.shape == (25,)
    expected = [hypervolume(points[:i], reference) for i in range(1, 26)]
    np.testing.assert_allclose(curve, expected, rtol=1e-12, atol=1e-12)
    assert (np.diff(curve) >= 0).all()
    assert curve[-1] == pytest.approx(hypervolume(points, reference))
    assert curve[-1] == pytest.approx(brute_volume(points, reference))


@pytest.mark.parametrize("k", [2, 3])
def test_hypervolume_curve_on_continuous_points(k):
    rng = np.random.default_rng(50 + k)
    points = rng.random((200, k))
    reference = np.full(k, 0.9)  # some points lie beyond it
    curve = hypervolume_curve(points, reference)
    assert (np.diff(curve) >= 0).all()
    assert curve[-1] == pytest.approx(hypervolume(points, reference), rel=1e-12)
    assert curve[0] == pytest.approx(hypervolume(points[:1], reference))


def test_hypervolume_curve_in_small_blocks(monkeypatch):
    rng = np.random.default_rng(60)
    points = rng.random((53, 2))
    reference = np.ones(2)
    full = hypervolume_curve(points, reference)
    monkeypatch.setattr(pareto, "_CHUNK_ELEMENTS", 53 * 4)
    np.testing.assert_allclose(hypervolume_curve(points, reference), full, rtol=1e-12)


def test_hypervolume_curve_empty():
    assert hypervolume_curve(np.zeros((0, 2)), np.ones(2)).shape == (0,)


# ---- as_minimisation


def test_as_minimisation_negates_maximised_columns():
    values = np.array([[0.9, 120.0, 3.0], [0.8, 80.0, -2.0]])
    out = as_minimisation(values, [True, False, True])
    np.testing.assert_array_equal(out, [[-0.9, 120.0, -3.0], [-0.8, 80.0, 2.0]])
    assert values[0, 0] == 0.9  # the input is left alone
    np.testing.assert_array_equal(as_minimisation(values, [False, False, False]), values)


def test_as_minimisation_then_front_keeps_best_accuracy_for_size():
    # Maximise accuracy, minimise parameters.
    values = np.array([[0.90, 100.0], [0.85, 50.0], [0.80, 60.0], [0.90, 120.0]])
    np.testing.assert_array_equal(pareto_mask(as_minimisation(values, [True, False])), [True, True, False, False])


def test_as_minimisation_refuses_wrong_length_mask():
    with pytest.raises(ValueError, match=r"maximize has 2 entries but values have 3 objectives"):
        as_minimisation(np.zeros((4, 3)), [True, False])


# ---- expected_hypervolume_improvements


@pytest.mark.parametrize("known_column", [0, 1])
@pytest.mark.parametrize("seed", range(4))
def test_expected_improvement_without_uncertainty_is_the_exact_improvement(known_column, seed):
    rng = np.random.default_rng(seed)
    front, reference = rng.random((7, 2)), np.array([1.1, 1.2])
    candidates = rng.random((40, 2)) * 1.3  # some beyond the reference in either objective
    expected = pareto.expected_hypervolume_improvements(front, candidates[:, known_column], candidates[:, 1 - known_column],
                                                         np.zeros(40), reference, known_column=known_column)
    np.testing.assert_allclose(expected, pareto.hypervolume_improvements(front, candidates, reference), atol=1e-12)
    assert (expected > 0).any() and (expected == 0).any()


@pytest.mark.parametrize("known_column", [0, 1])
def test_expected_improvement_is_the_average_over_the_gaussian(known_column):
    """Against a dense quadrature of the exact improvement over the unknown objective's normal distribution."""
    rng = np.random.default_rng(7)
    front, reference = rng.random((6, 2)), np.array([1.0, 1.0])
    known, mean, std = rng.random(5), rng.random(5), np.array([0.02, 0.1, 0.3, 0.5, 0.05])
    expected = pareto.expected_hypervolume_improvements(front, known, mean, std, reference, known_column=known_column)
    quantiles = (np.arange(4000) + 0.5) / 4000
    for i in range(5):
        unknown = mean[i] + std[i] * norm.ppf(quantiles)
        points = np.empty((len(unknown), 2))
        points[:, known_column], points[:, 1 - known_column] = known[i], unknown
        np.testing.assert_allclose(expected[i], pareto.hypervolume_improvements(front, points, reference).mean(), atol=2e-4)


def test_expected_improvement_rewards_uncertainty_below_the_front():
    """A candidate predicted just behind the front gains nothing for sure, but something in expectation if uncertain."""
    front, reference = np.array([[0.0, 0.5], [0.5, 0.0]]), np.array([1.0, 1.0])
    gains = pareto.expected_hypervolume_improvements(front, np.array([0.5, 0.5]), np.array([0.6, 0.6]), np.array([0.0, 0.2]),
                                                     reference, known_column=1)
    assert gains[0] == 0 and gains[1] > 0
    empty = pareto.expected_hypervolume_improvements(np.zeros((0, 2)), np.array([0.5]), np.array([0.5]), np.zeros(1), reference)
    assert empty[0] == pytest.approx(0.25)
