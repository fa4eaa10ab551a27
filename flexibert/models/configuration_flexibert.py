"""The configuration of a FlexiBERT model: its model dict plus the usual BERT-style settings.

Kept apart from the modeling file and free of torch, so that code which only reasons about
architectures (weight-transfer overlap, parameter layouts, the search) can build configs cheaply.

``save_pretrained`` of the models copies this file next to the weights (see "Loading without the
package" in modeling_flexibert.py), so it imports only transformers and the model-dict format.
"""

from __future__ import annotations

import functools
from typing import Any

from transformers import PreTrainedConfig

try:  # code saved next to the weights: model_dict.py was copied beside this file
    from .model_dict import BERT_TINY_DICT, LayerSpec, parse_model_dict
except ImportError:  # in the package: the format's one home is embeddings/model_dict.py
    from embeddings.model_dict import BERT_TINY_DICT, LayerSpec, parse_model_dict


class _InstanceOrClassMethod:
    """``cfg.from_model_dict(d)`` updates ``cfg``; ``FlexiBERTConfig.from_model_dict(d, **kw)`` builds one."""

    def __init__(self, func):
        self.func = func
        functools.update_wrapper(self, func)

    def __get__(self, obj, owner):
        if obj is None:
            return lambda model_dict, **kwargs: self.func(owner(**kwargs), model_dict)
        return functools.partial(self.func, obj)


class FlexiBERTConfig(PreTrainedConfig):
    """Configuration of a FlexiBERT model: its model dict plus the usual BERT-style settings.

    Defaults follow the original pretraining setup with the RoBERTa tokenizer (vocab 50265, pad id 1,
    514 positions, one token type, relative-key position scores).

    Stored fields (written to ``config.json``):

    * ``model_dict``: the architecture, standard or hetero format (see ``embeddings.model_dict``);
      ``None`` means BERT-Tiny (2 layers of 2 heads, width 128).
    * ``vocab_size``: rows of the input embedding table and outputs of the MLM decoder
      (``resize_token_embeddings`` updates it).
    * ``max_position_embeddings``: longest input; sizes the absolute position table or the
      ``2 * max_position_embeddings - 1`` relative-distance tables.
    * ``type_vocab_size``: number of token types (1 for RoBERTa-style tokenizers).
    * ``position_embedding_type``: ``'relative_key'`` (distance scores in every token mixer, no
      position table) or ``'absolute'`` (a learned position table added to the embeddings).
    * ``hidden_act``: activation of the feed-forward stacks and of the MLM head transform.
    * ``hidden_dropout_prob``: dropout after the embeddings and each dense sub-block output.
    * ``attention_probs_dropout_prob``: dropout on attention probabilities.
    * ``classifier_dropout``: dropout before the sequence classifier (``None``: ``hidden_dropout_prob``).
    * ``layer_norm_eps``: epsilon of every LayerNorm.
    * ``initializer_range``: std of the normal weight init.
    * ``pad_token_id`` / ``bos_token_id`` / ``eos_token_id``: special ids of the tokenizer; the pad row
      of the input embeddings is kept at zero.
    * ``tie_word_embeddings``: always ``False``; the MLM decoder reads the last layer's width while the
      input embeddings have the first layer's, so the two are never tied.

    Inherited fields that the models honour: ``return_dict`` (``False``: forward returns tuples),
    ``output_attentions``, ``output_hidden_states``, ``num_labels``/``id2label``, ``problem_type``
    (``'regression'``, ``'single_label_classification'`` or ``'multi_label_classification'``; inferred
    per call when ``None``) and ``_attn_implementation`` (``'sdpa'`` by default, or ``'eager'``).

    Derived, read-only (computed from ``model_dict``, so they are not stored and configs saved before
    they existed load unchanged; a stored value, e.g. from generic tooling, is accepted when it agrees):

    * ``num_hidden_layers``: ``model_dict['l']``.
    * ``hidden_size``: the last layer's width (what the heads read).
    * ``num_attention_heads_per_layer``: tuple with each layer's number of heads (``n`` of a standard
      layer, the number of per-head operations of a hetero layer).
    * ``num_attention_heads``: the largest entry of ``num_attention_heads_per_layer``, so generic code
      that sizes per-head buffers by it has room for every layer; for a homogeneous model it is the
      usual head count.
    """

    model_type = "flexibert"

    model_dict: dict | None = None
    vocab_size: int = 50265
    max_position_embeddings: int = 514
    type_vocab_size: int = 1
    position_embedding_type: str = "relative_key"
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    classifier_dropout: float | None = None
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    pad_token_id: int | None = 1
    bos_token_id: int | None = 0
    eos_token_id: int | None = 2
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        if self.model_dict is None:
            self.model_dict = dict(BERT_TINY_DICT)
        parse_model_dict(self.model_dict)
        if self.position_embedding_type not in ("relative_key", "absolute"):
            raise ValueError(f"position_embedding_type must be 'relative_key' or 'absolute', got {self.position_embedding_type!r}")
        super().__post_init__(**kwargs)

    def _set_model_dict(self, model_dict: dict) -> FlexiBERTConfig:
        parse_model_dict(model_dict)
        self.model_dict = _plain(model_dict)
        return self

    from_model_dict = _InstanceOrClassMethod(_set_model_dict)

    @property
    def layers(self) -> tuple[LayerSpec, ...]:
        return parse_model_dict(self.model_dict)[0]

    @property
    def is_hetero(self) -> bool:
        return "p" not in self.model_dict

    @property
    def num_hidden_layers(self) -> int:
        return self.model_dict["l"]

    @property
    def hidden_size(self) -> int:
        """Width of the last layer (what the heads read)."""
        return self.model_dict["h"][-1]

    @property
    def num_attention_heads_per_layer(self) -> tuple[int, ...]:
        """Number of heads of every layer, in order."""
        return tuple(spec.num_heads for spec in self.layers)

    @num_attention_heads_per_layer.setter
    def num_attention_heads_per_layer(self, value) -> None:
        _check_derived("num_attention_heads_per_layer", tuple(value), self.num_attention_heads_per_layer)

    @property
    def num_attention_heads(self) -> int:
        """The most heads of any layer (see ``num_attention_heads_per_layer`` for each layer's count)."""
        return max(self.num_attention_heads_per_layer)

    @num_attention_heads.setter
    def num_attention_heads(self, value) -> None:
        _check_derived("num_attention_heads", value, self.num_attention_heads)


def _check_derived(name: str, value: Any, derived: Any) -> None:
    """Derived fields cannot be set; a value that agrees with the model dict (e.g. from a config.json) is accepted."""
    if value != derived:
        raise ValueError(f"{name} is derived from model_dict ({derived!r}) and cannot be set to {value!r}; change model_dict instead")


def _plain(value: Any) -> Any:
    """A JSON-friendly deep copy (tuples become lists) so configs never share lists with callers."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
