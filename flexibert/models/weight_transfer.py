"""Fine-grained weight transfer between FlexiBERT models, and its overlap computed from model dicts alone.

Every parameter is described by its axes, and every axis by labelled *blocks*: the hidden width of
layer i, head j of layer i with its operation type, the t-th feed-forward width, centred
convolution taps, relative distances, the vocabulary. A target block receives from the source block
with the same label: the leading (or, for taps and distances, the central) ``min(size)`` entries in
``OD`` mode; in ``RP`` mode a source block larger than the target block is instead mapped by a
seeded random orthonormal projection, one projection per space and layer, so that every tensor of a
layer is projected consistently. Heads of different types never exchange weights; embeddings,
feed-forward stacks, norms and the last layer's output block always do where widths overlap.

Because the plan is derived from the two configs only, ``overlap_report`` counts exactly what
``load_model_from_source`` copies, without building any model; ``model_overlap`` turns the counts
into the closeness of two encoders (see :attr:`TransferReport.closeness`).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

from embeddings.model_dict import LayerSpec
from flexibert.models.configuration_flexibert import FlexiBERTConfig


@dataclass(frozen=True)
class Block:
    """A run of indices along one axis: ``match`` pairs it across models, ``proj`` names its RP space."""

    match: tuple
    size: int
    proj: tuple | None = None
    centered: bool = False


Axis = tuple[Block, ...]


@dataclass(frozen=True)
class ParamLayout:
    family: str  # parameters of the same family in two models exchange weights (names, kernel groups merged)
    axes: tuple[Axis, ...]


@dataclass(frozen=True)
class Segment:
    """Target indices ``[start, start + size)`` receive source ``[src_start, src_start + src_size)``."""

    start: int
    size: int
    src_start: int
    src_size: int
    proj: tuple | None  # projection space when src_size > size (RP), else a plain copy


@dataclass
class TransferReport:
    """What a transfer copied into the target's embeddings and encoder (the pooler is never transferred).

    Scalars are counted separately for the embeddings (``embeddings.*``) and the encoder layers
    (``encoder.*``), because the two mean different things for a warm start: the word-embedding
    table (vocabulary x width, most of a small model's scalars) transfers between any two models
    whose first layers have the same width, so a fraction of *all* scalars calls almost every pair
    close. :attr:`closeness` looks at the encoder only.
    """

    mode: str
    seed: int
    tensors_transferred: int
    tensors_total: int
    scalars_transferred: int
    scalars_total: int
    head_tensors_transferred: int = 0
    encoder_scalars_transferred: int = 0
    encoder_scalars_total: int = 0
    source_encoder_scalars: int = 0

    @property
    def tensor_fraction(self) -> float:
        return self.tensors_transferred / self.tensors_total

    @property
    def scalar_fraction(self) -> float:
        """Fraction of all the target's embedding and encoder scalars that were transferred (the original's measure)."""
        return self.scalars_transferred / self.scalars_total

    @property
    def embedding_fraction(self) -> float:
        """Fraction of the target's embedding scalars that were transferred."""
        total = self.scalars_total - self.encoder_scalars_total
        return (self.scalars_transferred - self.encoder_scalars_transferred) / total if total else 0.0

    @property
    def encoder_fraction(self) -> float:
        """Fraction of the target's encoder scalars that were transferred."""
        return self.encoder_scalars_transferred / self.encoder_scalars_total if self.encoder_scalars_total else 0.0

    @property
    def closeness(self) -> float:
        """How much of the two encoders is shared: transferred encoder scalars over the mean of both encoders' sizes.

        1 for identical models, 0 when nothing of the encoder transfers (models that share only an
        embedding table). Counting both encoders (a Dice coefficient) makes it symmetric in what is
        missing: a target that drops half the source's layers and one that adds as many new layers
        are equally far, while the target-only fraction would call the first identical.
        """
        shared = self.encoder_scalars_total + self.source_encoder_scalars
        return 2 * self.encoder_scalars_transferred / shared if shared else 0.0


# ---------------------------------------------------------------------------------------------
# Layouts
# ---------------------------------------------------------------------------------------------


def _hidden(space, size: int, project: bool = True) -> Axis:
    key = ("hidden", space)
    return (Block(key, size, key if project else None),)


def _one() -> Axis:
    return (Block(("one",), 1),)


def _taps(kernel: int) -> Axis:
    return (Block(("taps",), kernel, centered=True),)


def _head_axis(i: int, spec: LayerSpec, kind: str | None = None, count: int | None = None) -> Axis:
    """Head blocks of layer i; ``kind`` overrides the head's own type (ConvBERT halves)."""
    heads = spec.heads[:count] if count else spec.heads
    return tuple(Block(("head", i, j, kind or hd.kind), spec.head_size, ("headdim", i)) for j, hd in enumerate(heads))


def _add_linear(layout: dict, name: str, out_axis: Axis, in_axis: Axis) -> None:
    layout[f"{name}.weight"] = ParamLayout(f"{name}.weight", (out_axis, in_axis))
    layout[f"{name}.bias"] = ParamLayout(f"{name}.bias", (out_axis,))


def _add_norm(layout: dict, name: str, space, size: int) -> None:
    for part in ("weight", "bias"):
        layout[f"{name}.{part}"] = ParamLayout(f"{name}.{part}", (_hidden(space, size, project=False),))


def _mixer_layout(layout: dict, prefix: str, i: int, spec: LayerSpec, relative: bool) -> Axis:
    """Adds the token mixer's parameters; returns the axis of its output (the heads, concatenated)."""
    headdim = (Block(("headdim", i), spec.head_size, ("headdim", i)),)
    hidden = _hidden(i, spec.hidden)
    if spec.op == "c":
        half = spec.num_heads // 2
        attn_axis, conv_axis = _head_axis(i, spec, "c-sa", half), _head_axis(i, spec, "c-conv", half)
        kernel = spec.heads[0].param
        for name in ("query", "key", "value"):
            _add_linear(layout, prefix + name, attn_axis, hidden)
        conv = prefix + "key_conv_attn_layer."
        layout[conv + "depthwise.weight"] = ParamLayout(conv + "depthwise.weight", (hidden, _one(), _taps(kernel)))
        layout[conv + "pointwise.weight"] = ParamLayout(conv + "pointwise.weight", (attn_axis, hidden, _one()))
        layout[conv + "bias"] = ParamLayout(conv + "bias", (attn_axis,))
        taps_axis = tuple(Block(("head", i, j, "c-taps"), kernel, centered=True) for j in range(half))
        _add_linear(layout, prefix + "conv_kernel_layer", taps_axis, attn_axis)
        _add_linear(layout, prefix + "conv_out_layer", conv_axis, hidden)
        return attn_axis + conv_axis
    heads = _head_axis(i, spec)
    names = ("query", "key", "value")
    if spec.op == "l":  # no content scores: the query only feeds relative scores, there is no key
        names = ("query", "value") if relative else ("value",)
    for name in names:
        _add_linear(layout, prefix + name, heads, hidden)
    if spec.op == "sa" and spec.heads[0].param == "wma":
        layout[prefix + "W"] = ParamLayout(prefix + "W", (headdim, headdim))
    if spec.op == "hetero":
        wma = tuple(Block(("head", i, j, "sa"), 1) for j, hd in enumerate(spec.heads) if hd.param == "wma")
        if wma:
            layout[prefix + "W"] = ParamLayout(prefix + "W[per-head]", (wma, headdim, headdim))
        for kernel in sorted({hd.param for hd in spec.heads if hd.kind == "c"}):
            group = tuple(Block(("head", i, j, "c"), 1) for j, hd in enumerate(spec.heads) if hd.param == kernel)
            shapes = {
                "depthwise": (group, headdim, _taps(kernel)),
                "pointwise": (group, headdim, headdim),
                "conv_bias": (group, headdim),
                "kernel_weight": (group, _taps(kernel), headdim),
                "kernel_bias": (group, _taps(kernel)),
                "out_weight": (group, headdim, headdim),
                "out_bias": (group, headdim),
            }
            for part, axes in shapes.items():
                layout[f"{prefix}conv_groups.k{kernel}.{part}"] = ParamLayout(f"{prefix}conv_groups.*.{part}", axes)
    return heads


def base_layout(config: FlexiBERTConfig) -> dict[str, ParamLayout]:
    """Axes of every parameter of the embeddings and encoder, named as in ``FlexiBERTModel``."""
    specs = config.layers
    layout: dict[str, ParamLayout] = {}
    h0 = specs[0].hidden
    vocab = (Block(("vocab", config.vocab_size), config.vocab_size),)
    layout["embeddings.word_embeddings.weight"] = ParamLayout("embeddings.word_embeddings.weight", (vocab, _hidden(0, h0)))
    if config.position_embedding_type == "absolute":
        positions = (Block(("positions",), config.max_position_embeddings),)
        layout["embeddings.position_embeddings.weight"] = ParamLayout("embeddings.position_embeddings.weight", (positions, _hidden(0, h0)))
    types = (Block(("token_types",), config.type_vocab_size),)
    layout["embeddings.token_type_embeddings.weight"] = ParamLayout("embeddings.token_type_embeddings.weight", (types, _hidden(0, h0)))
    _add_norm(layout, "embeddings.LayerNorm", 0, h0)
    for i, spec in enumerate(specs):
        prefix = f"encoder.layer.{i}."
        hidden = _hidden(i, spec.hidden)
        relative = config.position_embedding_type == "relative_key"
        if relative:
            distances = (Block(("distances",), 2 * config.max_position_embeddings - 1, centered=True),)
            headdim = (Block(("headdim", i), spec.head_size, ("headdim", i)),)
            name = prefix + "attention.self.distance_embedding.weight"
            layout[name] = ParamLayout(name, (distances, headdim))
        mixed = _mixer_layout(layout, prefix + "attention.self.", i, spec, relative)
        _add_linear(layout, prefix + "attention.output.dense", hidden, mixed)
        _add_norm(layout, prefix + "attention.output.LayerNorm", i, spec.hidden)
        previous = hidden
        for t, width in enumerate(spec.ff):
            ff_axis = (Block(("ff", i, t), width, ("ff", i, t)),)
            _add_linear(layout, f"{prefix}intermediate.sequential.{2 * t}", ff_axis, previous)
            previous = ff_axis
        # The output block reads the last FF width, whatever the stack's depth in either model.
        last_ff = (Block(("ff", i, "last"), spec.ff[-1], ("ff", i, "last")),)
        _add_linear(layout, prefix + "output.dense", hidden, last_ff)
        _add_norm(layout, prefix + "output.LayerNorm", i, spec.hidden)
        if i + 1 < len(specs) and specs[i + 1].hidden != spec.hidden:
            _add_linear(layout, prefix + "output.proj_head", _hidden(i + 1, specs[i + 1].hidden), hidden)
    return layout


def mlm_head_layout(config: FlexiBERTConfig) -> dict[str, ParamLayout]:
    """Axes of the MLM head (``cls.*``); it reads the final width, whatever the depth."""
    width = config.hidden_size
    final = _hidden("final", width)
    layout: dict[str, ParamLayout] = {}
    _add_linear(layout, "cls.predictions.transform.dense", final, final)
    _add_norm(layout, "cls.predictions.transform.LayerNorm", "final", width)
    _add_linear(layout, "cls.predictions.decoder", (Block(("vocab", config.vocab_size), config.vocab_size),), final)
    return layout


# ---------------------------------------------------------------------------------------------
# Planning
# ---------------------------------------------------------------------------------------------


def _match_axis(target: Axis, source: Axis, mode: str) -> list[Segment]:
    offsets, position = {}, 0
    for block in source:
        offsets[block.match] = (position, block)
        position += block.size
    segments, position = [], 0
    for block in target:
        if block.match in offsets:
            src_position, src_block = offsets[block.match]
            size = min(block.size, src_block.size)
            start = position + ((block.size - size) // 2 if block.centered else 0)
            if mode == "RP" and block.proj is not None and src_block.size > block.size:
                segments.append(Segment(start, size, src_position, src_block.size, block.proj))
            else:
                src_start = src_position + ((src_block.size - size) // 2 if block.centered else 0)
                segments.append(Segment(start, size, src_start, size, None))
        position += block.size
    return segments


def plan_transfer(
    target: dict[str, ParamLayout], source: dict[str, ParamLayout], mode: str = "OD"
) -> dict[str, list[tuple[str, list[list[Segment]]]]]:
    """For each target parameter: the source parameters it receives from, with per-axis segments."""
    by_family: dict[str, list[str]] = {}
    for name, param in source.items():
        by_family.setdefault(param.family, []).append(name)
    plan = {}
    for name, param in target.items():
        pairs = []
        for src_name in by_family.get(param.family, []):
            src_axes = source[src_name].axes
            segments = [_match_axis(t, s, mode) for t, s in zip(param.axes, src_axes, strict=True)]
            if all(segments):
                pairs.append((src_name, segments))
        plan[name] = pairs
    return plan


def _size(param: ParamLayout) -> int:
    total = 1
    for axis in param.axes:
        total *= sum(block.size for block in axis)
    return total


def _copied(pairs: list[tuple[str, list[list[Segment]]]]) -> int:
    total = 0
    for _, segments in pairs:
        count = 1
        for axis in segments:
            count *= sum(seg.size for seg in axis)
        total += count
    return total


def _count(target: dict[str, ParamLayout], plan, source: dict[str, ParamLayout]) -> dict[str, int]:
    """The counts of a :class:`TransferReport`: tensors and scalars copied into ``target``, all and encoder only."""
    copied = {name: _copied(plan[name]) for name in target}
    encoder = [name for name in target if name.startswith("encoder.")]
    return {
        "tensors_transferred": sum(1 for n in target if copied[n]),
        "tensors_total": len(target),
        "scalars_transferred": sum(copied.values()),
        "scalars_total": sum(_size(p) for p in target.values()),
        "encoder_scalars_transferred": sum(copied[n] for n in encoder),
        "encoder_scalars_total": sum(_size(target[n]) for n in encoder),
        "source_encoder_scalars": sum(_size(p) for n, p in source.items() if n.startswith("encoder.")),
    }


_TRANSFER_SETTINGS = ("vocab_size", "max_position_embeddings", "type_vocab_size", "position_embedding_type")
"""Config settings that change parameter shapes, and so what can transfer."""


def _config_of(model_dict: dict, config: FlexiBERTConfig | None) -> FlexiBERTConfig:
    settings = config.to_dict() if config is not None else {}
    return FlexiBERTConfig(model_dict=model_dict, **{k: settings[k] for k in _TRANSFER_SETTINGS if k in settings})


def overlap_report(target_dict: dict, source_dict: dict, config: FlexiBERTConfig | None = None) -> TransferReport:
    """Counts of what a transfer from ``source_dict`` into ``target_dict`` would copy (no models built).

    ``config`` supplies vocabulary and position settings shared by both (defaults: ``FlexiBERTConfig()``).
    """
    target, source = base_layout(_config_of(target_dict, config)), base_layout(_config_of(source_dict, config))
    return TransferReport("OD", 0, **_count(target, plan_transfer(target, source), source))


def model_overlap(target_dict: dict, source_dict: dict, config: FlexiBERTConfig | None = None) -> float:
    """How close two models are for a warm start: :attr:`TransferReport.closeness` (the encoders' shared fraction).

    1.0 for identical dicts; high when one layer differs; low when only the embeddings would transfer.
    The search ranks trained neighbours by it and warm-starts only from one at least
    ``--transfer_threshold`` close. The scalar fraction of the embeddings and encoder together, which
    this function returned before, is :attr:`TransferReport.scalar_fraction` of :func:`overlap_report`.
    """
    return overlap_report(target_dict, source_dict, config).closeness


# ---------------------------------------------------------------------------------------------
# Execution
# ---------------------------------------------------------------------------------------------


class _Projections:
    """Seeded random orthonormal projections, one per (space, source size, target size)."""

    def __init__(self, seed: int):
        self.generator = torch.Generator().manual_seed(seed)
        self.cache: dict[tuple, torch.Tensor] = {}

    def get(self, space: tuple, src_size: int, size: int) -> torch.Tensor:
        key = (space, src_size, size)
        if key not in self.cache:
            gaussian = torch.randn(src_size, size, generator=self.generator, dtype=torch.float64)
            self.cache[key] = torch.linalg.qr(gaussian).Q  # (src_size, size), orthonormal columns
        return self.cache[key]


def _apply(plan, target_params: dict, source_params: dict, projections: _Projections) -> None:
    for name, pairs in plan.items():
        target = target_params[name]
        for src_name, segments in pairs:
            source = source_params[src_name].detach()
            for combo in itertools.product(*segments):
                piece = source[tuple(slice(s.src_start, s.src_start + s.src_size) for s in combo)]
                for dim, seg in enumerate(combo):
                    if seg.proj is not None:
                        matrix = projections.get(seg.proj, seg.src_size, seg.size).to(piece.dtype)
                        piece = (piece.movedim(dim, -1) @ matrix.to(piece.device)).movedim(-1, dim)
                target[tuple(slice(s.start, s.start + s.size) for s in combo)] = piece.to(target.dtype)


def _base(model):
    return model.bert if hasattr(model, "bert") else model


def transfer_weights(target, source, mode: str = "OD", seed: int = 0) -> TransferReport:
    """Copy what overlaps from ``source`` into ``target`` in place (any FlexiBERT classes).

    The MLM head is transferred too when both models have one; poolers and classifiers never are.
    Tensors are copied, never shared. Deterministic for a given ``seed``.
    """
    if mode not in ("OD", "RP"):
        raise ValueError(f"transfer mode must be 'OD' or 'RP', got {mode!r}")
    target_base, source_base = _base(target), _base(source)
    target_layout, source_layout = base_layout(target_base.config), base_layout(source_base.config)
    plan = plan_transfer(target_layout, source_layout, mode)
    projections = _Projections(seed)
    with torch.no_grad():
        _apply(plan, dict(target_base.named_parameters()), dict(source_base.named_parameters()), projections)
        head_tensors = 0
        if hasattr(target, "cls") and hasattr(source, "cls"):
            head_plan = plan_transfer(mlm_head_layout(target.config), mlm_head_layout(source.config), mode)
            _apply(head_plan, dict(target.named_parameters()), dict(source.named_parameters()), projections)
            head_tensors = sum(1 for pairs in head_plan.values() if pairs)
    counts = _count(target_layout, plan, source_layout)
    return TransferReport(mode, seed, head_tensors_transferred=head_tensors, **counts)
