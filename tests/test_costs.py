"""Costs from model dicts agree exactly with built models: parameter counts and FlopCounterMode FLOPs."""

import random
import time

import pytest
import torch
from helpers import random_hetero_dict, random_standard_dict
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from flexibert.models.configuration_flexibert import FlexiBERTConfig
from flexibert.models.costs import flops_per_token, model_layout, parameter_count
from flexibert.models.modeling_flexibert import FlexiBERTModel
from flexibert.models.weight_transfer import _size

SETTINGS = {"vocab_size": 101, "max_position_embeddings": 64}
LENGTHS = (16, 64)

DICTS = {
    "sa-sdp+l-dct, ff 1 and 3": {"l": 2, "o": ["sa", "l"], "p": ["sdp", "dct"], "h": [32, 32], "n": [4, 2], "f": [[64], [32, 32, 32]]},
    "c-9+l-dct+l-dft+sa-wma": {
        "l": 4,
        "o": ["c", "l", "l", "sa"],
        "h": [32] * 4,
        "n": [4, 4, 4, 2],
        "f": [[64], [64] * 3, [32] * 3, [32]],
        "p": [9, "dct", "dft", "wma"],
    },
    "c-5+sa-wma, mixed widths": {"l": 2, "o": ["c", "sa"], "h": [16, 32], "n": [2, 4], "f": [[32], [64]], "p": [5, "wma"]},
    "l-dft, narrowing": {"l": 2, "o": ["l", "sa"], "h": [32, 16], "n": [2, 2], "f": [[32], [16, 16, 16]], "p": ["dft", "sdp"]},
    "hetero, all head types": {
        "l": 3,
        "o": [["sa_sdp_8", "sa_wma_8", "c_9_8", "l_dft_8"], ["c_5_8", "l_dct_8"], ["sa_wma_16"]],
        "h": [32, 24, 24],
        "f": [[32], [32, 16], [24]],
    },
    "hetero, no content scores": {"l": 2, "o": [["l_dft_8", "c_5_8", "c_5_8", "c_9_8"], ["l_dct_8"] * 2], "h": [32, 16], "f": [[32], [16]]},
}
POSITIONS = ("relative_key", "absolute")


def _sdpa_flops(query, key, value, *args, out_shape=None, **kwargs):
    return sdpa_flop_count(query, key, value)


# FlopCounterMode has formulas for the CUDA SDPA kernels but not for the CPU one; give it the same.
CPU_SDPA = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_flops}


def _settings(position: str) -> dict:
    return {**SETTINGS, "position_embedding_type": position}


def _measured_flops(model: FlexiBERTModel, length: int, mapping: dict | None = None) -> float:
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        model(torch.randint(2, SETTINGS["vocab_size"], (1, length)))
    return counter.get_total_flops() / length


@pytest.fixture(scope="module", params=[(name, pos) for name in DICTS for pos in POSITIONS], ids=lambda p: f"{p[0]}, {p[1]}")
def built(request):
    name, position = request.param
    torch.manual_seed(0)
    model = FlexiBERTModel(FlexiBERTConfig.from_model_dict(DICTS[name], **_settings(position))).eval()
    return DICTS[name], FlexiBERTConfig(**_settings(position)), model


def test_parameter_count_matches_built_model(built):
    model_dict, config, model = built
    params = {name: p.numel() for name, p in model.named_parameters() if p.requires_grad}
    assert {name: _size(param) for name, param in model_layout(model_dict, config).items()} == params
    for part, prefix in (("total", ""), ("encoder", "encoder."), ("embeddings", "embeddings.")):
        expected = sum(n for name, n in params.items() if name.startswith(prefix))
        assert parameter_count(model_dict, part, config) == expected, part


@pytest.mark.parametrize("length", LENGTHS)
def test_flops_match_flop_counter(built, length):
    model_dict, config, model = built
    assert flops_per_token(model_dict, length, config) == pytest.approx(_measured_flops(model, length, CPU_SDPA), rel=0.01)


def test_sdpa_formula_matches_decomposed_attention():
    """With the math backend attention runs as plain matmuls, which FlopCounterMode counts without help."""
    model_dict = DICTS["c-9+l-dct+l-dft+sa-wma"]
    model = FlexiBERTModel(FlexiBERTConfig.from_model_dict(model_dict, **SETTINGS)).eval()
    with sdpa_kernel(SDPBackend.MATH):
        measured = _measured_flops(model, 32)
    assert flops_per_token(model_dict, 32, FlexiBERTConfig(**SETTINGS)) == pytest.approx(measured, rel=0.01)


def test_attention_flops_grow_with_length():
    model_dict = DICTS["sa-sdp+l-dct, ff 1 and 3"]
    flops = [flops_per_token(model_dict, length) for length in (16, 64, 256)]
    assert flops == sorted(flops) and flops[0] < flops[-1]


def test_default_config_is_roberta_sized():
    model_dict = DICTS["sa-sdp+l-dct, ff 1 and 3"]
    small = parameter_count(model_dict, "embeddings", FlexiBERTConfig(**SETTINGS))
    assert parameter_count(model_dict, "embeddings") - small == (50265 - 101) * 32


def test_unknown_part_and_bad_length_are_refused():
    model_dict = DICTS["sa-sdp+l-dct, ff 1 and 3"]
    with pytest.raises(ValueError, match="total, encoder, embeddings"):
        parameter_count(model_dict, "pooler")
    with pytest.raises(ValueError, match="max_position_embeddings"):
        flops_per_token(model_dict, 65, FlexiBERTConfig(**SETTINGS))
    with pytest.raises(ValueError, match="seq_length"):
        flops_per_token(model_dict, 0)


def test_costs_are_cheap_enough_for_a_library():
    """A search costs every library model; 500 dicts must not come near building models (loose bound)."""
    rng = random.Random(0)
    dicts = [random_standard_dict(rng) if j % 2 else random_hetero_dict(rng) for j in range(500)]
    for cost in (parameter_count, flops_per_token):
        start = time.perf_counter()
        for model_dict in dicts:
            cost(model_dict)
        assert time.perf_counter() - start < 2.0, cost.__name__
