"""Model dicts, the architecture format of FlexiBERT and its libraries: parsing and validation.

Two formats (see flexibert/modeling_flexibert.py): standard ``{'l', 'o', 'h', 'n', 'f', 'p'}`` with one
operation per layer, and hetero ``{'l', 'o', 'h', 'f'}`` with one operation string per head. It lives
here, free of torch and transformers, because the graph library (hashes, distances, design spaces)
needs it and must stay quick to import; the model re-exports it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

OP_PARAMS: dict[str, tuple[str, ...]] = {"sa": ("sdp", "wma"), "l": ("dft", "dct")}
"""Allowed parameters of each operation; ``'c'`` takes an odd integer kernel size instead."""

STANDARD_KEYS = ("l", "o", "h", "n", "f", "p")
HETERO_KEYS = ("l", "o", "h", "f")
BERT_TINY_DICT = {"l": 2, "o": ["sa", "sa"], "h": [128, 128], "n": [2, 2], "f": [[512], [512]], "p": ["sdp", "sdp"]}
_HETERO_OP = re.compile(r"^(sa|l|c)_([a-z]+|\d+)_(\d+)$")


@dataclass(frozen=True)
class HeadSpec:
    """One head: its operation type (``sa``, ``l``, ``c``) and parameter (e.g. ``sdp``, ``dct``, 9)."""

    kind: str
    param: str | int


@dataclass(frozen=True)
class LayerSpec:
    """One encoder layer, parsed and validated from a model dict."""

    hidden: int
    ff: tuple[int, ...]
    heads: tuple[HeadSpec, ...]
    head_size: int
    op: str  # 'sa', 'l' or 'c' for standard layers, 'hetero' for per-head layers

    @property
    def num_heads(self) -> int:
        return len(self.heads)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_kernel(kernel: Any, where: str) -> int:
    if not _is_int(kernel) or kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"{where}: convolution kernel size must be an odd positive integer such as 5, 9 or 13, got {kernel!r}")
    return kernel


def _check_param(kind: str, param: Any, where: str) -> str | int:
    if kind == "c":
        return _check_kernel(param, where)
    if param not in OP_PARAMS[kind]:
        raise ValueError(f"{where}: unknown parameter {param!r} for operation {kind!r}; allowed: {', '.join(OP_PARAMS[kind])}")
    return param


def _check_list(d: dict, key: str, length: int) -> list:
    value = d[key]
    if not isinstance(value, (list, tuple)) or len(value) != length:
        got = f"{len(value)} entries" if isinstance(value, (list, tuple)) else repr(value)
        raise ValueError(f"model dict key {key!r}: expected a list with one entry per layer (l={length}), got {got}")
    return list(value)


def _parse_ff(ff: Any, layer: int) -> tuple[int, ...]:
    if not isinstance(ff, (list, tuple)) or not ff or not all(_is_int(w) and w > 0 for w in ff):
        raise ValueError(f"model dict key 'f', layer {layer}: expected a non-empty list of positive ints, got {ff!r}")
    return tuple(ff)


def _parse_hetero_head(op: Any, layer: int) -> tuple[HeadSpec, int]:
    where = f"model dict key 'o', layer {layer}"
    match = _HETERO_OP.match(op) if isinstance(op, str) else None
    if match is None:
        raise ValueError(
            f"{where}: malformed head operation {op!r}; expected '<type>_<param>_<head size>' such as 'sa_sdp_64', "
            "'sa_wma_64', 'l_dft_64', 'l_dct_64' or 'c_9_64'"
        )
    kind, param, size = match.group(1), match.group(2), int(match.group(3))
    param = int(param) if kind == "c" and param.isdigit() else param
    if size < 1:
        raise ValueError(f"{where}: head size in {op!r} must be positive")
    return HeadSpec(kind, _check_param(kind, param, f"{where} ({op!r})")), size


def parse_model_dict(model_dict: dict) -> tuple[tuple[LayerSpec, ...], bool]:
    """Validate a model dict; return its layers and whether it is in the hetero format.

    The format is detected as in the original: a dict with ``'p'`` is standard, one without is hetero.
    Errors are ``ValueError``s that name the key and the layer.
    """
    if not isinstance(model_dict, dict):
        raise ValueError(f"a model dict must be a dict, got {type(model_dict).__name__}")
    hetero = "p" not in model_dict
    expected = HETERO_KEYS if hetero else STANDARD_KEYS
    fmt = "hetero (no 'p')" if hetero else "standard"
    missing = [k for k in expected if k not in model_dict]
    unknown = [k for k in model_dict if k not in expected]
    if missing or unknown:
        problems = ([f"missing {missing}"] if missing else []) + ([f"unknown {unknown}"] if unknown else [])
        raise ValueError(f"model dict keys for the {fmt} format must be {list(expected)}: {'; '.join(problems)}")
    depth = model_dict["l"]
    if not _is_int(depth) or depth < 1:
        raise ValueError(f"model dict key 'l': expected a positive number of layers, got {depth!r}")
    ops, hidden, ffs = (_check_list(model_dict, k, depth) for k in ("o", "h", "f"))
    for i, h in enumerate(hidden):
        if not _is_int(h) or h < 1:
            raise ValueError(f"model dict key 'h', layer {i}: expected a positive int, got {h!r}")
    layers = []
    if hetero:
        for i, layer_ops in enumerate(ops):
            if not isinstance(layer_ops, (list, tuple)) or not layer_ops:
                raise ValueError(
                    f"model dict key 'o', layer {i}: the hetero format expects a non-empty list of per-head operations "
                    f"such as ['sa_sdp_64', 'c_9_64'], got {layer_ops!r} (a standard dict needs keys 'n' and 'p')"
                )
            parsed = [_parse_hetero_head(op, i) for op in layer_ops]
            sizes = sorted({size for _, size in parsed})
            if len(sizes) > 1:
                raise ValueError(f"model dict key 'o', layer {i}: all heads of a layer must have the same head size, got {sizes}")
            heads = tuple(head for head, _ in parsed)
            layers.append(LayerSpec(hidden[i], _parse_ff(ffs[i], i), heads, sizes[0], "hetero"))
        return tuple(layers), True
    heads_list, params = _check_list(model_dict, "n", depth), _check_list(model_dict, "p", depth)
    known = _known_standard_layers(ops, params, heads_list, hidden, ffs)
    if known is not None:
        return known, False
    return tuple(_standard_layer(ops[i], params[i], heads_list[i], hidden[i], ffs[i], i) for i in range(depth)), False


def _standard_layer(op: Any, param: Any, n: Any, h: int, ff: Any, i: int) -> LayerSpec:
    """One validated layer of a standard dict; errors name the key and layer ``i``."""
    if op not in ("sa", "l", "c"):
        raise ValueError(f"model dict key 'o', layer {i}: unknown operation {op!r}; allowed: 'sa', 'l', 'c'")
    param = _check_param(op, param, f"model dict key 'p', layer {i}")
    if not _is_int(n) or n < 1:
        raise ValueError(f"model dict key 'n', layer {i}: expected a positive number of heads, got {n!r}")
    if h % n:
        raise ValueError(f"model dict key 'n', layer {i}: hidden size h={h} is not divisible by n={n} heads")
    if op == "c" and n % 2:
        raise ValueError(
            f"model dict key 'n', layer {i}: a 'c' layer splits its heads into attention and convolution halves, "
            f"so n must be even, got {n}"
        )
    return LayerSpec(h, _parse_ff(ff, i), (HeadSpec(op, param),) * n, h // n, op)


def _known_standard_layers(ops: list, params: list, heads: list, hidden: list, ffs: list) -> tuple[LayerSpec, ...] | None:
    """The layers from a cache of valid ones (a million models of a design space repeat a few thousand layers).

    None where a value is not of exactly the type the cache is keyed on (``True == 1`` as a key) or a layer is
    invalid: the caller then validates layer by layer and names what is wrong.
    """
    layers = []
    for op, param, n, h, ff in zip(ops, params, heads, hidden, ffs, strict=True):
        if type(op) is not str or type(param) not in (str, int) or type(n) is not int or type(h) is not int \
                or type(ff) not in (list, tuple) or {type(w) for w in ff} != {int}:
            return None
        spec = _cached_standard_layer(op, param, n, h, tuple(ff))
        if spec is None:
            return None
        layers.append(spec)
    return tuple(layers)


@lru_cache(maxsize=1 << 16)
def _cached_standard_layer(op: str, param: str | int, n: int, h: int, ff: tuple[int, ...]) -> LayerSpec | None:
    try:
        return _standard_layer(op, param, n, h, ff, 0)
    except ValueError:
        return None
