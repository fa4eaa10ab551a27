"""Cost of a FlexiBERT model (parameters, forward FLOPs per token) from its model dict alone.

A search ranks and caps every model of a library by these numbers, so they come from the parameter
layout of ``weight_transfer`` and the parsed layers, never from a built model: well under a
millisecond per dict, and exactly what ``FlexiBERTModel`` has and computes.

FLOPs are counted as ``torch.utils.flop_counter.FlopCounterMode`` counts them: 2 per multiply-add of
every matmul, linear, convolution and attention (SDPA); softmax, norms, activations and other
elementwise work are free. Two things to know when comparing with a measurement:

* the DFT/DCT of ``l`` layers is computed as dense matmuls (``spectral_mix``), so it costs
  O(L^2 h + L h^2), not the O(L h log(L h)) of an FFT, and that is what is counted;
* on CPU, torch 2.13's FlopCounterMode has no formula for the CPU SDPA kernel
  (``_scaled_dot_product_flash_attention_for_cpu``) and reports 0 for it; the attention matmuls are
  counted here all the same, with the formula it uses for the CUDA kernels.
"""

from __future__ import annotations

from embeddings.model_dict import LayerSpec
from flexibert.models.configuration_flexibert import FlexiBERTConfig
from flexibert.models.weight_transfer import ParamLayout, _add_linear, _config_of, _hidden, _size, base_layout

PARTS = {"total": "", "encoder": "encoder.", "embeddings": "embeddings."}
"""Name prefix of the parameters each part counts."""


def model_layout(model_dict: dict, config: FlexiBERTConfig | None = None) -> dict[str, ParamLayout]:
    """Every parameter of ``FlexiBERTModel``: the embeddings and encoder of ``base_layout`` plus the pooler."""
    return _layout(_config_of(model_dict, config))


def _layout(cfg: FlexiBERTConfig) -> dict[str, ParamLayout]:
    """``base_layout`` leaves the pooler out because weights never transfer into it; the count needs it."""
    layout = base_layout(cfg)
    final = _hidden("final", cfg.hidden_size)
    _add_linear(layout, "pooler.dense", final, final)
    return layout


def parameter_count(model_dict: dict, part: str = "total", config: FlexiBERTConfig | None = None) -> int:
    """Trainable parameters of ``FlexiBERTModel`` (with pooler) in ``part``: total, encoder or embeddings.

    ``config`` supplies vocabulary and position settings (defaults: ``FlexiBERTConfig()``).
    """
    if part not in PARTS:
        raise ValueError(f"unknown part {part!r}; allowed: {', '.join(PARTS)}")
    prefix = PARTS[part]
    return sum(_size(param) for name, param in model_layout(model_dict, config).items() if name.startswith(prefix))


def flops_per_token(model_dict: dict, seq_length: int = 128, config: FlexiBERTConfig | None = None) -> float:
    """Forward FLOPs of ``FlexiBERTModel`` on one sequence of ``seq_length`` tokens, divided by that length.

    Per token, so that lengths compare: the token mixing grows with the length, the weights' cost does not.
    """
    cfg = _config_of(model_dict, config)
    if not 1 <= seq_length <= cfg.max_position_embeddings:
        raise ValueError(f"seq_length must be in 1..max_position_embeddings={cfg.max_position_embeddings}, got {seq_length}")
    relative = cfg.position_embedding_type == "relative_key"
    weights = sum(_weight_flops(name, param, seq_length) for name, param in _layout(cfg).items())
    mixing = sum(_mixing_flops(spec, seq_length, relative) for spec in cfg.layers)
    return (weights + mixing) / seq_length


def _weight_flops(name: str, param: ParamLayout, length: int) -> int:
    """Every weight matrix or convolution kernel meets each token once: 2 FLOPs per scalar per token.

    Embedding and distance tables are lookups, biases and norms elementwise; ``W`` is shared by
    heads and counted with the mixing. The pooler reads only the first token.
    """
    if len(param.axes) < 2 or "embedding" in name or name.endswith(("bias", ".W")):
        return 0
    return 2 * _size(param) * (1 if name.startswith("pooler.") else length)


def _mixing_flops(spec: LayerSpec, length: int, relative: bool) -> int:
    """The token mixer's matmuls that involve no weight matrix: scores, context, ``W``, DFT/DCT, dynamic convolution."""
    a = spec.head_size
    attending = spec.num_heads // 2 if spec.op == "c" else spec.num_heads  # ConvBERT: half the heads attend
    content = spec.op == "c" or any(hd.kind == "sa" for hd in spec.heads)
    flops = _attention_flops(attending, length, a, content, relative)
    flops += sum(2 * length * a * a for hd in spec.heads if hd.param == "wma")  # q W, per wma head
    if spec.op == "l":  # the whole layer input is transformed
        return flops + _spectral_flops(spec.heads[0].param, 1, length, spec.hidden)
    for kind in ("dft", "dct"):  # hetero: each l head transforms its value slice
        flops += _spectral_flops(kind, sum(hd.param == kind for hd in spec.heads), length, a)
    conv_kernels = [spec.heads[0].param] * attending if spec.op == "c" else [hd.param for hd in spec.heads if hd.kind == "c"]
    return flops + sum(2 * length * a * kernel for kernel in conv_kernels)  # dynamic_conv: k taps per output


def _attention_flops(heads: int, length: int, a: int, content: bool, relative: bool) -> int:
    """``attend``: q.k scores (when there are any) and probs @ values, plus q against the 2L-1 relative distances."""
    flops = 2 * heads * length * length * a * (2 if content else 1)
    return flops + (2 * heads * length * (2 * length - 1) * a if relative else 0)


def _spectral_flops(kind: str, count: int, length: int, width: int) -> int:
    """``spectral_mix`` of ``count`` (length, width) slices: one matmul per axis, cos and sin ones for the DFT."""
    return (2 if kind == "dft" else 1) * 2 * count * length * width * (length + width)
