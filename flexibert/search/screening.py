"""Caps that only a measurement checks: each model is measured on the search's machine before it is proposed.

A model dict tells its parameters and FLOPs, so ``--max_params`` and ``--max_flops`` rule models out
before the search starts. Latency it does not tell, and measuring a whole library would take hours, so
``--max_latency_ms`` is checked lazily: a model the strategy wants is built with random weights (latency
does not depend on the weights) and timed on the machine the controller runs on, the measurement is
journaled as a ``screen`` event, and a model over the cap is never proposed. A resumed search reads the
verdicts from the journal instead of measuring again, so it takes the same decisions.
"""

from __future__ import annotations

from embeddings.library import Library
from flexibert.search.objectives import Constraint


class LatencyScreen:
    """Measures models against the latency cap (``settings``: batch_size, seq_length and repeats of the measurement)."""

    def __init__(self, library: Library, cap: Constraint, settings: dict):
        self.library, self.cap, self.settings = library, cap, settings

    def measure(self, model_hash: str) -> dict:
        """The model's latency on this machine's device, as a job would measure it (median and interquartile range, ms)."""
        from flexibert.models.latency import latency_of  # torch: only when a search caps latency

        return latency_of(self.library.model_dict(model_hash), self.settings)

    def verdict(self, model_hash: str) -> dict:
        """The fields of a ``screen`` event: the measurement and whether the cap allows the model."""
        latency = self.measure(model_hash)
        return {"model_hash": model_hash, "latency": latency, "limit_ms": self.cap.limit,
                "allowed": bool(self.cap.allows(latency["median_ms"]))}

