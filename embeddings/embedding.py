"""Euclidean embeddings of a library whose distances preserve the graph edit distances.

No N x N matrix is ever formed, so libraries of hundreds of thousands of models fit in memory:
``MDS`` (the default) is landmark MDS: classical MDS on a seeded sample of landmark models, every
other model placed by triangulation from its distances to the landmarks. ``GD`` (the original's
default) starts from that and refines all points by gradient descent on the squared error between
embedding and edit distances over sampled pairs. Measured on the test space (lps 2) with the earlier,
layer-aligned distance: Spearman 0.966 (MDS) vs 0.963 (GD, 20 epochs), top-20 neighbour recall 0.78 for
both, so GD is kept as an option only; with the current distance MDS reaches 0.981.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
from scipy.stats import spearmanr
from tqdm.auto import tqdm

EMBEDDING_METHODS = ("GD", "MDS")
LANDMARK_PAIRS = 1 << 25
"""Most model-landmark distances computed: up to 131,072 models every model meets all 256 landmarks, above that
fewer landmarks (at least ``MIN_LANDMARKS``), so a million-model library costs 48 M distances instead of 256 M (for
the full space's 6-layer models, at about 0.15 M pairs/s per core: 5 CPU minutes instead of 29). Measured on 10,000
sampled models of the full space (lps 1), two landmark seeds: Spearman fidelity 0.987 with 256 landmarks, 0.987 with
128, 0.982-0.985 with 64, 0.974-0.982 with 48, 0.967-0.975 with 32, 0.85-0.96 with 24."""
MIN_LANDMARKS = 48


class PairDistances(Protocol):
    """Anything that returns d(left[k], right[k]) for index arrays (``embeddings.distance.Dissimilarity``)."""

    def __len__(self) -> int: ...

    def pairs(self, left: np.ndarray, right: np.ndarray) -> np.ndarray: ...


class MatrixDistances:
    """A precomputed dissimilarity matrix (``--diss_mat_file``) behind the same interface."""

    def __init__(self, matrix: np.ndarray):
        if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
            raise ValueError(f"a dissimilarity matrix must be square, got shape {matrix.shape}")
        self.matrix = matrix

    def __len__(self) -> int:
        return len(self.matrix)

    def pairs(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        return self.matrix[left, right]


def _distances_to(distances: PairDistances, landmarks: np.ndarray, chunk: int = 1 << 20) -> np.ndarray:
    """The (N, m) distances of every model to every landmark, in chunks of about ``chunk`` pairs."""
    count, width = len(distances), len(landmarks)
    out = np.empty((count, width))
    rows = max(1, chunk // width)
    for start in tqdm(range(0, count, rows), desc="distances to landmarks", unit="chunk", leave=False):
        stop = min(count, start + rows)
        left = np.repeat(np.arange(start, stop), width)
        out[start:stop] = distances.pairs(left, np.tile(landmarks, stop - start)).reshape(stop - start, width)
    return out


def landmark_count(count: int, num_landmarks: int = 256) -> int:
    """Landmarks for ``count`` models: ``num_landmarks``, fewer above ``LANDMARK_PAIRS`` distances (never below
    ``MIN_LANDMARKS``), so the cost of the distances to landmarks grows linearly with the library."""
    return min(count, num_landmarks, max(MIN_LANDMARKS, LANDMARK_PAIRS // count))


def landmark_mds(to_landmarks: np.ndarray, landmarks: np.ndarray, size: int, rows: int = 1 << 16) -> np.ndarray:
    """Classical MDS of the landmarks, then triangulation of every model (de Silva and Tenenbaum, 2004).

    The triangulation runs over ``rows`` models at a time, so its temporaries stay small for a million models.
    """
    squared = to_landmarks[landmarks] ** 2
    centred = squared - squared.mean(axis=0) - squared.mean(axis=1, keepdims=True) + squared.mean()
    values, vectors = np.linalg.eigh(-0.5 * centred)
    top = np.argsort(values)[::-1][:size]
    top = top[values[top] > 1e-9 * max(values.max(), 1e-12)]  # non-Euclidean parts have no real coordinates
    values, vectors = values[top], vectors[:, top]
    pseudo_inverse = vectors / np.sqrt(values)  # (m, k)
    column_means = squared.mean(axis=0)
    coords = np.zeros((len(to_landmarks), size))  # fewer landmarks than dimensions: the last columns stay zero
    for start in range(0, len(to_landmarks), rows):
        part = to_landmarks[start : start + rows]
        coords[start : start + rows, : pseudo_inverse.shape[1]] = -0.5 * (part**2 - column_means) @ pseudo_inverse
    return coords


def refine(
    coords: np.ndarray,
    distances: PairDistances,
    to_landmarks: np.ndarray,
    landmarks: np.ndarray,
    seed: int,
    epochs: int = 20,
    landmark_pairs_per_model: int = 24,
    random_pairs_per_model: int = 8,
    batch_size: int = 16384,
    lr: float = 0.05,
) -> np.ndarray:
    """Gradient descent on the stress: mean squared error of Euclidean vs edit distance over sampled pairs.

    Every epoch draws, per model, some pairs with landmarks (distances already known) and some with
    random models (distances computed now), so the cost grows linearly with the library. torch is
    imported by this option alone: the default MDS needs none, so the graph library imports without it.
    """
    import torch

    was_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)  # gradient scatter-adds in a fixed order: same seed, same file
    try:
        return _descend(coords, distances, to_landmarks, landmarks, seed, epochs, landmark_pairs_per_model,
                        random_pairs_per_model, batch_size, lr)
    finally:
        torch.use_deterministic_algorithms(was_deterministic)


def _descend(coords: np.ndarray, distances: PairDistances, to_landmarks: np.ndarray, landmarks: np.ndarray, seed: int,
             epochs: int, landmark_pairs_per_model: int, random_pairs_per_model: int, batch_size: int, lr: float) -> np.ndarray:
    """``refine``'s descent, under the deterministic algorithms it switched on."""
    import torch

    count = len(coords)
    generator = np.random.default_rng(seed)
    points = torch.nn.Parameter(torch.tensor(coords, dtype=torch.float32))
    optimizer = torch.optim.Adam([points], lr=lr)
    pairs_per_epoch = count * (landmark_pairs_per_model + random_pairs_per_model)
    steps_per_epoch = -(-pairs_per_epoch // batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * steps_per_epoch)
    for _ in tqdm(range(epochs), desc="embedding (GD)", unit="epoch", leave=False):
        landmark_left = np.repeat(np.arange(count), landmark_pairs_per_model)
        columns = generator.integers(0, len(landmarks), len(landmark_left))
        random_left = generator.integers(0, count, count * random_pairs_per_model)
        random_right = generator.integers(0, count, count * random_pairs_per_model)
        left = np.concatenate([landmark_left, random_left])
        right = np.concatenate([landmarks[columns], random_right])
        target = np.concatenate([to_landmarks[landmark_left, columns], distances.pairs(random_left, random_right)])
        order = generator.permutation(len(left))
        left, right, target = (torch.from_numpy(a[order]) for a in (left, right, target.astype(np.float32)))
        for start in range(0, len(order), batch_size):
            batch = slice(start, start + batch_size)
            predicted = (points[left[batch]] - points[right[batch]]).norm(dim=1)
            loss = ((predicted - target[batch]) ** 2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
    return points.detach().double().numpy()


def embed(
    distances: PairDistances,
    size: int = 16,
    method: str = "MDS",
    seed: int = 0,
    num_landmarks: int = 256,
    epochs: int = 20,
) -> np.ndarray:
    """(N, size) float64 embeddings of the models behind ``distances``; the same seed gives the same result.

    ``num_landmarks`` is an upper bound: large libraries use fewer (``landmark_count``).
    """
    if method not in EMBEDDING_METHODS:
        raise ValueError(f"unknown embedding method {method!r}; choose one of {list(EMBEDDING_METHODS)}")
    count = len(distances)
    if count == 1:
        return np.zeros((1, size))
    landmarks = np.sort(np.random.default_rng(seed).choice(count, size=landmark_count(count, num_landmarks), replace=False))
    to_landmarks = _distances_to(distances, landmarks)
    coords = landmark_mds(to_landmarks, landmarks, size)
    if method == "GD":
        coords = refine(coords, distances, to_landmarks, landmarks, seed, epochs=epochs)
    return coords


def fidelity(embeddings: np.ndarray, distances: PairDistances, num_pairs: int = 20000, seed: int = 1) -> float:
    """Spearman correlation between embedding and edit distances on random pairs of distinct models."""
    count = len(embeddings)
    if count < 3:
        return float("nan")
    generator = np.random.default_rng(seed)
    left, right = generator.integers(0, count, num_pairs), generator.integers(0, count, num_pairs)
    keep = left != right
    left, right = left[keep], right[keep]
    euclidean = np.linalg.norm(embeddings[left] - embeddings[right], axis=1)
    return float(spearmanr(euclidean, distances.pairs(left, right)).statistic)
