"""Benchmark files: scores of trained models looked up instead of training (NAS-Bench-BERT, or a synthetic file).

A benchmark file is ``{"entries": [{"model_dict": ..., "model_hash": ..., "scores": {"glue": ...}}]}``;
a search with ``--benchmark_file`` scores each candidate by looking it up, which lets strategies be
compared in seconds (``run_boshnas.py --benchmark_file``, ``compare_strategies.py``).

The synthetic benchmark (``python -m flexibert.synthetic_benchmark``) is what the tests search. Its
score (0-100) rewards attention layers, wider hidden and feed-forward sizes and an attention layer
followed by a different operation, with diminishing returns; the noise's standard deviation grows
with the share of linear-transform ('l') layers, so the aleatoric part of BOSHNAS's surrogate has
something to find. It is NOT a proxy for real GLUE scores. Each model's noise is seeded by its hash,
so a file is reproducible.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path

import numpy as np

from embeddings.graph import model_hash as compute_model_hash
from embeddings.library import Library
from embeddings.model_dict import parse_model_dict


class BenchmarkError(ValueError):
    """A benchmark file cannot score a model as asked (no such model, no such metric, not a benchmark)."""


def _mean_scores(measurements: list[dict]) -> dict:
    """One architecture's scores from its repeated measurements: the mean of each numeric score (others: the first)."""
    merged = dict(measurements[0])
    for name in list(merged):
        values = [m.get(name) for m in measurements]
        if all(is_number(v) for v in values):
            merged[name] = float(np.mean(values))
    return merged


def _columns(entry: dict) -> dict:
    """An entry's scores and its other numeric fields (``time_to_train``): any of them can be a search objective."""
    extra = {k: v for k, v in entry.items() if is_number(v) and k != "id"}
    return {**extra, **entry["scores"]}


def _check_entry(path: str, number: int, entry: object) -> None:
    """One entry that can be indexed: an object with a "scores" object and its model (a "model_hash" or a "model_dict")."""
    what = f"{path}: entry #{number}"
    if not isinstance(entry, dict):
        raise BenchmarkError(f"{what} is a JSON {type(entry).__name__}, not an object; each entry is "
                             '{"model_dict": ..., "scores": {"glue": ...}}')
    if not isinstance(entry.get("scores"), dict):
        has = f"its keys: {', '.join(entry) or 'none'}" if "scores" not in entry else f"\"scores\" is {entry['scores']!r}"
        raise BenchmarkError(f"{what} has no \"scores\" object ({has}); each entry needs its scores, e.g. \"scores\": {{\"glue\": 81.2}}")
    if not entry.get("model_hash") and not isinstance(entry.get("model_dict"), dict):
        raise BenchmarkError(f"{what} names no model (no \"model_hash\" and no \"model_dict\"; its keys: {', '.join(entry)})")


@lru_cache(maxsize=4)
def _benchmark_index(path: str, mtime: float) -> tuple[dict[str, dict], int]:
    """``{hash: scores}`` of a benchmark file and how many architectures it lists more than once (hashed once per process).

    An architecture listed twice was trained twice: its scores are repeated measurements of one model,
    so the search sees their mean (not whichever entry came last).
    """
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as err:
        raise BenchmarkError(f"{path} is not valid JSON ({err}): the file may be truncated (an interrupted write); "
                             "write it again") from None
    entries = data.get("entries") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        found = f"a JSON {type(data).__name__}" if not isinstance(data, dict) else f"an object with the keys {', '.join(data) or 'none'}"
        wrap = " (if the list holds the entries, write it as {\"entries\": LIST})" if isinstance(data, list) else ""
        raise BenchmarkError(f"{path} holds {found}, not a benchmark file: expected "
                             f"{{\"entries\": [{{\"model_dict\": ..., \"scores\": {{...}}}}, ...]}}{wrap}")
    measured: dict[str, list[dict]] = {}
    for number, entry in enumerate(entries):
        _check_entry(path, number, entry)
        # An entry's "model_hash", when present, saves hashing every model dict (seconds for 10,000 models).
        measured.setdefault(entry.get("model_hash") or compute_model_hash(entry["model_dict"]), []).append(_columns(entry))
    repeated = sum(len(scores) > 1 for scores in measured.values())
    return {digest: _mean_scores(scores) for digest, scores in measured.items()}, repeated


def benchmark_index(path: str | Path) -> tuple[dict[str, dict], int]:
    """``({hash: scores}, number of architectures measured more than once)`` of a benchmark file."""
    path = Path(path)
    return _benchmark_index(str(path.resolve()), path.stat().st_mtime)


def benchmark_columns(path: str | Path, model_hash: str) -> dict:
    """Every numeric column of one model's entry (its scores, and fields such as ``time_to_train``); {} if it is not there."""
    return {k: v for k, v in benchmark_index(path)[0].get(model_hash, {}).items() if is_number(v)}


def benchmark_score(path: str | Path, metric: str, model_hash: str) -> float:
    """The score of ``model_hash`` in a benchmark file (scores 0-100; the mean of repeated measurements)."""
    scores = benchmark_index(path)[0].get(model_hash)
    if scores is None:
        raise BenchmarkError(f"model {model_hash} is not in the benchmark file {path}; a benchmark must score every model "
                             "the search can propose (build the library from the benchmark's models with --model_dicts)")
    value = scores.get(metric)
    if not is_number(value):
        raise BenchmarkError(f"model {model_hash} in {path} has no numeric score {metric!r} (it has: {', '.join(scores) or 'none'})")
    if not math.isfinite(value):  # e.g. a training that diverged: the model is recorded as failed, as in a training search
        raise BenchmarkError(f"model {model_hash} in {path} has the score {metric!r} {value}, not a finite number: the benchmark "
                             "records its training as failed")
    return float(value)


def is_number(value: object) -> bool:
    """A JSON number (not a boolean); NaN and infinity included."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


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


