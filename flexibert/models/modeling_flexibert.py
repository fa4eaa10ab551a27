"""FlexiBERT: a heterogeneous BERT-style encoder in one file (operations, encoder, heads; the config is beside it).

Every encoder layer may use its own operation (self-attention, DFT/DCT linear transform or
ConvBERT-style dynamic convolution), hidden size, head count and feed-forward stack. A model is
described by a *model dict* in one of two formats:

* standard: ``{'l': 2, 'o': ['sa', 'l'], 'h': [256, 128], 'n': [4, 2], 'f': [[1024], [512]],
  'p': ['sdp', 'dct']}`` (one operation per layer);
* hetero: ``{'l': 2, 'o': [['sa_sdp_64', 'c_9_64'], ['l_dft_32'] * 4], 'h': [256, 128],
  'f': [[1024], [512]]}`` (one operation string per head).

The math follows the original FlexiBERT (Tuli et al., JAIR 2022) with its known bugs fixed: hetero
self-attention heads contribute their context, no unused parameters are created (``W`` only for
``wma``, ``key`` only where it is read, the position table only for absolute positions), and the
pad id comes from the tokenizer.

Outputs follow the transformers conventions: ``return_dict``, ``output_attentions`` and
``output_hidden_states`` default to the config, ``attn_implementation`` is ``'sdpa'`` (default) or
``'eager'``. With ``output_attentions`` every layer returns one (batch, heads, L, L) tensor:

* ``sa`` and hetero layers: the softmax probabilities over all their heads (hetero ``l``/``c`` heads
  have zero content scores, so theirs come from the relative-position scores alone, and are uniform
  over the unmasked tokens with absolute positions: that is the attention they really apply);
* ``l`` layers: the probabilities of their position-only attention, broadcast to every head (softmax
  of the relative-key scores, or uniform over unmasked tokens with absolute positions); the DFT/DCT
  term added beside it is neither per head nor a probability and is not part of it;
* ``c`` layers: as transformers' ConvBERT (head_ratio 2), the probabilities of the n/2 attending heads,
  so the tensor has n/2 heads; the n/2 convolution heads mix tokens with their dynamic kernels only.

``config.num_attention_heads`` is the largest head count of any layer and
``config.num_attention_heads_per_layer`` lists each layer's ``n`` (see the config).

Gradient checkpointing (``gradient_checkpointing_enable``) checkpoints every encoder layer in training.
``torch.export`` / ``torch.compile`` trace the forward with a dynamic sequence length (input checks that
read tensor values are skipped while tracing); bound an exported length by ``max_position_embeddings``,
e.g. ``Dim("length", max=config.max_position_embeddings)``.

Loading without the package: by default ``save_pretrained`` writes the code next to the weights (this
file, configuration_flexibert.py and the model-dict format, model_dict.py) and an ``auto_map`` in
config.json, as transformers does for models registered with ``register_for_auto_class``, so that
``AutoModel.from_pretrained(folder, trust_remote_code=True)`` (or ``AutoModelForMaskedLM`` /
``AutoModelForSequenceClassification``) works where only torch and transformers are installed. It is
the default because every folder our tools write (pretraining, fine-tuning, search, export) should load
anywhere; opt out with ``save_pretrained(folder, save_code=False)`` or, for all saves,
``FlexiBERTPreTrainedModel.save_code = False``. Where the package is imported its registered classes
win: ``from_pretrained`` without ``trust_remote_code`` uses them, and folders saved without the code
(no ``auto_map``) load as before. To keep the saved files a closed set, they import only torch,
transformers, the standard library and each other (relative imports); the model-dict format keeps its
one home in embeddings/model_dict.py (the graph library needs it without torch) and is imported from a
sibling copy only when one is there. Weight transfer (``load_model_from_source``) needs the package.
"""

from __future__ import annotations

import functools
import itertools
import math
import os
import shutil
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_outputs import (
    BaseModelOutputWithPooling,
    MaskedLMOutput,
    SequenceClassifierOutput,
)

from .configuration_flexibert import FlexiBERTConfig

try:  # code saved next to the weights: model_dict.py was copied beside this file
    from .model_dict import HeadSpec, LayerSpec, parse_model_dict
except ImportError:  # in the package: the format's one home is embeddings/model_dict.py
    from embeddings.model_dict import HeadSpec, LayerSpec, parse_model_dict

# --------------------------------------------------------------------------------------------
# Operations
# --------------------------------------------------------------------------------------------


def _is_tracing() -> bool:
    """True under torch.compile / torch.export / jit tracing, where data-dependent Python checks must not run."""
    exporting = getattr(torch.compiler, "is_exporting", lambda: False)  # torch >= 2.5
    return torch.compiler.is_compiling() or exporting() or torch.jit.is_tracing()


def _build_spectral_matrices(kind: str, n, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Transform matrices for length ``n``: DCT-II (n, n), or [cos; sin] DFT (2, n, n).

    Plain tensor ops on ``n``, so export and torch.compile can trace them with a symbolic (dynamic) length.
    """
    k = torch.arange(n, dtype=torch.float64)
    if kind == "dct":  # unnormalised DCT-II: 2 * sum_t x[t] cos(pi k (2t+1) / 2n)
        mat = 2 * torch.cos(math.pi * k[:, None] * (2 * k[None, :] + 1) / (2 * n))
    else:
        angle = 2 * math.pi * torch.outer(k, k).remainder(n) / n
        mat = torch.stack([torch.cos(angle), torch.sin(angle)])
    return mat.to(device=device, dtype=dtype)


_cached_spectral_matrices = functools.lru_cache(maxsize=64)(_build_spectral_matrices)


def _spectral_matrices(kind: str, n, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Cached per length in eager mode; rebuilt in the graph when tracing (a Python cache keyed on a
    symbolic length would specialise the graph to one length or break it)."""
    if _is_tracing() or not isinstance(n, int):
        return _build_spectral_matrices(kind, n, device, dtype)
    return _cached_spectral_matrices(kind, n, device, dtype)


def spectral_mix(x: torch.Tensor, kind: str) -> torch.Tensor:
    """2-D transform over the last two dims (sequence, features): ``Re(FFT(FFT(x)))`` or DCT-II twice.

    Done as matmuls with cached matrices: exact, and faster than complex FFTs at these sizes.
    """
    length, width = x.shape[-2:]
    if kind == "dct":
        mat_seq = _spectral_matrices("dct", length, x.device, x.dtype)
        mat_feat = _spectral_matrices("dct", width, x.device, x.dtype)
        return mat_seq @ x @ mat_feat.T
    # Re(F_L X F_h) with F = C - iS is C_L X C_h - S_L X S_h.
    cos_seq, sin_seq = _spectral_matrices("dft", length, x.device, x.dtype)
    cos_feat, sin_feat = _spectral_matrices("dft", width, x.device, x.dtype)
    return cos_seq @ (x @ cos_feat) - sin_seq @ (x @ sin_feat)


def dynamic_conv(values: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """ConvBERT's light-weight dynamic convolution over the sequence, zero-padded at the ends.

    values (B, H, L, a), kernels (B, H, L, k) softmax-normalised: out[l] = sum_t kernels[l, t] values[l + t - k//2].
    """
    width = kernels.shape[-1]
    padded = F.pad(values, (0, 0, width // 2, width // 2))
    windows = padded.unfold(2, width, 1)  # (B, H, L, a, k)
    return torch.einsum("bhlak,bhlk->bhla", windows, kernels)


def relative_key_scores(query: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """``R[b,h,l,r] = query[b,h,l] . table[l - r + P - 1]`` for a (2P-1, a) distance table.

    One matmul against the 2L-1 distances that occur, ordered from L-1 down to -(L-1); row l of the
    result then holds its L scores contiguously from column L-1-l. Padding each row to 2L columns and
    re-reading the flattened scores from offset L-1 with rows of 2L-1 lines those up (the "skew"
    trick): no (L, L, a) tensor, no index tensor. Eager mode reads them as one strided view; under
    export and torch.compile only reshapes and slices, which trace with a dynamic length.
    """
    length = query.shape[-2]
    max_positions = (table.shape[0] + 1) // 2
    distances = table[max_positions - length : max_positions + length - 1].flip(0)  # distance L-1 .. -(L-1)
    scores = (query @ distances.T).contiguous()  # (B, H, L, 2L-1)
    batch, heads = scores.shape[:2]
    row = 2 * length - 1
    if not _is_tracing():  # eager: a strided view of the scores, no copy (relative-key inference 1.5x -> 1.25x of absolute)
        return scores.as_strided((batch, heads, length, length), (heads * length * row, length * row, row - 1, 1),
                                 scores.storage_offset() + length - 1)
    flat = F.pad(scores, (0, 1)).reshape(batch, heads, length * (row + 1))
    return flat[..., length - 1 : length - 1 + length * row].reshape(batch, heads, length, row)[..., :length]


def attend(
    query: torch.Tensor | None,
    key: torch.Tensor,
    value: torch.Tensor,
    bias: torch.Tensor | None,
    keep: torch.Tensor | None,
    dropout_p: float,
    need_weights: bool,
    use_sdpa: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """softmax(query key^T / sqrt(a) + bias, masked) value, with ``query=None`` meaning zero raw scores.

    With ``use_sdpa`` (``attn_implementation="sdpa"``) it calls ``scaled_dot_product_attention``,
    falling back to the explicit softmax when the probabilities are asked for (as BERT does) or when
    there are no raw scores (position-only heads); ``use_sdpa=False`` (``"eager"``) is always explicit.
    The probabilities, when asked for, are (B, H, L, L) with H the heads of ``value``.
    """
    if bias is not None and keep is not None:
        bias = bias.masked_fill(~keep, torch.finfo(bias.dtype).min)
    if use_sdpa and query is not None and not need_weights:
        mask = bias if bias is not None else keep
        return F.scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=dropout_p), None
    length = key.shape[-2]
    if query is not None:
        scores = (query @ key.transpose(-1, -2)) / math.sqrt(query.shape[-1])
        scores = scores if bias is None else scores + bias
    else:
        scores = bias if bias is not None else value.new_zeros(1, 1, length, length)
    if bias is None and keep is not None:
        scores = scores.masked_fill(~keep, torch.finfo(scores.dtype).min)
    probs = scores.softmax(-1)
    context = F.dropout(probs, dropout_p) @ value
    if not need_weights:
        return context, None
    # Position-only scores are shared by all heads (and, with absolute positions, by the batch): broadcast.
    return context, probs.expand(value.shape[0], value.shape[1], length, length)


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(B, L, H*a) -> (B, H, L, a)."""
    batch, length, width = x.shape
    return x.view(batch, length, num_heads, width // num_heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, H, L, a) -> (B, L, H*a)."""
    batch, heads, length, size = x.shape
    return x.transpose(1, 2).reshape(batch, length, heads * size)


class _Mixer(nn.Module):
    """Shared parts of the token mixers: relative distance table and attention dropout."""

    def __init__(self, config: FlexiBERTConfig, head_size: int):
        super().__init__()
        self.config = config  # read at call time: ``_attn_implementation`` may change after init
        self.head_size = head_size
        self.dropout_p = config.attention_probs_dropout_prob
        self.relative = config.position_embedding_type == "relative_key"
        if self.relative:
            self.distance_embedding = nn.Embedding(2 * config.max_position_embeddings - 1, head_size)

    def relative_bias(self, query: torch.Tensor) -> torch.Tensor | None:
        """Relative-key scores already divided by sqrt(a), or None for absolute positions."""
        if not self.relative:
            return None
        return relative_key_scores(query, self.distance_embedding.weight) / math.sqrt(self.head_size)

    @property
    def attention_dropout(self) -> float:
        return self.dropout_p if self.training else 0.0

    @property
    def use_sdpa(self) -> bool:
        """``attn_implementation`` 'sdpa' (the default) or anything else, which means the explicit 'eager' path."""
        return self.config._attn_implementation in (None, "sdpa")

    def attend(self, query, key, value, bias, keep, need_weights):
        return attend(query, key, value, bias, keep, self.attention_dropout, need_weights, self.use_sdpa)


class SelfAttentionMixer(_Mixer):
    """Standard 'sa' layer: scaled dot-product (``sdp``) or weighted multiplicative (``wma``) attention."""

    def __init__(self, config: FlexiBERTConfig, spec: LayerSpec):
        super().__init__(config, spec.head_size)
        h = spec.hidden
        self.num_heads = spec.num_heads
        self.query, self.key, self.value = nn.Linear(h, h), nn.Linear(h, h), nn.Linear(h, h)
        if spec.heads[0].param == "wma":  # one (a, a) matrix shared by all heads of the layer
            self.W = nn.Parameter(torch.empty(spec.head_size, spec.head_size))

    def forward(self, x, keep, need_weights):
        q, k, v = (split_heads(proj(x), self.num_heads) for proj in (self.query, self.key, self.value))
        bias = self.relative_bias(q)
        if hasattr(self, "W"):
            q = q @ self.W
        context, probs = self.attend(q, k, v, bias, keep, need_weights)
        return merge_heads(context), probs


class LinearTransformMixer(_Mixer):
    """Standard 'l' layer: relative-position attention (no content scores) plus a DFT/DCT of the input."""

    def __init__(self, config: FlexiBERTConfig, spec: LayerSpec):
        super().__init__(config, spec.head_size)
        h = spec.hidden
        self.num_heads, self.transform = spec.num_heads, spec.heads[0].param
        if self.relative:  # the query only feeds the relative scores; there is no key
            self.query = nn.Linear(h, h)
        self.value = nn.Linear(h, h)

    def forward(self, x, keep, need_weights):
        v = split_heads(self.value(x), self.num_heads)
        bias = self.relative_bias(split_heads(self.query(x), self.num_heads)) if self.relative else None
        context, probs = self.attend(None, v, v, bias, keep, need_weights)
        return merge_heads(context) + spectral_mix(x, self.transform), probs


class ConvBertMixer(_Mixer):
    """Standard 'c' layer: ConvBERT mixed attention, half the heads attend and half convolve.

    Head size is h / n (the full head count), as in the original.
    """

    def __init__(self, config: FlexiBERTConfig, spec: LayerSpec):
        super().__init__(config, spec.head_size)
        h, kernel = spec.hidden, spec.heads[0].param
        self.half_heads, self.kernel = spec.num_heads // 2, kernel
        half = self.half_heads * spec.head_size
        self.query, self.key, self.value = nn.Linear(h, half), nn.Linear(h, half), nn.Linear(h, half)
        self.key_conv_attn_layer = SeparableConv(h, half, kernel)
        self.conv_kernel_layer = nn.Linear(half, self.half_heads * kernel)
        self.conv_out_layer = nn.Linear(h, half)

    def forward(self, x, keep, need_weights):
        batch, length, _ = x.shape
        q_flat = self.query(x)
        q, k, v = (split_heads(t, self.half_heads) for t in (q_flat, self.key(x), self.value(x)))
        context, probs = self.attend(q, k, v, self.relative_bias(q), keep, need_weights)
        kernels = self.conv_kernel_layer(self.key_conv_attn_layer(x) * q_flat)
        kernels = kernels.view(batch, length, self.half_heads, self.kernel).transpose(1, 2).softmax(-1)
        conv = dynamic_conv(split_heads(self.conv_out_layer(x), self.half_heads), kernels)
        return torch.cat([merge_heads(context), merge_heads(conv)], dim=-1), probs


class SeparableConv(nn.Module):
    """Depthwise convolution over the sequence, then a pointwise (1x1) convolution plus a bias."""

    def __init__(self, channels_in: int, channels_out: int, kernel: int):
        super().__init__()
        self.depthwise = nn.Conv1d(channels_in, channels_in, kernel, groups=channels_in, padding=kernel // 2, bias=False)
        self.pointwise = nn.Conv1d(channels_in, channels_out, 1, bias=False)
        self.bias = nn.Parameter(torch.zeros(channels_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x.transpose(1, 2))).transpose(1, 2) + self.bias


class ConvHeadGroup(nn.Module):
    """All hetero convolution heads of one kernel size, their parameters stacked so they run as one batch.

    Per head: separable conv of its key slice, kernels from ``Linear(a, k)(conv(K) * Q)``, values
    ``Linear(a, a)(V)``, then the dynamic convolution.
    """

    def __init__(self, num_heads: int, head_size: int, kernel: int):
        super().__init__()
        self.kernel = kernel
        g, a, k = num_heads, head_size, kernel
        self.depthwise = nn.Parameter(torch.empty(g, a, k))
        self.pointwise = nn.Parameter(torch.empty(g, a, a))
        self.conv_bias = nn.Parameter(torch.empty(g, a))
        self.kernel_weight = nn.Parameter(torch.empty(g, k, a))
        self.kernel_bias = nn.Parameter(torch.empty(g, k))
        self.out_weight = nn.Parameter(torch.empty(g, a, a))
        self.out_bias = nn.Parameter(torch.empty(g, a))

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        batch, heads, length, size = k.shape
        channels = k.transpose(2, 3).reshape(batch, heads * size, length)
        depthwise = F.conv1d(channels, self.depthwise.reshape(heads * size, 1, self.kernel), padding=self.kernel // 2, groups=heads * size)
        key_conv = torch.einsum("bhil,hoi->bhlo", depthwise.view(batch, heads, size, length), self.pointwise)
        key_conv = key_conv + self.conv_bias[:, None, :]
        kernels = torch.einsum("bhla,hka->bhlk", key_conv * q, self.kernel_weight) + self.kernel_bias[:, None, :]
        values = torch.einsum("bhla,hoa->bhlo", v, self.out_weight) + self.out_bias[:, None, :]
        return dynamic_conv(values, kernels.softmax(-1))


class HeteroMixer(_Mixer):
    """A layer whose heads each have their own operation; heads of one type run as one batch.

    Raw scores are q.k (``sa_sdp``), (q W).k (``sa_wma``, one W per head) or zero (``l``/``c``);
    all heads share one softmax attention (with relative scores), then ``l`` heads add a DFT/DCT of
    their value slice and ``c`` heads a dynamic convolution.
    """

    def __init__(self, config: FlexiBERTConfig, spec: LayerSpec):
        super().__init__(config, spec.head_size)
        h, a, heads = spec.hidden, spec.head_size, spec.heads
        self.num_heads = len(heads)
        width = self.num_heads * a
        self.query, self.key, self.value = nn.Linear(h, width), nn.Linear(h, width), nn.Linear(h, width)
        self.has_content_scores = any(hd.kind == "sa" for hd in heads)
        wma = [j for j, hd in enumerate(heads) if hd.param == "wma"]
        self.register_buffer("content_gate", torch.empty(self.num_heads, 1, 1), persistent=False)
        self.register_buffer("wma_heads", torch.empty(len(wma), dtype=torch.long), persistent=False)
        self.buffer_values = {"content_gate": [[[float(hd.kind == "sa")]] for hd in heads], "wma_heads": wma}
        self.reset_buffers()
        if wma:
            self.W = nn.Parameter(torch.empty(len(wma), a, a))
        self.transforms = {kind: [j for j, hd in enumerate(heads) if hd.param == kind] for kind in ("dft", "dct")}
        kernels = sorted({hd.param for hd in heads if hd.kind == "c"})
        self.conv_heads = {k: [j for j, hd in enumerate(heads) if hd.kind == "c" and hd.param == k] for k in kernels}
        self.conv_groups = nn.ModuleDict({f"k{k}": ConvHeadGroup(len(idx), a, k) for k, idx in self.conv_heads.items()})

    def reset_buffers(self) -> None:
        """(Re)write the head-index buffers; ``from_pretrained`` leaves non-persistent buffers uninitialised."""
        for name, values in self.buffer_values.items():
            buffer = getattr(self, name)
            if buffer.device.type != "meta":
                init.copy_(buffer, torch.tensor(values, dtype=buffer.dtype))

    def forward(self, x, keep, need_weights):
        q, k, v = (split_heads(proj(x), self.num_heads) for proj in (self.query, self.key, self.value))
        bias = self.relative_bias(q)
        content_q = None
        if self.has_content_scores:
            content_q = q * self.content_gate
            if hasattr(self, "W"):
                weighted = torch.einsum("bhld,hde->bhle", q[:, self.wma_heads], self.W)
                content_q = content_q.index_copy(1, self.wma_heads, weighted)
        context, probs = self.attend(content_q, k, v, bias, keep, need_weights)
        for kind, idx in self.transforms.items():
            if idx:
                context = _add_heads(context, idx, spectral_mix(v[:, idx], kind))
        for kernel, idx in self.conv_heads.items():
            context = _add_heads(context, idx, self.conv_groups[f"k{kernel}"](q[:, idx], k[:, idx], v[:, idx]))
        return merge_heads(context), probs


def _add_heads(context: torch.Tensor, heads: list[int], extra: torch.Tensor) -> torch.Tensor:
    index = torch.tensor(heads, device=context.device)
    return context.index_add(1, index, extra)


MIXERS = {"sa": SelfAttentionMixer, "l": LinearTransformMixer, "c": ConvBertMixer, "hetero": HeteroMixer}


# --------------------------------------------------------------------------------------------
# Encoder
# --------------------------------------------------------------------------------------------


class AddNorm(nn.Module):
    """``LayerNorm(residual + dropout(dense(x)))``, the post-LN output of both sub-blocks."""

    def __init__(self, config: FlexiBERTConfig, width_in: int, hidden: int):
        super().__init__()
        self.dense = nn.Linear(width_in, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(residual + self.dropout(self.dense(x)))


class Attention(nn.Module):
    def __init__(self, config: FlexiBERTConfig, spec: LayerSpec):
        super().__init__()
        self.self = MIXERS[spec.op](config, spec)
        mixed_width = spec.num_heads * spec.head_size if spec.op == "hetero" else spec.hidden
        self.output = AddNorm(config, mixed_width, spec.hidden)

    def forward(self, x, keep, need_weights):
        mixed, probs = self.self(x, keep, need_weights)
        return self.output(mixed, x), probs


class Intermediate(nn.Module):
    """The feed-forward stack: Linear + activation for every width in ``f``."""

    def __init__(self, config: FlexiBERTConfig, spec: LayerSpec):
        super().__init__()
        widths = (spec.hidden, *spec.ff)
        modules = []
        for w_in, w_out in itertools.pairwise(widths):
            modules += [nn.Linear(w_in, w_out), ACT2FN[config.hidden_act]]
        self.sequential = nn.Sequential(*modules)

    def forward(self, x):
        return self.sequential(x)


class LayerOutput(AddNorm):
    """Feed-forward output block, plus the projection to the next layer's width where it changes."""

    def __init__(self, config: FlexiBERTConfig, spec: LayerSpec, next_hidden: int | None):
        super().__init__(config, spec.ff[-1], spec.hidden)
        if next_hidden is not None and next_hidden != spec.hidden:
            self.proj_head = nn.Linear(spec.hidden, next_hidden)

    def forward(self, x, residual):
        out = super().forward(x, residual)
        return self.proj_head(out) if hasattr(self, "proj_head") else out


class FlexiBERTLayer(nn.Module):
    def __init__(self, config: FlexiBERTConfig, spec: LayerSpec, next_hidden: int | None):
        super().__init__()
        self.attention = Attention(config, spec)
        self.intermediate = Intermediate(config, spec)
        self.output = LayerOutput(config, spec, next_hidden)

    def forward(self, x, keep, need_weights):
        attended, probs = self.attention(x, keep, need_weights)
        return self.output(self.intermediate(attended), attended), probs


class FlexiBERTEncoder(nn.Module):
    def __init__(self, config: FlexiBERTConfig):
        super().__init__()
        specs = config.layers
        widths = [spec.hidden for spec in specs[1:]] + [None]
        self.layer = nn.ModuleList(FlexiBERTLayer(config, spec, nxt) for spec, nxt in zip(specs, widths, strict=True))
        self.gradient_checkpointing = False  # set by PreTrainedModel.gradient_checkpointing_enable()

    def forward(self, x, keep, output_attentions=False, output_hidden_states=False):
        hidden_states, attentions = [], []
        for layer in self.layer:
            if output_hidden_states:
                hidden_states.append(x)
            if self.gradient_checkpointing and self.training:
                x, probs = self._gradient_checkpointing_func(layer.__call__, x, keep, output_attentions)
            else:
                x, probs = layer(x, keep, output_attentions)
            attentions.append(probs)
        if output_hidden_states:
            hidden_states.append(x)
        return x, tuple(hidden_states) or None, tuple(attentions) if output_attentions else None


class FlexiBERTEmbeddings(nn.Module):
    """Word + token-type embeddings (+ absolute positions when configured), LayerNorm, dropout."""

    def __init__(self, config: FlexiBERTConfig):
        super().__init__()
        width = config.model_dict["h"][0]
        self.word_embeddings = nn.Embedding(config.vocab_size, width, padding_idx=config.pad_token_id)
        if config.position_embedding_type == "absolute":
            self.position_embeddings = nn.Embedding(config.max_position_embeddings, width)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, width)
        self.LayerNorm = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids, token_type_ids, inputs_embeds):
        embeddings = self.word_embeddings(input_ids) if inputs_embeds is None else inputs_embeds
        if token_type_ids is None:
            embeddings = embeddings + self.token_type_embeddings.weight[0]
        else:
            embeddings = embeddings + self.token_type_embeddings(token_type_ids)
        if hasattr(self, "position_embeddings"):
            embeddings = embeddings + self.position_embeddings.weight[: embeddings.shape[1]]
        return self.dropout(self.LayerNorm(embeddings))


# --------------------------------------------------------------------------------------------
# Pretrained-model classes
# --------------------------------------------------------------------------------------------


class FlexiBERTPreTrainedModel(PreTrainedModel):
    config_class = FlexiBERTConfig
    config: FlexiBERTConfig
    base_model_prefix = "bert"
    # The losses are plain means, so Trainer must scale them for gradient accumulation and DDP itself.
    accepts_loss_kwargs = False
    supports_gradient_checkpointing = True
    # 'sdpa' (default) and 'eager'; see ``attend`` for what each computes.
    _supports_sdpa = True
    # The MLM decoder is never tied to the input embeddings (their widths may differ).
    _tied_weights_keys: dict[str, str] = {}

    @classmethod
    def _can_set_attn_implementation(cls) -> bool:
        """``set_attn_implementation`` works: the token mixers read ``config._attn_implementation`` at call time.

        (transformers' source heuristic only recognises models that dispatch through ``AttentionInterface``.)
        """
        return True

    def _init_weights(self, module):
        """BERT's init (normal 0.02, zero biases, unit LayerNorm) plus the parameters FlexiBERT adds."""
        super()._init_weights(module)
        std = self.config.initializer_range
        if isinstance(module, HeteroMixer):
            module.reset_buffers()
        if isinstance(module, (SelfAttentionMixer, HeteroMixer)) and hasattr(module, "W"):
            init.uniform_(module.W, -0.1, 0.1)
        elif isinstance(module, SeparableConv):
            init.zeros_(module.bias)
        elif isinstance(module, ConvHeadGroup):
            for weight in (module.depthwise, module.pointwise, module.kernel_weight, module.out_weight):
                init.normal_(weight, mean=0.0, std=std)
            for bias in (module.conv_bias, module.kernel_bias, module.out_bias):
                init.zeros_(bias)

    def load_model_from_source(self, source: PreTrainedModel, seed: int = 0):
        """Warm-start this model from ``source`` (weight transfer in ``self.transfer_mode``); returns a report."""
        # Imported here, inside ``try`` (which transformers' import check skips): code saved with a model
        # loads without the package and only this method needs it.
        try:
            from flexibert.models.weight_transfer import transfer_weights
        except ImportError as err:
            raise ImportError("load_model_from_source needs the flexibert package (weight transfer is not saved with a model)") from err
        return transfer_weights(self, source, mode=getattr(self, "transfer_mode", "OD"), seed=seed)

    save_code: bool = True
    """Whether ``save_pretrained`` writes the code and ``auto_map`` beside the weights (see the module docstring)."""

    def save_pretrained(self, save_directory, *args, save_code: bool | None = None, **kwargs):
        """transformers' ``save_pretrained``, plus the code that loads the folder without the package.

        ``save_code`` (default: the class attribute ``save_code``, True) copies modeling_flexibert.py,
        configuration_flexibert.py and model_dict.py into the folder and sets ``config.auto_map``;
        ``save_code=False`` writes neither and drops a stale ``auto_map`` so config.json never names
        missing files.
        """
        save_code = self.save_code if save_code is None else save_code
        if kwargs.get("is_main_process", True) and not os.path.isfile(save_directory):
            _set_auto_map(self.config, save_code)
            if save_code:  # first; a push_to_hub=True save uploads them all the same (_get_files_timestamps)
                os.makedirs(save_directory, exist_ok=True)
                for source in _code_files():
                    shutil.copyfile(source, Path(save_directory) / source.name)
        return super().save_pretrained(save_directory, *args, **kwargs)

    def _get_files_timestamps(self, working_dir):
        """The files of ``working_dir`` before a ``push_to_hub=True`` save; the code files count as new so they are uploaded."""
        names = {path.name for path in _code_files()}
        return {name: stamp for name, stamp in super()._get_files_timestamps(working_dir).items() if name not in names}


def _code_files() -> list[Path]:
    """This file and its relative imports: the closed set of files saved next to the weights."""
    return [Path(sys.modules[obj.__module__].__file__) for obj in (FlexiBERTPreTrainedModel, FlexiBERTConfig, LayerSpec)]


def _auto_map() -> dict[str, str]:
    """``auto_map`` entries (``module.Class``) of the saved code, for every Auto class FlexiBERT registers."""
    model_file, config_file, _ = (path.stem for path in _code_files())
    classes = {"AutoModel": FlexiBERTModel, "AutoModelForMaskedLM": FlexiBERTForMaskedLM,
               "AutoModelForSequenceClassification": FlexiBERTForSequenceClassification}
    models = {auto: f"{model_file}.{cls.__name__}" for auto, cls in classes.items()}
    return {"AutoConfig": f"{config_file}.{FlexiBERTConfig.__name__}", **models}


def _set_auto_map(config: FlexiBERTConfig, save_code: bool) -> None:
    """Add FlexiBERT's ``auto_map`` entries to ``config`` (``save_code``) or remove them, keeping any others."""
    ours = _auto_map()
    auto_map = {key: value for key, value in (getattr(config, "auto_map", None) or {}).items() if key not in ours}
    if save_code:
        auto_map.update(ours)
    if auto_map:
        config.auto_map = auto_map
    elif hasattr(config, "auto_map"):
        del config.auto_map


def _check_inputs(config: FlexiBERTConfig, input_ids, inputs_embeds, token_type_ids) -> None:
    """Clear errors for bad inputs; under torch.compile/export the data-dependent check is skipped and
    the length limit becomes a ``torch._check`` (no guard on a dynamic length)."""
    if (input_ids is None) == (inputs_embeds is None):
        raise ValueError("pass exactly one of input_ids and inputs_embeds")
    length = (input_ids if input_ids is not None else inputs_embeds).shape[1]
    if _is_tracing():
        torch._check(length <= config.max_position_embeddings)
        return
    if length > config.max_position_embeddings:
        raise ValueError(
            f"input has {length} tokens but the model supports at most max_position_embeddings="
            f"{config.max_position_embeddings}; truncate the input (tokenizer max_length) or build the config with a larger value"
        )
    if token_type_ids is not None and token_type_ids.numel() and int(token_type_ids.max()) >= config.type_vocab_size:
        raise ValueError(
            f"token_type_ids contains {int(token_type_ids.max())} but type_vocab_size={config.type_vocab_size}; "
            "RoBERTa-style tokenizers need no token types (pass none), or build the config with a larger type_vocab_size"
        )


class FlexiBERTModel(FlexiBERTPreTrainedModel):
    """The encoder with its pooler; ``transfer_mode`` ('OD' or 'RP') is used by ``load_model_from_source``."""

    def __init__(self, config: FlexiBERTConfig, add_pooling_layer: bool = True, transfer_mode: str = "OD"):
        super().__init__(config)
        if transfer_mode not in ("OD", "RP"):
            raise ValueError(f"transfer_mode must be 'OD' (ordered slicing) or 'RP' (random projection), got {transfer_mode!r}")
        self.transfer_mode = transfer_mode
        self.embeddings = FlexiBERTEmbeddings(config)
        self.encoder = FlexiBERTEncoder(config)
        if add_pooling_layer:
            self.pooler = Pooler(config.hidden_size)
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value):
        self.embeddings.word_embeddings = value

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ):
        _check_inputs(self.config, input_ids, inputs_embeds, token_type_ids)
        output_attentions, output_hidden_states, return_dict = _output_flags(
            self.config, output_attentions, output_hidden_states, return_dict
        )
        keep = None
        # An all-ones mask is dropped in eager mode (faster unmasked SDPA); when tracing the mask is
        # always applied, which gives the same result without a data-dependent branch.
        if attention_mask is not None and (_is_tracing() or not bool(attention_mask.all())):
            keep = attention_mask.bool()[:, None, None, :]
        x = self.embeddings(input_ids, token_type_ids, inputs_embeds)
        x, hidden_states, attentions = self.encoder(x, keep, output_attentions, output_hidden_states)
        pooled = self.pooler(x) if hasattr(self, "pooler") else None
        output = BaseModelOutputWithPooling(
            last_hidden_state=x, pooler_output=pooled, hidden_states=hidden_states, attentions=attentions
        )
        return output if return_dict else output.to_tuple()


def _output_flags(config: FlexiBERTConfig, output_attentions, output_hidden_states, return_dict) -> tuple[bool, bool, bool]:
    """Call arguments win; ``None`` falls back to the config, as in every transformers model."""
    return (
        bool(output_attentions if output_attentions is not None else config.output_attentions),
        bool(output_hidden_states if output_hidden_states is not None else config.output_hidden_states),
        bool(return_dict if return_dict is not None else config.return_dict),
    )


class Pooler(nn.Module):
    """``tanh(Linear(h, h)(x[:, 0]))``."""

    def __init__(self, width: int):
        super().__init__()
        self.dense = nn.Linear(width, width)

    def forward(self, x):
        return torch.tanh(self.dense(x[:, 0]))


class PredictionHeadTransform(nn.Module):
    def __init__(self, config: FlexiBERTConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = ACT2FN[config.hidden_act]
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x):
        return self.LayerNorm(self.act(self.dense(x)))


class LMPredictionHead(nn.Module):
    """MLM head; the decoder is never tied to the input embeddings (their widths may differ)."""

    def __init__(self, config: FlexiBERTConfig):
        super().__init__()
        self.transform = PredictionHeadTransform(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)

    def forward(self, x):
        return self.decoder(self.transform(x))


class MLMHead(nn.Module):
    def __init__(self, config: FlexiBERTConfig):
        super().__init__()
        self.predictions = LMPredictionHead(config)

    def forward(self, x):
        return self.predictions(x)


class FlexiBERTForMaskedLM(FlexiBERTPreTrainedModel):
    """Encoder (no pooler) plus the MLM head; used for pretraining."""

    def __init__(self, config: FlexiBERTConfig, transfer_mode: str = "OD"):
        super().__init__(config)
        self.transfer_mode = transfer_mode
        self.bert = FlexiBERTModel(config, add_pooling_layer=False, transfer_mode=transfer_mode)
        self.cls = MLMHead(config)
        self.post_init()

    def get_output_embeddings(self):
        return self.cls.predictions.decoder

    def set_output_embeddings(self, new_embeddings):
        """Used by ``resize_token_embeddings``, which resizes the input table and this decoder separately."""
        self.cls.predictions.decoder = new_embeddings

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        inputs_embeds=None,
        labels=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
        **kwargs,
    ):
        output_attentions, output_hidden_states, return_dict = _output_flags(
            self.config, output_attentions, output_hidden_states, return_dict
        )
        out = self.bert(input_ids, attention_mask, token_type_ids, inputs_embeds, output_attentions, output_hidden_states, return_dict=True)
        logits = self.cls(out.last_hidden_state)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), labels.view(-1), ignore_index=-100)
        output = MaskedLMOutput(loss=loss, logits=logits, hidden_states=out.hidden_states, attentions=out.attentions)
        return output if return_dict else output.to_tuple()


class FlexiBERTForSequenceClassification(FlexiBERTPreTrainedModel):
    """Encoder + pooler + dropout + linear classifier.

    The loss follows ``config.problem_type``: ``'regression'`` (MSE), ``'single_label_classification'``
    (cross-entropy on class ids) or ``'multi_label_classification'`` (BCE-with-logits on float multi-hot
    labels). When it is ``None`` it is inferred per call as in BERT: ``num_labels == 1`` is regression,
    integer labels single-label, anything else multi-label (the config is not modified).
    """

    def __init__(self, config: FlexiBERTConfig, transfer_mode: str = "OD"):
        super().__init__(config)
        self.transfer_mode = transfer_mode
        self.num_labels = config.num_labels
        self.bert = FlexiBERTModel(config, add_pooling_layer=True, transfer_mode=transfer_mode)
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        inputs_embeds=None,
        labels=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
        **kwargs,
    ):
        output_attentions, output_hidden_states, return_dict = _output_flags(
            self.config, output_attentions, output_hidden_states, return_dict
        )
        out = self.bert(input_ids, attention_mask, token_type_ids, inputs_embeds, output_attentions, output_hidden_states, return_dict=True)
        logits = self.classifier(self.dropout(out.pooler_output))
        loss = None if labels is None else self._loss(logits, labels)
        output = SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=out.hidden_states, attentions=out.attentions)
        return output if return_dict else output.to_tuple()

    def _problem_type(self, labels: torch.Tensor) -> str:
        """``config.problem_type``, or the one BERT would infer for these labels."""
        if self.config.problem_type is not None:
            return self.config.problem_type
        if self.num_labels == 1:
            return "regression"
        if labels.dtype in (torch.long, torch.int):
            return "single_label_classification"
        return "multi_label_classification"

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        problem = self._problem_type(labels)
        if problem == "regression":
            if self.num_labels == 1:
                return F.mse_loss(logits.squeeze(-1), labels.to(logits.dtype).view(-1))
            return F.mse_loss(logits, labels.to(logits.dtype))
        if problem == "single_label_classification":
            return F.cross_entropy(logits.view(-1, self.num_labels), labels.view(-1))
        if problem == "multi_label_classification":
            return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
        raise ValueError(f"unknown problem_type {problem!r}")


__all__ = [
    "FlexiBERTConfig",
    "FlexiBERTForMaskedLM",
    "FlexiBERTForSequenceClassification",
    "FlexiBERTModel",
    "FlexiBERTPreTrainedModel",
    "HeadSpec",
    "LayerSpec",
    "parse_model_dict",
]
