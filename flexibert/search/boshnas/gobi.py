"""GOBI: gradient-based optimisation of the surrogate's input, then a snap back to real library models.

All start points are optimised at once as one (k, d) leaf tensor. The rows do not interact (the
acquisition of a row depends on that row only), so this is k independent searches in one batched
pass; a row that has converged is frozen while the others go on (all restarts as one batch).
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch
from scipy.spatial.distance import cdist

from flexibert.search.boshnas.adahessian import AdaHessian
from flexibert.search.boshnas.surrogate import Surrogate

# The original's AdaHessian rate; its step is close to lr times a Newton step, whatever the embeddings' scale.
ADAHESSIAN_LR = 0.5
# The original's SGD rate: with input gradients of order 0.01-0.1 it moves an input by 0.1-1 per step, which
# suits embeddings whose coordinates span several units (edit-distance scale). Unlike AdaHessian's
# Newton-like step it is not scale-free; pass ``lr`` for embeddings of another scale.
SGD_LR = 10.0

Array = TypeVar("Array", np.ndarray, torch.Tensor)


def acquisition(mean: Array, epistemic_std: Array, aleatoric_std: Array, k1: float = 0.5, k2: float = 0.5,
                use_aleatoric: bool = False) -> Array:
    """Lower confidence bound on the loss (minimised): mean - k1*ep - (k2*al if use_aleatoric else 0).

    Both uncertainties are standard deviations, so they add in the same units (the original added a variance to a standard deviation).
    Works on numpy arrays and torch tensors alike.
    """
    bound = mean - k1 * epistemic_std
    return bound - k2 * aleatoric_std if use_aleatoric else bound


def gobi(
    surrogate: Surrogate,
    starts: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    k1: float = 0.5,
    k2: float = 0.5,
    use_aleatoric: bool = False,
    second_order: bool = True,
    lr: float | None = None,
    max_iters: int = 200,
    tol: float = 1e-5,
    patience: int = 5,
    seed: int = 0,
) -> np.ndarray:
    """Minimise the acquisition from each start point inside the box [lower, upper]; returns the (k, d) optimised points.

    AdaHessian (default lr ``ADAHESSIAN_LR``) or, with ``second_order=False``, plain SGD (default lr ``SGD_LR``),
    at a constant learning rate (no periodic cosine schedule, fix C19). Every step is clamped into the box. A row
    converges once its acquisition changed by less than ``tol`` for ``patience`` consecutive steps and then stops
    moving. Each row returns the best point it visited, so its acquisition is never worse than its (clamped)
    start's. The surrogate's parameters get no gradients and are left unchanged. ``seed`` seeds the Hessian probes.
    """
    low = torch.as_tensor(np.asarray(lower), dtype=torch.float32)
    high = torch.as_tensor(np.asarray(upper), dtype=torch.float32)
    x = torch.as_tensor(np.asarray(starts), dtype=torch.float32).clone().clamp(low, high).requires_grad_(True)
    if x.ndim != 2:
        raise ValueError(f"starts must be a (k, d) array, got shape {tuple(x.shape)}")
    if second_order:
        optimizer: torch.optim.Optimizer = AdaHessian([x], lr=ADAHESSIAN_LR if lr is None else lr,
                                                      generator=torch.Generator().manual_seed(seed))
    else:
        optimizer = torch.optim.SGD([x], lr=SGD_LR if lr is None else lr)

    best_x, best_z = x.detach().clone(), torch.full((len(x),), torch.inf)
    previous = torch.full((len(x),), torch.nan)
    quiet_steps = torch.zeros(len(x), dtype=torch.long)
    converged = torch.zeros(len(x), dtype=torch.bool)
    for step in range(max_iters + 1):
        z = acquisition(*surrogate.torch_predict(x), k1=k1, k2=k2, use_aleatoric=use_aleatoric)
        current = z.detach()
        improved = current < best_z
        best_z = torch.where(improved, current, best_z)
        best_x[improved] = x.detach()[improved]
        quiet_steps = torch.where((current - previous).abs() < tol, quiet_steps + 1, 0)
        converged |= quiet_steps >= patience
        if step == max_iters or converged.all():
            break
        previous = current
        # Differentiating w.r.t. x alone leaves the surrogate's parameters without any .grad.
        (x.grad,) = torch.autograd.grad(z.sum(), x, create_graph=second_order)
        frozen = x.detach()[converged].clone()
        optimizer.step()
        with torch.no_grad():
            x.clamp_(low, high)
            x[converged] = frozen
    x.grad = None  # frees the gradient's graph
    return best_x.numpy()


def snap_to_library(points: np.ndarray, library_embeddings: np.ndarray, allowed: np.ndarray, metric: str = "l1") -> np.ndarray:
    """For each point, the index of the nearest allowed library row; an int array (k,), duplicates possible.

    ``metric`` is 'l1' (absolute differences, as the original's mean absolute difference) or 'l2' (Euclidean).
    Only the k x N distance matrix is built (k is GOBI's few restarts). Ties go to the lowest index. Raises
    ValueError if no row is allowed.
    """
    if metric not in ("l1", "l2"):
        raise ValueError(f"metric must be 'l1' or 'l2', got {metric!r}")
    points = np.asarray(points, dtype=np.float64)
    library = np.asarray(library_embeddings, dtype=np.float64)
    allowed = np.asarray(allowed, dtype=bool)
    if points.ndim != 2 or library.ndim != 2 or points.shape[1] != library.shape[1] or allowed.shape != (len(library),):
        raise ValueError(f"shape mismatch: points {points.shape}, library {library.shape}, allowed {allowed.shape}")
    candidates = np.flatnonzero(allowed)
    if len(candidates) == 0:
        raise ValueError("no library row is allowed")
    distance = cdist(points, library[candidates], "cityblock" if metric == "l1" else "euclidean")
    return candidates[distance.argmin(axis=1)]
