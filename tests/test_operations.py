"""Each operation against an independent reference: torch.fft, scipy's DCT, per-head loops."""

import math

import numpy as np
import pytest
import scipy.fft
import torch
from helpers import small_config

from flexibert import FlexiBERTModel
from flexibert.models.modeling_flexibert import dynamic_conv, relative_key_scores, spectral_mix


@pytest.mark.parametrize("shape", [(3, 7, 5), (2, 4, 16, 12), (1, 128, 64)])
def test_dft_is_real_part_of_2d_fft(shape):
    x = torch.randn(shape, dtype=torch.float64)
    expected = torch.fft.fft(torch.fft.fft(x, dim=-1), dim=-2).real
    torch.testing.assert_close(spectral_mix(x, "dft"), expected)


@pytest.mark.parametrize("shape", [(3, 7, 5), (2, 4, 16, 12), (1, 128, 64)])
def test_dct_is_unnormalised_dct2_on_both_axes(shape):
    x = torch.randn(shape, dtype=torch.float64)
    expected = scipy.fft.dct(scipy.fft.dct(x.numpy(), type=2, axis=-1), type=2, axis=-2)
    torch.testing.assert_close(spectral_mix(x, "dct"), torch.from_numpy(expected))


def test_spectral_mix_float32_close_to_float64():
    x = torch.randn(2, 64, 48, dtype=torch.float64)
    for kind in ("dft", "dct"):
        torch.testing.assert_close(spectral_mix(x.float(), kind).double(), spectral_mix(x, kind), rtol=1e-4, atol=1e-3)


def naive_relative(q, table):
    length, positions = q.shape[-2], (table.shape[0] + 1) // 2
    idx = torch.arange(length)
    dist = table[idx[:, None] - idx[None, :] + positions - 1]  # (L, L, a)
    return torch.einsum("bhld,lrd->bhlr", q, dist)


def test_relative_key_scores_match_explicit_distance_tensor():
    q, table = torch.randn(2, 3, 9, 4), torch.randn(2 * 12 - 1, 4)
    torch.testing.assert_close(relative_key_scores(q, table), naive_relative(q, table))


def naive_dynamic_conv(values, kernels):
    k = kernels.shape[-1]
    out = torch.zeros_like(values)
    length = values.shape[2]
    for t in range(k):
        shift = t - k // 2
        for pos in range(length):
            if 0 <= pos + shift < length:
                out[:, :, pos] += kernels[:, :, pos, t : t + 1] * values[:, :, pos + shift]
    return out


@pytest.mark.parametrize("k", [1, 5, 9])
def test_dynamic_conv_matches_shifted_sum(k):
    values, kernels = torch.randn(2, 3, 7, 4), torch.randn(2, 3, 7, k).softmax(-1)
    torch.testing.assert_close(dynamic_conv(values, kernels), naive_dynamic_conv(values, kernels))


def _heads(x, n):
    b, length, w = x.shape
    return x.view(b, length, n, w // n).transpose(1, 2)


def reference_hetero_mixer(mixer, spec, x, keep):
    """Per-head loop following the original's formulas (with SA heads contributing their context)."""
    a = spec.head_size
    q, k, v = (_heads(p(x), spec.num_heads) for p in (mixer.query, mixer.key, mixer.value))
    table = mixer.distance_embedding.weight
    outputs, wma_count, conv_count = [], 0, {}
    for j, head in enumerate(spec.heads):
        qj, kj, vj = q[:, j], k[:, j], v[:, j]
        scores = torch.zeros(x.shape[0], x.shape[1], x.shape[1])
        if head.param == "sdp":
            scores = qj @ kj.transpose(-1, -2)
        elif head.param == "wma":
            scores = qj @ mixer.W[wma_count] @ kj.transpose(-1, -2)
            wma_count += 1
        scores = (scores + naive_relative(qj[:, None], table)[:, 0]) / math.sqrt(a)
        scores = scores.masked_fill(~keep[:, 0], float("-inf"))
        out = scores.softmax(-1) @ vj
        if head.param == "dft":
            out = out + torch.fft.fft(torch.fft.fft(vj, dim=-1), dim=-2).real
        elif head.param == "dct":
            out = out + torch.from_numpy(scipy.fft.dct(scipy.fft.dct(vj.detach().numpy(), axis=-1), axis=-2)).float()
        elif head.kind == "c":
            group = mixer.conv_groups[f"k{head.param}"]
            g = conv_count.get(head.param, 0)
            conv_count[head.param] = g + 1
            conv = torch.nn.functional.conv1d(kj.transpose(1, 2), group.depthwise[g][:, None, :], padding=head.param // 2, groups=a)
            key_conv = conv.transpose(1, 2) @ group.pointwise[g].T + group.conv_bias[g]
            kernels = (key_conv * qj @ group.kernel_weight[g].T + group.kernel_bias[g]).softmax(-1)
            values = vj @ group.out_weight[g].T + group.out_bias[g]
            out = out + naive_dynamic_conv(values[:, None], kernels[:, None])[:, 0]
        outputs.append(out)
    return torch.cat(outputs, dim=-1)


def _mixer_and_input(model_dict, length=11):
    model = FlexiBERTModel(small_config(model_dict)).eval()
    with torch.no_grad():
        for p in model.parameters():  # larger values than the init so every term matters
            p.normal_(0, 0.3)
    mixer = model.encoder.layer[0].attention.self
    x = torch.randn(2, length, model_dict["h"][0])
    keep = torch.ones(2, 1, 1, length, dtype=torch.bool)
    keep[1, ..., -3:] = False
    return model, mixer, x, keep


def test_hetero_layer_with_all_head_types_matches_per_head_reference():
    ops = ["sa_sdp_8", "c_9_8", "sa_wma_8", "l_dft_8", "c_5_8", "l_dct_8", "sa_wma_8", "c_9_8"]
    model, mixer, x, keep = _mixer_and_input({"l": 1, "o": [ops], "h": [24], "f": [[32]]})
    spec = model.config.layers[0]
    with torch.no_grad():
        batched, _ = mixer(x, keep, need_weights=False)
        explicit, probs = mixer(x, keep, need_weights=True)
        expected = reference_hetero_mixer(mixer, spec, x, keep)
    torch.testing.assert_close(batched, expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(explicit, expected, rtol=1e-4, atol=1e-4)
    assert probs.shape == (2, 8, 11, 11) and torch.allclose(probs.sum(-1), torch.ones(2, 8, 11))
    assert probs[1, :, :, -3:].abs().max() == 0  # masked keys get no attention


def test_hetero_sa_heads_contribute_their_attention_output():
    """The original returned zeros for hetero SA heads (its bug #1)."""
    model, mixer, x, keep = _mixer_and_input({"l": 1, "o": [["sa_sdp_8", "sa_wma_8"]], "h": [16], "f": [[32]]})
    with torch.no_grad():
        out, _ = mixer(x, keep, need_weights=False)
    assert out.abs().mean() > 0.1  # zeros would mean the heads were dropped


def reference_convbert_mixer(mixer, x, keep, n, kernel):
    half = n // 2
    q_flat = mixer.query(x)
    q, k, v = (_heads(t, half) for t in (q_flat, mixer.key(x), mixer.value(x)))
    a = q.shape[-1]
    scores = (q @ k.transpose(-1, -2) + naive_relative(q, mixer.distance_embedding.weight)) / math.sqrt(a)
    context = scores.masked_fill(~keep, float("-inf")).softmax(-1) @ v
    sep = mixer.key_conv_attn_layer
    conv_in = torch.nn.functional.conv1d(x.transpose(1, 2), sep.depthwise.weight, padding=kernel // 2, groups=x.shape[-1])
    key_conv = conv_in.transpose(1, 2) @ sep.pointwise.weight[:, :, 0].T + sep.bias
    kernels = mixer.conv_kernel_layer(key_conv * q_flat).view(x.shape[0], x.shape[1], half, kernel).transpose(1, 2).softmax(-1)
    conv = naive_dynamic_conv(_heads(mixer.conv_out_layer(x), half), kernels)
    merge = lambda t: t.transpose(1, 2).reshape(x.shape[0], x.shape[1], -1)  # noqa: E731
    return torch.cat([merge(context), merge(conv)], dim=-1)


@pytest.mark.parametrize("n,kernel", [(2, 9), (4, 5), (6, 13)])
def test_convbert_layer_matches_reference(n, kernel):
    model, mixer, x, keep = _mixer_and_input({"l": 1, "o": ["c"], "h": [24], "n": [n], "f": [[32]], "p": [kernel]})
    with torch.no_grad():
        out, _ = mixer(x, keep, need_weights=False)
        expected = reference_convbert_mixer(mixer, x, keep, n, kernel)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("param", ["sdp", "wma"])
def test_standard_attention_matches_reference(param):
    model, mixer, x, keep = _mixer_and_input({"l": 1, "o": ["sa"], "h": [24], "n": [3], "f": [[32]], "p": [param]})
    with torch.no_grad():
        out, _ = mixer(x, keep, need_weights=False)
        q, k, v = (_heads(p(x), 3) for p in (mixer.query, mixer.key, mixer.value))
        raw = (q @ mixer.W if param == "wma" else q) @ k.transpose(-1, -2)
        scores = (raw + naive_relative(q, mixer.distance_embedding.weight)) / math.sqrt(8)
        expected = (scores.masked_fill(~keep, float("-inf")).softmax(-1) @ v).transpose(1, 2).reshape(2, 11, 24)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("param", ["dft", "dct"])
def test_linear_transform_layer_matches_reference(param):
    model, mixer, x, keep = _mixer_and_input({"l": 1, "o": ["l"], "h": [24], "n": [2], "f": [[32]], "p": [param]})
    with torch.no_grad():
        out, _ = mixer(x, keep, need_weights=False)
        q, v = _heads(mixer.query(x), 2), _heads(mixer.value(x), 2)
        scores = naive_relative(q, mixer.distance_embedding.weight) / math.sqrt(12)
        context = (scores.masked_fill(~keep, float("-inf")).softmax(-1) @ v).transpose(1, 2).reshape(2, 11, 24)
        if param == "dft":
            transform = torch.fft.fft2(x).real
        else:
            transform = torch.from_numpy(scipy.fft.dct(scipy.fft.dct(x.numpy(), axis=-1), axis=-2)).float()
    torch.testing.assert_close(out, context + transform, rtol=1e-4, atol=1e-3)
    assert not hasattr(mixer, "key")  # the original's 'l' layers carried an unused key projection
    assert np.isfinite(out.numpy()).all()
