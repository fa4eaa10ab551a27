"""A synthetic benchmark file for a graph library: scores from a smooth function of the architecture plus heteroscedastic noise.

    python -m flexibert.synthetic_benchmark --dataset_file dataset/dataset_test.json --output dataset/synthetic_test.json

It lets search strategies be compared in seconds (``run_boshnas.py --benchmark_file``,
``compare_strategies.py``) and is what the tests search. The score (0-100) rewards attention layers,
wider hidden and feed-forward sizes and an attention layer followed by a different operation, with
diminishing returns; the noise's standard deviation grows with the share of linear-transform ('l')
layers, so the aleatoric part of BOSHNAS's surrogate has something to find. It is NOT a proxy for
real GLUE scores. Each model's noise is seeded by its hash, so a file is reproducible.
"""

from __future__ import annotations

import math

import numpy as np

from embeddings.library import Library
from embeddings.model_dict import parse_model_dict

OP_VALUE = {"sa": 1.0, "c": 0.6, "l": 0.3}
PARAM_VALUE = {"sdp": 0.2, "wma": 0.0, "dft": 0.1, "dct": 0.0, 5: 0.0, 9: 0.1, 13: 0.15}


def _layers(model_dict: dict) -> list[tuple[str, object, int, int, list[int]]]:
    """(op, parameter, hidden, heads, feed-forward sizes) per layer; a per-head (hetero) layer counts by its first head's op."""
    specs, _ = parse_model_dict(model_dict)
    return [(spec.heads[0].kind, spec.heads[0].param, spec.hidden, len(spec.heads), list(spec.ff)) for spec in specs]


def true_score(model_dict: dict) -> float:
    """The noise-free score: a smooth, saturating function of the layers' choices (0-100)."""
    layers = _layers(model_dict)
    value = 0.0
    for i, (op, param, hidden, heads, ff) in enumerate(layers):
        value += OP_VALUE[op] + PARAM_VALUE.get(param, 0.0) + 0.4 * math.log2(hidden / 64) + 0.1 * math.log2(heads)
        value += 0.3 * math.log2(sum(ff) / 256)
        if i + 1 < len(layers) and op == "sa" and layers[i + 1][0] != "sa":
            value += 0.5  # heterogeneity pays: attention followed by a cheaper mixer
    value /= math.sqrt(len(layers))
    return 40.0 + 45.0 * (1.0 - math.exp(-max(value, 0.0) / 3.0))


def noise_std(model_dict: dict) -> float:
    """Heteroscedastic: linear-transform layers make training (here: the score) noisier."""
    layers = _layers(model_dict)
    return 0.3 + 3.0 * sum(op == "l" for op, *_ in layers) / len(layers)


def synthetic_scores(library: Library, seed: int = 0) -> list[dict]:
    entries = []
    for model_dict, model_hash in zip(library.model_dicts, library.hashes, strict=True):
        rng = np.random.default_rng([seed, int(model_hash[:15], 16)])
        score = true_score(model_dict) + noise_std(model_dict) * rng.standard_normal()
        entries.append({"model_hash": model_hash, "model_dict": model_dict, "scores": {"glue": round(float(np.clip(score, 0, 100)), 4),
                                                             "glue_noise_free": round(true_score(model_dict), 4)}})
    return entries


