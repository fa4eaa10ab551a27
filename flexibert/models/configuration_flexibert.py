"""The configuration of a FlexiBERT model: its model dict plus the usual BERT-style settings.

Kept apart from the modeling file and free of torch, so that code which only reasons about
architectures (weight-transfer overlap, parameter layouts, the search) can build configs cheaply.
"""

from __future__ import annotations

import functools
from typing import Any

from transformers import PreTrainedConfig

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


def _plain(value: Any) -> Any:
    """A JSON-friendly deep copy (tuples become lists) so configs never share lists with callers."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
