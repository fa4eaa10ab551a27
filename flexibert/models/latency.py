"""Inference latency of a model, measured where it runs: the ``latency`` objective of a search.

Latency depends on the hardware, the batch, the sequence length and the kernels, not on the
weights, so each candidate's job measures it once, on its own device, after training (or on a
randomly initialised model when scores come from a benchmark file). The median of several timed
forward passes is the value; the interquartile range is reported beside it as its noise.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from flexibert.models.configuration_flexibert import FlexiBERTConfig
from flexibert.models.modeling_flexibert import FlexiBERTModel

WARMUP_PASSES = 3  # the first passes pay for allocations and kernel selection


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def measure_latency(model: torch.nn.Module, batch_size: int = 1, seq_length: int = 128, repeats: int = 20,
                    device: torch.device | str | None = None) -> dict:
    """Median and interquartile range (milliseconds) of ``repeats`` timed forward passes on random token ids."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = model.to(device).eval()
    vocab = model.config.vocab_size
    inputs = torch.randint(0, vocab, (batch_size, seq_length), generator=torch.Generator().manual_seed(0)).to(device)
    for _ in range(WARMUP_PASSES):
        model(input_ids=inputs)
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        model(input_ids=inputs)
        _sync(device)
        times.append((time.perf_counter() - start) * 1000)
    low, median, high = np.percentile(times, [25, 50, 75])
    return {"median_ms": float(median), "iqr_ms": float(high - low), "batch_size": batch_size, "seq_length": seq_length,
            "repeats": repeats, "device": str(device), "threads": torch.get_num_threads()}


def latency_of(model_dict: dict, settings: dict, network: torch.nn.Module | None = None) -> dict:
    """``network``, by default a randomly initialised model of ``model_dict`` (latency does not depend on the weights),
    measured with a search's latency settings (``batch_size``, ``seq_length``, ``repeats``)."""
    network = network if network is not None else FlexiBERTModel(FlexiBERTConfig.from_model_dict(model_dict))
    return measure_latency(network, settings["batch_size"], settings["seq_length"], settings["repeats"])
