"""Numbers as the results files record them: JSON has no NaN or infinity, and parameter counts mean trainable scalars."""

from __future__ import annotations

import math

import torch


def count_parameters(model: torch.nn.Module) -> int:
    """Number of trainable scalars (what the paper's tables report)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def finite_or_none(value: float | None) -> float | None:
    """A float for a JSON file: NaN and infinity (a diverged run) become null, as JSON has no such numbers."""
    return float(value) if value is not None and math.isfinite(value) else None


def perplexity(loss: float) -> float | None:
    """exp(loss), or None when it overflows or the loss is not finite."""
    try:
        return finite_or_none(math.exp(loss))
    except OverflowError:
        return None
